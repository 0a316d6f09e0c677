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

// TestInterimResponses covers RFC 9110's rules for 1xx relayed by meshd: a 101 the
// client did not ask for is a 502, 1xx never reach an HTTP/1.0 client, and an interim
// head is flushed at once rather than held until the final response.
func TestInterimResponses(t *testing.T) {
	sawEarlyHints := make(chan struct{}, 1)
	raw := testutil.StartRaw(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			switch req.URL.Path {
			case "/switch-ws":
				_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
				return
			case "/switch-h2c":
				_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n")
				return
			case "/hints":
				_, _ = io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
				if req.Header.Get("X-Wait") != "" {
					// The final response waits (bounded) until the client has the 103.
					select {
					case <-sawEarlyHints:
					case <-time.After(3 * time.Second):
					}
				}
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
			}
		}
	})
	srv, _ := meshDef{services: []svcDef{{name: "raw.t.local", node: "raw", port: raw.Port}}}.start(t)

	for _, tc := range []struct{ name, req string }{
		{"101 without Upgrade in the request", "GET /switch-ws HTTP/1.1\r\nHost: raw.t.local\r\n\r\n"},
		{"101 to another protocol than asked", "GET /switch-h2c HTTP/1.1\r\nHost: raw.t.local\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"},
		{"101 to an HTTP/1.0 client", "GET /switch-ws HTTP/1.0\r\nHost: raw.t.local\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, srv.EgressAddr())
			c.send(t, tc.req)
			resp, body := c.read(t, "GET")
			if resp.StatusCode != http.StatusBadGateway || resp.Header.Get(proxy.HeaderError) == "" {
				t.Fatalf("status %d %s=%q: %s, want meshd's 502", resp.StatusCode, proxy.HeaderError, resp.Header.Get(proxy.HeaderError), body)
			}
		})
	}

	t.Run("no 1xx to an HTTP/1.0 client", func(t *testing.T) {
		c := dialRaw(t, srv.EgressAddr())
		c.send(t, "GET /hints HTTP/1.0\r\nHost: raw.t.local\r\n\r\n")
		resp, body := c.read(t, "GET")
		if resp.StatusCode != 200 || body != "done" {
			t.Fatalf("first response %d %q, want the final 200", resp.StatusCode, body)
		}
	})

	t.Run("103 is flushed before the final response", func(t *testing.T) {
		c := dialRaw(t, srv.EgressAddr())
		c.send(t, "GET /hints HTTP/1.1\r\nHost: raw.t.local\r\nX-Wait: 1\r\n\r\n")
		start := time.Now()
		resp, _ := c.read(t, "GET")
		if resp.StatusCode != http.StatusEarlyHints || resp.Header.Get("Link") == "" {
			t.Fatalf("first response %d, want 103 with Link", resp.StatusCode)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("103 arrived after %v: held back until the final response", d)
		}
		sawEarlyHints <- struct{}{}
		resp, body := c.read(t, "GET")
		if resp.StatusCode != 200 || body != "done" {
			t.Fatalf("final response %d %q", resp.StatusCode, body)
		}
	})
}
