package proxy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// reloadMesh: node "frontend" calls backend.shop.local; route "split" divides / between
// backend-v1 and backend-v2 by W1/W2; backend-v2's endpoint is V2EP; with Special set,
// route "special" sends /special to backend-v3 (else /special follows the split).
const reloadMesh = `
mesh:
  meshName: shop
  spec: {egressFilter: {type: DROP_ALL}}
virtualNodes:
  - virtualNodeName: frontend
    spec:
      listeners: [{portMapping: {port: {{.Frontend}}, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:{{.Frontend}}"]}}
      backends: [{virtualService: {virtualServiceName: backend.shop.local}}]
  - virtualNodeName: backend-v1
    spec:
      listeners: [{portMapping: {port: {{.V1}}, protocol: http}{{.V1Extra}}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:{{.V1}}"]}}
  - virtualNodeName: backend-v2
    spec:
      listeners: [{portMapping: {port: {{.V2}}, protocol: http}{{.V2Extra}}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:{{.V2EP}}"]}}
  - virtualNodeName: backend-v3
    spec:
      listeners: [{portMapping: {port: {{.V3}}, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:{{.V3}}"]}}
virtualServices:
  - virtualServiceName: backend.shop.local
    spec: {provider: {virtualRouter: {virtualRouterName: backend-router}}}
virtualRouters:
  - virtualRouterName: backend-router
    spec: {listeners: [{portMapping: {port: 80, protocol: http}}]}
routes:
{{- if .Special}}
  - routeName: special
    virtualRouterName: backend-router
    spec:
      priority: 1
      httpRoute:
        match: {prefix: /special}
        action: {weightedTargets: [{virtualNode: backend-v3, weight: 1}]}
{{- end}}
  - routeName: split
    virtualRouterName: backend-router
    spec:
      priority: 10
      httpRoute:
        match: {prefix: /}
        action: {weightedTargets: [{virtualNode: backend-v1, weight: {{.W1}}}, {virtualNode: backend-v2, weight: {{.W2}}}]}
`

type reloadVars struct {
	Frontend, V1, V2, V3, V2EP int
	W1, W2                     int
	Special                    bool
	V1Extra, V2Extra           string // extra listener fields, e.g. ", timeout: {...}"
}

type reloadFixture struct {
	srv            *proxy.Server
	vars           reloadVars
	v1, v2a, v2b   *testutil.Upstream
	v3, frontend   *testutil.Upstream
	admin          *http.Client
	adminURL       string
	v2aPort, v2bPt int
}

func startReload(t *testing.T, opts proxy.Options) *reloadFixture {
	t.Helper()
	f := &reloadFixture{
		frontend: testutil.StartHTTP(t, echoHandler("frontend")),
		v1:       testutil.StartHTTP(t, echoHandler("v1")),
		v2a:      testutil.StartHTTP(t, echoHandler("v2a")),
		v2b:      testutil.StartHTTP(t, echoHandler("v2b")),
		v3:       testutil.StartHTTP(t, echoHandler("v3")),
	}
	f.vars = reloadVars{Frontend: f.frontend.Port, V1: f.v1.Port, V2: f.v2a.Port, V2EP: f.v2a.Port, V3: f.v3.Port, W1: 50, W2: 50}
	f.v2aPort, f.v2bPt = f.v2a.Port, f.v2b.Port
	if opts.Node == "" {
		opts.Node = "frontend"
	}
	f.srv = testutil.StartMeshdOpts(t, opts, f.render(t, f.vars))
	f.admin = testutil.HTTPClient(t, f.srv.AdminAddr())
	f.adminURL = "http://admin"
	return f
}

func (f *reloadFixture) render(t *testing.T, v reloadVars) string {
	t.Helper()
	return testutil.Render(t, reloadMesh, v)
}

// adminDo sends one admin request and returns status, headers and body.
func (f *reloadFixture) adminDo(t *testing.T, method, path, body string, hdr ...string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, f.adminURL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := f.admin.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

type putAnswer struct {
	Version string
	Result  string
	Error   string
	Stage   string
	Errors  []proxy.ConfigError
}

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %T: %v: %s", v, err, b)
	}
	return v
}

func TestConfigAPI(t *testing.T) {
	f := startReload(t, proxy.Options{})
	status, hdr, body := f.adminDo(t, "GET", "/config", "")
	if status != 200 {
		t.Fatalf("GET /config: %d %s", status, body)
	}
	v0 := f.srv.Snapshot().Version()
	if hdr.Get("ETag") != `"`+v0+`"` {
		t.Fatalf("ETag %q, want %q", hdr.Get("ETag"), v0)
	}

	next := f.vars
	next.W1, next.W2 = 100, 0
	yml := f.render(t, next)
	t.Run("PUT with the current ETag applies", func(t *testing.T) {
		status, hdr, body := f.adminDo(t, "PUT", "/config", yml, "If-Match", `"`+v0+`"`)
		ans := decode[putAnswer](t, body)
		if status != 200 || ans.Result != "applied" || ans.Version == v0 || hdr.Get("ETag") != `"`+ans.Version+`"` {
			t.Fatalf("PUT: %d %s (ETag %s)", status, body, hdr.Get("ETag"))
		}
		if got := f.srv.Snapshot(); got.Version() != ans.Version || !strings.HasPrefix(got.Source(), "admin:PUT /config from 127.0.0.1") {
			t.Fatalf("snapshot %s from %q, want %s from admin", got.Version(), got.Source(), ans.Version)
		}
		want := testutil.ParseConfig(t, yml).Digest()
		if ans.Version != want {
			t.Fatalf("version %s, want the config digest %s", ans.Version, want)
		}
	})
	v1 := f.srv.Snapshot().Version()
	t.Run("PUT with a stale ETag is 412", func(t *testing.T) {
		status, hdr, body := f.adminDo(t, "PUT", "/config", f.render(t, f.vars), "If-Match", `"`+v0+`"`)
		ans := decode[putAnswer](t, body)
		if status != 412 || ans.Stage != "precondition" || ans.Version != v1 || hdr.Get("ETag") != `"`+v1+`"` {
			t.Fatalf("stale PUT: %d %s", status, body)
		}
		if f.srv.Snapshot().Version() != v1 {
			t.Fatal("a stale PUT changed the config")
		}
	})
	t.Run("weak and list ETags", func(t *testing.T) {
		if status, _, body := f.adminDo(t, "PUT", "/config", yml, "If-Match", `W/"`+v1+`"`); status != 412 {
			t.Fatalf("weak ETag: %d %s (If-Match uses strong comparison)", status, body)
		}
		if status, _, body := f.adminDo(t, "PUT", "/config", yml, "If-Match", `"zzz", "`+v1+`"`); status != 200 {
			t.Fatalf("list: %d %s", status, body)
		}
		if status, _, body := f.adminDo(t, "PUT", "/config", yml, "If-Match", "*"); status != 200 {
			t.Fatalf("*: %d %s", status, body)
		}
	})
	t.Run("invalid config is 400 with every error", func(t *testing.T) {
		bad := strings.Replace(yml, "virtualNode: backend-v2, weight", "virtualNode: backend-v9, weight", 1)
		bad = strings.Replace(bad, "virtualRouterName: backend-router\n    spec:\n      priority: 10", "virtualRouterName: backend-router\n    spec:\n      priority: 5000", 1)
		status, _, body := f.adminDo(t, "PUT", "/config", bad)
		ans := decode[putAnswer](t, body)
		if status != 400 || ans.Stage != "validate" || len(ans.Errors) < 2 {
			t.Fatalf("invalid PUT: %d %s", status, body)
		}
		var paths []string
		for _, e := range ans.Errors {
			if e.Msg == "" {
				t.Errorf("error without msg: %+v", e)
			}
			paths = append(paths, e.Path)
		}
		joined := strings.Join(paths, " ")
		if !strings.Contains(joined, "spec.priority") || !strings.Contains(joined, "weightedTargets[1].virtualNode") {
			t.Fatalf("error paths %q lack the priority and the bad target", paths)
		}
		if f.srv.Snapshot().Version() != v1 {
			t.Fatal("an invalid config replaced the snapshot")
		}
	})
	t.Run("parse errors carry lines", func(t *testing.T) {
		status, _, body := f.adminDo(t, "PUT", "/config", "mesh:\n  meshName: shop\n  spek: {}\n")
		ans := decode[putAnswer](t, body)
		if status != 400 || ans.Stage != "parse" || len(ans.Errors) != 1 || ans.Errors[0].Line != 3 || ans.Errors[0].Path != "mesh.spek" {
			t.Fatalf("parse error: %d %s", status, body)
		}
	})
	t.Run("compile errors", func(t *testing.T) {
		other := strings.ReplaceAll(yml, "frontend", "front2")
		status, _, body := f.adminDo(t, "PUT", "/config", other)
		ans := decode[putAnswer](t, body)
		if status != 400 || ans.Stage != "compile" || !strings.Contains(body2s(body), "frontend") {
			t.Fatalf("config without our node: %d %s", status, body)
		}
	})
	t.Run("validate is a dry run", func(t *testing.T) {
		v := f.vars
		v.W1, v.W2 = 1, 3
		status, _, body := f.adminDo(t, "POST", "/config/validate", f.render(t, v))
		ans := decode[putAnswer](t, body)
		if status != 200 || ans.Result != "valid" || ans.Version == "" || ans.Version == v1 {
			t.Fatalf("validate: %d %s", status, body)
		}
		if f.srv.Snapshot().Version() != v1 {
			t.Fatal("validate applied the config")
		}
		status, _, body = f.adminDo(t, "POST", "/config/validate", "mesh: {meshName: x}\nvirtualNodes: 3\n")
		if ans := decode[putAnswer](t, body); status != 400 || ans.Stage != "parse" || len(ans.Errors) == 0 {
			t.Fatalf("validate bad: %d %s", status, body)
		}
	})
	t.Run("history and /config show rejections", func(t *testing.T) {
		status, _, body := f.adminDo(t, "GET", "/config/history", "")
		type hist struct {
			Applied, Rejected uint64
			Attempts          []proxy.Attempt
		}
		h := decode[hist](t, body)
		if status != 200 {
			t.Fatalf("history: %d %s", status, body)
		}
		// Newest first: the last two are the dry runs.
		results := []string{}
		for _, a := range h.Attempts {
			tag := a.Result
			if a.DryRun {
				tag += "(dry)"
			}
			if a.Stage != "" {
				tag += ":" + a.Stage
			}
			results = append(results, tag)
		}
		want := []string{"rejected(dry):parse", "valid(dry)", "rejected:compile", "rejected:parse", "rejected:validate",
			"applied", "applied", "rejected:precondition", "rejected:precondition", "applied", "applied"}
		if strings.Join(results, " ") != strings.Join(want, " ") {
			t.Fatalf("history results\n got %v\nwant %v", results, want)
		}
		if h.Applied != 4 || h.Rejected != 5 {
			t.Fatalf("counters applied %d rejected %d, want 4 and 5", h.Applied, h.Rejected)
		}
		for _, a := range h.Attempts {
			if a.Source == "" || a.Time.IsZero() || (a.Stage != "parse" && a.Stage != "precondition" && a.Version == "") {
				t.Fatalf("incomplete attempt %+v", a)
			}
		}
		status, _, body = f.adminDo(t, "GET", "/config", "")
		type cfgView struct {
			Version      string
			Reloads      proxy.ReloadStats
			LastRejected *proxy.Attempt
		}
		cv := decode[cfgView](t, body)
		if status != 200 || cv.Version != v1 || cv.LastRejected == nil || cv.LastRejected.Stage != "compile" || cv.Reloads.Rejected != 5 {
			t.Fatalf("/config: %s", body)
		}
	})
}

func body2s(b []byte) string { return string(b) }

func TestConfigHistoryIsBounded(t *testing.T) {
	f := startReload(t, proxy.Options{})
	for i := 0; i < proxy.HistorySize+8; i++ {
		if status, _, body := f.adminDo(t, "POST", "/config/validate", "nope: 1\n"); status != 400 {
			t.Fatalf("%d %s", status, body)
		}
	}
	if h := f.srv.History(); len(h) != proxy.HistorySize {
		t.Fatalf("history holds %d attempts, want %d", len(h), proxy.HistorySize)
	}
}

func TestRequireIfMatch(t *testing.T) {
	f := startReload(t, proxy.Options{RequireIfMatch: true})
	yml := f.render(t, f.vars)
	if status, _, body := f.adminDo(t, "PUT", "/config", yml); status != 428 {
		t.Fatalf("PUT without If-Match: %d %s", status, body)
	}
	if status, _, body := f.adminDo(t, "PUT", "/config", yml, "If-Match", `"`+f.srv.Snapshot().Version()+`"`); status != 200 {
		t.Fatalf("PUT with If-Match: %d %s", status, body)
	}
}

// TestConcurrentPutsStaleETag: writers that all read the same version race to replace
// it; exactly one wins, every other one gets 412 and the winner's config serves.
func TestConcurrentPutsStaleETag(t *testing.T) {
	f := startReload(t, proxy.Options{})
	etag := `"` + f.srv.Snapshot().Version() + `"`
	const writers = 8
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		statuses = map[int]int{}
		winner   string
	)
	start := make(chan struct{})
	for i := 0; i < writers; i++ {
		v := f.vars
		v.W1, v.W2 = 10+i, 90-i // every writer's config is different
		yml := f.render(t, v)
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			req, _ := http.NewRequest("PUT", f.adminURL+"/config", strings.NewReader(yml))
			req.Header.Set("If-Match", etag)
			resp, err := f.admin.Do(req)
			if err != nil {
				t.Errorf("PUT: %v", err)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			mu.Lock()
			defer mu.Unlock()
			statuses[resp.StatusCode]++
			if resp.StatusCode == 200 {
				var a putAnswer
				_ = json.Unmarshal(b, &a)
				winner = a.Version
			}
		}()
	}
	close(start)
	wg.Wait()
	if statuses[200] != 1 || statuses[412] != writers-1 {
		t.Fatalf("statuses %v, want one 200 and %d 412", statuses, writers-1)
	}
	if f.srv.Snapshot().Version() != winner {
		t.Fatalf("serving %s, the winner applied %s", f.srv.Snapshot().Version(), winner)
	}
}

func TestAdminToken(t *testing.T) {
	t.Run("non-loopback admin without a token is refused", func(t *testing.T) {
		for _, addr := range []string{":9901", "0.0.0.0:9901", "10.1.2.3:9901", "example.com:9901"} {
			_, err := proxy.New(proxy.Options{Node: "n", AdminAddr: addr})
			if err == nil || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "token") {
				t.Errorf("New(admin %s) = %v, want an error naming the address and the token", addr, err)
			}
		}
		for _, addr := range []string{"127.0.0.1:0", "[::1]:9901", "localhost:9901", "off"} {
			if _, err := proxy.New(proxy.Options{Node: "n", AdminAddr: addr}); err != nil {
				t.Errorf("New(admin %s): %v", addr, err)
			}
		}
		if _, err := proxy.New(proxy.Options{Node: "n", AdminAddr: "0.0.0.0:9901", AdminToken: "t"}); err != nil {
			t.Errorf("New with a token: %v", err)
		}
	})
	f := startReload(t, proxy.Options{AdminToken: "s3cret-token"})
	yml := f.render(t, f.vars)
	cases := []struct {
		method, path, body string
		auth               string
		want               int
	}{
		{"PUT", "/config", yml, "", 401},
		{"PUT", "/config", yml, "Bearer wrong", 401},
		{"PUT", "/config", yml, "Bearer s3cret-token-and-more", 401},
		{"PUT", "/config", yml, "Basic s3cret-token", 401},
		{"PUT", "/config", yml, "Bearer s3cret-token", 200},
		{"POST", "/config/validate", yml, "", 401},
		{"POST", "/config/validate", yml, "Bearer s3cret-token", 200},
		{"GET", "/config", "", "", 401},
		{"GET", "/config", "", "Bearer s3cret-token", 200},
		{"GET", "/config/history", "", "", 401},
		{"GET", "/debug/route?host=backend.shop.local", "", "", 401},
		{"GET", "/debug/route?host=backend.shop.local", "", "Bearer s3cret-token", 200},
		{"GET", "/ready", "", "", 200},
		{"GET", "/server_info", "", "", 200},
		{"GET", "/clusters", "", "", 200},
	}
	for _, c := range cases {
		var hdr []string
		if c.auth != "" {
			hdr = []string{"Authorization", c.auth}
		}
		status, h, body := f.adminDo(t, c.method, c.path, c.body, hdr...)
		if status != c.want {
			t.Errorf("%s %s (auth %q): %d %s, want %d", c.method, c.path, c.auth, status, body, c.want)
		}
		if status == 401 && !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("401 without WWW-Authenticate: Bearer")
		}
	}
}

func TestPersist(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "last-good.yaml")
	f := startReload(t, proxy.Options{PersistPath: path})
	// The initial Apply (a parsed config) is persisted as canonical JSON.
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("initial config not persisted: %v", err)
	}
	if cfg, err := config.Parse(b); err != nil || cfg.Digest() != f.srv.Snapshot().Version() {
		t.Fatalf("persisted config does not parse back to the version in force: %v", err)
	}
	// A PUT is persisted as sent, byte for byte.
	v := f.vars
	v.W1, v.W2 = 3, 1
	yml := "# from PUT\n" + f.render(t, v)
	if status, _, body := f.adminDo(t, "PUT", "/config", yml); status != 200 {
		t.Fatalf("PUT: %d %s", status, body)
	}
	if b, _ := os.ReadFile(path); string(b) != yml {
		t.Fatalf("persisted %q, want the PUT body", b)
	}
	// A rejected config is not persisted.
	if status, _, _ := f.adminDo(t, "PUT", "/config", "nope: 1\n"); status != 400 {
		t.Fatal("bad config accepted")
	}
	if b, _ := os.ReadFile(path); string(b) != yml {
		t.Fatal("a rejected config overwrote the persisted one")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}

	// Persisting fails (the parent is a file): the apply still succeeds, and the
	// failure is counted.
	blocker := filepath.Join(dir, "file")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	g := startReload(t, proxy.Options{PersistPath: filepath.Join(blocker, "mesh.yaml")})
	if got := g.srv.ReloadStats(); got.PersistErrors != 1 || got.Applied != 1 {
		t.Fatalf("stats %+v, want 1 applied and 1 persist error", got)
	}
	if status, _, body := g.adminDo(t, "PUT", "/config", yml); status != 200 {
		t.Fatalf("PUT with an unwritable persist path: %d %s", status, body)
	}
	if got := g.srv.ReloadStats(); got.PersistErrors != 2 || got.Applied != 2 {
		t.Fatalf("stats %+v", got)
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	for _, s := range []string{"one", "two, longer", ""} {
		if err := proxy.WriteFileAtomic(p, []byte(s)); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(p); string(b) != s {
			t.Fatalf("read %q, want %q", b, s)
		}
	}
	if err := proxy.WriteFileAtomic(filepath.Join(dir, "no", "f"), []byte("x")); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("leftovers: %v", entries)
	}
}

func TestDebugRoute(t *testing.T) {
	f := startReload(t, proxy.Options{})
	v := f.vars
	v.Special, v.W1, v.W2 = true, 3, 1
	if _, err := f.srv.Apply(context.Background(), testutil.ParseConfig(t, f.render(t, v)), "test"); err != nil {
		t.Fatal(err)
	}
	type dbg struct {
		Service string
		Routes  []struct {
			Route   string
			Matched bool
			Reason  string
		}
		Matched string
		Targets []struct {
			Cluster   string
			Weight    int
			Percent   float64
			Endpoints []string
		}
		Outcome, Detail string
	}
	status, _, body := f.adminDo(t, "GET", "/debug/route?host=backend.shop.local:80&path=/x&method=POST&header=x-a:1", "")
	d := decode[dbg](t, body)
	if status != 200 || d.Outcome != "route" || d.Matched != "split" || d.Service != "backend.shop.local" || len(d.Routes) != 2 {
		t.Fatalf("debug /x: %d %s", status, body)
	}
	if d.Routes[0].Route != "special" || d.Routes[0].Matched || !strings.Contains(d.Routes[0].Reason, `does not start with prefix "/special"`) {
		t.Fatalf("special route check: %+v", d.Routes[0])
	}
	if len(d.Targets) != 2 || d.Targets[0].Cluster != "backend-v1" || d.Targets[0].Percent != 75 ||
		len(d.Targets[1].Endpoints) != 1 || d.Targets[1].Endpoints[0] != fmt.Sprintf("127.0.0.1:%d", f.v2a.Port) {
		t.Fatalf("targets: %+v", d.Targets)
	}
	_, _, body = f.adminDo(t, "GET", "/debug/route?host=backend.shop.local&path=/special/1", "")
	if d := decode[dbg](t, body); d.Matched != "special" || len(d.Routes) != 1 || d.Targets[0].Cluster != "backend-v3" {
		t.Fatalf("debug /special: %s", body)
	}
	_, _, body = f.adminDo(t, "GET", "/debug/route?host=elsewhere.example", "")
	if d := decode[dbg](t, body); d.Outcome != "egress_denied" || !strings.Contains(d.Detail, "DROP_ALL") {
		t.Fatalf("debug non-backend: %s", body)
	}
	_, _, body = f.adminDo(t, "GET", "/debug/route?listener=ingress", "")
	if d := decode[dbg](t, body); d.Outcome != "route" || d.Targets[0].Cluster != fmt.Sprintf("local:%d", f.frontend.Port) {
		t.Fatalf("debug ingress: %s", body)
	}
	_, _, body = f.adminDo(t, "GET", "/debug/route?listener=ingress&port=1", "")
	if d := decode[dbg](t, body); d.Outcome != "no_listener" {
		t.Fatalf("debug ingress port 1: %s", body)
	}
	for _, q := range []string{"listener=sideways", "port=abc", "header=novalue"} {
		if status, _, body := f.adminDo(t, "GET", "/debug/route?"+q, ""); status != 400 {
			t.Errorf("%s: %d %s, want 400", q, status, body)
		}
	}
}

// TestPoolsSurviveReload counts upstream connections: a reload that changes another
// cluster keeps this cluster's pooled connection; one that changes this cluster's
// definition builds a new cluster, so a new connection.
func TestPoolsSurviveReload(t *testing.T) {
	f := startReload(t, proxy.Options{})
	apply := func(v reloadVars) {
		t.Helper()
		if status, _, body := f.adminDo(t, "PUT", "/config", f.render(t, v)); status != 200 {
			t.Fatalf("PUT: %d %s", status, body)
		}
	}
	v := f.vars
	v.W1, v.W2 = 100, 0
	apply(v)
	// A new client (and so a new downstream connection) per phase: the upstream
	// connection then comes from the cluster's pool, not the downstream's kept one.
	send := func(n int) {
		t.Helper()
		c := testutil.HTTPClient(t, f.srv.EgressAddr())
		for i := 0; i < n; i++ {
			if info := getEcho(t, c, newReq(t, "GET", "http://backend.shop.local/", nil)); info.Name != "v1" {
				t.Fatalf("reached %s, want v1", info.Name)
			}
		}
		c.CloseIdleConnections()
	}
	send(10)
	if got := f.v1.Accepted(); got != 1 {
		t.Fatalf("v1 accepted %d connections for 10 sequential requests, want 1", got)
	}
	// backend-v1's counter reads 10 now and must read 20 after the next phase.
	waitClusterRequests(t, f, "backend-v1", 10)

	// Reloads that touch only backend-v2 (listener timeout, endpoint) and the routes.
	v.V2Extra = `, timeout: {http: {perRequest: {unit: s, value: 7}}}`
	apply(v)
	v.V2EP = f.v2bPt
	apply(v)
	v.Special = true
	apply(v)
	send(10)
	if got := f.v1.Accepted(); got != 1 {
		t.Fatalf("after reloads of other clusters v1 accepted %d connections, want the pooled one reused (1)", got)
	}
	// A cluster rebuilt by the reloads would have started counting from zero.
	waitClusterRequests(t, f, "backend-v1", 20)

	// Changing backend-v1's own definition replaces its cluster: a new connection.
	v.V1Extra = `, timeout: {http: {perRequest: {unit: s, value: 9}}}`
	apply(v)
	send(5)
	if got := f.v1.Accepted(); got != 2 {
		t.Fatalf("after changing backend-v1 itself, v1 accepted %d connections, want 2", got)
	}
}

// waitClusterRequests waits until the cluster's request counter reads want (a request
// is counted just after its response was sent) and fails if it reads anything else.
func waitClusterRequests(t *testing.T, f *reloadFixture, name string, want int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := clusterRequests(t, f, name)
		if got == want {
			return
		}
		if got > want || time.Now().After(deadline) {
			t.Fatalf("cluster %s counted %d requests, want %d", name, got, want)
		}
		time.Sleep(time.Millisecond) // polling an eventually consistent counter
	}
}

// clusterRequests sums the request counters of a cluster's endpoints from /clusters.
func clusterRequests(t *testing.T, f *reloadFixture, name string) int64 {
	t.Helper()
	status, _, body := f.adminDo(t, "GET", "/clusters", "")
	if status != 200 {
		t.Fatalf("/clusters: %d", status)
	}
	var cl struct {
		Clusters []struct {
			Name      string
			Endpoints []struct{ Requests int64 }
		}
	}
	if err := json.Unmarshal(body, &cl); err != nil {
		t.Fatal(err)
	}
	for _, c := range cl.Clusters {
		if c.Name == name {
			var n int64
			for _, e := range c.Endpoints {
				n += e.Requests
			}
			return n
		}
	}
	t.Fatalf("no cluster %s in %s", name, body)
	return 0
}

// sample is one request of the load test.
type sample struct {
	start, end time.Time
	path       string
	upstream   string // X-Upstream, "" on failure
	err        string
}

// TestReloadUnderLoad applies 50 configs through PUT /config (weights, routes,
// endpoints) while four clients send requests, plus one invalid config halfway: no
// request may fail, and every request that started after an apply answered must
// follow that config.
func TestReloadUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test; skipped with -short")
	}
	f := startReload(t, proxy.Options{})
	const (
		clients    = 4
		reloads    = 50
		perWindow  = 60    // requests completed after each apply before the next one
		maxPerConn = 20000 // hard bound on each client's requests
	)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stop := make(chan struct{})
	var completed atomic.Int64
	results := make([][]sample, clients)
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		path := "/"
		if i == clients-1 {
			path = "/special/x"
		}
		c := testutil.HTTPClient(t, f.srv.EgressAddr())
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < maxPerConn; n++ {
				select {
				case <-stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				s := sample{start: time.Now(), path: path}
				req, _ := http.NewRequestWithContext(ctx, "GET", "http://backend.shop.local"+path, nil)
				resp, err := c.Do(req)
				if err != nil {
					s.err = err.Error()
				} else {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						s.err = fmt.Sprintf("status %d %s", resp.StatusCode, resp.Header.Get("X-Meshd-Error"))
					} else {
						s.upstream = resp.Header.Get("X-Upstream")
					}
				}
				s.end = time.Now()
				results[i] = append(results[i], s)
				completed.Add(1)
			}
		}()
	}

	// window i: requests that started after apply i answered and ended before apply
	// i+1 was sent must follow config i.
	type window struct {
		from, to time.Time
		vars     reloadVars
	}
	var windows []window
	waitCompleted := func(n int64) {
		target := completed.Load() + n
		for completed.Load() < target {
			select {
			case <-ctx.Done():
				t.Fatal("load stalled")
			case <-time.After(time.Millisecond):
			}
		}
	}
	weights := [][2]int{{100, 0}, {0, 100}, {70, 30}, {50, 50}, {30, 70}}
	invalidAt := reloads / 2
	v := f.vars
	for i := 0; i < reloads; i++ {
		v.W1, v.W2 = weights[i%len(weights)][0], weights[i%len(weights)][1]
		v.Special = i%3 != 0
		if i%4 < 2 {
			v.V2EP = f.v2aPort
		} else {
			v.V2EP = f.v2bPt
		}
		if i == invalidAt {
			bad := strings.Replace(f.render(t, v), "virtualNode: backend-v2, weight", "virtualNode: backend-nope, weight", 1)
			if status, _, body := f.adminDo(t, "PUT", "/config", bad); status != 400 {
				t.Fatalf("invalid config mid-load: %d %s", status, body)
			}
			waitCompleted(perWindow)
		}
		if status, _, body := f.adminDo(t, "PUT", "/config", f.render(t, v)); status != 200 {
			t.Fatalf("reload %d: %d %s", i, status, body)
		}
		w := window{from: time.Now(), vars: v}
		waitCompleted(perWindow)
		w.to = time.Now()
		windows = append(windows, w)
	}
	// The final config over a larger sample.
	final := window{from: time.Now(), vars: v}
	waitCompleted(2000)
	final.to = time.Now()
	close(stop)
	wg.Wait()

	var all []sample
	for _, r := range results {
		all = append(all, r...)
	}
	failed := 0
	for _, s := range all {
		if s.err != "" {
			failed++
			if failed <= 5 {
				t.Errorf("failed request %s at %v: %s", s.path, s.start.Format(time.StampMicro), s.err)
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d requests failed across %d reloads", failed, len(all), reloads)
	}

	// allowed says which upstreams config v may send path to.
	allowed := func(v reloadVars, path string) map[string]bool {
		if v.Special && strings.HasPrefix(path, "/special") {
			return map[string]bool{"v3": true}
		}
		ok := map[string]bool{}
		if v.W1 > 0 {
			ok["v1"] = true
		}
		if v.W2 > 0 {
			if v.V2EP == f.v2aPort {
				ok["v2a"] = true
			} else {
				ok["v2b"] = true
			}
		}
		return ok
	}
	type tally struct{ v1, n int }
	byWeight := map[int]*tally{}
	checked := 0
	for _, w := range append(windows, final) {
		ok := allowed(w.vars, "/")
		okSpecial := allowed(w.vars, "/special/x")
		for _, s := range all {
			if s.start.Before(w.from) || s.end.After(w.to) {
				continue
			}
			want := ok
			if s.path != "/" {
				want = okSpecial
			}
			if !want[s.upstream] {
				t.Fatalf("request %s in the window of config W=%d/%d special=%v v2=%d reached %s, allowed %v",
					s.path, w.vars.W1, w.vars.W2, w.vars.Special, w.vars.V2EP, s.upstream, want)
			}
			checked++
			if s.path == "/" {
				tl := byWeight[w.vars.W1]
				if tl == nil {
					tl = &tally{}
					byWeight[w.vars.W1] = tl
				}
				tl.n++
				if s.upstream == "v1" {
					tl.v1++
				}
			}
		}
	}
	if checked < reloads*perWindow/2 {
		t.Fatalf("only %d requests fell inside the windows", checked)
	}
	// The observed split follows each weight setting (all windows with that setting
	// together), within 5 standard deviations.
	for w1, tl := range byWeight {
		p := float64(w1) / 100
		got := float64(tl.v1) / float64(tl.n)
		tol := 5*math.Sqrt(p*(1-p)/float64(tl.n)) + 0.01
		if math.Abs(got-p) > tol {
			t.Errorf("weight %d%% to v1: observed %.3f over %d requests (tolerance %.3f)", w1, got, tl.n, tol)
		}
	}
	st := f.srv.ReloadStats()
	if st.Applied != reloads+1 || st.Rejected != 1 {
		t.Fatalf("reload stats %+v, want %d applied and 1 rejected", st, reloads+1)
	}
	t.Logf("%d requests, %d in windows, zero failed, %d reloads", len(all), checked, reloads)
}

// TestRemovedListenerDrains: the node's listener moves from one port to another. An
// ingress request in flight on the old listener finishes (200 from the old app) and its
// connection then closes; an idle connection to the old listener is closed at once; a
// new connection reaches the new listener's app.
func TestRemovedListenerDrains(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	oldApp := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("X-Upstream", "old")
		_, _ = io.WriteString(w, "old app")
	}))
	newApp := testutil.StartHTTP(t, echoHandler("new"))
	f := startReload(t, proxy.Options{})
	v := f.vars
	v.Frontend = oldApp.Port
	if _, err := f.srv.Apply(context.Background(), testutil.ParseConfig(t, f.render(t, v)), "old listener"); err != nil {
		t.Fatal(err)
	}

	idle := dialRaw(t, f.srv.IngressAddr())
	idle.send(t, "GET /warm HTTP/1.1\r\nHost: frontend\r\n\r\n")
	if resp, body := idle.read(t, "GET"); resp.StatusCode != 200 || body != "old app" {
		t.Fatalf("warm-up: %d %q", resp.StatusCode, body)
	}
	busy := dialRaw(t, f.srv.IngressAddr())
	busy.send(t, "GET /slow HTTP/1.1\r\nHost: frontend\r\n\r\n")
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("slow request never reached the old app")
	}

	v.Frontend = newApp.Port
	if _, err := f.srv.Apply(context.Background(), testutil.ParseConfig(t, f.render(t, v)), "new listener"); err != nil {
		t.Fatal(err)
	}
	// The idle connection to the removed listener is closed without an answer.
	idle.expectClosed(t)
	// The new listener takes new connections.
	fresh := dialRaw(t, f.srv.IngressAddr())
	fresh.send(t, "GET /hello HTTP/1.1\r\nHost: frontend\r\n\r\n")
	if resp, body := fresh.read(t, "GET"); resp.StatusCode != 200 || resp.Header.Get("X-Upstream") != "new" {
		t.Fatalf("new connection: %d %q", resp.StatusCode, body)
	}
	// The request in flight on the removed listener finishes on the old app...
	close(release)
	if resp, body := busy.read(t, "GET"); resp.StatusCode != 200 || body != "old app" || !resp.Close {
		t.Fatalf("in-flight request on the removed listener: %d %q close=%v, want 200 with Connection: close", resp.StatusCode, body, resp.Close)
	}
	// ...and then its connection closes instead of taking another request.
	busy.expectClosed(t)
	// The new listener's connection stays open for more.
	fresh.send(t, "GET /again HTTP/1.1\r\nHost: frontend\r\n\r\n")
	if resp, _ := fresh.read(t, "GET"); resp.StatusCode != 200 || resp.Header.Get("X-Upstream") != "new" {
		t.Fatalf("second request on the new listener: %d", resp.StatusCode)
	}
}

// TestDebugRouteRepeatedHeader: a header named twice in the query is matched as the live
// path matches a repeated header, every value joined with ",".
func TestDebugRouteRepeatedHeader(t *testing.T) {
	f := startReload(t, proxy.Options{})
	status, _, body := f.adminDo(t, "GET", "/debug/route?host=backend.shop.local&header=x-a:1&header=X-A:2", "")
	d := decode[struct {
		Request struct{ Headers map[string]string }
	}](t, body)
	if status != 200 || d.Request.Headers["x-a"] != "1,2" {
		t.Fatalf("debug route with a repeated header: %d %s", status, body)
	}
}
