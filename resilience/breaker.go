package resilience

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/meshd/meshd/telemetry"
	"github.com/sony/gobreaker/v2"
)

// Breaker defaults (meshd's choices; App Mesh had no such breaker).
const (
	DefaultConsecutiveFailures = 5
	DefaultMinRequests         = 20
	DefaultBreakerInterval     = 10 * time.Second
	DefaultOpenDuration        = 30 * time.Second
	DefaultHalfOpenRequests    = 1
)

// Errors returned by Breaker.Do when it refuses to run the attempt. The proxy answers
// 503 at once, naming the breaker in its limit header. They wrap gobreaker's sentinels.
var (
	ErrBreakerOpen         = fmt.Errorf("circuit breaker open: %w", gobreaker.ErrOpenState)
	ErrBreakerHalfOpenFull = fmt.Errorf("circuit breaker half-open, probes in flight: %w", gobreaker.ErrTooManyRequests)
)

// BreakerConfig is the meshd extension spec.listeners[].circuitBreaker. Exactly one mode
// applies: failure ratio when FailureRatio > 0, else consecutive failures. Zero fields
// take the defaults above.
type BreakerConfig struct {
	// ConsecutiveFailures trips the breaker after this many failed attempts in a row
	// (consecutive mode). Default 5.
	ConsecutiveFailures uint32
	// FailureRatio in (0, 1] trips the breaker when failures/requests within the rolling
	// Interval reaches it, once MinRequests requests were seen (ratio mode).
	FailureRatio float64
	// MinRequests is the least number of requests within Interval before the ratio is
	// trusted (ratio mode). Default 20.
	MinRequests uint32
	// Interval is the rolling window of the counts, in 10 buckets. Ratio mode: default
	// 10 s. Consecutive mode: 0 (the default) never clears the run of failures; a value
	// clears counts that are older.
	Interval time.Duration
	// OpenDuration is how long the breaker stays open before letting probes through.
	// Default 30 s.
	OpenDuration time.Duration
	// HalfOpenRequests is how many probes may be in flight while half-open; that many
	// successes in a row close the breaker, one failure reopens it. Default 1.
	HalfOpenRequests uint32
}

// Outcome is what an attempt run by Breaker.Do reports.
type Outcome uint8

const (
	// Success: the upstream answered below 500.
	Success Outcome = iota
	// Failure: a 5xx, or a local failure (connect, reset, timeout).
	Failure
	// Ignored: the attempt says nothing about the upstream (the client went away, the
	// request was cancelled); it counts neither way.
	Ignored
)

// BreakerState is the breaker's state, for the admin pages.
type BreakerState = gobreaker.State

// The states, re-exported so callers need not import gobreaker.
const (
	BreakerClosed   = gobreaker.StateClosed
	BreakerHalfOpen = gobreaker.StateHalfOpen
	BreakerOpen     = gobreaker.StateOpen
)

var (
	errAttemptFailed  = errors.New("attempt failed")
	errAttemptIgnored = errors.New("attempt ignored")
)

// Breaker is the per-cluster circuit breaker App Mesh users asked for, a thin layer over
// github.com/sony/gobreaker/v2. It counts state changes and refusals into Counters and
// logs each state change.
//
// gobreaker reads time.Now itself and offers no clock injection (v2.4.0), so tests drive
// it inside a testing/synctest bubble, where time.Now is the bubble's fake clock.
//
// gobreaker's TwoStepCircuitBreaker.Allow returns a fresh closure (one allocation per
// request), so Breaker exposes Do instead, built on CircuitBreaker.Execute, which
// allocates nothing. Every call takes gobreaker's mutex twice (before and after the
// attempt): a decided cost of one uncontended lock pair per request, paid only on
// clusters that configure a breaker.
//
// Methods are safe for concurrent use. A nil *Breaker runs every attempt (no breaker
// configured).
type Breaker struct {
	cb       *gobreaker.CircuitBreaker[struct{}]
	counters *Counters
}

// NewBreaker validates cfg and builds the breaker of cluster. counters and log may be nil.
func NewBreaker(cluster string, cfg BreakerConfig, counters *Counters, log *slog.Logger) (*Breaker, error) {
	switch {
	case cfg.FailureRatio < 0 || cfg.FailureRatio > 1 || cfg.FailureRatio != cfg.FailureRatio:
		return nil, fmt.Errorf("cluster %s: circuitBreaker.failureRatio %v: want 0 < ratio ≤ 1", cluster, cfg.FailureRatio)
	case cfg.FailureRatio > 0 && cfg.ConsecutiveFailures > 0:
		return nil, fmt.Errorf("cluster %s: circuitBreaker: consecutiveFailures %d and failureRatio %v both set: choose one mode",
			cluster, cfg.ConsecutiveFailures, cfg.FailureRatio)
	case cfg.Interval < 0:
		return nil, fmt.Errorf("cluster %s: circuitBreaker.interval %v: want ≥ 0", cluster, cfg.Interval)
	case cfg.OpenDuration < 0:
		return nil, fmt.Errorf("cluster %s: circuitBreaker.openDuration %v: want ≥ 0", cluster, cfg.OpenDuration)
	}
	counters = orNew(counters)
	log = telemetry.OrDiscard(log)
	st := gobreaker.Settings{
		Name:        cluster,
		MaxRequests: cfg.HalfOpenRequests,
		Timeout:     cfg.OpenDuration,
		IsSuccessful: func(err error) bool {
			return err == nil
		},
		IsExcluded: func(err error) bool {
			return err == errAttemptIgnored
		},
		// Called under gobreaker's mutex on a state change: rare, so logging here is fine.
		OnStateChange: func(name string, from, to gobreaker.State) {
			switch to {
			case gobreaker.StateOpen:
				counters.BreakerOpened.Add(1)
			case gobreaker.StateHalfOpen:
				counters.BreakerHalfOpened.Add(1)
			case gobreaker.StateClosed:
				counters.BreakerClosed.Add(1)
			}
			log.Info("circuit breaker state changed", "cluster", name, "from", from.String(), "to", to.String())
		},
	}
	if st.MaxRequests == 0 {
		st.MaxRequests = DefaultHalfOpenRequests
	}
	if st.Timeout == 0 {
		st.Timeout = DefaultOpenDuration
	}
	st.Interval = cfg.Interval
	if cfg.FailureRatio > 0 {
		ratio, minReq := cfg.FailureRatio, cfg.MinRequests
		if minReq == 0 {
			minReq = DefaultMinRequests
		}
		if st.Interval == 0 {
			st.Interval = DefaultBreakerInterval
		}
		st.ReadyToTrip = func(c gobreaker.Counts) bool {
			// Requests includes attempts still in flight; judging on finished ones
			// keeps a burst of slow successes from diluting the ratio.
			done := c.TotalSuccesses + c.TotalFailures
			return done >= minReq && float64(c.TotalFailures) >= ratio*float64(done)
		}
	} else {
		n := cfg.ConsecutiveFailures
		if n == 0 {
			n = DefaultConsecutiveFailures
		}
		st.ReadyToTrip = func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= n }
	}
	if st.Interval >= 10 { // 10 rolling buckets; a window under 10 ns stays fixed
		st.BucketPeriod = st.Interval / 10
	}
	return &Breaker{cb: gobreaker.NewCircuitBreaker[struct{}](st), counters: counters}, nil
}

// Do runs attempt if the breaker admits it and feeds attempt's Outcome back. It returns
// nil when attempt ran (whatever its outcome), or ErrBreakerOpen / ErrBreakerHalfOpenFull
// without running it. attempt runs on the calling goroutine; if it panics, the panic is
// counted as a Failure and propagates (so panic(http.ErrAbortHandler) keeps working). Do
// allocates nothing beyond what attempt does.
func (b *Breaker) Do(attempt func() Outcome) error {
	if b == nil {
		attempt()
		return nil
	}
	_, err := b.cb.Execute(func() (struct{}, error) {
		switch attempt() {
		case Success:
			return struct{}{}, nil
		case Ignored:
			return struct{}{}, errAttemptIgnored
		}
		return struct{}{}, errAttemptFailed
	})
	switch err {
	case nil, errAttemptFailed, errAttemptIgnored:
		return nil
	case gobreaker.ErrOpenState:
		b.counters.BreakerRejected.Add(1)
		return ErrBreakerOpen
	case gobreaker.ErrTooManyRequests:
		b.counters.BreakerRejected.Add(1)
		return ErrBreakerHalfOpenFull
	}
	return err
}

// State is the breaker's current state (an open breaker whose OpenDuration is over reads
// as half-open). A nil breaker is always closed.
func (b *Breaker) State() BreakerState {
	if b == nil {
		return BreakerClosed
	}
	return b.cb.State()
}
