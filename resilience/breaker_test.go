package resilience

import (
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sony/gobreaker/v2"
)

// gobreaker reads time.Now itself; inside a synctest bubble that is the bubble's fake
// clock, and time.Sleep advances it instantly and exactly.

func run(t *testing.T, b *Breaker, o Outcome) error {
	t.Helper()
	ran := false
	err := b.Do(func() Outcome { ran = true; return o })
	if (err == nil) != ran {
		t.Fatalf("Do returned %v but attempt ran = %v", err, ran)
	}
	return err
}

func TestBreakerConsecutive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var c Counters
		b, err := NewBreaker("backend", BreakerConfig{ConsecutiveFailures: 3, OpenDuration: 5 * time.Second, HalfOpenRequests: 2}, &c, nil)
		if err != nil {
			t.Fatal(err)
		}
		// Two failures, a success, two failures: never three in a row.
		for _, o := range []Outcome{Failure, Failure, Success, Failure, Ignored, Failure} {
			if err := run(t, b, o); err != nil {
				t.Fatalf("closed breaker refused: %v", err)
			}
		}
		if b.State() != BreakerClosed {
			t.Fatalf("state %v, want closed", b.State())
		}
		// The third in a row trips it.
		run(t, b, Failure)
		if b.State() != BreakerOpen {
			t.Fatalf("state %v, want open", b.State())
		}
		if err := run(t, b, Success); !errors.Is(err, ErrBreakerOpen) || !errors.Is(err, gobreaker.ErrOpenState) {
			t.Fatalf("open breaker: err %v, want ErrBreakerOpen", err)
		}
		time.Sleep(5*time.Second - time.Nanosecond)
		if b.State() != BreakerOpen {
			t.Fatal("open shorter than OpenDuration")
		}
		time.Sleep(2 * time.Nanosecond)
		if b.State() != BreakerHalfOpen {
			t.Fatalf("state %v after OpenDuration, want half-open", b.State())
		}
		// Half-open admits HalfOpenRequests probes at a time: with two in flight (one
		// nested in the other) a third is refused; two successes close it.
		inner := func() Outcome {
			if err := run(t, b, Success); !errors.Is(err, ErrBreakerHalfOpenFull) {
				t.Errorf("third concurrent probe: err %v, want ErrBreakerHalfOpenFull", err)
			}
			return Success
		}
		outer := func() Outcome {
			if err := b.Do(inner); err != nil {
				t.Errorf("second probe refused: %v", err)
			}
			if b.State() != BreakerHalfOpen {
				t.Errorf("state %v after one successful probe, want half-open", b.State())
			}
			return Success
		}
		if err := b.Do(outer); err != nil {
			t.Fatal(err)
		}
		if b.State() != BreakerClosed {
			t.Fatalf("state %v after 2 successful probes, want closed", b.State())
		}
		s := c.Snapshot()
		if s.BreakerOpened != 1 || s.BreakerHalfOpened != 1 || s.BreakerClosed != 1 || s.BreakerRejected != 2 /* open + half-open full */ {
			t.Errorf("counters %+v", s)
		}
	})
}

func TestBreakerHalfOpenFailureReopens(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var c Counters
		b, err := NewBreaker("backend", BreakerConfig{ConsecutiveFailures: 1}, &c, nil)
		if err != nil {
			t.Fatal(err)
		}
		run(t, b, Failure)
		time.Sleep(DefaultOpenDuration + time.Nanosecond)
		if b.State() != BreakerHalfOpen {
			t.Fatalf("state %v, want half-open after the default open duration", b.State())
		}
		run(t, b, Failure)
		if b.State() != BreakerOpen {
			t.Fatalf("state %v after a failed probe, want open", b.State())
		}
		// Open again for a full OpenDuration.
		time.Sleep(DefaultOpenDuration - time.Nanosecond)
		if err := run(t, b, Success); !errors.Is(err, ErrBreakerOpen) {
			t.Fatalf("err %v, want open", err)
		}
		s := c.Snapshot()
		if s.BreakerOpened != 2 || s.BreakerHalfOpened != 1 || s.BreakerClosed != 0 {
			t.Errorf("counters %+v", s)
		}
	})
}

func TestBreakerRatio(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, err := NewBreaker("backend", BreakerConfig{FailureRatio: 0.5, MinRequests: 10, Interval: 10 * time.Second}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		// 9 requests, all failed: below MinRequests, stays closed.
		for i := 0; i < 9; i++ {
			run(t, b, Failure)
		}
		if b.State() != BreakerClosed {
			t.Fatal("tripped below MinRequests")
		}
		// The window rolls: after it has passed, the 9 failures are forgotten.
		time.Sleep(11 * time.Second)
		for i := 0; i < 6; i++ {
			run(t, b, Success)
		}
		for i := 0; i < 4; i++ {
			run(t, b, Failure) // 4/10 < 0.5
		}
		if b.State() != BreakerClosed {
			t.Fatal("tripped at 40% failures")
		}
		// Ignored attempts count neither way.
		for i := 0; i < 5; i++ {
			run(t, b, Ignored)
		}
		if b.State() != BreakerClosed {
			t.Fatal("ignored attempts tripped the breaker")
		}
		run(t, b, Failure) // 5/11 < 0.5
		run(t, b, Failure) // 6/12 = 0.5: trips
		if b.State() != BreakerOpen {
			t.Fatalf("state %v at 50%% failures, want open", b.State())
		}
	})
}

func TestBreakerPanicCountsAsFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, err := NewBreaker("backend", BreakerConfig{ConsecutiveFailures: 1}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		func() {
			defer func() {
				if r := recover(); r != "abort" {
					t.Errorf("recovered %v, want the attempt's panic", r)
				}
			}()
			_ = b.Do(func() Outcome { panic("abort") })
		}()
		if b.State() != BreakerOpen {
			t.Fatalf("state %v after a panicking attempt, want open", b.State())
		}
	})
}

func TestBreakerConfigErrors(t *testing.T) {
	tests := []struct {
		cfg  BreakerConfig
		want string
	}{
		{BreakerConfig{FailureRatio: 1.5}, "failureRatio 1.5"},
		{BreakerConfig{FailureRatio: -0.1}, "failureRatio -0.1"},
		{BreakerConfig{FailureRatio: 0.5, ConsecutiveFailures: 3}, "both set"},
		{BreakerConfig{Interval: -1}, "interval -1ns"},
		{BreakerConfig{OpenDuration: -1}, "openDuration -1ns"},
	}
	for _, tt := range tests {
		_, err := NewBreaker("backend", tt.cfg, nil, nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: err %v, want one containing %q", tt.cfg, err, tt.want)
		}
	}
}

func TestBreakerNil(t *testing.T) {
	var b *Breaker
	if err := run(t, b, Failure); err != nil || b.State() != BreakerClosed {
		t.Fatal("nil breaker must run attempts and read closed")
	}
}
