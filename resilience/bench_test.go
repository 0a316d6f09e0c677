package resilience

import (
	"testing"
	"time"
)

// The per-request calls: each must report 0 allocs/op with -benchmem (and
// TestPerRequestCallsDoNotAllocate enforces it in ordinary test runs).

func BenchmarkRetryOnStatus(b *testing.B) {
	p, _ := CompileRetryPolicy(RetryInput{HTTPEvents: []string{"server-error", "client-error"}})
	n := 0
	for i := 0; b.Loop(); i++ {
		if p.RetryOnStatus(200 + i%400) {
			n++
		}
	}
	_ = n
}

func BenchmarkBackoffDelay(b *testing.B) {
	bo := Backoff{}
	for i := 0; b.Loop(); i++ {
		_ = bo.Delay(1 + i%5)
	}
}

func BenchmarkRetryBudget(b *testing.B) {
	rb, _ := NewRetryBudget(BudgetConfig{}, nil)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if rb.TryAcquireRetry(100) {
				rb.ReleaseRetry()
			}
		}
	})
}

func BenchmarkOutlierRecord(b *testing.B) {
	d, _ := NewOutlierDetector("c", OutlierConfig{MaxServerErrors: 5, Interval: time.Second, BaseEjectionDuration: time.Second, MaxEjectionPercent: 10}, nil, nil)
	d.Update([]string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"})
	now := time.Now()
	b.Run("success", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				d.Record("10.0.0.1:80", Result{Status: 200}, now)
			}
		})
	})
	b.Run("failure", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				d.Record("10.0.0.2:80", Result{Status: 503}, now)
			}
		})
	})
}

func BenchmarkTokenBucket(b *testing.B) {
	now := time.Now()
	tb, _ := NewTokenBucket(RateLimitConfig{RequestsPerSecond: 1e6, Burst: 1000}, now, nil)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tb.Allow(now)
		}
	})
}

func BenchmarkBreakerDo(b *testing.B) {
	br, _ := NewBreaker("c", BreakerConfig{FailureRatio: 0.5}, nil, nil)
	status := 200
	for b.Loop() {
		_ = br.Do(func() Outcome {
			if status >= 500 {
				return Failure
			}
			return Success
		})
	}
}

func BenchmarkParseGRPCTimeout(b *testing.B) {
	for b.Loop() {
		_, _ = ParseGRPCTimeout("250m")
	}
}

func BenchmarkParseRetryAfter(b *testing.B) {
	now := time.Now()
	b.Run("seconds", func(b *testing.B) {
		for b.Loop() {
			_, _ = ParseRetryAfter("120", now)
		}
	})
	b.Run("date", func(b *testing.B) {
		for b.Loop() {
			_, _ = ParseRetryAfter("Thu, 26 Nov 2026 12:00:30 GMT", now)
		}
	})
}

func TestPerRequestCallsDoNotAllocate(t *testing.T) {
	p := DefaultRetryPolicy()
	rb, _ := NewRetryBudget(BudgetConfig{}, nil)
	d, _ := NewOutlierDetector("c", OutlierConfig{MaxServerErrors: 1 << 40, Interval: time.Second, BaseEjectionDuration: time.Second}, nil, nil)
	d.Update([]string{"10.0.0.1:80"})
	now := time.Now()
	tb, _ := NewTokenBucket(RateLimitConfig{RequestsPerSecond: 1}, now, nil)
	br, _ := NewBreaker("c", BreakerConfig{}, nil, nil)
	status := 503
	calls := map[string]func(){
		"RetryOn*": func() {
			_ = p.RetryOnStatus(status) || p.RetryOnGRPC(14) || p.RetryOnConnectFailure() || p.RetryOnReset() || p.RetryOnRefusedStream()
		},
		"Backoff.Delay": func() { _ = Backoff{}.Delay(3) },
		"RetryBudget": func() {
			if rb.TryAcquireRetry(10) {
				rb.ReleaseRetry()
			}
		},
		"OutlierDetector.Record success": func() { d.Record("10.0.0.1:80", Result{Status: 200}, now) },
		"OutlierDetector.Record failure": func() { d.Record("10.0.0.1:80", Result{Status: status}, now) },
		"TokenBucket.Allow":              func() { tb.Allow(now) },
		"Breaker.Do": func() {
			_ = br.Do(func() Outcome {
				if status == 503 {
					return Success
				}
				return Failure
			})
		},
		"ParseGRPCTimeout":          func() { _, _ = ParseGRPCTimeout("1S") },
		"ParseRetryAfter (seconds)": func() { _, _ = ParseRetryAfter("3", now) },
		"PanicMode":                 func() { _ = PanicMode(3, 10, DefaultPanicThresholdPercent) },
	}
	for name, f := range calls {
		if a := testing.AllocsPerRun(100, f); a != 0 {
			t.Errorf("%s: %v allocs per call, want 0", name, a)
		}
	}
}
