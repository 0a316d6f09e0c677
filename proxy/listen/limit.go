package listen

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"
)

// Limit bounds one listener's open downstream connections and counts what the listener
// refused or shed. The counters are read lock-free by the admin API; open and shedding
// change under the Tracker's lock, once per connection.
type Limit struct {
	// Max bounds the listener's open connections; 0: no bound of its own (the Tracker's
	// total still applies). Set before the first Admit.
	Max int

	// Rejected counts connections closed at accept because a connection limit (the
	// listener's or the total) was reached and no idle keep-alive connection could be
	// shed to make room.
	Rejected atomic.Uint64
	// Overload counts connections closed at accept while meshd was past its overload
	// watermark (Acceptor.Overloaded).
	Overload atomic.Uint64
	// IdleShed counts this listener's idle keep-alive connections closed to make room:
	// for a new connection at a limit, or because the process ran out of fds.
	IdleShed atomic.Uint64
	// FDExhausted counts accepts that failed for want of file descriptors (EMFILE,
	// ENFILE): each made the listener shed idle connections and back off.
	FDExhausted atomic.Uint64

	open, shedding int
	gauge          atomic.Int64 // open, for lock-free readers
	noIdle         time.Time    // a scan of this listener for an idle connection found none
}

// Open is the number of the listener's open connections.
func (l *Limit) Open() int64 { return l.gauge.Load() }

// Admission is what Tracker.Admit did with a new connection.
type Admission int

const (
	Admitted  Admission = iota
	Draining            // the tracker is closed: close the connection
	OverLimit           // a connection limit is reached and nothing idle could be shed
)

// noIdleRetry spaces the scans for an idle connection to shed that found none: a flood
// of connections at the limit while every connection is busy must not walk the whole
// set under the lock for each of them.
const noIdleRetry = 100 * time.Millisecond

// Admit publishes c, accepted on the listener whose limit is l (nil: none of its own),
// under the total bound (Max) and l's. At a bound, an idle keep-alive connection in its
// scope (any listener's for the total, l's for l) is shed to make room, as nginx reuses
// keep-alive connections when it runs out of them: it is woken to close (its client
// sees the close a keep-alive client must expect and opens a new connection when it
// needs one), and its room goes to c at once. With nothing idle, OverLimit: the caller
// closes c and counts it.
func (t *Tracker) Admit(c *Conn, l *Limit) Admission {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return Draining
	}
	if t.Max > 0 && len(t.conns)-t.shedding >= t.Max && t.shedLocked(nil, 1) == 0 {
		return OverLimit
	}
	if l != nil && l.Max > 0 && l.open-l.shedding >= l.Max && t.shedLocked(l, 1) == 0 {
		return OverLimit
	}
	t.addLocked(c, l)
	return Admitted
}

// ShedIdle wakes up to n idle keep-alive connections (of any listener) so they close,
// and reports how many it woke: the accept loop frees file descriptors this way when
// the process ran out of them.
func (t *Tracker) ShedIdle(n int) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.shedLocked(nil, n)
}

// shedLocked sheds up to n kept (idle keep-alive) connections of scope (nil: any).
// Connections that have not served a request yet are left alone: their first request
// may be on its way, and a client does not retry a request on a new connection that
// closes, while it does on a reused one.
func (t *Tracker) shedLocked(scope *Limit, n int) int {
	now := time.Now()
	last := &t.noIdle
	if scope != nil {
		last = &scope.noIdle
	}
	if now.Before(*last) {
		return 0
	}
	shed := 0
	for c := range t.conns {
		if shed == n {
			break
		}
		if c.shed || (scope != nil && c.lim != scope) || c.state.Load() != kept {
			continue
		}
		c.shed = true
		t.shedding++
		if c.lim != nil {
			c.lim.shedding++
			c.lim.IdleShed.Add(1)
		}
		c.ShutRead() // not under the connection's own goroutine: the read side only
		shed++
	}
	if shed == 0 {
		*last = now.Add(noIdleRetry)
	}
	return shed
}

// Freed returns a channel that receives (at most one pending value) when a connection
// is untracked: an accept loop out of fds waits on it as well as on its back-off.
func (t *Tracker) Freed() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.freed == nil {
		t.freed = make(chan struct{}, 1)
	}
	return t.freed
}

// IsFDExhausted reports an error of running out of file descriptors (the process's
// RLIMIT_NOFILE, or the system's table).
func IsFDExhausted(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// Acceptor is one listener's accept loop: connection limits, shedding and back-off.
type Acceptor struct {
	Name    string // the listener, for logs
	Tracker *Tracker
	// Limit is the listener's bound and counters (nil: no bound of its own, not counted).
	Limit *Limit
	// OrigDst reads a new connection's original destination.
	OrigDst func(net.Conn) netip.AddrPort
	// Serve serves an admitted connection, on a goroutine of its own.
	Serve func(*Conn)
	Log   *slog.Logger
	// Overloaded, when set and true, makes the loop close new connections at once
	// (counted in Limit.Overload): meshd is past its overload watermark.
	Overloaded func() bool
	// OnFDExhausted runs after an accept failed for want of file descriptors, once idle
	// downstream connections were shed: the server closes its idle pooled upstream
	// connections there.
	OnFDExhausted func()
	// Parker, when set, parks the listener's idle keep-alive connections (Conn.Park).
	Parker *Parker
}

// acceptLogEvery is the least time between two warnings of failing accepts of one
// listener: out of fds, a listener fails once per back-off, and a line per failure
// would flood the log when it matters most (the count of the quiet ones is logged).
const acceptLogEvery = 10 * time.Second

// fdShedBatch is how many idle keep-alive connections one failed accept sheds when the
// process is out of file descriptors.
const fdShedBatch = 16

// Run accepts connections from ln until it is closed (or ctx is done). A failing Accept
// is retried with a back-off from 5 ms doubling to 1 s, so the process keeps serving
// instead of spinning; out of file descriptors it first sheds idle keep-alive
// connections (and the server's idle upstream ones), and its wait also ends when a
// connection closes. Failures are logged at most every acceptLogEvery.
func (a *Acceptor) Run(ctx context.Context, ln net.Listener) {
	lim := a.Limit
	if lim == nil {
		lim = new(Limit)
	}
	var (
		backoff    time.Duration
		lastLog    time.Time
		suppressed int
	)
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			var freed <-chan struct{}
			shed := 0
			if IsFDExhausted(err) {
				lim.FDExhausted.Add(1)
				shed = a.Tracker.ShedIdle(fdShedBatch)
				if a.OnFDExhausted != nil {
					a.OnFDExhausted()
				}
				freed = a.Tracker.Freed()
			}
			backoff = acceptBackoff(backoff)
			if now := time.Now(); lastLog.IsZero() || now.Sub(lastLog) >= acceptLogEvery {
				a.Log.Warn("accept failed; backing off", "listener", a.Name, "err", err, "retry_in", backoff,
					"idle_shed", shed, "failures_not_logged", suppressed)
				lastLog, suppressed = now, 0
			} else {
				suppressed++
			}
			tm := time.NewTimer(backoff)
			select {
			case <-tm.C:
			case <-freed:
				tm.Stop()
			case <-ctx.Done():
				tm.Stop()
			}
			continue
		}
		backoff = 0
		if a.Overloaded != nil && a.Overloaded() {
			lim.Overload.Add(1)
			Refuse(c)
			continue
		}
		tc := NewConn(c, a.OrigDst(c))
		tc.parker = a.Parker
		switch a.Tracker.Admit(tc, a.Limit) {
		case Admitted:
			go a.Serve(tc)
		case OverLimit:
			lim.Rejected.Add(1)
			Refuse(c)
		default:
			_ = c.Close()
		}
	}
}

// refusal is the answer to an HTTP/1.x request on a connection refused at accept.
const refusal = "HTTP/1.1 503 Service Unavailable\r\nx-meshd-error: overloaded\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 45\r\nConnection: close\r\n\r\n" +
	"meshd: too many connections, try again later\n"

// Refuse closes a connection refused at accept (a connection limit, or overload),
// answering 503 overloaded first where that is cheap: when the client's first bytes are
// already there and are an HTTP/1.x request line. It neither waits nor reads more than
// what arrived: the protocol is not known at accept (a TLS or HTTP/2 client would take
// an HTTP/1.1 answer for garbage), and the point of refusing is to spend nothing on the
// connection. What arrived is consumed before the answer, so the close does not turn
// into a reset that could discard it.
func Refuse(c net.Conn) {
	defer c.Close()
	sc, ok := c.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	var buf [4096]byte
	_ = rc.Control(func(fd uintptr) {
		// Go's sockets are non-blocking: a read with nothing there fails with EAGAIN.
		n, err := syscall.Read(int(fd), buf[:])
		if err != nil || n <= 0 || !httpRequestLine(buf[:n]) {
			return
		}
		_, _ = syscall.Write(int(fd), []byte(refusal))
	})
}

// httpRequestLine reports whether b starts like an HTTP/1.x request line: a method
// token of capital letters and a space (not the HTTP/2 preface's "PRI ").
func httpRequestLine(b []byte) bool {
	for i, ch := range b {
		switch {
		case ch == ' ':
			return i > 0 && string(b[:i]) != "PRI"
		case ch < 'A' || ch > 'Z' || i >= 16:
			return false
		}
	}
	return false
}
