package state

import (
	"fmt"
	"reflect"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/resilience"
	"github.com/meshd/meshd/router"
	"github.com/meshd/meshd/telemetry"
)

// RoutePolicy is what a route adds to forwarding: its compiled retry policy, its rate
// limit and its counters. Immutable after Compile except for the atomics inside.
type RoutePolicy struct {
	key       string
	retry     *resilience.RetryPolicy
	limit     *resilience.TokenBucket // nil: no route rate limit
	counters  *resilience.Counters
	stats     *routeStats
	isDefault bool
	limitCfg  *config.RateLimit
	// mirror is the route's compiled mirror (mirror.go); mirrorStats its counters,
	// carried over by key.
	mirror      *Mirror
	mirrorStats *MirrorStats
}

// NewRoutePolicy is a policy with no rate limit, for tests of the pipeline.
func NewRoutePolicy(key string, retry *resilience.RetryPolicy) *RoutePolicy {
	return &RoutePolicy{key: key, retry: retry, counters: new(resilience.Counters), stats: new(routeStats)}
}

// routeStats holds a route's request statistics, made at the route's first request:
// a mesh of 10,000 routes whose sidecar serves a few of them held 4 MB of zeros. The
// cell is carried across reloads by key, so a request on the old snapshot and one on
// the new count in the same statistics.
type routeStats struct {
	p atomic.Pointer[telemetry.HTTPStats]
}

func (c *routeStats) get() *telemetry.HTTPStats {
	if s := c.p.Load(); s != nil {
		return s
	}
	c.p.CompareAndSwap(nil, new(telemetry.HTTPStats))
	return c.p.Load()
}

// Stats are the route's request statistics (carried across reloads by Key), made at
// the first call: the request path's.
func (p *RoutePolicy) Stats() *telemetry.HTTPStats { return p.stats.get() }

// StatsIfAny is Stats for readers that count nothing (the admin API): nil while the
// route has had no request, which reads as all zeros.
func (p *RoutePolicy) StatsIfAny() *telemetry.HTTPStats { return p.stats.p.Load() }

// Key is "<service>/<route>", stable across reloads: counters and buckets carry over by
// it, and /stats names routes with it.
func (p *RoutePolicy) Key() string { return p.key }

// Retry is the route's compiled retry policy (never nil).
func (p *RoutePolicy) Retry() *resilience.RetryPolicy { return p.retry }

// Counters are the route's resilience counters.
func (p *RoutePolicy) Counters() *resilience.Counters { return p.counters }

// Default reports App Mesh's hidden default retry policy (the route set none).
func (p *RoutePolicy) Default() bool { return p.isDefault }

// ListenerLimit is the rate limit of one of the local node's listeners (ingress).
type ListenerLimit struct {
	bucket   *resilience.TokenBucket
	counters *resilience.Counters
	cfg      config.RateLimit
}

// Counters are the listener's rate-limit counters.
func (l *ListenerLimit) Counters() *resilience.Counters { return l.counters }

// compilePolicies compiles every route's policy and the ingress listeners' limits.
// Counters of routes and listeners, and token buckets whose config did not change, are
// carried over from prev by key, so a reload neither resets what /stats shows nor
// refills a bucket.
func (s *Snapshot) compilePolicies(vn *config.VirtualNode, prev *Snapshot) error {
	old := map[string]*RoutePolicy{}
	if prev != nil {
		for _, p := range prev.policies {
			if p != nil {
				old[p.key] = p
			}
		}
	}
	now := s.clock.Now()
	routes := s.table.Routes()
	ingress := make([]bool, len(routes))
	for _, l := range vn.Spec.Listeners {
		if svc := s.table.Ingress(l.PortMapping.Port); svc != nil {
			for _, rt := range svc.Routes {
				ingress[rt.ID] = true
			}
		}
	}
	s.policies = make([]*RoutePolicy, len(routes))
	for _, rt := range routes {
		if rt.Kind == config.ProtoTCP {
			continue
		}
		key := rt.Service + "/" + rt.Name
		p, err := compileRoutePolicy(rt, key, ingress[rt.ID], old[key], now)
		if err != nil {
			return err
		}
		s.policies[rt.ID] = p
	}
	s.listeners = map[int]*ListenerLimit{}
	for _, l := range vn.Spec.Listeners {
		if l.RateLimit == nil || s.table.Ingress(l.PortMapping.Port) == nil {
			continue
		}
		ll := &ListenerLimit{cfg: *l.RateLimit, counters: new(resilience.Counters)}
		if prev != nil {
			if o := prev.listeners[l.PortMapping.Port]; o != nil {
				ll.counters = o.counters
				if o.cfg == ll.cfg {
					ll.bucket = o.bucket
				}
			}
		}
		if ll.bucket == nil {
			b, err := resilience.NewTokenBucket(resilience.RateLimitConfig{RequestsPerSecond: l.RateLimit.RequestsPerSecond, Burst: l.RateLimit.Burst}, now, ll.counters)
			if err != nil {
				return fmt.Errorf("listener %d: %w", l.PortMapping.Port, err)
			}
			ll.bucket = b
		}
		s.listeners[l.PortMapping.Port] = ll
	}
	return nil
}

// The retry policies most routes share: immutable, so one of each serves every route
// of every snapshot (10,000 routes held 10,000 copies of the default).
var (
	defaultRetry = resilience.DefaultRetryPolicy()
	noRetry      = resilience.NoRetryPolicy()
)

// compileRoutePolicy compiles rt's retry policy (App Mesh's default when the route sets
// none; none at all for the node's own ingress routes, which lead to the local app) and
// rate limit.
func compileRoutePolicy(rt *router.Route, key string, ingress bool, old *RoutePolicy, now time.Time) (*RoutePolicy, error) {
	p := &RoutePolicy{key: key}
	if old != nil {
		p.counters, p.stats, p.mirrorStats = old.counters, old.stats, old.mirrorStats
	} else {
		p.counters, p.stats = new(resilience.Counters), new(routeStats)
	}
	var in *resilience.RetryInput
	switch {
	case rt.HTTPRetry != nil:
		r := rt.HTTPRetry
		in = &resilience.RetryInput{MaxRetries: r.MaxRetries, PerRetryTimeout: r.PerRetryTimeout.D(), HTTPEvents: r.HTTPRetryEvents, TCPEvents: r.TCPRetryEvents}
	case rt.GRPCRetry != nil:
		r := rt.GRPCRetry
		in = &resilience.RetryInput{MaxRetries: r.MaxRetries, PerRetryTimeout: r.PerRetryTimeout.D(), HTTPEvents: r.HTTPRetryEvents,
			GRPCEvents: r.GRPCRetryEvents, TCPEvents: r.TCPRetryEvents}
	}
	switch {
	case ingress:
		p.retry = noRetry
	case in == nil:
		p.retry, p.isDefault = defaultRetry, true
	default:
		rp, err := resilience.CompileRetryPolicy(*in)
		if err != nil {
			return nil, fmt.Errorf("route %s: retryPolicy.%w", p.key, err)
		}
		p.retry = rp
	}
	p.limitCfg = rt.RateLimit
	if p.limitCfg != nil {
		if old != nil && old.limit != nil && reflect.DeepEqual(old.limitCfg, p.limitCfg) {
			p.limit = old.limit
		} else {
			b, err := resilience.NewTokenBucket(resilience.RateLimitConfig{RequestsPerSecond: p.limitCfg.RequestsPerSecond, Burst: p.limitCfg.Burst}, now, p.counters)
			if err != nil {
				return nil, fmt.Errorf("route %s: %w", p.key, err)
			}
			p.limit = b
		}
	}
	return p, nil
}

// Admit applies the ingress listener's rate limit (ingressPort != 0: the request came in
// on that node listener) and then the route's (p may be nil). It returns how long to
// wait when a limit refuses the request.
func (s *Snapshot) Admit(ingressPort int, p *RoutePolicy) (ok bool, retryAfter time.Duration) {
	var now time.Time
	if ingressPort != 0 && len(s.listeners) > 0 {
		if ll := s.listeners[ingressPort]; ll != nil {
			now = s.clock.Now()
			if ok, wait := ll.bucket.Allow(now); !ok {
				return false, wait
			}
		}
	}
	if p != nil && p.limit != nil {
		if now.IsZero() {
			now = s.clock.Now()
		}
		if ok, wait := p.limit.Allow(now); !ok {
			return false, wait
		}
	}
	return true, 0
}
