package proxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
	meshtls "github.com/meshd/meshd/tls"
)

// idleClient is a keep-alive client of the parking tests.
type idleClient struct {
	c  net.Conn
	br *bufio.Reader
}

func (cl *idleClient) get(host string) error {
	_ = cl.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(cl.c, "GET /a HTTP/1.1\r\nHost: "+host+"\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(cl.br, nil)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return err
}

// openIdle opens n keep-alive clients to addr, each answered once, 32 at a time.
func openIdle(t *testing.T, addr, host string, n int) []*idleClient {
	t.Helper()
	cls := make([]*idleClient, n)
	t.Cleanup(func() {
		for _, cl := range cls {
			if cl != nil {
				_ = cl.c.Close()
			}
		}
	})
	err := parallel(n, func(i int) error {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			return err
		}
		cls[i] = &idleClient{c: c, br: bufio.NewReaderSize(c, 512)}
		return cls[i].get(host)
	})
	if err != nil {
		t.Fatalf("opening %d idle clients: %v", n, err)
	}
	return cls
}

// parallel runs f(0..n-1) on 32 goroutines and returns the first error.
func parallel(n int, f func(i int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		next  int
		first error
	)
	for range min(32, n) {
		wg.Go(func() {
			for {
				mu.Lock()
				i := next
				next++
				stop := i >= n || first != nil
				mu.Unlock()
				if stop {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("client %d: %w", i, err)
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return first
}

// raiseNoFile lifts the test process's soft fd limit to its hard limit (a client and
// meshd's side of each connection are both in this process).
func raiseNoFile(t *testing.T, need uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur < need && lim.Max >= need {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
	}
	if lim.Cur < need {
		t.Skipf("RLIMIT_NOFILE %d, need %d", lim.Cur, need)
	}
}

// parkedServer starts meshd with a short hold (so clients park soon after their
// answer) and the given keep-alive idle, in front of an upstream answering "ok".
func parkedServer(t *testing.T, keepAlive time.Duration) (*proxy.Server, *testutil.Upstream) {
	t.Helper()
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	yaml := meshDef{services: []svcDef{{name: "echo.t.local", node: "echo", port: up.Port}}}.yaml()
	return testutil.StartMeshdOpts(t, proxy.Options{Node: "app", KeepAliveIdle: keepAlive,
		Limits: proxy.ConnLimits{UpstreamHold: 20 * time.Millisecond, MaxConnections: -1}}, yaml), up
}

// TestIdleConnectionsPark: 2,000 keep-alive clients idle past the hold hold no
// goroutine each (10,000 idle clients held a goroutine of 8-16 KiB each): once parked,
// the process's goroutine count is back near what it was before they came, and every
// one of them is answered again, then parks again.
func TestIdleConnectionsPark(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("parking is Linux only")
	}
	const n = 2000
	raiseNoFile(t, 3*n+256)
	srv, _ := parkedServer(t, time.Hour)
	base := meshdGoroutines()
	cls := openIdle(t, srv.EgressAddr(), "echo.t.local", n)
	waitFor(t, "every client parked", func() bool { return srv.ParkedConns() == n })
	// meshd's own goroutines only: the test upstream's goroutine per pooled connection
	// (how many connections the 20 ms hold makes meshd open depends on the machine's
	// speed: 200+ without the race detector) and the test's are not the parked clients'.
	g := meshdGoroutines()
	t.Logf("meshd goroutines: %d before the clients, %d with %d parked", base, g, n)
	if g > base+50 {
		t.Fatalf("%d meshd goroutines with %d parked clients, %d before them: the idle connections keep goroutines", g, n, base)
	}
	// The parked count is on /stats and /stats/prometheus.
	if _, b := adminGet(t, srv, "/stats"); !strings.Contains(string(b), fmt.Sprintf("server.downstream_cx_parked: %d\n", n)) {
		t.Errorf("/stats lacks server.downstream_cx_parked: %d", n)
	}
	scrape(t, srv, "").expect(t, "meshd_downstream_connections_parked", lbls{}, n)
	if err := parallel(n, func(i int) error { return cls[i].get("echo.t.local") }); err != nil {
		t.Fatalf("second request after parking: %v", err)
	}
	waitFor(t, "every client parked again", func() bool { return srv.ParkedConns() == n })
}

// TestParkedIdleTimeout: the keep-alive idle timeout closes parked connections, not
// before it has passed since they parked.
func TestParkedIdleTimeout(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("parking is Linux only")
	}
	const n, idle = 50, 700 * time.Millisecond
	srv, _ := parkedServer(t, idle)
	start := time.Now()
	cls := openIdle(t, srv.EgressAddr(), "echo.t.local", n)
	waitFor(t, "every client parked", func() bool { return srv.ParkedConns() == n })
	for i, cl := range cls {
		_ = cl.c.SetReadDeadline(time.Now().Add(15 * time.Second))
		if _, err := cl.br.ReadByte(); err != io.EOF {
			t.Fatalf("client %d: read %v, want EOF at the idle timeout", i, err)
		}
	}
	if el := time.Since(start); el < idle {
		t.Fatalf("closed %v after the first request, before the %v idle timeout", el, idle)
	}
	if p := srv.ParkedConns(); p != 0 {
		t.Fatalf("%d still parked after their idle timeout", p)
	}
}

// TestParkedDrain: a drain closes parked connections at once (its wake-up reaches them
// through the socket) and the Shutdown completes well within its drain timeout.
func TestParkedDrain(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("parking is Linux only")
	}
	const n = 100
	srv, _ := parkedServer(t, time.Hour)
	cls := openIdle(t, srv.EgressAddr(), "echo.t.local", n)
	waitFor(t, "every client parked", func() bool { return srv.ParkedConns() == n })
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Second) // under the 10 s drain timeout
	defer cancel()
	if err := srv.Drain(ctx, 0); err != nil {
		t.Fatalf("drain with parked connections: %v", err)
	}
	for i, cl := range cls {
		_ = cl.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := cl.br.ReadByte(); err != io.EOF {
			t.Fatalf("client %d: read %v after the drain, want EOF", i, err)
		}
	}
	if p := srv.ParkedConns(); p != 0 {
		t.Fatalf("%d parked after the drain", p)
	}
}

// TestParkedClientCloses: a parked connection whose client hangs up is released: it
// leaves the parked set and the tracked connections, and its descriptor is closed.
func TestParkedClientCloses(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("parking is Linux only")
	}
	const n = 200
	srv, up := parkedServer(t, time.Hour)
	// A first client makes meshd's upstream connection, which stays pooled.
	_ = openIdle(t, srv.EgressAddr(), "echo.t.local", 1)
	waitFor(t, "the first client parked", func() bool { return srv.ParkedConns() == 1 })
	base, upBase := openFDs(), up.Listener.Open()
	cls := openIdle(t, srv.EgressAddr(), "echo.t.local", n)
	waitFor(t, "every client parked", func() bool { return srv.ParkedConns() == n+1 })
	if fds := openFDs(); fds < base+2*n {
		t.Fatalf("%d descriptors with %d more clients, %d before", fds, n, base)
	}
	for _, cl := range cls {
		_ = cl.c.Close()
	}
	waitFor(t, "the closed clients unparked and untracked", func() bool {
		return srv.ParkedConns() == 1 && proxy.OpenConns(srv) == 1
	})
	// What may stay: the upstream connections the clients' requests opened in parallel,
	// pooled (two descriptors each in this process: meshd's and the upstream's).
	want := func() int { return base + 2*int(up.Listener.Open()-upBase) }
	deadline := time.Now().Add(10 * time.Second)
	for openFDs() > want() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if fds := openFDs(); fds > want() {
		t.Fatalf("%d descriptors after %d clients closed, %d before them and %d upstream connections more", fds, n, base, up.Listener.Open()-upBase)
	}
}

// TestParkedTLS: connections whose TLS meshd terminated park too (the hold's read
// ended in a timeout, so crypto/tls holds no complete record) and are answered after,
// including two requests sent as two TLS records at once.
func TestParkedTLS(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("parking is Linux only")
	}
	const n = 20
	p := newPKI(t)
	p.write("app", meshtls.WorkloadRequest{DNSNames: []string{appServerName}})
	up := testutil.StartHTTP(t, echoHandler("app"))
	srv, _ := startTLSMeshd(t, tlsNodeYAML(up.Port, "http", p.listenerTLS("STRICT", false), ""),
		proxy.Options{Limits: proxy.ConnLimits{UpstreamHold: 20 * time.Millisecond}})
	cls := make([]*idleClient, n)
	for i := range cls {
		c, err := tls.Dial("tcp", srv.IngressAddr(), p.client([]string{"http/1.1"}))
		if err != nil {
			t.Fatalf("TLS dial: %v", err)
		}
		t.Cleanup(func() { _ = c.Close() })
		cls[i] = &idleClient{c: c, br: bufio.NewReader(c)}
		if err := cls[i].get(appServerName); err != nil {
			t.Fatalf("client %d, first request: %v", i, err)
		}
	}
	waitFor(t, "every TLS client parked", func() bool { return srv.ParkedConns() == n })
	for i, cl := range cls {
		if err := cl.get(appServerName); err != nil {
			t.Fatalf("client %d, request after parking: %v", i, err)
		}
	}
	waitFor(t, "every TLS client parked again", func() bool { return srv.ParkedConns() == n })
	// Two records at once wake the connection together.
	cl := cls[0]
	req := "GET /a HTTP/1.1\r\nHost: " + appServerName + "\r\n\r\n"
	for range 2 {
		if _, err := io.WriteString(cl.c, req); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 2 {
		resp, err := http.ReadResponse(cl.br, nil)
		if err != nil {
			t.Fatalf("pipelined response %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("pipelined response %d: %d", i, resp.StatusCode)
		}
	}
}

// TestParkedShed: at the connection limit a parked connection is the one shed to make
// room (the tracker reaches it; its wake-up goes through the socket), and the new
// client is served.
func TestParkedShed(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("parking is Linux only")
	}
	const n = 10
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	yaml := meshDef{services: []svcDef{{name: "echo.t.local", node: "echo", port: up.Port}}}.yaml()
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", KeepAliveIdle: time.Hour,
		Limits: proxy.ConnLimits{UpstreamHold: 20 * time.Millisecond, MaxConnections: n}}, yaml)
	cls := openIdle(t, srv.EgressAddr(), "echo.t.local", n)
	waitFor(t, "every client parked", func() bool { return srv.ParkedConns() == n })
	extra := openIdle(t, srv.EgressAddr(), "echo.t.local", 1)
	if err := extra[0].get("echo.t.local"); err != nil {
		t.Fatalf("the client past the limit, second request: %v", err)
	}
	gone := make([]bool, n)
	closed := 0
	poll := func() {
		for i, cl := range cls {
			if gone[i] {
				continue
			}
			_ = cl.c.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
			if _, err := cl.br.ReadByte(); err == io.EOF {
				gone[i] = true
				closed++
			}
		}
	}
	waitFor(t, "a parked client shed", func() bool { poll(); return closed > 0 })
	poll()
	if closed != 1 {
		t.Fatalf("%d parked clients closed to make room for one, want 1", closed)
	}
}

// meshdGoroutines counts the goroutines running meshd's code (a frame of package proxy
// or below), leaving out the test's upstreams and clients.
func meshdGoroutines() int {
	buf := make([]byte, 8<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	n := 0
	for _, g := range strings.Split(stacks, "\n\n") {
		if strings.Contains(g, "github.com/meshd/meshd/proxy.") || strings.Contains(g, "github.com/meshd/meshd/proxy/") {
			n++
		}
	}
	return n
}
