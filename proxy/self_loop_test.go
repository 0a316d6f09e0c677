package proxy_test

import (
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// TestPassthroughLoopByName: with ALLOW_ALL, a destination that is meshd itself under a
// name the literal check does not recognise ("LocalHost", which the hosts file resolves
// case-insensitively to 127.0.0.1) is refused when the dial resolves it to one of
// meshd's own listener addresses, and answered 508 loop_detected instead of relaying
// into itself hop after hop.
func TestPassthroughLoopByName(t *testing.T) {
	srv, client := meshDef{egress: "ALLOW_ALL"}.start(t)
	h2c := testutil.H2CClient(t, srv.EgressAddr())
	for _, listener := range []string{srv.EgressAddr(), srv.IngressAddr()} {
		_, port, _ := net.SplitHostPort(listener)
		for _, host := range []string{"LocalHost:" + port} {
			for name, c := range map[string]*http.Client{"http1": client, "h2c": h2c} {
				t.Run(name+" "+host, func(t *testing.T) {
					resp, err := c.Get("http://" + host + "/")
					if err != nil {
						t.Fatal(err)
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 508 || resp.Header.Get(proxy.HeaderError) != "loop_detected" {
						t.Fatalf("status %d %s=%q: %s, want 508 loop_detected", resp.StatusCode, proxy.HeaderError, resp.Header.Get(proxy.HeaderError), body)
					}
				})
			}
		}
	}
}
