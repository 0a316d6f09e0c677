package bench

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func sweepFixture(sweep bool) *Report {
	rep := &Report{Proto: "h1", Sweep: sweep}
	for _, c := range []int{2, 4} {
		for _, rate := range []float64{400, 0, 200} { // unordered, max in the middle
			qps := rate
			if rate == 0 {
				qps = 900
			}
			rep.Results = append(rep.Results, &PhaseResult{Scenario: "meshd", Phase: "x", Rate: rate, OpenLoop: rate > 0, Connections: c,
				ActualQPS: qps, P50US: 100 + qps/10, P99US: 300 + qps/5, Requests: 10})
		}
	}
	return rep
}

func TestSweepPlot(t *testing.T) {
	groups := sweepGroups(sweepFixture(true))
	if len(groups) != 2 {
		t.Fatalf("%d groups, want one per connection count", len(groups))
	}
	for _, g := range groups {
		if len(g.open) != 2 || g.open[0].Rate != 200 || g.open[1].Rate != 400 || len(g.max) != 1 || g.max[0].Rate != 0 {
			t.Errorf("c%d: open %v max %v; want the fixed rates in order and the max point apart", g.conns, g.open, g.max)
		}
	}
	p, legend, err := sweepPlot(sweepFixture(true), []string{"meshd"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"meshd c2", "meshd c4", "p99 (solid)", "p50 (dashed)", "max throughput (closed loop)"} {
		if !slices.Contains(legend, want) {
			t.Errorf("legend %q lacks %q", legend, want)
		}
	}
	// The legend's band is above every point: the top point (p99 at 900 req/s) sits
	// below the band's share of the log axis.
	hi := (300 + 900.0/5) / 1000
	f := (float64(len(legend))*13 + 12) / 330
	if frac := math.Log10(hi/p.Y.Min) / math.Log10(p.Y.Max/p.Y.Min); frac > 1-f+1e-9 {
		t.Errorf("top point at %.2f of the axis, legend band starts at %.2f", frac, 1-f)
	}

	dir := t.TempDir()
	files, err := writePlots(dir, sweepFixture(false))
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(files, func(f string) bool { return strings.HasPrefix(filepath.Base(f), "sweep") }) {
		t.Errorf("sweep picture drawn without --sweep: %v", files)
	}
	files, err = writePlots(dir, sweepFixture(true))
	if err != nil {
		t.Fatal(err)
	}
	svg, err := os.ReadFile(filepath.Join(dir, "sweep.svg"))
	if err != nil {
		t.Fatalf("no sweep.svg among %v: %v", files, err)
	}
	if !strings.Contains(string(svg), ">p50 (dashed)<") {
		t.Error("sweep.svg legend lacks the dashed p50 entry")
	}
}

func TestLogTicks(t *testing.T) {
	labels := func(lo, hi float64) []string {
		var out []string
		for _, tk := range (logTicks{}).Ticks(lo, hi) {
			if tk.Label != "" {
				out = append(out, tk.Label)
			}
		}
		return out
	}
	if got := labels(0.15, 0.9); !slices.Equal(got, []string{"0.2", "0.5"}) {
		t.Errorf("0.15–0.9 ms labels %q, want 0.2 and 0.5 (two or more on a narrow axis)", got)
	}
	if got := labels(0.05, 30); !slices.Equal(got, []string{"0.1", "1", "10"}) {
		t.Errorf("0.05–30 ms labels %q, want the powers of ten", got)
	}
	if (logTicks{}).Ticks(0, 1) != nil {
		t.Error("ticks for a range from 0")
	}
}

// TestLatencyPlotAxes checks the percentile plot's axis labels: the fixed-rate
// (open-loop) one says latency counts from the scheduled send.
func TestLatencyPlotAxes(t *testing.T) {
	h := NewHistogram()
	for i := range 100 {
		h.Record(time.Duration(100+i) * time.Microsecond)
	}
	res := newResult(true)
	res.Latency = h
	rep := &Report{Proto: "h1", Results: []*PhaseResult{{Scenario: "meshd", Phase: "fixed-1000", OpenLoop: true, Requests: 100, res: res}}}
	dir := t.TempDir()
	if _, err := writePlots(dir, rep); err != nil {
		t.Fatal(err)
	}
	svg, err := os.ReadFile(filepath.Join(dir, "latency-fixed-1000.svg"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{">latency from the scheduled send (ms)<", ">percentile<", ">meshd<"} {
		if n := strings.Count(string(svg), want); n != 1 {
			t.Errorf("latency plot has %q %d times, want once", want, n)
		}
	}
}
