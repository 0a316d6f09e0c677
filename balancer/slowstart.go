package balancer

import (
	"math"
	"time"
)

// SlowStart is Envoy's slow_start_config: an endpoint that joins the set (after the
// first Update) or becomes available again (health checks pass again, an ejection ends)
// starts at MinWeightPercent of its weight and ramps to the full weight over Window:
// factor = max(MinWeightPercent/100, (elapsed/Window)^(1/Aggression)). It applies to
// LEAST_REQUEST, ROUND_ROBIN and RANDOM; a zero Window disables it.
type SlowStart struct {
	Window time.Duration
	// Aggression shapes the ramp: 1 is linear, larger values ramp faster at the start.
	// 0 means 1.
	Aggression float64
	// MinWeightPercent is the floor of the ramp, 1..100; 0 means 10 (Envoy's default).
	MinWeightPercent int
}

// slowScale is the fixed-point unit of effective weights while some endpoint ramps: each
// weight is multiplied by its factor in hundredths, so a round-robin schedule stays short
// (its slots are the weights reduced by their common divisor).
const slowScale = 100

// factor is the share of its weight an endpoint whose ramp began at since has at now, in
// hundredths (slowScale at the end of the window).
func (s *SlowStart) factor(since, now time.Time) uint32 {
	elapsed := now.Sub(since)
	if since.IsZero() || elapsed >= s.Window {
		return slowScale
	}
	f := math.Max(float64(elapsed), 0) / float64(s.Window)
	if s.Aggression != 1 {
		f = math.Pow(f, 1/s.Aggression)
	}
	f = math.Max(f, float64(s.MinWeightPercent)/100)
	return uint32(max(math.Round(f*slowScale), 1))
}

// Tick rebuilds the picker while some endpoint is ramping, so effective weights follow
// the clock; the owner calls it on a ticker (upstream: the cluster's control goroutine).
// It reports whether an endpoint is still ramping. Control plane: serialized with Update.
func (c *Cluster) Tick() bool {
	if c.slow.Window <= 0 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ramping {
		return false
	}
	c.publish()
	return c.ramping
}

// Ramping reports whether some endpoint's weight is still ramping up (slow start).
func (c *Cluster) Ramping() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ramping
}

// TickEvery is how often the owner should call Tick for this cluster's slow start: a
// twentieth of the window, between 100 ms and 1 s; 0 when slow start is off.
func (c *Cluster) TickEvery() time.Duration {
	if c.slow.Window <= 0 {
		return 0
	}
	return min(max(c.slow.Window/20, 100*time.Millisecond), time.Second)
}
