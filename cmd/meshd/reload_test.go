package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/proxy"
)

// reloadCfg is a valid mesh for node "client"; port varies the app's listener so each
// rendering has its own version.
func reloadCfg(port int) string {
	return fmt.Sprintf(`mesh: {meshName: m, spec: {egressFilter: {type: DROP_ALL}}}
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
`, port, port)
}

func digestOf(t *testing.T, yml string) string {
	t.Helper()
	c, err := config.Parse([]byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	return c.Digest()
}

func TestApplyInitialFallsBackToPersisted(t *testing.T) {
	dir := t.TempDir()
	persisted := filepath.Join(dir, "last-good.yaml")
	writeFile(t, persisted, reloadCfg(7000))
	good := filepath.Join(dir, "good.yaml")
	writeFile(t, good, reloadCfg(7001))
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, "mesh: {meshName: m}\nvirtualNodes: nope\n")
	log := slog.New(slog.DiscardHandler)
	cases := []struct {
		name, path, persist string
		wantSource          string
		wantErr             string
	}{
		{"source ok", good, persisted, "file:" + good, ""},
		{"source missing", filepath.Join(dir, "missing.yaml"), persisted, "persisted:" + persisted, ""},
		{"source rejected", bad, persisted, "persisted:" + persisted, ""},
		{"no persisted file", filepath.Join(dir, "missing.yaml"), filepath.Join(dir, "none.yaml"), "", "no persisted config"},
		{"no persistence", bad, "", "", "virtualNodes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv, err := proxy.New(proxy.Options{Node: "client", AdminAddr: "off"})
			if err != nil {
				t.Fatal(err)
			}
			err = applyInitial(context.Background(), srv, &config.FileSource{Path: c.path}, c.persist, log)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err %v, want it to mention %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := srv.Snapshot().Source(); got != c.wantSource {
				t.Fatalf("serving from %q, want %q", got, c.wantSource)
			}
		})
	}
}

func TestRunFlagErrors(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "mesh.yaml")
	writeFile(t, cfg, reloadCfg(7000))
	empty := filepath.Join(dir, "empty-token")
	writeFile(t, empty, "\n")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--node", "client"}, "one of -c FILE or --config-url URL"},
		{[]string{"-c", cfg, "--config-url", "http://x/", "--node", "client"}, "one of -c FILE or --config-url URL"},
		{[]string{"--config-url", "ftp://x/", "--node", "client"}, "want an http:// or https:// URL"},
		{[]string{"-c", cfg, "--node", "client", "--admin-token-file", empty}, "is empty"},
		{[]string{"-c", cfg, "--node", "client", "--admin-token-file", filepath.Join(dir, "nope")}, "--admin-token-file"},
		{[]string{"-c", cfg, "--node", "client", "--dns-min-ttl", "1m", "--dns-max-ttl", "10s"}, "want 0 < min <= max"},
		{[]string{"-c", cfg, "--node", "client", "--dns-resolver", "not-an-ip"}, "--dns-resolver"},
		{[]string{"-c", cfg, "--node", "client", "--first-request-timeout", "0s"}, "--first-request-timeout 0s: want > 0"},
		{[]string{"-c", cfg, "--node", "client", "--first-request-timeout", "-1s"}, "--first-request-timeout -1s: want > 0"},
		{[]string{"-c", cfg, "--node", "client", "--metrics-level", "verbose"}, `--metrics-level "verbose": want default or detailed`},
		{[]string{"-c", cfg, "--node", "client", "--http2-limits", "max-streams=10"}, `--http2-limits: http2 limit "max-streams=10": want key=value with key one of`},
		{[]string{"-c", cfg, "--node", "client", "--http2-limits", "max-concurrent-streams=0"}, `--http2-limits: http2 limit max-concurrent-streams=0: must be a whole number from 1`},
	}
	for _, c := range cases {
		var stderr strings.Builder
		if code := run(append([]string{"run"}, c.args...), io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("run %v = %d, %q; want 2 and %q", c.args, code, stderr.String(), c.want)
		}
	}
}

// meshdProc is a meshd process started for a test.
type meshdProc struct {
	cmd    *exec.Cmd
	logs   *syncBuffer
	admin  string
	egress string // host:port
}

func startMeshd(t *testing.T, bin string, env []string, args ...string) *meshdProc {
	t.Helper()
	egress, ingress, admin := freePort(t), freePort(t), freePort(t)
	p := &meshdProc{logs: &syncBuffer{}, admin: fmt.Sprintf("http://127.0.0.1:%d", admin), egress: fmt.Sprintf("127.0.0.1:%d", egress)}
	args = append([]string{"run", "--node", "client", "--egress-port", fmt.Sprint(egress), "--ingress-port", fmt.Sprint(ingress),
		"--ingress-bind", "127.0.0.1", "--admin-addr", fmt.Sprintf("127.0.0.1:%d", admin), "--drain-grace", "0"}, args...)
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stderr = p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = p.cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("meshd logs:\n%s", p.logs.String())
		}
	})
	waitReady(t, p.admin+"/ready")
	return p
}

type configAnswer struct {
	Version string
	Source  string
}

func (p *meshdProc) config(t *testing.T) configAnswer {
	t.Helper()
	resp, err := http.Get(p.admin + "/config")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var c configAnswer
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		t.Fatal(err)
	}
	return c
}

// waitVersion polls /config (another process: nothing to wait on but its answers)
// until it serves version, or fails after 20s.
func (p *meshdProc) waitVersion(t *testing.T, version string) configAnswer {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c := p.config(t)
		if c.Version == version {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("meshd serves %s from %s, want version %s", c.Version, c.Source, version)
		}
		time.Sleep(20 * time.Millisecond) // polling an external process
	}
}

// TestReloadBinary runs meshd processes with each config source: the watched file
// (replaced by rename and by symlink swap), SIGHUP without watching, the polled URL,
// and the persisted config when the URL is down at start.
func TestReloadBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the meshd binary; skipped with -short")
	}
	bin := meshdBinary(t)

	t.Run("watched file: rename and symlink swap", func(t *testing.T) {
		dir := t.TempDir()
		cfg := filepath.Join(dir, "mesh.yaml")
		writeFile(t, filepath.Join(dir, "rev0.yaml"), reloadCfg(7000))
		if err := os.Symlink("rev0.yaml", cfg); err != nil {
			t.Fatal(err)
		}
		p := startMeshd(t, bin, nil, "-c", cfg)
		if c := p.config(t); c.Version != digestOf(t, reloadCfg(7000)) || c.Source != "file:"+cfg {
			t.Fatalf("initial config %+v", c)
		}
		// Symlink swap (ln -sfn): a new target, the link renamed over the old one.
		writeFile(t, filepath.Join(dir, "rev1.yaml"), reloadCfg(7001))
		if err := os.Symlink("rev1.yaml", filepath.Join(dir, ".tmp-link")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, ".tmp-link"), cfg); err != nil {
			t.Fatal(err)
		}
		p.waitVersion(t, digestOf(t, reloadCfg(7001)))
		// Atomic rename of a regular file over the path.
		writeFile(t, filepath.Join(dir, ".mesh.yaml.new"), reloadCfg(7002))
		if err := os.Rename(filepath.Join(dir, ".mesh.yaml.new"), cfg); err != nil {
			t.Fatal(err)
		}
		p.waitVersion(t, digestOf(t, reloadCfg(7002)))
		// An invalid file is rejected; the last good config keeps serving.
		writeFile(t, filepath.Join(dir, ".mesh.yaml.new"), "mesh: {meshName: m}\nvirtualNodes: 1\n")
		if err := os.Rename(filepath.Join(dir, ".mesh.yaml.new"), cfg); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(p.logs.String(), "config rejected") {
			if time.Now().After(deadline) {
				t.Fatal("the invalid file was never rejected")
			}
			time.Sleep(20 * time.Millisecond) // polling an external process's log
		}
		if c := p.config(t); c.Version != digestOf(t, reloadCfg(7002)) {
			t.Fatalf("after a rejected file, serving %+v", c)
		}
	})

	t.Run("SIGHUP without watching", func(t *testing.T) {
		dir := t.TempDir()
		cfg := filepath.Join(dir, "mesh.yaml")
		writeFile(t, cfg, reloadCfg(7000))
		p := startMeshd(t, bin, []string{"MESHD_WATCH=false"}, "-c", cfg)
		writeFile(t, cfg, reloadCfg(7003))
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		p.waitVersion(t, digestOf(t, reloadCfg(7003)))
	})

	t.Run("polled URL, then persisted config while the URL is down", func(t *testing.T) {
		var mu sync.Mutex
		doc := reloadCfg(7000)
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			defer mu.Unlock()
			etag := `"` + digestOf(t, doc) + `"`
			if r.Header.Get("If-None-Match") == etag {
				w.WriteHeader(http.StatusNotModified)
				return
			}
			w.Header().Set("ETag", etag)
			_, _ = io.WriteString(w, doc)
		}))
		defer ts.Close()
		persist := filepath.Join(t.TempDir(), "last-good.yaml")
		p := startMeshd(t, bin, nil, "--config-url", ts.URL+"/mesh.yaml", "--poll-interval", "50ms", "--persist", persist)
		if c := p.config(t); c.Version != digestOf(t, reloadCfg(7000)) || !strings.HasPrefix(c.Source, "url:"+ts.URL) {
			t.Fatalf("initial config %+v", c)
		}
		mu.Lock()
		doc = reloadCfg(7004)
		mu.Unlock()
		p.waitVersion(t, digestOf(t, reloadCfg(7004)))
		// The file is written right after the swap that /config already shows.
		for deadline := time.Now().Add(10 * time.Second); ; {
			b, err := os.ReadFile(persist)
			if err == nil && string(b) == reloadCfg(7004) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("persisted %q, %v", b, err)
			}
			time.Sleep(10 * time.Millisecond) // polls a file an external process writes
		}

		// A second sidecar starting while the config URL is down comes up on the
		// persisted config.
		down := fmt.Sprintf("http://127.0.0.1:%d/mesh.yaml", freePort(t))
		q := startMeshd(t, bin, nil, "--config-url", down, "--persist", persist)
		if c := q.config(t); c.Version != digestOf(t, reloadCfg(7004)) || c.Source != "persisted:"+persist {
			t.Fatalf("started from %+v, want the persisted config", c)
		}
	})

	t.Run("admin on a non-loopback address needs a token", func(t *testing.T) {
		cfg := filepath.Join(t.TempDir(), "mesh.yaml")
		writeFile(t, cfg, reloadCfg(7000))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, "run", "-c", cfg, "--node", "client", "--admin-addr", "0.0.0.0:0",
			"--egress-port", fmt.Sprint(freePort(t)), "--ingress-port", fmt.Sprint(freePort(t)), "--ingress-bind", "127.0.0.1").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "token") {
			t.Fatalf("meshd with a non-loopback admin and no token: %v\n%s", err, out)
		}
	})
}
