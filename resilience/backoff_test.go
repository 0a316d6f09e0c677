package resilience

import (
	"math"
	"testing"
	"time"
)

func fixedRand(v uint64) func() uint64 { return func() uint64 { return v } }

func TestBackoffCeiling(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name    string
		b       Backoff
		attempt int
		want    time.Duration
	}{
		{"default first", Backoff{}, 1, 25 * ms},
		{"zero attempt is first", Backoff{}, 0, 25 * ms},
		{"negative attempt is first", Backoff{}, -5, 25 * ms},
		{"default second", Backoff{}, 2, 50 * ms},
		{"default third", Backoff{}, 3, 100 * ms},
		{"default fourth", Backoff{}, 4, 200 * ms},
		{"default capped", Backoff{}, 5, 250 * ms},
		{"default far", Backoff{}, 1000, 250 * ms},
		{"max defaults to 10x base", Backoff{Base: 100 * ms}, 10, time.Second},
		{"max below base raised", Backoff{Base: 100 * ms, Max: 10 * ms}, 3, 100 * ms},
		{"explicit", Backoff{Base: 10 * ms, Max: time.Second}, 7, 640 * ms},
		{"huge base no overflow", Backoff{Base: math.MaxInt64 / 2}, 3, math.MaxInt64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.b.Ceiling(tt.attempt); got != tt.want {
				t.Errorf("Ceiling(%d) = %v, want %v", tt.attempt, got, tt.want)
			}
		})
	}
}

func TestBackoffDelayBounds(t *testing.T) {
	// The RNG's extremes map to the ends of [0, ceiling).
	for attempt := 1; attempt <= 8; attempt++ {
		ceil := Backoff{}.Ceiling(attempt)
		if d := (Backoff{Rand: fixedRand(0)}).Delay(attempt); d != 0 {
			t.Errorf("attempt %d rand 0: %v, want 0", attempt, d)
		}
		hi := (Backoff{Rand: fixedRand(math.MaxUint64)}).Delay(attempt)
		if hi >= ceil || hi < ceil-1 {
			t.Errorf("attempt %d rand max: %v, want just under %v", attempt, hi, ceil)
		}
		if mid := (Backoff{Rand: fixedRand(1 << 63)}).Delay(attempt); mid != ceil/2 {
			t.Errorf("attempt %d rand half: %v, want %v", attempt, mid, ceil/2)
		}
	}
	// The default RNG stays within bounds too.
	b := Backoff{Base: time.Millisecond, Max: 8 * time.Millisecond}
	for i := 0; i < 1000; i++ {
		attempt := 1 + i%6
		if d := b.Delay(attempt); d < 0 || d >= b.Ceiling(attempt) {
			t.Fatalf("Delay(%d) = %v outside [0, %v)", attempt, d, b.Ceiling(attempt))
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"0", 0, true},
		{"5", 5 * time.Second, true},
		{" 120\t", 120 * time.Second, true},
		{"300", 300 * time.Second, true},
		{"301", RetryAfterCap, true},
		{"99999999999999999999999999", RetryAfterCap, true},
		{"Thu, 26 Nov 2026 12:00:30 GMT", 30 * time.Second, true}, // IMF-fixdate
		{"Thursday, 26-Nov-26 12:01:00 GMT", time.Minute, true},   // RFC 850
		{"Thu Nov 26 12:00:10 2026", 10 * time.Second, true},      // asctime
		{"Thu, 26 Nov 2026 11:00:00 GMT", 0, true},                // past
		{"Fri, 27 Nov 2026 12:00:00 GMT", RetryAfterCap, true},    // far future
		{"", 0, false},
		{"  ", 0, false},
		{"-1", 0, false},
		{"1.5", 0, false},
		{"5s", 0, false},
		{"+5", 0, false},
		{"Thu, 26 Nov 2026 12:00:30 PST", 0, false},
		{"tomorrow", 0, false},
	}
	for _, tt := range tests {
		got, ok := ParseRetryAfter(tt.in, now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseGRPCTimeout(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1H", time.Hour, true},
		{"2M", 2 * time.Minute, true},
		{"30S", 30 * time.Second, true},
		{"100m", 100 * time.Millisecond, true},
		{"250u", 250 * time.Microsecond, true},
		{"7n", 7, true},
		{"0S", 0, true},
		{"99999999n", 99999999, true},
		{"00000001S", time.Second, true},
		{"99999999H", math.MaxInt64, true},
		{"3000000H", math.MaxInt64, true},
		{"2000000H", 2000000 * time.Hour, true},
		{"123456789S", 0, false}, // 9 digits
		{"S", 0, false},
		{"", 0, false},
		{"10", 0, false},
		{"10s", 0, false},
		{"10x", 0, false},
		{"-1S", 0, false},
		{"1 S", 0, false},
		{"1.5S", 0, false},
	}
	for _, tt := range tests {
		got, ok := ParseGRPCTimeout(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseGRPCTimeout(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}
