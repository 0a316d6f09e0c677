package balancer

import (
	"errors"
	"testing"
)

// TestAvailabilityExcludesUnhealthyAndEjected checks the one availability predicate:
// unhealthy or ejected endpoints get no picks under every policy, state survives an
// Update that keeps the address, and returning endpoints get traffic again.
func TestAvailabilityExcludesUnhealthyAndEjected(t *testing.T) {
	for _, pol := range []Policy{LeastRequest, RoundRobin, Random} {
		t.Run(string(pol), func(t *testing.T) {
			c := newCluster(t, pol, 1, uniformEps(4))
			a1, a2 := "10.0.0.1:80", "10.0.0.2:80"
			if !c.SetHealthy(a1, false) || !c.SetEjected(a2, true) {
				t.Fatal("state change not reported")
			}
			if c.SetHealthy(a1, false) || c.SetEjected(a2, true) || c.SetHealthy("10.9.9.9:80", false) {
				t.Fatal("no-op or unknown address reported as a change")
			}
			got := counts(t, c, 400, PickInfo{})
			if got[a1] != 0 || got[a2] != 0 || got["10.0.0.3:80"] == 0 || got["10.0.0.4:80"] == 0 {
				t.Fatalf("picks = %v, want only .3 and .4", got)
			}
			if c.Panic() || c.Available() != 2 {
				t.Fatalf("panic=%v available=%d, want false, 2 (exactly 50%% is not panic)", c.Panic(), c.Available())
			}
			c.Update(uniformEps(4)) // same addresses: state is kept
			if got := counts(t, c, 200, PickInfo{}); got[a1] != 0 || got[a2] != 0 {
				t.Fatalf("after Update picks = %v, want state kept", got)
			}
			st := c.Snapshot()
			if st[0].Healthy || st[0].Ejected || !st[1].Healthy || !st[1].Ejected || !st[2].Healthy || st[2].Ejected {
				t.Fatalf("Snapshot = %+v", st)
			}
			c.SetHealthy(a1, true)
			c.SetEjected(a2, false)
			if got := counts(t, c, 400, PickInfo{}); got[a1] == 0 || got[a2] == 0 {
				t.Fatalf("after return picks = %v, want all four", got)
			}
		})
	}
}

// TestPanicThreshold checks that below the threshold Pick spreads over every endpoint,
// that the threshold is configurable, and that disabling it black-holes instead.
func TestPanicThreshold(t *testing.T) {
	tests := []struct {
		name      string
		threshold int
		down      int // of 4 endpoints, this many unhealthy
		panic     bool
		wantErr   bool
	}{
		{"default, half down", 0, 2, false, false},
		{"default, three down", 0, 3, true, false},
		{"default, all down", 0, 4, true, false},
		{"75 percent, two down", 75, 2, true, false},
		{"disabled, all down", -1, 4, false, true},
		{"disabled, three down", -1, 3, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCluster("t", Options{Rand: seeded(2), PanicThresholdPercent: tt.threshold})
			c.Update(uniformEps(4))
			for i := range tt.down {
				c.SetHealthy(eps(1, 1, 1, 1)[i].Address, false)
			}
			if c.Panic() != tt.panic {
				t.Fatalf("Panic() = %v, want %v", c.Panic(), tt.panic)
			}
			r, err := c.Pick(PickInfo{})
			r.Done(DoneInfo{})
			if tt.wantErr {
				if !errors.Is(err, ErrNoEndpoints) {
					t.Fatalf("Pick err = %v, want ErrNoEndpoints", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := counts(t, c, 400, PickInfo{})
			spread := 0
			for _, n := range got {
				if n > 0 {
					spread++
				}
			}
			want := 4 - tt.down
			if tt.panic {
				want = 4
			}
			if spread != want {
				t.Fatalf("picked %d distinct endpoints (%v), want %d", spread, got, want)
			}
		})
	}
}

func TestAddresses(t *testing.T) {
	c := newCluster(t, LeastRequest, 1, uniformEps(3))
	got := c.Addresses()
	if len(got) != 3 || got[0] != "10.0.0.1:80" || got[2] != "10.0.0.3:80" {
		t.Fatalf("Addresses = %v", got)
	}
}
