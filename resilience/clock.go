package resilience

import "time"

// Clock tells the time. The proxy passes SystemClock; tests pass a fake whose Now they
// set. Implementations must be safe for concurrent use.
type Clock interface {
	Now() time.Time
}

// SystemClock is the real wall clock (with Go's monotonic reading, so durations between
// two Now values are immune to wall-clock steps).
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }
