package balancer

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"

	"github.com/meshd/meshd/discovery"
)

// seeded returns a deterministic, single-goroutine RNG for tests.
func seeded(seed uint64) func() uint64 {
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)).Uint64
}

func eps(weights ...uint32) []discovery.Endpoint {
	out := make([]discovery.Endpoint, len(weights))
	for i, w := range weights {
		out[i] = discovery.Endpoint{Address: fmt.Sprintf("10.0.0.%d:80", i+1), Weight: w}
	}
	return out
}

func uniformEps(n int) []discovery.Endpoint {
	ws := make([]uint32, n)
	for i := range ws {
		ws[i] = 1
	}
	return eps(ws...)
}

func newCluster(t testing.TB, policy Policy, seed uint64, set []discovery.Endpoint) *Cluster {
	t.Helper()
	c := NewCluster("test", Options{Policy: policy, Rand: seeded(seed)})
	c.Update(set)
	return c
}

func mustPick(t testing.TB, c *Cluster, info PickInfo) Result {
	t.Helper()
	r, err := c.Pick(info)
	if err != nil {
		t.Fatalf("Pick: %v", err)
	}
	return r
}

// counts picks n times, finishing each request at once, and counts per address.
func counts(t testing.TB, c *Cluster, n int, info PickInfo) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		r := mustPick(t, c, info)
		got[r.Endpoint.Address]++
		r.Done(DoneInfo{})
	}
	return got
}

// hold leaves k requests open on addr. It keeps picks open until addr has k of them
// (least-request would otherwise never choose a loaded endpoint), then finishes the rest.
func hold(t testing.TB, c *Cluster, addr string, k int) []Result {
	t.Helper()
	var held, others []Result
	for i := 0; len(held) < k; i++ {
		if i > 100*k {
			t.Fatalf("could not pick %s %d times", addr, k)
		}
		r := mustPick(t, c, PickInfo{})
		if r.Endpoint.Address == addr {
			held = append(held, r)
		} else {
			others = append(others, r)
		}
	}
	for _, r := range others {
		r.Done(DoneInfo{})
	}
	return held
}

func TestParsePolicy(t *testing.T) {
	for in, want := range map[string]Policy{"": LeastRequest, "LEAST_REQUEST": LeastRequest, "ROUND_ROBIN": RoundRobin, "RANDOM": Random, "RING_HASH": RingHash, "MAGLEV": Maglev} {
		if got, err := ParsePolicy(in); err != nil || got != want {
			t.Errorf("ParsePolicy(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParsePolicy("round_robin"); err == nil {
		t.Error("ParsePolicy accepted a lower-case policy")
	}
	if c := NewCluster("x", Options{Policy: "WEIGHTED_LEAST_CONN"}); c.Policy() != LeastRequest {
		t.Errorf("unknown policy became %q, want %q", c.Policy(), LeastRequest)
	}
}

func TestEmptyCluster(t *testing.T) {
	for _, pol := range []Policy{LeastRequest, RoundRobin, Random} {
		c := NewCluster("empty", Options{Policy: pol})
		if c.Name() != "empty" || c.Len() != 0 || len(c.Snapshot()) != 0 {
			t.Fatalf("%s: new cluster not empty", pol)
		}
		r, err := c.Pick(PickInfo{})
		if !errors.Is(err, ErrNoEndpoints) || r.Endpoint != nil {
			t.Fatalf("%s: Pick on empty = %v, %v; want ErrNoEndpoints", pol, r, err)
		}
		r.Done(DoneInfo{}) // the zero Result is inert

		c.Update(uniformEps(2))
		mustPick(t, c, PickInfo{}).Done(DoneInfo{})
		c.Update(nil)
		if _, err := c.Pick(PickInfo{}); !errors.Is(err, ErrNoEndpoints) {
			t.Fatalf("%s: Pick after emptying Update: %v, want ErrNoEndpoints", pol, err)
		}
	}
}

func TestLeastRequestAvoidsLoadedEndpoint(t *testing.T) {
	c := newCluster(t, LeastRequest, 1, uniformEps(2))
	held := hold(t, c, "10.0.0.1:80", 10)
	if got := c.Snapshot()[0].InFlight; got != 10 {
		t.Fatalf("in flight on 10.0.0.1 = %d, want 10", got)
	}
	got := counts(t, c, 1000, PickInfo{})
	if got["10.0.0.2:80"] <= 950 {
		t.Fatalf("with 10 in flight on one of 2 endpoints, the other got %d of 1000 picks; want > 950", got["10.0.0.2:80"])
	}
	for _, r := range held {
		r.Done(DoneInfo{})
	}
	if got := c.Snapshot()[0].InFlight; got != 0 {
		t.Fatalf("in flight after Done = %d, want 0", got)
	}
}

func TestLeastRequestShareFalls(t *testing.T) {
	const n, picks = 10, 2000
	c := newCluster(t, LeastRequest, 2, uniformEps(n))
	target := "10.0.0.4:80"
	before := counts(t, c, picks, PickInfo{})[target]
	// With nothing in flight every pair ties and the first candidate wins, so the share
	// is about 1/n.
	if before < picks/n/2 || before > picks/n*2 {
		t.Fatalf("idle share of %s = %d of %d, want about %d", target, before, picks, picks/n)
	}
	held := hold(t, c, target, 3)
	after := counts(t, c, picks, PickInfo{})[target]
	if after*10 > before {
		t.Fatalf("share of %s with 3 in flight = %d, want under a tenth of the idle %d", target, after, before)
	}
	for _, r := range held {
		r.Done(DoneInfo{})
	}
}

// pairRand returns a Rand that makes leastRequest over 2 endpoints draw eps[0] as the
// first candidate (first=0) or eps[1] (first=1).
func pairRand(first *int) func() uint64 {
	return func() uint64 {
		if *first == 0 {
			return 0 // i = 0, j = 0 -> 1
		}
		return 0xffffffff // i = 1, j = 0
	}
}

func TestLeastRequestWeightedFollowsEnvoyFormula(t *testing.T) {
	tests := []struct {
		wa, wb     uint32
		ra, rb     int
		first      int    // which endpoint is the first candidate
		wantWinner string // "a" or "b"
	}{
		{3, 1, 0, 0, 1, "a"},  // 3/1 > 1/1
		{3, 1, 1, 0, 1, "a"},  // 3/2 > 1/1
		{3, 1, 2, 0, 1, "b"},  // 3/3 == 1/1: tie goes to the first candidate (b)
		{3, 1, 2, 0, 0, "a"},  // same tie, a first
		{3, 1, 3, 0, 0, "b"},  // 3/4 < 1/1
		{1, 1, 5, 4, 0, "b"},  // equal weights: fewer in flight wins
		{1, 1, 4, 4, 1, "b"},  // equal weights, tie: first
		{10, 1, 9, 0, 1, "b"}, // 10/10 == 1/1: tie, first
		{10, 1, 8, 0, 1, "a"}, // 10/9 > 1
		{4294967295, 1, 0, 0, 1, "a"},
	}
	for _, tt := range tests {
		name := fmt.Sprintf("w%d/r%d_vs_w%d/r%d_first%d", tt.wa, tt.ra, tt.wb, tt.rb, tt.first)
		t.Run(name, func(t *testing.T) {
			first := 0
			c := NewCluster("w", Options{Rand: pairRand(&first)})
			c.Update(eps(tt.wa, tt.wb))
			a, b := c.picker.Load().eps[0], c.picker.Load().eps[1]
			a.inFlight.Store(int64(tt.ra))
			b.inFlight.Store(int64(tt.rb))
			first = tt.first
			r := mustPick(t, c, PickInfo{})
			want := a
			if tt.wantWinner == "b" {
				want = b
			}
			if r.Endpoint != want {
				t.Fatalf("picked %s, want %s", r.Endpoint.Address, want.Address)
			}
		})
	}
}

// TestLeastRequestWeightedMatchesOracle checks random states against Envoy's formula
// computed in floating point, over ten endpoints with random weights and loads.
func TestLeastRequestWeightedMatchesOracle(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	var last uint64
	c := NewCluster("oracle", Options{Rand: func() uint64 { return last }})
	ws := make([]uint32, 10)
	for i := range ws {
		ws[i] = 1 + rng.Uint32N(20)
	}
	c.Update(eps(ws...))
	p := c.picker.Load()
	for range 5000 {
		for _, e := range p.eps {
			e.inFlight.Store(int64(rng.IntN(30)))
		}
		last = rng.Uint64()
		n := uint64(len(p.eps))
		i := (last & 0xffffffff) * n >> 32
		j := (last >> 32) * (n - 1) >> 32
		if j >= i {
			j++
		}
		eff := func(k uint64) float64 {
			return float64(p.eps[k].Weight()) / float64(p.eps[k].InFlight()+1)
		}
		want := p.eps[i]
		if eff(j) > eff(i) {
			want = p.eps[j]
		}
		r := mustPick(t, c, PickInfo{})
		if r.Endpoint != want {
			t.Fatalf("candidates %s (w %d, r %d) and %s (w %d, r %d): picked %s, want %s",
				p.eps[i].Address, p.w[i], p.eps[i].InFlight()-boolInt(r.Endpoint == p.eps[i]),
				p.eps[j].Address, p.w[j], p.eps[j].InFlight()-boolInt(r.Endpoint == p.eps[j]),
				r.Endpoint.Address, want.Address)
		}
		r.Done(DoneInfo{})
	}
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// With requests held open, weighted P2C spreads in-flight load in proportion to the
// weights: it settles where (r_a+1)/w_a ≈ (r_b+1)/w_b.
func TestLeastRequestWeightedLoadFollowsWeights(t *testing.T) {
	c := newCluster(t, LeastRequest, 3, eps(3, 1))
	for range 400 {
		mustPick(t, c, PickInfo{})
	}
	s := c.Snapshot()
	ra, rb := s[0].InFlight, s[1].InFlight
	if ra+rb != 400 || math.Abs(float64(ra+1)-3*float64(rb+1)) > 3 {
		t.Fatalf("in flight %d:%d with weights 3:1; want (ra+1) ≈ 3(rb+1)", ra, rb)
	}
}

func TestRoundRobinCyclesPerWeights(t *testing.T) {
	tests := []struct {
		name    string
		weights []uint32
	}{
		{"equal", []uint32{1, 1, 1}},
		{"equal large", []uint32{7, 7, 7, 7}},
		{"weighted", []uint32{3, 1, 2}},
		{"gcd reduced", []uint32{300, 100, 200}},
		{"beyond schedule", []uint32{70000, 1, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t, RoundRobin, 4, eps(tt.weights...))
			var g, total uint64
			for _, w := range tt.weights {
				g = gcd(g, uint64(w))
			}
			for _, w := range tt.weights {
				total += uint64(w) / g
			}
			const cycles = 3
			seq := make([]string, 0, cycles*total)
			for range cycles * total {
				r := mustPick(t, c, PickInfo{})
				seq = append(seq, r.Endpoint.Address)
				r.Done(DoneInfo{})
			}
			// Every window of one period serves each endpoint exactly its share.
			for start := uint64(0); start+total <= uint64(len(seq)); start += max(total/7, 1) {
				got := map[string]uint64{}
				for _, a := range seq[start : start+total] {
					got[a]++
				}
				for i, w := range tt.weights {
					addr := fmt.Sprintf("10.0.0.%d:80", i+1)
					if got[addr] != uint64(w)/g {
						t.Fatalf("window at %d: %s served %d times, want %d", start, addr, got[addr], uint64(w)/g)
					}
				}
			}
		})
	}
}

// The precomputed schedule interleaves: within one period no endpoint is served twice
// in a row while the others' weights can separate it.
func TestScheduleIsSmooth(t *testing.T) {
	tests := []struct {
		ws   []uint32
		want []uint32
	}{
		{[]uint32{3, 1, 2}, []uint32{0, 2, 0, 1, 2, 0}},
		{[]uint32{5, 1, 1}, []uint32{0, 0, 1, 0, 2, 0, 0}}, // nginx's documented a a b a c a a
		{[]uint32{2, 4, 6}, []uint32{2, 1, 0, 2, 1, 2}},
		{[]uint32{1, 1}, []uint32{0, 1}},
	}
	for _, tt := range tests {
		if got := schedule(tt.ws); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("schedule(%v) = %v, want %v", tt.ws, got, tt.want)
		}
	}
	if got := schedule([]uint32{maxSchedule, 1}); got != nil {
		t.Errorf("schedule past maxSchedule has %d slots, want nil", len(got))
	}
}

func TestRoundRobinEqualOrder(t *testing.T) {
	c := newCluster(t, RoundRobin, 5, uniformEps(3))
	first := mustPick(t, c, PickInfo{}).Endpoint
	idx := map[string]int{"10.0.0.1:80": 0, "10.0.0.2:80": 1, "10.0.0.3:80": 2}
	prev := idx[first.Address]
	for range 10 {
		cur := idx[mustPick(t, c, PickInfo{}).Endpoint.Address]
		if cur != (prev+1)%3 {
			t.Fatalf("round robin went from %d to %d", prev, cur)
		}
		prev = cur
	}
}

func TestRandomDistribution(t *testing.T) {
	const picks = 100000
	tests := []struct {
		name    string
		weights []uint32
	}{
		{"uniform", []uint32{1, 1, 1, 1}},
		{"weighted", []uint32{1, 2, 3, 4}},
		{"skewed", []uint32{10, 30, 60}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t, Random, 6, eps(tt.weights...))
			got := counts(t, c, picks, PickInfo{})
			var total uint32
			for _, w := range tt.weights {
				total += w
			}
			for i, w := range tt.weights {
				addr := fmt.Sprintf("10.0.0.%d:80", i+1)
				want := float64(picks) * float64(w) / float64(total)
				if math.Abs(float64(got[addr])-want) > 0.02*want {
					t.Errorf("%s (weight %d): %d picks, want %.0f ±2%%", addr, w, got[addr], want)
				}
			}
		})
	}
}

func TestAvoid(t *testing.T) {
	for _, pol := range []Policy{LeastRequest, RoundRobin, Random} {
		for _, ws := range [][]uint32{{1, 1}, {5, 1}, {1, 5, 2}} {
			t.Run(fmt.Sprintf("%s/%v", pol, ws), func(t *testing.T) {
				c := newCluster(t, pol, 8, eps(ws...))
				for _, avoid := range c.picker.Load().eps {
					got := counts(t, c, 300, PickInfo{Avoid: avoid})
					if got[avoid.Address] != 0 {
						t.Fatalf("avoided %s was picked %d times", avoid.Address, got[avoid.Address])
					}
				}
			})
		}
		t.Run(string(pol)+"/only endpoint", func(t *testing.T) {
			c := newCluster(t, pol, 9, uniformEps(1))
			only := c.picker.Load().eps[0]
			if r := mustPick(t, c, PickInfo{Avoid: only}); r.Endpoint != only {
				t.Fatalf("single endpoint: got %v", r.Endpoint)
			}
		})
		t.Run(string(pol)+"/stranger", func(t *testing.T) {
			c := newCluster(t, pol, 10, uniformEps(3))
			got := counts(t, c, 300, PickInfo{Avoid: &Endpoint{Address: "10.0.0.1:80"}})
			if got["10.0.0.1:80"] == 0 {
				t.Fatal("an Avoid that is not in the set excluded the endpoint with the same address")
			}
		})
	}
}

// A retry that avoids one endpoint under RANDOM still spreads by weight over the rest.
func TestRandomAvoidKeepsWeights(t *testing.T) {
	c := newCluster(t, Random, 11, eps(1, 2, 3))
	avoid := c.picker.Load().eps[2]
	got := counts(t, c, 30000, PickInfo{Avoid: avoid})
	ratio := float64(got["10.0.0.2:80"]) / float64(got["10.0.0.1:80"])
	if ratio < 1.9 || ratio > 2.1 {
		t.Fatalf("with the weight-3 endpoint avoided, weights 2:1 got %v (ratio %.2f)", got, ratio)
	}
}

func TestUpdateKeepsIdentityAndCallsHooks(t *testing.T) {
	var added, removed []string
	var c *Cluster
	c = NewCluster("hooks", Options{
		Policy: RoundRobin, // so that endpoints with requests open are still picked
		Rand:   seeded(12),
		OnAdd: func(e *Endpoint) {
			for _, s := range c.Snapshot() {
				if s.Address == e.Address {
					t.Errorf("OnAdd(%s): already published", e.Address)
				}
			}
			e.Meta = "pool:" + e.Address
			added = append(added, e.Address)
		},
		OnRemove: func(e *Endpoint) {
			for _, s := range c.Snapshot() {
				if s.Address == e.Address {
					t.Errorf("OnRemove(%s): still published", e.Address)
				}
			}
			removed = append(removed, e.Address)
		},
	})
	a, b, cc := "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"
	c.Update([]discovery.Endpoint{{Address: b, Weight: 1}, {Address: a, Weight: 1}, {Address: a, Weight: 9}})
	if !reflect.DeepEqual(added, []string{b, a}) || removed != nil {
		t.Fatalf("first Update: added %v removed %v", added, removed)
	}
	byAddr := func() map[string]*Endpoint {
		m := map[string]*Endpoint{}
		for _, e := range c.picker.Load().all {
			m[e.Address] = e
		}
		return m
	}
	oldB := byAddr()[b]
	if oldB.Weight() != 1 || byAddr()[a].Weight() != 1 {
		t.Fatal("duplicate address: the first entry must win")
	}
	// Leave two requests on b open and finish one failed and one good.
	held := hold(t, c, b, 2)
	mustPickAddr(t, c, b).Done(DoneInfo{Status: 503})
	mustPickAddr(t, c, b).Done(DoneInfo{Err: errors.New("reset")})
	mustPickAddr(t, c, b).Done(DoneInfo{Status: 200})

	added, removed = nil, nil
	c.Update([]discovery.Endpoint{{Address: cc, Weight: 2}, {Address: b, Weight: 5}})
	if !reflect.DeepEqual(added, []string{cc}) || !reflect.DeepEqual(removed, []string{a}) {
		t.Fatalf("second Update: added %v removed %v; want [%s] and [%s]", added, removed, cc, a)
	}
	newB := byAddr()[b]
	if newB != oldB || newB.Meta != "pool:"+b || newB.InFlight() != 2 || newB.Weight() != 5 {
		t.Fatalf("surviving endpoint: same=%v meta=%v inflight=%d weight=%d", newB == oldB, newB.Meta, newB.InFlight(), newB.Weight())
	}
	want := []EndpointStatus{
		{Address: b, Weight: 5, InFlight: 2, Requests: 3, Failures: 2, Healthy: true},
		{Address: cc, Weight: 2, Healthy: true},
	}
	if got := c.Snapshot(); !reflect.DeepEqual(got, want) || c.Len() != 2 {
		t.Fatalf("Snapshot = %+v, want %+v", got, want)
	}

	// The same set again changes nothing and calls no hook.
	added, removed = nil, nil
	c.Update([]discovery.Endpoint{{Address: b, Weight: 5}, {Address: cc, Weight: 2}})
	if added != nil || removed != nil || byAddr()[b] != oldB {
		t.Fatalf("identical Update: added %v removed %v", added, removed)
	}
	// Requests picked before a removal still finish on their endpoint.
	c.Update(nil)
	if !reflect.DeepEqual(removed, []string{b, cc}) {
		t.Fatalf("emptying Update removed %v", removed)
	}
	for _, r := range held {
		r.Done(DoneInfo{})
	}
	if oldB.InFlight() != 0 {
		t.Fatalf("in flight on removed endpoint = %d, want 0", oldB.InFlight())
	}
}

func mustPickAddr(t *testing.T, c *Cluster, addr string) Result {
	t.Helper()
	for range 1000 {
		r := mustPick(t, c, PickInfo{})
		if r.Endpoint.Address == addr {
			return r
		}
		r.Done(DoneInfo{})
	}
	t.Fatalf("never picked %s", addr)
	return Result{}
}

func TestWeightChangeTakesEffect(t *testing.T) {
	c := newCluster(t, RoundRobin, 13, eps(1, 1))
	c.Update(eps(3, 1))
	got := counts(t, c, 400, PickInfo{})
	if got["10.0.0.1:80"] != 300 || got["10.0.0.2:80"] != 100 {
		t.Fatalf("after reweighting to 3:1, got %v", got)
	}
}

// TestConcurrentPickDoneUpdate runs pickers against a changing set under -race and
// checks that every pick was finished on the endpoint it went to.
func TestConcurrentPickDoneUpdate(t *testing.T) {
	const workers, iters, updates = 4, 3000, 300
	for _, pol := range []Policy{LeastRequest, RoundRobin, Random} {
		t.Run(string(pol), func(t *testing.T) {
			var mu sync.Mutex
			var all []*Endpoint
			var adds, rms int
			c := NewCluster("race", Options{
				Policy:   pol,
				OnAdd:    func(e *Endpoint) { mu.Lock(); all = append(all, e); adds++; mu.Unlock() },
				OnRemove: func(*Endpoint) { mu.Lock(); rms++; mu.Unlock() },
			})
			sets := [][]discovery.Endpoint{eps(1, 2, 3), eps(1, 1), eps(5, 1, 1, 1, 2), nil}
			c.Update(sets[0])

			var wg sync.WaitGroup
			var picked [workers]int
			for w := range workers {
				wg.Go(func() {
					var last *Endpoint
					for i := range iters {
						r, err := c.Pick(PickInfo{Avoid: last})
						if errors.Is(err, ErrNoEndpoints) {
							continue
						}
						if err != nil {
							t.Errorf("Pick: %v", err)
							return
						}
						picked[w]++
						last = r.Endpoint
						r.Done(DoneInfo{Status: 200 + 300*(i%2)})
						_ = c.Snapshot()
					}
				})
			}
			wg.Go(func() {
				for i := range updates {
					c.Update(sets[i%len(sets)])
				}
			})
			wg.Wait()

			var total uint64
			for _, e := range all {
				if e.InFlight() != 0 {
					t.Errorf("%s: %d in flight after all Done", e.Address, e.InFlight())
				}
				total += e.requests.Load()
			}
			want := 0
			for _, n := range picked {
				want += n
			}
			if total != uint64(want) {
				t.Errorf("requests counted %d, picks %d", total, want)
			}
			if adds-rms != c.Len() {
				t.Errorf("OnAdd %d - OnRemove %d != Len %d", adds, rms, c.Len())
			}
		})
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	for _, pol := range []Policy{LeastRequest, RoundRobin, Random} {
		for _, ws := range [][]uint32{{1, 1, 1}, {1, 2, 3}, {70000, 1}} {
			c := newCluster(t, pol, 14, eps(ws...))
			avoid := c.picker.Load().eps[0]
			allocs := testing.AllocsPerRun(1000, func() {
				r, err := c.Pick(PickInfo{Avoid: avoid})
				if err != nil {
					panic(err)
				}
				r.Done(DoneInfo{Status: 200})
			})
			if allocs != 0 {
				t.Errorf("%s %v: Pick+Done allocates %.1f times", pol, ws, allocs)
			}
		}
	}
}
