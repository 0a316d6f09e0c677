package bench

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestClientBound: a row whose load generator kept (nearly) all of its CPUs busy over
// the measured windows is flagged in the table, since its throughput and latency are
// then the load generator's limit as much as the proxy's (gRPC rows moved by 40% from
// round to round with the grpc-go client on one CPU).
func TestClientBound(t *testing.T) {
	row := func(name string, loadgen ...time.Duration) *PhaseResult {
		p := &PhaseResult{Scenario: name, Phase: "max", Connections: 1, Streams: 1, LoadgenCPUs: 1, res: newResult(false)}
		for _, l := range loadgen { // one round each, 2 s long
			r := newResult(false)
			r.Latency.Record(time.Millisecond)
			r.Elapsed = 2 * time.Second
			p.add(r, cpuWindow{loadgen: l, wall: 2 * time.Second})
		}
		p.finish(nil)
		return p
	}
	// One saturated round of three is enough to flag the row.
	busy := row("meshd", 1900*time.Millisecond, 1200*time.Millisecond, 1200*time.Millisecond)
	idle := row("haproxy", time.Second, time.Second)
	near := func(a, b float64) bool { return a > b-0.001 && a < b+0.001 }
	if !near(busy.LoadgenBusyMax, 0.95) || !near(busy.LoadgenBusy, 0.7167) || !near(idle.LoadgenBusyMax, 0.5) || !near(idle.LoadgenBusy, 0.5) {
		t.Fatalf("busy shares %.4f (max %.4f) and %.4f (max %.4f), want 0.7167 (0.95) and 0.5 (0.5)",
			busy.LoadgenBusy, busy.LoadgenBusyMax, idle.LoadgenBusy, idle.LoadgenBusyMax)
	}
	rep := &Report{Results: []*PhaseResult{busy, idle}}
	var b bytes.Buffer
	if err := WriteTable(&b, rep, false); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.Contains(out, "Load generator saturated") || !strings.Contains(out, "meshd: the load generator was busy 95% of its 1 CPU(s) (72% over all rounds)") {
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

// TestLoadCPUs: the load generator's CPU count is what it can run on: its affinity
// mask as the kernel applied it, at most GOMAXPROCS.
func TestLoadCPUs(t *testing.T) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	if got, want := loadCPUs(), min(set.Count(), runtime.GOMAXPROCS(0)); got != want {
		t.Errorf("loadCPUs() = %d, want %d", got, want)
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	if got := loadCPUs(); got != 1 {
		t.Errorf("with GOMAXPROCS 1 (a cgroup quota of one CPU): %d CPUs", got)
	}
}

// TestRoundSpread: the ratio line against HAProxy gives, next to the whole run's CPU per
// request ratio, the median and range of the per-round ratios (rounds are interleaved,
// so round i of each row ran close in time), when both rows have three rounds or more.
func TestRoundSpread(t *testing.T) {
	row := func(name string, perReq ...float64) *PhaseResult {
		p := &PhaseResult{Scenario: name, Phase: "max", Connections: 1, Streams: 1, Proxies: 1, LoadgenCPUs: 1, res: newResult(false)}
		for _, us := range perReq { // 100 responses a round
			r := newResult(false)
			for range 100 {
				r.Latency.Record(time.Millisecond)
			}
			r.RetCodes[200] = 100
			r.Elapsed = time.Second
			p.add(r, cpuWindow{proxy: time.Duration(us*100) * time.Microsecond, wall: time.Second})
		}
		p.finish(nil)
		return p
	}
	// Per round: 1.5, 2.0, 1.2, 1.6 -> median 1.55, range 1.20-2.00; whole run 1.575.
	meshd := row("meshd", 30, 40, 24, 32)
	hp := row("haproxy", 20, 20, 20, 20)
	if got := meshd.RoundProxyCPUPerReq; len(got) != 4 || got[1] != 40 {
		t.Fatalf("per-round CPU %v, want 4 rounds, the second 40", got)
	}
	lines := haproxyRatios([]*PhaseResult{meshd, hp})
	if len(lines) != 1 || !strings.Contains(lines[0], "CPU/req 1.57 (by round: median 1.55, 1.20-2.00)") {
		t.Fatalf("ratio lines %q", lines)
	}
	// Two rounds say too little about the spread: the plain ratio only.
	lines = haproxyRatios([]*PhaseResult{row("meshd", 30, 40), row("haproxy", 20, 20)})
	if len(lines) != 1 || strings.Contains(lines[0], "by round") || !strings.Contains(lines[0], "CPU/req 1.75,") {
		t.Fatalf("two rounds: %q", lines)
	}
}
