package proxy

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/meshd/meshd/balancer"
	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/resilience"
	"github.com/meshd/meshd/router"
)

// Header and code of a rate-limited answer.
const codeRateLimited = "rate_limited"

// limitCircuitBreaker is the x-meshd-limit value when the cluster breaker refuses.
const limitCircuitBreaker = "circuitBreaker"

// maxReplayBody bounds the request body the net/http path keeps for a retry. The
// HTTP/1.1 fast path replays bodies that fit in its 16 KiB read buffer.
const maxReplayBody = 64 << 10

// maxDrainBody bounds a retriable response body that is read and dropped so its
// connection can be reused; a larger one closes the connection instead.
const maxDrainBody = 64 << 10

// retryAfterNoDeadline bounds how long a Retry-After is waited for when the request has
// no deadline: a longer wait would hold the client for a time it did not choose, so the
// response (with its Retry-After) goes back to it instead.
const retryAfterNoDeadline = time.Second

// routePolicy is what a route adds to forwarding: its compiled retry policy, its rate
// limit and its counters. Immutable after compile except for the atomics inside.
type routePolicy struct {
	key      string // "<service>/<route>", stable across reloads
	retry    *resilience.RetryPolicy
	limit    *resilience.TokenBucket // nil: no route rate limit
	limitCfg *config.RateLimit
	counters *resilience.Counters
	// isDefault marks App Mesh's hidden default policy (the route set none), for /config.
	isDefault bool
}

// listenerLimit is the rate limit of one of the local node's listeners (ingress).
type listenerLimit struct {
	bucket   *resilience.TokenBucket
	cfg      config.RateLimit
	counters *resilience.Counters
}

// snapResilience is the per-snapshot side table of resilience settings that are not
// per cluster: route policies (keyed by the compiled route) and ingress listener limits
// (keyed by port). Built by compileResilience, read-only afterwards.
type snapResilience struct {
	routes  map[*router.Route]*routePolicy
	ingress map[int]*listenerLimit
	clock   resilience.Clock
}

// policy returns the route's policy; nil for routes outside the table (passthrough),
// which are neither retried nor limited.
func (r *snapResilience) policy(rt *router.Route) *routePolicy {
	if r == nil {
		return nil
	}
	return r.routes[rt]
}

// compileResilience builds the side table for table. Counters of routes and listeners
// and token buckets whose config did not change are carried over from prev, so a reload
// neither resets what /stats shows nor refills a bucket.
func compileResilience(cfg *config.Config, vn *config.VirtualNode, table *router.Table, prev *snapResilience, clock resilience.Clock) (*snapResilience, error) {
	if clock == nil {
		clock = resilience.SystemClock{}
	}
	out := &snapResilience{routes: map[*router.Route]*routePolicy{}, ingress: map[int]*listenerLimit{}, clock: clock}
	old := map[string]*routePolicy{}
	if prev != nil {
		for _, p := range prev.routes {
			old[p.key] = p
		}
	}
	now := clock.Now()
	for _, svc := range table.Services() {
		for _, rt := range svc.Routes {
			if rt.Kind == config.ProtoTCP {
				continue
			}
			p, err := compileRoutePolicy(cfg, svc, rt, old[svc.Name+"/"+rt.Name], now)
			if err != nil {
				return nil, err
			}
			out.routes[rt] = p
		}
	}
	for _, l := range vn.Spec.Listeners {
		svc := table.Ingress(l.PortMapping.Port)
		if svc == nil {
			continue
		}
		for _, rt := range svc.Routes {
			key := svc.Name + "/" + rt.Name
			p := &routePolicy{key: key, retry: resilience.NoRetryPolicy(), counters: new(resilience.Counters)}
			if o := old[key]; o != nil {
				p.counters = o.counters
			}
			out.routes[rt] = p
		}
		if l.RateLimit == nil {
			continue
		}
		ll := &listenerLimit{cfg: *l.RateLimit, counters: new(resilience.Counters)}
		if prev != nil {
			if o := prev.ingress[l.PortMapping.Port]; o != nil {
				ll.counters = o.counters
				if o.cfg == ll.cfg {
					ll.bucket = o.bucket
				}
			}
		}
		if ll.bucket == nil {
			b, err := resilience.NewTokenBucket(resilience.RateLimitConfig{RequestsPerSecond: l.RateLimit.RequestsPerSecond, Burst: l.RateLimit.Burst}, now, ll.counters)
			if err != nil {
				return nil, fmt.Errorf("listener %d: %w", l.PortMapping.Port, err)
			}
			ll.bucket = b
		}
		out.ingress[l.PortMapping.Port] = ll
	}
	return out, nil
}

func compileRoutePolicy(cfg *config.Config, svc *router.Service, rt *router.Route, old *routePolicy, now time.Time) (*routePolicy, error) {
	p := &routePolicy{key: svc.Name + "/" + rt.Name, counters: new(resilience.Counters)}
	if old != nil {
		p.counters = old.counters
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
	if in == nil {
		p.retry, p.isDefault = resilience.DefaultRetryPolicy(), true
	} else {
		rp, err := resilience.CompileRetryPolicy(*in)
		if err != nil {
			return nil, fmt.Errorf("route %s: retryPolicy.%w", p.key, err)
		}
		p.retry = rp
	}
	p.limitCfg = routeRateLimit(cfg, svc, rt)
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

// routeRateLimit finds the rateLimit of the config route rt was compiled from (routes
// of a virtual router; synthetic provider routes have none).
func routeRateLimit(cfg *config.Config, svc *router.Service, rt *router.Route) *config.RateLimit {
	if strings.HasPrefix(rt.Name, "provider:") {
		return nil
	}
	vs := cfg.VirtualService(svc.Name)
	if vs == nil || vs.Spec.Provider == nil || vs.Spec.Provider.VirtualRouter == nil {
		return nil
	}
	for _, r := range cfg.RoutesFor(vs.Spec.Provider.VirtualRouter.VirtualRouterName) {
		if r.RouteName != rt.Name {
			continue
		}
		switch rt.Kind {
		case config.ProtoHTTP:
			if r.Spec.HTTPRoute != nil {
				return r.Spec.HTTPRoute.RateLimit
			}
		case config.ProtoHTTP2:
			if r.Spec.HTTP2Route != nil {
				return r.Spec.HTTP2Route.RateLimit
			}
		case config.ProtoGRPC:
			if r.Spec.GRPCRoute != nil {
				return r.Spec.GRPCRoute.RateLimit
			}
		}
	}
	return nil
}

// rateLimited applies the ingress listener limit (when the request came in on one) and
// the route limit. It returns how long to wait when a limit refuses the request.
func (r *snapResilience) rateLimited(ingressPort int, rp *routePolicy) (refused bool, retryAfter time.Duration) {
	if r == nil {
		return false, 0
	}
	var now time.Time
	if ingressPort != 0 && len(r.ingress) > 0 {
		if ll := r.ingress[ingressPort]; ll != nil {
			now = r.clock.Now()
			if ok, wait := ll.bucket.Allow(now); !ok {
				return true, wait
			}
		}
	}
	if rp != nil && rp.limit != nil {
		if now.IsZero() {
			now = r.clock.Now()
		}
		if ok, wait := rp.limit.Allow(now); !ok {
			return true, wait
		}
	}
	return false, 0
}

// retryAfterValue formats a 429's Retry-After (whole seconds, at least 1).
func retryAfterValue(wait time.Duration) string {
	return strconv.FormatInt(resilience.RetryAfterSeconds(wait), 10)
}

// retryState is one request's retry bookkeeping, on the stack of the forwarding
// goroutine. The zero value (with policy nil) never retries.
type retryState struct {
	policy  *resilience.RetryPolicy
	route   *resilience.Counters
	backoff resilience.Backoff
	retries int  // retries made so far
	held    bool // a retry budget slot is held for the current attempt
}

// next decides whether the request gets another attempt after a retriable outcome: the
// policy's maxRetries, then the cluster's retry budget (which counts the decision). The
// budget slot of the previous retry is released first: a retry is outstanding only
// while its attempt runs.
func (rs *retryState) next(cl *cluster) bool {
	rs.release(cl)
	if rs.policy == nil || !rs.policy.MayRetry(rs.retries+1) {
		return false
	}
	if !cl.budget.TryAcquireRetryFor(cl.bal.InFlight(), rs.route) {
		return false
	}
	rs.retries++
	rs.held = true
	return true
}

func (rs *retryState) release(cl *cluster) {
	if rs.held {
		cl.budget.ReleaseRetry()
		rs.held = false
	}
}

// plan computes the wait before the next attempt: the backoff, or ra when the response
// asked for it (ra ≥ 0). ok is false when the wait would pass the deadline (zero: none)
// or, without one, a Retry-After is longer than retryAfterNoDeadline: the caller then
// answers with what it has. It does not count or wait.
func (rs *retryState) plan(ra time.Duration, deadline time.Time) (wait time.Duration, ok bool) {
	wait = rs.backoff.Delay(rs.retries + 1)
	if ra >= 0 {
		if deadline.IsZero() && ra > retryAfterNoDeadline {
			return 0, false
		}
		wait = ra
	}
	if !deadline.IsZero() && !time.Now().Add(wait).Before(deadline) {
		return 0, false
	}
	return wait, true
}

// sleep waits d on the forwarding goroutine (the request's deadline was checked by plan).
func (rs *retryState) sleep(d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	<-t.C
}

// retryAfterOf parses a Retry-After on a 429 or 503 (the statuses RFC 9110 §10.2.3
// gives it meaning on); -1 when absent or malformed.
func retryAfterOf(status int, value string, ok bool, now time.Time) time.Duration {
	if !ok || (status != 429 && status != 503) {
		return -1
	}
	if d, ok := resilience.ParseRetryAfter(value, now); ok {
		return d
	}
	return -1
}

// retriableErr reports whether a failed attempt may be retried under p: a connect
// failure (nothing was sent) under connection-error, a reset or per-try timeout
// (before response headers) under the reset events when the body can be replayed.
// An expired request deadline is never retried.
func retriableErr(p *resilience.RetryPolicy, err error, replayable, perTryExpired bool) bool {
	if p == nil {
		return false
	}
	kind := errorKind(err)
	switch {
	case kind == errConnect:
		return p.RetryOnConnectFailure()
	case kind == errOverflowKind || kind == errNoEndpoint || kind == errProtocol:
		return false
	case isTimeout(err) && !perTryExpired:
		return false
	case isRefusedStream(err):
		return replayable && (p.RetryOnRefusedStream() || p.RetryOnReset())
	}
	return replayable && p.RetryOnReset()
}

// attemptEnd reports one attempt's end: the balancer's Done (in-flight count, totals)
// and, for failures the upstream is to blame for, outlier detection. A failure caused by
// the downstream (blame false) is not held against the endpoint. Ejections are applied
// to the balancer at once: they are rare, and the next pick must not choose the endpoint.
func (c *cluster) attemptEnd(res balancer.Result, info balancer.DoneInfo, blame bool) {
	res.Done(info)
	if c.outlier == nil || res.Endpoint == nil {
		return
	}
	failedLocal := blame && info.Err != nil
	if !failedLocal && info.Status < 500 {
		return // successes cost nothing
	}
	r := resilience.Result{Status: info.Status, Err: failedLocal, LocalOrigin: failedLocal}
	if c.outlier.Record(res.Endpoint.Address, r, c.clock.Now()) {
		c.bal.SetEjected(res.Endpoint.Address, true)
	}
}

// breakerOutcome turns an attempt's end into what the cluster breaker counts.
func breakerOutcome(status int, err error, blame bool) resilience.Outcome {
	switch {
	case err != nil && !blame:
		return resilience.Ignored
	case err != nil || status >= 500:
		return resilience.Failure
	}
	return resilience.Success
}

// resilienceTable is s's side table; nil for a nil snapshot (the first compile).
func (s *Snapshot) resilienceTable() *snapResilience {
	if s == nil {
		return nil
	}
	return s.res
}

// clusterCounters returns the counters of s's cluster name, nil if s has none.
func (s *Snapshot) clusterCounters(name string) *resilience.Counters {
	if s == nil {
		return nil
	}
	if c := s.clusters[name]; c != nil {
		return c.counters
	}
	return nil
}
