package bench

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestClientBound: a row whose load generator kept (nearly) all of its CPUs busy over
// the measured windows is flagged in the table, since its throughput and latency are
// then the load generator's limit as much as the proxy's (gRPC rows moved by 40% from
// round to round with the grpc-go client on one CPU).
func TestClientBound(t *testing.T) {
	row := func(name string, loadgen, wall time.Duration) *PhaseResult {
		p := &PhaseResult{Scenario: name, Phase: "max", Connections: 1, Streams: 1, LoadgenCPUs: 1, res: newResult(false)}
		r := newResult(false)
		r.Latency.Record(time.Millisecond)
		r.Elapsed = wall
		p.add(r, cpuWindow{loadgen: loadgen, wall: wall})
		p.finish(nil)
		return p
	}
	busy := row("meshd", 1900*time.Millisecond, 2*time.Second)
	idle := row("haproxy", time.Second, 2*time.Second)
	if busy.LoadgenBusy < 0.949 || busy.LoadgenBusy > 0.951 || idle.LoadgenBusy < 0.499 || idle.LoadgenBusy > 0.501 {
		t.Fatalf("busy shares %.3f and %.3f, want 0.95 and 0.50", busy.LoadgenBusy, idle.LoadgenBusy)
	}
	rep := &Report{Results: []*PhaseResult{busy, idle}}
	var b bytes.Buffer
	if err := WriteTable(&b, rep, false); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.Contains(out, "Load generator saturated") || !strings.Contains(out, "meshd: the load generator was busy 95% of its 1 CPU(s)") {
		t.Errorf("the saturated row is not flagged:\n%s", out)
	}
	if strings.Contains(out, "haproxy: the load generator was busy") {
		t.Errorf("a row with the load generator half idle is flagged:\n%s", out)
	}
	rep.Results = rep.Results[1:]
	b.Reset()
	if err := WriteTable(&b, rep, false); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "Load generator saturated") {
		t.Errorf("the note is printed without a saturated row:\n%s", b.String())
	}
}
