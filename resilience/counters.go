package resilience

import "sync/atomic"

// Counters make every resilience decision visible. One Counters value belongs to one
// cluster (the proxy keeps them by cluster name across reloads); the budget, detector,
// breaker and limiters of that cluster increment it. All fields are atomics: increments
// are lock-free and may come from any goroutine. Read them with Snapshot.
type Counters struct {
	// Retries counts retries admitted by the budget.
	Retries atomic.Uint64
	// RetryBudgetExhausted counts retries refused because the retry budget was spent.
	RetryBudgetExhausted atomic.Uint64
	// OverflowMaxRetries counts retries refused by the absolute maxRetries limit.
	OverflowMaxRetries atomic.Uint64
	// OverflowMaxConnections, OverflowMaxPendingRequests and OverflowMaxRequests count
	// requests answered 503 at once because a connectionPool limit tripped; the proxy,
	// which owns the pools, increments them.
	OverflowMaxConnections     atomic.Uint64
	OverflowMaxPendingRequests atomic.Uint64
	OverflowMaxRequests        atomic.Uint64

	// OutlierErrorsLocal and OutlierErrorsUpstream count failures fed to the outlier
	// detector by origin (connect failures, resets and timeouts vs 5xx responses).
	OutlierErrorsLocal    atomic.Uint64
	OutlierErrorsUpstream atomic.Uint64
	// OutlierEjections counts ejections; OutlierEjectionsActive is how many endpoints are
	// ejected now (a gauge); OutlierEjectionsOverflow counts ejections that
	// maxEjectionPercent prevented.
	OutlierEjections         atomic.Uint64
	OutlierEjectionsActive   atomic.Int64
	OutlierEjectionsOverflow atomic.Uint64

	// BreakerOpened, BreakerHalfOpened and BreakerClosed count state changes of the
	// cluster's circuit breaker; BreakerRejected counts requests it refused.
	BreakerOpened     atomic.Uint64
	BreakerHalfOpened atomic.Uint64
	BreakerClosed     atomic.Uint64
	BreakerRejected   atomic.Uint64

	// RateLimited counts requests answered 429 by a token bucket.
	RateLimited atomic.Uint64

	// HealthChecksPassed and HealthChecksFailed count the results of active health
	// checks, one per endpoint and round (Envoy's health_check.success / failure); the
	// cluster's control goroutine increments them.
	HealthChecksPassed atomic.Uint64
	HealthChecksFailed atomic.Uint64
}

// CountersSnapshot is a plain copy of Counters for the admin /stats JSON.
type CountersSnapshot struct {
	Retries                    uint64 `json:"retries"`
	RetryBudgetExhausted       uint64 `json:"retry_budget_exhausted"`
	OverflowMaxRetries         uint64 `json:"overflow_max_retries"`
	OverflowMaxConnections     uint64 `json:"overflow_max_connections"`
	OverflowMaxPendingRequests uint64 `json:"overflow_max_pending_requests"`
	OverflowMaxRequests        uint64 `json:"overflow_max_requests"`
	OutlierErrorsLocal         uint64 `json:"outlier_errors_local_origin"`
	OutlierErrorsUpstream      uint64 `json:"outlier_errors_upstream"`
	OutlierEjections           uint64 `json:"outlier_ejections_total"`
	OutlierEjectionsActive     int64  `json:"outlier_ejections_active"`
	OutlierEjectionsOverflow   uint64 `json:"outlier_ejections_overflow"`
	BreakerOpened              uint64 `json:"breaker_opened"`
	BreakerHalfOpened          uint64 `json:"breaker_half_opened"`
	BreakerClosed              uint64 `json:"breaker_closed"`
	BreakerRejected            uint64 `json:"breaker_rejected"`
	RateLimited                uint64 `json:"rate_limited"`
	HealthChecksPassed         uint64 `json:"health_check_success"`
	HealthChecksFailed         uint64 `json:"health_check_failure"`
}

// Snapshot reads every counter. The reads are individually atomic, not one consistent
// cut; that is fine for monitoring. Safe for concurrent use.
func (c *Counters) Snapshot() CountersSnapshot {
	return CountersSnapshot{
		Retries:                    c.Retries.Load(),
		RetryBudgetExhausted:       c.RetryBudgetExhausted.Load(),
		OverflowMaxRetries:         c.OverflowMaxRetries.Load(),
		OverflowMaxConnections:     c.OverflowMaxConnections.Load(),
		OverflowMaxPendingRequests: c.OverflowMaxPendingRequests.Load(),
		OverflowMaxRequests:        c.OverflowMaxRequests.Load(),
		OutlierErrorsLocal:         c.OutlierErrorsLocal.Load(),
		OutlierErrorsUpstream:      c.OutlierErrorsUpstream.Load(),
		OutlierEjections:           c.OutlierEjections.Load(),
		OutlierEjectionsActive:     c.OutlierEjectionsActive.Load(),
		OutlierEjectionsOverflow:   c.OutlierEjectionsOverflow.Load(),
		BreakerOpened:              c.BreakerOpened.Load(),
		BreakerHalfOpened:          c.BreakerHalfOpened.Load(),
		BreakerClosed:              c.BreakerClosed.Load(),
		BreakerRejected:            c.BreakerRejected.Load(),
		RateLimited:                c.RateLimited.Load(),
		HealthChecksPassed:         c.HealthChecksPassed.Load(),
		HealthChecksFailed:         c.HealthChecksFailed.Load(),
	}
}

// orNew lets constructors accept a nil *Counters (counting into a private value).
func orNew(c *Counters) *Counters {
	if c == nil {
		return new(Counters)
	}
	return c
}
