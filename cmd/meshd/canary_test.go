package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/canary"
)

// canaryMesh: node client calls app.local, a virtual router whose route "main" splits
// between app-v1 (the primary) and app-v2 (the canary, at 0% to start).
func canaryMesh(v1, v2 int) string {
	return fmt.Sprintf(`mesh: {meshName: m}
virtualNodes:
  - virtualNodeName: client
    spec:
      listeners: [{portMapping: {port: 1234, protocol: http}}]
      backends: [{virtualService: {virtualServiceName: app.local}}]
  - virtualNodeName: app-v1
    spec:
      listeners: [{portMapping: {port: %[1]d, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:%[1]d"]}}
  - virtualNodeName: app-v2
    spec:
      listeners: [{portMapping: {port: %[2]d, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:%[2]d"]}}
virtualRouters:
  - virtualRouterName: app
    spec: {listeners: [{portMapping: {port: 8080, protocol: http}}]}
routes:
  - routeName: main
    virtualRouterName: app
    spec:
      httpRoute:
        match: {prefix: /}
        action:
          weightedTargets:
            - {virtualNode: app-v1, weight: 100} # the primary
            - {virtualNode: app-v2, weight: 0}
virtualServices:
  - virtualServiceName: app.local
    spec: {provider: {virtualRouter: {virtualRouterName: app}}}
`, v1, v2)
}

// versionServer answers with its name; when failEvery > 0, every failEvery-th request
// gets a 503, which App Mesh's default retry policy retries: the retry (the next request
// of the count) succeeds, so the client sees no failure, but the canary's errors show in
// its retries.
func versionServer(t *testing.T, name string, failEvery int64) (*httptest.Server, int) {
	t.Helper()
	var n atomic.Int64
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Version", name)
		if failEvery > 0 && n.Add(1)%failEvery == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, name)
	}))
	t.Cleanup(ts.Close)
	return ts, ts.Listener.Addr().(*net.TCPAddr).Port
}

// loadResult is what the bounded load saw: answers by version, and failures that were
// not the canary's own 503s.
type loadResult struct {
	mu       sync.Mutex
	byVer    map[string]int
	foreign  []string
	requests int
}

// runLoad sends requests for app.local through the sidecar's egress, one every few
// milliseconds, until the returned stop is called (also at the test's end) or max
// requests; stop returns once the load has ended.
func runLoad(t *testing.T, egress string, max int) (*loadResult, func()) {
	res := &loadResult{byVer: map[string]int{}}
	done := make(chan struct{})
	stopCh := make(chan struct{})
	var once sync.Once
	stopFn := func() { once.Do(func() { close(stopCh) }); <-done }
	t.Cleanup(stopFn)
	var stop <-chan struct{} = stopCh
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", egress)
		}}}
	go func() {
		defer close(done)
		defer client.CloseIdleConnections()
		for i := 0; i < max; i++ {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			resp, err := client.Get("http://app.local:8080/")
			res.mu.Lock()
			res.requests++
			switch {
			case err != nil:
				res.foreign = append(res.foreign, err.Error())
			default:
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				v := resp.Header.Get("X-Version")
				res.byVer[v]++
				if resp.StatusCode != 200 && v != "v2" {
					res.foreign = append(res.foreign, fmt.Sprintf("%d from %q", resp.StatusCode, v))
				}
			}
			res.mu.Unlock()
		}
	}()
	return res, stopFn
}

// waitMore waits (bounded) until n more requests have completed.
func (r *loadResult) waitMore(t *testing.T, n int) {
	t.Helper()
	r.mu.Lock()
	target := r.requests + n
	r.mu.Unlock()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		r.mu.Lock()
		done := r.requests >= target
		r.mu.Unlock()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the load did not complete %d more requests", n)
		}
	}
}

func (r *loadResult) count(v string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byVer[v]
}

// weightsIn reads the route's weights from the config file.
func weightsIn(t *testing.T, path string) map[string]int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := canary.ParseDoc(b)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := doc.Targets("app", "main")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, x := range ts {
		out[x.Node] = x.Weight
	}
	return out
}

// TestCanaryBinary runs `meshd canary` against a real sidecar following the config file,
// with bounded load through it throughout: a canary answering 50% 500s is rolled back
// after its first step, traffic returns to the primary and no request failed but the
// canary's own; a healthy canary is promoted step by step; --min-requests holds a step;
// a config changed by someone else aborts the run.
func TestCanaryBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the meshd binary; skipped with -short")
	}
	bin := meshdBinary(t)
	_, p1 := versionServer(t, "v1", 0)

	setup := func(t *testing.T, failEvery int64) (cfg string, p *meshdProc, f *canaryFlags) {
		_, p2 := versionServer(t, "v2", failEvery)
		cfg = filepath.Join(t.TempDir(), "mesh.yaml")
		writeFile(t, cfg, canaryMesh(p1, p2))
		p = startMeshd(t, bin, nil, "-c", cfg)
		f = &canaryFlags{config: cfg, route: "app/main", canary: "app-v2", steps: "20,60,100", metrics: p.admin + "/stats/prometheus",
			interval: 400 * time.Millisecond, maxErrorRate: 0.1, minRequests: 10,
			// A bound, so that a canary that never sees its requests fails the test
			// instead of holding until go test's timeout.
			timeout: 2 * time.Minute}
		if err := f.check(true); err != nil {
			t.Fatal(err)
		}
		return cfg, p, f
	}

	t.Run("failing canary rolled back", func(t *testing.T) {
		cfg, p, f := setup(t, 2)
		load, stop := runLoad(t, p.egress, 20000)
		var out, errOut bytes.Buffer
		code := runCanary(context.Background(), f, &out, &errOut, time.Sleep)
		if code != 1 || !strings.Contains(out.String(), "rolled back:") || !strings.Contains(out.String(), "above --max-error-rate") {
			t.Fatalf("canary = %d\n%s%s", code, out.String(), errOut.String())
		}
		if strings.Contains(out.String(), "step 60%") {
			t.Fatalf("the canary went past its first step:\n%s", out.String())
		}
		if w := weightsIn(t, cfg); w["app-v2"] != 0 || w["app-v1"] != 100 {
			t.Fatalf("weights after the rollback %v", w)
		}
		// Once the sidecar has the rolled-back config, every request goes to v1.
		b, _ := os.ReadFile(cfg)
		p.waitVersion(t, digestOf(t, string(b)))
		// The load sends one request at a time: once two more have completed, the one in
		// flight at the swap (it finishes on the snapshot it started with) is done, and
		// every later one was routed by the rolled-back config.
		load.waitMore(t, 2)
		before := load.count("v2")
		load.waitMore(t, 50)
		if after := load.count("v2"); after != before {
			t.Fatalf("the canary still got %d requests after the rollback was in force", after-before)
		}
		stop()
		if len(load.foreign) != 0 {
			t.Fatalf("%d of %d requests failed other than the canary's own 503s: %v", len(load.foreign), load.requests, load.foreign[:min(5, len(load.foreign))])
		}
		if load.count("v2") == 0 || load.count("v1") == 0 {
			t.Fatalf("traffic by version %v", load.byVer)
		}
	})

	t.Run("healthy canary promoted", func(t *testing.T) {
		cfg, p, f := setup(t, 0)
		load, stop := runLoad(t, p.egress, 20000)
		var out, errOut bytes.Buffer
		code := runCanary(context.Background(), f, &out, &errOut, time.Sleep)
		stop()
		if code != 0 {
			t.Fatalf("canary = %d\n%s%s", code, out.String(), errOut.String())
		}
		for _, want := range []string{"step 20%: app-v1=80 app-v2=20", "step 20% passed", "step 60%: app-v1=40 app-v2=60", "step 100%: app-v1=0 app-v2=100", "promoted:"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("output lacks %q:\n%s", want, out.String())
			}
		}
		if w := weightsIn(t, cfg); w["app-v2"] != 100 || w["app-v1"] != 0 {
			t.Fatalf("weights after the promotion %v", w)
		}
		if len(load.foreign) != 0 {
			t.Fatalf("requests failed: %v", load.foreign[:min(5, len(load.foreign))])
		}
		// Run again: the config says 100%, nothing to do.
		out.Reset()
		if code := runCanary(context.Background(), f, &out, &errOut, time.Sleep); code != 0 || !strings.Contains(out.String(), "already takes 100%") {
			t.Fatalf("second run = %d: %s", code, out.String())
		}
	})

	t.Run("min-requests holds", func(t *testing.T) {
		_, _, f := setup(t, 0)
		f.minRequests = 1e9 // never reached without load: every interval holds
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		sleeps := 0
		sleep := func(d time.Duration) {
			time.Sleep(d)
			if sleeps++; sleeps == 3 {
				cancel()
			}
		}
		var out, errOut bytes.Buffer
		code := runCanary(ctx, f, &out, &errOut, sleep)
		if code != 1 || strings.Count(out.String(), "hold at 20%") != 2 || !strings.Contains(errOut.String(), "interrupted at 20%") {
			t.Fatalf("canary = %d, want two holds at 20%% and the interruption\n%s%s", code, out.String(), errOut.String())
		}
		// With --timeout a canary that keeps holding is rolled back once the next interval
		// would end past it.
		f.timeout = 1000 * time.Millisecond
		out.Reset()
		errOut.Reset()
		code = runCanary(context.Background(), f, &out, &errOut, time.Sleep)
		if code != 1 || !strings.Contains(out.String(), "rolled back: --timeout 1s: not promoted in time") {
			t.Fatalf("canary --timeout = %d\n%s%s", code, out.String(), errOut.String())
		}
	})

	t.Run("a config changed meanwhile aborts", func(t *testing.T) {
		cfg, p, f := setup(t, 0)
		_, stop := runLoad(t, p.egress, 20000)
		defer stop()
		first := true
		sleep := func(d time.Duration) {
			if first {
				first = false
				// Someone else edits the file during the first step.
				b, _ := os.ReadFile(cfg)
				writeFile(t, cfg, string(b)+"# edited by someone else\n")
			}
			time.Sleep(d)
		}
		var out, errOut bytes.Buffer
		code := runCanary(context.Background(), f, &out, &errOut, sleep)
		if code != 1 || !strings.Contains(errOut.String(), "changed under the canary") {
			t.Fatalf("canary = %d, want an abort naming the change\n%s%s", code, out.String(), errOut.String())
		}
		if b, _ := os.ReadFile(cfg); !strings.Contains(string(b), "# edited by someone else") {
			t.Fatal("the other writer's change was overwritten")
		}
		if w := weightsIn(t, cfg); w["app-v2"] != 20 {
			t.Fatalf("weights %v, want the first step's left as they were", w)
		}
	})

	t.Run("through the admin API (--put)", func(t *testing.T) {
		_, p, f := setup(t, 0)
		f.config, f.put = "", p.admin+"/config"
		load, stop := runLoad(t, p.egress, 20000)
		var out, errOut bytes.Buffer
		code := runCanary(context.Background(), f, &out, &errOut, time.Sleep)
		stop()
		if code != 0 || !strings.Contains(out.String(), "promoted:") {
			t.Fatalf("canary --put = %d\n%s%s", code, out.String(), errOut.String())
		}
		if len(load.foreign) != 0 {
			t.Fatalf("requests failed: %v", load.foreign[:min(5, len(load.foreign))])
		}
		st := newStore(f)
		doc, err := st.read(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		ts, _ := doc.Targets("app", "main")
		if pct, _ := canary.CanaryPercent(ts, "app-v2"); pct != 100 {
			t.Fatalf("the sidecar serves the canary at %d%%", pct)
		}
		// abort through the admin API; then a PUT by someone else between the canary's
		// read and its write is refused by If-Match and aborts the run.
		if code := run([]string{"canary", "abort", "--put", f.put, "--route", "app/main", "--canary", "app-v2"}, io.Discard, &errOut); code != 0 {
			t.Fatalf("abort --put = %d: %s", code, errOut.String())
		}
		first := true
		sleep := func(d time.Duration) {
			if first {
				first = false
				data, tag, err := st.get(context.Background(), f.put)
				if err != nil {
					t.Error(err)
					return
				}
				// Another writer moves the weights a little (a new version, a new ETag).
				d2, _ := canary.ParseDoc(data)
				if _, err := d2.SetCanary("app", "main", "app-v2", 21); err != nil {
					t.Error(err)
				}
				b, _ := d2.Bytes()
				if _, err := st.putConfig(context.Background(), f.put, b, tag); err != nil {
					t.Errorf("the other writer's PUT: %v", err)
				}
			}
			time.Sleep(d)
		}
		out.Reset()
		errOut.Reset()
		_, stop2 := runLoad(t, p.egress, 20000) // traffic, so the step is judged and the next write tried
		defer stop2()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		code = runCanary(ctx, f, &out, &errOut, sleep)
		if code != 1 || !strings.Contains(errOut.String(), "changed under the canary") {
			t.Fatalf("canary --put with another writer = %d\n%s%s", code, out.String(), errOut.String())
		}
	})

	t.Run("promote, abort, dry run", func(t *testing.T) {
		cfg, _, f := setup(t, 0)
		var out, errOut bytes.Buffer
		if code := run([]string{"canary", "--dry-run", "-c", cfg, "--route", "app/main", "--canary", "app-v2"}, &out, &errOut); code != 0 ||
			!strings.Contains(out.String(), "step 10%: app-v1=90 app-v2=10") || !strings.Contains(out.String(), "step 100%") {
			t.Fatalf("dry run = %d: %s%s", code, out.String(), errOut.String())
		}
		if w := weightsIn(t, cfg); w["app-v2"] != 0 {
			t.Fatalf("the dry run wrote %v", w)
		}
		if code := run([]string{"canary", "promote", "-c", cfg, "--route", "app/main", "--canary", "app-v2"}, &out, &errOut); code != 0 {
			t.Fatalf("promote = %d: %s", code, errOut.String())
		}
		if w := weightsIn(t, cfg); w["app-v2"] != 100 {
			t.Fatalf("after promote %v", w)
		}
		if code := run([]string{"canary", "abort", "-c", cfg, "--route", "app/main", "--canary", "app-v2"}, &out, &errOut); code != 0 {
			t.Fatalf("abort = %d: %s", code, errOut.String())
		}
		if w := weightsIn(t, cfg); w["app-v2"] != 0 || w["app-v1"] != 100 {
			t.Fatalf("after abort %v", w)
		}
		_ = f
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{"canary", "-c", cfg, "--route", "main", "--canary", "app-v2", "--metrics", "http://x"}, "want ROUTER/ROUTE"},
			{[]string{"canary", "-c", cfg, "--route", "app/main", "--canary", "app-v2", "--metrics", "http://x", "--steps", "50,20,100"}, "increasing"},
			{[]string{"canary", "-c", cfg, "--route", "app/main", "--canary", "app-v2", "--metrics", "http://x", "--steps", "10,50"}, "must be 100"},
			{[]string{"canary", "-c", cfg, "--route", "app/main", "--canary", "app-v2"}, "--metrics"},
			{[]string{"canary", "-c", cfg, "--route", "app/main", "--canary", "app-v2", "--prometheus", "http://p", "--metrics", "http://x"}, "not both"},
			{[]string{"canary", "-c", cfg, "--route", "app/main", "--canary", "app-v2", "--metrics", "http://x", "--prometheus-selector", "job=\"x\""}, "needs --prometheus"},
			{[]string{"canary", "-c", cfg, "--put", "http://x", "--route", "app/main", "--canary", "app-v2", "--metrics", "http://x"}, "exactly one of"},
		} {
			errOut.Reset()
			if code := run(c.args, io.Discard, &errOut); code != 2 || !strings.Contains(errOut.String(), c.want) {
				t.Errorf("%v = %d %q, want 2 and %q", c.args[1:], code, errOut.String(), c.want)
			}
		}
	})
}

// TestCanaryPrometheus: the same failing canary judged from a real Prometheus server that
// scrapes the caller's sidecar (--prometheus, --prometheus-selector): rolled back after
// its first step. CI installs prometheus; elsewhere the test skips without it.
func TestCanaryPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("runs meshd and prometheus; skipped with -short")
	}
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("prometheus not found; CI installs it (apt-get install prometheus)")
		}
		t.Skip("prometheus not found (apt-get install prometheus)")
	}
	bin := meshdBinary(t)
	_, p1 := versionServer(t, "v1", 0)
	_, p2 := versionServer(t, "v2", 2)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "mesh.yaml")
	writeFile(t, cfg, canaryMesh(p1, p2))
	p := startMeshd(t, bin, nil, "-c", cfg)

	promPort := freePort(t)
	promCfg := filepath.Join(dir, "prometheus.yml")
	writeFile(t, promCfg, fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: meshd
    metrics_path: /stats/prometheus
    static_configs: [{targets: ["%s"]}]
`, strings.TrimPrefix(p.admin, "http://")))
	prom := exec.Command(promBin, "--config.file="+promCfg, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", promPort), "--log.level=warn")
	var promLog syncBuffer
	prom.Stderr = &promLog
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = prom.Process.Kill()
		_ = prom.Wait()
		if t.Failed() {
			t.Logf("prometheus:\n%s", promLog.String())
		}
	})
	promURL := fmt.Sprintf("http://127.0.0.1:%d", promPort)
	waitReady(t, promURL+"/-/ready")

	_, stop := runLoad(t, p.egress, 40000)
	defer stop()
	f := &canaryFlags{config: cfg, route: "app/main", canary: "app-v2", steps: "20,60,100", prometheus: promURL,
		promSelector: `job="meshd"`, interval: 3 * time.Second, maxErrorRate: 0.1, minRequests: 10}
	if err := f.check(true); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code := runCanary(ctx, f, &out, &errOut, time.Sleep)
	if code != 1 || !strings.Contains(out.String(), "rolled back:") || !strings.Contains(out.String(), "above --max-error-rate") {
		t.Fatalf("canary --prometheus = %d\n%s%s", code, out.String(), errOut.String())
	}
	if strings.Contains(out.String(), "step 60%") {
		t.Fatalf("the canary went past its first step:\n%s", out.String())
	}
	if w := weightsIn(t, cfg); w["app-v2"] != 0 || w["app-v1"] != 100 {
		t.Fatalf("weights after the rollback %v", w)
	}
}
