package proxy_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"testing"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// canaryMesh is cmd/meshd's demo mesh: backend.shop.local split 90/10 between two
// versions, x-canary: 1 always to v2.
const canaryMesh = `
mesh:
  meshName: shop
  spec: {egressFilter: {type: {{.Egress}}}}
virtualNodes:
  - virtualNodeName: frontend
    spec:
      listeners: [{portMapping: {port: {{.Frontend}}, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:{{.Frontend}}"]}}
      backends: [{virtualService: {virtualServiceName: backend.shop.local}}]
  - virtualNodeName: backend-v1
    spec:
      listeners: [{portMapping: {port: {{.V1}}, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:{{.V1}}"]}}
  - virtualNodeName: backend-v2
    spec:
      listeners: [{portMapping: {port: {{.V2}}, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:{{.V2}}"]}}
virtualServices:
  - virtualServiceName: backend.shop.local
    spec: {provider: {virtualRouter: {virtualRouterName: backend-router}}}
virtualRouters:
  - virtualRouterName: backend-router
    spec: {listeners: [{portMapping: {port: 80, protocol: http}}]}
routes:
  - routeName: canary-header
    virtualRouterName: backend-router
    spec:
      priority: 0
      httpRoute:
        match: {prefix: /, headers: [{name: x-canary, match: {exact: "1"}}]}
        action: {weightedTargets: [{virtualNode: backend-v2, weight: 1}]}
  - routeName: split
    virtualRouterName: backend-router
    spec:
      priority: 10
      httpRoute:
        match: {prefix: /}
        action: {weightedTargets: [{virtualNode: backend-v1, weight: {{.W1}}}, {virtualNode: backend-v2, weight: {{.W2}}}]}
`

type canaryPorts struct {
	Egress           string
	Frontend, V1, V2 int
	W1, W2           int
}

type canary struct {
	srv      *proxy.Server
	client   *http.Client
	ports    canaryPorts
	frontend *testutil.Upstream
}

func startCanary(t *testing.T, egress string) *canary {
	t.Helper()
	fe := testutil.StartHTTP(t, echoHandler("frontend"))
	v1 := testutil.StartHTTP(t, echoHandler("v1"))
	v2 := testutil.StartHTTP(t, echoHandler("v2"))
	p := canaryPorts{Egress: egress, Frontend: fe.Port, V1: v1.Port, V2: v2.Port, W1: 90, W2: 10}
	srv := testutil.StartMeshd(t, "frontend", testutil.Render(t, canaryMesh, p))
	return &canary{srv: srv, client: testutil.HTTPClient(t, srv.EgressAddr()), ports: p, frontend: fe}
}

// countSplit sends n requests on c and counts answers per upstream name.
func countSplit(t *testing.T, c *http.Client, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for i := 0; i < n; i++ {
		resp, err := c.Get("http://backend.shop.local/split")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d", i, resp.StatusCode)
		}
		got[resp.Header.Get("X-Upstream")]++
	}
	return got
}

func TestCanaryMesh(t *testing.T) {
	m := startCanary(t, "DROP_ALL")

	t.Run("header canary always v2", func(t *testing.T) {
		for i := 0; i < 50; i++ {
			req := newReq(t, "GET", "http://backend.shop.local/canary", nil)
			req.Header.Set("x-canary", "1")
			if info := getEcho(t, m.client, req); info.Name != "v2" {
				t.Fatalf("request %d with x-canary: 1 reached %s, want v2", i, info.Name)
			}
		}
	})

	t.Run("weighted split 90/10", func(t *testing.T) {
		const n = 1000
		got := countSplit(t, m.client, n)
		if got["v1"]+got["v2"] != n {
			t.Fatalf("answers %v, want %d from v1 and v2", got, n)
		}
		// Binomial(1000, 0.1) has sd 9.5: [50, 150] is over 5 sd either way.
		if share := float64(got["v2"]) / n; share < 0.05 || share > 0.15 {
			t.Fatalf("v2 share %.3f (%v), want within [0.05, 0.15]", share, got)
		}
	})

	t.Run("host with port", func(t *testing.T) {
		req := newReq(t, "GET", "http://backend.shop.local:80/p", nil)
		req.Header.Set("x-canary", "1")
		info := getEcho(t, m.client, req)
		if info.Name != "v2" || info.Host != "backend.shop.local:80" {
			t.Fatalf("reached %s with Host %q, want v2 with Host backend.shop.local:80", info.Name, info.Host)
		}
	})

	t.Run("absolute form as HTTP_PROXY", func(t *testing.T) {
		proxyURL := &url.URL{Scheme: "http", Host: m.srv.EgressAddr()}
		tr := &http.Transport{Proxy: http.ProxyURL(proxyURL)}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr}
		req := newReq(t, "GET", "http://backend.shop.local/abs?q=1", nil)
		req.Header.Set("x-canary", "1")
		info := getEcho(t, c, req)
		if info.Name != "v2" || info.Path != "/abs?q=1" || info.Host != "backend.shop.local" {
			t.Fatalf("got %s %q host %q, want v2 /abs?q=1 host backend.shop.local", info.Name, info.Path, info.Host)
		}
	})

	t.Run("unknown host with DROP_ALL", func(t *testing.T) {
		resp, err := m.client.Get("http://elsewhere.example/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 404 || resp.Header.Get(proxy.HeaderError) != "egress_denied" {
			t.Fatalf("status %d %s=%q, want 404 egress_denied: %s", resp.StatusCode, proxy.HeaderError, resp.Header.Get(proxy.HeaderError), body)
		}
	})
}

func TestEgressAllowAll(t *testing.T) {
	m := startCanary(t, "ALLOW_ALL")
	outside := testutil.StartHTTP(t, echoHandler("outside"))

	info := getEcho(t, m.client, newReq(t, "GET", "http://"+outside.Addr+"/out", nil))
	if info.Name != "outside" || info.Path != "/out" {
		t.Fatalf("passthrough reached %s %s, want outside /out", info.Name, info.Path)
	}
	// The mesh still routes its own services.
	if got := countSplit(t, m.client, 5); got["v1"]+got["v2"] != 5 {
		t.Fatalf("mesh answers %v", got)
	}

	for _, self := range []string{m.srv.EgressAddr(), m.srv.IngressAddr()} {
		resp, err := m.client.Get("http://" + self + "/")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 508 || resp.Header.Get(proxy.HeaderError) != "loop_detected" {
			t.Fatalf("passthrough to meshd's own %s: status %d %q, want 508 loop_detected", self, resp.StatusCode, resp.Header.Get(proxy.HeaderError))
		}
	}
}

func TestIngressReachesLocalApp(t *testing.T) {
	m := startCanary(t, "DROP_ALL")
	c := testutil.HTTPClient(t, m.srv.IngressAddr())
	info := getEcho(t, c, newReq(t, "GET", "http://frontend.shop.local/in", nil))
	if info.Name != "frontend" || info.Path != "/in" {
		t.Fatalf("ingress reached %s %s, want frontend /in", info.Name, info.Path)
	}
	if m.frontend.Accepted() != 1 {
		t.Fatalf("frontend accepted %d connections, want 1", m.frontend.Accepted())
	}
}

func TestNoRouteAndDeadEndpoint(t *testing.T) {
	picky := testutil.StartHTTP(t, echoHandler("picky"))
	srv, c := meshDef{services: []svcDef{
		{name: "picky.t.local", node: "picky", port: picky.Port, routes: []string{
			`{httpRoute: {match: {prefix: /only}, action: {weightedTargets: [{virtualNode: picky, weight: 1}]}}}`}},
		{name: "dead.t.local", node: "dead", port: testutil.ClosedPort(t)},
	}}.start(t)
	_ = srv

	resp, err := c.Get("http://picky.t.local/other")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 404 || resp.Header.Get(proxy.HeaderError) != "no_route" || !strings.Contains(string(body), "picky.t.local") {
		t.Fatalf("no route: status %d %q body %q, want 404 no_route naming picky.t.local", resp.StatusCode, resp.Header.Get(proxy.HeaderError), body)
	}

	for i := 0; i < 3; i++ {
		resp, err = c.Get("http://dead.t.local/")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || resp.Header.Get(proxy.HeaderError) != "upstream_connect_failure" {
			t.Fatalf("dead endpoint: status %d %q, want 503 upstream_connect_failure", resp.StatusCode, resp.Header.Get(proxy.HeaderError))
		}
	}
	// meshd keeps serving.
	if info := getEcho(t, c, newReq(t, "GET", "http://picky.t.local/only/x", nil)); info.Name != "picky" {
		t.Fatalf("after failures reached %s", info.Name)
	}
}

func adminGet(t *testing.T, srv *proxy.Server, path string) (*http.Response, []byte) {
	t.Helper()
	c := testutil.HTTPClient(t, srv.AdminAddr())
	resp, err := c.Get("http://admin" + path)
	if err != nil {
		t.Fatalf("admin %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("admin %s: %v", path, err)
	}
	return resp, body
}

func TestAdmin(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	held := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	srv, c := meshDef{services: []svcDef{{name: "held.t.local", node: "held", port: held.Port}}}.start(t)

	resp, body := adminGet(t, srv, "/ready")
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "LIVE" {
		t.Fatalf("/ready: %d %q", resp.StatusCode, body)
	}
	resp, body = adminGet(t, srv, "/server_info")
	var info struct{ State, Node string }
	if err := json.Unmarshal(body, &info); err != nil || resp.StatusCode != 200 || info.State != "LIVE" || info.Node != "app" {
		t.Fatalf("/server_info: %d %s (%v)", resp.StatusCode, body, err)
	}
	resp, body = adminGet(t, srv, "/config")
	var cv struct {
		Version string
		Config  struct{ Mesh struct{ MeshName string } }
	}
	if err := json.Unmarshal(body, &cv); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/config: %d %s (%v)", resp.StatusCode, body, err)
	}
	if cv.Version == "" || cv.Version != srv.Snapshot().Version() || resp.Header.Get("ETag") != `"`+cv.Version+`"` || cv.Config.Mesh.MeshName != "t" {
		t.Fatalf("/config: version %q ETag %q mesh %q, want version %q in both and mesh t", cv.Version, resp.Header.Get("ETag"), cv.Config.Mesh.MeshName, srv.Snapshot().Version())
	}

	// One request held at the upstream shows as in flight.
	done := make(chan error, 1)
	go func() {
		resp, err := c.Get("http://held.t.local/")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				err = errors.New(resp.Status)
			}
		}
		done <- err
	}()
	<-arrived
	type clusters struct {
		Clusters []struct {
			Name      string
			Endpoints []struct {
				Address  string
				InFlight int64
			}
		}
	}
	resp, body = adminGet(t, srv, "/clusters")
	var cl clusters
	if err := json.Unmarshal(body, &cl); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/clusters: %d %s (%v)", resp.StatusCode, body, err)
	}
	found := false
	for _, k := range cl.Clusters {
		if k.Name == "held" {
			found = true
			if len(k.Endpoints) != 1 || k.Endpoints[0].Address != held.Addr || k.Endpoints[0].InFlight != 1 {
				t.Fatalf("/clusters held: %+v, want endpoint %s with 1 in flight", k, held.Addr)
			}
		}
	}
	if !found {
		t.Fatalf("/clusters lacks cluster held: %s", body)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("held request: %v", err)
	}
}

func TestReload(t *testing.T) {
	m := startCanary(t, "DROP_ALL")
	apply := func(w1, w2 int) error {
		p := m.ports
		p.W1, p.W2 = w1, w2
		cfg, err := config.Parse([]byte(testutil.Render(t, canaryMesh, p)))
		if err != nil {
			return err
		}
		_, err = m.srv.Apply(context.Background(), cfg, "reload")
		return err
	}
	if err := apply(100, 0); err != nil {
		t.Fatal(err)
	}
	// Every request below goes over one keep-alive connection.
	var conns, reused int
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		conns++
		if i.Reused {
			reused++
		}
	}}
	send := func(n int) map[string]int {
		got := map[string]int{}
		for i := 0; i < n; i++ {
			req := newReq(t, "GET", "http://backend.shop.local/", nil).WithContext(httptrace.WithClientTrace(context.Background(), trace))
			got[getEcho(t, m.client, req).Name]++
		}
		return got
	}
	if got := send(20); got["v1"] != 20 {
		t.Fatalf("with 100/0: %v", got)
	}
	if err := apply(0, 100); err != nil {
		t.Fatal(err)
	}
	if got := send(20); got["v2"] != 20 {
		t.Fatalf("after reload to 0/100: %v", got)
	}
	if conns != 40 || reused != 39 {
		t.Fatalf("%d requests reused a connection %d times, want one keep-alive connection", conns, reused)
	}

	// A config that fails validation is rejected; the old one keeps serving.
	before := m.srv.Snapshot().Version()
	bad := strings.Replace(testutil.Render(t, canaryMesh, m.ports), "virtualNode: backend-v2, weight: 1}", "virtualNode: backend-v9, weight: 1}", 1)
	cfg, err := config.Parse([]byte(bad))
	if err == nil {
		_, err = m.srv.Apply(context.Background(), cfg, "bad")
	}
	if err == nil || !strings.Contains(err.Error(), "backend-v9") {
		t.Fatalf("bad config: err %v, want a validation error naming backend-v9", err)
	}
	if m.srv.Snapshot().Version() != before {
		t.Fatal("a rejected config replaced the snapshot")
	}
	if got := send(10); got["v2"] != 10 {
		t.Fatalf("after a rejected reload: %v", got)
	}
}
