package state

import (
	"math"
	"sync/atomic"

	"github.com/meshd/meshd/proxy/upstream"
)

// Mirror is a route's compiled mirror (the route's action.mirror extension): the
// cluster the copies go to, the sampling threshold, the in-flight count of copies to
// that cluster (shared by every route mirroring to it) and the route's mirror counters.
type Mirror struct {
	cluster   *upstream.Cluster
	threshold uint64
	inFlight  *atomic.Int64
	stats     *MirrorStats
}

// MirrorStats count a route's sampled requests by what became of their copy. Carried
// across reloads by route key, like the route's other counters.
type MirrorStats struct {
	Sent            atomic.Uint64 // the mirror answered (any status; its response discarded)
	SkippedBody     atomic.Uint64 // not copied: the body was not kept whole (streamed, over the replay bound, an upgrade)
	SkippedOverflow atomic.Uint64 // not copied: the mirror cluster had its bound of copies in flight
	Failed          atomic.Uint64 // copied, but no response came back (no endpoint, connect failure, reset, timeout)
}

// Cluster is the cluster the copies go to.
func (m *Mirror) Cluster() *upstream.Cluster { return m.cluster }

// Stats are the route's mirror counters.
func (m *Mirror) Stats() *MirrorStats { return m.stats }

// Sampled reports whether the request whose uniform 64-bit draw is draw is copied.
func (m *Mirror) Sampled(draw uint64) bool {
	return draw < m.threshold || m.threshold == math.MaxUint64
}

// Acquire takes one of the mirror cluster's max in-flight slots; false when all are
// taken. Release gives it back.
func (m *Mirror) Acquire(max int64) bool {
	if m.inFlight.Add(1) > max {
		m.inFlight.Add(-1)
		return false
	}
	return true
}

// Release gives back a slot Acquire took.
func (m *Mirror) Release() { m.inFlight.Add(-1) }

// InFlight is the number of copies to the mirror's cluster in flight now.
func (m *Mirror) InFlight() int64 { return m.inFlight.Load() }

// Mirror is the route's mirror; nil when the route has none.
func (p *RoutePolicy) Mirror() *Mirror { return p.mirror }

// MirrorStats are the route's mirror counters: nil when the route never had a mirror
// since the counters were created (a route whose mirror was removed keeps them).
func (p *RoutePolicy) MirrorStats() *MirrorStats { return p.mirrorStats }

// compileMirrors gives every route with a mirror its compiled Mirror, once the
// snapshot's clusters exist. The in-flight counts are carried over by cluster name, so
// a reload during a burst does not lift the bound.
func (s *Snapshot) compileMirrors(prev *Snapshot) {
	for _, rt := range s.table.Routes() {
		p := s.policies[rt.ID]
		if rt.Mirror == nil || p == nil {
			continue
		}
		cl := s.clusters[rt.Mirror.Cluster]
		if cl == nil {
			continue // the router registers every mirror cluster: unreachable
		}
		slots := s.mirrorSlots[cl.Name()]
		if slots == nil {
			if prev != nil {
				slots = prev.mirrorSlots[cl.Name()]
			}
			if slots == nil {
				slots = new(atomic.Int64)
			}
			if s.mirrorSlots == nil {
				s.mirrorSlots = map[string]*atomic.Int64{}
			}
			s.mirrorSlots[cl.Name()] = slots
		}
		if p.mirrorStats == nil {
			p.mirrorStats = new(MirrorStats)
		}
		p.mirror = &Mirror{cluster: cl, threshold: rt.Mirror.Threshold(), inFlight: slots, stats: p.mirrorStats}
	}
}
