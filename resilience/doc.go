// Package resilience is the decision logic behind meshd's resilience features: retry
// policies and backoff, retry budgets, outlier detection, circuit breakers, rate limits
// and the panic threshold.
//
// Everything here is pure logic fed by results: it performs no I/O, starts no goroutines
// and reads no clock of its own. Callers pass the current time (from a Clock) and report
// what happened to each attempt; the package answers "may I?", "how long to wait?" and
// "which endpoints are out?". The proxy owns timers, tickers and the wiring.
//
// Per-request calls (RetryPolicy.RetryOn*, Backoff.Delay, RetryBudget.TryAcquireRetry,
// OutlierDetector.Record of a success, TokenBucket.Allow, Breaker.Do) allocate nothing;
// the benchmarks in this package check that. Each type states its concurrency contract.
//
// docs/resilience.md describes the mechanisms, their defaults and the config fields that
// drive them.
package resilience
