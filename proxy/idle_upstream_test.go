package proxy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// TestIdleClientsDoNotPinUpstreams: HTTP/1.1 keep-alive clients idle after one request
// each do not hold an upstream connection each (9,000 idle clients used to cost 18,014
// fds): past the short hold their upstream connections go back to the endpoint's pool,
// which keeps at most its idle cap open and closes the rest. The clients stay connected
// and are served again.
func TestIdleClientsDoNotPinUpstreams(t *testing.T) {
	const clients, idleCap = 1000, 8
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	yaml := meshDef{services: []svcDef{{name: "echo.t.local", node: "echo", port: up.Port}}}.yaml()
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", Limits: proxy.ConnLimits{
		UpstreamHold: 20 * time.Millisecond, UpstreamIdlePerEndpoint: idleCap}}, yaml)

	type client struct {
		c  net.Conn
		br *bufio.Reader
	}
	get := func(cl client) {
		t.Helper()
		if _, err := io.WriteString(cl.c, "GET / HTTP/1.1\r\nHost: echo.t.local\r\n\r\n"); err != nil {
			t.Fatalf("write: %v", err)
		}
		resp, err := http.ReadResponse(cl.br, &http.Request{Method: "GET"})
		if err != nil {
			t.Fatalf("read response: %v", err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || string(body) != "ok" || resp.Close {
			t.Fatalf("got %d %q (close %v, err %v), want 200 ok kept alive", resp.StatusCode, body, resp.Close, err)
		}
	}
	cls := make([]client, 0, clients)
	t.Cleanup(func() {
		for _, cl := range cls {
			_ = cl.c.Close()
		}
	})
	for range clients {
		c, err := net.Dial("tcp", srv.EgressAddr())
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		cl := client{c: c, br: bufio.NewReader(c)}
		cls = append(cls, cl)
		get(cl)
	}
	dialled := up.Accepted()
	t.Logf("%d clients made the upstream accept %d connections", clients, dialled)
	if dialled <= idleCap {
		t.Fatalf("only %d upstream connections were dialled: the test needs more than the idle cap %d to show anything", dialled, idleCap)
	}
	// Bounded wait (not a speed assertion): the hold is 20 ms.
	deadline := time.Now().Add(20 * time.Second)
	for up.Listener.Open() > idleCap {
		if time.Now().After(deadline) {
			t.Fatalf("%d upstream connections still open with %d idle clients, want at most the pool's idle cap %d",
				up.Listener.Open(), clients, idleCap)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The idle clients are still served, on the pooled connections.
	for _, cl := range cls[:20] {
		get(cl)
	}
	if n := up.Listener.Open(); n > idleCap+20 {
		t.Errorf("%d upstream connections open after 20 more requests, want at most %d", n, idleCap+20)
	}
}
