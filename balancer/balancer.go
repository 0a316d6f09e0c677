// Package balancer holds each cluster's endpoint set and picks an endpoint per request.
//
// The control plane (Update, and later health and ejection changes) is serialized per
// cluster and builds a new immutable picker that it publishes with an atomic.Pointer.
// The data plane (Pick, Done) loads that picker once per request and never blocks,
// locks or allocates; what it mutates are per-endpoint atomic counters.
package balancer

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/resilience"
)

// Policy is how a cluster spreads requests over its endpoints. The values are the
// strings of the config extension virtualNode.spec.loadBalancing.policy.
type Policy string

const (
	// LeastRequest is power of two choices on in-flight requests, weighted with Envoy's
	// effective weight weight/(active+1). It is the default.
	LeastRequest Policy = "LEAST_REQUEST"
	// RoundRobin is smooth weighted round robin.
	RoundRobin Policy = "ROUND_ROBIN"
	// Random is weighted random.
	Random Policy = "RANDOM"
	// RingHash is consistent hashing on a ring (Karger et al.; Envoy's ring_hash) of
	// the request's key (Options.Hash); requests without a key are least-request.
	RingHash Policy = "RING_HASH"
	// Maglev is consistent hashing with Maglev's lookup table; requests without a key
	// are least-request.
	Maglev Policy = "MAGLEV"
)

// Hashing reports whether p picks by the request's hash key.
func (p Policy) Hashing() bool { return p == RingHash || p == Maglev }

// ParsePolicy checks a configured policy string; "" means LeastRequest. Config
// validation calls it so that NewCluster never sees an unknown policy.
func ParsePolicy(s string) (Policy, error) {
	switch p := Policy(s); p {
	case "":
		return LeastRequest, nil
	case LeastRequest, RoundRobin, Random, RingHash, Maglev:
		return p, nil
	}
	return "", fmt.Errorf("loadBalancing.policy %q: want one of %s, %s, %s, %s, %s", s, LeastRequest, RoundRobin, Random, RingHash, Maglev)
}

// ErrNoEndpoints is returned by Pick when the cluster has no endpoint to offer.
var ErrNoEndpoints = errors.New("balancer: no endpoints")

// Endpoint is one upstream address as the balancer tracks it. A *Endpoint lives as long
// as its address stays in the cluster's set: Updates that keep the address keep the
// pointer, its counters and Meta.
type Endpoint struct {
	// Address is "ip:port"; it never changes.
	Address string
	// Meta is owner data (the proxy hangs its connection pool here). It is set by
	// Options.OnAdd before the endpoint is first published and is stable for the
	// endpoint's life, so readers need no synchronization.
	Meta any

	weight   atomic.Uint32
	inFlight atomic.Int64
	requests atomic.Uint64
	failures atomic.Uint64

	// Availability inputs, written by the control plane under the cluster's update lock
	// (SetHealthy, SetEjected) and read by buildPicker and Snapshot. They survive
	// Updates that keep the address.
	unhealthy atomic.Bool
	ejected   atomic.Bool

	// rampFrom is when the endpoint's slow start began (zero: none, or over); owned by
	// the control plane under the cluster's update lock.
	rampFrom time.Time
}

// Weight is the endpoint's current weight (at least 1). It is a method, not a field,
// because an Update may change the weight of an address that stays while other
// goroutines read it.
func (e *Endpoint) Weight() uint32 { return e.weight.Load() }

// InFlight is the number of picks of e whose Done has not been called yet.
func (e *Endpoint) InFlight() int64 { return e.inFlight.Load() }

// available is the one availability predicate: healthy by active checks and not
// ejected by outlier detection. The control plane builds pickers over the endpoints for
// which it holds, unless the cluster is in panic (buildPicker); the pickers never look.
func (e *Endpoint) available() bool { return !e.unhealthy.Load() && !e.ejected.Load() }

// Healthy reports whether active health checks pass (true when none are configured).
func (e *Endpoint) Healthy() bool { return !e.unhealthy.Load() }

// Ejected reports whether outlier detection has ejected e.
func (e *Endpoint) Ejected() bool { return e.ejected.Load() }

// Options configure a Cluster. The zero value is least-request with the default RNG.
type Options struct {
	// Policy is the picking policy; "" means LeastRequest, and an unknown value also
	// falls back to LeastRequest (validate with ParsePolicy first).
	Policy Policy
	// Rand is the randomness source; nil means math/rand/v2's Uint64 (lock-free,
	// per-P). It is called from Pick, so it must be safe for concurrent use when
	// Pick is called concurrently; tests inject a seeded generator.
	Rand func() uint64
	// OnAdd is called from Update, serialized, for each new address before it is
	// published; it may set e.Meta. It must not call back into the Cluster's Update.
	OnAdd func(*Endpoint)
	// OnRemove is called from Update, serialized, after an address has left the
	// published set, so the owner can drain what it hung on Meta. Picks made before
	// the removal may still be in flight and call Done later.
	OnRemove func(*Endpoint)
	// PanicThresholdPercent: when fewer than this share of the endpoints are available,
	// Pick ignores availability and spreads over all of them (Envoy's healthy panic
	// threshold), rather than black-holing the service when health checks are broken
	// or most endpoints are ejected. 0 means resilience.DefaultPanicThresholdPercent
	// (50); a negative value disables panic mode.
	PanicThresholdPercent int
	// Hash is what RING_HASH and MAGLEV hash; it must be set for them (nil: those
	// policies pick every request by least request).
	Hash *HashOn
	// SlowStart ramps new and recovered endpoints (zero Window: off). Ignored by the
	// hash policies, which config validation refuses it with.
	SlowStart SlowStart
	// Clock times slow start; nil means the system clock.
	Clock resilience.Clock
	// Known, when not nil, are the addresses a cluster this one replaces (a reload that
	// rebuilt it) was serving: the first Update then slow-starts only the others, as if
	// the cluster had lived on.
	Known []string
}

// Cluster is one upstream cluster's endpoint set and picker. Pick, Done, Snapshot and
// Len may be called from any goroutine at any time; Update calls are serialized
// internally and may run concurrently with all of them.
type Cluster struct {
	name   string
	policy Policy
	rand   func() uint64
	onAdd  func(*Endpoint)
	onRm   func(*Endpoint)
	panicT int // percent; ≤ 0 disables
	hash   *HashOn
	slow   SlowStart
	clock  resilience.Clock

	// cursor is the round-robin position. It lives in the cluster, not the picker, so
	// an Update does not restart the rotation at the first endpoint.
	cursor    atomic.Uint64
	picker    atomic.Pointer[picker]
	fallbacks atomic.Uint64 // RING_HASH picks that passed over an unavailable endpoint

	mu      sync.Mutex           // serializes Update
	byAddr  map[string]*Endpoint // the current set; owned by Update under mu
	seeded  bool                 // an Update ran: later new endpoints slow-start
	known   map[string]bool      // Options.Known until the first Update
	ramping bool                 // some endpoint's slow start is not over; under mu
}

// NewCluster returns an empty cluster; Pick fails with ErrNoEndpoints until the first
// Update.
func NewCluster(name string, opts Options) *Cluster {
	c := &Cluster{
		name:   name,
		policy: opts.Policy,
		rand:   opts.Rand,
		onAdd:  opts.OnAdd,
		onRm:   opts.OnRemove,
		panicT: opts.PanicThresholdPercent,
		hash:   opts.Hash,
		slow:   opts.SlowStart,
		clock:  opts.Clock,
		byAddr: map[string]*Endpoint{},
	}
	if c.panicT == 0 {
		c.panicT = resilience.DefaultPanicThresholdPercent
	}
	switch c.policy {
	case RoundRobin, Random:
	case RingHash, Maglev:
		c.slow = SlowStart{} // keys must not move while a weight ramps
	default:
		c.policy = LeastRequest
	}
	if c.slow.Aggression <= 0 {
		c.slow.Aggression = 1
	}
	if c.slow.MinWeightPercent <= 0 {
		c.slow.MinWeightPercent = 10
	}
	if c.clock == nil {
		c.clock = resilience.SystemClock{}
	}
	if opts.Known != nil {
		c.seeded = true
		c.known = make(map[string]bool, len(opts.Known))
		for _, a := range opts.Known {
			c.known[a] = true
		}
	}
	if c.rand == nil {
		c.rand = rand.Uint64
	}
	// A random start keeps many proxies that load the same config from sending their
	// first requests to the same endpoint in lockstep.
	c.cursor.Store(c.rand())
	c.picker.Store(&picker{})
	return c
}

// Name is the cluster name routes refer to.
func (c *Cluster) Name() string { return c.name }

// Policy is the policy in effect (after defaulting).
func (c *Cluster) Policy() Policy { return c.policy }

// HashFallbacks counts RING_HASH picks whose hashed endpoint was unavailable (unhealthy
// or ejected), so the key went to the next one on the ring.
func (c *Cluster) HashFallbacks() uint64 { return c.fallbacks.Load() }

// RampingEndpoints is how many endpoints are below their full weight (slow start) in
// the current picker.
func (c *Cluster) RampingEndpoints() int { return c.picker.Load().rampingN }

// HashOn is what the cluster's hash policy hashes; nil when the policy does not hash.
// Front ends ask it once per request to find the key to pass in PickInfo.
func (c *Cluster) HashOn() *HashOn {
	if !c.policy.Hashing() {
		return nil
	}
	return c.hash
}

// Update replaces the endpoint set with eps, a complete set as discovery produces it.
// Endpoints whose address stays keep their *Endpoint (in-flight count, totals, Meta)
// and take the new weight; a weight of 0 counts as 1; of duplicate addresses the first
// wins. OnAdd runs for each new address before the new set is published, OnRemove for
// each address that left after it is published, each exactly once per change and in a
// deterministic order (OnAdd in eps order, OnRemove by address).
func (c *Cluster) Update(eps []discovery.Endpoint) {
	c.mu.Lock()
	defer c.mu.Unlock()

	next := make(map[string]*Endpoint, len(eps))
	var added []*Endpoint
	var now time.Time
	if c.seeded && c.slow.Window > 0 {
		now = c.clock.Now()
	}
	for _, de := range eps {
		if _, dup := next[de.Address]; dup {
			continue
		}
		e := c.byAddr[de.Address]
		if e == nil {
			e = &Endpoint{Address: de.Address}
			if !c.known[de.Address] {
				e.rampFrom = now
			}
			added = append(added, e)
		}
		e.weight.Store(max(de.Weight, 1))
		next[de.Address] = e
	}
	var removed []*Endpoint
	for addr, e := range c.byAddr {
		if next[addr] == nil {
			removed = append(removed, e)
		}
	}
	slices.SortFunc(removed, func(a, b *Endpoint) int { return strings.Compare(a.Address, b.Address) })

	if c.onAdd != nil {
		for _, e := range added {
			c.onAdd(e)
		}
	}
	c.byAddr = next
	c.seeded, c.known = true, nil
	c.publish()
	if c.onRm != nil {
		for _, e := range removed {
			c.onRm(e)
		}
	}
}

// SetHealthy records the verdict of active health checks for addr and rebuilds the
// picker when it changed. It reports whether addr is in the set and its state changed.
// Control plane: serialized with Update; safe from any goroutine.
func (c *Cluster) SetHealthy(addr string, healthy bool) bool {
	return c.setFlag(addr, healthy, func(e *Endpoint) *atomic.Bool { return &e.unhealthy }, true)
}

// SetEjected records an outlier ejection (true) or return (false) of addr and rebuilds
// the picker when it changed. It reports whether addr is in the set and changed.
// Control plane: serialized with Update; safe from any goroutine.
func (c *Cluster) SetEjected(addr string, ejected bool) bool {
	return c.setFlag(addr, ejected, func(e *Endpoint) *atomic.Bool { return &e.ejected }, false)
}

func (c *Cluster) setFlag(addr string, v bool, flag func(*Endpoint) *atomic.Bool, invert bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.byAddr[addr]
	if e == nil {
		return false
	}
	if invert {
		v = !v
	}
	was := e.available()
	if flag(e).Swap(v) == v {
		return false
	}
	if !was && e.available() && c.slow.Window > 0 {
		e.rampFrom = c.clock.Now() // recovered: ramps like a new endpoint
	}
	c.publish()
	return true
}

// publish builds and stores the picker for the current set; under mu.
func (c *Cluster) publish() {
	var now time.Time
	if c.slow.Window > 0 {
		now = c.clock.Now()
	}
	p := buildPicker(c.byAddr, c.policy, c.panicT, &c.slow, now)
	c.ramping = p.ramping
	c.picker.Store(p)
}

// Addresses lists the current endpoint addresses, sorted, for the control plane (health
// checkers, outlier detection). The slice is fresh; the caller may keep it.
func (c *Cluster) Addresses() []string {
	p := c.picker.Load()
	out := make([]string, len(p.all))
	for i, e := range p.all {
		out[i] = e.Address
	}
	return out
}

// Panic reports whether the current picker is in panic mode: too few endpoints are
// available, so Pick spreads over all of them.
func (c *Cluster) Panic() bool { return c.picker.Load().panic }

// Available is the number of endpoints the availability predicate admits now.
func (c *Cluster) Available() int { return c.picker.Load().available }

// PickInfo is what a caller tells Pick about the request.
type PickInfo struct {
	// Avoid asks for another endpoint than this one (a retry after it failed), when
	// the set offers another; otherwise it is picked anyway.
	Avoid *Endpoint
	// Hash is the request's key (Key of a header or cookie value, or of the source IP)
	// when Hashed; the hash policies pick by it, and without it by least request.
	Hash   uint64
	Hashed bool
}

// Result is one successful pick. Its Done must be called exactly once.
type Result struct {
	Endpoint *Endpoint
}

// DoneInfo is how a picked request ended.
type DoneInfo struct {
	// Err is a local failure (connect, reset, timeout); nil if a response came back.
	Err error
	// Status is the HTTP status of the response, 0 for none (opaque TCP).
	Status int
	// Latency is the time from pick to the end of the response.
	Latency time.Duration
}

// failed is whether the request counts as a failure: a local error or a 5xx, the two
// origins Envoy's outlier detection counts.
func (d DoneInfo) failed() bool { return d.Err != nil || d.Status >= 500 }

// Done records the end of the request: it releases the in-flight slot Pick took and
// adds to the endpoint's request and failure totals. It must be called exactly once per
// successful Pick, from any goroutine; it never blocks. Done on the zero Result (from a
// failed Pick) does nothing.
func (r Result) Done(d DoneInfo) {
	e := r.Endpoint
	if e == nil {
		return
	}
	e.inFlight.Add(-1)
	e.requests.Add(1)
	if d.failed() {
		e.failures.Add(1)
	}
}

// Pick chooses an endpoint for one request by the cluster's policy among the available
// endpoints of the current set, and counts the request in flight on it. It fails only
// with ErrNoEndpoints. It never blocks, locks or allocates.
func (c *Cluster) Pick(info PickInfo) (Result, error) {
	p := c.picker.Load()
	if len(p.eps) == 0 {
		return Result{}, ErrNoEndpoints
	}
	var e *Endpoint
	switch c.policy {
	case RoundRobin:
		e = p.roundRobin(c.cursor.Add(1), info.Avoid)
	case Random:
		e = p.random(c.rand, info.Avoid)
	case RingHash:
		if info.Hashed {
			var fellBack bool
			if e, fellBack = p.ringPick(info.Hash, info.Avoid); fellBack {
				c.fallbacks.Add(1)
			}
		} else {
			e = p.leastRequest(c.rand(), info.Avoid)
		}
	case Maglev:
		if info.Hashed {
			e = p.maglevPick(info.Hash, info.Avoid)
		} else {
			e = p.leastRequest(c.rand(), info.Avoid)
		}
	default:
		e = p.leastRequest(c.rand(), info.Avoid)
	}
	e.inFlight.Add(1)
	return Result{Endpoint: e}, nil
}

// EndpointStatus is one endpoint's state for the admin /clusters page. Healthy is the
// active health check verdict; Ejected is outlier detection's.
type EndpointStatus struct {
	Address            string
	Weight             uint32
	InFlight           int64
	Requests, Failures uint64
	Healthy, Ejected   bool
	// RampPercent is the share of Weight the endpoint gets while slow start ramps it
	// (its effective weight is Weight × RampPercent / 100); absent once it has its full
	// weight, when slow start is off, and while it is not available.
	RampPercent uint32 `json:",omitempty"`
}

// Snapshot lists the current endpoints, sorted by address. The counters are read one
// by one, not as one atomic picture.
func (c *Cluster) Snapshot() []EndpointStatus {
	p := c.picker.Load()
	out := make([]EndpointStatus, len(p.all))
	for i, e := range p.all {
		out[i] = EndpointStatus{
			Address:  e.Address,
			Weight:   e.Weight(),
			InFlight: e.InFlight(),
			Requests: e.requests.Load(),
			Failures: e.failures.Load(),
			Healthy:  e.Healthy(),
			Ejected:  e.Ejected(),
		}
	}
	if p.ramping {
		at := make(map[*Endpoint]int, len(p.eps))
		for i, e := range p.eps {
			at[e] = i
		}
		for i, e := range p.all {
			if j, ok := at[e]; ok && p.raw[j] > 0 && p.w[j] < p.raw[j]*slowScale {
				out[i].RampPercent = p.w[j] / p.raw[j]
			}
		}
	}
	return out
}

// Len is the number of endpoints in the current set, available or not.
func (c *Cluster) Len() int { return len(c.picker.Load().all) }

// InFlight is the number of requests in flight to the cluster (the sum over its current
// endpoints). It walks the endpoint set, so it is for rare decisions (a retry asking the
// retry budget), not for every request.
func (c *Cluster) InFlight() int64 {
	var n int64
	for _, e := range c.picker.Load().all {
		n += max(e.inFlight.Load(), 0)
	}
	return n
}
