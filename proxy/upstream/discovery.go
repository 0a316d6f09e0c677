package upstream

import (
	"slices"
	"sync"

	"github.com/meshd/meshd/discovery"
)

// follow is the cluster's side of discovery: the plan it follows, its subscriptions,
// and the last set each name gave.
type follow struct {
	mu    sync.Mutex
	plan  discovery.Plan
	reg   *discovery.Registry
	subs  []*discovery.Subscription
	sets  [][]discovery.Endpoint // by name, as last pushed
	ready []<-chan struct{}
}

// Follow gives the cluster its endpoints as plan says: fixed endpoints at once; each
// name through reg, whose sets are merged with the fixed ones and handed to the balancer
// as one complete set on every change (endpoints that stay keep their pools, health and
// ejection state; removed ones take no new requests, finish what is in flight, and their
// idle connections close). Call it once, before the cluster serves; Close stops it.
func (c *Cluster) Follow(reg *discovery.Registry, plan discovery.Plan) {
	f := &c.follow
	f.mu.Lock()
	f.plan, f.reg = plan, reg
	f.sets = make([][]discovery.Endpoint, len(plan.Names))
	c.bal.Update(plan.Fixed)
	f.mu.Unlock()
	for i, spec := range plan.Names {
		sub := reg.Watch(spec, func(eps []discovery.Endpoint) { c.pushed(i, eps) })
		f.mu.Lock()
		f.subs = append(f.subs, sub)
		f.ready = append(f.ready, sub.Ready())
		f.mu.Unlock()
	}
}

// pushed records name i's new set and updates the balancer with the union.
func (c *Cluster) pushed(i int, eps []discovery.Endpoint) {
	f := &c.follow
	f.mu.Lock()
	defer f.mu.Unlock()
	if c.closed.Load() {
		return
	}
	f.sets[i] = eps
	all := slices.Clone(f.plan.Fixed)
	for _, s := range f.sets {
		all = append(all, s...)
	}
	c.bal.Update(all)
}

// Plan is what the cluster follows (Follow's plan; zero for a passthrough cluster).
func (c *Cluster) Plan() discovery.Plan {
	c.follow.mu.Lock()
	defer c.follow.mu.Unlock()
	return c.follow.plan
}

// Resolved returns channels closed once each followed name's first resolution ended,
// successful or not, so a compile can wait (bounded) for the first sets.
func (c *Cluster) Resolved() []<-chan struct{} {
	c.follow.mu.Lock()
	defer c.follow.mu.Unlock()
	return slices.Clone(c.follow.ready)
}

// DiscoveryStatus is the state of each followed name, for /clusters.
func (c *Cluster) DiscoveryStatus() []discovery.Status {
	f := &c.follow
	f.mu.Lock()
	names, reg := f.plan.Names, f.reg
	f.mu.Unlock()
	out := make([]discovery.Status, 0, len(names))
	for _, spec := range names {
		if st, ok := reg.Status(spec); ok {
			out = append(out, st)
		}
	}
	return out
}

// stopFollowing ends the subscriptions (Close).
func (c *Cluster) stopFollowing() {
	f := &c.follow
	f.mu.Lock()
	subs := f.subs
	f.subs = nil
	f.mu.Unlock()
	for _, s := range subs {
		s.Stop()
	}
}

// Registry is the registry the cluster follows its names through (nil: none).
func (c *Cluster) Registry() *discovery.Registry {
	c.follow.mu.Lock()
	defer c.follow.mu.Unlock()
	return c.follow.reg
}
