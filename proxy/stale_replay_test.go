package proxy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// TestStaleKeepAliveReplay: when a kept-alive upstream connection fails after the whole
// request was written, meshd resends it on a new connection by itself only if the
// upstream provably did not answer (clean EOF or reset before any response byte) and
// the method is idempotent or the request carries Idempotency-Key (RFC 9110 §9.2.2),
// so a non-idempotent request the upstream may have acted on is never sent twice. The
// route's retryPolicy names no reset event, so no configured retry muddles the picture.
func TestStaleKeepAliveReplay(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{} // "METHOD /path" → requests the upstream read
	port := tcpServer(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		for n := 0; ; n++ {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			mu.Lock()
			seen[req.Method+" "+req.URL.Path]++
			mu.Unlock()
			if n > 0 { // the connection was kept: fail it as the path says
				switch req.URL.Path {
				case "/eof":
					return
				case "/reset":
					_ = c.SetLinger(0)
					return
				case "/partial":
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-")
					return
				case "/garbage":
					_, _ = io.WriteString(c, "HTTP/1.1 2x0 OK\r\n\r\n")
					return
				}
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	route := `{match: {prefix: /}, action: {weightedTargets: [{virtualNode: svc, weight: 1}]}, retryPolicy: {maxRetries: 2, perRetryTimeout: {unit: s, value: 5}, tcpRetryEvents: [connection-error]}}`
	srv := testutil.StartMeshd(t, "app", resMesh([]int{port}, "", route))

	for _, tc := range []struct {
		name, method, path, extra string
		status, upstreamSaw       int
	}{
		{"POST after a clean close is not replayed", "POST", "/eof", "", 502, 1},
		{"POST with Idempotency-Key is replayed", "POST", "/eof", "Idempotency-Key: k1\r\n", 200, 2},
		{"PUT after a clean close is replayed", "PUT", "/eof", "", 200, 2},
		{"GET after a clean close is replayed", "GET", "/eof", "", 200, 2},
		{"GET after a reset is replayed", "GET", "/reset", "", 200, 2},
		{"GET after a partial response head is not replayed", "GET", "/partial", "", 502, 1},
		{"GET after a malformed response is not replayed", "GET", "/garbage", "", 502, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			clear(seen)
			mu.Unlock()
			c := dialRaw(t, srv.EgressAddr())
			c.send(t, "GET /warm HTTP/1.1\r\nHost: svc.t.local\r\n\r\n")
			if resp, _ := c.read(t, "GET"); resp.StatusCode != 200 {
				t.Fatalf("warm-up: %d", resp.StatusCode)
			}
			body := ""
			if tc.method != "GET" {
				body = "Content-Length: 4\r\n\r\ndata"
			} else {
				body = "\r\n"
			}
			c.send(t, tc.method+" "+tc.path+" HTTP/1.1\r\nHost: svc.t.local\r\n"+tc.extra+body)
			resp, msg := c.read(t, tc.method)
			if resp.StatusCode != tc.status {
				t.Errorf("status %d (%s) %q, want %d", resp.StatusCode, resp.Header.Get(proxy.HeaderError), msg, tc.status)
			}
			mu.Lock()
			got := seen[tc.method+" "+tc.path]
			mu.Unlock()
			if got != tc.upstreamSaw {
				t.Errorf("upstream read the request %d times, want %d", got, tc.upstreamSaw)
			}
		})
	}
}
