package resilience

import (
	"runtime"
	"sync"
	"sync/atomic"
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

// TestRetryBudgetDefaultNeverRefusesOrdinaryConcurrency: n concurrent requests have at
// most one attempt in flight each, so they never want more than n retry slots at once.
// With the default config no such retry is refused for n up to the floor, whatever the
// active count sampled at acquisition (it leaves out the retrying request and requests
// in backoff, so it can be anything from 0 to n). Envoy's floor of 3 refuses them: the
// "retry_budget_exhausted" failures App Mesh, with no budget, would not have had.
func TestRetryBudgetDefaultNeverRefusesOrdinaryConcurrency(t *testing.T) {
	tests := []struct {
		name        string
		cfg         BudgetConfig
		n           int
		active      func(held int, n int) int64 // the active count seen by the next acquirer
		wantRefused int                         // per round
	}{
		{"8 requests, others in backoff (active 0)", BudgetConfig{}, 8, func(int, int) int64 { return 0 }, 0},
		{"8 requests, earlier retries running", BudgetConfig{}, 8, func(held, _ int) int64 { return int64(held) }, 0},
		{"8 requests, all active", BudgetConfig{}, 8, func(_, n int) int64 { return int64(n) }, 0},
		{"4 requests, active 0", BudgetConfig{}, 4, func(int, int) int64 { return 0 }, 0},
		{"16 requests, active 0", BudgetConfig{}, 16, func(int, int) int64 { return 0 }, 0},
		{"32 requests (the floor), active 0", BudgetConfig{}, DefaultMinRetryConcurrency, func(int, int) int64 { return 0 }, 0},
		{"32 requests, all active", BudgetConfig{}, DefaultMinRetryConcurrency, func(_, n int) int64 { return int64(n) }, 0},
		{"Envoy's floor of 3 refuses 5 of 8", BudgetConfig{MinRetryConcurrency: 3}, 8, func(int, int) int64 { return 0 }, 5},
		{"Envoy's floor of 3 refuses 5 of 8 all active", BudgetConfig{MinRetryConcurrency: 3}, 8, func(_, n int) int64 { return int64(n) }, 5},
	}
	const rounds = 2 // App Mesh's default maxRetries: each request retries twice
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Counters
			b, err := NewRetryBudget(tt.cfg, &c)
			if err != nil {
				t.Fatal(err)
			}
			for r := range rounds {
				// Worst case: every request's retry runs at once, none released early.
				held, refused := 0, 0
				for range tt.n {
					if b.TryAcquireRetry(tt.active(held, tt.n)) {
						held++
					} else {
						refused++
					}
				}
				if refused != tt.wantRefused || b.Outstanding() != int64(held) {
					t.Fatalf("round %d: %d of %d retries refused (want %d), outstanding %d", r+1, refused, tt.n, tt.wantRefused, b.Outstanding())
				}
				for range held {
					b.ReleaseRetry()
				}
			}
			s := c.Snapshot()
			if want := uint64(rounds * tt.wantRefused); s.RetryBudgetExhausted != want || s.Retries != uint64(rounds*(tt.n-tt.wantRefused)) || s.OverflowMaxRetries != 0 {
				t.Errorf("counters %+v, want %d retries and %d retry_budget_exhausted", s, rounds*(tt.n-tt.wantRefused), want)
			}
			if b.Outstanding() != 0 {
				t.Errorf("outstanding %d after every release", b.Outstanding())
			}
		})
	}
}

// TestRetryBudgetBoundsFailingClusterAtScale: when every active request fails and wants
// a retry, outstanding retries stop at max(floor, 20% of active), and from 5 × floor
// active requests on that is the 20% share; every refusal is counted as
// retry_budget_exhausted, none as overflow_max_retries (the absolute limit is off).
func TestRetryBudgetBoundsFailingClusterAtScale(t *testing.T) {
	tests := []struct {
		name    string
		active  int64
		wantCap int64
	}{
		{"500 active, 20%", 500, 100},
		{"1000 active, 20%", 1000, 200},
		{"160 active, 20% meets the floor", 160, 32},
		{"300 active, 20%", 300, 60},
		{"100 active, the floor binds", 100, 32},
		{"2000 active, 20%", 2000, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Counters
			b, err := NewRetryBudget(BudgetConfig{}, &c)
			if err != nil {
				t.Fatal(err)
			}
			// Every active request asks once, holding what it gets.
			for range tt.active {
				b.TryAcquireRetry(tt.active)
			}
			if got := b.Outstanding(); got != tt.wantCap {
				t.Fatalf("outstanding %d retries of %d failing requests, want %d", got, tt.active, tt.wantCap)
			}
			if tt.active >= 5*DefaultMinRetryConcurrency && b.Outstanding()*100 > tt.active*DefaultBudgetPercent {
				t.Errorf("outstanding %d is more than %v%% of %d active", b.Outstanding(), DefaultBudgetPercent, tt.active)
			}
			s := c.Snapshot()
			if s.Retries != uint64(tt.wantCap) || s.RetryBudgetExhausted != uint64(tt.active-tt.wantCap) || s.OverflowMaxRetries != 0 {
				t.Errorf("counters %+v, want %d retries and %d retry_budget_exhausted", s, tt.wantCap, tt.active-tt.wantCap)
			}
			// A second wave is refused while the first holds the budget, and one
			// release frees exactly one slot.
			if b.TryAcquireRetry(tt.active) {
				t.Fatal("retry admitted past the cap")
			}
			b.ReleaseRetry()
			if !b.TryAcquireRetry(tt.active) || b.TryAcquireRetry(tt.active) {
				t.Fatal("one release did not free exactly one slot")
			}
			if got := c.RetryBudgetExhausted.Load(); got != uint64(tt.active-tt.wantCap)+2 {
				t.Errorf("retry_budget_exhausted %d, want %d", got, tt.active-tt.wantCap+2)
			}
		})
	}
}

// TestRetryBudgetConcurrentCap: goroutines hammering TryAcquireRetry and ReleaseRetry
// never hold more than the cap at once, and when their demand exceeds it exactly the cap
// is admitted and every refusal is counted. Run with -race.
func TestRetryBudgetConcurrentCap(t *testing.T) {
	tests := []struct {
		name       string
		active     int64
		goroutines int
		wantCap    int64
	}{
		{"floor, active 0", 0, 16, 32},
		{"floor, active 100", 100, 24, 32},
		{"20% of 500", 500, 40, 100},
		{"20% of 1000", 1000, 64, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Counters
			b, err := NewRetryBudget(BudgetConfig{}, &c)
			if err != nil {
				t.Fatal(err)
			}
			// Each goroutine wants this many slots at once: together 1.5 × the cap.
			per := int(tt.wantCap*3/2)/tt.goroutines + 1
			var held atomic.Int64 // slots held by the test, ≤ Outstanding at every instant
			var maxHeld atomic.Int64
			var admitted, asked atomic.Int64
			hold := func() {
				if h := held.Add(1); h > maxHeld.Load() {
					for m := maxHeld.Load(); h > m && !maxHeld.CompareAndSwap(m, h); m = maxHeld.Load() {
					}
				}
			}

			// Rounds with a barrier: all goroutines acquire greedily and hold, so the
			// budget sees demand above the cap; then all release.
			const rounds = 20
			for r := range rounds {
				var acquired sync.WaitGroup
				release := make(chan struct{})
				var done sync.WaitGroup
				for range tt.goroutines {
					acquired.Add(1)
					done.Add(1)
					go func() {
						defer done.Done()
						got := 0
						for range per {
							asked.Add(1)
							if b.TryAcquireRetry(tt.active) {
								got++
								admitted.Add(1)
								hold()
							}
						}
						acquired.Done()
						<-release
						for range got {
							held.Add(-1)
							b.ReleaseRetry()
						}
					}()
				}
				acquired.Wait()
				if got := b.Outstanding(); got != tt.wantCap {
					t.Errorf("round %d: %d goroutines wanting %d slots each hold %d, want the cap %d", r+1, tt.goroutines, per, got, tt.wantCap)
				}
				close(release)
				done.Wait()
			}

			// Free-running: acquire, yield, release, with no barrier.
			var wg sync.WaitGroup
			for range tt.goroutines {
				wg.Add(1)
				go func() {
					defer wg.Done()
					slots := make([]bool, per)
					for range 200 {
						for i := range slots {
							asked.Add(1)
							if slots[i] = b.TryAcquireRetry(tt.active); slots[i] {
								admitted.Add(1)
								hold()
								if o := b.Outstanding(); o > tt.wantCap {
									t.Errorf("outstanding %d > cap %d", o, tt.wantCap)
								}
							}
						}
						runtime.Gosched()
						for i, ok := range slots {
							if ok {
								held.Add(-1)
								b.ReleaseRetry()
								slots[i] = false
							}
						}
					}
				}()
			}
			wg.Wait()

			if m := maxHeld.Load(); m > tt.wantCap {
				t.Errorf("%d retries held at once, cap %d", m, tt.wantCap)
			}
			if b.Outstanding() != 0 || held.Load() != 0 {
				t.Errorf("outstanding %d, held %d after every release", b.Outstanding(), held.Load())
			}
			s := c.Snapshot()
			if s.Retries != uint64(admitted.Load()) || s.Retries+s.RetryBudgetExhausted != uint64(asked.Load()) || s.OverflowMaxRetries != 0 {
				t.Errorf("counters %+v for %d asked, %d admitted", s, asked.Load(), admitted.Load())
			}
			if want := uint64(rounds) * uint64(int64(tt.goroutines*per)-tt.wantCap); s.RetryBudgetExhausted < want {
				t.Errorf("retry_budget_exhausted %d, want at least the %d refusals of the barrier rounds", s.RetryBudgetExhausted, want)
			}
		})
	}
}

// A retry of a request the upstream never processed is counted without taking a slot:
// the budget still admits the retries it would have admitted.
func TestCountRetryTakesNoSlot(t *testing.T) {
	var cl, rt Counters
	b, err := NewRetryBudget(BudgetConfig{MinRetryConcurrency: 1, MaxRetries: 5}, &cl)
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		b.CountRetry(&rt)
	}
	if cl.Retries.Load() != 10 || rt.Retries.Load() != 10 {
		t.Fatalf("counted %d cluster / %d route retries, want 10", cl.Retries.Load(), rt.Retries.Load())
	}
	if !b.TryAcquireRetryFor(1, &rt) {
		t.Fatal("the budget refused its first slot after counted retries")
	}
}
