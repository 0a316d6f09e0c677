package proxy_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// silentServer accepts connections and never answers; accepted reports each accept.
// Its connections and listener close at cleanup and its accept goroutine is joined.
func silentServer(t *testing.T) (port int, accepted <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan struct{}, 64)
	var (
		mu   sync.Mutex
		held []net.Conn
		wg   sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
		mu.Lock()
		for _, c := range held {
			_ = c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().(*net.TCPAddr).Port, ch
}

// A reload that replaces a cluster whose health check round is waiting on a silent
// endpoint must not wait for the check's timeout: retiring the cluster cancels the
// round, so the apply (which holds the apply lock) returns promptly.
func TestApplyReplacingClusterMidHealthRoundIsPrompt(t *testing.T) {
	const timeoutMillis = 8000
	port, accepted := silentServer(t)
	clk := newTickClock()
	spec := func(timeout int) string {
		return fmt.Sprintf("healthCheck: {protocol: http, path: /h, intervalMillis: 5000, timeoutMillis: %d, healthyThreshold: 2, unhealthyThreshold: 2}", timeout)
	}
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", Clock: clk}, resMesh([]int{port}, spec(timeoutMillis), ""))
	eventually(t, "the health check ticker", func() bool { return clk.liveTickers() == 1 })
	clk.Advance(5 * time.Second)
	select {
	case <-accepted: // the round's check is connected and waiting for an answer
	case <-time.After(10 * time.Second):
		t.Fatal("the health check round never connected to the endpoint")
	}

	start := time.Now()
	if _, err := srv.Apply(context.Background(), testutil.ParseConfig(t, resMesh([]int{port}, spec(timeoutMillis-1000), "")), "t"); err != nil {
		t.Fatal(err)
	}
	if took, bound := time.Since(start), timeoutMillis*time.Millisecond/2; took >= bound {
		t.Fatalf("apply replacing the cluster took %v, want well under the check timeout (< %v)", took, bound)
	}
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
	if cv.Source != "reload-test" || cv.Version != srv.Snapshot().Version() {
		t.Errorf("/config source %q version %q, want reload-test and %q", cv.Source, cv.Version, srv.Snapshot().Version())
	}
	if cv.AppliedAt.Before(before.Truncate(time.Second)) || cv.AppliedAt.After(after.Add(time.Second)) {
		t.Errorf("/config appliedAt %v, want within the Apply call [%v, %v]", cv.AppliedAt, before, after)
	}
}
