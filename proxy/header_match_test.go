package proxy_test

import (
	"testing"

	"github.com/meshd/meshd/internal/testutil"
)

// TestHeaderMatchRepeated: a route's header condition sees every value of a repeated
// request header joined with "," (RFC 9110 §5.3 lets a recipient combine field lines
// that way, and Envoy matches the joined value), not just the first field line, on the
// HTTP/1.1 and HTTP/2 paths.
func TestHeaderMatchRepeated(t *testing.T) {
	joined := testutil.StartHTTP(t, echoHandler("joined"))
	other := testutil.StartHTTP(t, echoHandler("other"))
	route := func(prio int, match, node string) string {
		return `{priority: ` + string(rune('0'+prio)) + `, httpRoute: {match: ` + match + `, action: {weightedTargets: [{virtualNode: ` + node + `, weight: 1}]}}}`
	}
	srv, _ := meshDef{services: []svcDef{
		{name: "svc.t.local", node: "joined", port: joined.Port, routes: []string{
			route(1, `{prefix: /, headers: [{name: x-tenant, match: {exact: "guest,admin"}}]}`, "joined"),
			route(2, `{prefix: /}`, "other"),
		}},
		{name: "other.t.local", node: "other", port: other.Port},
	}}.start(t)

	t.Run("http1 two field lines", func(t *testing.T) {
		c := dialRaw(t, srv.EgressAddr())
		c.send(t, "GET / HTTP/1.1\r\nHost: svc.t.local\r\nX-Tenant: guest\r\nx-tenant: admin\r\n\r\n")
		resp, _ := c.read(t, "GET")
		if got := resp.Header.Get("X-Upstream"); got != "joined" {
			t.Fatalf("routed to %q, want joined", got)
		}
		// A single value still routes by its own value.
		c.send(t, "GET / HTTP/1.1\r\nHost: svc.t.local\r\nX-Tenant: guest\r\n\r\n")
		resp, _ = c.read(t, "GET")
		if got := resp.Header.Get("X-Upstream"); got != "other" {
			t.Fatalf("single value routed to %q, want other", got)
		}
	})
	t.Run("h2c two values", func(t *testing.T) {
		req := newReq(t, "GET", "http://svc.t.local/", nil)
		req.Header.Add("X-Tenant", "guest")
		req.Header.Add("X-Tenant", "admin")
		if info := getEcho(t, testutil.H2CClient(t, srv.EgressAddr()), req); info.Name != "joined" {
			t.Fatalf("routed to %q, want joined", info.Name)
		}
	})
}
