package resilience

import (
	"sync"
	"testing"
)

func TestRetryBudgetLimit(t *testing.T) {
	tests := []struct {
		name   string
		cfg    BudgetConfig
		active int64
		want   int64
	}{
		{"floor when idle", BudgetConfig{}, 0, 32},
		{"floor beats 20% of 10", BudgetConfig{}, 10, 32},
		{"20% of 160 is the floor", BudgetConfig{}, 160, 32},
		{"20% of 165", BudgetConfig{}, 165, 33},
		{"20% of 1000", BudgetConfig{}, 1000, 200},
		{"20% of 1234 rounds down", BudgetConfig{}, 1234, 246},
		{"Envoy's floor of 3 when idle", BudgetConfig{MinRetryConcurrency: 3}, 0, 3},
		{"Envoy's floor beats 20% of 15", BudgetConfig{MinRetryConcurrency: 3}, 15, 3},
		{"20% of 20 beats Envoy's floor", BudgetConfig{MinRetryConcurrency: 3}, 20, 4},
		{"fractional percent", BudgetConfig{BudgetPercent: 12.5, MinRetryConcurrency: 1}, 80, 10},
		{"50% of 30", BudgetConfig{BudgetPercent: 50, MinRetryConcurrency: 1}, 30, 15},
		{"absolute limit binds", BudgetConfig{MaxRetries: 5}, 1000, 5},
		{"negative active is the floor", BudgetConfig{}, -7, 32},
		{"huge active no overflow", BudgetConfig{BudgetPercent: 100}, 1 << 60, 1<<31 - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := NewRetryBudget(tt.cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := b.Limit(tt.active); got != tt.want {
				t.Errorf("Limit(%d) = %d, want %d", tt.active, got, tt.want)
			}
		})
	}
}

func TestRetryBudgetAcquireRelease(t *testing.T) {
	var c Counters
	b, err := NewRetryBudget(BudgetConfig{MinRetryConcurrency: 3}, &c)
	if err != nil {
		t.Fatal(err)
	}
	// 10 active requests: the floor of 3 applies.
	for i := 0; i < 3; i++ {
		if !b.TryAcquireRetry(10) {
			t.Fatalf("retry %d refused under the floor", i+1)
		}
	}
	if b.TryAcquireRetry(10) {
		t.Fatal("4th retry admitted with 10 active")
	}
	// More traffic raises the budget: 25 active allow 5.
	for i, want := range []bool{true, true, false} {
		if got := b.TryAcquireRetry(25); got != want {
			t.Fatalf("with 25 active, retry %d: %v, want %v (limit 5)", 4+i, got, want)
		}
	}
	b.ReleaseRetry()
	if b.Outstanding() != 4 {
		t.Fatalf("outstanding %d after release, want 4", b.Outstanding())
	}
	// Traffic fell back to 10 active: 4 outstanding exceed the floor, so no new retry;
	// at 25 active the released slot is free again.
	if b.TryAcquireRetry(10) || !b.TryAcquireRetry(25) {
		t.Fatal("release did not free exactly one slot")
	}
	s := c.Snapshot()
	if s.Retries != 6 || s.RetryBudgetExhausted != 3 || s.OverflowMaxRetries != 0 {
		t.Errorf("counters %+v", s)
	}
}

func TestRetryBudgetMaxRetriesOverflow(t *testing.T) {
	var c Counters
	b, err := NewRetryBudget(BudgetConfig{MaxRetries: 1}, &c)
	if err != nil {
		t.Fatal(err)
	}
	if !b.TryAcquireRetry(100) || b.TryAcquireRetry(100) {
		t.Fatal("maxRetries 1 must admit exactly one")
	}
	if s := c.Snapshot(); s.OverflowMaxRetries != 1 || s.RetryBudgetExhausted != 0 {
		t.Errorf("counters %+v", s)
	}
}

func TestRetryBudgetErrors(t *testing.T) {
	for _, cfg := range []BudgetConfig{{BudgetPercent: -1}, {BudgetPercent: 101}, {MinRetryConcurrency: -1}, {MaxRetries: -2}} {
		if _, err := NewRetryBudget(cfg, nil); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}

// Concurrent acquirers never push outstanding retries past the limit.
func TestRetryBudgetConcurrent(t *testing.T) {
	b, err := NewRetryBudget(BudgetConfig{MinRetryConcurrency: 4}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	maxSeen := int64(0)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				if b.TryAcquireRetry(0) {
					if o := b.Outstanding(); o > 4 {
						mu.Lock()
						maxSeen = max(maxSeen, o)
						mu.Unlock()
					}
					b.ReleaseRetry()
				}
			}
		}()
	}
	wg.Wait()
	if maxSeen != 0 || b.Outstanding() != 0 {
		t.Fatalf("outstanding reached %d, ended at %d", maxSeen, b.Outstanding())
	}
}

func TestTryAcquireRetryForCountsRoute(t *testing.T) {
	var cl, rt Counters
	b, err := NewRetryBudget(BudgetConfig{MinRetryConcurrency: 1, MaxRetries: 5}, &cl)
	if err != nil {
		t.Fatal(err)
	}
	if !b.TryAcquireRetryFor(1, &rt) {
		t.Fatal("first retry refused")
	}
	if b.TryAcquireRetryFor(1, &rt) {
		t.Fatal("second retry admitted past the floor of 1")
	}
	b.ReleaseRetry()
	if got := rt.Snapshot(); got.Retries != 1 || got.RetryBudgetExhausted != 1 {
		t.Errorf("route counters = %+v, want 1 retry and 1 exhausted", got)
	}
	if got := cl.Snapshot(); got.Retries != 1 || got.RetryBudgetExhausted != 1 {
		t.Errorf("cluster counters = %+v", got)
	}
	b2, _ := NewRetryBudget(BudgetConfig{MinRetryConcurrency: 3, MaxRetries: 1}, nil)
	b2.TryAcquireRetryFor(0, &rt)
	if b2.TryAcquireRetryFor(0, &rt) || rt.OverflowMaxRetries.Load() != 1 {
		t.Errorf("max-retries overflow not counted on the route: %+v", rt.Snapshot())
	}
}
