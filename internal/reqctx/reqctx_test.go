package reqctx

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

func ended(c context.Context) bool {
	select {
	case <-c.Done():
		return true
	default:
		return false
	}
}

func TestCancelPropagatesDown(t *testing.T) {
	conn := New(context.Background())
	s1, s2 := New(conn), New(conn)
	a := New(s1)
	var ran atomic.Int32
	a.Hook(func() { ran.Add(1) })
	s2.Cancel() // a sibling ending leaves the others alone
	if ended(s1) || ended(a) || conn.Err() != nil {
		t.Fatal("cancelling a sibling ended others")
	}
	if s2.Err() != context.Canceled || !ended(s2) {
		t.Fatalf("s2: err %v", s2.Err())
	}
	conn.Cancel()
	for i, c := range []*Ctx{conn, s1, a} {
		if !errors.Is(c.Err(), context.Canceled) || !ended(c) {
			t.Fatalf("ctx %d not ended: %v", i, c.Err())
		}
	}
	if ran.Load() != 1 {
		t.Fatalf("hook ran %d times, want 1", ran.Load())
	}
	if conn.first != nil || s1.first != nil {
		t.Fatal("children still linked after cancel")
	}
}

func TestChildCancelUnlinks(t *testing.T) {
	p := New(context.Background())
	var cs []*Ctx
	for range 5 {
		cs = append(cs, New(p))
	}
	// Remove from the middle, the head and the tail.
	for _, i := range []int{2, 4, 0, 3, 1} {
		cs[i].Cancel()
	}
	if p.first != nil {
		t.Fatal("parent still has children")
	}
	if p.Err() != nil {
		t.Fatal("child cancel ended the parent")
	}
}

func TestHooksAndUnhook(t *testing.T) {
	c := New(context.Background())
	var got []int
	ids := []uint32{}
	for i := range 5 { // past the inline slots
		ids = append(ids, c.Hook(func() { got = append(got, i) }))
	}
	if !c.Unhook(ids[1]) || !c.Unhook(ids[3]) {
		t.Fatal("unhook of a registered hook failed")
	}
	if c.Unhook(ids[1]) {
		t.Fatal("second unhook succeeded")
	}
	c.Cancel()
	if len(got) != 3 {
		t.Fatalf("hooks ran %v, want 0,2,4", got)
	}
	// On an ended Ctx a hook runs at once and Unhook of its id 0 is false.
	ranNow := false
	if id := c.Hook(func() { ranNow = true }); id != 0 || !ranNow || c.Unhook(id) {
		t.Fatal("hook on an ended ctx did not run at once")
	}
}

func TestDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		parent := New(context.Background())
		c := New(parent)
		at := time.Now().Add(time.Second)
		c.SetDeadline(at)
		if d, ok := c.Deadline(); !ok || !d.Equal(at) {
			t.Fatalf("Deadline = %v %v", d, ok)
		}
		time.Sleep(999 * time.Millisecond)
		if c.Err() != nil {
			t.Fatal("ended before its deadline")
		}
		time.Sleep(2 * time.Millisecond)
		if !errors.Is(c.Err(), context.DeadlineExceeded) {
			t.Fatalf("err %v, want DeadlineExceeded", c.Err())
		}
		if parent.Err() != nil || parent.first != nil {
			t.Fatal("deadline ended the parent or left the child linked")
		}
		past := New(context.Background())
		past.SetDeadline(time.Now().Add(-time.Second))
		if !errors.Is(past.Err(), context.DeadlineExceeded) {
			t.Fatal("a past deadline did not end the ctx at once")
		}
	})
}

type key struct{}

func TestForeignParentAndChildren(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		base, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, "v"))
		c := New(base)
		if c.Value(key{}) != "v" {
			t.Fatal("Value does not reach the parent")
		}
		// Package context's own derivations use AfterFunc: no goroutine each.
		derived, dcancel := context.WithCancel(c)
		defer dcancel()
		var ran atomic.Bool
		stop := context.AfterFunc(c, func() { ran.Store(true) })
		_ = stop
		cancel()
		synctest.Wait()
		if !errors.Is(c.Err(), context.Canceled) || !ended(derived) || !ran.Load() {
			t.Fatalf("cancel of a foreign parent did not propagate: c %v derived %v ran %v", c.Err(), derived.Err(), ran.Load())
		}
		// An already ended parent ends the child at once.
		if New(base).Err() == nil || New(c).Err() == nil {
			t.Fatal("child of an ended parent is not ended")
		}
	})
}

func TestConcurrentCancel(t *testing.T) {
	for range 200 {
		p := New(context.Background())
		var wg sync.WaitGroup
		kids := make([]*Ctx, 8)
		for i := range kids {
			kids[i] = New(p)
			kids[i].Hook(func() {})
		}
		for _, k := range kids {
			wg.Go(k.Cancel)
		}
		wg.Go(p.Cancel)
		wg.Wait()
		for _, k := range kids {
			if k.Err() == nil {
				t.Fatal("child not ended")
			}
		}
		if p.first != nil {
			t.Fatal("children linked after all ended")
		}
	}
}

func TestAllocs(t *testing.T) {
	conn := New(context.Background())
	f := func() {}
	s, a := new(Ctx), new(Ctx)
	n := testing.AllocsPerRun(1000, func() {
		*s, *a = Ctx{}, Ctx{}
		s.Init(conn)
		a.Init(s)
		id := a.Hook(f)
		a.Unhook(id)
		a.Cancel()
		s.Cancel()
	})
	if n != 0 {
		t.Fatalf("%v allocations per stream + attempt, want 0", n)
	}
}

// TestReusable: a Ctx's memory may serve another request only when no one but its owner
// can reach it after the cancel that ended it.
func TestReusable(t *testing.T) {
	cases := []struct {
		name string
		run  func(c *Ctx) // ends c as the case says
		want bool
	}{
		{"owner's cancel below a Ctx", func(c *Ctx) { c.Init(New(context.Background())); c.Cancel() }, true},
		{"owner's cancel below Background", func(c *Ctx) { c.Init(context.Background()); c.Cancel() }, true},
		{"owner's cancel below a foreign parent", func(c *Ctx) {
			p, stop := context.WithCancel(context.Background())
			t.Cleanup(stop)
			c.Init(p)
			c.Cancel()
		}, true},
		{"parent's cancel, over", func(c *Ctx) { p := New(context.Background()); c.Init(p); p.Cancel(); c.Cancel() }, true},
		{"parent cancelled before Init", func(c *Ctx) { p := New(context.Background()); p.Cancel(); c.Init(p); c.Cancel() }, true},
		{"a hook removed", func(c *Ctx) { c.Init(New(context.Background())); c.Unhook(c.Hook(func() {})); c.Cancel() }, true},
		{"a hook left to run", func(c *Ctx) { c.Init(New(context.Background())); c.Hook(func() {}); c.Cancel() }, false},
		{"a third hook left to run", func(c *Ctx) {
			c.Init(New(context.Background()))
			for range 3 {
				c.Hook(func() {})
			}
			c.Unhook(1)
			c.Unhook(2)
			c.Cancel()
		}, false},
		{"a child", func(c *Ctx) { c.Init(New(context.Background())); ch := New(c); ch.Cancel(); c.Cancel() }, false},
		{"a context derived by package context", func(c *Ctx) {
			c.Init(New(context.Background()))
			_, stop := context.WithCancel(c)
			stop()
			c.Cancel()
		}, false}, // its stop may still run late (TestDerivedTimeoutNotReusable)
		{"a context derived and left", func(c *Ctx) {
			c.Init(New(context.Background()))
			_, stop := context.WithCancel(c)
			t.Cleanup(stop)
			c.Cancel()
		}, false},
		{"deadline not reached", func(c *Ctx) { c.Init(New(context.Background())); c.SetDeadline(time.Now().Add(time.Hour)); c.Cancel() }, true},
		{"deadline passed", func(c *Ctx) {
			c.Init(New(context.Background()))
			c.SetDeadline(time.Now().Add(time.Millisecond))
			<-c.Done()
			c.Cancel()
		}, false},
		{"not cancelled", func(c *Ctx) { c.Init(New(context.Background())) }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &Ctx{}
			tc.run(c)
			if got := c.Reusable(); got != tc.want {
				t.Fatalf("Reusable() = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestReusableParentRace: a parent's cancel walk on another goroutine and the owner's
// Cancel race; whichever wins, an owner that sees Reusable may reuse the memory with
// the walk over (the race detector checks the zeroing below against the walk).
func TestReusableParentRace(t *testing.T) {
	reused := 0
	for range 2000 {
		p := New(context.Background())
		c := &Ctx{}
		c.Init(p)
		go p.Cancel()
		c.Cancel()
		if c.Reusable() {
			seq := c.HookSeq()
			*c = Ctx{}
			c.ContinueHookSeq(seq)
			c.Init(New(context.Background()))
			reused++
		}
	}
	t.Logf("%d of 2000 reusable", reused)
}

// TestContinueHookSeq: an id handed out before a reuse cannot remove a hook added after.
func TestContinueHookSeq(t *testing.T) {
	c := New(context.Background())
	old := c.Hook(func() {})
	c.Unhook(old)
	c.Cancel()
	if !c.Reusable() {
		t.Fatal("not reusable")
	}
	seq := c.HookSeq()
	*c = Ctx{}
	c.ContinueHookSeq(seq)
	c.Init(New(context.Background()))
	ran := false
	id := c.Hook(func() { ran = true })
	if id == old {
		t.Fatalf("the reused Ctx gave out id %d again", id)
	}
	if c.Unhook(old) {
		t.Fatal("a stale id removed a new hook")
	}
	c.Cancel()
	if !ran {
		t.Fatal("the new hook did not run")
	}
}

// TestDerivedTimeoutNotReusable: a context.WithTimeout over a Ctx whose timer fires as
// its caller cancels it reaches the Ctx afterwards (context's removeChild unhooks from the
// timer goroutine too), so the Ctx must not be reused: with Reusable true here, the
// zeroing below raced with that late Unhook under -race (a connect timeout that fired
// as the dial succeeded, in Cluster.Dial).
func TestDerivedTimeoutNotReusable(t *testing.T) {
	for range 200 {
		c := &Ctx{}
		c.Init(New(context.Background()))
		d, cancel := context.WithTimeout(c, 50*time.Microsecond)
		<-d.Done()
		cancel()
		c.Cancel()
		if c.Reusable() {
			t.Fatal("a Ctx package context derived from is reusable")
		}
		if !c.Derived() {
			t.Fatal("Derived() false after context.WithTimeout")
		}
	}
}
