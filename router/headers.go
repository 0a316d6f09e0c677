package router

import (
	"strings"

	"github.com/meshd/meshd/config"
)

// HeaderRules are a route's compiled header manipulation (config.HeaderManipulation):
// names lower-cased for matching, values split into literals and variables once.
type HeaderRules struct {
	ReqRemove, RespRemove []string // lower case
	ReqSet, ReqAppend     []HeaderRule
	RespSet, RespAppend   []HeaderRule
	// Vars: some value has a variable (without one, no per-request variables are built).
	Vars bool
}

// HeaderRule is one field to set or append.
type HeaderRule struct {
	Name, Lower string
	static      string
	isStatic    bool
	tmpl        config.HeaderTemplate
	// gateway: a gateway route's rule, whose %ROUTE_NAME% is the gateway route's name.
	gateway bool
}

// HeaderVars are what a rule's variables expand to for one request.
type HeaderVars struct {
	Remote, PeerSAN, Route, Service, Cluster, Node string
	// GatewayRoute is the gateway route's name on a gateway ("" elsewhere).
	GatewayRoute string
}

// Value is the rule's value for a request: a value without variables costs nothing.
func (r *HeaderRule) Value(v *HeaderVars) string {
	if r.isStatic {
		return r.static
	}
	var b strings.Builder
	for _, p := range r.tmpl.Parts {
		if p.Var == "" {
			b.WriteString(p.Lit)
			continue
		}
		switch p.Var {
		case "DOWNSTREAM_REMOTE_ADDRESS":
			b.WriteString(v.Remote)
		case "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT":
			host := v.Remote
			if i := strings.LastIndexByte(host, ':'); i >= 0 {
				host = host[:i]
			}
			b.WriteString(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
		case "DOWNSTREAM_PEER_URI_SAN":
			b.WriteString(v.PeerSAN)
		case "ROUTE_NAME":
			if r.gateway {
				b.WriteString(v.GatewayRoute)
			} else {
				b.WriteString(v.Route)
			}
		case "VIRTUAL_SERVICE":
			b.WriteString(v.Service)
		case "UPSTREAM_CLUSTER":
			b.WriteString(v.Cluster)
		case "VIRTUAL_NODE":
			b.WriteString(v.Node)
		}
	}
	return b.String()
}

// compileHeaderRules compiles a route's rules; gateway for a gateway route's.
func compileHeaderRules(h *config.HeaderManipulation, gateway bool) *HeaderRules {
	if h == nil {
		return nil
	}
	out := &HeaderRules{}
	rules := func(list []config.HeaderValue) []HeaderRule {
		var rs []HeaderRule
		for _, hv := range list {
			t, _ := config.ParseHeaderTemplate(hv.Value) // validated
			r := HeaderRule{Name: hv.Name, Lower: strings.ToLower(hv.Name), tmpl: t, gateway: gateway}
			r.static, r.isStatic = t.Static()
			rs = append(rs, r)
		}
		return rs
	}
	lower := func(names []string) []string {
		out := make([]string, len(names))
		for i, n := range names {
			out[i] = strings.ToLower(n)
		}
		return out
	}
	if r := h.Request; r != nil {
		out.ReqRemove, out.ReqSet, out.ReqAppend = lower(r.Remove), rules(r.Set), rules(r.Append)
	}
	if r := h.Response; r != nil {
		out.RespRemove, out.RespSet, out.RespAppend = lower(r.Remove), rules(r.Set), rules(r.Append)
	}
	for _, list := range [][]HeaderRule{out.ReqSet, out.ReqAppend, out.RespSet, out.RespAppend} {
		for i := range list {
			out.Vars = out.Vars || !list[i].isStatic
		}
	}
	return out
}
