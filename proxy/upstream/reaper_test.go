package upstream

import (
	"testing"
	"testing/synctest"
	"time"
)

// TestReaperSweepsEveryPeriod: the reaper sweeps every Every (default 10 s) with its
// MaxAge (default maxIdleAge), and Halt stops and joins it. On synctest's clock.
func TestReaperSweepsEveryPeriod(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var r Reaper
		start := time.Now()
		var sweeps []time.Duration
		r.Start(func(now time.Time, maxAge time.Duration) {
			if maxAge != maxIdleAge {
				t.Errorf("maxAge %v, want %v", maxAge, maxIdleAge)
			}
			sweeps = append(sweeps, now.Sub(start))
		})
		time.Sleep(35 * time.Second)
		synctest.Wait()
		r.Halt()
		want := []time.Duration{10 * time.Second, 20 * time.Second, 30 * time.Second}
		if len(sweeps) != len(want) {
			t.Fatalf("sweeps at %v, want %v", sweeps, want)
		}
		for i := range want {
			if sweeps[i] != want[i] {
				t.Errorf("sweep %d at %v, want %v", i, sweeps[i], want[i])
			}
		}
	})
}
