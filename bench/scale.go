package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshd/meshd/internal/meshgen"
)

// ScaleFlag is meshbench's flag for the mesh-scale scenario (issue 17): meshd on a
// generated mesh of N routes, measured for start time, memory, routing and a reload
// under load.
const ScaleFlag = "--scale"

// ScaleSpec is what `--scale routes=N[,routers=R]` asks for.
type ScaleSpec struct {
	Routes  int // total routes
	Routers int // virtual routers they are spread over (Routes/Routers each)
}

// ParseScale reads the --scale value: routes=N, optionally routers=R (default 100, or 1
// when N < 100); R must divide N.
func ParseScale(s string) (ScaleSpec, error) {
	var sp ScaleSpec
	for kv := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n < 1 {
			return sp, fmt.Errorf("%s %q: want routes=N[,routers=R] with N, R ≥ 1", ScaleFlag, s)
		}
		switch k {
		case "routes":
			sp.Routes = n
		case "routers":
			sp.Routers = n
		default:
			return sp, fmt.Errorf("%s %q: unknown key %q; want routes=N[,routers=R]", ScaleFlag, s, k)
		}
	}
	if sp.Routes == 0 {
		return sp, fmt.Errorf("%s %q: routes=N is required", ScaleFlag, s)
	}
	if sp.Routers == 0 {
		sp.Routers = min(100, sp.Routes)
		for sp.Routes%sp.Routers != 0 {
			sp.Routers--
		}
	}
	if sp.Routes%sp.Routers != 0 {
		return sp, fmt.Errorf("%s %q: %d routes do not spread evenly over %d routers", ScaleFlag, s, sp.Routes, sp.Routers)
	}
	return sp, nil
}

// ScalePlan is one --scale run.
type ScalePlan struct {
	Spec     ScaleSpec
	Meshd    string // the meshd binary
	Dir      string // where the generated config goes
	CPUs     string // pin meshd to these CPUs ("" = not pinned)
	Conns    int    // connections of each load phase (default 8)
	Duration time.Duration
	Warmup   time.Duration
	Timeout  time.Duration // per request
	// ReloadAfter is how far into the reload phase's load the new config is put.
	ReloadAfter time.Duration
	Log         io.Writer // progress lines; nil: none
}

// ScaleLoad is the result of load on one route.
type ScaleLoad struct {
	Route    string  `json:"route"` // the route the requests take, "router/route"
	Requests uint64  `json:"requests"`
	Failed   uint64  `json:"failed"` // transport errors and non-2xx responses
	RPS      float64 `json:"rps"`
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
}

// ScaleReport is what a --scale run measured.
type ScaleReport struct {
	Routes      int   `json:"routes"`
	Routers     int   `json:"routers"`
	ConfigBytes int64 `json:"config_bytes"`
	// ReadyMs is the time from starting meshd to its first /ready 200; StartCPUms the
	// CPU time meshd had used by then (a figure the machine's other load does not
	// inflate the way it does wall time).
	ReadyMs    float64 `json:"ready_ms"`
	StartCPUms float64 `json:"start_cpu_ms"`
	// RSSMiB is meshd's resident memory once ready (after a 1 s settle); PeakRSSMiB its
	// high-water mark by then.
	RSSMiB     float64   `json:"rss_mib"`
	PeakRSSMiB float64   `json:"peak_rss_mib"`
	First      ScaleLoad `json:"first_route"`
	Last       ScaleLoad `json:"last_route"`
	// Reload: load on the first route while the config is replaced (PUT /config, the
	// weights changed); every request must succeed.
	Reload     ScaleLoad `json:"reload"`
	ReloadMs   float64   `json:"reload_ms"`     // how long the PUT /config took (apply included)
	ReloadDone bool      `json:"reload_done"`   // the new version is in force afterwards
	RSSAfterMB float64   `json:"rss_after_mib"` // RSS after the load and the reload
}

// RunScale runs the --scale scenario: the built-in upstream, meshd on a generated mesh
// of plan.Spec's routes, load on the first and the last route, then load across a
// reload. meshd and the upstream are stopped on every path.
func RunScale(ctx context.Context, plan ScalePlan) (*ScaleReport, error) {
	if plan.Conns <= 0 {
		plan.Conns = 8
	}
	if plan.Duration <= 0 {
		plan.Duration = time.Second
	}
	if plan.Timeout <= 0 {
		plan.Timeout = 5 * time.Second
	}
	if plan.ReloadAfter <= 0 || plan.ReloadAfter >= plan.Duration {
		plan.ReloadAfter = plan.Duration / 3
	}
	logf := func(format string, args ...any) {
		if plan.Log != nil {
			fmt.Fprintf(plan.Log, "scale: "+format+"\n", args...)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // runs before wg.Wait: the upstream returns once ctx ends
	wg.Go(func() { _ = ServeUpstream(ctx, upLn, UpstreamConfig{BodySize: 63}) })
	upPort := upLn.Addr().(*net.TCPAddr).Port

	gen := scaleMesh(plan.Spec, upPort, 90)
	if err := os.MkdirAll(plan.Dir, 0o755); err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(plan.Dir, "mesh.json")
	data := gen.JSON()
	if err := os.WriteFile(cfgPath, data, 0o644); err != nil {
		return nil, err
	}
	rep := &ScaleReport{Routes: plan.Spec.Routes, Routers: plan.Spec.Routers, ConfigBytes: int64(len(data))}
	ports := make([]int, 3)
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return nil, err
		}
	}
	admin := "127.0.0.1:" + strconv.Itoa(ports[0])
	egress := "127.0.0.1:" + strconv.Itoa(ports[2])
	logf("%d routes over %d routers (%d bytes of config); starting meshd", rep.Routes, rep.Routers, rep.ConfigBytes)
	t0 := time.Now()
	p, err := StartProc(ProcSpec{Name: "meshd", Dir: plan.Dir, CPUs: plan.CPUs, Env: []string{"MESHD_DRAIN_GRACE=0s"},
		Argv: []string{plan.Meshd, "run", "-c", cfgPath, "--node", gen.Client, "--admin-addr", admin,
			"--ingress-port", strconv.Itoa(ports[1]), "--egress-port", strconv.Itoa(ports[2]), "--ingress-bind", "127.0.0.1"}})
	if err != nil {
		return nil, err
	}
	defer func() { _ = p.Stop() }()
	if err := waitReadyFine(ctx, p, "http://"+admin+"/ready", startTimeout); err != nil {
		return nil, err
	}
	rep.ReadyMs = durMs(time.Since(t0))
	if st, err := ReadProcTree(p.PID()); err == nil {
		rep.StartCPUms = durMs(st.CPU)
	}
	logf("ready after %.0f ms (%.0f ms of CPU)", rep.ReadyMs, rep.StartCPUms)
	select {
	case <-time.After(time.Second):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	rss, hwm, err := readRSSHWM(p.PID())
	if err != nil {
		return nil, err
	}
	rep.RSSMiB, rep.PeakRSSMiB = mib(rss), mib(hwm)
	logf("RSS %.1f MiB (peak %.1f MiB)", rep.RSSMiB, rep.PeakRSSMiB)

	load := func(router, route int, live func()) (ScaleLoad, error) {
		spec := LoadSpec{Addr: egress, Host: meshgen.Service(router), Path: meshgen.Prefix(route) + "item",
			Headers:     []Header{{Name: meshgen.HeaderName, Value: meshgen.HeaderValue(route)}},
			Connections: plan.Conns, Duration: plan.Duration, Warmup: plan.Warmup, Timeout: plan.Timeout}
		// live runs beside the measured part (the reload); Run returns only after it.
		var lwg sync.WaitGroup
		if live != nil {
			spec.AtMeasure = func(start bool) {
				if start {
					lwg.Go(live)
				}
			}
		}
		res, err := Run(ctx, spec)
		lwg.Wait()
		if err != nil {
			return ScaleLoad{}, err
		}
		// Errors holds the transport failures and the ≥ 400 answers.
		sl := ScaleLoad{Route: "vr" + strconv.Itoa(router) + "/" + meshgen.RouteName(router, route), Requests: res.OK + res.ErrorCount(),
			Failed: res.ErrorCount(), RPS: res.Rate(),
			P50ms: durMs(res.Latency.Percentile(50)), P99ms: durMs(res.Latency.Percentile(99))}
		if res.OK == 0 {
			return sl, fmt.Errorf("load on %s: no successful response (errors %v, statuses %v)", sl.Route, res.Errors, res.RetCodes)
		}
		return sl, nil
	}
	if rep.First, err = load(0, 0, nil); err != nil {
		return rep, err
	}
	logf("first route: %.0f req/s, p50 %.3f ms, p99 %.3f ms, %d failed", rep.First.RPS, rep.First.P50ms, rep.First.P99ms, rep.First.Failed)
	if rep.Last, err = load(plan.Spec.Routers-1, plan.Spec.Routes/plan.Spec.Routers-1, nil); err != nil {
		return rep, err
	}
	logf("last route: %.0f req/s, p50 %.3f ms, p99 %.3f ms, %d failed", rep.Last.RPS, rep.Last.P50ms, rep.Last.P99ms, rep.Last.Failed)

	next := scaleMesh(plan.Spec, upPort, 50).JSON()
	reloadErr := errors.New("reload: the load's measured part never started")
	var reloadMs float64
	rep.Reload, err = load(0, 0, func() {
		select {
		case <-time.After(plan.ReloadAfter):
		case <-ctx.Done():
			reloadErr = ctx.Err()
			return
		}
		t := time.Now()
		reloadErr = putConfig(ctx, "http://"+admin+"/config", next)
		reloadMs = durMs(time.Since(t))
	})
	rep.ReloadMs = reloadMs
	if err != nil {
		return rep, err
	}
	if reloadErr != nil {
		return rep, reloadErr
	}
	if rep.ReloadDone, err = configInForce(ctx, "http://"+admin+"/config", `"weight":50`); err != nil {
		return rep, err
	}
	logf("reload: PUT /config took %.0f ms; %d requests across it, %d failed", rep.ReloadMs, rep.Reload.Requests, rep.Reload.Failed)
	if rss, _, err := readRSSHWM(p.PID()); err == nil {
		rep.RSSAfterMB = mib(rss)
	}
	return rep, nil
}

// scaleMesh is the generated mesh of spec, its nodes at the upstream's port.
func scaleMesh(spec ScaleSpec, upPort, weightV1 int) meshgen.Spec {
	return meshgen.Spec{Routers: spec.Routers, RoutesPerRouter: spec.Routes / spec.Routers, Client: "front",
		UpstreamHost: "127.0.0.1", UpstreamPort: upPort, WeightV1: weightV1}
}

// waitReadyFine polls url every 2 ms (WaitReady's 20 ms would be most of the figure).
func waitReadyFine(ctx context.Context, p *Proc, url string, timeout time.Duration) error {
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("meshd exited (%v): %s", p.err, p.Output())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("meshd not ready after %v: %s", timeout, p.Output())
		}
	}
}

func putConfig(ctx context.Context, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("PUT /config: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("PUT /config: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}

// configInForce reports whether GET url (/config) holds want once spaces are removed.
func configInForce(ctx context.Context, url, want string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, fmt.Errorf("GET /config: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return false, fmt.Errorf("GET /config: %w", err)
	}
	return bytes.Contains(bytes.ReplaceAll(b, []byte(" "), nil), []byte(want)), nil
}

// readRSSHWM returns a process's VmRSS and VmHWM in bytes.
func readRSSHWM(pid int) (rss, hwm uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			rss = n << 10
		case "VmHWM":
			hwm = n << 10
		}
	}
	if rss == 0 {
		return 0, 0, errors.New("/proc/" + strconv.Itoa(pid) + "/status: no VmRSS")
	}
	return rss, hwm, nil
}

func durMs(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// WriteScale prints the report as a table and writes scale.json into dir.
func WriteScale(w io.Writer, dir string, rep *ScaleReport) (string, error) {
	fmt.Fprintf(w, "mesh scale: %d routes over %d virtual routers (%d bytes of config)\n", rep.Routes, rep.Routers, rep.ConfigBytes)
	fmt.Fprintf(w, "  start to /ready   %8.0f ms   (meshd CPU by then: %.0f ms)\n", rep.ReadyMs, rep.StartCPUms)
	fmt.Fprintf(w, "  RSS once ready    %8.1f MiB  (peak %.1f MiB; after load and reload %.1f MiB)\n", rep.RSSMiB, rep.PeakRSSMiB, rep.RSSAfterMB)
	fmt.Fprintf(w, "  %-22s %10s %8s %8s %10s %8s\n", "load", "req/s", "p50 ms", "p99 ms", "requests", "failed")
	for _, l := range []struct {
		name string
		l    ScaleLoad
	}{{"first route " + rep.First.Route, rep.First}, {"last route " + rep.Last.Route, rep.Last}, {"across reload", rep.Reload}} {
		fmt.Fprintf(w, "  %-22s %10.0f %8.3f %8.3f %10d %8d\n", l.name, l.l.RPS, l.l.P50ms, l.l.P99ms, l.l.Requests, l.l.Failed)
	}
	fmt.Fprintf(w, "  reload (PUT /config, weights changed): %.0f ms, new version in force: %v\n", rep.ReloadMs, rep.ReloadDone)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "scale.json")
	return path, os.WriteFile(path, append(b, '\n'), 0o644)
}
