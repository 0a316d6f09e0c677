package resilience

import (
	"fmt"
	"math"
	"sync/atomic"
)

// Retry budget defaults, Envoy's retry_budget: retries may be at most 20% of active
// requests, but 3 concurrent retries are always allowed. DefaultMaxRetriesLimit is App
// Mesh's hidden circuit-breaker threshold (2^31-1), i.e. no absolute limit.
const (
	DefaultBudgetPercent       = 20.0
	DefaultMinRetryConcurrency = 3
	DefaultMaxRetriesLimit     = math.MaxInt32
)

// BudgetConfig configures a RetryBudget. Zero fields take the defaults above.
type BudgetConfig struct {
	// BudgetPercent is the share of active requests that may be retries, 0 < p ≤ 100.
	BudgetPercent float64
	// MinRetryConcurrency is the floor: this many retries may be outstanding whatever the
	// number of active requests, so a quiet cluster can still retry.
	MinRetryConcurrency int64
	// MaxRetries is the absolute limit on outstanding retries (Envoy's max_retries
	// threshold, the "max-retries limit").
	MaxRetries int64
}

// RetryBudget bounds concurrent retries to one cluster so that retries cannot multiply an
// outage: at most max(MinRetryConcurrency, BudgetPercent% of active requests) retries may
// be in flight, and never more than MaxRetries (Envoy's retry_budget and max_retries).
//
// One RetryBudget per cluster, shared by every request to it; TryAcquireRetry and
// ReleaseRetry are lock-free (a CAS loop on one counter), allocate nothing and may be
// called from any goroutine.
type RetryBudget struct {
	basisPoints int64 // BudgetPercent × 100, so the hot path needs no float math
	floor       int64
	max         int64
	outstanding atomic.Int64
	counters    *Counters
}

// NewRetryBudget validates cfg and builds a budget counting into counters (nil: a
// private Counters). Errors name the field and value.
func NewRetryBudget(cfg BudgetConfig, counters *Counters) (*RetryBudget, error) {
	if cfg.BudgetPercent == 0 {
		cfg.BudgetPercent = DefaultBudgetPercent
	}
	if cfg.MinRetryConcurrency == 0 {
		cfg.MinRetryConcurrency = DefaultMinRetryConcurrency
	}
	if cfg.MaxRetries == 0 {
		cfg.MaxRetries = DefaultMaxRetriesLimit
	}
	if !(cfg.BudgetPercent > 0 && cfg.BudgetPercent <= 100) {
		return nil, fmt.Errorf("retryBudget.budgetPercent %v: want 0 < percent ≤ 100", cfg.BudgetPercent)
	}
	if cfg.MinRetryConcurrency < 0 {
		return nil, fmt.Errorf("retryBudget.minRetryConcurrency %d: want ≥ 0", cfg.MinRetryConcurrency)
	}
	if cfg.MaxRetries < 0 {
		return nil, fmt.Errorf("maxRetries limit %d: want ≥ 0", cfg.MaxRetries)
	}
	return &RetryBudget{
		basisPoints: int64(math.Round(cfg.BudgetPercent * 100)),
		floor:       cfg.MinRetryConcurrency,
		max:         cfg.MaxRetries,
		counters:    orNew(counters),
	}, nil
}

// Limit is how many retries may be outstanding when active requests are in flight to
// the cluster (retries included, as Envoy counts them).
func (b *RetryBudget) Limit(active int64) int64 {
	lim := b.floor
	if active > 0 {
		// active·bp/10000 without overflow for any realistic active count; a negative
		// product (absurd active) falls back to the floor.
		if byPct := active/10000*b.basisPoints + active%10000*b.basisPoints/10000; byPct > lim {
			lim = byPct
		}
	}
	return min(lim, b.max)
}

// TryAcquireRetry asks to start one retry while active requests are in flight to the
// cluster. On true the caller must call ReleaseRetry exactly once when that retry
// attempt ends; on false it must not retry and returns the failure it has. Counts
// Retries, RetryBudgetExhausted or OverflowMaxRetries.
func (b *RetryBudget) TryAcquireRetry(active int64) bool {
	return b.TryAcquireRetryFor(active, nil)
}

// TryAcquireRetryFor is TryAcquireRetry that also counts the decision into route (the
// counters of the route the request came in on; nil: none), so retries are visible per
// cluster and per route.
func (b *RetryBudget) TryAcquireRetryFor(active int64, route *Counters) bool {
	lim := b.Limit(active)
	for {
		cur := b.outstanding.Load()
		if cur >= lim {
			if lim == b.max { // the absolute limit, not the budget, is what binds
				b.counters.OverflowMaxRetries.Add(1)
				if route != nil {
					route.OverflowMaxRetries.Add(1)
				}
			} else {
				b.counters.RetryBudgetExhausted.Add(1)
				if route != nil {
					route.RetryBudgetExhausted.Add(1)
				}
			}
			return false
		}
		if b.outstanding.CompareAndSwap(cur, cur+1) {
			b.counters.Retries.Add(1)
			if route != nil {
				route.Retries.Add(1)
			}
			return true
		}
	}
}

// ReleaseRetry ends a retry admitted by TryAcquireRetry.
func (b *RetryBudget) ReleaseRetry() { b.outstanding.Add(-1) }

// Outstanding is the number of retries in flight now.
func (b *RetryBudget) Outstanding() int64 { return b.outstanding.Load() }
