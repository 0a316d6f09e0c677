package proxy_test

import (
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

// TestH1BodyToH2UpstreamAnsweredEarly: an HTTP/1.1 client streams a large body slowly
// to an HTTP/2 cluster whose server answers without reading it. net/http's HTTP/2 client
// may still be inside a read of the body from meshd's pooled downstream buffer when the
// response is done; the buffer must not go back to the pool (and be reset, or handed to
// another connection) while that read is pending, or the late read would land in a
// buffer another connection now owns. Run with -race.
func TestH1BodyToH2UpstreamAnsweredEarly(t *testing.T) {
	up := testutil.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "early")
	}))
	echo := testutil.StartHTTP(t, echoHandler("echo"))
	srv, client := meshDef{services: []svcDef{
		{name: "h2.t.local", node: "h2", port: up.Port, proto: "http2"},
		{name: "echo.t.local", node: "echo", port: echo.Port},
	}}.start(t)

	for i := range 5 {
		c := dialRaw(t, srv.EgressAddr())
		c.send(t, "POST /upload HTTP/1.1\r\nHost: h2.t.local\r\nContent-Length: 1000000\r\n\r\n"+strings.Repeat("x", 20000))
		resp, body := c.read(t, "POST")
		if resp.StatusCode != 200 || body != "early" {
			t.Fatalf("round %d: %d %q", i, resp.StatusCode, body)
		}
		if !resp.Close {
			t.Errorf("round %d: the connection is mid-body and must close, but the response keeps it", i)
		}
		// The client is still "uploading" but paused: meshd must end the connection
		// without waiting for it.
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		c.expectClosed(t)
		// Pooled buffers now serve other connections correctly.
		for j := range 3 {
			info := getEcho(t, client, newReq(t, "POST", "http://echo.t.local/", strings.NewReader(fmt.Sprintf("body-%d-%d", i, j))))
			if want := fmt.Sprintf("body-%d-%d", i, j); info.Body != want {
				t.Fatalf("echo body %q, want %q", info.Body, want)
			}
		}
	}
}

// TestH1BodyToH2ClientFails: an HTTP/1.1 client that stops sending the body of a request
// for an HTTP/2 cluster gets meshd's 400, and the endpoint is not charged: as on the
// HTTP/1.1 path (TestClientBodyFailureNotBlamedOnUpstream), a client's failure does not
// count towards ejecting the endpoint.
func TestH1BodyToH2ClientFails(t *testing.T) {
	up := testutil.StartH2C(t, echoHandler("h2"))
	od := "outlierDetection: {maxServerErrors: 1, interval: {unit: s, value: 10}, baseEjectionDuration: {unit: s, value: 30}, maxEjectionPercent: 100}"
	srv, _ := meshDef{services: []svcDef{{name: "h2.t.local", node: "h2", port: up.Port, proto: "http2", listener: od}}}.start(t)
	c := dialRaw(t, srv.EgressAddr())
	c.send(t, "POST /upload HTTP/1.1\r\nHost: h2.t.local\r\nContent-Length: 100000\r\n\r\n"+strings.Repeat("x", 20000))
	_ = c.Conn.(*net.TCPConn).CloseWrite()
	resp, body := c.read(t, "POST")
	if resp.StatusCode != 400 || resp.Header.Get(proxy.HeaderError) != "bad_request" {
		t.Fatalf("status %d %s=%q: %s, want 400 bad_request", resp.StatusCode, proxy.HeaderError, resp.Header.Get(proxy.HeaderError), body)
	}
	if n := readStats(t, srv).Clusters["h2"]["outlier_ejections_total"]; n != 0 {
		t.Errorf("outlier_ejections_total = %d, want 0", n)
	}
}
