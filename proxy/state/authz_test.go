package state

import (
	"testing"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/router"
)

// authzMesh: backend-v1 (port 9001, mutual TLS) serves backend.shop.local and
// alias.shop.local through backend-router, whose routes are, in match order: canary
// (x-canary: 1, to backend-v2 only), health (/health), admin (POST /admin), split (/).
const authzMesh = `
mesh: {meshName: shop}
virtualNodes:
  - virtualNodeName: frontend
    spec: {backends: [{virtualService: {virtualServiceName: backend.shop.local}}]}
  - virtualNodeName: reports
  - virtualNodeName: ops
  - virtualNodeName: backend-v1
    spec:
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:9001"]}}
      listeners:
        - portMapping: {port: 9001, protocol: http}
          tls:
            mode: STRICT
            certificate: {file: {certificateChain: /c/b.crt, privateKey: /c/b.key}}
            validation: {trust: {file: {certificateChain: /c/ca.crt}}}
          authorization:
            allow:
              - callers: [frontend]
              - callers: [reports, "spiffe://shop/audit"]
                methods: [GET, HEAD]
                pathPrefixes: [/orders/]
              - callers: ["*"]
                routes: [health]
              - callers: [ops]
                routes: [backend-router/admin]
  - virtualNodeName: backend-v2
    spec:
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:9002"]}}
      listeners: [{portMapping: {port: 9002, protocol: http}}]
virtualServices:
  - virtualServiceName: backend.shop.local
    spec: {provider: {virtualRouter: {virtualRouterName: backend-router}}}
  - virtualServiceName: alias.shop.local
    spec: {provider: {virtualRouter: {virtualRouterName: backend-router}}}
virtualRouters:
  - virtualRouterName: backend-router
    spec: {listeners: [{portMapping: {port: 80, protocol: http}}]}
routes:
  - routeName: canary
    virtualRouterName: backend-router
    spec:
      priority: 0
      httpRoute:
        match: {prefix: /, headers: [{name: x-canary, match: {exact: "1"}}]}
        action: {weightedTargets: [{virtualNode: backend-v2, weight: 1}]}
  - routeName: health
    virtualRouterName: backend-router
    spec:
      priority: 1
      httpRoute:
        match: {prefix: /health}
        action: {weightedTargets: [{virtualNode: backend-v1, weight: 1}]}
  - routeName: admin
    virtualRouterName: backend-router
    spec:
      priority: 2
      httpRoute:
        match: {prefix: /admin, method: POST}
        action: {weightedTargets: [{virtualNode: backend-v1, weight: 1}]}
  - routeName: split
    virtualRouterName: backend-router
    spec:
      priority: 3
      httpRoute:
        match: {prefix: /}
        action: {weightedTargets: [{virtualNode: backend-v1, weight: 90}, {virtualNode: backend-v2, weight: 10}]}
`

// compileAuthzFor compiles the authorization of node's listener 0 of the mesh doc,
// which must validate.
func compileAuthzFor(t *testing.T, doc, node string) *ListenerAuthz {
	t.Helper()
	cfg, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	vn := cfg.VirtualNode(node)
	a, err := compileListenerAuthz(cfg, vn, &vn.Spec.Listeners[0], "test")
	if err != nil {
		t.Fatal(err)
	}
	a.counters, a.clock = new(AuthzCounters), &manualClock{}
	return a
}

type manualClock struct{ now time.Time }

func (c *manualClock) Now() time.Time { return c.now }
func (c *manualClock) NewTicker(time.Duration) (<-chan time.Time, func()) {
	return make(chan time.Time), func() {}
}

type hdr map[string]string

func (h hdr) Get(name string) (string, bool) { v, ok := h[name]; return v, ok }

// TestAuthorizeRequests: the compiled policy allows or denies each request by its
// caller's identity and by the route the caller's sidecar picked, the path prefix and
// the method, exactly as the rules say; nothing else gets through.
func TestAuthorizeRequests(t *testing.T) {
	a := compileAuthzFor(t, authzMesh, "backend-v1")
	const host = "backend.shop.local"
	cases := []struct {
		name   string
		peer   string
		method string
		host   string
		path   string
		header hdr
		want   AuthzVerdict
	}{
		{"no identity", "", "GET", host, "/", nil, AuthzNoIdentity},
		{"frontend: everything", "spiffe://shop/frontend", "DELETE", host, "/admin/x", nil, AuthzAllowed},
		{"frontend of another mesh", "spiffe://other/frontend", "GET", host, "/orders/1", nil, AuthzDenied},
		{"node name is not the id", "frontend", "GET", host, "/", nil, AuthzDenied},
		{"reports reads orders", "spiffe://shop/reports", "GET", host, "/orders/1?page=2", nil, AuthzAllowed},
		{"audit heads orders", "spiffe://shop/audit", "HEAD", host, "/orders/", nil, AuthzAllowed},
		{"reports may not write", "spiffe://shop/reports", "POST", host, "/orders/1", nil, AuthzDenied},
		{"reports outside the prefix", "spiffe://shop/reports", "GET", host, "/orders", nil, AuthzDenied},
		{"query is no path", "spiffe://shop/reports", "GET", host, "/x?/orders/", nil, AuthzDenied},
		{"dot segments", "spiffe://shop/reports", "GET", host, "/orders/../admin", nil, AuthzDenied},
		{"encoded dot segments", "spiffe://shop/reports", "GET", host, "/orders/%2E%2e/admin", nil, AuthzDenied},
		{"anyone: health route", "spiffe://elsewhere.org/ns/x/sa/y", "GET", host, "/health", nil, AuthzAllowed},
		{"health route by prefix", "spiffe://shop/x", "GET", host, "/healthz", nil, AuthzAllowed},
		{"health route, host case and port", "spiffe://shop/x", "GET", "Backend.Shop.Local.:80", "/health", nil, AuthzAllowed},
		{"health route of the other service", "spiffe://shop/x", "GET", "alias.shop.local", "/health", nil, AuthzAllowed},
		{"a host no route serves", "spiffe://shop/x", "GET", "other.local", "/health", nil, AuthzDenied},
		{"an earlier route took it", "spiffe://shop/x", "GET", host, "/health", hdr{"x-canary": "1"}, AuthzDenied},
		{"split route is not health", "spiffe://shop/x", "GET", host, "/cart", nil, AuthzDenied},
		{"route and dot segments", "spiffe://shop/x", "GET", host, "/health/../admin", nil, AuthzDenied},
		{"ops: admin route", "spiffe://shop/ops", "POST", host, "/admin/flush", nil, AuthzAllowed},
		{"ops: GET /admin is the split route", "spiffe://shop/ops", "GET", host, "/admin/flush", nil, AuthzDenied},
		{"ops: health, as anyone", "spiffe://shop/ops", "GET", host, "/health", nil, AuthzAllowed},
	}
	var allowed, denied, noID uint64
	for _, c := range cases {
		r := router.Request{Authority: c.host, Method: c.method, Path: c.path, Scheme: "https", Port: 9001}
		if c.header != nil {
			r.Header = c.header
		}
		if got := a.Authorize(c.peer, &r); got != c.want {
			t.Errorf("%s: %s %s%s from %q: verdict %d, want %d", c.name, c.method, c.host, c.path, c.peer, got, c.want)
		}
		switch c.want {
		case AuthzAllowed:
			allowed++
		case AuthzDenied:
			denied++
		default:
			noID++
		}
	}
	ct := a.Counters()
	if ct.Allowed.Load() != allowed || ct.DeniedPolicy.Load() != denied || ct.DeniedNoIdentity.Load() != noID || ct.Denied() != denied+noID {
		t.Errorf("counters allowed %d, denied %d, no identity %d; want %d, %d, %d",
			ct.Allowed.Load(), ct.DeniedPolicy.Load(), ct.DeniedNoIdentity.Load(), allowed, denied, noID)
	}
}

// TestAuthorizeAllocs: judging a request allocates nothing, route rules included.
func TestAuthorizeAllocs(t *testing.T) {
	a := compileAuthzFor(t, authzMesh, "backend-v1")
	h := hdr{"x-forwarded-proto": "http"}
	for _, c := range []struct {
		peer, method, path string
		want               AuthzVerdict
	}{
		{"spiffe://shop/frontend", "GET", "/", AuthzAllowed},
		{"spiffe://shop/reports", "GET", "/orders/1", AuthzAllowed},
		{"spiffe://shop/x", "GET", "/health", AuthzAllowed},
		{"spiffe://shop/x", "GET", "/cart", AuthzDenied},
	} {
		r := router.Request{Authority: "Backend.Shop.Local", Method: c.method, Path: c.path, Header: h}
		var got AuthzVerdict
		allocs := testing.AllocsPerRun(100, func() { got = a.Authorize(c.peer, &r) })
		if got != c.want {
			t.Errorf("%s %s from %s: %d, want %d", c.method, c.path, c.peer, got, c.want)
		}
		if allocs != 0 {
			t.Errorf("%s %s from %s: %v allocations", c.method, c.path, c.peer, allocs)
		}
	}
}

// TestAuthorizeConn: a tcp listener's connections are judged by their caller alone.
func TestAuthorizeConn(t *testing.T) {
	const doc = `
mesh: {meshName: shop}
virtualNodes:
  - virtualNodeName: frontend
  - virtualNodeName: db
    spec:
      listeners:
        - portMapping: {port: 5432, protocol: tcp}
          tls:
            mode: STRICT
            certificate: {sds: {secretName: "spiffe://shop/db"}}
            validation: {trust: {sds: {secretName: "spiffe://shop"}}}
          authorization: {allow: [{callers: [frontend, "spiffe://shop/migrations"]}]}
`
	a := compileAuthzFor(t, doc, "db")
	for peer, want := range map[string]AuthzVerdict{
		"spiffe://shop/frontend": AuthzAllowed, "spiffe://shop/migrations": AuthzAllowed,
		"spiffe://shop/web": AuthzDenied, "": AuthzNoIdentity,
	} {
		if got := a.AuthorizeConn(peer); got != want {
			t.Errorf("AuthorizeConn(%q) = %d, want %d", peer, got, want)
		}
	}
	// A rule that narrows requests allows no connection.
	a.rules = append(a.rules, authzRule{anyCaller: true, methods: []string{"GET"}})
	if got := a.AuthorizeConn("spiffe://shop/web"); got != AuthzDenied {
		t.Errorf("a narrowed rule allowed a connection: %d", got)
	}
}

// TestDenialSummary: denials are reported at most once per interval of the
// snapshot's clock, each report with the denials since the last.
func TestDenialSummary(t *testing.T) {
	a := compileAuthzFor(t, authzMesh, "backend-v1")
	clk := a.clock.(*manualClock)
	clk.now = time.Unix(1000, 0)
	deny := func(n int) {
		for range n {
			a.Authorize("", &router.Request{Method: "GET", Path: "/"})
		}
	}
	deny(3)
	if n, ok := a.DenialSummary(time.Minute); !ok || n != 3 {
		t.Fatalf("first summary: %d, %v; want 3, true", n, ok)
	}
	deny(5)
	clk.now = clk.now.Add(59 * time.Second)
	if _, ok := a.DenialSummary(time.Minute); ok {
		t.Fatal("a second summary within the interval")
	}
	clk.now = clk.now.Add(time.Second)
	if n, ok := a.DenialSummary(time.Minute); !ok || n != 5 {
		t.Fatalf("summary after the interval: %d, %v; want 5, true", n, ok)
	}
}

// TestCompileAuthzCarriesCounters: a reload keeps a listener's counters (by port), and
// a snapshot without a policy has none.
func TestCompileAuthzCarriesCounters(t *testing.T) {
	cfg, err := config.Parse([]byte(authzMesh))
	if err != nil {
		t.Fatal(err)
	}
	vn := cfg.VirtualNode("backend-v1")
	prev := &Snapshot{clock: &manualClock{}}
	if err := prev.compileAuthz(cfg, vn, nil); err != nil {
		t.Fatal(err)
	}
	prev.Authz(9001).Counters().Allowed.Add(7)
	next := &Snapshot{clock: &manualClock{}}
	if err := next.compileAuthz(cfg, vn, prev); err != nil {
		t.Fatal(err)
	}
	if got := next.Authz(9001).Counters().Allowed.Load(); got != 7 {
		t.Fatalf("counters after a reload: allowed %d, want 7", got)
	}
	if next.Authz(9002) != nil || len(next.Authorizations()) != 1 {
		t.Fatal("a policy on a listener that has none")
	}
	if (&Snapshot{}).Authz(9001) != nil {
		t.Fatal("an empty snapshot has a policy")
	}
}

func TestAuthorityHostPort(t *testing.T) {
	for in, want := range map[string]struct {
		host string
		port int
	}{
		"a.local": {"a.local", 0}, "a.local:8080": {"a.local", 8080}, "a.local:x": {"a.local", 0},
		"[::1]:80": {"::1", 80}, "[::1]": {"::1", 0}, "::1": {"::1", 0}, "a:99999": {"a", 0}, "": {"", 0},
	} {
		if h, p := authorityHostPort(in); h != want.host || p != want.port {
			t.Errorf("authorityHostPort(%q) = %q, %d; want %q, %d", in, h, p, want.host, want.port)
		}
	}
}
