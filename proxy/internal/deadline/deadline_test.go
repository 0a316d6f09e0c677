package deadline

import (
	"net"
	"testing"
	"time"
)

// recConn records the deadlines set on a real (pipe) connection.
type recConn struct {
	net.Conn
	sets []time.Time
}

func (r *recConn) SetDeadline(t time.Time) error {
	r.sets = append(r.sets, t)
	return r.Conn.SetDeadline(t)
}

// TestDeadlineTimer checks when refresh moves a deadline: every move is a runtime timer
// operation under the poll descriptor's lock, paid per request if the rules are loose,
// while a missed move is a wrong timeout.
func TestDeadlineTimer(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := &recConn{Conn: a}
	var tm Timer

	tm.Idle = time.Hour
	tm.Refresh(c)
	tm.Refresh(c)
	if len(c.sets) != 1 {
		t.Fatalf("idle only: %d deadline moves for two refreshes within a second, want 1", len(c.sets))
	}

	// A head that arrives whole: the header timeout is set and cleared with no Read in
	// between, and the idle deadline stays where it was: no move at all.
	tm.SetHard(time.Now().Add(30 * time.Second))
	tm.SetHard(time.Time{})
	tm.Refresh(c)
	if len(c.sets) != 1 {
		t.Fatalf("hard set and cleared between refreshes moved the deadline (%d moves)", len(c.sets))
	}

	// A shorter bound takes effect at once.
	tm.Idle = 5 * time.Minute
	tm.Refresh(c)
	if len(c.sets) != 2 || time.Until(c.sets[1]) > 5*time.Minute {
		t.Fatalf("switching to a shorter idle: moves %v", c.sets)
	}

	// Absolute bounds apply exactly, also when the next one is later by less than a second.
	h1 := time.Now().Add(200 * time.Millisecond)
	tm.SetHard(h1)
	tm.Refresh(c)
	h2 := h1.Add(300 * time.Millisecond)
	tm.SetHard(h2)
	tm.Refresh(c)
	if n := len(c.sets); n != 4 || !c.sets[2].Equal(h1) || !c.sets[3].Equal(h2) {
		t.Fatalf("hard deadlines: moves %v, want %v then %v", c.sets, h1, h2)
	}

	// Clearing everything clears the deadline once.
	tm.SetHard(time.Time{})
	tm.Idle = 0
	tm.Refresh(c)
	tm.Refresh(c)
	if n := len(c.sets); n != 5 || !c.sets[4].IsZero() {
		t.Fatalf("clearing: moves %v", c.sets)
	}

	// A sub-second idle keeps a slack of a quarter of itself, so activity keeps it alive.
	tm.Idle = 100 * time.Millisecond
	tm.Refresh(c)
	first := c.sets[len(c.sets)-1]
	tm.set = first.Add(-30 * time.Millisecond) // as if set 30 ms ago
	tm.Refresh(c)
	if last := c.sets[len(c.sets)-1]; !last.After(first.Add(-30 * time.Millisecond)) {
		t.Fatalf("sub-second idle not extended after 30 ms of activity: moves %v", c.sets)
	}
}
