package forward

import "testing"

// TestShadowHost: Envoy's rule, "-shadow" after the host and before any port.
func TestShadowHost(t *testing.T) {
	for in, want := range map[string]string{
		"orders.local":      "orders.local-shadow",
		"orders.local:8080": "orders.local-shadow:8080",
		"10.0.0.1:80":       "10.0.0.1-shadow:80",
		"[::1]:80":          "[::1]-shadow:80",
		"[::1]":             "[::1]-shadow",
		"":                  "-shadow",
	} {
		if got := ShadowHost(in); got != want {
			t.Errorf("ShadowHost(%q) = %q, want %q", in, got, want)
		}
	}
}
