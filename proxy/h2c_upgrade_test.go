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
)

// TestH2CUpgradeIgnored: an HTTP/1.1 request asking to upgrade to h2c (RFC 7540 §3.2,
// obsoleted by RFC 9113) is served as HTTP/1.1: meshd answers 200 over HTTP/1.1, not 101,
// and neither Upgrade nor HTTP2-Settings reaches the upstream, whether the upstream
// speaks HTTP/1.1 or HTTP/2.
func TestH2CUpgradeIgnored(t *testing.T) {
	seen := make(chan http.Header, 4)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		_, _ = io.WriteString(w, "hello")
	})
	h1 := testutil.StartHTTP(t, h)
	h2 := testutil.StartH2C(t, h)
	srv, _ := meshDef{services: []svcDef{
		{name: "h1.t.local", node: "h1", port: h1.Port, proto: "http", routes: []string{
			`{httpRoute: {match: {prefix: /}, action: {weightedTargets: [{virtualNode: h1, weight: 1}]}}}`}},
		{name: "h2.t.local", node: "h2", port: h2.Port, proto: "http2", routes: []string{
			`{http2Route: {match: {prefix: /}, action: {weightedTargets: [{virtualNode: h2, weight: 1}]}}}`}},
	}}.start(t)
	for _, host := range []string{"h1.t.local", "h2.t.local"} {
		c, err := net.Dial("tcp", srv.EgressAddr())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", host)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: %v", host, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		c.Close()
		if resp.StatusCode != 200 || resp.ProtoMajor != 1 || string(body) != "hello" || resp.Header.Get("Upgrade") != "" {
			t.Fatalf("%s: %s %s %q (Upgrade %q), want HTTP/1.1 200 hello", host, resp.Proto, resp.Status, body, resp.Header.Get("Upgrade"))
		}
		select {
		case hdr := <-seen:
			for _, k := range []string{"Upgrade", "Http2-Settings"} {
				if v := hdr.Get(k); v != "" {
					t.Errorf("%s: the upstream saw %s: %q", host, k, v)
				}
			}
			if v := hdr.Get("Connection"); strings.Contains(strings.ToLower(v), "upgrade") {
				t.Errorf("%s: the upstream saw Connection: %q", host, v)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the upstream saw no request", host)
		}
	}
}
