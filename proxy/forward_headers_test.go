package proxy_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/meshd/meshd/internal/testutil"
)

// forwardedHeaders sends raw (a request head for echo.t.local) on listener addr and
// returns the header the echo upstream received.
func forwardedHeaders(t *testing.T, addr, raw string) http.Header {
	t.Helper()
	c := dialRaw(t, addr)
	c.send(t, raw)
	resp, body := c.read(t, "GET")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	var info echoInfo
	if err := json.Unmarshal([]byte(body), &info); err != nil {
		t.Fatal(err)
	}
	return info.Header
}

// TestXForwardedForRepeated: repeated X-Forwarded-For fields are merged into one and the
// client address appended once, last, on both forwarding paths (review finding 4): a
// client must not be able to make a spoofed address the rightmost entry.
func TestXForwardedForRepeated(t *testing.T) {
	h1up := testutil.StartHTTP(t, echoHandler("echo"))
	h2up := testutil.StartH2C(t, echoHandler("echo2"))
	srv, _ := meshDef{services: []svcDef{
		{name: "echo.t.local", node: "echo", port: h1up.Port},
		{name: "echo2.t.local", node: "echo2", port: h2up.Port, proto: "http2"},
	}}.start(t)
	for _, tc := range []struct{ name, host, xff, want string }{
		{"h1 two fields", "echo.t.local", "X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 6.6.6.6\r\n", "10.0.0.1, 6.6.6.6, 127.0.0.1"},
		{"h1 three fields", "echo.t.local", "X-Forwarded-For: 10.0.0.1, 10.0.0.2\r\nX-Other: 1\r\nx-forwarded-for: 6.6.6.6\r\nX-Forwarded-For: 7.7.7.7\r\n", "10.0.0.1, 10.0.0.2, 6.6.6.6, 7.7.7.7, 127.0.0.1"},
		{"h1 one field", "echo.t.local", "X-Forwarded-For: 10.0.0.1\r\n", "10.0.0.1, 127.0.0.1"},
		{"h1 none", "echo.t.local", "", "127.0.0.1"},
		{"h2 upstream two fields", "echo2.t.local", "X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 6.6.6.6\r\n", "10.0.0.1, 6.6.6.6, 127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := forwardedHeaders(t, srv.EgressAddr(), "GET / HTTP/1.1\r\nHost: "+tc.host+"\r\n"+tc.xff+"\r\n")
			got := h.Values("X-Forwarded-For")
			if len(got) != 1 || got[0] != tc.want {
				t.Fatalf("X-Forwarded-For fields = %q, want one field %q", got, tc.want)
			}
			if h.Get("X-Other") == "" && strings.Contains(tc.xff, "X-Other") {
				t.Fatal("a field between the X-Forwarded-For fields was lost")
			}
		})
	}
}
