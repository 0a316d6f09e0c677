package proxy_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

func healthyOf(t *testing.T, srv *proxy.Server, addr string) bool {
	st, _ := endpointState(t, srv, "svc")
	v, ok := st[addr]
	if !ok {
		t.Fatalf("endpoint %s not in /clusters: %v", addr, st)
	}
	return v[0]
}

// TestBackgroundHealthChecksProtocols: the cluster's own health checker (no test seam
// calls it) checks over http2, grpc (grpc.health.v1) and tcp, on healthCheck.port rather
// than the traffic port, and its verdicts follow the injected clock's ticks.
func TestBackgroundHealthChecksProtocols(t *testing.T) {
	type checkTarget struct {
		port    int
		checks  func() int64
		setFail func(bool)
	}
	cases := map[string]func(t *testing.T) checkTarget{
		"http2": func(t *testing.T) checkTarget {
			var fail atomic.Bool
			var n atomic.Int64
			up := testutil.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/health" || r.ProtoMajor != 2 {
					w.WriteHeader(400)
					return
				}
				n.Add(1)
				if fail.Load() {
					w.WriteHeader(503)
				}
			}))
			return checkTarget{up.Port, n.Load, fail.Store}
		},
		"grpc": func(t *testing.T) checkTarget {
			hs := health.NewServer()
			var n atomic.Int64
			up := testutil.StartGRPC(t, func(s *grpc.Server) {
				healthpb.RegisterHealthServer(s, &countingHealth{HealthServer: hs, n: &n})
			})
			return checkTarget{up.Port, n.Load, func(f bool) {
				st := healthpb.HealthCheckResponse_SERVING
				if f {
					st = healthpb.HealthCheckResponse_NOT_SERVING
				}
				hs.SetServingStatus("", st)
			}}
		},
		"tcp": func(t *testing.T) checkTarget {
			ln := testutil.Listen(t)
			port := ln.Port()
			var mu sync.Mutex
			closed := false
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					_ = c.Close()
				}
			}()
			t.Cleanup(func() {
				_ = ln.Close()
				<-done
			})
			return checkTarget{port, ln.Accepted, func(f bool) {
				mu.Lock()
				defer mu.Unlock()
				if f && !closed {
					closed = true
					_ = ln.Close() // connects are refused from now on
				}
			}}
		},
	}
	for proto, start := range cases {
		t.Run(proto, func(t *testing.T) {
			hc := start(t)
			var trafficHealthHits atomic.Int64
			traffic := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/health" {
					trafficHealthHits.Add(1)
				}
			}))
			clk := newTickClock()
			path := ""
			if proto == "http2" {
				path = "path: /health, "
			}
			spec := fmt.Sprintf("healthCheck: {protocol: %s, %sport: %d, intervalMillis: 5000, timeoutMillis: 2000, healthyThreshold: 2, unhealthyThreshold: 2}", proto, path, hc.port)
			srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", Clock: clk}, resMesh([]int{traffic.Port}, spec, ""))
			addr := traffic.Addr
			eventually(t, "the control goroutine's ticker", func() bool { return clk.liveTickers() == 1 })

			advanceUntil(t, clk, 5*time.Second, "a background check on the health port", func() bool { return hc.checks() >= 1 })
			if !healthyOf(t, srv, addr) {
				t.Fatal("a passing endpoint was marked unhealthy")
			}
			hc.setFail(true)
			advanceUntil(t, clk, 5*time.Second, "the endpoint to turn unhealthy", func() bool { return !healthyOf(t, srv, addr) })
			if proto != "tcp" {
				hc.setFail(false)
				advanceUntil(t, clk, 5*time.Second, "the endpoint to turn healthy again", func() bool { return healthyOf(t, srv, addr) })
			}
			if trafficHealthHits.Load() != 0 {
				t.Errorf("health checks went to the traffic port (%d), not healthCheck.port", trafficHealthHits.Load())
			}
		})
	}
}

// countingHealth counts the Check calls it passes on.
type countingHealth struct {
	healthpb.HealthServer
	n *atomic.Int64
}

func (c *countingHealth) Check(ctx context.Context, r *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	c.n.Add(1)
	return c.HealthServer.Check(ctx, r)
}

// TestReloadKeepsResilienceState: a reload that changes only another cluster keeps an
// ejection and a failed health check of the unchanged clusters, and GET /config shows
// when and from where the new config was applied.
func TestReloadKeepsResilienceState(t *testing.T) {
	_, okA := startCounting(t, 200)
	refusedA := testutil.ClosedPort(t)
	var sick atomic.Bool
	sick.Store(true)
	hcUp := func() *testutil.Upstream {
		return testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/health" && sick.Load() {
				w.WriteHeader(503)
			}
		}))
	}
	_, okB := startCounting(t, 200)
	sickB := hcUp()
	other1, other2 := testutil.StartHTTP(t, echoHandler("o1")), testutil.StartHTTP(t, echoHandler("o2"))
	mesh := func(otherPort int) string {
		return fmt.Sprintf(`mesh: {meshName: t}
virtualNodes:
  - virtualNodeName: app
    spec:
      listeners: [{portMapping: {port: 1, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:1"]}}
      backends: [{virtualService: {virtualServiceName: a.t.local}}, {virtualService: {virtualServiceName: b.t.local}}, {virtualService: {virtualServiceName: o.t.local}}]
  - virtualNodeName: a
    spec:
      listeners: [{portMapping: {port: 8080, protocol: http}, outlierDetection: {maxServerErrors: 2, interval: {unit: s, value: 10}, baseEjectionDuration: {unit: s, value: 30}, maxEjectionPercent: 50}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:%d", "127.0.0.1:%d"]}}
  - virtualNodeName: b
    spec:
      listeners: [{portMapping: {port: 8080, protocol: http}, healthCheck: {protocol: http, path: /health, intervalMillis: 300000, timeoutMillis: 2000, healthyThreshold: 2, unhealthyThreshold: 2}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:%d", "127.0.0.1:%d"]}}
  - virtualNodeName: o
    spec:
      listeners: [{portMapping: {port: 8080, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:%d"]}}
virtualServices:
  - {virtualServiceName: a.t.local, spec: {provider: {virtualNode: {virtualNodeName: a}}}}
  - {virtualServiceName: b.t.local, spec: {provider: {virtualNode: {virtualNodeName: b}}}}
  - {virtualServiceName: o.t.local, spec: {provider: {virtualNode: {virtualNodeName: o}}}}
`, okA.Port, refusedA, okB.Port, sickB.Port, otherPort)
	}
	clk := newFakeClock()
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", Clock: clk}, mesh(other1.Port))
	client := testutil.HTTPClient(t, srv.EgressAddr())
	refusedAddr, sickAddr := fmt.Sprintf("127.0.0.1:%d", refusedA), sickB.Addr
	state := func(cluster, addr string) [2]bool {
		st, _ := endpointState(t, srv, cluster)
		v, ok := st[addr]
		if !ok {
			t.Fatalf("%s not in cluster %s: %v", addr, cluster, st)
		}
		return v
	}
	for i := 0; i < 40 && !state("a", refusedAddr)[1]; i++ {
		get(t, client, "http://a.t.local/")
	}
	proxy.RunHealthChecks(srv)
	proxy.RunHealthChecks(srv)
	if !state("a", refusedAddr)[1] || state("b", sickAddr)[0] {
		t.Fatalf("before reload: a's refusing endpoint ejected=%v, b's sick endpoint healthy=%v; want ejected and unhealthy",
			state("a", refusedAddr)[1], state("b", sickAddr)[0])
	}
	if info := getEcho(t, client, newReq(t, "GET", "http://o.t.local/", nil)); info.Name != "o1" {
		t.Fatalf("o.t.local reached %s", info.Name)
	}

	before := time.Now()
	cfg := testutil.ParseConfig(t, mesh(other2.Port))
	if _, err := srv.Apply(context.Background(), cfg, "reload-test"); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	if info := getEcho(t, client, newReq(t, "GET", "http://o.t.local/", nil)); info.Name != "o2" {
		t.Fatalf("after reload o.t.local reached %s, want o2", info.Name)
	}
	if !state("a", refusedAddr)[1] {
		t.Error("reload of another cluster returned a's ejected endpoint")
	}
	if state("b", sickAddr)[0] {
		t.Error("reload of another cluster forgot b's failed health check")
	}
	// The carried checker keeps its counts: one passing check is not yet healthy.
	sick.Store(false)
	proxy.RunHealthChecks(srv)
	if state("b", sickAddr)[0] {
		t.Error("one passed check after reload marked the endpoint healthy (threshold 2)")
	}
	proxy.RunHealthChecks(srv)
	if !state("b", sickAddr)[0] {
		t.Error("two passed checks after reload did not mark the endpoint healthy")
	}

	var cv struct {
		Version   string
		Source    string
		AppliedAt time.Time
	}
	adminJSON(t, srv, "/config", &cv)
	if cv.Source != "reload-test" || cv.Version != srv.Snapshot().Version {
		t.Errorf("/config source %q version %q, want reload-test and %q", cv.Source, cv.Version, srv.Snapshot().Version)
	}
	if cv.AppliedAt.Before(before.Truncate(time.Second)) || cv.AppliedAt.After(after.Add(time.Second)) {
		t.Errorf("/config appliedAt %v, want within the Apply call [%v, %v]", cv.AppliedAt, before, after)
	}
}
