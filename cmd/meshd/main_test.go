package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/config"
)

func TestVersionAndUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "meshd ") {
		t.Fatalf("version: code %d, out %q", code, out.String())
	}
	out.Reset()
	if code := run([]string{"frobnicate"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), `unknown command "frobnicate"`) {
		t.Fatalf("unknown command: code %d, stderr %q", code, errb.String())
	}
	if code := run(nil, &out, &errb); code != 2 {
		t.Fatalf("no args: code %d", code)
	}
}

func TestValidate(t *testing.T) {
	good := filepath.Join("..", "..", "config", "testdata", "shop.yaml")
	var out, errb bytes.Buffer
	if code := run([]string{"validate", "-c", good, "--node", "frontend"}, &out, &errb); code != 0 {
		t.Fatalf("valid config: code %d, out %q, err %q", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "valid (mesh shop") {
		t.Fatalf("valid config output: %q", out.String())
	}

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	writeFile(t, bad, `mesh: {meshName: shop}
virtualNodes:
  - virtualNodeName: a
    spec:
      listeners: [{portMapping: {port: 70000, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:1"]}}
virtualRouters:
  - virtualRouterName: r
    spec: {listeners: [{portMapping: {port: 80, protocol: http}}]}
routes:
  - routeName: x
    virtualRouterName: r
    spec:
      httpRoute:
        match: {prefix: /}
        action: {weightedTargets: [{virtualNode: missing, weight: 101}]}
`)
	out.Reset()
	if code := run([]string{"validate", "-c", bad}, &out, &errb); code != 1 {
		t.Fatalf("invalid config: code %d, out %q", code, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := []string{
		"virtualNodes[0].spec.listeners[0].portMapping.port",
		`weightedTargets[0].virtualNode`,
		`weightedTargets[0].weight`,
	}
	for _, w := range want {
		found := false
		for _, l := range lines {
			if strings.Contains(l, w) && strings.HasPrefix(l, bad+": ") {
				found = true
			}
		}
		if !found {
			t.Errorf("validate output lacks a line for %s:\n%s", w, out.String())
		}
	}
	if len(lines) < len(want) {
		t.Errorf("want every error on its own line, got %d lines", len(lines))
	}

	unknown := filepath.Join(t.TempDir(), "unknown.yaml")
	writeFile(t, unknown, "mesh: {meshName: shop, spec: {egresFilter: {type: DROP_ALL}}}\n")
	out.Reset()
	if code := run([]string{"validate", "-c", unknown}, &out, &errb); code != 1 || !strings.Contains(out.String(), "mesh.spec.egresFilter") {
		t.Fatalf("unknown field: code %d, out %q", code, out.String())
	}
}

func TestDemoMeshValidates(t *testing.T) {
	raw, err := renderDemo(demoPorts{Frontend: 18080, V1: 19001, V2: 19002})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(raw)
	if err != nil {
		t.Fatalf("embedded demo mesh: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("embedded demo mesh: %v", err)
	}
}

func TestNodeFromEnv(t *testing.T) {
	t.Setenv("MESHD_NODE", "")
	t.Setenv("APPMESH_VIRTUAL_NODE_NAME", "mesh/shop/virtualNode/frontend")
	if got := nodeFromEnv(); got != "frontend" {
		t.Fatalf("nodeFromEnv = %q", got)
	}
}

// TestRunBinary builds meshd, runs it on a real config as a process, sends a request
// through it, and checks that SIGTERM drains and exits 0: the README's promise. The
// drain follows Envoy's sequence: /ready fails at once while the listeners keep
// serving for --drain-grace, so an app still calling out is not refused.
func TestRunBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the meshd binary; skipped with -short")
	}
	dir := t.TempDir()
	bin := meshdBinary(t)
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "app saw %s", r.Host)
	})}
	go func() { _ = srv.Serve(app) }()
	t.Cleanup(func() { _ = srv.Close() })
	appPort := app.Addr().(*net.TCPAddr).Port

	cfgPath := filepath.Join(dir, "mesh.yaml")
	writeFile(t, cfgPath, fmt.Sprintf(`mesh: {meshName: m, spec: {egressFilter: {type: DROP_ALL}}}
virtualNodes:
  - virtualNodeName: client
    spec:
      listeners: [{portMapping: {port: 1234, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:1234"]}}
      backends: [{virtualService: {virtualServiceName: app.local}}]
  - virtualNodeName: app
    spec:
      listeners: [{portMapping: {port: %d, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:%d"]}}
virtualServices:
  - virtualServiceName: app.local
    spec: {provider: {virtualNode: {virtualNodeName: app}}}
`, appPort, appPort))
	egress, ingress, admin := freePort(t), freePort(t), freePort(t)
	cmd := exec.Command(bin, "run", "-c", cfgPath, "--node", "client",
		"--egress-port", fmt.Sprint(egress), "--ingress-port", fmt.Sprint(ingress),
		"--ingress-bind", "127.0.0.1", "--admin-addr", fmt.Sprintf("127.0.0.1:%d", admin), "--drain-grace", "2s")
	var logs syncBuffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	adminURL := fmt.Sprintf("http://127.0.0.1:%d", admin)
	waitReady(t, adminURL+"/ready")
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/x", egress), nil)
	req.Host = "app.local"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "app saw app.local" {
		t.Fatalf("through meshd: %d %q", resp.StatusCode, body)
	}
	info, err := http.Get(adminURL + "/server_info")
	if err != nil {
		t.Fatal(err)
	}
	ib, _ := io.ReadAll(info.Body)
	info.Body.Close()
	if !strings.Contains(string(ib), `"state": "LIVE"`) {
		t.Fatalf("/server_info: %s", ib)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Within the grace: readiness fails, yet a new connection is still served.
	for deadline := time.Now().Add(time.Second); ; {
		r, err := http.Get(adminURL + "/ready")
		if err == nil {
			r.Body.Close()
			if r.StatusCode == http.StatusServiceUnavailable {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/ready did not fail within 1s of SIGTERM (last: %v)", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	late, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		t.Fatalf("a request during the drain grace was refused: %v", err)
	}
	late.Body.Close()
	if late.StatusCode != 200 {
		t.Fatalf("a request during the drain grace: %d", late.StatusCode)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("meshd exited with %v; logs:\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("meshd did not exit within 30s of SIGTERM")
	}
	if l := logs.String(); !strings.Contains(l, "draining") || !strings.Contains(l, "stopped") {
		t.Fatalf("logs lack the drain: %s", l)
	}
}

// syncBuffer is a bytes.Buffer safe for the exec copier and the test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitReady(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond): // polling interval for an external process
		}
	}
	t.Fatalf("%s never answered 200", url)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestStartupGC: the collector is off until the first config serves, bounded by a
// memory limit (startupHeapBound, or half the cgroup's memory, or GOMEMLIMIT, the
// lowest), and restore puts back what was set before, once.
func TestStartupGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(250))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
	for _, c := range []struct {
		name      string
		limit     int64
		cgroup    uint64
		wantBound int64
	}{
		{"no limits", math.MaxInt64, 0, startupHeapBound},
		{"small cgroup", math.MaxInt64, 64 << 20, 32 << 20},
		{"GOMEMLIMIT lower", 50 << 20, 0, 50 << 20},
		{"large cgroup", math.MaxInt64, 1 << 30, startupHeapBound},
	} {
		t.Run(c.name, func(t *testing.T) {
			debug.SetGCPercent(250)
			debug.SetMemoryLimit(c.limit)
			restore := startupGC(func() uint64 { return c.cgroup })
			if p := debug.SetGCPercent(-1); p != -1 {
				t.Errorf("GC percent %d during start-up, want -1 (off)", p)
			}
			if l := debug.SetMemoryLimit(-1); l != c.wantBound {
				t.Errorf("memory limit %d during start-up, want %d", l, c.wantBound)
			}
			restore()
			if p := debug.SetGCPercent(250); p != 250 {
				t.Errorf("GC percent %d after, want 250", p)
			}
			if l := debug.SetMemoryLimit(-1); l != c.limit {
				t.Errorf("memory limit %d after, want %d", l, c.limit)
			}
			debug.SetGCPercent(100)
			restore() // once: a second call changes nothing
			if p := debug.SetGCPercent(-1); p != 100 {
				t.Errorf("a second restore set GC percent %d", p)
			}
		})
	}
}

// TestCPUProfileBinary: --cpu-profile writes a pprof profile (gzip-compressed protobuf)
// of the run when meshd exits on SIGTERM, and a file that cannot be created stops meshd
// at start, naming the flag.
func TestCPUProfileBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the meshd binary; skipped with -short")
	}
	dir := t.TempDir()
	bin := meshdBinary(t)
	cfgPath := filepath.Join(dir, "mesh.yaml")
	writeFile(t, cfgPath, `mesh: {meshName: m, spec: {egressFilter: {type: DROP_ALL}}}
virtualNodes:
  - virtualNodeName: client
    spec:
      listeners: [{portMapping: {port: 1234, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:1234"]}}
`)
	prof := filepath.Join(dir, "meshd.pprof")
	egress, ingress, admin := freePort(t), freePort(t), freePort(t)
	args := []string{"run", "-c", cfgPath, "--node", "client",
		"--egress-port", fmt.Sprint(egress), "--ingress-port", fmt.Sprint(ingress),
		"--ingress-bind", "127.0.0.1", "--admin-addr", fmt.Sprintf("127.0.0.1:%d", admin), "--drain-grace", "0s"}
	cmd := exec.Command(bin, append(args, "--cpu-profile", prof)...)
	var logs syncBuffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	waitReady(t, fmt.Sprintf("http://127.0.0.1:%d/ready", admin))
	// The profile covers the whole run: nothing of it is written before meshd exits
	// (pprof writes it at StopCPUProfile), so a stop at start would show here.
	if fi, err := os.Stat(prof); err != nil || fi.Size() != 0 {
		t.Fatalf("profile while meshd runs: %v, %v; want an empty file, written at exit", fi, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("meshd run: %v\n%s", err, logs.String())
	}
	kept, err := os.ReadFile(prof)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(kept))
	if err != nil {
		t.Fatalf("the profile is not gzip-compressed as pprof's are: %v", err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil || len(raw) == 0 {
		t.Fatalf("profile: %d bytes, %v", len(raw), err)
	}
	// pprof's Profile message: its string table holds the sample type names.
	if !bytes.Contains(raw, []byte("cpu")) || !bytes.Contains(raw, []byte("nanoseconds")) {
		t.Fatalf("profile of %d bytes names no cpu/nanoseconds sample type", len(raw))
	}

	// A run refused for another flag leaves an earlier profile alone.
	refused := exec.Command(bin, append(args, "--cpu-profile", prof, "--log-level", "loud")...)
	if out, err := refused.CombinedOutput(); refused.ProcessState.ExitCode() != 2 {
		t.Fatalf("--log-level loud: exit %d (%v), want 2:\n%s", refused.ProcessState.ExitCode(), err, out)
	}
	if fi, err := os.Stat(prof); err != nil || fi.Size() != int64(len(kept)) {
		t.Fatalf("the profile after a refused run: %v, %v; want it kept (%d bytes)", fi, err, len(kept))
	}

	bad := exec.Command(bin, append(args, "--cpu-profile", filepath.Join(dir, "missing", "p.pprof"))...)
	out, err := bad.CombinedOutput()
	if code := bad.ProcessState.ExitCode(); code != 2 || !strings.Contains(string(out), "--cpu-profile") {
		t.Fatalf("unwritable --cpu-profile: exit %d (%v), want 2 naming the flag:\n%s", code, err, out)
	}
}

// TestCPUProfileWriteError: a profile that cannot be written whole (here /dev/full,
// where every write fails with ENOSPC, as on a full disk) is reported when meshd stops;
// runtime/pprof itself drops its write errors.
func TestCPUProfileWriteError(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skipf("no /dev/full to stand for a full disk: %v", err)
	}
	var stderr bytes.Buffer
	stop, err := startCPUProfile("/dev/full", &stderr)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	if got := stderr.String(); !strings.Contains(got, "--cpu-profile: /dev/full is incomplete") || !strings.Contains(got, "no space left") {
		t.Fatalf("stderr after a failed profile write: %q", got)
	}
}
