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

// TestUpstreamResponseBounds: upstreams are untrusted too. A response head past the
// request-head limits, a flood of interim (1xx) responses, or framing two parsers could
// read differently is refused: the client gets meshd's 502 upstream_protocol_error
// (HTTP/1.1 and h2c clients alike), the upstream connection is not reused, and the
// refusal is counted in meshd_cluster_upstream_protocol_errors_total. A few interim
// responses, as real servers send, still pass. A bad chunk right after a valid head is
// a 502 for an h2c client too: the stream's HEADERS had not left (http2.CopyResponse
// retracts them); it was a bare RST_STREAM before.
func TestUpstreamResponseBounds(t *testing.T) {
	interim := func(n int, head string) string { return strings.Repeat(head, n) }
	const final = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	responses := map[string]string{
		"/interim-few":      interim(3, "HTTP/1.1 100 Continue\r\n\r\n") + "HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n" + final,
		"/flood-100":        interim(200, "HTTP/1.1 100 Continue\r\n\r\n") + final,
		"/flood-103":        interim(50, "HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n") + final,
		"/oversized-head":   "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("b", 70<<10) + "\r\nContent-Length: 2\r\n\r\nok",
		"/too-many-fields":  "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-F: 1\r\n", 101) + "Content-Length: 2\r\n\r\nok",
		"/long-status-line": "HTTP/1.1 200 " + strings.Repeat("r", 70<<10) + "\r\nContent-Length: 2\r\n\r\nok",
		"/cl-and-te":        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"/two-cl":           "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
		"/te-gzip":          "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"/bad-chunk":        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
		"/bad-status":       "HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
		"/bare-lf":          "HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
		"/obs-fold":         "HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 2\r\n\r\nok",
		"/nul-in-value":     "HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok",
	}
	up := testutil.StartRaw(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			out, ok := responses[req.URL.Path]
			if !ok {
				out = final
			}
			if _, err := io.WriteString(c, out); err != nil {
				return
			}
		}
	})
	srv, _ := meshDef{services: []svcDef{{name: "bounds.t.local", node: "bounds", port: up.Port}}}.start(t)
	h2c := testutil.H2CClient(t, srv.EgressAddr())

	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{"/interim-few", true},
		{"/flood-100", false},
		{"/flood-103", false},
		{"/oversized-head", false},
		{"/too-many-fields", false},
		{"/long-status-line", false},
		{"/cl-and-te", false},
		{"/two-cl", false},
		{"/te-gzip", false},
		{"/bad-chunk", false},
		{"/bad-status", false},
		{"/bare-lf", false},
		{"/obs-fold", false},
		{"/nul-in-value", false},
	} {
		for _, client := range []string{"http1", "h2c"} {
			t.Run(client+tc.path, func(t *testing.T) {
				before := protocolErrors(t, srv)
				var status int
				var code, body string
				if client == "http1" {
					status, code, body = rawGet(t, srv.EgressAddr(), "bounds.t.local", tc.path)
				} else {
					req, _ := http.NewRequest("GET", "http://bounds.t.local"+tc.path, nil)
					resp, err := h2c.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					b, _ := io.ReadAll(resp.Body)
					_ = resp.Body.Close()
					status, code, body = resp.StatusCode, resp.Header.Get("x-meshd-error"), string(b)
				}
				after := protocolErrors(t, srv)
				// The request is counted once its answer is written: wait for it.
				for i := 0; i < 200 && !tc.ok && after == before; i++ {
					time.Sleep(5 * time.Millisecond)
					after = protocolErrors(t, srv)
				}
				if tc.ok {
					if status != 200 || body != "ok" || code != "" {
						t.Fatalf("got %d %q %q, want the upstream's 200 ok", status, code, body)
					}
					if after != before {
						t.Errorf("protocol errors counted %v → %v for a good response", before, after)
					}
					return
				}
				if status != 502 || code != "upstream_protocol_error" {
					t.Fatalf("got %d %q %q, want 502 upstream_protocol_error", status, code, body)
				}
				if after != before+1 {
					t.Errorf("meshd_cluster_upstream_protocol_errors_total %v → %v, want one more", before, after)
				}
			})
		}
	}
}

// protocolErrors sums meshd_cluster_upstream_protocol_errors_total over its series.
func protocolErrors(t *testing.T, srv *proxy.Server) float64 {
	t.Helper()
	var n float64
	for _, m := range scrape(t, srv, "")["meshd_cluster_upstream_protocol_errors_total"].GetMetric() {
		n += m.GetCounter().GetValue()
	}
	return n
}

// rawGet sends one GET over a fresh connection and returns the final response, after
// any interim ones meshd relays (at most h1.MaxInterim of them).
func rawGet(t *testing.T, addr, host, path string) (status int, code, body string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for range 20 {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode < 200 {
			continue
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, resp.Header.Get("x-meshd-error"), string(b)
	}
	t.Fatal("more than 20 interim responses relayed")
	return 0, "", ""
}
