package router

import (
	"strings"
	"testing"
)

// multiHeaders is a getter over name/value pairs that can repeat, as a parsed request
// head is; it implements HeaderJoiner the way the proxy's getters do.
type multiHeaders []string

func (h multiHeaders) Get(name string) (string, bool) { return headers(h).Get(name) }

func (h multiHeaders) GetJoined(name string) (string, bool) {
	var vals []string
	for i := 0; i+1 < len(h); i += 2 {
		if strings.EqualFold(h[i], name) {
			vals = append(vals, h[i+1])
		}
	}
	return strings.Join(vals, ","), len(vals) > 0
}

// TestMatchRepeatedHeader: a header condition sees every value of a repeated header,
// joined with "," as Envoy does (RFC 9110 §5.3 lets a recipient combine field lines
// that way), not just the first field line.
func TestMatchRepeatedHeader(t *testing.T) {
	h := func(kv ...string) Request { return Request{Path: "/", Header: multiHeaders(kv)} }
	runMatch(t, []string{
		httpRoute("exact-joined", `{"prefix": "/", "headers": [{"name": "x-pair", "match": {"exact": "a,b"}}]}`),
		httpRoute("suffix-second", `{"prefix": "/", "headers": [{"name": "x-tenant", "match": {"suffix": "admin"}}]}`),
		httpRoute("not-blue", `{"prefix": "/", "headers": [{"name": "x-color", "invert": true, "match": {"exact": "blue"}}]}`),
		httpRoute("fallback", `{"prefix": "/"}`),
	}, []matchCase{
		{"two field lines joined", h("x-pair", "a", "X-Pair", "b", "x-color", "blue"), "exact-joined"},
		{"single line holding the joined value", h("x-pair", "a,b", "x-color", "blue"), "exact-joined"},
		{"first value alone does not match", h("x-pair", "a", "x-color", "blue"), "fallback"},
		{"condition on a later value", h("x-tenant", "guest", "x-tenant", "admin", "x-color", "blue"), "suffix-second"},
		{"invert sees all values", h("x-color", "blue", "x-color", "red"), "not-blue"},
		{"plain getter keeps first-value semantics", Request{Path: "/", Header: headers{"x-pair", "a", "x-pair", "b", "x-color", "blue"}}, "fallback"},
	})
}
