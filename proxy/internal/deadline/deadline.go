// Package deadline keeps a connection's read/write deadline at min(an absolute bound,
// last activity + an idle bound) while moving the runtime timer as rarely as it can.
// Downstream (proxy/listen) and upstream (proxy/upstream) connections share it.
package deadline

import (
	"net"
	"time"
)

// setHard sets the absolute bound (zero: none); the next Read or Write applies it.
func (t *Timer) SetHard(h time.Time) { t.hard = h }

// Timer keeps a connection's deadline at min(hard, last activity + idle).
// Moving a deadline costs a runtime timer operation under the poll descriptor's lock,
// so refresh moves it only when it must: when none is set, when the one set is later
// than wanted (a shorter bound took effect), or when activity has pushed the wanted one
// a second (a quarter of a shorter idle bound) or more past it. A parameter change costs nothing until the next Read or
// Write, and one that leaves the wanted deadline where it was costs nothing at all (the
// common case: a head that arrives whole never touches the header timeout's deadline).
type Timer struct {
	Idle time.Duration // 0: no idle bound
	hard time.Time     // zero: no absolute bound
	set  time.Time     // the deadline currently applied; zero: none
}

func (t *Timer) Refresh(c net.Conn) {
	if t.Idle <= 0 && t.hard.IsZero() {
		if !t.set.IsZero() {
			t.set = time.Time{}
			_ = c.SetDeadline(time.Time{})
		}
		return
	}
	want := t.hard
	if t.Idle > 0 {
		if d := time.Now().Add(t.Idle); want.IsZero() || d.Before(want) {
			want = d
		}
	}
	// The slack is a second, or a quarter of a shorter idle bound so that activity keeps
	// a sub-second idle deadline from firing.
	slack := time.Second
	if t.Idle > 0 && t.Idle/4 < slack {
		slack = t.Idle / 4
	}
	// An absolute bound is applied exactly: a per-request timeout must not inherit the
	// previous request's deadline on a kept connection.
	if t.set.IsZero() || t.set.After(want) || (want.Equal(t.hard) && !t.set.Equal(want)) || want.Sub(t.set) >= slack {
		t.set = want
		_ = c.SetDeadline(want)
	}
}

// Hard is the absolute bound in force (zero: none).
func (t *Timer) Hard() time.Time { return t.hard }

// Forget makes the next Refresh apply the wanted deadline whatever was set before: call
// it after setting the connection's deadline directly.
func (t *Timer) Forget() { t.set = time.Time{} }
