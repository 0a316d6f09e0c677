package resilience

import (
	"fmt"
	"math"
	"sync/atomic"
)

// Retry budget defaults. DefaultMaxRetriesLimit is App Mesh's hidden circuit-breaker
// threshold (max_retries 2^31-1), i.e. no absolute limit.
const (
	// DefaultBudgetPercent is Envoy's retry_budget default (budget_percent 20): once
	// the cluster is busy enough that the share exceeds the floor, at most a fifth of
	// the attempts in flight to it may be retries.
	DefaultBudgetPercent = 20.0
	// DefaultMinRetryConcurrency is 32, not Envoy's min_retry_concurrency 3.
	//
	// App Mesh configured Envoy with no retry budget and a max_retries threshold of
	// 2^31-1, so it never refused a retry that the route's maxRetries allowed; meshd
	// must not fail requests App Mesh would have retried. Envoy's floor of 3 does: a
	// request has at most one attempt in flight, so N concurrent requests need up to
	// N retry slots, and the active count the share is taken of is sampled when a
	// retry starts, without the retrying request itself or requests waiting out a
	// backoff, so at small concurrency 20% of it rounds to 0 or 1 and the floor alone
	// decides. With a floor of 3, four or more concurrent clients of an endpoint
	// failing every other request saw about half their requests fail with
	// retry_budget_exhausted.
	//
	// With a floor of 32, a cluster with at most 32 concurrent requests is never
	// refused a retry (the budget is invisible, as in App Mesh), however badly it
	// fails. Between 32 and 160 active requests a fully failing cluster carries at
	// most 32 outstanding retries, and from 160 (5 × 32) on the 20% share binds: at
	// 500 active requests all failing, at most 100 retries are outstanding, so a
	// failing cluster at scale still cannot start a retry storm. A larger floor would
	// push the point where the 20% bound takes over (5 × floor) past the hundreds of
	// concurrent requests where a storm matters; a smaller one refuses retries at
	// concurrency levels an ordinary sidecar sees.
	DefaultMinRetryConcurrency = 32
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
// cluster. Ask when the retry's attempt is about to start, after any backoff: a retry
// holds its slot only while its attempt runs. On true the caller must call ReleaseRetry
// exactly once when that retry attempt ends; on false it must not retry and returns the
// failure it has. Counts Retries, RetryBudgetExhausted or OverflowMaxRetries.
func (b *RetryBudget) TryAcquireRetry(active int64) bool {
	return b.TryAcquireRetryFor(active, nil)
}

// CountRetry counts a retry that takes no slot of the budget: a request the upstream
// never processed (HTTP/2 REFUSED_STREAM, above a GOAWAY), whose retry adds no load. A
// burst of streams crossing one GOAWAY must not find the budget exhausted by its own
// retries.
func (b *RetryBudget) CountRetry(route *Counters) {
	b.counters.Retries.Add(1)
	if route != nil {
		route.Retries.Add(1)
	}
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
