package proxy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/meshd/meshd/internal/testutil"
)

func TestH2C(t *testing.T) {
	h1 := testutil.StartHTTP(t, echoHandler("h1"))
	h2 := testutil.StartH2C(t, echoHandler("h2"))
	srv, h1client := meshDef{services: []svcDef{
		{name: "h1.t.local", node: "h1", port: h1.Port},
		{name: "h2.t.local", node: "h2", port: h2.Port, proto: "http2", routes: []string{
			`{http2Route: {match: {prefix: /}, action: {weightedTargets: [{virtualNode: h2, weight: 1}]}}}`}},
	}}.start(t)
	h2client := testutil.H2CClient(t, srv.EgressAddr())
	resp, err := h2client.Get("http://h1.t.local/proto")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("downstream spoke %s, want h2c", resp.Proto)
	}

	for _, tc := range []struct {
		name, url, upstream, proto string
		client                     *http.Client
	}{
		{"h2c to http1", "http://h1.t.local/a", "h1", "HTTP/1.1", h2client},
		{"h2c to h2c", "http://h2.t.local/b", "h2", "HTTP/2.0", h2client},
		{"http1 to h2c", "http://h2.t.local/c", "h2", "HTTP/2.0", h1client},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := 0; i < 3; i++ {
				req := newReq(t, "POST", tc.url+"?i=1", strings.NewReader("payload"))
				req.Header.Set("X-Request-Id", "rid")
				info := getEcho(t, tc.client, req)
				if info.Name != tc.upstream || info.Proto != tc.proto || info.Body != "payload" ||
					info.Header.Get("X-Request-Id") != "rid" || info.Header.Get("X-Forwarded-For") != "127.0.0.1" {
					t.Fatalf("got %s %s body %q headers %v, want %s over %s", info.Name, info.Proto, info.Body, info.Header, tc.upstream, tc.proto)
				}
				if !strings.HasSuffix(info.Path, "?i=1") {
					t.Fatalf("path %q lost its query", info.Path)
				}
			}
		})
	}
	if h2.Accepted() != 1 {
		t.Fatalf("h2c upstream accepted %d connections, want 1 shared", h2.Accepted())
	}
}

// TestH1ChunkedTrailersToH2 sends an HTTP/1.1 chunked request with a trailer to an
// HTTP/2 upstream: the trailer must arrive, and the connection must stay in sync for
// the next request (the trailer section is consumed, not parsed as a request).
func TestH1ChunkedTrailersToH2(t *testing.T) {
	h2 := testutil.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = io.WriteString(w, string(b)+"|"+r.Trailer.Get("X-Sum"))
	}))
	srv, _ := meshDef{services: []svcDef{
		{name: "h2.t.local", node: "h2", port: h2.Port, proto: "http2", routes: []string{
			`{http2Route: {match: {prefix: /}, action: {weightedTargets: [{virtualNode: h2, weight: 1}]}}}`}},
	}}.start(t)
	conn, err := net.Dial("tcp", srv.EgressAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = io.WriteString(conn, "POST /t HTTP/1.1\r\nHost: h2.t.local\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"+
		"5\r\nhello\r\n0\r\nX-Sum: 42\r\n\r\n"+
		"GET /second HTTP/1.1\r\nHost: h2.t.local\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	for i, want := range []string{"hello|42", "|"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != want {
			t.Fatalf("response %d: %d %q, want 200 %q", i, resp.StatusCode, b, want)
		}
	}
}
