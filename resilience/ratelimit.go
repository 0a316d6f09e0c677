package resilience

import (
	"fmt"
	"math"
	"sync/atomic"
	"time"
)

// RateLimitConfig is the meshd extension rateLimit on listeners and routes.
type RateLimitConfig struct {
	// RequestsPerSecond is the sustained rate; > 0 (fractions allowed: 0.5 is one
	// request every two seconds).
	RequestsPerSecond float64
	// Burst is how many requests may arrive at once after a quiet spell; 0 means one
	// second's worth, ⌈RequestsPerSecond⌉ (at least 1).
	Burst int64
}

// TokenBucket is a local rate limiter: a token bucket of Burst tokens refilled at
// RequestsPerSecond. Requests over the limit are answered 429 with Retry-After.
//
// It is implemented as GCRA (the generic cell rate algorithm), which is the token bucket
// expressed as one number, the theoretical arrival time of the next request; so the
// whole state is one atomic.Int64 and Allow is a lock-free CAS loop that allocates
// nothing. Safe for concurrent use; callers pass the time (from a Clock).
type TokenBucket struct {
	interval  int64 // ns between tokens
	tolerance int64 // interval × burst: how far ahead of now the arrival time may run
	epoch     time.Time
	tat       atomic.Int64 // theoretical arrival time, ns since epoch
	counters  *Counters
}

// NewTokenBucket validates cfg and returns a full bucket; now anchors its time. counters
// may be nil. Errors name the field and value.
func NewTokenBucket(cfg RateLimitConfig, now time.Time, counters *Counters) (*TokenBucket, error) {
	rps := cfg.RequestsPerSecond
	if !(rps > 0) || math.IsInf(rps, 0) || rps > 1e9 {
		return nil, fmt.Errorf("rateLimit.requestsPerSecond %v: want 0 < rate ≤ 1e9", rps)
	}
	burst := cfg.Burst
	if burst < 0 {
		return nil, fmt.Errorf("rateLimit.burst %d: want ≥ 0", burst)
	}
	if burst == 0 {
		burst = max(1, int64(math.Ceil(rps)))
	}
	interval := max(1, int64(math.Round(float64(time.Second)/rps)))
	if burst > math.MaxInt64/4/interval {
		return nil, fmt.Errorf("rateLimit.burst %d: too large for %v requests per second", cfg.Burst, rps)
	}
	b := &TokenBucket{interval: interval, tolerance: interval * burst, epoch: now, counters: orNew(counters)}
	return b, nil
}

// Allow takes one token at now. When none is left it returns false and how long until
// one will be; it counts RateLimited. A caller that is refused must not retry before
// retryAfter elapses if it wants to succeed.
func (b *TokenBucket) Allow(now time.Time) (ok bool, retryAfter time.Duration) {
	t := int64(now.Sub(b.epoch))
	for {
		old := b.tat.Load()
		tat := max(old, t)
		next := tat + b.interval
		if over := next - t - b.tolerance; over > 0 {
			b.counters.RateLimited.Add(1)
			return false, time.Duration(over)
		}
		if b.tat.CompareAndSwap(old, next) {
			return true, 0
		}
	}
}

// RetryAfterSeconds turns a wait into a Retry-After delay-seconds value: rounded up, at
// least 1, so a client that honours it finds a token.
func RetryAfterSeconds(d time.Duration) int64 {
	s := int64((d + time.Second - 1) / time.Second)
	return max(1, s)
}
