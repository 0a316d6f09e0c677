package resilience

import (
	"math"
	"math/bits"
	"math/rand/v2"
	"time"
)

// Backoff defaults, Envoy's: 25 ms base, and a maximum of 10× the base.
const (
	DefaultBackoffBase = 25 * time.Millisecond
	DefaultBackoffMax  = 250 * time.Millisecond
)

// Backoff is jittered exponential backoff between retries. The zero value is Envoy's
// default (25 ms base, 250 ms cap, math/rand/v2).
//
// Delay(n) is drawn uniformly from [0, min(Base·2^(n-1), Max)) ("full jitter"): retries of
// many clients that failed together spread out instead of arriving in waves. Envoy draws
// from [0, Base·(2^n-1)) and then clamps to Max, which piles late retries onto Max; full
// jitter keeps them spread and has the same bounds.
//
// A Backoff value is immutable; Delay may be called from any goroutine as long as Rand
// may (math/rand/v2's Uint64, the default, may).
type Backoff struct {
	// Base is the ceiling of the first retry's delay; 0 means DefaultBackoffBase.
	Base time.Duration
	// Max caps every delay; 0 means 10× Base. A Max below Base is raised to Base.
	Max time.Duration
	// Rand returns uniformly distributed bits; nil means math/rand/v2.Uint64. Tests
	// inject a fixed sequence.
	Rand func() uint64
}

// Delay returns how long to wait before retry number attempt (1 for the first retry;
// smaller values are treated as 1). It never exceeds the cap and allocates nothing.
func (b Backoff) Delay(attempt int) time.Duration {
	return jitter(b.Ceiling(attempt), b.Rand)
}

// Ceiling is the upper bound (exclusive) of Delay(attempt): min(Base·2^(attempt-1), Max).
func (b Backoff) Ceiling(attempt int) time.Duration {
	base, maxD := b.Base, b.Max
	if base <= 0 {
		base = DefaultBackoffBase
	}
	if maxD <= 0 {
		maxD = 10 * base
		if maxD/10 != base { // overflow of a huge configured base
			maxD = math.MaxInt64
		}
	}
	if maxD < base {
		maxD = base
	}
	if attempt < 1 {
		attempt = 1
	}
	shift := uint(attempt - 1)
	if shift >= 63 || base > maxD>>shift {
		return maxD
	}
	return base << shift
}

func jitter(ceiling time.Duration, rnd func() uint64) time.Duration {
	if rnd == nil {
		rnd = rand.Uint64
	}
	// The high word of r·ceiling is uniform in [0, ceiling) without a division.
	hi, _ := bits.Mul64(rnd(), uint64(ceiling))
	return time.Duration(hi)
}

// RetryAfterCap bounds what ParseRetryAfter returns: a server asking for more than five
// minutes is asking not to be retried, and the request's deadline ends the wait earlier
// in practice anyway.
const RetryAfterCap = 5 * time.Minute

// HTTP-date layouts that RFC 9110 §5.6.7 requires recipients to accept.
const (
	imfFixdate = "Mon, 02 Jan 2006 15:04:05 GMT"
	rfc850Date = "Monday, 02-Jan-06 15:04:05 GMT"
	asctime    = "Mon Jan _2 15:04:05 2006"
)

// ParseRetryAfter parses a Retry-After header value (RFC 9110 §10.2.3): delay-seconds or
// an HTTP-date, relative to now. A date in the past yields 0. The result is capped at
// RetryAfterCap. ok is false for an empty or malformed value, which the caller ignores
// (falling back to its own backoff). Delay-seconds values allocate nothing.
func ParseRetryAfter(value string, now time.Time) (d time.Duration, ok bool) {
	value = trimOWS(value)
	if value == "" {
		return 0, false
	}
	if isDigit(value[0]) {
		var secs int64
		for i := 0; i < len(value); i++ {
			c := value[i]
			if !isDigit(c) {
				return 0, false
			}
			if secs <= int64(RetryAfterCap/time.Second) {
				secs = secs*10 + int64(c-'0')
			}
		}
		return min(time.Duration(secs)*time.Second, RetryAfterCap), true
	}
	var t time.Time
	var err error
	for _, layout := range [...]string{imfFixdate, rfc850Date, asctime} {
		if t, err = time.Parse(layout, value); err == nil {
			break
		}
	}
	if err != nil {
		return 0, false
	}
	d = t.Sub(now)
	if d < 0 {
		return 0, true
	}
	return min(d, RetryAfterCap), true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}
