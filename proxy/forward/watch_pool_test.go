package forward

import (
	"context"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/reqctx"
)

// TestIdleWatchPooledTimer: a watch's timer goes back to the pool on release and serves
// the next watch. The released watch's attempt is never cancelled by it; a call of the
// timer's func that was under way at the release and reaches the next watch (spurious)
// does not cancel that watch's fresh attempt; and the reused timer still fires the next
// watch's idle timeout.
func TestIdleWatchPooledTimer(t *testing.T) {
	// Long enough that the call below, right after the arm, never finds the attempt idle.
	const idle = time.Second
	first := &idleWatch{idle: time.Hour}
	c1 := reqctx.New(context.Background())
	first.arm(watchHead, c1)
	b := first.timer
	if b == nil || !first.running {
		t.Fatal("arm did not start a timer")
	}
	first.release()
	if first.timer != nil || first.running {
		t.Fatal("release kept the timer")
	}

	// Take timers until the released one comes back (sync.Pool may drop it: then a new
	// one serves, and the spurious call below is made on the timer actually in use).
	second := &idleWatch{idle: idle}
	c2 := reqctx.New(context.Background())
	second.arm(watchHead, c2)
	if second.timer == nil {
		t.Fatal("arm did not start a timer")
	}
	if second.timer == b {
		t.Log("the released timer was reused")
	}
	// A late call of the timer's func right after the arm: the attempt is not idle yet.
	second.timer.fire()
	if c2.Err() != nil {
		t.Fatalf("a spurious fire cancelled a fresh attempt: %v", c2.Err())
	}
	// The idle timeout itself still fires, through the pooled timer.
	select {
	case <-c2.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the idle timeout never fired through the pooled timer")
	}
	second.mu.Lock()
	stalled := second.stalled
	second.mu.Unlock()
	if !stalled {
		t.Fatal("the head's idle timeout did not mark the watch stalled")
	}
	if c1.Err() != nil {
		t.Fatalf("the released watch's attempt was cancelled: %v", c1.Err())
	}
	// Released while fired: the timer goes back and a later release is a no-op.
	second.release()
	second.release()
}

// TestIdleWatchReleaseQuiet: release says the watch's memory may be reused only when it
// stopped a timer that never called fire (a call may be under way past the stop).
func TestIdleWatchReleaseQuiet(t *testing.T) {
	w := &idleWatch{idle: time.Hour}
	w.arm(watchHead, reqctx.New(context.Background()))
	w.endHead(w.gen)
	w.arm(watchBody, reqctx.New(context.Background()))
	if !w.release() {
		t.Fatal("a timer stopped before it fired: release not quiet")
	}

	w = &idleWatch{idle: time.Hour}
	w.arm(watchBody, reqctx.New(context.Background()))
	w.timer.fire() // a call, as a fire that found the body active and slept again
	if w.release() {
		t.Fatal("a watch whose timer called fire: release quiet")
	}

	w = &idleWatch{idle: time.Millisecond}
	c := reqctx.New(context.Background())
	w.arm(watchBody, c)
	<-c.Done() // the idle timeout fired
	if w.release() {
		t.Fatal("a watch that fired: release quiet")
	}
	if w.release() {
		t.Fatal("a second release: quiet")
	}
}

// TestIdleWatchFiredTimerNotPooled: a timer that fired while its watch was being
// released or stopped may have a call of its func still pending (time.AfterFunc runs it
// on a goroutine of its own): it must not go back to the pool, where that call would
// reach its next holder's watch, possibly recycled memory by then (review finding).
func TestIdleWatchFiredTimerNotPooled(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(w *idleWatch) (*watchTimer, bool) // with w.mu held
	}{
		{"release", func(w *idleWatch) (*watchTimer, bool) { return w.releaseLocked() }},
		{"stop, then release", func(w *idleWatch) (*watchTimer, bool) {
			b := w.timer
			if b.stop() {
				t.Fatal("stop reported a fired timer stopped")
			}
			w.running = false
			_, quiet := w.releaseLocked()
			return b, quiet
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &idleWatch{idle: time.Millisecond}
			w.arm(watchBody, reqctx.New(context.Background()))
			w.mu.Lock()
			// The timer fires meanwhile; its call of fire waits for w.mu.
			time.Sleep(20 * time.Millisecond)
			b, quiet := tc.end(w)
			w.mu.Unlock()
			if quiet {
				t.Error("a watch whose timer fired was released quiet")
			}
			if b == nil || !b.pending {
				t.Error("a timer with a call pending would go back to the pool")
			}
		})
	}
}
