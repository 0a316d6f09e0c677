package config

import (
	"fmt"
	"strings"
)

// Bounds of a listener's authorization (extension): a request is judged by scanning
// the rules, so their number is bounded like App Mesh bounds a route's lists.
const (
	maxAuthzRules   = 100
	maxAuthzEntries = 100 // callers, routes, pathPrefixes, methods per rule
)

// AnyCaller in a rule's callers allows every caller with a verified SPIFFE ID.
const AnyCaller = "*"

// NodeSPIFFEID is the SPIFFE ID of a virtual node of mesh, spiffe://<mesh>/<node>, the
// identity `meshd ca issue` writes into its certificate. It fails when the mesh name is
// not a SPIFFE trust domain name or the node name not a path segment.
func NodeSPIFFEID(mesh, node string) (string, error) {
	if !validTrustDomain(mesh) {
		return "", fmt.Errorf("mesh.meshName %q is not a SPIFFE trust domain name (lower case letters, digits, '.', '-', '_'), so its nodes have no SPIFFE ID of that form: list callers by their full SPIFFE IDs", mesh)
	}
	if !validPathSegment(node) {
		return "", fmt.Errorf("virtual node %q is not a SPIFFE ID path segment (letters, digits, '.', '-', '_'): list the caller by its full SPIFFE ID", node)
	}
	return "spiffe://" + mesh + "/" + node, nil
}

// CheckSPIFFEID reports why id is not a SPIFFE ID in the canonical form a verified
// certificate's identity is compared in (the SPIFFE ID standard: spiffe://, a lower-case
// trust domain, path segments of letters, digits, '.', '-' and '_'), or nil.
func CheckSPIFFEID(id string) error {
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if !ok {
		return fmt.Errorf("not a SPIFFE ID: want spiffe://<trust domain>/<path>")
	}
	if len(id) > 2048 {
		return fmt.Errorf("SPIFFE ID longer than 2048 bytes")
	}
	td, path, _ := strings.Cut(rest, "/")
	if !validTrustDomain(td) {
		return fmt.Errorf("trust domain %q: want lower case letters, digits, '.', '-', '_'", td)
	}
	if path == "" {
		if strings.HasSuffix(rest, "/") {
			return fmt.Errorf("SPIFFE ID ends with '/'")
		}
		return nil
	}
	for _, seg := range strings.Split(path, "/") {
		if !validPathSegment(seg) {
			return fmt.Errorf("path segment %q: want letters, digits, '.', '-', '_' (not empty, not '.' or '..')", seg)
		}
	}
	return nil
}

func validTrustDomain(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func validPathSegment(s string) bool {
	if s == "" || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// AuthorizationRoute resolves ref, an entry of an authorization rule's routes on node
// n's listener l: "routeName", or "virtualRouterName/routeName". The route must be an
// httpRoute, http2Route or grpcRoute with a weighted target on l. A bare name must name
// exactly one such route.
func (c *Config) AuthorizationRoute(n *VirtualNode, l *Listener, ref string) (*Route, error) {
	router, name, qualified := strings.Cut(ref, "/")
	if !qualified {
		router, name = "", ref
	}
	if name == "" || (qualified && router == "") {
		return nil, fmt.Errorf("want routeName or virtualRouterName/routeName")
	}
	var found []*Route
	exists := false
	for i := range c.Routes {
		r := &c.Routes[i]
		if r.RouteName != name || (qualified && r.VirtualRouterName != router) {
			continue
		}
		exists = true
		if routeTargets(r, n, l) {
			found = append(found, r)
		}
	}
	port := l.PortMapping.Port
	switch {
	case !exists && qualified:
		return nil, fmt.Errorf("virtual router %q has no route %q", router, name)
	case !exists:
		return nil, fmt.Errorf("no route is called %q", name)
	case len(found) == 0:
		return nil, fmt.Errorf("route %q has no weighted target on virtual node %q port %d: it never leads to this listener", ref, n.VirtualNodeName, port)
	case len(found) > 1:
		routers := make([]string, len(found))
		for i, r := range found {
			routers[i] = r.VirtualRouterName
		}
		return nil, fmt.Errorf("routes of virtual routers %s are called %q and lead to this listener: write virtualRouterName/routeName", strings.Join(routers, ", "), name)
	}
	r := found[0]
	if r.Spec.TCPRoute != nil {
		return nil, fmt.Errorf("route %q is a tcpRoute: authorization narrows HTTP requests only", ref)
	}
	return r, nil
}

// routeTargets reports whether one of r's weighted targets is node n's listener l (a
// target without a port means the node's only listener).
func routeTargets(r *Route, n *VirtualNode, l *Listener) bool {
	var a *RouteAction
	switch s := &r.Spec; {
	case s.HTTPRoute != nil:
		a = &s.HTTPRoute.Action
	case s.HTTP2Route != nil:
		a = &s.HTTP2Route.Action
	case s.GRPCRoute != nil:
		a = &s.GRPCRoute.Action
	case s.TCPRoute != nil:
		a = &s.TCPRoute.Action
	default:
		return false
	}
	for _, t := range a.WeightedTargets {
		if t.VirtualNode != n.VirtualNodeName {
			continue
		}
		if t.Port == l.PortMapping.Port || (t.Port == 0 && len(n.Spec.Listeners) == 1) {
			return true
		}
	}
	return false
}

// authorization checks a listener's authorization extension. A policy needs mutual
// TLS on its listener: without a verified client certificate no caller has an
// identity, and the policy would deny every request, so such a config is refused
// rather than served as an outage.
func (v *validator) authorization(path *fpath, n *VirtualNode, l *Listener) {
	a := l.Authorization
	switch t := l.TLS; {
	case t == nil:
		v.add(path, nil, "needs mutual TLS on this listener (tls with mode STRICT or PERMISSIVE and a validation block), and the listener has no tls: without a verified client certificate no caller has an identity, and every request would be denied")
	case t.Mode != "STRICT" && t.Mode != "PERMISSIVE":
		v.add(path, nil, "needs mutual TLS on this listener (tls.mode STRICT or PERMISSIVE, and tls.validation), and tls.mode is %q: without a verified client certificate no caller has an identity, and every request would be denied", t.Mode)
	case t.Validation == nil:
		v.add(path, nil, "needs mutual TLS on this listener, and tls has no validation block: callers are asked for no certificate, so none has an identity and every request would be denied; add tls.validation.trust (the CA that signs your callers' certificates)")
	}
	ap := path.f(".allow")
	switch {
	case len(a.Allow) == 0:
		v.add(ap, nil, "needs at least one rule (a request that no rule allows is denied)")
	case len(a.Allow) > maxAuthzRules:
		v.add(ap, len(a.Allow), "at most %d rules", maxAuthzRules)
	}
	tcp := l.PortMapping.Protocol == ProtoTCP
	for i := range a.Allow {
		r := &a.Allow[i]
		rp := ap.at(i)
		v.authzCallers(rp.f(".callers"), r.Callers)
		for _, f := range []struct {
			name string
			n    int
		}{{"routes", len(r.Routes)}, {"pathPrefixes", len(r.PathPrefixes)}, {"methods", len(r.Methods)}} {
			if f.n > maxAuthzEntries {
				v.add(rp.f("."+f.name), f.n, "at most %d entries", maxAuthzEntries)
			}
			if f.n > 0 && tcp {
				v.add(rp.f("."+f.name), nil, "applies to http, http2 and grpc listeners, not %q: a tcp connection is allowed or denied by its caller alone", l.PortMapping.Protocol)
			}
		}
		if tcp {
			continue
		}
		for j, ref := range r.Routes {
			if _, err := v.c.AuthorizationRoute(n, l, ref); err != nil {
				v.add(rp.f(".routes").at(j), ref, "%v", err)
			}
		}
		for j, p := range r.PathPrefixes {
			pp := rp.f(".pathPrefixes").at(j)
			switch {
			case !strings.HasPrefix(p, "/"):
				v.add(pp, p, "must start with \"/\"")
			case !NormalPath(p):
				v.add(pp, p, "must not contain \".\" or \"..\" segments or percent-encoded '.', '/' or '\\'")
			}
		}
		for j, m := range r.Methods {
			v.enum(rp.f(".methods").at(j), m, httpMethods...)
		}
	}
}

// authzCallers checks a rule's callers: each "*" (alone), a SPIFFE ID, or the name of a
// virtual node of this config, which must have a SPIFFE ID (a mesh name that is a trust
// domain, a node name that is a path segment).
func (v *validator) authzCallers(path *fpath, callers []string) {
	switch {
	case len(callers) == 0:
		v.add(path, nil, "needs at least one caller: a virtual node name, a SPIFFE ID, or \"*\" for any caller with a verified identity")
		return
	case len(callers) > maxAuthzEntries:
		v.add(path, len(callers), "at most %d entries", maxAuthzEntries)
	}
	seen := map[string]bool{}
	for i, c := range callers {
		cp := path.at(i)
		if seen[c] {
			v.add(cp, c, "listed twice")
			continue
		}
		seen[c] = true
		switch {
		case c == AnyCaller:
			if len(callers) > 1 {
				v.add(cp, c, "\"*\" allows every caller with a verified identity: list it alone")
			}
		case strings.Contains(c, "://"):
			if err := CheckSPIFFEID(c); err != nil {
				v.add(cp, c, "%v", err)
			}
		case c == "":
			v.add(cp, nil, "is empty")
		case v.nodes[c] == nil:
			v.add(cp, c, "virtual node %q is not defined; to allow an identity that is not a virtual node of this config, write its SPIFFE ID (spiffe://...)", c)
		default:
			if _, err := NodeSPIFFEID(v.c.Mesh.MeshName, c); err != nil {
				v.add(cp, c, "%v", err)
			}
		}
	}
}

// NormalPath reports whether an absolute request path (without the query) is in the
// form a prefix comparison can be trusted on: no "." or ".." segment, and no
// percent-encoded '.', '/' or '\' that the application may decode into one, nor a '\'
// that it may read as '/'. Authorization compares prefixes only on such paths, so that
// "/public/../admin" is not taken for a path under "/public/".
func NormalPath(p string) bool {
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '\\':
			return false
		case '%':
			if i+2 < len(p) {
				switch p[i+1 : i+3] {
				case "2e", "2E", "2f", "2F", "5c", "5C":
					return false
				}
			}
		case '.':
			// A segment of "." or "..": bounded by '/' (or the ends) on both sides.
			if (i == 0 || p[i-1] == '/') && (i+1 == len(p) || p[i+1] == '/' ||
				(p[i+1] == '.' && (i+2 == len(p) || p[i+2] == '/'))) {
				return false
			}
		}
	}
	return true
}
