package router

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/meshd/meshd/config"
)

// Gateway is one virtual gateway's compiled gateway routes: what a request arriving on
// one of its listeners is matched against before it is handed to the target virtual
// service's own routing (an egress Service of the gateway's table). Immutable after
// CompileGateway.
type Gateway struct {
	Name string
	// Listeners are the gateway's listeners by port: protocol and health check path.
	Listeners map[int]*GatewayListener
	// Routes are in match order (docs/gateway.md#order).
	Routes []*GatewayRoute
}

// GatewayListener is one listener of a gateway.
type GatewayListener struct {
	Port     int
	Protocol string // http | http2 | grpc
	// HealthPath is the path meshd answers itself on this listener (healthCheck.path of
	// an http or http2 health check); "" when none.
	HealthPath string
	// GRPCHealth: meshd answers grpc.health.v1.Health/Check itself on this listener (a
	// grpc health check).
	GRPCHealth bool
}

// GatewayRoute is one compiled gateway route. Its exported fields are read-only.
type GatewayRoute struct {
	Name     string
	Kind     string // http | http2 | grpc: the listener protocol it applies to
	Priority int    // -1: none
	// Service is the target virtual service; Port its listener port (0: the service's
	// only one).
	Service string
	Port    int

	m         matcher
	hostExact string // lower case; "" = any
	hostSuf   string // lower case; "" = any

	prefix      string // the match prefix (for the prefix rewrite)
	rewriteMode rewriteMode
	rewriteTo   string // the prefix value or the exact path
	// HostRewrite: Host/:authority becomes the target service's name
	// (defaultTargetHostname ENABLED, App Mesh's default).
	HostRewrite bool
	// Headers are the gateway route's own header rules (the headers extension); nil
	// when it has none.
	Headers *HeaderRules
	// Index is the route's position in Gateway.Routes, so that per-route state of a
	// snapshot (its statistics) is a slice index, not a lookup by name per request.
	Index int
}

type rewriteMode uint8

const (
	rewriteNone          rewriteMode = iota
	rewriteDefaultPrefix             // the matched prefix becomes "/"
	rewritePrefixValue               // the matched prefix becomes rewriteTo
	rewritePathExact                 // the path becomes rewriteTo
)

// CompileGateway compiles the gateway routes of the virtual gateway named name. cfg
// should have passed config.Validate; errors name the gateway route and field.
func CompileGateway(cfg *config.Config, name string) (*Gateway, error) {
	var gw *config.VirtualGateway
	for i := range cfg.VirtualGateways {
		if cfg.VirtualGateways[i].VirtualGatewayName == name {
			gw = &cfg.VirtualGateways[i]
		}
	}
	if gw == nil {
		return nil, fmt.Errorf("router: virtualGateway %q: %w: not defined in mesh %q", name, ErrUnknownReference, cfg.Mesh.MeshName)
	}
	g := &Gateway{Name: name, Listeners: map[int]*GatewayListener{}}
	for _, l := range gw.Spec.Listeners {
		gl := &GatewayListener{Port: l.PortMapping.Port, Protocol: l.PortMapping.Protocol}
		if hc := l.HealthCheck; hc != nil {
			switch hc.Protocol {
			case config.ProtoHTTP, config.ProtoHTTP2:
				gl.HealthPath = hc.Path
				if gl.HealthPath == "" {
					gl.HealthPath = "/"
				}
			case config.ProtoGRPC:
				gl.GRPCHealth = true
			}
		}
		g.Listeners[gl.Port] = gl
	}
	for i := range cfg.GatewayRoutes {
		gr := &cfg.GatewayRoutes[i]
		if gr.VirtualGatewayName != name {
			continue
		}
		field := fmt.Sprintf("gatewayRoutes[%d].spec", i)
		rt, err := compileGatewayRoute(gr, field)
		if err != nil {
			return nil, fmt.Errorf("router: virtualGateway %q: gateway route %q: %w", name, gr.GatewayRouteName, err)
		}
		g.Routes = append(g.Routes, rt)
	}
	slices.SortStableFunc(g.Routes, compareGatewayRoutes)
	for i, rt := range g.Routes {
		rt.Index = i
	}
	return g, nil
}

// compareGatewayRoutes orders gateway routes: by priority (0 first), routes without one
// after every route with one; within the same priority, the more specific match first
// (an exact hostname before a suffix, a longer suffix first; an exact path, then a
// regex, then the longer prefix), then config order (the stable sort).
func compareGatewayRoutes(a, b *GatewayRoute) int {
	pa, pb := a.Priority, b.Priority
	if pa < 0 {
		pa = 1 << 30
	}
	if pb < 0 {
		pb = 1 << 30
	}
	if c := cmp.Compare(pa, pb); c != 0 {
		return c
	}
	if c := cmp.Compare(b.hostRank(), a.hostRank()); c != 0 {
		return c
	}
	return cmp.Compare(b.pathRank(), a.pathRank())
}

func (r *GatewayRoute) hostRank() int {
	switch {
	case r.hostExact != "":
		return 1 << 20
	case r.hostSuf != "":
		return len(r.hostSuf)
	}
	return 0
}

func (r *GatewayRoute) pathRank() int {
	switch r.m.pathKind {
	case pathExact:
		return 1 << 21
	case pathRegex:
		return 1 << 20
	case pathPrefix:
		return len(r.m.path)
	}
	return 0
}

func compileGatewayRoute(gr *config.GatewayRoute, field string) (*GatewayRoute, error) {
	s := &gr.Spec
	rt := &GatewayRoute{Name: gr.GatewayRouteName, Priority: -1, HostRewrite: true}
	if s.Priority != nil {
		rt.Priority = *s.Priority
	}
	var host *config.HostnameMatch
	switch {
	case s.HTTPRoute != nil || s.HTTP2Route != nil:
		h, kind, f := s.HTTPRoute, config.ProtoHTTP, field+".httpRoute"
		if h == nil {
			h, kind, f = s.HTTP2Route, config.ProtoHTTP2, field+".http2Route"
		}
		rt.Kind = kind
		m := &h.Match
		mm, err := compileHTTPMatch(&config.HTTPRouteMatch{Prefix: m.Prefix, Path: m.Path, Headers: m.Headers,
			Method: m.Method, QueryParameters: m.QueryParameters, Port: m.Port}, f)
		if err != nil {
			return nil, err
		}
		rt.m = mm
		rt.m.kind = kindHTTP
		host = m.Hostname
		rt.Service, rt.Port = h.Action.Target.VirtualService.VirtualServiceName, h.Action.Target.Port
		if err := rt.compileRewrite(h, f+".action.rewrite"); err != nil {
			return nil, err
		}
		rt.Headers = compileHeaderRules(h.Headers, true)
	case s.GRPCRoute != nil:
		g, f := s.GRPCRoute, field+".grpcRoute"
		rt.Kind = config.ProtoGRPC
		mm, err := compileGRPCMatch(&config.GRPCRouteMatch{ServiceName: g.Match.ServiceName, Metadata: g.Match.Metadata,
			Port: g.Match.Port}, f)
		if err != nil {
			return nil, err
		}
		rt.m = mm
		host = g.Match.Hostname
		rt.Service, rt.Port = g.Action.Target.VirtualService.VirtualServiceName, g.Action.Target.Port
		if rw := g.Action.Rewrite; rw != nil && rw.DefaultTargetHostname == "DISABLED" {
			rt.HostRewrite = false
		}
		rt.Headers = compileHeaderRules(g.Headers, true)
	default:
		return nil, fmt.Errorf("%s: set one of httpRoute, http2Route, grpcRoute", field)
	}
	if host != nil {
		rt.hostExact = strings.ToLower(strings.TrimSuffix(host.Exact, "."))
		rt.hostSuf = strings.ToLower(host.Suffix)
	}
	return rt, nil
}

// compileRewrite decides how an HTTP gateway route rewrites the path (App Mesh's
// rules): a prefix match rewrites the matched prefix to "/" unless defaultPrefix is
// DISABLED or a value replaces it; a path match keeps the path unless rewrite.path.exact
// replaces it. A prefix rewrite on a path match, or a path rewrite on a prefix match, is
// refused: App Mesh refuses them too, and meshd never keeps a field it does not honour.
func (rt *GatewayRoute) compileRewrite(h *config.GatewayHTTPRoute, field string) error {
	rw := h.Action.Rewrite
	prefixMatch := h.Match.Path == nil
	if prefixMatch {
		rt.prefix = h.Match.Prefix
		if rt.prefix == "" {
			rt.prefix = "/"
		}
		rt.rewriteMode = rewriteDefaultPrefix
	}
	if rw == nil {
		return nil
	}
	if rw.Hostname != nil && rw.Hostname.DefaultTargetHostname == "DISABLED" {
		rt.HostRewrite = false
	}
	if p := rw.Prefix; p != nil {
		if !prefixMatch || h.Match.Prefix == "" {
			return fmt.Errorf("%s.prefix: a prefix rewrite needs a match.prefix", field)
		}
		switch {
		case p.Value != "" && p.DefaultPrefix == "DISABLED":
			return fmt.Errorf("%s.prefix: value %q and defaultPrefix DISABLED: set one", field, p.Value)
		case p.Value != "":
			rt.rewriteMode, rt.rewriteTo = rewritePrefixValue, p.Value
		case p.DefaultPrefix == "DISABLED":
			rt.rewriteMode = rewriteNone
		}
	}
	if p := rw.Path; p != nil {
		if prefixMatch {
			return fmt.Errorf("%s.path.exact %q: a path rewrite needs a match.path", field, p.Exact)
		}
		rt.rewriteMode, rt.rewriteTo = rewritePathExact, p.Exact
	}
	return nil
}

// Match returns the first gateway route that takes r, which arrived on the gateway's
// listener port, or nil. r.Port must be port. Routes of another listener protocol are
// skipped (an httpRoute serves http listeners, an http2Route http2, a grpcRoute grpc).
func (g *Gateway) Match(port int, r *Request) *GatewayRoute {
	l := g.Listeners[port]
	if l == nil {
		return nil
	}
	path, query := splitQuery(r.Path)
	host := r.Authority
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		host = host[:i]
	}
	host = strings.TrimSuffix(host, ".")
	for _, rt := range g.Routes {
		if rt.Kind != l.Protocol {
			continue
		}
		if rt.hostExact != "" && !strings.EqualFold(host, rt.hostExact) {
			continue
		}
		if rt.hostSuf != "" && !hasSuffixFold(host, rt.hostSuf) {
			continue
		}
		if rt.m.match(r, path, query) {
			return rt
		}
	}
	return nil
}

func hasSuffixFold(s, lowerSuffix string) bool {
	return len(s) >= len(lowerSuffix) && strings.EqualFold(s[len(s)-len(lowerSuffix):], lowerSuffix)
}

// RewritePath returns the origin-form target the upstream gets for target (path and
// query) under rt's rewrite, and whether it differs. The query is kept.
//
//	match prefix /red, default    /red/tell → /tell   /red → /
//	match prefix /red/, default   /red/tell → /tell
//	match prefix /maroon/, value /red/   /maroon/tell → /red/tell
//	defaultPrefix DISABLED, or a path match without rewrite: unchanged
//	match path, rewrite.path.exact /x    anything → /x
func (rt *GatewayRoute) RewritePath(target string) (string, bool) {
	path, query := splitQuery(target)
	var out string
	switch rt.rewriteMode {
	case rewriteDefaultPrefix:
		if rt.prefix == "/" {
			return target, false
		}
		rest := strings.TrimPrefix(path, rt.prefix)
		if !strings.HasPrefix(rest, "/") {
			rest = "/" + rest
		}
		out = rest
	case rewritePrefixValue:
		rest := strings.TrimPrefix(path, rt.prefix)
		if strings.HasSuffix(rt.rewriteTo, "/") && strings.HasPrefix(rest, "/") {
			rest = rest[1:]
		}
		out = rt.rewriteTo + rest
	case rewritePathExact:
		out = rt.rewriteTo
	default:
		return target, false
	}
	if query != "" || strings.HasSuffix(target, "?") {
		out += "?" + query
	}
	return out, out != target
}
