// Package reqctx is a context.Context for the request path that costs what it must and
// no more: a connection's, a stream's and an attempt's cancellation in one small type.
//
// Why not context.WithCancel: on the HTTP/2 path every stream derived its context from
// its connection's (a map insert and delete under the connection context's lock, shared
// by up to 100 concurrent streams), every attempt from its stream's (one more map, one
// more lock), and the HTTP/1.1 transport registered an AfterFunc on the attempt's
// (two more allocations). Profiled at saturation these were ~8% of meshd's CPU per
// request. A Ctx links its children into an intrusive list (no map, no allocation),
// registers callbacks in inline slots (Hook, no closure to allocate for callers that
// keep their func), and makes its Done channel only when someone asks for it.
//
// A Ctx is cancelled by Cancel, by its deadline (SetDeadline), or by its parent: a
// parent *Ctx cancels its children directly; any other parent is watched with
// context.AfterFunc. Foreign code that derives contexts from a Ctx (context.WithCancel,
// context.AfterFunc) is served through the AfterFunc method, so it never needs a
// goroutine per derived context.
package reqctx

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Ctx is a cancellable context. The zero value is not usable: use New.
type Ctx struct {
	parent context.Context

	mu       sync.Mutex
	done     chan struct{} // made on the first Done, or closedChan when cancelled before
	err      error
	deadline time.Time
	timer    *time.Timer
	hooks    [2]hook
	more     []hook // hooks beyond the inline slots
	nextID   uint32
	// children: a Ctx was ever linked below this one (it may still ask it for a value
	// or its deadline).
	children bool
	// derived: package context derived a context from this one (AfterFunc). Such a
	// context keeps a pointer to c that no hook count shows: its stop function may run
	// Unhook late, from the timer goroutine of a WithTimeout that fired as its caller
	// cancelled it (context's removeChild runs either way), and its Value and Deadline
	// reach c for as long as anything holds it (net's dual-stack dial goroutine can
	// outlive DialContext). So c is never reusable.
	// Atomic: the HTTP/2 server asks for each stream it would recycle (Derived), and a
	// lock there would be one per request.
	derived atomic.Bool
	// quiet: see Reusable. Stored last by the cancel that ended c, so an owner that
	// loads it true is ordered after everything that cancel (on any goroutine) did to c.
	quiet atomic.Bool
	// children: an intrusive doubly linked list, guarded by mu.
	first *Ctx
	// prev/next link this Ctx into its parent's children; guarded by the parent's mu.
	prev, next *Ctx
	up         atomic.Pointer[Ctx] // the parent when it is a *Ctx; set and cleared under its mu
	cnext      *Ctx                // the parent's cancel walks its children through this
	stopUp     func() bool         // the context.AfterFunc watch of a foreign parent
}

type hook struct {
	id uint32 // 0: free
	f  func()
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// New returns a Ctx below parent (context.Background() when nil), cancelled when parent is.
func New(parent context.Context) *Ctx {
	c := &Ctx{}
	c.Init(parent)
	return c
}

// Init is New for a Ctx embedded in a larger object (one allocation less). It must be
// called once, before the Ctx is shared.
func (c *Ctx) Init(parent context.Context) {
	if parent == nil {
		parent = context.Background()
	}
	c.parent = parent
	if p, ok := parent.(*Ctx); ok {
		p.mu.Lock()
		if p.err != nil {
			err := p.err
			p.mu.Unlock()
			c.cancel(err, false)
			return
		}
		c.up.Store(p)
		p.children = true
		c.next = p.first
		if p.first != nil {
			p.first.prev = c
		}
		p.first = c
		p.mu.Unlock()
		return
	}
	if parent.Done() == nil {
		return
	}
	if err := parent.Err(); err != nil {
		c.cancel(err, false)
		return
	}
	c.stopUp = context.AfterFunc(parent, func() { c.cancel(parent.Err(), false) })
}

// SetDeadline makes the Ctx end with context.DeadlineExceeded at t (a past t: at once).
// Call it at most once, before the Ctx is shared.
func (c *Ctx) SetDeadline(t time.Time) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.deadline = t
	d := time.Until(t)
	if d <= 0 {
		c.mu.Unlock()
		c.cancel(context.DeadlineExceeded, true)
		return
	}
	c.timer = time.AfterFunc(d, c.expire)
	c.mu.Unlock()
}

func (c *Ctx) expire() { c.cancel(context.DeadlineExceeded, true) }

// Cancel ends the Ctx with context.Canceled (no-op when it already ended) and detaches
// it from its parent.
func (c *Ctx) Cancel() { c.cancel(context.Canceled, true) }

func (c *Ctx) cancel(err error, detach bool) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	if c.done == nil {
		c.done = closedChan
	} else {
		close(c.done)
	}
	// Reusable's conditions that hold under mu: the deadline's timer stopped before it
	// fired, no hook left to run (each user removed its own), no Ctx ever below.
	quiet := (c.timer == nil || c.timer.Stop()) && c.hooks[0].id == 0 && c.hooks[1].id == 0 && len(c.more) == 0 && !c.children && !c.derived.Load()
	hooks := c.hooks
	c.hooks = [2]hook{}
	more := c.more
	c.more = nil
	// Unlink the children under c.mu, so a child's own detach (which checks its up
	// link under this lock) sees it gone; cnext keeps the list for the loop below.
	var list *Ctx
	for ch := c.first; ch != nil; {
		next := ch.next
		ch.prev, ch.next = nil, nil
		ch.up.Store(nil)
		ch.cnext, list = list, ch
		ch = next
	}
	c.first = nil
	c.mu.Unlock()

	for ch := list; ch != nil; {
		next := ch.cnext
		ch.cnext = nil
		ch.cancel(err, false)
		ch = next
	}
	for _, h := range hooks {
		if h.id != 0 {
			h.f()
		}
	}
	for _, h := range more {
		h.f()
	}
	if detach && !c.detach() {
		quiet = false
	}
	if quiet {
		// Nothing below touches c: a parent's cancel walk that called this is done
		// with it once this returns.
		c.quiet.Store(true)
	}
}

// Reusable reports, after its owner's Cancel, whether nothing but the owner can reach c
// any more, so that its memory may serve another request: the cancel that ended it
// (the owner's, or its parent's, which is then over) stopped its deadline's timer
// before it fired, found every hook removed by whoever added it, and no Ctx was ever
// linked below it nor a context derived from it by package context; and c left its
// parent cleanly (an owner's Cancel that a parent's cancel walk did not overtake; a
// foreign parent's AfterFunc stopped before it ran).
// An owner that cancelled nothing (ended by the deadline, or an earlier cancel still
// under way on another goroutine) sees false.
func (c *Ctx) Reusable() bool { return c.quiet.Load() }

// HookSeq is the last hook id c gave out. A reused Ctx (its memory zeroed for another
// request) continues from it (ContinueHookSeq), so that a stale Unhook of an id from
// the earlier use cannot remove a new hook.
func (c *Ctx) HookSeq() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nextID
}

// ContinueHookSeq makes a zeroed c give out ids after seq. Call it before Init.
func (c *Ctx) ContinueHookSeq(seq uint32) { c.nextID = seq }

// detach removes c from its parent's children (or stops the watch of a foreign parent).
func (c *Ctx) detach() (left bool) {
	left = true
	// One load: with two (one for this check, one for the unlink below), a parent's
	// cancel that took c off its list between them left c looking detached, so its
	// owner reused the memory the cancel walk was still to write (a -race run in CI,
	// TestReusableParentRace).
	p := c.up.Load()
	if _, below := c.parent.(*Ctx); below && p == nil {
		left = false // the parent's cancel took c off its list and may still reach it
	}
	if p != nil {
		p.mu.Lock()
		left = c.up.Load() == p
		if left { // not already taken by the parent's cancel
			if c.prev != nil {
				c.prev.next = c.next
			} else if p.first == c {
				p.first = c.next
			}
			if c.next != nil {
				c.next.prev = c.prev
			}
			c.prev, c.next = nil, nil
			c.up.Store(nil)
		}
		p.mu.Unlock()
	}
	if c.stopUp != nil && !c.stopUp() {
		left = false // the foreign parent's AfterFunc ran or is running
	}
	return left
}

// Hook registers f to run once when the Ctx ends (at once, on this goroutine, when it
// has already ended; then id is 0). Unhook(id) removes it. Unlike context.AfterFunc it
// allocates nothing when f is a func value the caller keeps.
func (c *Ctx) Hook(f func()) (id uint32) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		// f may hand c to another goroutine (a reset's), which the ended Ctx's
		// Reusable could not account for.
		c.quiet.Store(false)
		f()
		return 0
	}
	c.nextID++
	if c.nextID == 0 {
		c.nextID = 1
	}
	id = c.nextID
	for i := range c.hooks {
		if c.hooks[i].id == 0 {
			c.hooks[i] = hook{id: id, f: f}
			c.mu.Unlock()
			return id
		}
	}
	c.more = append(c.more, hook{id: id, f: f})
	c.mu.Unlock()
	return id
}

// Unhook removes the hook id; false when it already ran (or is running) or id is 0.
func (c *Ctx) Unhook(id uint32) bool {
	if id == 0 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.hooks {
		if c.hooks[i].id == id {
			c.hooks[i] = hook{}
			return true
		}
	}
	for i, h := range c.more {
		if h.id == id {
			c.more = append(c.more[:i], c.more[i+1:]...)
			return true
		}
	}
	return false
}

// AfterFunc makes Ctx an afterFuncer for package context: context.WithCancel and
// context.AfterFunc over a Ctx register here instead of starting a goroutine.
func (c *Ctx) AfterFunc(f func()) func() bool {
	c.derived.Store(true) // before Hook takes mu: a cancel that finds the hook sees it
	id := c.Hook(f)
	return func() bool { return c.Unhook(id) }
}

// Derived reports whether package context ever derived a context from c (see the
// field): for a holder of a Ctx whose memory is reused by rules other than Reusable's.
func (c *Ctx) Derived() bool { return c.derived.Load() }

// Deadline implements context.Context: its own deadline, else the parent's.
func (c *Ctx) Deadline() (time.Time, bool) {
	c.mu.Lock()
	d := c.deadline
	c.mu.Unlock()
	if !d.IsZero() {
		return d, true
	}
	return c.parent.Deadline()
}

// Done implements context.Context.
func (c *Ctx) Done() <-chan struct{} {
	c.mu.Lock()
	if c.done == nil {
		c.done = make(chan struct{})
	}
	d := c.done
	c.mu.Unlock()
	return d
}

// Err implements context.Context.
func (c *Ctx) Err() error {
	c.mu.Lock()
	err := c.err
	c.mu.Unlock()
	return err
}

// Value implements context.Context.
func (c *Ctx) Value(key any) any { return c.parent.Value(key) }

// String names the Ctx in debugging output, as package context's types do.
func (c *Ctx) String() string { return "reqctx.Ctx" }
