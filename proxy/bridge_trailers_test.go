package proxy_test

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/meshd/meshd/internal/testutil"
)

// TestBridgeTrailersToHTTP1: an HTTP/1.1 client that sends `TE: trailers` to an h2c
// upstream (meshd bridges the two) gets the streamed response as a chunked body
// followed by the upstream's trailers, both those the upstream announced in its head
// (Trailer:) and one it only set after the body (http.TrailerPrefix), with their values;
// and the chunked framing ends where it should: the next request on the same connection
// gets its own answer.
func TestBridgeTrailersToHTTP1(t *testing.T) {
	chunks := []string{"first chunk;", "second chunk;", "third"}
	up := testutil.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Trailer", "X-Checksum, X-Count")
		w.Header().Set("Content-Type", "text/plain")
		rc := http.NewResponseController(w)
		for _, c := range chunks {
			_, _ = io.WriteString(w, c)
			_ = rc.Flush() // no Content-Length: the body's length is unknown
		}
		w.Header().Set("X-Checksum", "abc123")
		w.Header().Set("X-Count", "3")
		w.Header().Set(http.TrailerPrefix+"X-Late", "undeclared")
	}))
	srv, _ := meshDef{services: []svcDef{
		{name: "h2.t.local", node: "h2", port: up.Port, proto: "http2", routes: []string{
			`{http2Route: {match: {prefix: /}, action: {weightedTargets: [{virtualNode: h2, weight: 1}]}}}`}},
	}}.start(t)
	c := dialRaw(t, srv.EgressAddr())
	for i := range 2 {
		c.send(t, "GET /t HTTP/1.1\r\nHost: h2.t.local\r\nTE: trailers\r\n\r\n")
		resp, body := c.read(t, "GET")
		if resp.StatusCode != 200 || body != strings.Join(chunks, "") {
			t.Fatalf("request %d: %d %q, want 200 %q", i, resp.StatusCode, body, strings.Join(chunks, ""))
		}
		if !slices.Equal(resp.TransferEncoding, []string{"chunked"}) || resp.ContentLength != -1 {
			t.Fatalf("request %d: Transfer-Encoding %q, Content-Length %d: want a chunked body (trailers need one)",
				i, resp.TransferEncoding, resp.ContentLength)
		}
		for k, want := range map[string]string{"X-Checksum": "abc123", "X-Count": "3", "X-Late": "undeclared"} {
			if got := resp.Trailer.Get(k); got != want {
				t.Errorf("request %d: trailer %s = %q, want %q (trailers: %v)", i, k, got, want, resp.Trailer)
			}
		}
		if resp.Header.Get("X-Checksum") != "" {
			t.Errorf("request %d: X-Checksum in the head, want it only in the trailers", i)
		}
	}
}
