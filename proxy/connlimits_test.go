package proxy_test

import (
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// statsOf reads the admin /stats text lines as numbers.
func statsOf(t *testing.T, srv *proxy.Server) map[string]int64 {
	t.Helper()
	_, body := adminGet(t, srv, "/stats")
	out := map[string]int64{}
	for _, line := range strings.Split(string(body), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if n, err := strconv.ParseInt(v, 10, 64); ok && err == nil {
			out[k] = n
		}
	}
	return out
}

// okUpstream answers 200 "ok".
func okUpstream(t *testing.T) *testutil.Upstream {
	return testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
}

// rawGet sends a GET for echo.t.local on c and reads the answer.
func rawConnGet(t *testing.T, c *rawConn) *http.Response {
	t.Helper()
	c.send(t, "GET / HTTP/1.1\r\nHost: echo.t.local\r\n\r\n")
	resp, _ := c.read(t, "GET")
	return resp
}

// closedAtOnce asserts meshd closed c without a byte (the accept loop refused it).
func closedAtOnce(t *testing.T, c *rawConn, what string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := c.br.ReadByte(); err == nil {
		t.Fatalf("%s: read %q, want the connection closed", what, b)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("%s: connection still open", what)
	}
}

// TestConnectionLimitTotal: at --max-connections a new connection takes the room of an
// idle keep-alive connection, which meshd closes; with no idle one (connections that
// have not sent a request yet are not shed) the new connection is closed at once. Both
// are counted.
func TestConnectionLimitTotal(t *testing.T) {
	up := okUpstream(t)
	yaml := meshDef{services: []svcDef{{name: "echo.t.local", node: "echo", port: up.Port}}}.yaml()
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", Limits: proxy.ConnLimits{MaxConnections: 2}}, yaml)

	a := dialRaw(t, srv.EgressAddr())
	if resp := rawConnGet(t, a); resp.StatusCode != 200 {
		t.Fatalf("a: %d", resp.StatusCode)
	}
	b := dialRaw(t, srv.EgressAddr())
	if resp := rawConnGet(t, b); resp.StatusCode != 200 {
		t.Fatalf("b: %d", resp.StatusCode)
	}
	// Both are idle keep-alive connections: c is served in the room of one of them.
	c := dialRaw(t, srv.EgressAddr())
	if resp := rawConnGet(t, c); resp.StatusCode != 200 {
		t.Fatalf("c at the bound: %d, want 200 in an idle connection's room", resp.StatusCode)
	}
	eventually(t, "one idle connection shed", func() bool { return statsOf(t, srv)["listener.egress.downstream_cx_active"] == 2 })
	// Replace the survivor of a and b by a connection that has sent nothing: c (idle)
	// is then the only one that can be shed.
	for _, x := range []*rawConn{a, b} {
		_ = x.Close()
	}
	eventually(t, "a and b gone", func() bool { return statsOf(t, srv)["listener.egress.downstream_cx_active"] == 1 })
	silent := dialRaw(t, srv.EgressAddr())
	eventually(t, "the silent connection admitted", func() bool { return statsOf(t, srv)["listener.egress.downstream_cx_active"] == 2 })
	d := dialRaw(t, srv.EgressAddr())
	if resp := rawConnGet(t, d); resp.StatusCode != 200 {
		t.Fatalf("d: %d, want 200 in c's room", resp.StatusCode)
	}
	c.expectClosed(t)
	// With d gone, the bound is filled by two connections that have sent nothing yet:
	// nothing can be shed.
	_ = d.Close()
	eventually(t, "d gone", func() bool { return statsOf(t, srv)["listener.egress.downstream_cx_active"] == 1 })
	silent2 := dialRaw(t, srv.EgressAddr())
	eventually(t, "the second silent connection admitted", func() bool { return statsOf(t, srv)["listener.egress.downstream_cx_active"] == 2 })
	e := dialRaw(t, srv.EgressAddr())
	closedAtOnce(t, e, "a connection over the bound with nothing idle to shed")
	st := statsOf(t, srv)
	if st["listener.egress.downstream_cx_idle_shed"] != 2 || st["listener.egress.downstream_cx_overflow"] != 1 || st["server.downstream_cx_max"] != 2 {
		t.Errorf("stats: idle_shed %d (want 2), overflow %d (want 1), max %d (want 2)", st["listener.egress.downstream_cx_idle_shed"],
			st["listener.egress.downstream_cx_overflow"], st["server.downstream_cx_max"])
	}
	_, metrics := adminGet(t, srv, "/stats/prometheus")
	for _, want := range []string{`meshd_listener_connections_rejected_total{listener="egress",reason="limit"} 1`,
		`meshd_listener_idle_connections_shed_total{listener="egress"} 2`, `meshd_listener_connections_open{listener="egress"} 2`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/stats/prometheus lacks %s", want)
		}
	}
	_, _ = silent, silent2
}

// TestConnectionLimitPerListener: a listener's own bound refuses the listener's extra
// connections while another listener still accepts.
func TestConnectionLimitPerListener(t *testing.T) {
	up := okUpstream(t)
	yaml := meshDef{services: []svcDef{{name: "echo.t.local", node: "echo", port: up.Port}}}.yaml()
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", Limits: proxy.ConnLimits{MaxConnections: -1, MaxListenerConnections: 1}}, yaml)
	first := dialRaw(t, srv.EgressAddr())
	eventually(t, "the first egress connection admitted", func() bool { return statsOf(t, srv)["listener.egress.downstream_cx_active"] == 1 })
	closedAtOnce(t, dialRaw(t, srv.EgressAddr()), "a second egress connection over the listener's bound")
	// The ingress listener has its own room.
	in := dialRaw(t, srv.IngressAddr())
	in.send(t, "GET / HTTP/1.1\r\nHost: app\r\n\r\n")
	if resp, _ := in.read(t, "GET"); resp.StatusCode == 0 {
		t.Fatal("no answer on ingress")
	}
	if resp := rawConnGet(t, first); resp.StatusCode != 200 {
		t.Errorf("the admitted egress connection: %d", resp.StatusCode)
	}
	if st := statsOf(t, srv); st["listener.egress.downstream_cx_overflow"] != 1 || st["listener.ingress.downstream_cx_overflow"] != 0 {
		t.Errorf("overflow: egress %d (want 1), ingress %d (want 0)", st["listener.egress.downstream_cx_overflow"], st["listener.ingress.downstream_cx_overflow"])
	}
}

// overloadActive advances the fake clock one sample and reports the overload state.
func overloadActive(t *testing.T, srv *proxy.Server, clk *tickClock) bool {
	clk.Advance(time.Second)
	return statsOf(t, srv)["overload.active"] == 1
}

// TestOverloadConnectionWatermark: past --overload-connections meshd sheds load instead
// of taking more: new connections are closed at accept, a request on an open connection
// is answered 503 overloaded with Connection: close; once the connections are gone it
// serves again. The watermark is sampled on the injected clock.
func TestOverloadConnectionWatermark(t *testing.T) {
	up := okUpstream(t)
	yaml := meshDef{services: []svcDef{{name: "echo.t.local", node: "echo", port: up.Port}}}.yaml()
	clk := newTickClock()
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", Clock: clk, Limits: proxy.ConnLimits{OverloadConnections: 3}}, yaml)
	var conns []*rawConn
	for range 3 {
		conns = append(conns, dialRaw(t, srv.EgressAddr()))
	}
	eventually(t, "three connections open", func() bool { return statsOf(t, srv)["listener.egress.downstream_cx_active"] == 3 })
	eventually(t, "overload", func() bool { return overloadActive(t, srv, clk) })

	closedAtOnce(t, dialRaw(t, srv.EgressAddr()), "a new connection while overloaded")
	resp := rawConnGet(t, conns[0])
	if resp.StatusCode != 503 || resp.Header.Get("x-meshd-error") != "overloaded" || !resp.Close {
		t.Fatalf("a request while overloaded: %d %q close %v, want 503 overloaded, Connection: close",
			resp.StatusCode, resp.Header.Get("x-meshd-error"), resp.Close)
	}
	conns[0].expectClosed(t)
	for _, c := range conns[1:] {
		_ = c.Close()
	}
	eventually(t, "connections gone", func() bool { return statsOf(t, srv)["listener.egress.downstream_cx_active"] == 0 })
	eventually(t, "recovery", func() bool { return !overloadActive(t, srv, clk) })
	c := dialRaw(t, srv.EgressAddr())
	if resp := rawConnGet(t, c); resp.StatusCode != 200 || resp.Close {
		t.Fatalf("after recovery: %d close %v, want 200 kept alive", resp.StatusCode, resp.Close)
	}
	st := statsOf(t, srv)
	if st["overload.entered"] != 1 || st["listener.egress.downstream_cx_overload_reject"] != 1 || st["listener.egress.downstream_rq_overload_reject"] != 1 {
		t.Errorf("stats: entered %d, cx_overload_reject %d, rq_overload_reject %d, want 1 each", st["overload.entered"],
			st["listener.egress.downstream_cx_overload_reject"], st["listener.egress.downstream_rq_overload_reject"])
	}
}

// TestOverloadHeapWatermark: a heap past --overload-heap (the test's own allocation,
// sampled on the injected clock) makes meshd answer new requests 503 overloaded on
// HTTP/1.1 and HTTP/2 instead of taking more load; once the heap is freed it serves
// again.
func TestOverloadHeapWatermark(t *testing.T) {
	up := okUpstream(t)
	yaml := meshDef{services: []svcDef{{name: "echo.t.local", node: "echo", port: up.Port}}}.yaml()
	clk := newTickClock()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	const ballast = 256 << 20
	mark := ms.HeapAlloc + ballast/2
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", Clock: clk, Limits: proxy.ConnLimits{OverloadHeapBytes: mark}}, yaml)
	h1 := testutil.HTTPClient(t, srv.EgressAddr())
	get := func(c *http.Client) (int, string) {
		t.Helper()
		resp, err := c.Get("http://echo.t.local/")
		if err != nil {
			t.Fatalf("GET: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("x-meshd-error")
	}
	h2 := testutil.H2CClient(t, srv.EgressAddr())
	// Both clients connect before the overload: while it lasts, new connections are
	// closed at accept.
	for _, c := range []*http.Client{h1, h2} {
		if st, _ := get(c); st != 200 {
			t.Fatalf("before: %d", st)
		}
	}
	if overloadActive(t, srv, clk) {
		t.Fatalf("overloaded before any ballast (heap watermark %d)", mark)
	}
	b := make([]byte, ballast)
	for i := range b {
		b[i] = 1
	}
	eventually(t, "overload", func() bool { return overloadActive(t, srv, clk) })
	if st, code := get(h1); st != 503 || code != "overloaded" {
		t.Errorf("HTTP/1.1 while overloaded: %d %q, want 503 overloaded", st, code)
	}
	if st, code := get(h2); st != 503 || code != "overloaded" {
		t.Errorf("HTTP/2 while overloaded: %d %q, want 503 overloaded", st, code)
	}
	runtime.KeepAlive(b)
	b = nil
	runtime.GC()
	eventually(t, "recovery", func() bool { return !overloadActive(t, srv, clk) })
	if st, _ := get(testutil.HTTPClient(t, srv.EgressAddr())); st != 200 {
		t.Errorf("after recovery: %d, want 200", st)
	}
	if n := statsOf(t, srv)["overload.heap_watermark"]; n != int64(mark) {
		t.Errorf("overload.heap_watermark %d, want %d", n, mark)
	}
}
