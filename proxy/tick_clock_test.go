package proxy_test

import (
	"sync"
	"testing"
	"time"
)

// tickClock is a fake resilience.Clock whose tickers fire when Advance moves
// the time past their next tick, so the clusters' control goroutines run on it.
type tickClock struct {
	mu      sync.Mutex
	t       time.Time
	tickers map[*fakeTicker]struct{}
}

type fakeTicker struct {
	ch     chan time.Time
	period time.Duration
	next   time.Time
}

// undelivered is how many ticks sit in ticker channels, not yet taken by a receiver.
func (c *tickClock) undelivered() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for tk := range c.tickers {
		n += len(tk.ch)
	}
	return n
}

func newTickClock() *tickClock {
	return &tickClock{t: time.Unix(1_700_000_000, 0), tickers: map[*fakeTicker]struct{}{}}
}

func (c *tickClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *tickClock) NewTicker(d time.Duration) (<-chan time.Time, func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	tk := &fakeTicker{ch: make(chan time.Time, 1), period: d, next: c.t.Add(d)}
	c.tickers[tk] = struct{}{}
	return tk.ch, func() {
		c.mu.Lock()
		delete(c.tickers, tk)
		c.mu.Unlock()
	}
}

// Advance moves the time by d and fires every ticker whose tick is due (one tick each;
// a receiver that has not taken the previous one misses it, as with time.Ticker).
func (c *tickClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	for tk := range c.tickers {
		if c.t.Before(tk.next) {
			continue
		}
		for !c.t.Before(tk.next) {
			tk.next = tk.next.Add(tk.period)
		}
		select {
		case tk.ch <- c.t:
		default:
		}
	}
}

// liveTickers is how many control-goroutine tickers are live (they are created when
// the goroutine starts, which may be just after Start returns).
func (c *tickClock) liveTickers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.tickers)
}

// advanceUntil advances clk by step and waits (bounded) for cond, repeatedly: each
// step lets the background checker run one more round on its own.
func advanceUntil(t *testing.T, clk *tickClock, step time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		clk.Advance(step)
		inner := time.Now().Add(200 * time.Millisecond)
		for !cond() && time.Now().Before(inner) {
			time.Sleep(2 * time.Millisecond) // bounded poll of /clusters state
		}
	}
}
