package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/bench"
)

// TestMain lets the test binary stand in for meshbench's own `internal` subcommands:
// Compare starts the upstream and the httputil proxy as `<self> internal ...`, and
// under `go test` self is this binary.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "internal" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	// Under -race each re-executed child sleeps 1 s at exit (GORACE atexit_sleep_ms)
	// and Compare stops them one by one; they inherit this setting.
	if _, set := os.LookupEnv("GORACE"); !set {
		_ = os.Setenv("GORACE", "atexit_sleep_ms=0")
	}
	os.Exit(m.Run())
}

func TestTargetRun(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	defer srv.Close()
	dir := filepath.Join(t.TempDir(), "rep")
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"--target", srv.URL + "/x", "--rate", "100", "--connections", "2",
		"--max-connections", "2", "--duration", "200ms", "--warmup", "0s", "--rounds", "1", "--out", dir}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, f := range []string{"report.json", "report.md", "latency-fixed-100.png", "latency-max.svg", "fortio/http---127.0.0.1-PORT-x_max.json", "hlog/http---127.0.0.1-PORT-x_max.hlog"} {
		f = strings.ReplaceAll(f, "PORT", srv.URL[strings.LastIndex(srv.URL, ":")+1:])
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("missing %s: %v", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "sweep.png")); err == nil {
		t.Error("sweep.png drawn without --sweep")
	}
	if !strings.Contains(out.String(), "Report written to "+dir) || !strings.Contains(out.String(), srv.URL+"/x") {
		t.Errorf("stdout:\n%s", out.String())
	}
}

func TestFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--proto", "h3"},
		{"--streams", "0"},
		{"--streams", "4"}, // h1 has no streams
		{"--proto", "h1", "--streams", "2"},
		{"--cpus", "0:1"},
		{"--sweep", "--sweep-rates", "x"},
		{"stray"},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, &out, &errb); code != 2 {
			t.Errorf("run(%v) = %d, want 2 (stderr %q)", args, code, errb.String())
		}
	}
}

// TestDefaultPlan checks what `meshbench` with no arguments runs, without running it:
// every scenario, a fixed-rate and a max-throughput phase, interleaved rounds, about
// 30 s of measurement, and a report directory ./bench-report-<timestamp>.
func TestDefaultPlan(t *testing.T) {
	var stderr bytes.Buffer
	plan, dir, err := parsePlan(nil, &stderr)
	if err != nil {
		t.Fatalf("parsePlan(no args): %v (%s)", err, stderr.String())
	}
	if !slices.Equal(plan.Scenarios, bench.AllScenarios()) || plan.Target != "" {
		t.Errorf("scenarios %v target %q, want every scenario %v", plan.Scenarios, plan.Target, bench.AllScenarios())
	}
	want := []bench.Phase{
		{Name: "fixed-1000", Rate: 1000, Connections: 8, Streams: 1, Duration: time.Second, Warmup: 250 * time.Millisecond},
		{Name: "max", Connections: 50, Streams: 1, Duration: time.Second, Warmup: 250 * time.Millisecond},
	}
	if !slices.Equal(plan.Phases, want) {
		t.Errorf("phases %+v, want %+v", plan.Phases, want)
	}
	if plan.Rounds != 2 || plan.Proto != bench.H1 || plan.RespBody != 63 || plan.ReqBody != 0 || plan.Timeout != 5*time.Second {
		t.Errorf("rounds %d proto %q bodies %d/%d timeout %v", plan.Rounds, plan.Proto, plan.ReqBody, plan.RespBody, plan.Timeout)
	}
	var measured, loaded time.Duration
	for _, ph := range plan.Phases {
		n := time.Duration(plan.Rounds * len(plan.Scenarios))
		measured += n * ph.Duration
		loaded += n * (ph.Duration + ph.Warmup)
	}
	// The usage promises "a ~40 s comparison".
	if measured < 30*time.Second || measured > 40*time.Second || loaded > 50*time.Second {
		t.Errorf("default plan measures %v (%v with warm-up), want about 40 s", measured, loaded)
	}
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(dir) != cwd || !regexp.MustCompile(`^bench-report-\d{8}-\d{6}$`).MatchString(filepath.Base(dir)) {
		t.Errorf("report dir %s, want ./bench-report-<timestamp> in %s", dir, cwd)
	}
	if plan.WorkDir != filepath.Join(dir, "configs") {
		t.Errorf("work dir %s, want %s/configs", plan.WorkDir, dir)
	}
	if plan.CPUsLoad != "" || plan.CPUsProxy != "" || plan.CPUsUpstream != "" || plan.Meshd != "" || plan.BaselineMeshd != "" {
		t.Errorf("default plan pins or names a meshd: %+v", plan)
	}
}

// TestBaselineMeshdFlag: --baseline-meshd adds meshd-baseline right after meshd to
// the default scenarios and leaves an explicit --scenarios as given; naming
// meshd-baseline without the flag, or giving the flag a path that is not a file, is
// a usage error naming the flag.
func TestBaselineMeshdFlag(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "meshd-before")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	parse := func(args ...string) (bench.Plan, error) {
		t.Helper()
		var stderr bytes.Buffer
		plan, _, err := parsePlan(args, &stderr)
		return plan, err
	}

	plan, err := parse("--baseline-meshd", bin)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"direct", "meshd", "meshd-baseline", "meshd-2hop", "floor", "go-httputil", "haproxy", "haproxy-2hop", "nginx", "envoy"}
	if !slices.Equal(plan.Scenarios, want) || plan.BaselineMeshd != bin {
		t.Errorf("with --baseline-meshd: scenarios %v baseline %q, want %v and %q", plan.Scenarios, plan.BaselineMeshd, want, bin)
	}
	if !slices.Equal(plan.Scenarios, bench.DefaultScenarios(true)) {
		t.Errorf("scenarios %v, want bench.DefaultScenarios(true) %v", plan.Scenarios, bench.DefaultScenarios(true))
	}

	plan, err = parse("--meshd", bin, "--baseline-meshd", bin, "--scenarios", "meshd-baseline,meshd,haproxy")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"meshd-baseline", "meshd", "haproxy"}; !slices.Equal(plan.Scenarios, want) || plan.Meshd != bin {
		t.Errorf("explicit --scenarios: %v (meshd %q), want %v as given", plan.Scenarios, plan.Meshd, want)
	}
	// The flag alone does not add the scenario to an explicit list.
	if plan, err = parse("--baseline-meshd", bin, "--scenarios", "meshd,haproxy"); err != nil || slices.Contains(plan.Scenarios, "meshd-baseline") {
		t.Errorf("--scenarios meshd,haproxy with the flag: %v, %v", plan.Scenarios, err)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--scenarios", "meshd-baseline,meshd,haproxy"}, "meshd-baseline needs --baseline-meshd PATH"},
		{[]string{"--baseline-meshd", filepath.Join(dir, "missing")}, "--baseline-meshd " + filepath.Join(dir, "missing") + ": stat "},
		{[]string{"--baseline-meshd", dir}, "--baseline-meshd " + dir + ": is a directory"},
	} {
		_, err := parse(tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parsePlan(%v) = %v, want an error containing %q", tc.args, err, tc.want)
		}
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), tc.args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("run(%v) = %d, stderr %q; want 2 and the error", tc.args, code, stderr.String())
		}
	}
	// The same kind of error as --meshd's (which is reported when Compare looks for meshd).
	if _, err := bench.FindMeshd(filepath.Join(dir, "missing")); err == nil || !strings.HasPrefix(err.Error(), "--meshd "+filepath.Join(dir, "missing")+": stat ") {
		t.Errorf("FindMeshd(missing) = %v", err)
	}

	var help bytes.Buffer
	if _, _, err := parsePlan([]string{"-h"}, &help); err == nil {
		t.Fatal("-h: no flag.ErrHelp")
	}
	for _, want := range []string{"-baseline-meshd", "--meshd bin/meshd --baseline-meshd /tmp/meshd-before --scenarios meshd-baseline,meshd,haproxy"} {
		if !strings.Contains(help.String(), want) {
			t.Errorf("--help lacks %q:\n%s", want, help.String())
		}
	}
}

// TestDefaultRun executes the default plan with shortened durations and two of its
// scenarios, and checks it writes the report where the default says and tells so.
func TestDefaultRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes; skipped in -short")
	}
	t.Chdir(t.TempDir())
	var stdout, stderr bytes.Buffer
	plan, dir, err := parsePlan(nil, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	plan.Self, plan.Progress = self, &stderr
	plan.Scenarios = []string{bench.ScenarioDirect, bench.ScenarioHTTPUtil}
	plan.Rounds = 1
	for i := range plan.Phases {
		plan.Phases[i].Duration, plan.Phases[i].Warmup = 100*time.Millisecond, 0
	}
	if code := execute(context.Background(), plan, dir, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "Report written to "+dir+"/ (report.json, report.md,") {
		t.Errorf("stdout does not name the report dir %s:\n%s", dir, stdout.String())
	}
	for _, f := range []string{"report.json", "report.md", "latency-fixed-1000.svg", "latency-max.png", "configs"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("report lacks %s: %v", f, err)
		}
	}
}

// TestSweep runs sweep mode: each rate × connections point and a max-throughput
// point per connection count is measured for each scenario, listed in the report and
// drawn in sweep.svg with one curve per scenario and connection count.
func TestSweep(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes; skipped in -short")
	}
	dir := filepath.Join(t.TempDir(), "rep")
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"--sweep", "--sweep-rates", "200,400", "--sweep-connections", "2,4",
		"--scenarios", "direct,go-httputil", "--duration", "100ms", "--warmup", "0s", "--rounds", "1", "--out", dir}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	scenarios := []string{"direct", "go-httputil"}
	points := []struct {
		phase string
		rate  float64
		conns int
	}{{"200/s-c2", 200, 2}, {"400/s-c2", 400, 2}, {"max-c2", 0, 2}, {"200/s-c4", 200, 4}, {"400/s-c4", 400, 4}, {"max-c4", 0, 4}}

	type point struct {
		Scenario    string  `json:"scenario"`
		Phase       string  `json:"phase"`
		Rate        float64 `json:"requestedRate"`
		Connections int     `json:"connections"`
		Requests    uint64  `json:"requests"`
	}
	var rep struct {
		Results []point `json:"results"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != len(points)*len(scenarios) {
		t.Errorf("report.json has %d results, want %d", len(rep.Results), len(points)*len(scenarios))
	}
	md, err := os.ReadFile(filepath.Join(dir, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range points {
		shape := fmt.Sprintf("%g req/s open loop, %d connections", p.rate, p.conns)
		if p.rate == 0 {
			shape = fmt.Sprintf("max throughput, closed loop, %d connections", p.conns)
		}
		heading := p.phase + " (" + shape + ")"
		if !strings.Contains(string(md), "## "+heading) {
			t.Errorf("report.md lacks the point %q", heading)
		}
		if !strings.Contains(stdout.String(), heading) {
			t.Errorf("the table on stdout lacks the point %q", heading)
		}
		for _, s := range scenarios {
			found := slices.ContainsFunc(rep.Results, func(r point) bool {
				return r.Scenario == s && r.Phase == p.phase && r.Rate == p.rate && r.Connections == p.conns && r.Requests > 0
			})
			if !found {
				t.Errorf("report.json lacks %s at %s", s, p.phase)
			}
		}
	}
	svg, err := os.ReadFile(filepath.Join(dir, "sweep.svg"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "sweep.png")); err != nil {
		t.Error(err)
	}
	for _, s := range scenarios {
		for _, c := range []int{2, 4} {
			name := fmt.Sprintf("%s c%d", s, c)
			if n := strings.Count(string(svg), ">"+name+"<"); n != 1 {
				t.Errorf("sweep.svg has %d legend entries %q, want one curve", n, name)
			}
		}
	}
}

// progressLine is a finished measurement as the progress output reports it.
var progressLine = regexp.MustCompile(`(?m)^\[(\d+)/(\d+)\] round (\d+)/(\d+) (\S+) (\S+): [\d.]+ req/s, p50 `)

// TestInterleavedRounds checks from the progress lines that measured windows run
// scenario A, B, A, B …: within a round each phase measures every scenario once, in
// order, and the next round repeats the pattern.
func TestInterleavedRounds(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes; skipped in -short")
	}
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"--scenarios", "direct,go-httputil", "--rounds", "3", "--rate", "200",
		"--connections", "2", "--max-connections", "2", "--duration", "60ms", "--warmup", "0s",
		"--out", filepath.Join(t.TempDir(), "rep")}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	type window struct {
		step, round     int
		phase, scenario string
	}
	var got, want []window
	for _, m := range progressLine.FindAllStringSubmatch(stderr.String(), -1) {
		step, _ := strconv.Atoi(m[1])
		round, _ := strconv.Atoi(m[3])
		got = append(got, window{step, round, m[5], m[6]})
	}
	step := 0
	for round := 1; round <= 3; round++ {
		for _, phase := range []string{"fixed-200", "max"} {
			for _, s := range []string{"direct", "go-httputil"} {
				step++
				want = append(want, window{step, round, phase, s})
			}
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("measured windows in order:\n got %v\nwant %v\nprogress:\n%s", got, want, stderr.String())
	}
}

// TestTLSFlag: --tls puts each two-hop scenario's TLS twin right after it, in the
// default list and in an explicit one; a list without a two-hop scenario is a usage
// error naming the flag, and so is --tls with --target; --help shows the way to
// measure the TLS hop.
func TestTLSFlag(t *testing.T) {
	parse := func(args ...string) (bench.Plan, error) {
		t.Helper()
		var stderr bytes.Buffer
		plan, _, err := parsePlan(args, &stderr)
		return plan, err
	}
	plan, err := parse("--tls")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"direct", "meshd", "meshd-2hop", "meshd-2hop-tls", "floor", "go-httputil", "haproxy", "haproxy-2hop", "haproxy-2hop-tls", "nginx", "envoy"}
	if !slices.Equal(plan.Scenarios, want) {
		t.Errorf("--tls: scenarios %v, want %v", plan.Scenarios, want)
	}
	plan, err = parse("--tls", "--proto", "grpc", "--scenarios", "direct,meshd-2hop,haproxy-2hop")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"direct", "meshd-2hop", "meshd-2hop-tls", "haproxy-2hop", "haproxy-2hop-tls"}; !slices.Equal(plan.Scenarios, want) || plan.Proto != bench.GRPC {
		t.Errorf("--tls --scenarios: %v (%s), want %v", plan.Scenarios, plan.Proto, want)
	}
	// Without the flag the TLS scenarios run when named, and only then.
	if plan, err = parse(); err != nil || slices.ContainsFunc(plan.Scenarios, bench.IsTLSHop) {
		t.Errorf("default scenarios %v (%v) include a TLS hop", plan.Scenarios, err)
	}
	if plan, err = parse("--scenarios", "haproxy-2hop-tls"); err != nil || !slices.Equal(plan.Scenarios, []string{"haproxy-2hop-tls"}) {
		t.Errorf("--scenarios haproxy-2hop-tls: %v, %v", plan.Scenarios, err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls", "--scenarios", "direct,meshd"}, "--tls applies to the two-hop scenarios"},
		{[]string{"--tls", "--target", "http://127.0.0.1:1/"}, "--tls adds TLS-hop scenarios, and --target http://127.0.0.1:1/ measures one URL"},
	} {
		if _, err := parse(tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parsePlan(%v) = %v, want an error containing %q", tc.args, err, tc.want)
		}
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), tc.args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("run(%v) = %d, stderr %q; want 2 and the error", tc.args, code, stderr.String())
		}
	}
	var help bytes.Buffer
	_, _, _ = parsePlan([]string{"-h"}, &help)
	for _, want := range []string{"-tls", "meshbench --cpus 0:1:1 --tls --scenarios direct,meshd-2hop,haproxy-2hop"} {
		if !strings.Contains(help.String(), want) {
			t.Errorf("--help lacks %q:\n%s", want, help.String())
		}
	}
}

// TestStreamsAndGRPCFlags: --streams sets every phase's streams per connection and
// names the sweep points; --proto grpc is accepted with streams too.
func TestStreamsAndGRPCFlags(t *testing.T) {
	var stderr bytes.Buffer
	plan, _, err := parsePlan([]string{"--proto", "h2c", "--streams", "10"}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Proto != bench.H2C || len(plan.Phases) != 2 {
		t.Fatalf("proto %q phases %+v", plan.Proto, plan.Phases)
	}
	for _, ph := range plan.Phases {
		if ph.Streams != 10 {
			t.Errorf("phase %s: %d streams, want 10", ph.Name, ph.Streams)
		}
	}
	plan, _, err = parsePlan([]string{"--proto", "grpc", "--streams", "4", "--sweep", "--sweep-rates", "100", "--sweep-connections", "2"}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ph := range plan.Phases {
		names = append(names, ph.Name)
	}
	if plan.Proto != bench.GRPC || !slices.Equal(names, []string{"100/s-c2-m4", "max-c2-m4"}) {
		t.Errorf("grpc sweep: proto %q phases %v", plan.Proto, names)
	}
	var help bytes.Buffer
	_, _, _ = parsePlan([]string{"-h"}, &help)
	for _, want := range []string{"-streams", "grpc"} {
		if !strings.Contains(help.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

// TestGRPCStreamsRun runs meshbench --proto grpc --streams 4 against the upstream
// directly and through the Go relay and checks the table says the protocol, the
// streams and how gRPC is counted.
func TestGRPCStreamsRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes; skipped in -short")
	}
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"--proto", "grpc", "--streams", "4", "--scenarios", "direct,go-httputil",
		"--rate", "200", "--connections", "2", "--max-connections", "2", "--duration", "100ms", "--warmup", "0s",
		"--rounds", "1", "--out", filepath.Join(t.TempDir(), "rep")}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	for _, want := range []string{"protocol grpc;", "errors are counted by status code", "fixed-200 (200 req/s open loop, 2 connections × 4 streams",
		"max (max throughput, closed loop, 2 connections × 4 streams (peak in flight per connection: 4)"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, stdout.String())
		}
	}
}

// TestScaleFlag: --scale makes a plan of its own from the flags it takes, and refuses
// the ones that shape the comparison.
func TestScaleFlag(t *testing.T) {
	var stderr bytes.Buffer
	plan, dir, err := parsePlan([]string{"--scale", "routes=200", "--max-connections", "4", "--duration", "2s", "--warmup", "0s", "--timeout", "1s", "--cpus", "0:1:", "--out", t.TempDir()}, &stderr)
	if err != nil {
		t.Fatalf("parsePlan: %v (%s)", err, stderr.String())
	}
	if plan.Scale == nil || *plan.Scale != (bench.ScaleSpec{Routes: 200, Routers: 100}) {
		t.Fatalf("scale %+v", plan.Scale)
	}
	if len(plan.Phases) != 1 || plan.Phases[0].Connections != 4 || plan.Phases[0].Duration != 2*time.Second || plan.Phases[0].Warmup != 0 ||
		plan.Timeout != time.Second || plan.CPUsLoad != "0" || plan.CPUsProxy != "1" || plan.WorkDir != filepath.Join(dir, "configs") {
		t.Fatalf("plan %+v", plan)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--scale", "routes=10,routers=3"}, "do not spread evenly"},
		{[]string{"--scale", "routes=100", "--sweep"}, "--sweep true: shapes the comparison, and --scale routes=100 runs alone"},
		{[]string{"--scale", "routes=100", "--target", "http://127.0.0.1:1/"}, "--target http://127.0.0.1:1/: shapes the comparison"},
		{[]string{"--scale", "routes=100", "--cpus", "0:1:1"}, "leave UPSTREAM empty"},
		{[]string{"--scale", "routes=100", "--max-connections", "0"}, "needs at least 1"},
	} {
		if _, _, err := parsePlan(tc.args, &stderr); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parsePlan(%v) = %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}
