package proxy_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

// TestKeptConnDropsPreviousDeadline: a request on a route with a per-request timeout
// must not leave its absolute deadline on the upstream connection kept for the next
// request of the same client connection: the next request, on a route without a
// timeout, must succeed even after the first one's deadline passed.
func TestKeptConnDropsPreviousDeadline(t *testing.T) {
	up := testutil.StartHTTP(t, echoHandler("svc"))
	srv, _ := meshDef{services: []svcDef{{name: "svc.t.local", node: "svc", port: up.Port, routes: []string{
		`{priority: 1, httpRoute: {match: {prefix: /a}, action: {weightedTargets: [{virtualNode: svc, weight: 1}]}, timeout: {perRequest: {unit: ms, value: 150}}}}`,
		`{priority: 2, httpRoute: {match: {prefix: /}, action: {weightedTargets: [{virtualNode: svc, weight: 1}]}}}`,
	}}}}.start(t)

	c := dialRaw(t, srv.EgressAddr())
	c.send(t, "GET /a HTTP/1.1\r\nHost: svc.t.local\r\n\r\n")
	if resp, body := c.read(t, "GET"); resp.StatusCode != http.StatusOK {
		t.Fatalf("route a: status %d: %s", resp.StatusCode, body)
	}
	// Let route a's 150ms deadline pass: the kept upstream connection must not carry it.
	time.Sleep(250 * time.Millisecond)
	c.send(t, "GET /b HTTP/1.1\r\nHost: svc.t.local\r\n\r\n")
	if resp, body := c.read(t, "GET"); resp.StatusCode != http.StatusOK {
		t.Fatalf("route b on the kept connection: status %d (%s): %s", resp.StatusCode, resp.Header.Get("X-Meshd-Error"), body)
	}
	if n := up.Accepted(); n != 1 {
		t.Fatalf("upstream connections = %d, want the kept one reused", n)
	}
}
