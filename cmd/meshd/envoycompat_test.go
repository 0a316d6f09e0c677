package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
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
)

// cleanEnv is the test process's environment without the variables meshd reads (so
// the machine's cannot leak in), plus extra.
func cleanEnv(extra ...string) []string {
	read := map[string]bool{}
	for _, n := range runFlagEnv {
		read[n] = true
	}
	for _, u := range unsupportedEnv {
		read[u.name] = true
	}
	var out []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !read[k] {
			out = append(out, kv)
		}
	}
	return append(out, extra...)
}

// runBinary runs meshd to completion (bounded by 30s) and returns its exit code and
// stderr.
func runBinary(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(meshdBinary(t), args...)
	cmd.Env = env
	var stderr, stdout bytes.Buffer
	cmd.Stderr, cmd.Stdout = &stderr, &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		if stdout.Len() > 0 {
			t.Errorf("meshd %v wrote to stdout: %q", args, stdout.String())
		}
		return cmd.ProcessState.ExitCode(), stderr.String()
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("meshd %v did not exit within 30s", args)
		return 0, ""
	}
}

// runningMeshd is a `meshd run` process started with env and no --node (the
// environment names it).
type runningMeshd struct {
	cmd    *exec.Cmd
	logs   *syncBuffer
	exited chan struct{}
}

func startMeshdEnv(t *testing.T, env []string, args ...string) *runningMeshd {
	t.Helper()
	egress, ingress := freePort(t), freePort(t)
	p := &runningMeshd{logs: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(meshdBinary(t), append([]string{"run", "--egress-port", fmt.Sprint(egress), "--ingress-port", fmt.Sprint(ingress),
		"--ingress-bind", "127.0.0.1", "--drain-grace", "0"}, args...)...)
	p.cmd.Env = env
	p.cmd.Stderr = p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(20 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("meshd logs:\n%s", p.logs.String())
		}
	})
	return p
}

func post(t *testing.T, url string) {
	t.Helper()
	resp, err := http.Post(url, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST %s: %s", url, resp.Status)
	}
}

// TestHealthAndWaitReadyBinary runs the real binaries: `meshd wait-ready` started
// before meshd waits for it and exits 0 once it is LIVE; `meshd health` finds the admin
// through App Mesh's ENVOY_ADMIN_ACCESS_PORT as run does, exits 0 silently when LIVE,
// 1 with the state after POST /healthcheck/fail, 0 again after /healthcheck/ok; POST
// /quitquitquit drains and exits 0; then health and wait-ready fail with a reason. The
// same process honours App Mesh's task definition variables: the node and mesh from
// APPMESH_RESOURCE_ARN, the admin access log, ENVOY_CONCURRENCY, and one warning line
// for the unsupported ones set (a 0 feature flag is not one).
func TestHealthAndWaitReadyBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the meshd binary; skipped with -short")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "mesh.yaml")
	writeFile(t, cfg, reloadCfg(7000))
	accessLog := filepath.Join(dir, "admin_access.log")
	port := freePort(t)
	adminURL := fmt.Sprintf("http://127.0.0.1:%d", port)
	env := cleanEnv(fmt.Sprintf("ENVOY_ADMIN_ACCESS_PORT=%d", port))

	// wait-ready first: nothing listens yet.
	wr := exec.Command(meshdBinary(t), "wait-ready", "--timeout", "30s", "--interval", "50ms")
	wr.Env = env
	var wrErr bytes.Buffer
	wr.Stderr = &wrErr
	if err := wr.Start(); err != nil {
		t.Fatal(err)
	}
	wrDone := make(chan error, 1)
	go func() { wrDone <- wr.Wait() }()

	p := startMeshdEnv(t, append(env,
		"APPMESH_RESOURCE_ARN=arn:aws:appmesh:eu-west-1:111122223333:mesh/m/virtualNode/client",
		"ENVOY_ADMIN_ACCESS_LOG_FILE="+accessLog, "ENVOY_CONCURRENCY=1",
		"ENABLE_ENVOY_DOG_STATSD=1", "STATSD_PORT=8125", "APPMESH_PREVIEW=0", "APPMESH_PLATFORM_K8S_VERSION=v1.30.1"),
		"-c", cfg)
	select {
	case err := <-wrDone:
		if err != nil {
			t.Fatalf("meshd wait-ready: %v: %s", err, wrErr.String())
		}
	case <-time.After(30 * time.Second):
		_ = wr.Process.Kill()
		t.Fatal("meshd wait-ready did not return within 30s of meshd starting")
	}
	if wrErr.Len() > 0 {
		t.Errorf("wait-ready wrote %q on success", wrErr.String())
	}

	if code, out := runBinary(t, env, "health"); code != 0 || out != "" {
		t.Fatalf("meshd health on a LIVE meshd: %d %q; want 0 and no output", code, out)
	}
	post(t, adminURL+"/healthcheck/fail")
	if code, out := runBinary(t, env, "health"); code != 1 || !strings.Contains(out, "state DRAINING") {
		t.Errorf("meshd health after /healthcheck/fail: %d %q; want 1 naming the state", code, out)
	}
	post(t, adminURL+"/healthcheck/ok")
	if code, out := runBinary(t, env, "health", "--admin-addr", fmt.Sprintf("127.0.0.1:%d", port)); code != 0 {
		t.Errorf("meshd health --admin-addr after /healthcheck/ok: %d %q", code, out)
	}

	resp, err := http.Get(adminURL + "/server_info")
	if err != nil {
		t.Fatal(err)
	}
	var si struct {
		Node               string
		CommandLineOptions map[string]any `json:"command_line_options"`
	}
	err = json.NewDecoder(resp.Body).Decode(&si)
	resp.Body.Close()
	if err != nil || si.Node != "client" || si.CommandLineOptions["concurrency"] != 1.0 ||
		fmt.Sprint(si.CommandLineOptions["node_metadata"]) != "map[APPMESH_PLATFORM_K8S_VERSION:v1.30.1]" {
		t.Errorf("/server_info: %v %+v", err, si)
	}

	post(t, adminURL+"/quitquitquit")
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("meshd did not exit within 30s of /quitquitquit")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("meshd exit code after /quitquitquit: %d, want 0", code)
	}
	logs := p.logs.String()
	var warnings []string
	for line := range strings.Lines(logs) {
		if strings.Contains(line, "does not support") {
			warnings = append(warnings, line)
		}
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "ENABLE_ENVOY_DOG_STATSD") || !strings.Contains(warnings[0], "STATSD_PORT") ||
		!strings.Contains(warnings[0], "/stats/prometheus") || strings.Contains(warnings[0], "APPMESH_PREVIEW") {
		t.Errorf("want one warning line naming ENABLE_ENVOY_DOG_STATSD and STATSD_PORT with the way out, not APPMESH_PREVIEW=0; got %q", warnings)
	}
	for _, want := range []string{"GOMAXPROCS set by --concurrency", "admin /quitquitquit", "stopped"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q", want)
		}
	}
	al, err := os.ReadFile(accessLog)
	if err != nil || !strings.Contains(string(al), `"POST /healthcheck/fail HTTP/1.1" 200`) || !strings.Contains(string(al), `"POST /quitquitquit HTTP/1.1" 200`) {
		t.Errorf("admin access log (ENVOY_ADMIN_ACCESS_LOG_FILE): %v %q", err, al)
	}

	if code, out := runBinary(t, env, "health"); code != 1 || !strings.Contains(out, "not live") || !strings.Contains(out, "refused") {
		t.Errorf("meshd health with no meshd: %d %q; want 1 and the reason", code, out)
	}
	if code, out := runBinary(t, env, "wait-ready", "--timeout", "300ms", "--interval", "50ms"); code != 1 || !strings.Contains(out, "not ready after 300ms") {
		t.Errorf("meshd wait-ready with no meshd: %d %q; want 1 and the reason", code, out)
	}
	if code, out := runBinary(t, env, "health", "--admin-addr", "off"); code != 2 || !strings.Contains(out, "admin listener is off") {
		t.Errorf("meshd health --admin-addr off: %d %q", code, out)
	}
	if code, out := runBinary(t, cleanEnv("ENVOY_ADMIN_ACCESS_PORT=x"), "health"); code != 2 || !strings.Contains(out, `ENVOY_ADMIN_ACCESS_PORT="x"`) {
		t.Errorf("meshd health with a bad ENVOY_ADMIN_ACCESS_PORT: %d %q", code, out)
	}
}

// TestRunNodeEnvRefused: App Mesh's node variables that meshd cannot serve stop `meshd
// run` naming the variable: a value of no App Mesh form, and a mesh that is not the
// config's (found once the config is read: exit 1); a virtual gateway's ARN with the
// sidecar's listener flags (a gateway has none).
func TestRunNodeEnvRefused(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "mesh.yaml")
	writeFile(t, cfg, reloadCfg(7000)) // mesh "m"
	for _, c := range []struct {
		name, value string
		code        int
		want        []string
	}{
		{"APPMESH_RESOURCE_ARN", "arn:aws:appmesh:eu-west-1:111122223333:mesh/m/virtualGateway/ingress-gw", 2,
			[]string{"--ingress-port: a gateway has no ingress or egress listener"}},
		{"APPMESH_VIRTUAL_NODE_NAME", "mesh/m/client", 2, []string{`APPMESH_VIRTUAL_NODE_NAME="mesh/m/client": want a virtual node ARN`}},
		{"APPMESH_VIRTUAL_NODE_NAME", "mesh/other/virtualNode/client", 1, []string{"APPMESH_VIRTUAL_NODE_NAME", `serves mesh "other"`, "mesh.meshName"}},
		{"APPMESH_RESOURCE_ARN", "arn:aws:appmesh:eu-west-1:1:mesh/other/virtualNode/client", 1, []string{"APPMESH_RESOURCE_ARN", `serves mesh "other"`, `value "m"`}},
	} {
		t.Run(c.name+"="+c.value, func(t *testing.T) {
			for _, n := range runFlagEnv {
				t.Setenv(n, "")
			}
			t.Setenv(c.name, c.value)
			var stderr strings.Builder
			code := run([]string{"run", "-c", cfg, "--ingress-port", "0", "--egress-port", "0", "--ingress-bind", "127.0.0.1", "--admin-addr", "127.0.0.1:0"}, io.Discard, &stderr)
			if code != c.code {
				t.Fatalf("run = %d, want %d: %s", code, c.code, stderr.String())
			}
			for _, w := range c.want {
				if !strings.Contains(strings.ReplaceAll(stderr.String(), `\"`, `"`), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
		})
	}
	// --node on the command line wins: the environment's node and mesh are not asked for.
	for _, n := range runFlagEnv {
		t.Setenv(n, "")
	}
	t.Setenv("APPMESH_RESOURCE_ARN", "arn:aws:appmesh:eu-west-1:1:mesh/m/virtualGateway/gw")
	fs := flag.NewFlagSet("meshd run", flag.ContinueOnError)
	var f runFlags
	f.register(fs)
	if err := fs.Parse([]string{"--node", "client"}); err != nil {
		t.Fatal(err)
	}
	if code := f.checkServed(fs, io.Discard); code != 0 || f.node != "client" || f.gateway != "" || f.nodeEnv.mesh != "" {
		t.Fatalf("--node with a gateway's ARN in the environment: code %d, node %q, gateway %q, env mesh %q", code, f.node, f.gateway, f.nodeEnv.mesh)
	}
	t.Setenv("APPMESH_RESOURCE_ARN", "arn:aws:appmesh:eu-west-1:1:mesh/other/virtualNode/client")
	if f := parseRunFlags(t, "--node", "server"); f.envMesh() != "" {
		t.Fatalf("--node server: the variable's mesh %q still binds", f.envMesh())
	}
	if f := parseRunFlags(t); f.envMesh() != "other" {
		t.Fatalf("the variable's node: mesh %q, want other", f.envMesh())
	}
}

// TestUnsupportedEnvWarning: the App Mesh variables meshd does not honour are named in
// one warning line, each with the way out; feature flags set to 0 or false are not.
func TestUnsupportedEnvWarning(t *testing.T) {
	for _, u := range unsupportedEnv {
		t.Setenv(u.name, "")
	}
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	if got := warnUnsupportedEnv(logger); len(got) != 0 || buf.Len() != 0 {
		t.Fatalf("nothing set: %v %q", got, buf.String())
	}
	t.Setenv("ENVOY_STATS_SINKS_CFG_FILE", "/etc/sinks.yaml")
	t.Setenv("ENABLE_ENVOY_JAEGER_TRACING", "1")
	t.Setenv("APPMESH_DUALSTACK_ENDPOINT", "0")
	t.Setenv("APPMESH_FIPS_ENDPOINT", "false")
	got := warnUnsupportedEnv(logger)
	if want := []string{"ENABLE_ENVOY_JAEGER_TRACING", "ENVOY_STATS_SINKS_CFG_FILE"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("warned about %v, want %v", got, want)
	}
	out := buf.String()
	if strings.Count(out, "\n") != 1 || !strings.Contains(out, "level=WARN") || !strings.Contains(out, `ENABLE_ENVOY_JAEGER_TRACING="not supported; Jaeger takes OTLP: --tracing-endpoint`) {
		t.Errorf("want one warning line with the way out: %q", out)
	}
}

// TestConfigURLCredentials: --config-url-header and --config-url-token-file reach a
// real HTTP server that demands them; the token file is read at every poll, so a
// rotated token is used without a restart (the server accepts only the current one);
// neither the header's value nor the token appears in meshd's logs.
func TestConfigURLCredentials(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the meshd binary; skipped with -short")
	}
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	writeFile(t, tokenFile, "token-one\n")
	var mu sync.Mutex
	doc, wantToken := reloadCfg(7000), "token-one"
	var refused int
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.Header.Get("X-Api-Key") != "key-123" || r.Header.Get("Authorization") != "Bearer "+wantToken {
			refused++
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		_, _ = io.WriteString(w, doc)
	}))
	t.Cleanup(ts.Close)

	// Without the credentials the server refuses, and meshd does not start.
	if code, out := runBinary(t, cleanEnv(), "run", "--config-url", ts.URL+"/mesh.yaml?X-Amz-Signature=secret-sig", "--node", "client",
		"--admin-addr", "127.0.0.1:0", "--ingress-port", "0", "--egress-port", "0", "--ingress-bind", "127.0.0.1"); code != 1 || !strings.Contains(out, "403") {
		t.Fatalf("without credentials: %d %q; want 1 and the 403", code, out)
	}

	admin := freePort(t)
	p := startMeshdEnv(t, cleanEnv("MESHD_CONFIG_URL_TOKEN_FILE="+tokenFile, "MESHD_CONFIG_URL_HEADERS=X-Api-Key: key-123"),
		"--node", "client", "--config-url", ts.URL+"/mesh.yaml", "--poll-interval", "50ms", "--admin-addr", fmt.Sprintf("127.0.0.1:%d", admin))
	adminURL := fmt.Sprintf("http://127.0.0.1:%d", admin)
	waitReady(t, adminURL+"/ready")
	version := func() string {
		resp, err := http.Get(adminURL + "/config")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var c configAnswer
		if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
			t.Fatal(err)
		}
		return c.Version
	}
	if v := version(); v != digestOf(t, reloadCfg(7000)) {
		t.Fatalf("serving %s, want the URL's config", v)
	}
	// Rotate: the server takes only the new token from now on, and serves a new config.
	mu.Lock()
	doc, wantToken = reloadCfg(7001), "token-two"
	mu.Unlock()
	writeFile(t, tokenFile, "token-two\n")
	want := digestOf(t, reloadCfg(7001))
	for deadline := time.Now().Add(20 * time.Second); version() != want; {
		if time.Now().After(deadline) {
			t.Fatalf("the config after the token's rotation is not served within 20s")
		}
		time.Sleep(20 * time.Millisecond) // polling an external process
	}
	logs := p.logs.String()
	for _, secret := range []string{"key-123", "token-one", "token-two"} {
		if strings.Contains(logs, secret) {
			t.Errorf("meshd's logs hold the credential %q", secret)
		}
	}
	resp, err := http.Get(adminURL + "/server_info")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(b), "key-123") || strings.Contains(string(b), "token-") {
		t.Errorf("/server_info shows a credential: %s", b)
	}
}

// TestConfigURLCredentialFlagsRefused: credentials without --config-url, a header of no
// 'Name: value' form and an unreadable token file stop meshd run.
func TestConfigURLCredentialFlagsRefused(t *testing.T) {
	for _, n := range runFlagEnv {
		t.Setenv(n, "")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "mesh.yaml")
	writeFile(t, cfg, reloadCfg(7000))
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-c", cfg, "--config-url-header", "X-A: 1"}, "are for --config-url, which is not set"},
		{[]string{"--config-url", "http://127.0.0.1:1/x", "--config-url-header", "no-colon"}, `--config-url-header "no-colon": want 'Name: value'`},
		{[]string{"--config-url", "http://127.0.0.1:1/x", "--config-url-token-file", filepath.Join(dir, "nope")}, "--config-url-token-file"},
		{[]string{"-c", cfg, "--concurrency", "-2"}, "--concurrency -2"},
		{[]string{"-c", cfg, "--initial-fetch-timeout", "-1s"}, "--initial-fetch-timeout -1s"},
	} {
		var stderr strings.Builder
		if code := run(append([]string{"run", "--node", "client"}, c.args...), io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("run %v = %d, %q; want 2 and %q", c.args, code, stderr.String(), c.want)
		}
	}
}

// TestEnvDocCoversEveryVariable keeps docs/env.md's tables whole: every variable meshd
// run reads, warns about or reports is named there.
func TestEnvDocCoversEveryVariable(t *testing.T) {
	doc, err := os.ReadFile("../../docs/env.md")
	if err != nil {
		t.Fatal(err)
	}
	names := append([]string{}, platformEnv...)
	for _, u := range unsupportedEnv {
		names = append(names, u.name)
	}
	for _, n := range runFlagEnv {
		if !strings.HasPrefix(n, "MESHD_") {
			names = append(names, n)
		}
	}
	names = append(names, "MESHD_ADMIN_ACCESS_LOG", "MESHD_INITIAL_FETCH_TIMEOUT", "MESHD_CONCURRENCY", "MESHD_TRACING_SERVICE_NAME",
		"MESHD_CONFIG_URL_HEADERS", "MESHD_CONFIG_URL_TOKEN_FILE")
	for _, n := range names {
		if strings.HasPrefix(n, "OTEL_") || n == "SPIFFE_ENDPOINT_SOCKET" {
			continue // not App Mesh's: the README's flag table
		}
		if !strings.Contains(string(doc), "`"+n+"`") {
			t.Errorf("docs/env.md does not name `%s`", n)
		}
	}
}

// TestReadmeFlagTable: every meshd run flag is in the README's flag table.
func TestReadmeFlagTable(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("meshd run", flag.ContinueOnError)
	var f runFlags
	f.register(fs)
	fs.VisitAll(func(fl *flag.Flag) {
		name := "`--" + fl.Name + "`"
		if fl.Name == "c" {
			name = "`-c`"
		}
		if !strings.Contains(string(readme), "| "+name) && !strings.Contains(string(readme), ", "+name) {
			t.Errorf("README's flag table lacks %s", name)
		}
	})
}

// TestInitialFetchTimeout: --initial-fetch-timeout (App Mesh's ENVOY_INITIAL_FETCH_TIMEOUT)
// bounds the first fetch of --config-url: a server that never answers stops meshd run
// with exit 1 once it passes, naming the deadline.
func TestInitialFetchTimeout(t *testing.T) {
	for _, n := range runFlagEnv {
		t.Setenv(n, "")
	}
	release := make(chan struct{})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(ts.Close)
	t.Cleanup(func() { close(release) })
	t.Setenv("ENVOY_INITIAL_FETCH_TIMEOUT", "1") // seconds, as App Mesh's
	var stderr strings.Builder
	code := run([]string{"run", "--node", "client", "--config-url", ts.URL + "/mesh.yaml",
		"--admin-addr", "127.0.0.1:0", "--ingress-port", "0", "--egress-port", "0", "--ingress-bind", "127.0.0.1"}, io.Discard, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "deadline exceeded") {
		t.Fatalf("run = %d, %q; want 1 and the fetch's deadline", code, stderr.String())
	}
}
