package proxy_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
	"github.com/meshd/meshd/resilience"
)

// fakeClock is the resilience clock the tests move by hand.
type fakeClock struct {
	resilience.SystemClock // real tickers: these tests move Now, not the periodic work
	mu                     sync.Mutex
	t                      time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// resMesh is node "app" with one backend service "svc.t.local" provided by node "svc"
// whose static endpoints are the given ports. listenerExtra is added to svc's listener
// (YAML flow fields); route, when set, makes a virtual router with that httpRoute spec.
func resMesh(ports []int, listenerExtra, route string) string {
	var eps []string
	for _, p := range ports {
		eps = append(eps, fmt.Sprintf("%q", fmt.Sprintf("127.0.0.1:%d", p)))
	}
	extra := ""
	if listenerExtra != "" {
		extra = ", " + listenerExtra
	}
	y := fmt.Sprintf(`mesh: {meshName: t, spec: {egressFilter: {type: DROP_ALL}}}
virtualNodes:
  - virtualNodeName: app
    spec:
      listeners: [{portMapping: {port: 1, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:1"]}}
      backends: [{virtualService: {virtualServiceName: svc.t.local}}]
  - virtualNodeName: svc
    spec:
      listeners: [{portMapping: {port: 8080, protocol: http}%s}]
      serviceDiscovery: {static: {endpoints: [%s]}}
`, extra, strings.Join(eps, ", "))
	if route == "" {
		return y + "virtualServices:\n  - virtualServiceName: svc.t.local\n    spec: {provider: {virtualNode: {virtualNodeName: svc}}}\n"
	}
	return y + `virtualServices:
  - virtualServiceName: svc.t.local
    spec: {provider: {virtualRouter: {virtualRouterName: svc-router}}}
virtualRouters:
  - virtualRouterName: svc-router
    spec: {listeners: [{portMapping: {port: 8080, protocol: http}}]}
routes:
  - routeName: r
    virtualRouterName: svc-router
    spec: {httpRoute: ` + route + `}
`
}

// counting answers with status (and body) and counts the requests it got.
type counting struct {
	hits   atomic.Int64
	status atomic.Int64
	hdr    http.Header
}

func startCounting(t *testing.T, status int) (*counting, *testutil.Upstream) {
	c := &counting{}
	c.status.Store(int64(status))
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.hits.Add(1)
		for k, v := range c.hdr {
			w.Header()[k] = v
		}
		w.WriteHeader(int(c.status.Load()))
		_, _ = io.WriteString(w, "from upstream\n")
	}))
	return c, up
}

func get(t *testing.T, client *http.Client, url string) *http.Response {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp
}

type statsDoc struct {
	Clusters map[string]map[string]int64 `json:"clusters"`
	Routes   map[string]map[string]int64 `json:"routes"`
}

func readStats(t *testing.T, srv *proxy.Server) statsDoc {
	t.Helper()
	var s statsDoc
	adminJSON(t, srv, "/stats?format=json", &s)
	return s
}

func adminJSON(t *testing.T, srv *proxy.Server, path string, v any) {
	t.Helper()
	resp, err := http.Get("http://" + srv.AdminAddr() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
}

type clustersDoc struct {
	Clusters []struct {
		Name      string
		Endpoints []struct {
			Address          string
			InFlight         int64
			Healthy, Ejected bool
		}
		Resilience struct {
			Panic              bool
			AvailableEndpoints int
			Breaker            string
		}
	}
}

func endpointState(t *testing.T, srv *proxy.Server, cluster string) (map[string][2]bool, bool) {
	t.Helper()
	var d clustersDoc
	adminJSON(t, srv, "/clusters", &d)
	out := map[string][2]bool{}
	for _, c := range d.Clusters {
		if c.Name == cluster {
			for _, e := range c.Endpoints {
				out[e.Address] = [2]bool{e.Healthy, e.Ejected}
			}
			return out, c.Resilience.Panic
		}
	}
	t.Fatalf("cluster %s not in /clusters", cluster)
	return nil, false
}

// TestRetryGoesToAnotherEndpoint: with the default policy (no retryPolicy), a request
// whose first attempt fails (503, reset, connect failure) succeeds on the other
// endpoint, and the retries are counted per cluster and per route.
func TestRetryGoesToAnotherEndpoint(t *testing.T) {
	failing := map[string]func(t *testing.T) (port int, picked func() bool){
		"503": func(t *testing.T) (int, func() bool) {
			c, up := startCounting(t, 503)
			return up.Port, func() bool { return c.hits.Load() > 0 }
		},
		"reset": func(t *testing.T) (int, func() bool) {
			up := testutil.StartRaw(t, func(c net.Conn) {
				buf := make([]byte, 4096)
				_, _ = c.Read(buf)
				if tc, ok := c.(*net.TCPConn); ok {
					_ = tc.SetLinger(0) // RST, not FIN
				}
				_ = c.Close()
			})
			return up.Port, func() bool { return up.Accepted() > 0 }
		},
		"connect failure": func(t *testing.T) (int, func() bool) {
			return testutil.ClosedPort(t), func() bool { return true }
		},
	}
	for name, start := range failing {
		t.Run(name, func(t *testing.T) {
			good, goodUp := startCounting(t, 200)
			badPort, picked := start(t)
			srv := testutil.StartMeshd(t, "app", resMesh([]int{goodUp.Port, badPort}, "", ""))
			client := testutil.HTTPClient(t, srv.EgressAddr())
			const n = 20
			for i := range n {
				if resp := get(t, client, "http://svc.t.local/"); resp.StatusCode != 200 {
					t.Fatalf("request %d: status %d (%s), want 200 after a retry", i, resp.StatusCode, resp.Header.Get(proxy.HeaderError))
				}
			}
			if good.hits.Load() != n || !picked() {
				t.Fatalf("good endpoint served %d of %d; failing one picked: %v", good.hits.Load(), n, picked())
			}
			st := readStats(t, srv)
			if r := st.Clusters["svc"]["retries"]; r == 0 {
				t.Errorf("cluster retries = 0; stats %+v", st.Clusters["svc"])
			}
			if r := st.Routes["svc.t.local/provider:svc"]["retries"]; r != st.Clusters["svc"]["retries"] {
				t.Errorf("route retries = %d, cluster %d; stats %+v", r, st.Clusters["svc"]["retries"], st.Routes)
			}
		})
	}
}

// TestEffectiveRetryPolicyInConfig: /config shows App Mesh's hidden default for a route
// without retryPolicy.
func TestEffectiveRetryPolicyInConfig(t *testing.T) {
	_, up := startCounting(t, 200)
	srv := testutil.StartMeshd(t, "app", resMesh([]int{up.Port}, "", ""))
	var cfg struct {
		EffectiveRetryPolicies map[string]struct {
			MaxRetries          int      `json:"maxRetries"`
			RetryOnHTTPStatuses []int    `json:"retryOnHttpStatuses"`
			GRPCCodes           []string `json:"retryOnGrpcCodes"`
			ConnectFailure      bool     `json:"retryOnConnectFailure"`
			Default             bool     `json:"default"`
		} `json:"effectiveRetryPolicies"`
	}
	adminJSON(t, srv, "/config", &cfg)
	p := cfg.EffectiveRetryPolicies["svc.t.local/provider:svc"]
	if !p.Default || p.MaxRetries != 2 || len(p.RetryOnHTTPStatuses) != 1 || p.RetryOnHTTPStatuses[0] != 503 ||
		!p.ConnectFailure || len(p.GRPCCodes) != 1 || p.GRPCCodes[0] != "UNAVAILABLE" {
		t.Errorf("/config effective policy = %+v, want the default (2 retries on 503, UNAVAILABLE, connect failure)", p)
	}
}

// TestRetryPolicyEventsAndBody: a configured policy retries 500 (server-error) and
// replays a small POST body; maxRetries 0 turns retries off.
func TestRetryPolicyEventsAndBody(t *testing.T) {
	var mu sync.Mutex
	var bodies []string
	var hits atomic.Int64
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
		if hits.Add(1)%2 == 1 {
			w.WriteHeader(500) // every first attempt fails
			_, _ = io.WriteString(w, strings.Repeat("e", 1000))
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	route := `{match: {prefix: /}, action: {weightedTargets: [{virtualNode: svc, weight: 1}]}, retryPolicy: {maxRetries: 1, perRetryTimeout: {unit: s, value: 5}, httpRetryEvents: [server-error]}}`
	srv := testutil.StartMeshd(t, "app", resMesh([]int{up.Port}, "", route))
	client := testutil.HTTPClient(t, srv.EgressAddr())
	for i := range 3 {
		resp, err := client.Post("http://svc.t.local/", "text/plain", strings.NewReader(fmt.Sprintf("payload-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("POST %d: %d %q, want 200 ok after one retry", i, resp.StatusCode, b)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for i, b := range bodies {
		if want := fmt.Sprintf("payload-%d", i/2); b != want {
			t.Errorf("attempt %d got body %q, want %q (replayed)", i, b, want)
		}
	}
	if up.Accepted() != 1 {
		t.Errorf("upstream connections = %d, want 1: a drained 5xx keeps its connection", up.Accepted())
	}
}

// TestRetryBudgetStopsRetries: with one endpoint, a budget floor of three
// (retryBudget.minRetryConcurrency, Envoy's default) and ten concurrent failing
// requests, only three retries are made; the other seven answer at once with the
// failure and are counted as retry_budget_exhausted.
func TestRetryBudgetStopsRetries(t *testing.T) {
	release := make(chan struct{})
	var seen sync.Map
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, again := seen.LoadOrStore(r.Header.Get("X-Request-Id"), true); !again {
			w.WriteHeader(503) // first attempt of each request
			return
		}
		<-release // retries wait, holding the budget
		_, _ = io.WriteString(w, "ok")
	}))
	srv := testutil.StartMeshd(t, "app", resMesh([]int{up.Port}, "retryBudget: {minRetryConcurrency: 3}", ""))
	const n = 10
	type result struct{ status int }
	results := make(chan result, n)
	for i := range n {
		go func() {
			req, _ := http.NewRequest("GET", "http://svc.t.local/", nil)
			req.Header.Set("X-Request-Id", fmt.Sprintf("req-%d", i))
			resp, err := testutil.HTTPClient(t, srv.EgressAddr()).Do(req)
			if err != nil {
				results <- result{0}
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			results <- result{resp.StatusCode}
		}()
	}
	timeout := time.After(10 * time.Second)
	for range n - 3 {
		select {
		case r := <-results:
			if r.status != 503 {
				t.Fatalf("a request the budget refused answered %d, want the upstream's 503", r.status)
			}
		case <-timeout:
			t.Fatal("requests refused by the budget did not answer at once")
		}
	}
	if st := readStats(t, srv); st.Clusters["svc"]["retries"] != 3 || st.Clusters["svc"]["retry_budget_exhausted"] != n-3 {
		t.Errorf("stats = %+v, want 3 retries and %d exhausted", st.Clusters["svc"], n-3)
	}
	close(release)
	for range 3 {
		if r := <-results; r.status != 200 {
			t.Errorf("an admitted retry answered %d, want 200", r.status)
		}
	}
}

// TestOutlierEjectionAndReturn: an endpoint answering 5xx is ejected after
// maxServerErrors within the interval, gets no traffic while ejected, and returns after
// baseEjectionDuration (fake clock, explicit sweep). With two failing endpoints of three
// and maxEjectionPercent 50, only one is ever out.
func TestOutlierEjectionAndReturn(t *testing.T) {
	clk := newFakeClock()
	good, goodUp := startCounting(t, 200)
	bad, badUp := startCounting(t, 500)
	worse, worseUp := startCounting(t, 500)
	od := "outlierDetection: {maxServerErrors: 2, interval: {unit: s, value: 10}, baseEjectionDuration: {unit: s, value: 30}, maxEjectionPercent: 50}"
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", Clock: clk}, resMesh([]int{goodUp.Port, badUp.Port, worseUp.Port}, od, ""))
	client := testutil.HTTPClient(t, srv.EgressAddr())
	for range 60 {
		get(t, client, "http://svc.t.local/")
	}
	st, _ := endpointState(t, srv, "svc")
	badAddr, worseAddr := fmt.Sprintf("127.0.0.1:%d", badUp.Port), fmt.Sprintf("127.0.0.1:%d", worseUp.Port)
	if st[badAddr][1] == st[worseAddr][1] {
		t.Fatalf("ejected: bad=%v worse=%v; want exactly one out (maxEjectionPercent 50 of 3)", st[badAddr][1], st[worseAddr][1])
	}
	stats := readStats(t, srv).Clusters["svc"]
	if stats["outlier_ejections_total"] != 1 || stats["outlier_ejections_active"] != 1 || stats["outlier_ejections_overflow"] == 0 {
		t.Errorf("outlier counters = %+v", stats)
	}
	ejected, ejectedAddr := bad, badAddr
	if st[worseAddr][1] {
		ejected, ejectedAddr = worse, worseAddr
	}
	before := ejected.hits.Load()
	for range 30 {
		get(t, client, "http://svc.t.local/")
	}
	if got := ejected.hits.Load(); got != before {
		t.Fatalf("ejected endpoint got %d requests while ejected", got-before)
	}
	clk.Advance(29 * time.Second)
	proxy.SweepOutliers(srv)
	if st, _ := endpointState(t, srv, "svc"); !st[ejectedAddr][1] {
		t.Fatal("endpoint returned before baseEjectionDuration")
	}
	clk.Advance(time.Second)
	proxy.SweepOutliers(srv)
	if st, _ := endpointState(t, srv, "svc"); st[ejectedAddr][1] {
		t.Fatal("endpoint still ejected after baseEjectionDuration")
	}
	ejected.status.Store(200)
	for range 30 {
		get(t, client, "http://svc.t.local/")
	}
	if ejected.hits.Load() == before {
		t.Error("returned endpoint gets no traffic")
	}
	if good.hits.Load() == 0 {
		t.Error("healthy endpoint got nothing")
	}
}

// TestPoolOverflowAnswersAtOnce: with maxConnections 1 and maxPendingRequests 1, a
// third concurrent request is answered 503 at once, naming the limit, and counted.
func TestPoolOverflowAnswersAtOnce(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 4)
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	}))
	pool := "connectionPool: {http: {maxConnections: 1, maxPendingRequests: 1}}"
	srv := testutil.StartMeshd(t, "app", resMesh([]int{up.Port}, pool, ""))
	done := make(chan int, 2)
	for range 2 {
		go func() {
			resp, err := testutil.HTTPClient(t, srv.EgressAddr()).Get("http://svc.t.local/")
			if err != nil {
				done <- 0
				return
			}
			resp.Body.Close()
			done <- resp.StatusCode
		}()
	}
	<-entered // one request holds the only connection
	// The second one queues; wait until the pending gauge shows it.
	for i := 0; ; i++ {
		var d struct {
			Clusters []struct {
				Name            string
				PendingRequests int64
			}
		}
		adminJSON(t, srv, "/clusters", &d)
		if len(d.Clusters) > 0 && d.Clusters[len(d.Clusters)-1].PendingRequests == 1 {
			break
		}
		if i > 500 {
			t.Fatal("second request never queued")
		}
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	resp := get(t, testutil.HTTPClient(t, srv.EgressAddr()), "http://svc.t.local/")
	if resp.StatusCode != 503 || resp.Header.Get(proxy.HeaderLimit) != "maxPendingRequests" {
		t.Fatalf("third request: %d %s=%q, want 503 maxPendingRequests", resp.StatusCode, proxy.HeaderLimit, resp.Header.Get(proxy.HeaderLimit))
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("overflow answered after %v, want at once", el)
	}
	close(release)
	for range 2 {
		if s := <-done; s != 200 {
			t.Errorf("queued request answered %d", s)
		}
	}
	if st := readStats(t, srv).Clusters["svc"]; st["overflow_max_pending_requests"] != 1 {
		t.Errorf("stats = %+v, want overflow_max_pending_requests 1", st)
	}
}

// TestCircuitBreakerCycle: the breaker opens after consecutive failures and answers 503
// at once naming itself, half-opens after openDuration and closes on a successful
// probe. gobreaker reads the real clock, so openDuration is short and real.
func TestCircuitBreakerCycle(t *testing.T) {
	c, up := startCounting(t, 500)
	cb := "circuitBreaker: {consecutiveFailures: 2, openDuration: {unit: ms, value: 200}}"
	srv := testutil.StartMeshd(t, "app", resMesh([]int{up.Port}, cb, ""))
	client := testutil.HTTPClient(t, srv.EgressAddr())
	for range 2 {
		if resp := get(t, client, "http://svc.t.local/"); resp.StatusCode != 500 {
			t.Fatalf("status %d, want the upstream's 500", resp.StatusCode)
		}
	}
	resp := get(t, client, "http://svc.t.local/")
	if resp.StatusCode != 503 || resp.Header.Get(proxy.HeaderLimit) != "circuitBreaker" {
		t.Fatalf("open breaker: %d %s=%q, want 503 circuitBreaker", resp.StatusCode, proxy.HeaderLimit, resp.Header.Get(proxy.HeaderLimit))
	}
	if c.hits.Load() != 2 {
		t.Fatalf("upstream got %d requests, want 2: an open breaker must not call it", c.hits.Load())
	}
	c.status.Store(200)
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp := get(t, client, "http://svc.t.local/")
		if resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("breaker never let a probe through")
		}
		time.Sleep(20 * time.Millisecond) // polls the real clock gobreaker reads (openDuration 200 ms)
	}
	// The probe's response reaches the client from inside the breaker's attempt, a moment
	// before the breaker records the success that closes it: wait for the close.
	var st map[string]int64
	for deadline := time.Now().Add(5 * time.Second); ; {
		st = readStats(t, srv).Clusters["svc"]
		if st["breaker_closed"] == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st["breaker_opened"] != 1 || st["breaker_half_opened"] != 1 || st["breaker_closed"] != 1 || st["breaker_rejected"] == 0 {
		t.Errorf("breaker counters = %+v, want one open, half-open, close and some rejections", st)
	}
}

// TestRateLimit429: a route token bucket answers 429 with Retry-After and
// x-meshd-error: rate_limited, refilling with the (fake) clock.
func TestRateLimit429(t *testing.T) {
	clk := newFakeClock()
	_, up := startCounting(t, 200)
	route := `{match: {prefix: /}, action: {weightedTargets: [{virtualNode: svc, weight: 1}]}, rateLimit: {requestsPerSecond: 0.5, burst: 2}}`
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", Clock: clk}, resMesh([]int{up.Port}, "", route))
	client := testutil.HTTPClient(t, srv.EgressAddr())
	for i := range 2 {
		if resp := get(t, client, "http://svc.t.local/"); resp.StatusCode != 200 {
			t.Fatalf("request %d within burst: %d", i, resp.StatusCode)
		}
	}
	resp := get(t, client, "http://svc.t.local/")
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "2" || resp.Header.Get(proxy.HeaderError) != "rate_limited" {
		t.Fatalf("over the limit: %d Retry-After=%q %s=%q, want 429, 2, rate_limited",
			resp.StatusCode, resp.Header.Get("Retry-After"), proxy.HeaderError, resp.Header.Get(proxy.HeaderError))
	}
	clk.Advance(2 * time.Second)
	if resp := get(t, client, "http://svc.t.local/"); resp.StatusCode != 200 {
		t.Fatalf("after Retry-After: %d, want 200", resp.StatusCode)
	}
	if st := readStats(t, srv).Routes["svc.t.local/r"]; st["rate_limited"] != 1 {
		t.Errorf("route stats = %+v, want rate_limited 1", st)
	}
}

// TestHealthChecksAndPanic: endpoints failing their health checks get no traffic; when
// every check fails (the checks themselves broken), the panic threshold keeps traffic
// flowing to all endpoints.
func TestHealthChecksAndPanic(t *testing.T) {
	var healthy [2]atomic.Bool
	var hits [2]atomic.Int64
	var ups [2]*testutil.Upstream
	for i := range 2 {
		healthy[i].Store(true)
		ups[i] = testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/health" {
				if !healthy[i].Load() {
					w.WriteHeader(503)
				}
				return
			}
			hits[i].Add(1)
		}))
	}
	hc := "healthCheck: {protocol: http, path: /health, intervalMillis: 300000, timeoutMillis: 2000, healthyThreshold: 2, unhealthyThreshold: 2}"
	srv := testutil.StartMeshd(t, "app", resMesh([]int{ups[0].Port, ups[1].Port}, hc, ""))
	client := testutil.HTTPClient(t, srv.EgressAddr())
	addr1 := fmt.Sprintf("127.0.0.1:%d", ups[1].Port)

	healthy[1].Store(false)
	proxy.RunHealthChecks(srv)
	if st, _ := endpointState(t, srv, "svc"); !st[addr1][0] {
		t.Fatal("one failed check marked the endpoint unhealthy (threshold 2)")
	}
	proxy.RunHealthChecks(srv)
	st, panicking := endpointState(t, srv, "svc")
	if st[addr1][0] || panicking {
		t.Fatalf("after 2 failed checks: healthy=%v panic=%v, want unhealthy, no panic (50%% is not panic)", st[addr1][0], panicking)
	}
	for range 20 {
		if resp := get(t, client, "http://svc.t.local/"); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	if hits[1].Load() != 0 || hits[0].Load() != 20 {
		t.Fatalf("hits = %d/%d, want all on the healthy endpoint", hits[0].Load(), hits[1].Load())
	}

	healthy[0].Store(false) // now every check fails
	proxy.RunHealthChecks(srv)
	proxy.RunHealthChecks(srv)
	if _, panicking := endpointState(t, srv, "svc"); !panicking {
		t.Fatal("every endpoint unhealthy but the cluster is not in panic")
	}
	for range 40 {
		if resp := get(t, client, "http://svc.t.local/"); resp.StatusCode != 200 {
			t.Fatalf("in panic: status %d (%s), want traffic to keep flowing", resp.StatusCode, resp.Header.Get(proxy.HeaderError))
		}
	}
	if hits[1].Load() == 0 {
		t.Error("in panic, the unhealthy endpoint got no traffic: not spread over all")
	}
	healthy[0].Store(true)
	healthy[1].Store(true)
	proxy.RunHealthChecks(srv)
	proxy.RunHealthChecks(srv)
	if st, panicking := endpointState(t, srv, "svc"); !st[addr1][0] || panicking {
		t.Fatalf("after 2 passed checks: %v panic=%v, want healthy", st, panicking)
	}
}

// TestRetryHTTP2ReplaysBody: on the net/http path (h2c client, http2 cluster) a 503 is
// retried on the other endpoint with the request body replayed from the bounded buffer.
func TestRetryHTTP2ReplaysBody(t *testing.T) {
	var badHits atomic.Int64
	bad := testutil.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		badHits.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(503)
	}))
	good := testutil.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write(b)
	}))
	y := strings.ReplaceAll(resMesh([]int{bad.Port, good.Port}, "", ""), "port: 8080, protocol: http}", "port: 8080, protocol: http2}")
	srv := testutil.StartMeshd(t, "app", y)
	client := testutil.H2CClient(t, srv.EgressAddr())
	for i := range 10 {
		want := fmt.Sprintf("body-%d-%s", i, strings.Repeat("x", 20000))
		resp, err := client.Post("http://svc.t.local/", "text/plain", strings.NewReader(want))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(got) != want {
			t.Fatalf("request %d: %d, body of %d bytes; want 200 and the body replayed", i, resp.StatusCode, len(got))
		}
	}
	if badHits.Load() == 0 {
		t.Fatal("the failing endpoint was never picked")
	}
	if r := readStats(t, srv).Clusters["svc"]["retries"]; r != badHits.Load() {
		t.Errorf("retries = %d, want one per 503 (%d)", r, badHits.Load())
	}
}

// TestIngressListenerRateLimit: a rateLimit on the node's own listener limits inbound
// requests at ingress with 429 and Retry-After, counted per listener.
func TestIngressListenerRateLimit(t *testing.T) {
	clk := newFakeClock()
	app, appUp := startCounting(t, 200)
	y := fmt.Sprintf(`mesh: {meshName: t}
virtualNodes:
  - virtualNodeName: app
    spec:
      listeners: [{portMapping: {port: %d, protocol: http}, rateLimit: {requestsPerSecond: 1, burst: 1}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:%d"]}}
`, appUp.Port, appUp.Port)
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", Clock: clk}, y)
	client := testutil.HTTPClient(t, srv.IngressAddr())
	if resp := get(t, client, "http://app.local/"); resp.StatusCode != 200 {
		t.Fatalf("first request: %d", resp.StatusCode)
	}
	resp := get(t, client, "http://app.local/")
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("second request: %d Retry-After=%q, want 429 and 1", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	clk.Advance(time.Second)
	if resp := get(t, client, "http://app.local/"); resp.StatusCode != 200 {
		t.Fatalf("after a second: %d", resp.StatusCode)
	}
	if app.hits.Load() != 2 {
		t.Errorf("app got %d requests, want 2", app.hits.Load())
	}
	var st struct {
		Listeners map[string]map[string]int64 `json:"listeners"`
	}
	adminJSON(t, srv, "/stats?format=json", &st)
	if st.Listeners[fmt.Sprintf("ingress:%d", appUp.Port)]["rate_limited"] != 1 {
		t.Errorf("listener stats = %+v", st.Listeners)
	}
}
