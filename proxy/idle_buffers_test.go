package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// TestIdleConnectionsHoldNoBuffers: keep-alive clients idle past the hold give their
// read and write buffers back (10,000 idle clients held 32 KiB each) and take them again
// with their next request, whose first bytes were read without a buffer: a small GET, a
// head larger than that first read, a POST whose body follows, and two pipelined
// requests all come back whole.
func TestIdleConnectionsHoldNoBuffers(t *testing.T) {
	const clients = 200
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %d %s", r.Method, r.URL.Path, len(r.Header.Get("X-Big")), body)
	}))
	yaml := meshDef{services: []svcDef{{name: "echo.t.local", node: "echo", port: up.Port}}}.yaml()
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", Limits: proxy.ConnLimits{UpstreamHold: 20 * time.Millisecond}}, yaml)
	base := proxy.DownstreamReadBuffers()

	type client struct {
		c  net.Conn
		br *bufio.Reader
	}
	send := func(cl client, raw string, want ...string) {
		t.Helper()
		if _, err := io.WriteString(cl.c, raw); err != nil {
			t.Fatalf("write: %v", err)
		}
		for _, w := range want {
			resp, err := http.ReadResponse(cl.br, nil)
			if err != nil {
				t.Fatalf("read response: %v", err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 || string(body) != w || resp.Close {
				t.Fatalf("got %d %q (close %v, err %v), want 200 %q kept alive", resp.StatusCode, body, resp.Close, err, w)
			}
		}
	}
	get := "GET /a HTTP/1.1\r\nHost: echo.t.local\r\n\r\n"
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
		send(cl, get, "GET /a 0 ")
	}
	settled := func(max int64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for proxy.DownstreamReadBuffers()-base > max {
			if time.Now().After(deadline) {
				t.Fatalf("%d idle connections hold %d read buffers, want at most %d", clients, proxy.DownstreamReadBuffers()-base, max)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	settled(0)

	big := strings.Repeat("b", 3000) // the head is larger than the idle read
	post := "POST /p HTTP/1.1\r\nHost: echo.t.local\r\nContent-Length: 5\r\n\r\nhello"
	for i, cl := range cls {
		switch i % 4 {
		case 0:
			send(cl, get, "GET /a 0 ")
		case 1:
			send(cl, "GET /big HTTP/1.1\r\nHost: echo.t.local\r\nX-Big: "+big+"\r\n\r\n", "GET /big 3000 ")
		case 2:
			send(cl, post, "POST /p 0 hello")
		case 3:
			send(cl, get+post, "GET /a 0 ", "POST /p 0 hello")
		}
	}
	settled(0)
}
