package proxy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

func TestConnectionPoolLimits(t *testing.T) {
	held := startHeld(t, 4)
	srv, client := meshDef{services: []svcDef{{name: "lim.t.local", node: "lim", port: held.Port,
		listener: `connectionPool: {http: {maxConnections: 1, maxPendingRequests: 1}}`}}}.start(t)

	first := asyncGet(client, "http://lim.t.local/first")
	held.waitArrived(t, 1)
	second := asyncGet(client, "http://lim.t.local/second")
	eventually(t, "the second request to be pending", func() bool { return pending(t, srv, "lim") == 1 })

	third := wait(t, asyncGet(client, "http://lim.t.local/third"))
	if third.err != nil || third.status != 503 || third.header.Get(proxy.HeaderLimit) != "maxPendingRequests" {
		t.Fatalf("third: status %d %s=%q (%v), want 503 with maxPendingRequests", third.status, proxy.HeaderLimit, third.header.Get(proxy.HeaderLimit), third.err)
	}
	held.releaseAll()
	for name, ch := range map[string]<-chan result{"first": first, "second": second} {
		if r := wait(t, ch); r.err != nil || r.status != 200 || r.body != "released /"+name {
			t.Fatalf("%s: %d %q (%v)", name, r.status, r.body, r.err)
		}
	}
	if n := held.Accepted(); n != 1 {
		t.Fatalf("maxConnections 1 but the upstream accepted %d connections", n)
	}
}

// pending is cluster's pendingRequests as /clusters reports it.
func pending(t *testing.T, srv *proxy.Server, cluster string) int64 {
	t.Helper()
	_, body := adminGet(t, srv, "/clusters")
	var v struct {
		Clusters []struct {
			Name            string
			PendingRequests int64
		}
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("/clusters: %v", err)
	}
	for _, c := range v.Clusters {
		if c.Name == cluster {
			return c.PendingRequests
		}
	}
	t.Fatalf("/clusters has no %s: %s", cluster, body)
	return 0
}

// TestH2MaxRequestsOverflow: connectionPool.http2.maxRequests bounds concurrent streams
// to an HTTP/2 cluster; requests beyond it answer 503 at once naming the limit, and
// once the held ones finish, new requests go through again.
func TestH2MaxRequestsOverflow(t *testing.T) {
	const limit = 2
	held := startHeldH2C(t, 8)
	srv, _ := meshDef{services: []svcDef{{name: "h2.t.local", node: "h2", port: held.Port, proto: "http2",
		listener: fmt.Sprintf("connectionPool: {http2: {maxRequests: %d}}", limit)}}}.start(t)
	client := testutil.H2CClient(t, srv.EgressAddr())

	var first []<-chan result
	for i := range limit {
		first = append(first, asyncGet(client, fmt.Sprintf("http://h2.t.local/held%d", i)))
	}
	held.waitArrived(t, limit)

	over := make([]<-chan result, 3)
	for i := range over {
		over[i] = asyncGet(client, fmt.Sprintf("http://h2.t.local/over%d", i))
	}
	for i, ch := range over {
		// Answered while the held requests still hold every stream: no queueing.
		r := wait(t, ch)
		if r.err != nil || r.status != 503 || r.header.Get(proxy.HeaderLimit) != "maxRequests" {
			t.Fatalf("overflow %d: %d %s=%q (%v), want 503 maxRequests", i, r.status, proxy.HeaderLimit, r.header.Get(proxy.HeaderLimit), r.err)
		}
	}
	select {
	case p := <-held.arrived:
		t.Fatalf("a request beyond maxRequests reached the upstream: %s", p)
	default:
	}
	held.releaseAll()
	for i, ch := range first {
		if r := wait(t, ch); r.err != nil || r.status != 200 || r.body != fmt.Sprintf("released /held%d", i) {
			t.Fatalf("held %d: %d %q (%v)", i, r.status, r.body, r.err)
		}
	}
	// The streams were released: a full set of concurrent requests completes.
	var again []<-chan result
	for i := range limit {
		again = append(again, asyncGet(client, fmt.Sprintf("http://h2.t.local/again%d", i)))
	}
	for i, ch := range again {
		if r := wait(t, ch); r.err != nil || r.status != 200 {
			t.Fatalf("after release %d: %d (%v)", i, r.status, r.err)
		}
	}
	if n := readStats(t, srv).Clusters["h2"]["overflow_max_requests"]; n != 3 {
		t.Errorf("overflow_max_requests = %d, want 3", n)
	}
}

// blockingHealth holds every Check until release closes (or the call is cancelled),
// reporting each arrival and each cancellation.
type blockingHealth struct {
	healthpb.UnimplementedHealthServer
	arrived   chan struct{}
	release   chan struct{}
	cancelled atomic.Int64
}

func (b *blockingHealth) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	b.arrived <- struct{}{}
	select {
	case <-b.release:
		return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
	case <-ctx.Done():
		b.cancelled.Add(1)
		return nil, ctx.Err()
	}
}

func startBlockingGRPC(t *testing.T) (*blockingHealth, *testutil.Upstream) {
	t.Helper()
	b := &blockingHealth{arrived: make(chan struct{}, 16), release: make(chan struct{})}
	up := testutil.StartGRPC(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, b) })
	// Registered after the server: runs first, so handlers return before Stop waits.
	t.Cleanup(func() {
		select {
		case <-b.release:
		default:
			close(b.release)
		}
	})
	return b, up
}

func waitSignal(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// TestGRPCMaxRequestsOverflow: connectionPool.grpc.maxRequests 1 with one call held
// at the upstream: a second call fails at once with UNAVAILABLE (meshd's 503), counted
// as overflow_max_requests; after the first completes, calls go through again.
func TestGRPCMaxRequestsOverflow(t *testing.T) {
	b, up := startBlockingGRPC(t)
	y := strings.ReplaceAll(resMesh([]int{up.Port}, "connectionPool: {grpc: {maxRequests: 1}}", ""),
		"port: 8080, protocol: http}", "port: 8080, protocol: grpc}")
	srv := testutil.StartMeshd(t, "app", y)
	hc := healthpb.NewHealthClient(grpcDial(t, srv.EgressAddr(), "svc.t.local"))

	firstDone := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		firstDone <- err
	}()
	waitSignal(t, b.arrived, "the first call at the upstream")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	// meshd answers a gRPC request with a gRPC status (trailers-only), its reason in
	// grpc-message and the limit in x-meshd-limit.
	// A trailers-only response's fields reach grpc-go as trailer metadata.
	var hdr metadata.MD
	_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Trailer(&hdr))
	cancel()
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "maxRequests") {
		t.Fatalf("second call: %v, want UNAVAILABLE naming maxRequests from the overflow", err)
	}
	if got := hdr.Get(proxy.HeaderLimit); len(got) != 1 || got[0] != "maxRequests" {
		t.Errorf("x-meshd-limit = %q, want maxRequests", got)
	}
	if got := hdr.Get(proxy.HeaderError); len(got) != 1 || got[0] != "upstream_overflow" {
		t.Errorf("x-meshd-error = %q, want upstream_overflow", got)
	}
	if n := readStats(t, srv).Clusters["svc"]["overflow_max_requests"]; n != 1 {
		t.Errorf("overflow_max_requests = %d, want 1", n)
	}
	close(b.release)
	if err := <-firstDone; err != nil {
		t.Fatalf("held call: %v", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("call after release: %v", err)
	}
}

// TestIngressListenerTimeoutAndPool: the ingress cluster local:<port> applies its
// listener's timeout.http.perRequest and connectionPool.http limits.
func TestIngressListenerTimeoutAndPool(t *testing.T) {
	ingressMesh := func(port int, extra string) string {
		return fmt.Sprintf(`mesh: {meshName: t}
virtualNodes:
  - virtualNodeName: app
    spec:
      listeners: [{portMapping: {port: %d, protocol: http}, %s}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:%d"]}}
`, port, extra, port)
	}

	t.Run("perRequest", func(t *testing.T) {
		held := startHeld(t, 4)
		srv := testutil.StartMeshd(t, "app", ingressMesh(held.Port, "timeout: {http: {perRequest: {unit: ms, value: 200}}}"))
		c := testutil.HTTPClient(t, srv.IngressAddr())
		start := time.Now()
		r := wait(t, asyncGet(c, "http://app.t.local/slow"))
		if r.err != nil || r.status != 504 || r.header.Get(proxy.HeaderError) != "upstream_timeout" {
			t.Fatalf("status %d %q (%v), want 504 upstream_timeout", r.status, r.header.Get(proxy.HeaderError), r.err)
		}
		if el := time.Since(start); el > 5*time.Second {
			t.Errorf("timed out after %v, want about 200ms", el)
		}
	})

	t.Run("connectionPool", func(t *testing.T) {
		held := startHeld(t, 4)
		srv := testutil.StartMeshd(t, "app", ingressMesh(held.Port, "connectionPool: {http: {maxConnections: 1, maxPendingRequests: 1}}"))
		c := testutil.HTTPClient(t, srv.IngressAddr())
		cluster := fmt.Sprintf("local:%d", held.Port)
		first := asyncGet(c, "http://app.t.local/first")
		held.waitArrived(t, 1)
		second := asyncGet(c, "http://app.t.local/second")
		eventually(t, "the second request to be pending", func() bool { return pending(t, srv, cluster) == 1 })
		third := wait(t, asyncGet(c, "http://app.t.local/third"))
		if third.err != nil || third.status != 503 || third.header.Get(proxy.HeaderLimit) != "maxPendingRequests" {
			t.Fatalf("third: %d %s=%q (%v), want 503 maxPendingRequests", third.status, proxy.HeaderLimit, third.header.Get(proxy.HeaderLimit), third.err)
		}
		held.releaseAll()
		for name, ch := range map[string]<-chan result{"first": first, "second": second} {
			if r := wait(t, ch); r.err != nil || r.status != 200 || r.body != "released /"+name {
				t.Fatalf("%s: %d %q (%v)", name, r.status, r.body, r.err)
			}
		}
		if n := held.Accepted(); n != 1 {
			t.Errorf("maxConnections 1 but the app accepted %d connections", n)
		}
	})
}
