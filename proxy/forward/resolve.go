package forward

import (
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/proxy/state"
	"github.com/meshd/meshd/proxy/upstream"
	"github.com/meshd/meshd/resilience"
	"github.com/meshd/meshd/router"
	"github.com/meshd/meshd/telemetry"
)

// Kind is the listener a connection arrived on.
type Kind uint8

const (
	Ingress Kind = iota + 1 // redirected inbound traffic to the node's own listeners
	Egress                  // the app's outbound traffic (iptables REDIRECT or HTTP_PROXY)
)

func (k Kind) String() string {
	if k == Ingress {
		return "ingress"
	}
	return "egress"
}

// Decision is the outcome of routing one L7 request: a route, the cluster its weighted
// target picked and the route's policy; or, on failure, the local answer.
type Decision struct {
	// Service is the service (or node listener) the request was routed within; set
	// also when no route of it matched.
	Service *router.Service
	Route   *router.Route
	Cluster *upstream.Cluster
	Policy  *state.RoutePolicy // nil: no retries, no route limit (passthrough)
	// IngressPort is the node listener an ingress request came to (0 for egress), for
	// the listener's rate limit.
	IngressPort int
	// Path and Host, when set, replace the request target (path and query) and the
	// Host (:authority) sent upstream: a gateway route's rewrites (gateway.go).
	Path, Host string
	// Gateway is the gateway route that sent the request to Service (nil off a
	// gateway): its header rules apply next to Route's (RouteRules).
	Gateway *router.GatewayRoute
	// GRPCHealth, when not 0, is the serving status meshd answers a gRPC health check
	// with itself (a gateway listener's grpc healthCheck): the call ends OK with a
	// HealthCheckResponse, not with an error status.
	GRPCHealth uint8
	// GatewayStats are Gateway's request statistics (nil off a gateway).
	GatewayStats *telemetry.HTTPStats
	// On failure (Route nil):
	Status int
	Code   string
	Msg    string
}

// Timeouts returns the exchange's absolute timeout (route perRequest, else the target
// listener's; 0 = none) and its idle timeout (route idle, else the listener's, else
// streamIdle).
func (d *Decision) Timeouts(streamIdle time.Duration) (perRequest, idle time.Duration) {
	perRequest, idle = d.Route.PerRequestTimeout, d.Route.IdleTimeout
	lp, li := d.Cluster.Timeouts()
	if perRequest == 0 {
		perRequest = lp
	}
	if idle == 0 {
		idle = li
	}
	if idle == 0 {
		idle = streamIdle
	}
	return perRequest, idle
}

// Passthrough builds and keeps the clusters of destinations outside the mesh
// (egressFilter ALLOW_ALL), and refuses meshd's own listeners as destinations.
type Passthrough struct {
	Cache upstream.PassCache
	// Options build a passthrough cluster; their Dialer must refuse meshd's own
	// listener addresses (the proxy's self-guard dialer).
	Options upstream.Options
	// IsSelf reports whether host:port names one of meshd's own listeners.
	IsSelf func(host string, port int) bool
}

var passthroughRoute = &router.Route{Name: "passthrough", Service: "passthrough", Kind: "http"}

// CodePassthrough is the Decision code of a request a nil Passthrough would have
// forwarded outside the mesh (a dry run: /debug/route).
const CodePassthrough = "passthrough"

// decide forwards to host:port outside the mesh. Each host:port gets a small cluster of
// its own so keep-alive works. A nil p decides without building anything (dry run).
func (p *Passthrough) decide(host string, port int) Decision {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	if p == nil {
		return Decision{Code: CodePassthrough, Msg: "egressFilter ALLOW_ALL forwards to " + addr}
	}
	if p.IsSelf != nil && p.IsSelf(host, port) {
		return Decision{Status: 508, Code: CodeLoop, Msg: "meshd: " + addr + " is meshd itself\n"}
	}
	c := p.Cache.Get(addr, func() *upstream.Cluster {
		c := upstream.New(router.ClusterRef{Name: "passthrough:" + addr, Protocol: "http"}, p.Options)
		c.Balancer().Update([]discovery.Endpoint{{Address: addr, Weight: 1}})
		return c
	})
	return Decision{Route: passthroughRoute, Cluster: c}
}

// Resolve routes one L7 request on snap: the one function live traffic and
// /debug/route share. local is the original destination port of an ingress connection
// (0 when unknown); orig is the connection's original destination (zero when not
// redirected). Egress routes by authority first; an authority that names no backend
// falls back to orig (EgressByDst), and ALLOW_ALL forwards to orig rather than to the
// authority. rnd picks among weighted targets. It sets rr.Port.
func Resolve(snap *state.Snapshot, pt *Passthrough, kind Kind, rr *router.Request, local int, orig netip.AddrPort, rnd uint64) Decision {
	return ResolveCached(snap, pt, kind, rr, local, orig, rnd, nil)
}

// HostCache remembers a connection's last egress authority and the backend service it
// named, for the routing table it was looked up in: a keep-alive client sends the same
// Host request after request, and comparing it with the last one costs less than the
// table's case-folding map lookup (issue 17). A table is immutable, so a hit on the
// same table gives what the lookup would. One per connection; the zero value is empty.
type HostCache struct {
	table *router.Table
	svc   *router.Service
	n     int
	host  [64]byte // a copy: the request's Host aliases a buffer the next request reuses
}

// egress is Table.Egress through the cache.
func (hc *HostCache) egress(t *router.Table, host string, port int) *router.Service {
	if hc == nil || len(host) > len(hc.host) {
		return t.Egress(host, port)
	}
	if hc.table == t && hc.n == len(host) && string(hc.host[:hc.n]) == host {
		return hc.svc
	}
	svc := t.Egress(host, port)
	if svc != nil {
		hc.table, hc.svc, hc.n = t, svc, copy(hc.host[:], host)
	}
	return svc
}

// ResolveCached is Resolve with hc, the connection's HostCache (nil: none).
func ResolveCached(snap *state.Snapshot, pt *Passthrough, kind Kind, rr *router.Request, local int, orig netip.AddrPort, rnd uint64, hc *HostCache) Decision {
	var svc *router.Service
	ingressPort := 0
	if kind == Ingress {
		if gw := snap.Gateway(); gw != nil {
			return resolveGateway(snap, gw, rr, snap.IngressPort(local), rnd)
		}
		ingressPort = snap.IngressPort(local)
		rr.Port = ingressPort
		svc = snap.Table().Ingress(ingressPort)
		if svc == nil {
			return Decision{Status: 404, Code: CodeNoListener,
				Msg: "meshd: node " + snap.Node() + " has no listener on port " + strconv.Itoa(ingressPort) + "\n"}
		}
	} else {
		host, port := SplitHostPort(rr.Authority)
		if port != 0 {
			rr.Port = port
		} else if rr.Port == 0 {
			if rr.Port = int(orig.Port()); rr.Port == 0 {
				rr.Port = 80
			}
		}
		svc = hc.egress(snap.Table(), host, rr.Port)
		if svc == nil && orig.IsValid() {
			svc = l7ByDst(snap, host, orig)
		}
		if svc == nil {
			if snap.EgressAllowAll() && orig.IsValid() {
				return pt.decide(orig.Addr().String(), int(orig.Port()))
			}
			if snap.EgressAllowAll() && host != "" {
				return pt.decide(host, rr.Port)
			}
			return Decision{Status: 404, Code: CodeEgressDenied,
				Msg: "meshd: " + host + " is not a backend of node " + snap.Node() + " and the mesh egressFilter is DROP_ALL\n"}
		}
	}
	rt := svc.Match(rr)
	if rt == nil {
		return Decision{Service: svc, Status: 404, Code: CodeNoRoute,
			Msg: "meshd: no route matched " + rr.Method + " " + rr.Path + " in service " + svc.Name + "\n"}
	}
	t := rt.PickTarget(rnd)
	if t == nil {
		return Decision{Service: svc, Route: rt, Status: 503, Code: CodeNoEndpoint, Msg: "meshd: route " + rt.Name + " has no target with weight > 0\n"}
	}
	c := snap.Cluster(t.Cluster)
	if c == nil {
		return Decision{Status: 503, Code: CodeNoEndpoint, Msg: "meshd: cluster " + t.Cluster + " is not built\n"}
	}
	return Decision{Service: svc, Route: rt, Cluster: c, Policy: snap.Policy(rt), IngressPort: ingressPort}
}

// Admit applies the listener's and the route's rate limits to a resolved request.
func (d *Decision) Admit(snap *state.Snapshot) (ok bool, retryAfter time.Duration) {
	return snap.Admit(d.IngressPort, d.Policy)
}

// RetryAfterValue formats a 429's Retry-After (whole seconds, at least 1).
func RetryAfterValue(wait time.Duration) string {
	return strconv.FormatInt(resilience.RetryAfterSeconds(wait), 10)
}

// l7ByDst finds the backend an HTTP request was meant for when its Host named none:
// one of whose endpoints is orig; or, when Host is an IP literal or absent and the
// egressFilter is DROP_ALL, the first HTTP backend listening on orig's port. Under
// ALLOW_ALL such a request keeps going to its original destination instead, so that
// traffic to the outside world is never captured by a backend that shares its port.
func l7ByDst(snap *state.Snapshot, host string, orig netip.AddrPort) *router.Service {
	byPort := false
	if !snap.EgressAllowAll() {
		_, err := netip.ParseAddr(host)
		byPort = host == "" || err == nil
	}
	return EgressByDst(snap, orig, false, byPort)
}

// EgressByDst finds the backend service an egress connection or request was meant for
// from its original destination, when the name (Host, SNI) did not say. First a backend
// one of whose endpoints is exactly dst (the app resolved the service name and dialled
// the address); then, when byPort, the first backend (in the node's backends order)
// whose virtual router or provider node listens on dst's port. tcp selects tcp backends
// and their tcp routes; otherwise HTTP-family backends. Nil when nothing matches.
func EgressByDst(snap *state.Snapshot, dst netip.AddrPort, tcp, byPort bool) *router.Service {
	var buf [64]byte
	addr := dst.AppendTo(buf[:0])
	port := int(dst.Port())
	for _, svc := range snap.Table().Services() {
		if (svc.Protocol == config.ProtoTCP) != tcp || svc.Protocol == "" {
			continue
		}
		for _, rt := range svc.Routes {
			if (rt.Kind == config.ProtoTCP) != tcp {
				continue
			}
			for _, t := range rt.Targets {
				if c := snap.Cluster(t.Cluster); c != nil && c.HasEndpoint(addr) {
					return svc
				}
			}
		}
	}
	if !byPort {
		return nil
	}
	for _, svc := range snap.Table().Services() {
		if (svc.Protocol == config.ProtoTCP) != tcp || svc.Protocol == "" || !slices.Contains(svc.Ports, port) {
			continue
		}
		if tcp && svc.MatchTCP(port) == nil {
			continue
		}
		return svc
	}
	return nil
}

// SplitHostPort splits "host[:port]" without allocating; port is 0 when absent or
// malformed. IPv6 literals keep their brackets off.
func SplitHostPort(hostport string) (host string, port int) {
	host = hostport
	if len(host) > 0 && host[0] == '[' {
		end := -1
		for i := 1; i < len(host); i++ {
			if host[i] == ']' {
				end = i
				break
			}
		}
		if end < 0 {
			return hostport, 0
		}
		rest := host[end+1:]
		host = host[1:end]
		if len(rest) > 1 && rest[0] == ':' {
			port = atoiPort(rest[1:])
		}
		return host, port
	}
	// IndexByte's vector search: a byte loop over the host was 130 instructions per
	// request (issue 17).
	if i := strings.IndexByte(host, ':'); i >= 0 {
		// More than one colon without brackets: an IPv6 literal with no port.
		if strings.IndexByte(host[i+1:], ':') >= 0 {
			return hostport, 0
		}
		return host[:i], atoiPort(host[i+1:])
	}
	return host, 0
}

func atoiPort(s string) int {
	if len(s) == 0 || len(s) > 5 {
		return 0
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0
		}
		n = n*10 + int(s[i]-'0')
	}
	if n > 65535 {
		return 0
	}
	return n
}

// Env is what every protocol front end needs from the server: the snapshot holder, the
// passthrough clusters, the timeouts and the server's drain state. Set once at start.
type Env struct {
	State       *state.Holder
	Passthrough *Passthrough
	// KeepAliveIdle bounds the wait for a connection's next request; StreamIdle is the
	// idle timeout within a request when no route or listener sets one; HeaderTimeout
	// bounds an HTTP/1.x request head from its first byte.
	KeepAliveIdle, StreamIdle, HeaderTimeout time.Duration
	// FirstRequestTimeout bounds the wait for a connection's first complete request
	// head, from accept (from the end of the TLS handshake on a listener that terminates
	// TLS); FirstRequestTimeouts counts, by Kind, the connections closed for missing it.
	FirstRequestTimeout  time.Duration
	FirstRequestTimeouts [Egress + 1]atomic.Uint64
	// MaxReplayBody bounds the request body kept for a retry (0: DefaultMaxReplayBody).
	MaxReplayBody int
	// UpstreamHold is how long an HTTP/1.1 downstream connection idle between requests
	// keeps the upstream connection of its last exchange (a client's next request then
	// skips the pool's lock) before putting it back in the endpoint's pool, so idle
	// clients never pin upstream connections. 0: DefaultUpstreamHold.
	UpstreamHold time.Duration
	// Overloaded reports whether the server sheds load (its overload watermark is
	// crossed): new requests are answered 503 overloaded and responses say Connection:
	// close. nil: never. OverloadRejected counts those 503s by Kind.
	Overloaded       *atomic.Bool
	OverloadRejected [Egress + 1]atomic.Uint64
	// Draining reports whether the server is draining: responses say Connection: close.
	Draining *atomic.Bool
	Log      *slog.Logger

	// Tracer starts the spans of traced requests; nil: tracing off.
	Tracer telemetry.Tracer

	// Request statistics of the listeners, by kind (Envoy's http.*.downstream_rq_*).
	IngressStats, EgressStats telemetry.HTTPStats

	// Mirrors sends the copies of the routes' mirrors (mirror.go).
	Mirrors Mirrors
}

// ListenerStats are the request statistics of the listener kind k.
func (e *Env) ListenerStats(k Kind) *telemetry.HTTPStats {
	if k == Ingress {
		return &e.IngressStats
	}
	return &e.EgressStats
}

// DefaultUpstreamHold is Env.UpstreamHold's default: long enough that a client sending
// requests back to back keeps its upstream connection, short next to the keep-alive idle.
const DefaultUpstreamHold = time.Second

// Hold is UpstreamHold with its default.
func (e *Env) Hold() time.Duration {
	if e.UpstreamHold > 0 {
		return e.UpstreamHold
	}
	return DefaultUpstreamHold
}

// IsOverloaded reports whether new requests are to be shed.
func (e *Env) IsOverloaded() bool { return e.Overloaded != nil && e.Overloaded.Load() }

// ReplayBound is MaxReplayBody with its default.
func (e *Env) ReplayBound() int {
	if e.MaxReplayBody > 0 {
		return e.MaxReplayBody
	}
	return DefaultMaxReplayBody
}

// Failed reports whether the request cannot be forwarded: Status, Code and Msg say why.
func (d *Decision) Failed() bool { return d.Cluster == nil }
