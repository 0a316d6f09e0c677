package forward

import (
	"net/http"

	"github.com/meshd/meshd/internal/h1"
	"github.com/meshd/meshd/router"
)

// Route header manipulation (router.HeaderRules, the headers extension): after the
// forwarding rules, the request's fields are removed, set and appended; the response's
// before it is written to the client. A route without rules costs a nil check.

// RouteVars are the variables of a request's rules: computed only when a rule has one
// (a route whose values are all literal allocates nothing).
func RouteVars(d *Decision, remote, peer, node string) router.HeaderVars {
	v := router.HeaderVars{Remote: remote, PeerSAN: peer, Node: node}
	if d.Route != nil {
		v.Route = d.Route.Name
		v.Service = d.Route.Service
	}
	if d.Cluster != nil {
		v.Cluster = d.Cluster.Name()
	}
	return v
}

// ApplyRoute applies the route's request rules to an HTTP/1.1 request whose forwarding
// fields Apply added to Extra.
func (c *H1Forwarding) ApplyRoute(req *h1.Request, r *router.HeaderRules, v *router.HeaderVars) {
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

// ApplyRouteResponse applies the route's response rules to an HTTP/1.1 response head:
// removed and set fields leave resp.Headers; set and appended ones go to extra, which it
// returns for the head's writer.
func ApplyRouteResponse(resp *h1.Response, extra []h1.Header, r *router.HeaderRules, v *router.HeaderVars) []h1.Header {
	for _, n := range r.RespRemove {
		resp.Headers = DeleteHeader(resp.Headers, n)
	}
	for i := range r.RespSet {
		resp.Headers = DeleteHeader(resp.Headers, r.RespSet[i].Lower)
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
func ApplyRouteHTTP(h http.Header, r *router.HeaderRules, v *router.HeaderVars, request bool) {
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
