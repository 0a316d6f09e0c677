package proxy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

// TestBridgeStreamsToHTTP1: an HTTP/1.1 client of an HTTP/2 upstream gets a stream as
// it arrives (server-sent events: the first event before the upstream sends the next),
// and an upstream that dies mid-body leaves the client every byte that arrived and a
// truncated chunked body (no last chunk), not a bare reset.
func TestBridgeStreamsToHTTP1(t *testing.T) {
	next := make(chan struct{})
	up := testutil.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		_, _ = io.WriteString(w, "data: one\n\n")
		_ = rc.Flush()
		select {
		case <-next:
		case <-r.Context().Done():
			return
		}
		if r.URL.Path == "/die" {
			panic(http.ErrAbortHandler) // RST_STREAM mid-body
		}
		_, _ = io.WriteString(w, "data: two\n\n")
	}))
	srv, _ := meshDef{services: []svcDef{
		{name: "h2.t.local", node: "h2", port: up.Port, proto: "http2", routes: []string{
			`{http2Route: {match: {prefix: /}, action: {weightedTargets: [{virtualNode: h2, weight: 1}]}}}`}},
	}}.start(t)
	for _, path := range []string{"/stream", "/die"} {
		t.Run(path, func(t *testing.T) {
			conn, err := net.Dial("tcp", srv.EgressAddr())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: h2.t.local\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			first := make([]byte, len("data: one\n\n"))
			if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "data: one\n\n" {
				t.Fatalf("first event %q %v: not delivered before the upstream sent the next", first, err)
			}
			next <- struct{}{}
			rest, err := io.ReadAll(resp.Body)
			if path == "/stream" {
				if err != nil || string(rest) != "data: two\n\n" {
					t.Fatalf("rest %q %v", rest, err)
				}
				return
			}
			if !errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(strings.ToLower(err.Error()), "reset") {
				t.Fatalf("after the upstream died: %q %v, want a truncated body (unexpected EOF), not a reset", rest, err)
			}
		})
	}
}

// TestBridgeSizedBodyKeepsConnection: HTTP/1.1 requests with a Content-Length body,
// bridged to an h2c upstream, leave the client's keep-alive connection open. The
// HTTP/2 client stops reading a body at its length, and the body reader said its end
// only on a further read, so the bridge took every sized body for unfinished and closed
// the connection after each response (Connection: close).
func TestBridgeSizedBodyKeepsConnection(t *testing.T) {
	up := testutil.StartH2C(t, echoHandler("svc"))
	srv := testutil.StartMeshd(t, "app", lcMesh([]int{up.Port}, ""))
	c := testutil.HTTPClient(t, srv.EgressAddr())
	var conns, reused int
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		conns++
		if i.Reused {
			reused++
		}
	}}
	for i := range 5 {
		body := strings.Repeat("b", 10+i*1000)
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "POST", "http://svc.t.local/", strings.NewReader(body))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var info echoInfo
		if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Close || info.Body != body {
			t.Fatalf("POST %d: %d, close %v, upstream got %d of %d body bytes", i, resp.StatusCode, resp.Close, len(info.Body), len(body))
		}
	}
	if conns != 5 || reused != 4 {
		t.Fatalf("5 POSTs took %d connections (%d reused), want one kept alive", conns-reused, reused)
	}
}
