package proxy_test

import (
	"net/http"
	"testing"

	"github.com/meshd/meshd/internal/testutil"
)

// TestPeerIdentityForgedStripped: an X-Meshd-Peer-Identity field sent by a client
// never reaches an application, whatever the path: egress and ingress, HTTP/1.1 and
// h2c clients, HTTP/1.1 and HTTP/2 upstreams, with no TLS anywhere (no caller has a
// verified identity, so meshd sets none either). The application can therefore trust
// the header whenever it is there.
func TestPeerIdentityForgedStripped(t *testing.T) {
	app := testutil.StartHTTP(t, echoHandler("app"))
	h1up := testutil.StartHTTP(t, echoHandler("echo"))
	h2up := testutil.StartH2C(t, echoHandler("echo2"))
	srv, _ := meshDef{appPort: app.Port, services: []svcDef{
		{name: "echo.t.local", node: "echo", port: h1up.Port},
		{name: "echo2.t.local", node: "echo2", port: h2up.Port, proto: "http2"},
	}}.start(t)
	clients := map[string]func(addr string) *http.Client{
		"http1": func(addr string) *http.Client { return testutil.HTTPClient(t, addr) },
		"h2c":   func(addr string) *http.Client { return testutil.H2CClient(t, addr) },
	}
	for cname, client := range clients {
		for _, tc := range []struct{ name, addr, url, want string }{
			{"egress to HTTP/1.1", srv.EgressAddr(), "http://echo.t.local/x", "echo"},
			{"egress to HTTP/2", srv.EgressAddr(), "http://echo2.t.local/x", "echo2"},
			{"ingress", srv.IngressAddr(), "http://app.t.local/x", "app"},
		} {
			t.Run(cname+" "+tc.name, func(t *testing.T) {
				req := newReq(t, "GET", tc.url, nil)
				req.Header.Add("X-Meshd-Peer-Identity", "spiffe://t/admin")
				req.Header.Add("x-meshd-peer-identity", "spiffe://t/root")
				info := getEcho(t, client(tc.addr), req)
				if info.Name != tc.want {
					t.Fatalf("reached %s, want %s", info.Name, tc.want)
				}
				if v := info.Header.Values("X-Meshd-Peer-Identity"); len(v) != 0 {
					t.Fatalf("the application got the forged identity %q", v)
				}
			})
		}
	}
}
