package bench

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func diffFixture(qps, p50, cpu float64, withEnvoy bool) *Report {
	rep := &Report{Harness: "meshbench", Results: []*PhaseResult{
		{Scenario: "meshd", Phase: "max", ActualQPS: qps, P50US: p50, P99US: 2 * p50, Requests: 100, Proxies: 1, ProxyCPUPerRequest: cpu, ProxyPeakRSSBytes: 10 << 20},
		{Scenario: "direct", Phase: "max", ActualQPS: 2 * qps, P50US: p50 / 2, P99US: p50, Requests: 100},
	}}
	if withEnvoy {
		rep.Results = append(rep.Results, &PhaseResult{Scenario: "envoy", Phase: "max", ActualQPS: 1, P50US: 1, P99US: 1, Requests: 1, Proxies: 1, ProxyCPUPerRequest: 1, ProxyPeakRSSBytes: 1 << 20})
	}
	return rep
}

func TestDiffReports(t *testing.T) {
	dir := t.TempDir()
	var paths []string
	for i, rep := range []*Report{diffFixture(1000, 500, 20, false), diffFixture(1500, 400, 15, true), diffFixture(500, 1000, 40, false)} {
		p := filepath.Join(dir, letter(i)+".json")
		var b bytes.Buffer
		if err := WriteJSON(&b, rep); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	var reps []*Report
	for _, p := range paths {
		rep, err := ReadReport(p)
		if err != nil {
			t.Fatal(err)
		}
		reps = append(reps, rep)
	}
	d, err := DiffReports(paths, reps)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Rows) != 3 || d.Rows[0].Scenario != "meshd" || d.Rows[2].Scenario != "envoy" {
		t.Fatalf("rows %+v", d.Rows)
	}
	m := d.Rows[0]
	const qps, p50, p99, cpu, rss = 0, 1, 2, 3, 4
	for _, c := range []struct {
		metric, report int
		want           float64
	}{{qps, 1, 1.5}, {qps, 2, 0.5}, {p50, 1, 0.8}, {p99, 2, 2}, {cpu, 1, 0.75}, {rss, 2, 1}} {
		if got := m.Ratio(c.metric, c.report); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("meshd %s ratio %s/A = %v, want %v", DiffMetrics[c.metric].Name, letter(c.report), got, c.want)
		}
	}
	if !math.IsNaN(d.Rows[1].Ratio(cpu, 1)) || !math.IsNaN(d.Rows[2].Ratio(qps, 1)) {
		t.Error("a ratio of a missing figure (direct's CPU, envoy only in B) is not NaN")
	}
	var tab bytes.Buffer
	if err := WriteDiff(&tab, d, false); err != nil {
		t.Fatal(err)
	}
	out := tab.String()
	for _, want := range []string{"A = " + paths[0], "B/A", "C−A", "meshd  max   req/s  1000  1500  500  1.50  +500  0.50  -500", "CPU/req"} {
		if !strings.Contains(strings.Join(strings.Fields(out), " "), strings.Join(strings.Fields(want), " ")) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	files, err := WriteDiffReport(filepath.Join(dir, "cmp"), d)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 3 {
		t.Errorf("files %v, want compare.md, .svg, .png", files)
	}
	md, _ := os.ReadFile(filepath.Join(dir, "cmp", "compare.md"))
	if !strings.Contains(string(md), "| meshd | max | p50 | 0.500 | 0.400 | 1.000 | 0.80 | -0.100 | 2.00 | +0.500 |") {
		t.Errorf("compare.md:\n%s", md)
	}
	if _, err := DiffReports(paths[:1], reps[:1]); err == nil {
		t.Error("one report accepted")
	}
	if err := os.WriteFile(filepath.Join(dir, "x.json"), []byte(`{"harness":"fortio"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadReport(filepath.Join(dir, "x.json")); err == nil || !strings.Contains(err.Error(), "meshbench report.json") {
		t.Errorf("foreign JSON: %v", err)
	}
}

// TestDiffLoadBusy: compare sets the load generator's busiest round side by side, from
// reports that measured it; a report written before it was measured has no value there.
func TestDiffLoadBusy(t *testing.T) {
	old := diffFixture(1000, 500, 20, false)
	cur := diffFixture(1000, 500, 20, false)
	cur.Results[0].LoadgenCPUs, cur.Results[0].LoadgenBusyMax = 1, 0.95
	d, err := DiffReports([]string{"old", "new"}, []*Report{old, cur})
	if err != nil {
		t.Fatal(err)
	}
	m := slices.IndexFunc(DiffMetrics, func(dm DiffMetric) bool { return dm.Name == "load busy" })
	if m < 0 {
		t.Fatal("no load busy metric")
	}
	v := d.Rows[0].Values[m]
	if !math.IsNaN(v[0]) || math.Abs(v[1]-95) > 1e-9 {
		t.Errorf("load busy %v, want [NaN 95]", v)
	}
}
