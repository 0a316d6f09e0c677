package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestPeerConfigsValidate(t *testing.T) {
	ctx := context.Background()
	for _, proto := range []Proto{H1, H2C, GRPC} {
		t.Run("haproxy/"+string(proto), func(t *testing.T) {
			bin, err := exec.LookPath("haproxy")
			if err != nil {
				t.Skip("haproxy not installed (apt-get install haproxy): config not validated")
			}
			p, err := writeFile(t.TempDir(), "haproxy.cfg", HAProxyConfig(18081, "127.0.0.1:18082", proto))
			if err != nil {
				t.Fatal(err)
			}
			if err := ValidateHAProxy(ctx, bin, p); err != nil {
				t.Error(err)
			}
		})
		t.Run("nginx/"+string(proto), func(t *testing.T) {
			bin, err := exec.LookPath("nginx")
			if err != nil {
				t.Skip("nginx not installed (apt-get install nginx-light): config not validated")
			}
			dir := t.TempDir()
			p, err := writeFile(dir, "nginx.conf", NginxConfig(dir, 18081, "127.0.0.1:18082", proto))
			if err != nil {
				t.Fatal(err)
			}
			if err := ValidateNginx(ctx, bin, dir, p); err != nil {
				t.Error(err)
			}
		})
	}
	for _, proto := range []Proto{H1, GRPC} {
		t.Run("envoy/"+string(proto), func(t *testing.T) {
			y, err := EnvoyConfig(18081, "127.0.0.1:18082", proto)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(y, "port_value: 18081") || !strings.Contains(y, "port_value: 18082") {
				t.Errorf("envoy config lacks the ports:\n%s", y)
			}
			if h2 := strings.Contains(y, "http2_protocol_options"); h2 != (proto == GRPC) {
				t.Errorf("envoy config for %s: HTTP/2 upstream %v:\n%s", proto, h2, y)
			}
			bin, err := exec.LookPath("envoy")
			if err != nil {
				t.Skip("envoy not installed: config not validated")
			}
			p, err := writeFile(t.TempDir(), "envoy.yaml", y)
			if err != nil {
				t.Fatal(err)
			}
			if err := ValidateEnvoy(ctx, bin, p); err != nil {
				t.Error(err)
			}
		})
	}
	files, err := WriteTLSFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, proto := range []Proto{H1, H2C, GRPC} {
		for _, tf := range []*TLSFiles{nil, files} {
			name := "haproxy-2hop/" + string(proto)
			if tf != nil {
				name = "haproxy-2hop-tls/" + string(proto)
			}
			t.Run(name, func(t *testing.T) {
				egress, ingress := HAProxy2HopConfigs(18081, 18082, 18083, "127.0.0.1:18084", proto, tf)
				if !strings.Contains(egress, "server up 127.0.0.1:18082") || !strings.Contains(ingress, "bind 127.0.0.1:18082") ||
					!strings.Contains(ingress, "server up 127.0.0.1:18084") || !strings.Contains(ingress, "stats socket ipv4@127.0.0.1:18083") {
					t.Errorf("the hops are not chained:\n%s\n%s", egress, ingress)
				}
				if got := strings.Count(egress+ingress, " ssl "); got != map[bool]int{false: 0, true: 2}[tf != nil] {
					t.Errorf("%d ssl keywords, want the middle hop's two with TLS only:\n%s\n%s", got, egress, ingress)
				}
				bin, err := exec.LookPath("haproxy")
				if err != nil {
					t.Skip("haproxy not installed (apt-get install haproxy): config not validated")
				}
				dir := t.TempDir()
				for _, cfg := range []string{egress, ingress} {
					p, err := writeFile(dir, "haproxy.cfg", cfg)
					if err != nil {
						t.Fatal(err)
					}
					if err := ValidateHAProxy(ctx, bin, p); err != nil {
						t.Error(err)
					}
				}
			})
		}
	}
	t.Run("validator reports failure", func(t *testing.T) {
		bin, err := exec.LookPath("haproxy")
		if err != nil {
			t.Skip("haproxy not installed")
		}
		p, err := writeFile(t.TempDir(), "bad.cfg", "frontend x\n    bind nonsense:port:here\n")
		if err != nil {
			t.Fatal(err)
		}
		if err := ValidateHAProxy(ctx, bin, p); err == nil {
			t.Error("a broken config passed haproxy -c")
		}
	})
}

// buildMeshd builds cmd/meshd for the meshd scenarios. When the build fails it
// fails the test if the environment variable CI is set (CI must measure meshd), and
// otherwise returns "" and the reason, which the caller reports as a skip.
func buildMeshd(t *testing.T) (string, string) {
	t.Helper()
	// Compare stops each meshd with SIGTERM, after which it serves on for its drain
	// grace (3 s) before draining; the meshd children inherit this and stop at once,
	// so each meshd scenario does not add 3 s to the test.
	t.Setenv("MESHD_DRAIN_GRACE", "0s")
	out := filepath.Join(t.TempDir(), "meshd")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, err := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/meshd/meshd/cmd/meshd").CombinedOutput()
	if err != nil {
		why := "go build ./cmd/meshd failed: " + err.Error() + ": " + strings.TrimSpace(string(b))
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set, so the meshd scenarios must run: %s", why)
		}
		return "", "meshd scenarios skipped (they fail instead when CI is set): " + why
	}
	return out, ""
}

// isMeshd says whether a scenario runs meshd.
func isMeshd(s string) bool {
	return s == ScenarioMeshd || s == ScenarioMeshd2Hop || s == ScenarioMeshd2HopTLS || s == ScenarioMeshdBaseline
}

// A short real run of every scenario available here, with the processes under
// test started as the harness starts them. The one meshd build serves as both meshd
// and meshd-baseline.
func TestCompareRealRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts proxies; skipped in -short")
	}
	meshd, why := buildMeshd(t)
	plan := selfPlan(t)
	plan.Scenarios = DefaultScenarios(true)
	plan.Meshd, plan.BaselineMeshd = meshd, meshd
	plan.WorkDir = t.TempDir()
	if meshd == "" {
		t.Log(why)
		plan.Scenarios = slices.DeleteFunc(plan.Scenarios, isMeshd)
	}
	plan.Phases = []Phase{{Name: "fixed-200", Rate: 200, Connections: 4, Duration: time.Second, Warmup: 100 * time.Millisecond}}
	var progress bytes.Buffer
	plan.Progress = &progress
	rep, err := Compare(context.Background(), plan)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*PhaseResult{}
	for _, r := range rep.Results {
		byName[r.Scenario] = r
	}
	skipped := map[string]string{}
	for _, s := range rep.Skipped {
		skipped[s.Scenario] = s.Reason
	}
	for _, name := range DefaultScenarios(true) {
		t.Run(name, func(t *testing.T) {
			r := byName[name]
			if r == nil {
				if isMeshd(name) && meshd == "" {
					t.Skip(why)
				}
				if reason := skipped[name]; strings.Contains(reason, "not found on PATH") {
					t.Skip(reason)
				}
				t.Fatalf("no result; skipped because: %q", skipped[name])
			}
			if r.ErrorCount != 0 || r.Requests != 200 {
				t.Errorf("requests %d errors %v, want 200 and none", r.Requests, r.Errors)
			}
			if r.P50US <= 0 || r.P99US < r.P50US || r.MaxUS < r.P99US {
				t.Errorf("percentiles p50 %v p99 %v max %v", r.P50US, r.P99US, r.MaxUS)
			}
			if name == ScenarioDirect {
				if r.Proxies != 0 || r.AddedP50US != nil {
					t.Errorf("direct has proxies %d / added latency", r.Proxies)
				}
				return
			}
			if r.Proxies == 0 || r.ProxyCPUPerRequest <= 0 || r.ProxyPeakRSSBytes < 1<<20 {
				t.Errorf("proxies %d CPU/req %v µs RSS %d B: want measured values", r.Proxies, r.ProxyCPUPerRequest, r.ProxyPeakRSSBytes)
			}
			if r.AddedP50US == nil {
				t.Error("no added latency vs direct")
			}
			if (name == ScenarioMeshd2Hop || name == ScenarioHAProxy2Hop) && r.Proxies != 2 {
				t.Errorf("%s has %d proxies, want 2", name, r.Proxies)
			}
			if name == ScenarioMeshdBaseline && r.Proxies != 1 {
				t.Errorf("meshd-baseline has %d proxies, want 1 as meshd", r.Proxies)
			}
		})
	}
	if meshd != "" {
		// meshd-baseline is the meshd scenario: the same config, another binary.
		a, errA := os.ReadFile(filepath.Join(plan.WorkDir, ScenarioMeshd, "mesh.yaml"))
		b, errB := os.ReadFile(filepath.Join(plan.WorkDir, ScenarioMeshdBaseline, "mesh.yaml"))
		if errA != nil || errB != nil || !bytes.Equal(a, b) {
			t.Errorf("meshd and meshd-baseline configs differ (%v, %v):\n%s\n---\n%s", errA, errB, a, b)
		}
		if rep.MeshdBinary != meshd || rep.BaselineMeshdBinary != meshd {
			t.Errorf("report names binaries %q and %q, want %q", rep.MeshdBinary, rep.BaselineMeshdBinary, meshd)
		}
	}
	if !strings.Contains(progress.String(), "fixed-200 direct") {
		t.Errorf("no progress lines: %q", progress.String())
	}

	dir := t.TempDir()
	files, err := WriteReport(dir, rep)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"report.json", "report.md", "latency-fixed-200.svg", "latency-fixed-200.png"} {
		if !slices.Contains(files, filepath.Join(dir, want)) {
			t.Errorf("report files %v lack %s", files, want)
		}
	}
	// Every report sets the proxies against the Go floor (the minimal relay).
	if md, err := os.ReadFile(filepath.Join(dir, "report.md")); err != nil {
		t.Error(err)
	} else if !strings.Contains(string(md), "Over the Go floor") || !strings.Contains(string(md), "go-httputil: CPU/req ") {
		t.Errorf("report.md has no floor ratios:\n%s", md)
	} else if meshd != "" && !strings.Contains(string(md), "- meshd: CPU/req ") {
		t.Errorf("report.md has no meshd floor ratio:\n%s", md)
	}
	var decoded struct {
		Machine Machine
		Results []struct {
			Labels            string
			ActualQPS         float64
			RequestedQPS      string
			DurationHistogram struct {
				Count       uint64
				Percentiles []struct{ Percentile, Value float64 }
			}
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &decoded); err != nil {
		t.Fatal(err)
	}
	if decoded.Machine.Cores == 0 || decoded.Machine.Kernel == "" || len(decoded.Results) != len(rep.Results) {
		t.Errorf("report.json machine %+v, %d results", decoded.Machine, len(decoded.Results))
	}
	for _, r := range decoded.Results {
		if r.RequestedQPS != "200" || r.DurationHistogram.Count != 200 || len(r.DurationHistogram.Percentiles) != 5 {
			t.Errorf("fortio fields of %s: qps %q count %d percentiles %d", r.Labels, r.RequestedQPS, r.DurationHistogram.Count, len(r.DurationHistogram.Percentiles))
		}
	}
	md, _ := os.ReadFile(filepath.Join(dir, "report.md"))
	if !strings.Contains(string(md), "| direct |") || !strings.Contains(string(md), rep.Machine.Kernel) {
		t.Errorf("report.md lacks the table or machine:\n%s", md)
	}
	if meshd == "" {
		return
	}
	// meshd-baseline is labelled in every report file, and compared with haproxy as
	// any scenario is when haproxy ran.
	var wantMD []string
	for _, name := range []string{ScenarioMeshd, ScenarioMeshdBaseline} {
		wantMD = append(wantMD, "| "+name+" | ")
		if byName[ScenarioHAProxy] != nil {
			wantMD = append(wantMD, "- "+name+": req/s ")
		}
	}
	wantMD = append(wantMD, "meshd binaries: meshd = "+meshd+", meshd-baseline = "+meshd)
	for _, want := range wantMD {
		if !strings.Contains(string(md), want) {
			t.Errorf("report.md lacks %q:\n%s", want, md)
		}
	}
	if !strings.Contains(string(b), `"scenario": "meshd-baseline"`) || !strings.Contains(string(b), `"baselineMeshdBinary": "`+meshd+`"`) {
		t.Errorf("report.json lacks meshd-baseline or its binary")
	}
	svg, err := os.ReadFile(filepath.Join(dir, "latency-fixed-200.svg"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{ScenarioMeshd, ScenarioMeshdBaseline} {
		if n := strings.Count(string(svg), ">"+name+"<"); n != 1 {
			t.Errorf("latency-fixed-200.svg has %d legend entries %q, want 1", n, name)
		}
	}
}

// Without a baseline binary meshd-baseline is skipped with a reason naming the flag,
// and the other scenarios run.
func TestCompareBaselineWithoutBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the upstream; skipped in -short")
	}
	plan := selfPlan(t)
	plan.Scenarios = []string{ScenarioDirect, ScenarioMeshdBaseline}
	plan.Phases = []Phase{{Name: "fixed-100", Rate: 100, Connections: 1, Duration: 100 * time.Millisecond}}
	rep, err := Compare(context.Background(), plan)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 1 || rep.Results[0].Scenario != ScenarioDirect || rep.Results[0].Requests == 0 {
		t.Errorf("results %+v, want direct measured", rep.Results)
	}
	if len(rep.Skipped) != 1 || rep.Skipped[0].Scenario != ScenarioMeshdBaseline || !strings.Contains(rep.Skipped[0].Reason, BaselineMeshdFlag) {
		t.Errorf("skipped %+v, want meshd-baseline with a reason naming %s", rep.Skipped, BaselineMeshdFlag)
	}
	if rep.BaselineMeshdBinary != "" {
		t.Errorf("report names a baseline binary %q", rep.BaselineMeshdBinary)
	}
}

func TestCompareRealRunH2C(t *testing.T) {
	if testing.Short() {
		t.Skip("starts proxies; skipped in -short")
	}
	meshd, why := buildMeshd(t)
	plan := selfPlan(t)
	plan.Proto = H2C
	plan.Meshd, plan.BaselineMeshd = meshd, meshd
	plan.Scenarios = []string{ScenarioDirect, ScenarioMeshd, ScenarioMeshdBaseline, ScenarioMeshd2Hop, ScenarioHTTPUtil, ScenarioHAProxy, ScenarioHAProxy2Hop, ScenarioNginx}
	if meshd == "" {
		t.Log(why)
		plan.Scenarios = slices.DeleteFunc(plan.Scenarios, isMeshd)
	}
	plan.Phases = []Phase{{Name: "h2c", Rate: 100, Connections: 2, Duration: 500 * time.Millisecond}}
	rep, err := Compare(context.Background(), plan)
	if err != nil {
		t.Fatal(err)
	}
	measured := map[string]*PhaseResult{}
	for _, r := range rep.Results {
		measured[r.Scenario] = r
		if r.ErrorCount != 0 || r.Requests != 50 {
			t.Errorf("%s over h2c: requests %d errors %v", r.Scenario, r.Requests, r.Errors)
		}
	}
	for _, s := range rep.Skipped {
		if !strings.Contains(s.Reason, "not found on PATH") {
			t.Errorf("%s failed: %s", s.Scenario, s.Reason)
		}
	}
	if meshd == "" {
		t.Skip(why)
	}
	for _, name := range []string{ScenarioMeshd, ScenarioMeshdBaseline, ScenarioMeshd2Hop} {
		r := measured[name]
		if r == nil {
			t.Errorf("%s was not measured over h2c", name)
			continue
		}
		wantProxies := 1
		if name == ScenarioMeshd2Hop {
			wantProxies = 2
		}
		if r.Proto != string(H2C) || r.Proxies != wantProxies || r.AddedP50US == nil {
			t.Errorf("%s over h2c: proto %q, %d proxies, added p50 %v; want h2c, %d proxies, a value", name, r.Proto, r.Proxies, r.AddedP50US, wantProxies)
		}
	}
}

// --target measures any URL, path and query included, in both loop modes.
func TestCompareTarget(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RequestURI() != "/svc/hello?x=1" {
			http.Error(w, "wrong path "+r.URL.RequestURI(), http.StatusNotFound)
			return
		}
		hits.Add(1)
		w.Write([]byte("hi"))
	}))
	defer srv.Close()
	plan := Plan{Target: srv.URL + "/svc/hello?x=1", Rounds: 2, Phases: []Phase{
		{Name: "fixed-100", Rate: 100, Connections: 2, Duration: 300 * time.Millisecond},
		{Name: "max", Connections: 2, Duration: 200 * time.Millisecond},
	}}
	rep, err := Compare(context.Background(), plan)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 2 {
		t.Fatalf("%d results, want 2", len(rep.Results))
	}
	fixed, maxr := rep.Results[0], rep.Results[1]
	if fixed.Requests != 60 || fixed.ErrorCount != 0 || !fixed.OpenLoop || fixed.URL != plan.Target {
		t.Errorf("fixed phase: %d requests, errors %v, open %v, url %s", fixed.Requests, fixed.Errors, fixed.OpenLoop, fixed.URL)
	}
	if maxr.Requests < 100 || maxr.ErrorCount != 0 || maxr.OpenLoop || len(maxr.RoundQPS) != 2 {
		t.Errorf("max phase: %d requests, errors %v, rounds %v", maxr.Requests, maxr.Errors, maxr.RoundQPS)
	}
	if hits.Load() < int64(fixed.Requests+maxr.Requests) {
		t.Errorf("server saw %d requests", hits.Load())
	}
	// Unpinned, the load generator may use every CPU; it used some of them.
	if maxr.LoadgenCPUs != runtime.NumCPU() || maxr.LoadgenBusy <= 0 || maxr.LoadgenBusy > 1.5 {
		t.Errorf("load generator: %d CPUs, busy %.2f; want %d and a share in (0, 1]", maxr.LoadgenCPUs, maxr.LoadgenBusy, runtime.NumCPU())
	}
	var table bytes.Buffer
	if err := WriteTable(&table, rep, false); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Machine:", "fixed-100 (100 req/s open loop, 2 connections)", "max (max throughput", plan.Target} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	files, err := WriteReport(t.TempDir(), rep)
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(files, func(f string) bool { return filepath.Base(f) == "sweep.svg" }) {
		t.Errorf("a sweep plot without --sweep among %v", files)
	}

	if _, err := Compare(context.Background(), Plan{Target: "ftp://example.invalid/", Phases: plan.Phases}); err == nil || !strings.Contains(err.Error(), `scheme "ftp"`) {
		t.Errorf("ftp target: %v", err)
	}
}

func TestParseCPUList(t *testing.T) {
	tests := []struct {
		in      string
		want    []int
		wantErr bool
	}{
		{"0", []int{0}, false},
		{"0-2", []int{0, 1, 2}, false},
		{"1,3-4", []int{1, 3, 4}, false},
		{"", nil, true},
		{"2-1", nil, true},
		{"a", nil, true},
	}
	for _, tc := range tests {
		set, err := ParseCPUList(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseCPUList(%q) err %v", tc.in, err)
			continue
		}
		if err != nil {
			continue
		}
		var got []int
		for c := range 64 {
			if set.IsSet(c) {
				got = append(got, c)
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("ParseCPUList(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestReadProcTreeAndPinning(t *testing.T) {
	st, err := ReadProcTree(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.CPU <= 0 || st.HWM < 1<<20 || st.Procs < 1 {
		t.Errorf("own process: %+v", st)
	}
	p, err := StartProc(ProcSpec{Name: "sleep", Argv: []string{"sleep", "30"}, CPUs: "0"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	// Through taskset the pinning happens before exec: wait until sleep runs.
	comm := filepath.Join("/proc", itoa(p.PID()), "comm")
	if err := p.WaitReady(context.Background(), 5*time.Second, func() error {
		if b, _ := os.ReadFile(comm); strings.TrimSpace(string(b)) != "sleep" {
			return fmt.Errorf("comm %q", b)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join("/proc", itoa(p.PID()), "status"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "Cpus_allowed_list:\t0\n") {
		t.Errorf("child not pinned to cpu 0:\n%s", b)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadProcTree(p.PID()); err == nil {
		t.Error("stopped process still readable (not reaped)")
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestCompareTargetHost: --host replaces the Host the target URL would send, as a
// virtual service name must be sent to a meshd egress port.
func TestCompareTargetHost(t *testing.T) {
	var wrong atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "svc.mesh.local" {
			wrong.Add(1)
			http.Error(w, "wrong host "+r.Host, http.StatusNotFound)
			return
		}
		w.Write([]byte("hi"))
	}))
	defer srv.Close()
	plan := Plan{Target: srv.URL + "/", TargetHost: "svc.mesh.local", Rounds: 1, Phases: []Phase{
		{Name: "fixed-100", Rate: 100, Connections: 1, Duration: 200 * time.Millisecond},
	}}
	rep, err := Compare(context.Background(), plan)
	if err != nil {
		t.Fatal(err)
	}
	if r := rep.Results[0]; r.Requests == 0 || r.ErrorCount != 0 || wrong.Load() != 0 {
		t.Fatalf("%d requests, errors %v, %d with the wrong Host", r.Requests, r.Errors, wrong.Load())
	}
}

// The meshd binaries run in their scenario's config directory, so a relative --meshd
// or --baseline-meshd is made absolute; a missing one is an error naming the flag.
func TestMeshdBinaryPaths(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("meshd-before", []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(cwd, "meshd-before")
	if p, err := FindMeshd("meshd-before"); err != nil || p != want {
		t.Errorf("FindMeshd(meshd-before) = %q, %v; want %q", p, err, want)
	}
	if p, err := CheckBaselineMeshd("./meshd-before"); err != nil || p != want {
		t.Errorf("CheckBaselineMeshd(./meshd-before) = %q, %v; want %q", p, err, want)
	}
	for path, wantErr := range map[string]string{
		"":        "needs " + BaselineMeshdFlag + " PATH",
		"missing": BaselineMeshdFlag + " missing: stat missing: ",
		".":       BaselineMeshdFlag + " .: is a directory",
	} {
		if _, err := CheckBaselineMeshd(path); err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("CheckBaselineMeshd(%q) = %v, want an error containing %q", path, err, wantErr)
		}
	}
}

// Multiplexed h2c (4 streams per connection) and gRPC through every scenario that
// can carry them, as the harness starts them: every request answered, and in the
// closed-loop phase all 4 streams of a connection in flight at once. Only a missing
// binary may skip a scenario: each peer here is configured for both.
func TestCompareRealRunMultiplexed(t *testing.T) {
	if testing.Short() {
		t.Skip("starts proxies; skipped in -short")
	}
	meshd, why := buildMeshd(t)
	for _, proto := range []Proto{H2C, GRPC} {
		t.Run(string(proto), func(t *testing.T) {
			plan := selfPlan(t)
			plan.Proto = proto
			plan.Meshd = meshd
			plan.ReqBody = 10
			plan.Scenarios = []string{ScenarioDirect, ScenarioMeshd, ScenarioMeshd2Hop, ScenarioMeshd2HopTLS, ScenarioHTTPUtil,
				ScenarioHAProxy, ScenarioHAProxy2Hop, ScenarioHAProxy2HopTLS, ScenarioNginx, ScenarioEnvoy}
			if meshd == "" {
				t.Log(why)
				plan.Scenarios = slices.DeleteFunc(plan.Scenarios, isMeshd)
			}
			plan.Phases = []Phase{
				{Name: "fixed-400", Rate: 400, Connections: 2, Streams: 4, Duration: 125 * time.Millisecond},
				// 250 ms, not less: in a loaded full run a peer's connections took most of
				// 100 ms to come up and its row had no request (haproxy over h2c, twice).
				{Name: "max", Connections: 2, Streams: 4, Duration: 250 * time.Millisecond},
			}
			rep, err := Compare(context.Background(), plan)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range rep.Skipped {
				if !strings.Contains(s.Reason, "not found on PATH") {
					t.Errorf("%s did not run over %s: %s", s.Scenario, proto, s.Reason)
				}
			}
			measured := map[string]bool{}
			for _, r := range rep.Results {
				measured[r.Scenario] = true
				if r.Proto != string(proto) || r.Streams != 4 || r.ErrorCount != 0 {
					t.Errorf("%s %s: proto %q, %d streams, errors %v", r.Scenario, r.Phase, r.Proto, r.Streams, r.Errors)
				}
				switch r.Phase {
				case "fixed-400":
					if r.Requests != 50 {
						t.Errorf("%s %s: %d requests, want 50", r.Scenario, r.Phase, r.Requests)
					}
				case "max":
					if r.Requests == 0 || r.PeakStreams != 4 {
						t.Errorf("%s %s: %d requests, at most %d streams in flight on a connection; want some and 4", r.Scenario, r.Phase, r.Requests, r.PeakStreams)
					}
				}
			}
			for _, name := range plan.Scenarios {
				bin := strings.TrimSuffix(strings.TrimSuffix(name, "-tls"), "-2hop")
				if _, err := exec.LookPath(bin); name != ScenarioDirect && name != ScenarioHTTPUtil && !isMeshd(name) && err != nil {
					continue
				}
				if !measured[name] {
					t.Errorf("%s was not measured over %s", name, proto)
				}
			}
			// The TLS hops carry the hop's protocol: HTTP/2 for gRPC, HTTP/1.1 for h2c
			// clients (bridged, as in the one-hop scenarios).
			for _, h := range rep.TLSHops {
				if h.ALPN != hopALPN(proto) || h.Handshakes == 0 {
					t.Errorf("%s over %s: TLS hop %+v, want ALPN %s and handshakes", h.Scenario, proto, h, hopALPN(proto))
				}
			}
			if meshd == "" {
				t.Skip(why)
			}
		})
	}
}
