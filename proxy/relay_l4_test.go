package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// origSeam stands in for iptables: every connection meshd accepts while dst is set has
// dst as its original destination; with dst unset it was not redirected.
type origSeam struct {
	dst atomic.Pointer[netip.AddrPort]
}

func (o *origSeam) set(ap string) { a := netip.MustParseAddrPort(ap); o.dst.Store(&a) }

func (o *origSeam) lookup(c *net.TCPConn) (netip.AddrPort, error) {
	if p := o.dst.Load(); p != nil {
		return *p, nil
	}
	return c.LocalAddr().(*net.TCPAddr).AddrPort(), nil
}

func startL4Meshd(t *testing.T, yaml string) (*proxy.Server, *origSeam) {
	t.Helper()
	seam := &origSeam{}
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", OriginalDst: seam.lookup, SniffTimeout: 50 * time.Millisecond}, yaml)
	return srv, seam
}

// tcpServer accepts on 127.0.0.1:0 and runs handle per connection until cleanup.
func tcpServer(t *testing.T, handle func(*net.TCPConn)) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				handle(c.(*net.TCPConn))
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// echo copies back what it reads and half-closes when the client did.
func echo(c *net.TCPConn) {
	_, _ = io.Copy(c, c)
	_ = c.CloseWrite()
}

// namer writes its name, then echoes.
func namer(name string) func(*net.TCPConn) {
	return func(c *net.TCPConn) {
		_, _ = io.WriteString(c, name+"\n")
		echo(c)
	}
}

func dialTCP(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { _ = c.Close() })
	return c.(*net.TCPConn)
}

func readLine(t *testing.T, c net.Conn) string {
	t.Helper()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read line: %v (got %q)", err, line)
	}
	return strings.TrimSpace(line)
}

// expectEOF asserts meshd closed the connection without sending anything.
func expectEOF(t *testing.T, c net.Conn) {
	t.Helper()
	b, err := io.ReadAll(c)
	if len(b) != 0 || err != nil {
		t.Fatalf("want a close with no bytes, got %q, %v", b, err)
	}
}

type clustersPage struct {
	Clusters []struct {
		Name string
		L4   *proxy.L4View
	}
	EgressL4 proxy.EgressL4View
}

func clusters(t *testing.T, srv *proxy.Server) clustersPage {
	t.Helper()
	resp, err := http.Get("http://" + srv.AdminAddr() + "/clusters")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var p clustersPage
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p clustersPage) l4(name string) proxy.L4View {
	for _, c := range p.Clusters {
		if c.Name == name && c.L4 != nil {
			return *c.L4
		}
	}
	return proxy.L4View{}
}

// waitL4 polls /clusters until cond holds: counters are updated when a connection ends,
// which the client sees slightly before meshd's goroutine gets there.
func waitL4(t *testing.T, srv *proxy.Server, cond func(clustersPage) bool) clustersPage {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		p := clusters(t, srv)
		if cond(p) {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("/clusters never reached the expected state: %+v", p)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

const l4MeshTmpl = `
mesh: {meshName: t, spec: {egressFilter: {type: {{.Egress}}}}}
virtualNodes:
  - virtualNodeName: app
    spec:
      listeners: [{portMapping: {port: {{.App}}, protocol: tcp}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:{{.App}}"]}}
      backends:
        - virtualService: {virtualServiceName: db.mesh}
        - virtualService: {virtualServiceName: web.mesh}
  - virtualNodeName: db-a
    spec:
      listeners: [{portMapping: {port: {{.A}}, protocol: tcp}{{.AListener}}}]
      serviceDiscovery: {static: {endpoints: [{{.AEndpoints}}]}}
      loadBalancing: {policy: ROUND_ROBIN}
  - virtualNodeName: db-b
    spec:
      listeners: [{portMapping: {port: {{.B}}, protocol: tcp}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:{{.B}}"]}}
  - virtualNodeName: web
    spec:
      listeners: [{portMapping: {port: {{.Web}}, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:{{.Web}}"]}}
virtualServices:
  - virtualServiceName: db.mesh
    spec: {provider: {virtualRouter: {virtualRouterName: db-router}}}
  - virtualServiceName: web.mesh
    spec: {provider: {virtualNode: {virtualNodeName: web}}}
virtualRouters:
  - virtualRouterName: db-router
    spec: {listeners: [{portMapping: {port: 7000, protocol: tcp}}]}
routes:
  - routeName: db
    virtualRouterName: db-router
    spec: {tcpRoute: {action: {weightedTargets: [{virtualNode: db-a, weight: {{.WA}}}, {virtualNode: db-b, weight: {{.WB}}}]}{{.RouteTimeout}}}}
`

type l4Mesh struct {
	Egress         string
	App, A, B, Web int
	WA, WB         int
	AListener      string
	AEndpoints     string
	RouteTimeout   string
}

func (m l4Mesh) start(t *testing.T) (*proxy.Server, *origSeam) {
	t.Helper()
	if m.Egress == "" {
		m.Egress = "DROP_ALL"
	}
	if m.App == 0 {
		m.App = 1
	}
	if m.B == 0 {
		m.B = testutil.ClosedPort(t)
	}
	if m.Web == 0 {
		m.Web = testutil.ClosedPort(t)
	}
	if m.AEndpoints == "" {
		m.AEndpoints = fmt.Sprintf(`"127.0.0.1:%d"`, m.A)
	}
	return startL4Meshd(t, testutil.Render(t, l4MeshTmpl, m))
}

func TestL4WeightedTCPRoute(t *testing.T) {
	a := tcpServer(t, namer("a"))
	b := tcpServer(t, namer("b"))
	srv, seam := l4Mesh{A: a, B: b, WA: 1, WB: 1}.start(t)
	// The app dialled some address on the virtual router's port: routed by port.
	seam.set("10.99.0.1:7000")
	seen := map[string]int{}
	const n = 40
	for range n {
		c := dialTCP(t, srv.EgressAddr())
		seen[readLine(t, c)]++
		_ = c.Close()
	}
	if seen["a"] == 0 || seen["b"] == 0 || seen["a"]+seen["b"] != n {
		t.Errorf("weights 1:1 over %d connections: %v", n, seen)
	}
	p := waitL4(t, srv, func(p clustersPage) bool { return p.l4("db-a").Accepted+p.l4("db-b").Accepted == n })
	if p.l4("db-a").Accepted != int64(seen["a"]) {
		t.Errorf("/clusters db-a accepted %d, clients saw %d", p.l4("db-a").Accepted, seen["a"])
	}

	srv2, seam2 := l4Mesh{A: a, B: b, WA: 0, WB: 1}.start(t)
	seam2.set("10.99.0.1:7000")
	for range 10 {
		c := dialTCP(t, srv2.EgressAddr())
		if got := readLine(t, c); got != "b" {
			t.Fatalf("weight 0 target picked: %q", got)
		}
	}
}

func TestL4HalfCloseEcho(t *testing.T) {
	a := tcpServer(t, echo)
	srv, seam := l4Mesh{A: a, WA: 1, WB: 0}.start(t)
	// The app dialled an endpoint of db-a directly.
	seam.set(fmt.Sprintf("127.0.0.1:%d", a))
	c := dialTCP(t, srv.EgressAddr())
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	var wg sync.WaitGroup
	var werr error
	wg.Go(func() {
		_, werr = c.Write(payload)
		if werr == nil {
			werr = c.CloseWrite()
		}
	})
	got, err := io.ReadAll(c)
	wg.Wait()
	if werr != nil || err != nil {
		t.Fatalf("write %v, read %v", werr, err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("echo returned %d bytes, want %d identical", len(got), len(payload))
	}
	p := waitL4(t, srv, func(p clustersPage) bool { return p.l4("db-a").Active == 0 && p.l4("db-a").Accepted == 1 })
	if v := p.l4("db-a"); v.BytesSent != int64(len(payload)) || v.BytesReceived != int64(len(payload)) {
		t.Errorf("byte counters %+v, want %d each way", v, len(payload))
	}
}

func TestL4IdleTimeout(t *testing.T) {
	a := tcpServer(t, echo)
	srv, seam := l4Mesh{A: a, WA: 1, WB: 0, RouteTimeout: ", timeout: {idle: {unit: ms, value: 300}}"}.start(t)
	seam.set("10.99.0.1:7000")
	c := dialTCP(t, srv.EgressAddr())
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	expectEOF(t, c)
	if idle := time.Since(start); idle < 250*time.Millisecond || idle > 5*time.Second {
		t.Errorf("closed after %v idle, want about 300ms", idle)
	}
	waitL4(t, srv, func(p clustersPage) bool { return p.l4("db-a").IdleTimeouts == 1 })
}

func TestL4MaxConnections(t *testing.T) {
	a := tcpServer(t, echo)
	srv, seam := l4Mesh{A: a, WA: 1, WB: 0, AListener: ", connectionPool: {tcp: {maxConnections: 1}}"}.start(t)
	seam.set("10.99.0.1:7000")
	first := dialTCP(t, srv.EgressAddr())
	if _, err := first.Write([]byte("1")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(first, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	second := dialTCP(t, srv.EgressAddr())
	expectEOF(t, second)
	waitL4(t, srv, func(p clustersPage) bool { return p.l4("db-a").Rejected == 1 && p.l4("db-a").Active == 1 })
	_ = first.Close()
	waitL4(t, srv, func(p clustersPage) bool { return p.l4("db-a").Active == 0 })
	third := dialTCP(t, srv.EgressAddr())
	if _, err := third.Write([]byte("3")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(third, make([]byte, 1)); err != nil {
		t.Fatalf("a slot freed by a closed connection is usable again: %v", err)
	}
}

func TestL4ConnectRetryOtherEndpoint(t *testing.T) {
	a := tcpServer(t, namer("a"))
	dead := testutil.ClosedPort(t)
	srv, seam := l4Mesh{A: a, WA: 1, WB: 0,
		AEndpoints: fmt.Sprintf(`"127.0.0.1:%d", "127.0.0.1:%d"`, dead, a)}.start(t)
	seam.set("10.99.0.1:7000")
	const n = 6
	for range n {
		c := dialTCP(t, srv.EgressAddr())
		if got := readLine(t, c); got != "a" {
			t.Fatalf("got %q", got)
		}
		_ = c.Close()
	}
	// Round robin sends every other first attempt to the dead endpoint.
	p := waitL4(t, srv, func(p clustersPage) bool { return p.l4("db-a").Accepted == n })
	if f := p.l4("db-a").ConnectFailures; f < 1 {
		t.Errorf("connectFailures %d: the dead endpoint was never tried", f)
	}
}

func TestL4EgressFilter(t *testing.T) {
	outside := tcpServer(t, namer("outside"))
	t.Run("DROP_ALL closes and counts", func(t *testing.T) {
		srv, seam := l4Mesh{A: testutil.ClosedPort(t), WA: 1, WB: 0}.start(t)
		seam.set(fmt.Sprintf("127.0.0.1:%d", outside))
		expectEOF(t, dialTCP(t, srv.EgressAddr()))
		waitL4(t, srv, func(p clustersPage) bool { return p.EgressL4.Dropped == 1 })
	})
	t.Run("ALLOW_ALL goes to the original destination", func(t *testing.T) {
		srv, seam := l4Mesh{Egress: "ALLOW_ALL", A: testutil.ClosedPort(t), WA: 1, WB: 0}.start(t)
		seam.set(fmt.Sprintf("127.0.0.1:%d", outside))
		// The client is silent first: meshd waits the sniff timeout, then relays.
		c := dialTCP(t, srv.EgressAddr())
		if got := readLine(t, c); got != "outside" {
			t.Fatalf("got %q", got)
		}
		_ = c.Close()
		waitL4(t, srv, func(p clustersPage) bool {
			return p.EgressL4.Passthrough != nil && p.EgressL4.Passthrough.Accepted == 1 && p.EgressL4.Dropped == 0
		})
	})
}

func TestL4TLSPassthroughBySNI(t *testing.T) {
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls upstream saw %s", r.TLS.ServerName)
	}))
	up.StartTLS()
	t.Cleanup(up.Close)
	upPort := up.Listener.Addr().(*net.TCPAddr).Port
	srv, seam := l4Mesh{A: testutil.ClosedPort(t), WA: 1, WB: 0, Web: upPort}.start(t)
	// The app dialled port 443 of an address nobody knows; the SNI names the backend.
	seam.set("10.99.0.9:443")
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", srv.EgressAddr())
		},
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
	}}
	t.Cleanup(client.CloseIdleConnections)
	resp, err := client.Get("https://web.mesh/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "tls upstream saw web.mesh" {
		t.Fatalf("body %q", body)
	}
	client.CloseIdleConnections()
	waitL4(t, srv, func(p clustersPage) bool { return p.l4("web").Accepted == 1 })
}

func TestL4Ingress(t *testing.T) {
	app := tcpServer(t, namer("app"))
	srv, seam := l4Mesh{App: app, A: testutil.ClosedPort(t), WA: 1, WB: 0}.start(t)
	seam.set(fmt.Sprintf("10.99.0.5:%d", app))
	c := dialTCP(t, srv.IngressAddr())
	if got := readLine(t, c); got != "app" {
		t.Fatalf("got %q", got)
	}
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	if got := readLine(t, c); got != "ping" {
		t.Fatalf("echo %q", got)
	}
	_ = c.Close()
	waitL4(t, srv, func(p clustersPage) bool { return p.l4(fmt.Sprintf("local:%d", app)).Accepted == 1 })
}

// TestL7ByOriginalDestination: a request whose Host is an IP (the app called the
// service by address) routes by the original destination; under ALLOW_ALL an unknown
// Host goes to the original destination, not to the Host.
func TestL7ByOriginalDestination(t *testing.T) {
	web := testutil.StartHTTP(t, echoHandler("web"))
	outside := testutil.StartHTTP(t, echoHandler("outside"))
	t.Run("endpoint address", func(t *testing.T) {
		srv, seam := l4Mesh{Egress: "ALLOW_ALL", A: testutil.ClosedPort(t), WA: 1, WB: 0, Web: web.Port}.start(t)
		seam.set(web.Addr)
		c := testutil.HTTPClient(t, srv.EgressAddr())
		info := getEcho(t, c, newReq(t, "GET", "http://"+web.Addr+"/x", nil))
		if info.Name != "web" || info.Header.Get("X-Request-Id") == "" {
			t.Errorf("got %+v, want web through meshd (x-request-id)", info)
		}
	})
	t.Run("port under DROP_ALL", func(t *testing.T) {
		srv, seam := l4Mesh{A: testutil.ClosedPort(t), WA: 1, WB: 0, Web: web.Port}.start(t)
		seam.set(fmt.Sprintf("10.99.0.7:%d", web.Port))
		c := testutil.HTTPClient(t, srv.EgressAddr())
		info := getEcho(t, c, newReq(t, "GET", fmt.Sprintf("http://10.99.0.7:%d/x", web.Port), nil))
		if info.Name != "web" {
			t.Errorf("routed to %q", info.Name)
		}
	})
	t.Run("ALLOW_ALL forwards to the original destination", func(t *testing.T) {
		srv, seam := l4Mesh{Egress: "ALLOW_ALL", A: testutil.ClosedPort(t), WA: 1, WB: 0, Web: web.Port}.start(t)
		seam.set(outside.Addr)
		c := testutil.HTTPClient(t, srv.EgressAddr())
		info := getEcho(t, c, newReq(t, "GET", "http://unknown.example/x", nil))
		if info.Name != "outside" || info.Host != "unknown.example" {
			t.Errorf("got %+v, want the original destination with the Host kept", info)
		}
	})
	t.Run("DROP_ALL denies an unknown host", func(t *testing.T) {
		srv, seam := l4Mesh{A: testutil.ClosedPort(t), WA: 1, WB: 0, Web: web.Port}.start(t)
		seam.set(outside.Addr)
		resp, err := testutil.HTTPClient(t, srv.EgressAddr()).Get("http://unknown.example/x")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 || resp.Header.Get(proxy.HeaderError) != "egress_denied" {
			t.Errorf("status %d %q", resp.StatusCode, resp.Header.Get(proxy.HeaderError))
		}
	})
}

func TestEgressIPv6Listener(t *testing.T) {
	srv, _ := l4Mesh{A: testutil.ClosedPort(t), WA: 1, WB: 0}.start(t)
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	_ = ln.Close()
	addr := srv.EgressAddr6()
	if addr == "" {
		t.Fatal("no IPv6 egress listener although ::1 works")
	}
	_, p6, _ := net.SplitHostPort(addr)
	_, p4, _ := net.SplitHostPort(srv.EgressAddr())
	if p6 != p4 {
		t.Errorf("IPv6 egress on port %s, IPv4 on %s: ip6tables redirects to the same port", p6, p4)
	}
	c := testutil.HTTPClient(t, addr)
	resp, err := c.Get("http://unknown.example/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get(proxy.HeaderError) != "egress_denied" {
		t.Errorf("IPv6 egress listener did not serve: %d %q", resp.StatusCode, resp.Header.Get(proxy.HeaderError))
	}
}
