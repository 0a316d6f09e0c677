package proxy_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

// TestMidBodyFailureResetsClient: when the upstream fails in the middle of a body whose
// end the client learns only from the connection closing (read until close, or a chunked
// body de-chunked for an HTTP/1.0 client), meshd resets the client connection instead of
// closing it cleanly, so the truncated body cannot look complete. (Bodies whose framing
// shows the truncation end with an orderly close: TestUpstreamDiesAfterHead.)
func TestMidBodyFailureResetsClient(t *testing.T) {
	port := tcpServer(t, func(c *net.TCPConn) {
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		switch req.URL.Path {
		case "/until-close":
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npartial")
		case "/chunked":
			// More than meshd's 16 KiB client write buffer, so part of the body reaches the
			// client: had nothing, meshd would answer 502 instead (TestUpstreamDiesAfterHead).
			_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", 20_000, strings.Repeat("p", 20_000))
		}
		// Let meshd relay what was sent, then fail the connection with a reset.
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, _ = c.Read(make([]byte, 1))
		_ = c.SetLinger(0)
	})
	h2 := testutil.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // RST_STREAM mid-body
	}))
	srv, _ := meshDef{services: []svcDef{
		{name: "cut.t.local", node: "cut", port: port},
		{name: "cut2.t.local", node: "cut2", port: h2.Port, proto: "http2"},
	}}.start(t)

	for _, tc := range []struct{ name, req string }{
		{"until close", "GET /until-close HTTP/1.1\r\nHost: cut.t.local\r\n\r\n"},
		{"chunked to an HTTP/1.0 client", "GET /chunked HTTP/1.0\r\nHost: cut.t.local\r\n\r\n"},
		{"h2 upstream stream reset, HTTP/1.0 client", "GET / HTTP/1.0\r\nHost: cut2.t.local\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, srv.EgressAddr())
			c.send(t, tc.req)
			var body []byte
			resp, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
			if err == nil {
				body, err = io.ReadAll(resp.Body)
			}
			// The reset may come before the head was read; either way the client must see
			// a reset, not an orderly end.
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("client read body %q, error %v; want a connection reset", body, err)
			}
		})
	}
}
