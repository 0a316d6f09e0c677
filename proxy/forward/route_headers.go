package forward

import (
	"net/http"

	"github.com/meshd/meshd/internal/h1"
	"github.com/meshd/meshd/router"
)

// Route header manipulation (router.HeaderRules, the headers extension): after the
// forwarding rules, the request's fields are removed, set and appended; the response's
// before it is written to the client. A route without rules costs a nil check.

// RouteRules are the header rules a request passes through: on a gateway, its gateway
// route's first, then the target route's; its response passes them in the reverse
// order (the target route's, then the gateway route's), as the heads travel.
type RouteRules struct {
	Gateway, Route *router.HeaderRules
}

// Rules are the decision's header rules.
func (d *Decision) Rules() RouteRules {
	var r RouteRules
	if d.Route != nil {
		r.Route = d.Route.Headers
	}
	if d.Gateway != nil {
		r.Gateway = d.Gateway.Headers
	}
	return r
}

// Any reports whether there is a rule to apply.
func (r RouteRules) Any() bool { return r.Gateway != nil || r.Route != nil }

// Vars reports whether some rule's value has a variable (RouteVars is needed).
func (r RouteRules) Vars() bool {
	return (r.Gateway != nil && r.Gateway.Vars) || (r.Route != nil && r.Route.Vars)
}

// order is the rule sets in the order one side's head passes them.
func (r RouteRules) order(request bool) [2]*router.HeaderRules {
	if request {
		return [2]*router.HeaderRules{r.Gateway, r.Route}
	}
	return [2]*router.HeaderRules{r.Route, r.Gateway}
}

// RouteVars are the variables of a request's rules: computed only when a rule has one
// (a route whose values are all literal allocates nothing).
func RouteVars(d *Decision, remote, peer, node string) router.HeaderVars {
	v := router.HeaderVars{Remote: remote, PeerSAN: peer, Node: node}
	if d.Gateway != nil {
		v.GatewayRoute = d.Gateway.Name
	}
	if d.Route != nil {
		v.Route = d.Route.Name
		v.Service = d.Route.Service
	}
	if d.Cluster != nil {
		v.Cluster = d.Cluster.Name()
	}
	return v
}

// ApplyRoute applies the request rules to an HTTP/1.1 request whose forwarding fields
// Apply added to Extra.
func (c *H1Forwarding) ApplyRoute(req *h1.Request, rs RouteRules, v *router.HeaderVars) {
	for _, r := range rs.order(true) {
		if r != nil {
			c.applyRoute(req, r, v)
		}
	}
}

func (c *H1Forwarding) applyRoute(req *h1.Request, r *router.HeaderRules, v *router.HeaderVars) {
	for _, n := range r.ReqRemove {
		req.Headers = DeleteHeader(req.Headers, n)
		c.Extra = DeleteHeader(c.Extra, n)
	}
	for i := range r.ReqSet {
		req.Headers = DeleteHeader(req.Headers, r.ReqSet[i].Lower)
		c.Extra = DeleteHeader(c.Extra, r.ReqSet[i].Lower)
	}
	for i := range r.ReqSet {
		c.Extra = append(c.Extra, h1.Header{Name: r.ReqSet[i].Name, Value: r.ReqSet[i].Value(v)})
	}
	for i := range r.ReqAppend {
		c.Extra = append(c.Extra, h1.Header{Name: r.ReqAppend[i].Name, Value: r.ReqAppend[i].Value(v)})
	}
}

// ApplyRouteResponse applies the response rules to an HTTP/1.1 response head: removed
// and set fields leave resp.Headers (and what an earlier rule set added to extra); set
// and appended ones go to extra, which it returns for the head's writer.
func ApplyRouteResponse(resp *h1.Response, extra []h1.Header, rs RouteRules, v *router.HeaderVars) []h1.Header {
	for _, r := range rs.order(false) {
		if r != nil {
			extra = applyRouteResponse(resp, extra, r, v)
		}
	}
	return extra
}

func applyRouteResponse(resp *h1.Response, extra []h1.Header, r *router.HeaderRules, v *router.HeaderVars) []h1.Header {
	for _, n := range r.RespRemove {
		resp.Headers = DeleteHeader(resp.Headers, n)
		extra = DeleteHeader(extra, n)
	}
	for i := range r.RespSet {
		resp.Headers = DeleteHeader(resp.Headers, r.RespSet[i].Lower)
		extra = DeleteHeader(extra, r.RespSet[i].Lower)
	}
	for i := range r.RespSet {
		extra = append(extra, h1.Header{Name: r.RespSet[i].Name, Value: r.RespSet[i].Value(v)})
	}
	for i := range r.RespAppend {
		extra = append(extra, h1.Header{Name: r.RespAppend[i].Name, Value: r.RespAppend[i].Value(v)})
	}
	return extra
}

// ApplyRouteHTTP applies one side's rules to a net/http-shaped head (the HTTP/2 front
// end, the bridge to HTTP/2 upstreams): request true for the request's rules.
func ApplyRouteHTTP(h http.Header, rs RouteRules, v *router.HeaderVars, request bool) {
	for _, r := range rs.order(request) {
		if r != nil {
			applyRouteHTTP(h, r, v, request)
		}
	}
}

func applyRouteHTTP(h http.Header, r *router.HeaderRules, v *router.HeaderVars, request bool) {
	remove, set, add := r.RespRemove, r.RespSet, r.RespAppend
	if request {
		remove, set, add = r.ReqRemove, r.ReqSet, r.ReqAppend
	}
	for _, n := range remove {
		h.Del(n)
	}
	for i := range set {
		h.Del(set[i].Name)
	}
	for i := range set {
		h.Add(set[i].Name, set[i].Value(v))
	}
	for i := range add {
		h.Add(add[i].Name, add[i].Value(v))
	}
}
