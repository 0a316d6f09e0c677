package proxy_test

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// TestClientBodyFailureNotBlamedOnUpstream: a client that stops sending its request body
// (here: closes after part of it) or sends a malformed chunked body gets a 400 from meshd,
// and the endpoint is not charged: the failure is the client's, so outlier detection does
// not count it against the endpoint or eject it.
func TestClientBodyFailureNotBlamedOnUpstream(t *testing.T) {
	a := testutil.StartHTTP(t, echoHandler("a"))
	b := testutil.StartHTTP(t, echoHandler("b"))
	od := "outlierDetection: {maxServerErrors: 1, interval: {unit: s, value: 10}, baseEjectionDuration: {unit: s, value: 30}, maxEjectionPercent: 50}"
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", Clock: newFakeClock()}, resMesh([]int{a.Port, b.Port}, od, ""))

	for _, tc := range []struct{ name, head, body string }{
		{"client closes mid-body", "POST /up HTTP/1.1\r\nHost: svc.t.local\r\nContent-Length: 100000\r\n\r\n", strings.Repeat("x", 20000)},
		{"malformed chunked body", "POST /up HTTP/1.1\r\nHost: svc.t.local\r\nTransfer-Encoding: chunked\r\n\r\n", "5\r\nhello\r\nzz\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, srv.EgressAddr())
			c.send(t, tc.head+tc.body)
			_ = c.Conn.(*net.TCPConn).CloseWrite()
			resp, body := c.read(t, "POST")
			if resp.StatusCode != 400 || resp.Header.Get(proxy.HeaderError) != "bad_request" {
				t.Fatalf("status %d %s=%q: %s, want 400 bad_request", resp.StatusCode, proxy.HeaderError, resp.Header.Get(proxy.HeaderError), body)
			}
			c.expectClosed(t)
		})
	}
	st, _ := endpointState(t, srv, "svc")
	for _, port := range []int{a.Port, b.Port} {
		if addr := fmt.Sprintf("127.0.0.1:%d", port); st[addr][1] {
			t.Errorf("endpoint %s ejected for the client's failure", addr)
		}
	}
	if n := readStats(t, srv).Clusters["svc"]["outlier_ejections_total"]; n != 0 {
		t.Errorf("outlier_ejections_total = %d, want 0", n)
	}
}
