// Package deadline keeps a connection's read/write deadline at min(an absolute bound,
// last activity + an idle bound) while moving the runtime timer as rarely as it can.
// Downstream (proxy/listen) and upstream (proxy/upstream) connections share it.
package deadline

import (
	"errors"
	"math"
	"net"
	"os"
	"time"
)

// epoch anchors the timer's clock: offsets from it are read with time.Since, one
// monotonic clock read, where time.Now reads the wall clock too. Twice per request and
// direction that difference was measurable (BENCHMARKS.md, issue 17).
var epoch = time.Now()

// now is the monotonic time since epoch; it is never 0 past the first nanosecond, so an
// offset of 0 can mean "none".
func now() time.Duration { return time.Since(epoch) }

// at is the deadline an offset stands for (with its monotonic reading, so the poller
// computes the wait without reading the wall clock).
func at(d time.Duration) time.Time { return epoch.Add(d) }

// Now is the time now read from the monotonic clock alone: its wall clock reading is
// epoch's advanced by the monotonic time since, so it serves durations and deadlines,
// not timestamps.
func Now() time.Time { return at(now()) }

// In is the time d from now, read from the monotonic clock alone: for bounds that are
// set per request, where time.Now's wall clock read is wasted.
func In(d time.Duration) time.Time { return at(now() + d) }

// SetHard sets the absolute bound (zero: none); the next Read or Write applies it.
func (t *Timer) SetHard(h time.Time) {
	t.hard = !h.IsZero()
	if t.hard {
		t.hardAt = max(h.Sub(epoch), 1) // a bound before epoch is past: 1 ns after it is too
	}
}

// Mono is the monotonic time since epoch, for At and SetHardAt: a request's clock
// reading kept as an offset costs no time.Time arithmetic to turn into a bound.
func Mono() time.Duration { return now() }

// At is the time an offset from Mono stands for (see Now).
func At(d time.Duration) time.Time { return at(d) }

// SetHardAt is SetHard for the time the offset d (from Mono) stands for.
func (t *Timer) SetHardAt(d time.Duration) {
	t.hard, t.hardAt = true, max(d, 1)
}

// Timer keeps a connection's deadline at min(hard, last activity + idle).
// Moving a deadline costs a runtime timer operation under the poll descriptor's lock,
// so refresh moves it only when it must: when none is set, when the one set is later
// than wanted (a shorter bound took effect), or when activity has pushed the wanted one
// a second (a quarter of a shorter idle bound) or more past it. A parameter change costs nothing until the next Read or
// Write, and one that leaves the wanted deadline where it was costs nothing at all (the
// common case: a head that arrives whole never touches the header timeout's deadline).
//
// A connection that reads through RefreshRead and Early goes further on the read side:
// a read deadline earlier than wanted is left in place, and when it fires Early moves it
// to where it is due and the read is retried. A keep-alive client's connection switches
// between a short idle bound (the upstream hold, between requests) and a long one (the
// stream idle, within a request) twice per request; with the deadline left to fire, that
// costs a timer move per second of the short bound instead of two per request.
type Timer struct {
	Idle   time.Duration // 0: no idle bound
	hard   bool          // an absolute bound is set
	hardAt time.Duration // the bound as an offset from epoch, when hard is set
	// last is the offset of the last RefreshRead: the read's activity, from which an
	// early fire computes the deadline due.
	last time.Duration
	// setR and setW are the read and write deadlines currently applied, as offsets; 0:
	// none.
	setR, setW time.Duration
}

// want is the deadline due for activity at offset n.
func (t *Timer) want(n time.Duration) time.Duration {
	w := time.Duration(0)
	if t.hard {
		w = t.hardAt
	}
	if t.Idle > 0 {
		d := n + t.Idle
		if d < n {
			d = math.MaxInt64 // an idle bound of centuries: never
		}
		if w == 0 || d < w {
			w = d
		}
	}
	return w
}

// slack is how far activity may push the wanted deadline past the one applied before
// it is moved: a second, or a quarter of a shorter idle bound so that activity keeps a
// sub-second idle deadline from firing.
func (t *Timer) slack() time.Duration {
	if t.Idle > 0 && t.Idle/4 < time.Second {
		return t.Idle / 4
	}
	return time.Second
}

// Bounded reports whether the timer has a bound (idle or absolute) to apply.
func (t *Timer) Bounded() bool { return t.Idle > 0 || t.hard }

// unbounded clears the deadlines when there is no bound; it reports whether there was
// none.
func (t *Timer) unbounded(c net.Conn) bool {
	if t.Bounded() {
		return false
	}
	if t.setR != 0 || t.setW != 0 {
		t.setR, t.setW = 0, 0
		_ = c.SetDeadline(time.Time{})
	}
	return true
}

// Refresh applies the wanted deadline to both directions (the rules above, without the
// read side's leave-to-fire): for the upstream connections, and for callers that apply
// the timer's deadline before setting a shorter one of their own.
func (t *Timer) Refresh(c net.Conn) {
	if t.unbounded(c) {
		return
	}
	n := now()
	t.last = n
	want := t.want(n)
	// An absolute bound is applied exactly: a per-request timeout must not inherit the
	// previous request's deadline on a kept connection.
	if t.setR != t.setW || t.setR == 0 || t.setR > want || (t.hard && want == t.hardAt && t.setR != want) || want-t.setR >= t.slack() {
		t.setR, t.setW = want, want
		_ = c.SetDeadline(at(want))
	}
}

// RefreshRead applies the wanted deadline before a read, leaving an earlier one in
// place (Early moves it if it fires first): it moves the read deadline only when none is
// set, when the one set has passed, or when the one set is later than wanted.
func (t *Timer) RefreshRead(c net.Conn) {
	if t.unbounded(c) {
		return
	}
	n := now()
	t.last = n
	if want := t.want(n); t.setR == 0 || t.setR > want || t.setR <= n {
		t.setR = want
		_ = c.SetReadDeadline(at(want))
	}
}

// RefreshWrite applies the wanted deadline before a write, by Refresh's rules: a write
// that times out may leave a TLS connection unusable, so the write deadline is never
// left to fire early.
func (t *Timer) RefreshWrite(c net.Conn) {
	if t.unbounded(c) {
		return
	}
	want := t.want(now())
	if t.setW == 0 || t.setW > want || (t.hard && want == t.hardAt && t.setW != want) || want-t.setW >= t.slack() {
		t.setW = want
		_ = c.SetWriteDeadline(at(want))
	}
}

// Early reports whether err, from a read after RefreshRead, is the timeout of a read
// deadline this timer left in place though a later one was due; it has then moved the
// deadline to the one due, and the read is to be retried. A deadline someone else set
// (a wake-up, a sniff's bound: set after Refresh, or followed by Forget) is not the
// timer's and its timeout is reported as it is.
func (t *Timer) Early(c net.Conn, err error) bool {
	if t.setR == 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	n := now()
	if n < t.setR {
		return false // a deadline earlier than the timer's fired: not the timer's
	}
	want := t.want(t.last)
	if want <= n {
		return false
	}
	t.setR = want
	_ = c.SetReadDeadline(at(want))
	return true
}

// Hard is the absolute bound in force (zero: none).
func (t *Timer) Hard() time.Time {
	if !t.hard {
		return time.Time{}
	}
	return at(t.hardAt)
}

// Forget makes the next Refresh apply the wanted deadline whatever was set before: call
// it after setting the connection's deadline directly.
func (t *Timer) Forget() { t.setR, t.setW = 0, 0 }
