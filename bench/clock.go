package bench

import (
	"context"
	"time"
)

// Clock is the load generator's time source. Tests inject a fake one to check the
// scheduler without waiting; production uses RealClock.
type Clock interface {
	Now() time.Time
	// NewSleeper returns a Sleeper owned by one worker goroutine.
	NewSleeper() Sleeper
}

// Sleeper blocks one goroutine until a point in time.
type Sleeper interface {
	// SleepUntil returns nil at or after t, or ctx's error if ctx ends first.
	SleepUntil(ctx context.Context, t time.Time) error
	// Stop releases the sleeper's timer.
	Stop()
}

// RealClock is the wall clock (monotonic readings via time.Now).
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// NewSleeper returns a sleeper that reuses one timer, so that pacing a request costs
// no allocation.
func (RealClock) NewSleeper() Sleeper {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &realSleeper{t: t}
}

type realSleeper struct{ t *time.Timer }

func (s *realSleeper) SleepUntil(ctx context.Context, at time.Time) error {
	d := time.Until(at)
	if d <= 0 {
		return ctx.Err()
	}
	s.t.Reset(d)
	select {
	case <-s.t.C:
		return nil
	case <-ctx.Done():
		s.t.Stop()
		return ctx.Err()
	}
}

func (s *realSleeper) Stop() { s.t.Stop() }
