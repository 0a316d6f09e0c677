package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// stallUpstream reads a request head, writes head (which may be empty, or a response
// head with the start of its body), then sends nothing more until the connection closes.
func stallUpstream(t *testing.T, head string) *testutil.Upstream {
	t.Helper()
	return testutil.StartRaw(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if line == "\r\n" {
				break
			}
		}
		if head != "" {
			if _, err := io.WriteString(c, head); err != nil {
				return
			}
		}
		_, _ = io.Copy(io.Discard, br) // until meshd (or cleanup) closes
	})
}

const svcRoute = `{match: {prefix: /}, action: {weightedTargets: [{virtualNode: svc, weight: 1}]}%s}`

// TestStalledExchangeTimeouts: route timeout.idle, listener timeout.http.idle and the
// listener's timeout.http.perRequest (the route setting none) cut an upstream that
// stalls: before the response head meshd answers 504; after it, a client to which
// nothing was written yet (the head and the start of a Content-Length body are still in
// meshd's write buffer) gets the 504 too, HTTP/1.1 and h2c alike.
func TestStalledExchangeTimeouts(t *testing.T) {
	cases := []struct {
		name, listener, routeExtra string
	}{
		{"route idle", "", `, timeout: {idle: {unit: ms, value: 200}}`},
		{"listener idle", `timeout: {http: {idle: {unit: ms, value: 200}}}`, ""},
		{"listener perRequest", `timeout: {http: {perRequest: {unit: ms, value: 200}}}`, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			route := fmt.Sprintf(svcRoute, tc.routeExtra)
			t.Run("before the response", func(t *testing.T) {
				up := stallUpstream(t, "")
				srv := testutil.StartMeshd(t, "app", resMesh([]int{up.Port}, tc.listener, route))
				for _, c := range []struct {
					name   string
					client *http.Client
				}{{"http1", testutil.HTTPClient(t, srv.EgressAddr())}, {"h2c", testutil.H2CClient(t, srv.EgressAddr())}} {
					start := time.Now()
					ch := asyncGet(c.client, "http://svc.t.local/stall")
					var r result
					select {
					case r = <-ch:
					case <-time.After(10 * time.Second):
						t.Fatalf("%s: the stalled exchange was not cut within 10s", c.name)
					}
					if r.err != nil || r.status != 504 || r.header.Get(proxy.HeaderError) != "upstream_timeout" {
						t.Fatalf("%s: %d %q (%v), want 504 upstream_timeout", c.name, r.status, r.header.Get(proxy.HeaderError), r.err)
					}
					if el := time.Since(start); el > 5*time.Second {
						t.Errorf("%s: cut after %v, want about 200ms", c.name, el)
					}
				}
			})
			t.Run("after the response started", func(t *testing.T) {
				up := stallUpstream(t, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
				srv := testutil.StartMeshd(t, "app", resMesh([]int{up.Port}, tc.listener, route))
				for _, c := range []struct {
					name   string
					client *http.Client
				}{{"http1", testutil.HTTPClient(t, srv.EgressAddr())}, {"h2c", testutil.H2CClient(t, srv.EgressAddr())}} {
					// Both front ends still hold the head in their write buffers when the
					// timeout cuts the exchange (a Content-Length body is not flushed per
					// read), so they answer 504 instead (HTTP/2: the HEADERS are retracted,
					// http2.CopyResponse). Never a complete body.
					resp, err := c.client.Get("http://svc.t.local/stall")
					if err != nil || resp.StatusCode != 504 || resp.Header.Get(proxy.HeaderError) != "upstream_timeout" {
						t.Fatalf("%s: %v %v; want 504 upstream_timeout", c.name, resp, err)
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		})
	}
}

// blackhole returns a loopback address whose connects hang: a listening socket with a
// backlog of 0 whose accept queue is filled and never accepted from. Linux drops a SYN
// to a listener with a full accept queue whatever tcp_syncookies says, so the connect
// neither succeeds nor is refused until the dialer gives up.
func blackhole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("bind: %v", err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatalf("listen: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	// Fill the accept queue; the connects that do not fit hang and time out.
	for range 4 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			t.Cleanup(func() { _ = c.Close() })
		}
	}
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err == nil {
		_ = c.Close()
		t.Skip("loopback connects to a listener with a full accept queue complete here; no blackhole available")
	}
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("probe connect to the blackhole: %v, want a timeout", err)
	}
	return addr
}

// TestConnectTimeoutBlackhole: Options.ConnectTimeout bounds a connect to a destination
// that never answers the SYN; the request fails with 503 upstream_connect_failure long
// before any kernel connect timeout.
func TestConnectTimeoutBlackhole(t *testing.T) {
	addr := blackhole(t)
	_, port, _ := net.SplitHostPort(addr)
	var p int
	fmt.Sscan(port, &p)
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", ConnectTimeout: 300 * time.Millisecond}, resMesh([]int{p}, "", ""))
	client := testutil.HTTPClient(t, srv.EgressAddr())
	start := time.Now()
	resp := get(t, client, "http://svc.t.local/")
	el := time.Since(start)
	if resp.StatusCode != 503 || resp.Header.Get(proxy.HeaderError) != "upstream_connect_failure" {
		t.Fatalf("status %d %q, want 503 upstream_connect_failure", resp.StatusCode, resp.Header.Get(proxy.HeaderError))
	}
	// Three attempts (the default policy retries a connect failure twice), each bounded
	// by the 300ms connect timeout, plus backoff.
	if el < 300*time.Millisecond || el > 5*time.Second {
		t.Errorf("failed after %v, want between one and about three connect timeouts", el)
	}
}

// TestNoHiddenDefaultTimeout: App Mesh's hidden 15 s per-request default does not
// exist in meshd: a route and listener without timeout compile to zero timeouts, and
// /config shows no timeout for them.
func TestNoHiddenDefaultTimeout(t *testing.T) {
	_, up := startCounting(t, 200)
	srv := testutil.StartMeshd(t, "app", resMesh([]int{up.Port}, "", fmt.Sprintf(svcRoute, "")))
	snap := srv.Snapshot()
	var routes int
	for _, svc := range snap.Table().Services() {
		for _, rt := range svc.Routes {
			routes++
			if rt.PerRequestTimeout != 0 || rt.IdleTimeout != 0 {
				t.Errorf("route %s/%s: perRequest %v idle %v, want none", svc.Name, rt.Name, rt.PerRequestTimeout, rt.IdleTimeout)
			}
		}
	}
	if routes == 0 {
		t.Fatal("no routes compiled")
	}
	if per, idle := proxy.ClusterTimeouts(srv, "svc"); per != 0 || idle != 0 {
		t.Errorf("cluster svc: perRequest %v idle %v, want none", per, idle)
	}
	_, body := adminGet(t, srv, "/config")
	var cv struct {
		Config struct {
			VirtualNodes []struct {
				Spec struct{ Listeners []map[string]json.RawMessage }
			}
			Routes []struct {
				Spec struct{ HTTPRoute map[string]json.RawMessage }
			}
		}
	}
	if err := json.Unmarshal(body, &cv); err != nil {
		t.Fatalf("/config: %v", err)
	}
	if len(cv.Config.Routes) != 1 || len(cv.Config.VirtualNodes) != 2 {
		t.Fatalf("/config: %s", body)
	}
	if v, ok := cv.Config.Routes[0].Spec.HTTPRoute["timeout"]; ok {
		t.Errorf("/config shows a route timeout %s the config did not set", v)
	}
	for _, vn := range cv.Config.VirtualNodes {
		for _, l := range vn.Spec.Listeners {
			if v, ok := l["timeout"]; ok {
				t.Errorf("/config shows a listener timeout %s the config did not set", v)
			}
		}
	}
}

// TestGRPCTimeoutHonoured: a gRPC call's grpc-timeout bounds meshd's upstream call: the
// hanging upstream sees its request cancelled, and the client gets DeadlineExceeded.
// The second case sends grpc-timeout with a client that enforces no deadline itself,
// so only meshd can have cut the call.
func TestGRPCTimeoutHonoured(t *testing.T) {
	b, up := startBlockingGRPC(t)
	y := strings.ReplaceAll(resMesh([]int{up.Port}, "", ""), "port: 8080, protocol: http}", "port: 8080, protocol: grpc}")
	srv := testutil.StartMeshd(t, "app", y)

	t.Run("grpc-go client", func(t *testing.T) {
		before := b.cancelled.Load()
		hc := healthpb.NewHealthClient(grpcDial(t, srv.EgressAddr(), "svc.t.local"))
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("Check: %v, want DeadlineExceeded", err)
		}
		eventually(t, "the upstream call to be cancelled", func() bool { return b.cancelled.Load() > before })
	})

	t.Run("deadline only in grpc-timeout", func(t *testing.T) {
		before := b.cancelled.Load()
		client := testutil.H2CClient(t, srv.EgressAddr())
		req := newReq(t, "POST", "http://svc.t.local/grpc.health.v1.Health/Check", bytes.NewReader([]byte{0, 0, 0, 0, 0}))
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Te", "trailers")
		req.Header.Set("Grpc-Timeout", "300m")
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		el := time.Since(start)
		gs := resp.Header.Get("Grpc-Status")
		if gs == "" {
			gs = resp.Trailer.Get("Grpc-Status")
		}
		if resp.StatusCode != 504 && gs != fmt.Sprint(int(codes.DeadlineExceeded)) {
			t.Fatalf("status %d grpc-status %q, want 504 or DEADLINE_EXCEEDED", resp.StatusCode, gs)
		}
		if el > 5*time.Second {
			t.Errorf("answered after %v, want about 300ms", el)
		}
		eventually(t, "the upstream call to be cancelled", func() bool { return b.cancelled.Load() > before })
	})
}

func TestRouteTimeout(t *testing.T) {
	held := startHeld(t, 4)
	srv, client := meshDef{services: []svcDef{{name: "slow.t.local", node: "slow", port: held.Port, routes: []string{
		`{httpRoute: {match: {prefix: /}, action: {weightedTargets: [{virtualNode: slow, weight: 1}]}, timeout: {perRequest: {unit: ms, value: 200}}}}`,
	}}}}.start(t)

	for _, c := range []struct {
		name   string
		client *http.Client
	}{{"http1", client}, {"h2c", testutil.H2CClient(t, srv.EgressAddr())}} {
		r := wait(t, asyncGet(c.client, "http://slow.t.local/block"))
		if r.err != nil || r.status != 504 || r.header.Get(proxy.HeaderError) != "upstream_timeout" {
			t.Fatalf("%s: status %d %q (%v), want 504 upstream_timeout", c.name, r.status, r.header.Get(proxy.HeaderError), r.err)
		}
	}
}
