package config

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// HeaderManipulation is a meshd extension on httpRoute, http2Route and grpcRoute (App
// Mesh roadmap #206, #392): fields of the request meshd forwards and of the response it
// relays, set (replacing every value), appended (one more value) or removed, in that
// order: remove, then set, then append.
type HeaderManipulation struct {
	Request  *HeaderOps `json:"request,omitempty"`
	Response *HeaderOps `json:"response,omitempty"`
}

// HeaderOps are the changes to one head.
type HeaderOps struct {
	Set    []HeaderValue `json:"set,omitempty"`
	Append []HeaderValue `json:"append,omitempty"`
	Remove []string      `json:"remove,omitempty"`
}

// HeaderValue is a field and its value; the value may hold variables (HeaderVariables).
type HeaderValue struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// HeaderVariables are the %NAME% variables a header value may use, each with what it
// expands to; "%%" is a literal percent sign.
var HeaderVariables = map[string]string{
	"DOWNSTREAM_REMOTE_ADDRESS":              "the client's address and port",
	"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": "the client's address",
	"DOWNSTREAM_PEER_URI_SAN":                "the client's verified SPIFFE ID (mTLS), empty otherwise",
	"ROUTE_NAME":                             "the route's routeName",
	"VIRTUAL_SERVICE":                        "the virtual service the request was routed in",
	"UPSTREAM_CLUSTER":                       "the target (virtual node) the request was sent to",
	"VIRTUAL_NODE":                           "the virtual node this meshd serves",
}

// headerNotManaged are fields a route may not change: the framing and connection
// management meshd itself decides, and the caller identity meshd sets from mTLS.
var headerNotManaged = map[string]string{
	"host":                  "the authority is the request's; rewrite it with a gateway route's rewrite.hostname",
	"content-length":        "framing is meshd's",
	"transfer-encoding":     "framing is meshd's",
	"connection":            "connection management is meshd's",
	"keep-alive":            "connection management is meshd's",
	"proxy-connection":      "connection management is meshd's",
	"te":                    "connection management is meshd's",
	"trailer":               "framing is meshd's",
	"upgrade":               "protocol upgrades are the client's",
	"x-meshd-peer-identity": "meshd sets it from the caller's verified certificate",
}

// HeaderTemplate is a value split into literals and variables.
type HeaderTemplate struct {
	Parts []HeaderPart
}

// HeaderPart is a literal (Var empty) or a variable.
type HeaderPart struct {
	Lit, Var string
}

// Static is the value when it has no variable.
func (t HeaderTemplate) Static() (string, bool) {
	switch len(t.Parts) {
	case 0:
		return "", true
	case 1:
		if t.Parts[0].Var == "" {
			return t.Parts[0].Lit, true
		}
	}
	return "", false
}

// ParseHeaderTemplate splits v at its %NAME% variables; an unknown name, or a lone %, is
// an error naming it.
func ParseHeaderTemplate(v string) (HeaderTemplate, error) {
	var t HeaderTemplate
	var lit strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] != '%' {
			lit.WriteByte(v[i])
			continue
		}
		j := strings.IndexByte(v[i+1:], '%')
		if j < 0 {
			return t, fmt.Errorf("a %% without its closing %% (write %%%% for a literal %%)")
		}
		name := v[i+1 : i+1+j]
		i += j + 1
		if name == "" {
			lit.WriteByte('%')
			continue
		}
		if _, ok := HeaderVariables[name]; !ok {
			return t, fmt.Errorf("unknown variable %%%s%% (known: %s)", name, strings.Join(slices.Sorted(maps.Keys(HeaderVariables)), ", "))
		}
		if lit.Len() > 0 {
			t.Parts = append(t.Parts, HeaderPart{Lit: lit.String()})
			lit.Reset()
		}
		t.Parts = append(t.Parts, HeaderPart{Var: name})
	}
	if lit.Len() > 0 {
		t.Parts = append(t.Parts, HeaderPart{Lit: lit.String()})
	}
	return t, nil
}

// headerManipulation checks a route's header manipulation.
func (v *validator) headerManipulation(path *fpath, h *HeaderManipulation) {
	if h == nil {
		return
	}
	if h.Request == nil && h.Response == nil {
		v.add(path, nil, "give request, response or both")
	}
	for _, so := range []struct {
		side string
		ops  *HeaderOps
	}{{"request", h.Request}, {"response", h.Response}} {
		ops := so.ops
		if ops == nil {
			continue
		}
		sp := path.f("." + so.side)
		if len(ops.Set)+len(ops.Append)+len(ops.Remove) == 0 {
			v.add(sp, nil, "give set, append or remove")
		}
		for _, kl := range []struct {
			kind string
			list []HeaderValue
		}{{"set", ops.Set}, {"append", ops.Append}} {
			for i, hv := range kl.list {
				p := sp.f("." + kl.kind).at(i)
				v.headerName(p.f(".name"), hv.Name)
				if strings.ContainsAny(hv.Value, "\r\n\x00") {
					v.add(p.f(".value"), hv.Value, "a field value cannot hold CR, LF or NUL")
				} else if _, err := ParseHeaderTemplate(hv.Value); err != nil {
					v.add(p.f(".value"), hv.Value, "%v", err)
				}
			}
		}
		for i, n := range ops.Remove {
			v.headerName(sp.f(".remove").at(i), n)
		}
	}
}

func (v *validator) headerName(path *fpath, n string) {
	if n == "" {
		v.add(path, nil, "a field name is required")
		return
	}
	for i := 0; i < len(n); i++ {
		if !isTokenChar(n[i]) {
			v.add(path, n, "not a field name (RFC 9110 token characters only; pseudo-headers cannot be changed)")
			return
		}
	}
	if why, ok := headerNotManaged[strings.ToLower(n)]; ok {
		v.add(path, n, "cannot be changed by a route: %s", why)
	}
}

func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
