package balancer

import (
	"math/bits"
	"slices"
	"strings"
	"time"

	"github.com/meshd/meshd/resilience"
)

// maxSchedule bounds the precomputed round-robin schedule (slots, 4 bytes each). Weight
// sets whose reduced total is larger fall back to cumulative weights and binary search,
// which is exact per cycle but serves each endpoint's share in one run instead of
// interleaved.
const maxSchedule = 1 << 16

// picker is one immutable view of a cluster, built by Update and shared by every Pick
// that loads it. Nothing in it is written after publication.
type picker struct {
	all []*Endpoint // the whole set, sorted by address (Snapshot, Len)
	eps []*Endpoint // the endpoints Pick chooses among, in the same order

	available int      // endpoints of all that are available
	panic     bool     // too few available: eps is all
	w         []uint32 // weight of eps[i], as of this picker

	uniform bool     // every weight in w is equal: pick by index alone
	cum     []uint64 // cum[i] = w[0] + ... + w[i]; nil when uniform
	total   uint64   // sum of w
	sched   []uint32 // ROUND_ROBIN slots as indexes into eps; nil when uniform or too long

	ramping  bool        // some endpoint of eps has less than its weight (slow start)
	rampingN int         // how many
	raw      []uint32    // while ramping: the configured weights of eps (w holds the ramped ones)
	ring     []ringPoint // RING_HASH: points over all
	ok       []bool      // RING_HASH: ok[i] when all[i] may be picked
	table    []uint32    // MAGLEV: slots as indexes into eps
}

// buildPicker turns the current set into a picker. It runs under the cluster's update
// lock, so it is the single place where availability and the panic threshold (percent;
// ≤ 0 disables) are applied.
//
// With slow start (slow.Window > 0) each weight is scaled by the endpoint's ramp factor
// at now, in hundredths, as long as some endpoint is ramping.
func buildPicker(set map[string]*Endpoint, policy Policy, panicThreshold int, slow *SlowStart, now time.Time) *picker {
	p := &picker{all: make([]*Endpoint, 0, len(set))}
	for _, e := range set {
		p.all = append(p.all, e)
		if e.available() {
			p.available++
		}
	}
	slices.SortFunc(p.all, func(a, b *Endpoint) int { return strings.Compare(a.Address, b.Address) })
	p.panic = resilience.PanicMode(p.available, len(p.all), panicThreshold)
	var factors []uint32
	for _, e := range p.all {
		if p.panic || e.available() {
			p.eps = append(p.eps, e)
			p.w = append(p.w, e.Weight())
			if slow != nil && slow.Window > 0 {
				f := slow.factor(e.rampFrom, now)
				if f == slowScale {
					e.rampFrom = time.Time{}
				}
				factors = append(factors, f)
				if f < slowScale {
					p.ramping = true
					p.rampingN++
				}
			}
		}
	}
	if len(p.eps) == 0 {
		return p
	}
	if p.ramping {
		p.raw = slices.Clone(p.w)
		for i, f := range factors {
			p.w[i] = uint32(min(uint64(p.w[i])*uint64(f), 1<<32-1))
		}
	}
	switch policy {
	case RingHash:
		p.ring = buildRing(p.all)
		p.ok = make([]bool, len(p.all))
		for i, e := range p.all {
			p.ok[i] = p.panic || e.available()
		}
	case Maglev:
		p.table = buildMaglev(p.eps, p.w)
	}
	p.uniform = true
	for _, w := range p.w {
		p.total += uint64(w)
		p.uniform = p.uniform && w == p.w[0]
	}
	if !p.uniform || p.ramping { // leastRequestRamping draws by cum even when all ramp alike
		p.cum = make([]uint64, len(p.w))
		var sum uint64
		for i, w := range p.w {
			sum += uint64(w)
			p.cum[i] = sum
		}
	}
	if !p.uniform && policy == RoundRobin {
		p.sched = schedule(p.w)
	}
	return p
}

// schedule precomputes smooth weighted round robin (nginx's algorithm) over the weights
// reduced by their greatest common divisor: every window of len(sched) consecutive
// slots holds each endpoint exactly its reduced weight times, spread out rather than
// in runs. It returns nil when the schedule would exceed maxSchedule slots.
func schedule(ws []uint32) []uint32 {
	g := uint64(0)
	for _, w := range ws {
		g = gcd(g, uint64(w))
	}
	var total uint64
	for _, w := range ws {
		total += uint64(w) / g
	}
	if total > maxSchedule {
		return nil
	}
	sched := make([]uint32, total)
	cur := make([]int64, len(ws))
	for s := range sched {
		best := 0
		for i, w := range ws {
			cur[i] += int64(uint64(w) / g)
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= int64(total)
		sched[s] = uint32(best)
	}
	return sched
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// below maps a random 64-bit value to [0, n) by multiply-shift (Lemire), which avoids a
// division; the bias is at most n/2^64.
func below(x, n uint64) uint64 {
	hi, _ := bits.Mul64(x, n)
	return hi
}

// search returns the first i with cum[i] > r, the endpoint owning weight unit r.
func (p *picker) search(r uint64) int {
	lo, hi := 0, len(p.cum)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if p.cum[m] > r {
			hi = m
		} else {
			lo = m + 1
		}
	}
	return lo
}

// leastRequest is power of two choices: two distinct random candidates (when there
// are two), the one with the higher effective weight wins, ties going to the first.
// The effective weight is Envoy's weight/(active_requests+1); with equal weights that is
// "fewer in flight wins". If the winner is to be avoided, the other candidate is taken.
func (p *picker) leastRequest(x uint64, avoid *Endpoint) *Endpoint {
	n := uint64(len(p.eps))
	if n == 1 {
		return p.eps[0]
	}
	if p.ramping {
		return p.leastRequestRamping(x, avoid)
	}
	// One 64-bit draw gives both candidates: the low half picks i in [0,n), the high
	// half picks j among the other n-1.
	i := (x & 0xffffffff) * n >> 32
	j := (x >> 32) * (n - 1) >> 32
	if j >= i {
		j++
	}
	a, b := p.eps[i], p.eps[j]
	if !p.atLeast(i, j) {
		a, b = b, a
	}
	if a == avoid {
		return b
	}
	return a
}

// leastRequestRamping is least request while some endpoint slow-starts, Envoy's
// weighted least request in spirit: the two candidates are drawn by ramped weight, and
// the one with the higher configured weight/(in flight+1) wins, ties to the first. Idle,
// an endpoint thus gets its ramped share of the requests; under load the lighter-loaded
// candidate still wins. (Plain power of two choices would give a ramping endpoint no
// request at all while the others are idle: it never wins on weight.)
func (p *picker) leastRequestRamping(x uint64, avoid *Endpoint) *Endpoint {
	i := uint64(p.search(below(x, p.total)))
	j := uint64(p.search(below(fmix64(x^0x9e3779b97f4a7c15), p.total)))
	ri := max(p.eps[i].inFlight.Load(), 0)
	rj := max(p.eps[j].inFlight.Load(), 0)
	hi1, lo1 := bits.Mul64(uint64(p.raw[i]), uint64(rj)+1)
	hi2, lo2 := bits.Mul64(uint64(p.raw[j]), uint64(ri)+1)
	a, b := p.eps[i], p.eps[j]
	if !(hi1 > hi2 || (hi1 == hi2 && lo1 >= lo2)) {
		a, b = b, a
	}
	if a != avoid {
		return a
	}
	if b != avoid {
		return b
	}
	// Both candidates are the endpoint to avoid: the next one in address order.
	for k, e := range p.eps {
		if e == avoid {
			return p.eps[(k+1)%len(p.eps)]
		}
	}
	return a
}

// atLeast reports whether eps[i]'s effective weight is at least eps[j]'s:
// w_i/(r_i+1) >= w_j/(r_j+1), compared exactly as w_i*(r_j+1) >= w_j*(r_i+1) in 128 bits.
func (p *picker) atLeast(i, j uint64) bool {
	ri := max(p.eps[i].inFlight.Load(), 0)
	rj := max(p.eps[j].inFlight.Load(), 0)
	if p.uniform {
		return ri <= rj
	}
	hi1, lo1 := bits.Mul64(uint64(p.w[i]), uint64(rj)+1)
	hi2, lo2 := bits.Mul64(uint64(p.w[j]), uint64(ri)+1)
	return hi1 > hi2 || (hi1 == hi2 && lo1 >= lo2)
}

// roundRobin serves slot pos of the weighted rotation. An endpoint to avoid is replaced
// by the next one in address order, which is deterministic and O(1).
func (p *picker) roundRobin(pos uint64, avoid *Endpoint) *Endpoint {
	n := len(p.eps)
	var i int
	switch {
	case p.uniform:
		i = int(pos % uint64(n))
	case p.sched != nil:
		i = int(p.sched[pos%uint64(len(p.sched))])
	default:
		i = p.search(pos % p.total)
	}
	if p.eps[i] == avoid && n > 1 {
		i = (i + 1) % n
	}
	return p.eps[i]
}

// random draws an endpoint with probability weight/total. An endpoint to avoid is
// replaced by a second draw over the others' weights, so a retry is spread by weight
// among the rest too.
func (p *picker) random(rnd func() uint64, avoid *Endpoint) *Endpoint {
	n := uint64(len(p.eps))
	if p.uniform {
		i := below(rnd(), n)
		if p.eps[i] == avoid && n > 1 {
			j := below(rnd(), n-1)
			if j >= i {
				j++
			}
			i = j
		}
		return p.eps[i]
	}
	i := p.search(below(rnd(), p.total))
	if p.eps[i] == avoid && n > 1 {
		// Draw among the weight units outside eps[i]'s range [cum[i]-w[i], cum[i]).
		wi := uint64(p.w[i])
		r := below(rnd(), p.total-wi)
		if r >= p.cum[i]-wi {
			r += wi
		}
		i = p.search(r)
	}
	return p.eps[i]
}
