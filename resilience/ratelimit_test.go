package resilience

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestTokenBucketBurstAndRefill(t *testing.T) {
	clk := newFakeClock()
	var c Counters
	b, err := NewTokenBucket(RateLimitConfig{RequestsPerSecond: 10, Burst: 5}, clk.Now(), &c)
	if err != nil {
		t.Fatal(err)
	}
	// A full bucket admits the burst at once, then refuses.
	for i := 0; i < 5; i++ {
		if ok, _ := b.Allow(clk.Now()); !ok {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	ok, wait := b.Allow(clk.Now())
	if ok || wait != 100*time.Millisecond {
		t.Fatalf("6th: ok %v wait %v, want refused for 100ms", ok, wait)
	}
	// One token per 100 ms.
	clk.Advance(99 * time.Millisecond)
	if ok, wait := b.Allow(clk.Now()); ok || wait != time.Millisecond {
		t.Fatalf("at 99ms: ok %v wait %v, want refused for 1ms", ok, wait)
	}
	clk.Advance(time.Millisecond)
	if ok, _ := b.Allow(clk.Now()); !ok {
		t.Fatal("token not refilled after 100ms")
	}
	if ok, _ := b.Allow(clk.Now()); ok {
		t.Fatal("two tokens from 100ms")
	}
	// A long quiet spell refills only up to the burst.
	clk.Advance(time.Hour)
	n := 0
	for i := 0; i < 20; i++ {
		if ok, _ := b.Allow(clk.Now()); ok {
			n++
		}
	}
	if n != 5 {
		t.Fatalf("after an hour: %d admitted at once, want the burst of 5", n)
	}
	if got := c.RateLimited.Load(); got != 3+15 {
		t.Errorf("RateLimited = %d, want 18", got)
	}
}

func TestTokenBucketSustainedRate(t *testing.T) {
	tests := []struct {
		cfg      RateLimitConfig
		step     time.Duration
		steps    int
		admitted int
	}{
		// One request per ms for 10 s (t = 0 .. 9.999 s) against 100 rps with the
		// default burst of 100: the burst, plus a token every 10 ms from 10 ms on.
		{RateLimitConfig{RequestsPerSecond: 100}, time.Millisecond, 10000, 100 + 999},
		// Half a request per second, burst 1: one every 2 s, 5 in 10 s plus the first.
		{RateLimitConfig{RequestsPerSecond: 0.5}, 100 * time.Millisecond, 100, 1 + 4},
		// Four requests a second for 10 s against 1 rps, burst 3: 3 at once, then one
		// a second from t = 1 s to 9 s.
		{RateLimitConfig{RequestsPerSecond: 1, Burst: 3}, 250 * time.Millisecond, 40, 3 + 9},
	}
	for _, tt := range tests {
		clk := newFakeClock()
		b, err := NewTokenBucket(tt.cfg, clk.Now(), nil)
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for i := 0; i < tt.steps; i++ {
			if ok, _ := b.Allow(clk.Now()); ok {
				got++
			}
			clk.Advance(tt.step)
		}
		if got != tt.admitted {
			t.Errorf("%+v: admitted %d, want %d", tt.cfg, got, tt.admitted)
		}
	}
}

func TestTokenBucketConcurrent(t *testing.T) {
	now := time.Now()
	b, err := NewTokenBucket(RateLimitConfig{RequestsPerSecond: 1, Burst: 100}, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				if ok, _ := b.Allow(now); ok {
					admitted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if admitted.Load() != 100 {
		t.Fatalf("admitted %d at one instant, want exactly the burst of 100", admitted.Load())
	}
}

func TestTokenBucketErrors(t *testing.T) {
	tests := []struct {
		cfg  RateLimitConfig
		want string
	}{
		{RateLimitConfig{}, "requestsPerSecond 0"},
		{RateLimitConfig{RequestsPerSecond: -1}, "requestsPerSecond -1"},
		{RateLimitConfig{RequestsPerSecond: 2e9}, "requestsPerSecond 2e+09"},
		{RateLimitConfig{RequestsPerSecond: 1, Burst: -1}, "burst -1"},
		{RateLimitConfig{RequestsPerSecond: 1, Burst: 1 << 50}, "too large"},
	}
	for _, tt := range tests {
		_, err := NewTokenBucket(tt.cfg, time.Now(), nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: err %v, want one containing %q", tt.cfg, err, tt.want)
		}
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	for d, want := range map[time.Duration]int64{0: 1, time.Millisecond: 1, time.Second: 1, time.Second + 1: 2, 90 * time.Second: 90} {
		if got := RetryAfterSeconds(d); got != want {
			t.Errorf("RetryAfterSeconds(%v) = %d, want %d", d, got, want)
		}
	}
}

func TestPanicMode(t *testing.T) {
	tests := []struct {
		healthy, total, threshold int
		want                      bool
	}{
		{10, 10, 50, false},
		{5, 10, 50, false}, // exactly at the threshold is not panic (Envoy: < threshold)
		{4, 10, 50, true},
		{0, 10, 50, true},
		{1, 3, 50, true},
		{2, 3, 50, false},
		{0, 10, 0, false}, // 0% disables
		{0, 0, 50, false}, // nothing to spread over
		{99, 100, 100, true},
		{100, 100, 100, false},
	}
	for _, tt := range tests {
		if got := PanicMode(tt.healthy, tt.total, tt.threshold); got != tt.want {
			t.Errorf("PanicMode(%d, %d, %d) = %v, want %v", tt.healthy, tt.total, tt.threshold, got, tt.want)
		}
	}
}
