package balancer

import (
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/resilience"
)

// manualClock is a resilience.Clock moved by hand; Tick is called by the test.
type manualClock struct {
	resilience.SystemClock
	mu sync.Mutex
	t  time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *manualClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestSlowStartFactor(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, tc := range []struct {
		s       SlowStart
		elapsed time.Duration
		want    uint32
	}{
		{SlowStart{Window: 10 * time.Second, Aggression: 1, MinWeightPercent: 10}, 0, 10},
		{SlowStart{Window: 10 * time.Second, Aggression: 1, MinWeightPercent: 10}, 5 * time.Second, 50},
		{SlowStart{Window: 10 * time.Second, Aggression: 1, MinWeightPercent: 10}, 10 * time.Second, 100},
		{SlowStart{Window: 10 * time.Second, Aggression: 2, MinWeightPercent: 10}, 2500 * time.Millisecond, 50}, // 0.25^(1/2)
		{SlowStart{Window: 10 * time.Second, Aggression: 1, MinWeightPercent: 30}, time.Second, 30},
	} {
		if got := tc.s.factor(t0, t0.Add(tc.elapsed)); got != tc.want {
			t.Errorf("%+v after %v: factor %d; want %d", tc.s, tc.elapsed, got, tc.want)
		}
	}
}

// share picks n times and returns addr's share.
func share(t *testing.T, c *Cluster, n int, addr string) float64 {
	t.Helper()
	return float64(counts(t, c, n, PickInfo{})[addr]) / float64(n)
}

// TestSlowStartRamps: an endpoint added after the first set, or back from an ejection,
// starts at minWeightPercent of its weight and ramps linearly to its full share over the
// window, under round robin and least request, on the injected clock.
func TestSlowStartRamps(t *testing.T) {
	const window = 30 * time.Second
	for _, pol := range []Policy{RoundRobin, LeastRequest, Random} {
		t.Run(string(pol), func(t *testing.T) {
			clk := &manualClock{t: time.Unix(1_700_000_000, 0)}
			c := NewCluster("ss", Options{Policy: pol, Rand: seeded(3), Clock: clk, SlowStart: SlowStart{Window: window}})
			set := uniformEps(3)
			c.Update(set[:2])
			if c.Ramping() {
				t.Fatal("the first set ramps")
			}
			c.Update(set)
			newAddr := set[2].Address
			// factor f for the new one, 1 for the other two: share f/(2+f)
			check := func(f float64) {
				t.Helper()
				want := f / (2 + f)
				if got := share(t, c, 3000, newAddr); got < want-0.04 || got > want+0.04 {
					t.Errorf("at %v: new endpoint's share %.3f; want %.3f", clk.Now().Sub(time.Unix(1_700_000_000, 0)), got, want)
				}
			}
			check(0.10)
			checkRamp(t, c, newAddr, 10)
			clk.advance(window / 2)
			if !c.Tick() {
				t.Fatal("Tick: not ramping half-way")
			}
			check(0.5)
			checkRamp(t, c, newAddr, 50)
			clk.advance(window / 2)
			if c.Tick() {
				t.Fatal("Tick: still ramping after the window")
			}
			check(1)
			checkRamp(t, c, newAddr, 0)

			// An ejection ends: the endpoint ramps again.
			c.SetEjected(newAddr, true)
			if got := share(t, c, 300, newAddr); got != 0 {
				t.Fatalf("ejected endpoint got %.2f", got)
			}
			c.SetEjected(newAddr, false)
			check(0.10)
			clk.advance(window * 3 / 4)
			c.Tick()
			check(0.75)
			clk.advance(window)
			c.Tick()
			check(1)
		})
	}
}

// TestSlowStartHealthRecovery: health checks passing again start a ramp; a weight change
// of a ramping endpoint keeps the ramp.
func TestSlowStartHealthRecovery(t *testing.T) {
	clk := &manualClock{t: time.Unix(1_700_000_000, 0)}
	c := NewCluster("ss", Options{Policy: RoundRobin, Clock: clk, SlowStart: SlowStart{Window: 10 * time.Second, MinWeightPercent: 20}})
	c.Update([]discovery.Endpoint{{Address: "10.0.0.1:80", Weight: 1}, {Address: "10.0.0.2:80", Weight: 1}})
	c.SetHealthy("10.0.0.2:80", false)
	c.SetHealthy("10.0.0.2:80", true)
	if got := share(t, c, 1200, "10.0.0.2:80"); got < 0.15 || got > 0.18 { // 0.2/1.2
		t.Errorf("recovered endpoint's share %.3f; want 0.167", got)
	}
	c.Update([]discovery.Endpoint{{Address: "10.0.0.1:80", Weight: 1}, {Address: "10.0.0.2:80", Weight: 2}})
	if got := share(t, c, 1400, "10.0.0.2:80"); got < 0.27 || got > 0.30 { // 0.4/1.4
		t.Errorf("after a weight change the ramping endpoint's share %.3f; want 0.286", got)
	}
	if c.TickEvery() != 500*time.Millisecond {
		t.Errorf("TickEvery %v", c.TickEvery())
	}
}

// TestSlowStartIgnoredByHash: the hash policies do not ramp (keys would move with
// the weights).
func TestSlowStartIgnoredByHash(t *testing.T) {
	clk := &manualClock{t: time.Unix(1_700_000_000, 0)}
	c := NewCluster("ss", Options{Policy: RingHash, Hash: &HashOn{SourceIP: true}, Clock: clk, SlowStart: SlowStart{Window: 10 * time.Second}})
	c.Update(uniformEps(2))
	c.Update(uniformEps(3))
	if c.Ramping() || c.TickEvery() != 0 {
		t.Error("a hash policy ramps")
	}
}

// TestSlowStartKnown: a cluster that replaces another ramps only the endpoints the
// other did not have.
func TestSlowStartKnown(t *testing.T) {
	clk := &manualClock{t: time.Unix(1_700_000_000, 0)}
	set := uniformEps(3)
	c := NewCluster("ss", Options{Policy: RoundRobin, Clock: clk, SlowStart: SlowStart{Window: 10 * time.Second}, Known: []string{set[0].Address, set[1].Address}})
	c.Update(set)
	if got := share(t, c, 2100, set[2].Address); got < 0.04 || got > 0.06 { // 0.1/2.1
		t.Errorf("new endpoint's share %.3f; want 0.048", got)
	}
	if got := share(t, c, 2100, set[0].Address); got < 0.46 || got > 0.49 {
		t.Errorf("known endpoint's share %.3f; want 0.476", got)
	}
}

// checkRamp checks the endpoint statuses (/clusters): addr ramps at percent of its weight
// (0: it has its full weight), every other endpoint has its full weight.
func checkRamp(t *testing.T, c *Cluster, addr string, percent uint32) {
	t.Helper()
	for _, st := range c.Snapshot() {
		want := uint32(0)
		if st.Address == addr {
			want = percent
		}
		if st.RampPercent != want {
			t.Errorf("endpoint %s: RampPercent %d, want %d", st.Address, st.RampPercent, want)
		}
	}
}
