package state

import (
	"fmt"
	"reflect"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/resilience"
	"github.com/meshd/meshd/router"
)

// RoutePolicy is what a route adds to forwarding: its compiled retry policy, its rate
// limit and its counters. Immutable after Compile except for the atomics inside.
type RoutePolicy struct {
	// Key is "<service>/<route>", stable across reloads: counters and buckets carry
	// over by it, and /stats names routes with it.
	Key      string
	Retry    *resilience.RetryPolicy
	Limit    *resilience.TokenBucket // nil: no route rate limit
	Counters *resilience.Counters
	// Default marks App Mesh's hidden default retry policy (the route set none).
	Default  bool
	limitCfg *config.RateLimit
}

// ListenerLimit is the rate limit of one of the local node's listeners (ingress).
type ListenerLimit struct {
	Bucket   *resilience.TokenBucket
	Counters *resilience.Counters
	cfg      config.RateLimit
}

// compilePolicies compiles every route's policy and the ingress listeners' limits.
// Counters of routes and listeners, and token buckets whose config did not change, are
// carried over from prev by key, so a reload neither resets what /stats shows nor
// refills a bucket.
func (s *Snapshot) compilePolicies(vn *config.VirtualNode, prev *Snapshot) error {
	old := map[string]*RoutePolicy{}
	if prev != nil {
		for _, p := range prev.policies {
			if p != nil {
				old[p.Key] = p
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
		p, err := compileRoutePolicy(rt, ingress[rt.ID], old[rt.Service+"/"+rt.Name], now)
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
		ll := &ListenerLimit{cfg: *l.RateLimit, Counters: new(resilience.Counters)}
		if prev != nil {
			if o := prev.listeners[l.PortMapping.Port]; o != nil {
				ll.Counters = o.Counters
				if o.cfg == ll.cfg {
					ll.Bucket = o.Bucket
				}
			}
		}
		if ll.Bucket == nil {
			b, err := resilience.NewTokenBucket(resilience.RateLimitConfig{RequestsPerSecond: l.RateLimit.RequestsPerSecond, Burst: l.RateLimit.Burst}, now, ll.Counters)
			if err != nil {
				return fmt.Errorf("listener %d: %w", l.PortMapping.Port, err)
			}
			ll.Bucket = b
		}
		s.listeners[l.PortMapping.Port] = ll
	}
	return nil
}

// compileRoutePolicy compiles rt's retry policy (App Mesh's default when the route sets
// none; none at all for the node's own ingress routes, which lead to the local app) and
// rate limit.
func compileRoutePolicy(rt *router.Route, ingress bool, old *RoutePolicy, now time.Time) (*RoutePolicy, error) {
	p := &RoutePolicy{Key: rt.Service + "/" + rt.Name, Counters: new(resilience.Counters)}
	if old != nil {
		p.Counters = old.Counters
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
		p.Retry = resilience.NoRetryPolicy()
	case in == nil:
		p.Retry, p.Default = resilience.DefaultRetryPolicy(), true
	default:
		rp, err := resilience.CompileRetryPolicy(*in)
		if err != nil {
			return nil, fmt.Errorf("route %s: retryPolicy.%w", p.Key, err)
		}
		p.Retry = rp
	}
	p.limitCfg = rt.RateLimit
	if p.limitCfg != nil {
		if old != nil && old.Limit != nil && reflect.DeepEqual(old.limitCfg, p.limitCfg) {
			p.Limit = old.Limit
		} else {
			b, err := resilience.NewTokenBucket(resilience.RateLimitConfig{RequestsPerSecond: p.limitCfg.RequestsPerSecond, Burst: p.limitCfg.Burst}, now, p.Counters)
			if err != nil {
				return nil, fmt.Errorf("route %s: %w", p.Key, err)
			}
			p.Limit = b
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
			if ok, wait := ll.Bucket.Allow(now); !ok {
				return false, wait
			}
		}
	}
	if p != nil && p.Limit != nil {
		if now.IsZero() {
			now = s.clock.Now()
		}
		if ok, wait := p.Limit.Allow(now); !ok {
			return false, wait
		}
	}
	return true, 0
}
