package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseScale(t *testing.T) {
	for _, c := range []struct {
		in   string
		want ScaleSpec
		err  string
	}{
		{"routes=10000", ScaleSpec{Routes: 10000, Routers: 100}, ""},
		{"routes=200", ScaleSpec{Routes: 200, Routers: 100}, ""},
		{"routes=40", ScaleSpec{Routes: 40, Routers: 40}, ""},
		{"routes=150", ScaleSpec{Routes: 150, Routers: 75}, ""},
		{"routes=1000,routers=1", ScaleSpec{Routes: 1000, Routers: 1}, ""},
		{" routes=6 , routers=3 ", ScaleSpec{Routes: 6, Routers: 3}, ""},
		{"routes=10,routers=3", ScaleSpec{}, "do not spread evenly"},
		{"routers=3", ScaleSpec{}, "routes=N is required"},
		{"routes=0", ScaleSpec{}, "want routes=N"},
		{"routes=x", ScaleSpec{}, "want routes=N"},
		{"routes", ScaleSpec{}, "want routes=N"},
		{"paths=4", ScaleSpec{}, `unknown key "paths"`},
	} {
		got, err := ParseScale(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || !strings.HasPrefix(err.Error(), ScaleFlag+" ") {
				t.Errorf("ParseScale(%q): error %v, want one with %q naming %s", c.in, err, c.err, ScaleFlag)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseScale(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
}

// TestScaleConfigValidates: the mesh --scale generates (and its reload) is one meshd
// validates and compiles for the node the load goes through.
func TestScaleConfigValidates(t *testing.T) {
	meshd, why := buildMeshd(t)
	if meshd == "" {
		t.Skip(why)
	}
	dir := t.TempDir()
	for _, w := range []int{90, 50} {
		path := filepath.Join(dir, "mesh.json")
		if err := os.WriteFile(path, scaleMesh(ScaleSpec{Routes: 300, Routers: 3}, 18080, w).JSON(), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		out, err := exec.CommandContext(ctx, meshd, "validate", "-c", path, "--node", "front").CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("meshd validate (weight %d): %v: %s", w, err, out)
		}
	}
}

// TestScaleRealRun: a short --scale run of 200 routes against a real meshd fills every
// field of the report, loses no request across the reload, and writes scale.json.
func TestScaleRealRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts meshd")
	}
	meshd, why := buildMeshd(t)
	if meshd == "" {
		t.Skip(why)
	}
	dir := t.TempDir()
	var log bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := RunScale(ctx, ScalePlan{Spec: ScaleSpec{Routes: 200, Routers: 100}, Meshd: meshd, Dir: dir,
		Conns: 2, Duration: 600 * time.Millisecond, Warmup: 100 * time.Millisecond, ReloadAfter: 200 * time.Millisecond, Log: &log})
	if err != nil {
		t.Fatalf("RunScale: %v\n%s", err, log.String())
	}
	switch {
	case rep.Routes != 200 || rep.Routers != 100 || rep.ConfigBytes == 0:
		t.Errorf("shape: %+v", rep)
	case rep.ReadyMs <= 0 || rep.StartCPUms <= 0:
		t.Errorf("start: ready %v ms, CPU %v ms", rep.ReadyMs, rep.StartCPUms)
	case rep.RSSMiB <= 0 || rep.PeakRSSMiB < rep.RSSMiB || rep.RSSAfterMB <= 0:
		t.Errorf("memory: RSS %v, peak %v, after %v MiB", rep.RSSMiB, rep.PeakRSSMiB, rep.RSSAfterMB)
	case !rep.ReloadDone || rep.ReloadMs <= 0:
		t.Errorf("reload: done %v in %v ms", rep.ReloadDone, rep.ReloadMs)
	}
	for _, l := range []struct {
		name, route string
		l           ScaleLoad
	}{{"first", "vr0/r0-0", rep.First}, {"last", "vr99/r99-1", rep.Last}, {"reload", "vr0/r0-0", rep.Reload}} {
		if l.l.Route != l.route || l.l.Requests == 0 || l.l.RPS <= 0 || l.l.P50ms <= 0 || l.l.P99ms < l.l.P50ms {
			t.Errorf("%s load: %+v (route want %s)", l.name, l.l, l.route)
		}
		if l.l.Failed != 0 {
			t.Errorf("%s load: %d of %d requests failed", l.name, l.l.Failed, l.l.Requests)
		}
	}
	var table bytes.Buffer
	path, err := WriteScale(&table, dir, rep)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"200 routes over 100 virtual routers", "start to /ready", "first route vr0/r0-0", "across reload", "new version in force: true"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var back ScaleReport
	if err := json.Unmarshal(b, &back); err != nil || back != *rep {
		t.Errorf("scale.json reads back as %+v (%v), want %+v", back, err, *rep)
	}
}
