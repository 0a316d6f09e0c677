package resilience

import "time"

// Clock is meshd's one clock abstraction, for time that a test moves by hand: the
// timestamps resilience decisions compare (outlier ejections, health verdicts, token
// buckets) and the tickers that drive periodic control work (outlier sweeps, health
// check rounds). The proxy passes SystemClock; tests pass a fake whose Now they set and
// whose tickers fire when they advance it. Code that merely waits (retry backoff, the
// idle reaper, accept back-off, the breaker's open state) uses the time package, and its
// tests run in a testing/synctest bubble, whose fake clock the time package follows.
// Implementations must be safe for concurrent use.
type Clock interface {
	Now() time.Time
	// NewTicker returns a channel that receives the clock's time every d (dropping
	// ticks a slow receiver misses, as time.Ticker does) and a function that stops it.
	NewTicker(d time.Duration) (<-chan time.Time, func())
}

// SystemClock is the real wall clock (with Go's monotonic reading, so durations between
// two Now values are immune to wall-clock steps).
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// NewTicker is a time.Ticker.
func (SystemClock) NewTicker(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTicker(d)
	return t.C, t.Stop
}
