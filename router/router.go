// Package router compiles a validated *config.Config into an immutable, per-node routing
// Table and matches requests to routes without allocating.
//
// A Table is built once per config snapshot by Compile and never mutated afterwards, so
// any number of goroutines may call its methods (and those of the Services, Routes and
// Targets it hands out) concurrently without locks. A route names its upstream cluster by
// string; resolving the name to endpoints is the proxy's job (router never imports the
// balancer).
package router

import (
	"errors"
	"math/bits"
	"slices"
	"strings"
	"time"

	"github.com/meshd/meshd/config"
)

// ErrUnknownReference is wrapped by Compile errors for a name that the config uses but
// does not define (a dangling node, service, router or listener port). Validate rejects
// such configs; Compile reports them instead of panicking in case it is handed one anyway.
var ErrUnknownReference = errors.New("unknown reference")

// Request is what Match reads. Its strings may alias a connection's read buffer: Match
// must not retain them after it returns.
type Request struct {
	Authority string       // Host header or :authority, may carry ":port"
	Method    string       // request method, compared case-sensitively (RFC 9110 §9.1)
	Path      string       // request target in origin form, including any "?query"
	Scheme    string       // "http" or "https"
	Port      int          // port the app addressed (from Host/URI/original dst); 0 if unknown
	GRPC      bool         // content-type is application/grpc*
	Header    HeaderGetter // may be nil: every header is then absent
}

// HeaderGetter looks a header up by lower-case name (case-insensitive); ok=false if absent.
// For repeated headers it returns the first value. Match calls it only for header names
// that some route's match refers to, and never retains the returned value.
type HeaderGetter interface {
	Get(name string) (value string, ok bool)
}

// Table is one node's compiled routing: its egress services (the node's backends), its
// ingress listeners and every cluster a route can name. Immutable after Compile.
type Table struct {
	node        string
	services    []*Service          // egress services in backend order
	byHost      map[string]*Service // lower-case service name without trailing dot
	ingress     map[int]*Service
	clusters    []ClusterRef
	egressPorts []int
	routes      []*Route // every route, egress and ingress; routes[i].ID == i
}

// Service is a routable virtual service (egress) or one of the node's own listeners
// (ingress). Immutable after Compile.
type Service struct {
	Name     string   // virtual service name, or "ingress:<port>"
	Protocol string   // listener protocol: http | http2 | grpc | tcp ("" if the service has no provider)
	Ports    []int    // listener ports of the provider (router or node), ascending
	Routes   []*Route // in match order

	// idx finds the routes a path's prefix selects without trying every route; nil
	// for a service with few prefix routes, which Match scans.
	idx *prefixIndex
}

// Route is one compiled route. Its exported fields are read-only.
type Route struct {
	Name    string // routeName; synthetic routes are "provider:<node>[:<port>]" and "ingress:<port>"
	Service string // the Service's Name
	Kind    string // "http" | "http2" | "grpc" | "tcp"
	Targets []Target

	// PerRequestTimeout and IdleTimeout come from the route's timeout block, or, for a
	// synthetic route, from the target listener's timeout for its protocol. 0 = none:
	// meshd applies no hidden 15 s default.
	PerRequestTimeout time.Duration
	IdleTimeout       time.Duration

	HTTPRetry *config.HTTPRetryPolicy // nil if none
	GRPCRetry *config.GRPCRetryPolicy // nil if none
	// RateLimit is the route's rateLimit extension; nil if none (synthetic routes never
	// have one).
	RateLimit *config.RateLimit
	// Mirror is the route's mirror extension; nil if none (tcp and synthetic routes
	// never have one).
	Mirror *Mirror
	// Headers is the route's header manipulation extension; nil if none.
	Headers *HeaderRules

	// ID numbers the table's routes densely from 0 (egress services in backend order,
	// then ingress listeners by port), so whoever builds per-route runtime state for a
	// table (retry policies, token buckets, counters) keeps it in a slice indexed by ID
	// instead of a map keyed by route.
	ID int

	m      matcher
	cum    []uint64 // cumulative target weights; cum[len-1] is the total
	total  uint64
	tcpPrt int // tcpRoute match.port; 0 = any
}

// Target is one weighted destination of a route.
type Target struct {
	// Cluster is the virtual node name, or "node:port" when the target names a port of a
	// node with several listeners, or "local:<port>" for an ingress route; "@<service>"
	// follows when the route's service has a cluster of its own (Options.OwnCluster).
	Cluster string
	Weight  uint32
}

// ClusterRef describes one upstream cluster a route may name; the proxy builds its
// clusters from Table.Clusters.
type ClusterRef struct {
	Name      string
	Node      string                   // virtual node name (for ingress: the local node)
	Port      int                      // target listener port
	Protocol  string                   // that listener's protocol (decides h1 vs h2 upstream)
	Local     bool                     // ingress cluster: the local app at 127.0.0.1:Port
	Listener  *config.Listener         // the target node's listener (timeouts, pools, outlier detection); for Local the local listener
	Discovery *config.ServiceDiscovery // the target node's service discovery; nil for Local
	LBPolicy  string                   // from the node's loadBalancing extension; "" = LEAST_REQUEST
	LB        *config.LoadBalancing    // the node's whole loadBalancing extension (hash, slowStart); nil: none
	// Service is the backend virtual service whose own cluster this is (Options.OwnCluster):
	// only its routes reach the target through it. Empty for a cluster every service
	// reaching the target shares, and for Local.
	Service string
}

// Node is the virtual node name the table was compiled for.
func (t *Table) Node() string { return t.node }

// Egress finds the backend virtual service the app addressed by host (no port;
// case-insensitive, a trailing dot ignored). port is accepted for symmetry with the
// request but not used for the lookup: App Mesh resolves a backend by name whatever port
// the app dialled, and route match.port filters see the port through Request.Port.
// It returns nil when host is not one of this node's backends, even if the mesh defines a
// service of that name. Zero allocations.
func (t *Table) Egress(host string, port int) *Service {
	_ = port
	return lookupHost(t.byHost, t.Services, host)
}

// Ingress is the node's own listener on port: a Service with one catch-all route to the
// local app cluster "local:<port>". nil if the node has no listener on that port.
func (t *Table) Ingress(port int) *Service { return t.ingress[port] }

// Services returns the egress services in backend order, for admin/debug output. The
// slice is shared: callers must not modify it.
func (t *Table) Services() []*Service { return t.services }

// Clusters returns every cluster referenced by any route, egress and ingress,
// deduplicated and sorted by name. The slice is shared: callers must not modify it.
func (t *Table) Clusters() []ClusterRef { return t.clusters }

// Routes returns every route of the table, egress and ingress, indexed by Route.ID. The
// slice is shared: callers must not modify it.
func (t *Table) Routes() []*Route { return t.routes }

// EgressPorts lists, ascending and deduplicated, the virtual-router listener ports (and
// provider-node listener ports) this node's backends serve on. The slice is shared.
func (t *Table) EgressPorts() []int { return t.egressPorts }

// Match returns the first L7 route (http, http2 or grpc kind) that matches r, or nil.
// tcp routes are never returned here; see TCPRoute. http and http2 routes match gRPC
// requests too (a gRPC call is an HTTP/2 request); grpc routes match only when r.GRPC.
// Zero allocations; r is not retained.
func (s *Service) Match(r *Request) *Route {
	if s == nil || r == nil {
		return nil
	}
	path, query := splitQuery(r.Path)
	if s.idx != nil {
		return s.idx.match(s.Routes, r, path, query)
	}
	return matchScan(s.Routes, r, path, query)
}

// matchScan tries routes in order.
func matchScan(routes []*Route, r *Request, path, query string) *Route {
	for _, rt := range routes {
		if rt.m.match(r, path, query) {
			return rt
		}
	}
	return nil
}

// TCPRoute returns the first tcp route of the service, or nil. L4 callers that know the
// destination port should prefer MatchTCP, which honours tcpRoute match.port.
func (s *Service) TCPRoute() *Route {
	if s == nil {
		return nil
	}
	for _, rt := range s.Routes {
		if rt.m.kind == kindTCP {
			return rt
		}
	}
	return nil
}

// MatchTCP returns the first tcp route whose match.port is unset or equals port, or nil.
func (s *Service) MatchTCP(port int) *Route {
	if s == nil {
		return nil
	}
	for _, rt := range s.Routes {
		if rt.m.kind == kindTCP && (rt.tcpPrt == 0 || rt.tcpPrt == port) {
			return rt
		}
	}
	return nil
}

// PickTarget chooses a target with probability proportional to its weight using rnd,
// any uniformly random uint64 (the high bits matter most). Targets with weight 0 are never
// picked; nil if every weight is 0. Zero allocations.
func (r *Route) PickTarget(rnd uint64) *Target {
	if r.total == 0 {
		return nil
	}
	// x = floor(rnd * total / 2^64) is uniform on [0, total) without a division.
	x, _ := bits.Mul64(rnd, r.total)
	for i, c := range r.cum {
		if x < c {
			return &r.Targets[i]
		}
	}
	return &r.Targets[len(r.Targets)-1]
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

// splitQuery separates an origin-form target into path and raw query (without '?').
func splitQuery(target string) (path, query string) {
	if i := strings.IndexByte(target, '?'); i >= 0 {
		return target[:i], target[i+1:]
	}
	return target, ""
}

func sortedUnique(ports []int) []int {
	slices.Sort(ports)
	return slices.Compact(ports)
}
