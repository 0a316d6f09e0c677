package state

import (
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/resilience"
	"github.com/meshd/meshd/router"
)

// ListenerAuthz is the compiled authorization policy (the listener's authorization
// extension) of one ingress listener: its rules, and the services whose routes the
// rules name, compiled as the callers' sidecars compile them. Immutable after Compile
// except for the counters.
type ListenerAuthz struct {
	port     int
	rules    []authzRule
	services *router.Services // services of the routers that rules name; nil: none
	counters *AuthzCounters
	clock    resilience.Clock
}

// authzRule is one compiled allow rule. A nil list does not narrow.
type authzRule struct {
	anyCaller bool
	callers   []string // SPIFFE IDs, as a verified certificate's identity reads
	methods   []string
	prefixes  []string
	byRoute   bool            // routes narrow the rule (routes may be empty: no route leads here by a service)
	routes    []*router.Route // the routes named, in every service that uses their router
}

// AuthzCounters count one listener's authorization verdicts. They are carried across
// reloads by listener port, so /stats does not reset when the config changes.
type AuthzCounters struct {
	Allowed atomic.Uint64
	// DeniedPolicy: the caller has a verified identity that no rule allows for this
	// request (connection).
	DeniedPolicy atomic.Uint64
	// DeniedNoIdentity: the caller presented no verified SPIFFE ID (a plaintext caller
	// of a PERMISSIVE listener, or a certificate without a spiffe:// URI SAN).
	DeniedNoIdentity atomic.Uint64

	lastSummary atomic.Int64  // unix nanoseconds of the last summary
	summarized  atomic.Uint64 // denials the summaries have reported so far
}

// Denied is every denial.
func (c *AuthzCounters) Denied() uint64 { return c.DeniedPolicy.Load() + c.DeniedNoIdentity.Load() }

// AuthzVerdict is the outcome of an authorization check.
type AuthzVerdict uint8

const (
	AuthzAllowed    AuthzVerdict = iota
	AuthzDenied                  // the caller's identity is not allowed here
	AuthzNoIdentity              // the caller has no verified identity
)

// Port is the listener's port.
func (a *ListenerAuthz) Port() int { return a.port }

// Counters are the listener's authorization counters.
func (a *ListenerAuthz) Counters() *AuthzCounters { return a.counters }

// Authorize judges one HTTP request of caller peer (the verified SPIFFE ID of its
// client certificate; "" when it has none) and counts the verdict. r is the request as
// the front end resolved it (Authority, Method, Path with the query, Header); it is not
// changed or retained. Zero allocations.
func (a *ListenerAuthz) Authorize(peer string, r *router.Request) AuthzVerdict {
	if peer == "" {
		a.counters.DeniedNoIdentity.Add(1)
		return AuthzNoIdentity
	}
	path := r.Path
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	normal, normalKnown := false, false
	var rt *router.Route
	routeKnown := false
	for i := range a.rules {
		ru := &a.rules[i]
		if !ru.allowsCaller(peer) {
			continue
		}
		if ru.methods != nil && !slices.Contains(ru.methods, r.Method) {
			continue
		}
		if ru.prefixes != nil || ru.byRoute {
			// A path the application may read differently ("/public/../admin") is not
			// judged by prefixes, nor by routes that match on prefixes.
			if !normalKnown {
				normal, normalKnown = config.NormalPath(path), true
			}
			if !normal {
				continue
			}
		}
		if ru.prefixes != nil && !hasAnyPrefix(path, ru.prefixes) {
			continue
		}
		if ru.byRoute {
			if !routeKnown {
				rt, routeKnown = a.callerRoute(r), true
			}
			if rt == nil || !slices.Contains(ru.routes, rt) {
				continue
			}
		}
		a.counters.Allowed.Add(1)
		return AuthzAllowed
	}
	a.counters.DeniedPolicy.Add(1)
	return AuthzDenied
}

// AuthorizeConn judges a connection of caller peer to a tcp listener, by its caller
// alone (the rules of tcp listeners do not narrow), and counts the verdict.
func (a *ListenerAuthz) AuthorizeConn(peer string) AuthzVerdict {
	if peer == "" {
		a.counters.DeniedNoIdentity.Add(1)
		return AuthzNoIdentity
	}
	for i := range a.rules {
		ru := &a.rules[i]
		// A rule that narrows requests cannot be judged on a byte stream: it allows no
		// connection (Validate keeps such rules off tcp listeners anyway).
		if ru.methods == nil && ru.prefixes == nil && !ru.byRoute && ru.allowsCaller(peer) {
			a.counters.Allowed.Add(1)
			return AuthzAllowed
		}
	}
	a.counters.DeniedPolicy.Add(1)
	return AuthzDenied
}

// DenialSummary reports, at most once per interval on the snapshot's clock, how many
// requests the listener denied since the last report, so a denial can be logged at a
// level an operator sees without a line per request when a caller is refused in a loop.
// ok is false between reports.
func (a *ListenerAuthz) DenialSummary(interval time.Duration) (denied uint64, ok bool) {
	now := a.clock.Now().UnixNano()
	last := a.counters.lastSummary.Load()
	if last != 0 && now-last < int64(interval) {
		return 0, false
	}
	if !a.counters.lastSummary.CompareAndSwap(last, now) {
		return 0, false // another goroutine reports this interval
	}
	total := a.counters.Denied()
	return total - a.counters.summarized.Swap(total), true
}

func (ru *authzRule) allowsCaller(peer string) bool {
	return ru.anyCaller || slices.Contains(ru.callers, peer)
}

func hasAnyPrefix(path string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}

// callerRoute is the route the caller's sidecar picked for r: the virtual service its
// authority names, matched as that sidecar matches it (the port the authority names,
// else the service's only port; the scheme the caller's sidecar forwarded in
// X-Forwarded-Proto, else http). Nil when the authority names no service of a route
// the rules name, or no route matches.
func (a *ListenerAuthz) callerRoute(r *router.Request) *router.Route {
	host, port := authorityHostPort(r.Authority)
	svc := a.services.Lookup(host)
	if svc == nil {
		return nil
	}
	q := *r
	q.Port = port
	if port == 0 && len(svc.Ports) == 1 {
		q.Port = svc.Ports[0]
	}
	q.Scheme = "http"
	if r.Header != nil {
		if v, ok := r.Header.Get("x-forwarded-proto"); ok && v != "" {
			q.Scheme = v
		}
	}
	return svc.Match(&q)
}

// authorityHostPort splits "host[:port]" (IPv6 literals in brackets); port is 0 when
// absent or malformed.
func authorityHostPort(a string) (string, int) {
	end := strings.LastIndexByte(a, ':')
	if end < 0 || strings.IndexByte(a[end:], ']') >= 0 {
		return strings.Trim(a, "[]"), 0
	}
	host := a[:end]
	if strings.IndexByte(host, ':') >= 0 && !strings.HasPrefix(host, "[") {
		return a, 0 // a bare IPv6 literal
	}
	port := 0
	for _, c := range a[end+1:] {
		if c < '0' || c > '9' || port > 65535 {
			return strings.Trim(host, "[]"), 0
		}
		port = port*10 + int(c-'0')
	}
	if port > 65535 {
		port = 0
	}
	return strings.Trim(host, "[]"), port
}

// compileAuthz compiles the authorization policies of vn's listeners, keeping each
// listener's counters from prev.
func (s *Snapshot) compileAuthz(cfg *config.Config, vn *config.VirtualNode, prev *Snapshot) error {
	for i := range vn.Spec.Listeners {
		l := &vn.Spec.Listeners[i]
		if l.Authorization == nil {
			continue
		}
		path := fmt.Sprintf("virtual node %q: spec.listeners[%d].authorization", vn.VirtualNodeName, i)
		a, err := compileListenerAuthz(cfg, vn, l, path)
		if err != nil {
			return err
		}
		a.clock = s.clock
		a.counters = new(AuthzCounters)
		if prev != nil {
			if old := prev.authz[l.PortMapping.Port]; old != nil {
				a.counters = old.counters
			}
		}
		if s.authz == nil {
			s.authz = map[int]*ListenerAuthz{}
		}
		s.authz[l.PortMapping.Port] = a
	}
	return nil
}

func compileListenerAuthz(cfg *config.Config, vn *config.VirtualNode, l *config.Listener, path string) (*ListenerAuthz, error) {
	a := &ListenerAuthz{port: l.PortMapping.Port}
	type ref struct{ router, route string }
	named := make([][]ref, len(l.Authorization.Allow))
	var routers []string
	for i, r := range l.Authorization.Allow {
		rp := fmt.Sprintf("%s.allow[%d]", path, i)
		ru := authzRule{}
		for j, c := range r.Callers {
			switch {
			case c == config.AnyCaller:
				ru.anyCaller = true
			case strings.Contains(c, "://"):
				ru.callers = append(ru.callers, c)
			default:
				id, err := config.NodeSPIFFEID(cfg.Mesh.MeshName, c)
				if err != nil {
					return nil, fmt.Errorf("%s.callers[%d] %q: %w", rp, j, c, err)
				}
				ru.callers = append(ru.callers, id)
			}
		}
		if len(r.Methods) > 0 {
			ru.methods = slices.Clone(r.Methods)
		}
		if len(r.PathPrefixes) > 0 {
			ru.prefixes = slices.Clone(r.PathPrefixes)
		}
		for j, name := range r.Routes {
			cr, err := cfg.AuthorizationRoute(vn, l, name)
			if err != nil {
				return nil, fmt.Errorf("%s.routes[%d] %q: %w", rp, j, name, err)
			}
			ru.byRoute = true
			named[i] = append(named[i], ref{cr.VirtualRouterName, cr.RouteName})
			if !slices.Contains(routers, cr.VirtualRouterName) {
				routers = append(routers, cr.VirtualRouterName)
			}
		}
		a.rules = append(a.rules, ru)
	}
	if len(routers) == 0 {
		return a, nil
	}
	svcs, err := router.RouterServices(cfg, routers)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	a.services = svcs
	// A route is matched within each service that its router provides; the rule holds
	// every such compiled route.
	for _, svc := range svcs.All() {
		vr := svcs.Router(svc)
		for _, rt := range svc.Routes {
			for i := range a.rules {
				if slices.Contains(named[i], ref{vr, rt.Name}) {
					a.rules[i].routes = append(a.rules[i].routes, rt)
				}
			}
		}
	}
	return a, nil
}

// Authz is the authorization policy of the node's listener on port, nil when it has
// none (every caller is allowed).
func (s *Snapshot) Authz(port int) *ListenerAuthz {
	if len(s.authz) == 0 {
		return nil
	}
	return s.authz[port]
}

// Authorizations are the listeners' authorization policies by port (admin views).
func (s *Snapshot) Authorizations() map[int]*ListenerAuthz { return s.authz }
