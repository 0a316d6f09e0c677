package listen

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/meshd/meshd/internal/rawio"
	"github.com/meshd/meshd/proxy/intercept"
	"github.com/meshd/meshd/proxy/internal/deadline"
)

// Conn is a downstream connection the server can wake or close when draining. Its Read
// and Write keep the deadline at last activity + the idle bound in force (Timer), so a
// stalled peer is cut off; they belong to the connection's serving goroutine.
type Conn struct {
	net.Conn
	Timer deadline.Timer
	// Orig is the original destination (iptables REDIRECT); zero if none. It is read at
	// accept, before the connection is published, so other goroutines may read it.
	Orig netip.AddrPort
	// Drain is set when the listener the connection was addressed to went away in a
	// reload: its next read between requests ends the connection.
	Drain atomic.Bool
	// Peer is the verified identity of the client (the SPIFFE ID URI of its certificate,
	// "spiffe://<mesh>/<node>") when the listener terminated mTLS; empty otherwise. Set
	// once after the handshake, before any request is read; the authorization policy and
	// the caller-identity header read it.
	Peer string
	// TLS is the state of the TLS the listener terminated on this connection (its Conn
	// is then the *tls.Conn, set by Tracker.Wrap); nil for plaintext. Set once after the
	// handshake, before any request is read.
	TLS *tls.ConnectionState
	// Written counts the bytes Write handed to the connection: a relay that fails
	// part-way compares it with its value before the response to know whether any of
	// the response reached the client (a local error reply is still possible) or not.
	// Owned by the serving goroutine, like Write.
	Written int64

	state atomic.Int32 // idle, active or kept

	// io does the reads and writes of Conn when it is a plain TCP socket, with system
	// calls that do not wake the runtime's sysmon thread (internal/rawio). Bound by
	// NewConn and Wrap; a Conn built otherwise uses Conn's own Read and Write.
	io rawio.Conn

	// Under the Tracker's lock: the listener's limit it counts against, and whether it
	// was shed (woken to close) to make room.
	lim  *Limit
	shed bool

	// parker parks the connection while it is idle (Park); nil: it never parks. Set at
	// accept. parkedAs is its entry while parked, under the Parker's lock.
	parker   *Parker
	parkedAs *parked

	// The Session in progress (the serving goroutine's): its callback, whether Read is
	// within it, whether the last read since the last wait found the socket drained,
	// the error that ended it from within (a drain), and its step, made once.
	sessF    func() bool
	inSess   bool
	drained  bool
	sessErr  error
	sessStep func() bool
	// abort: Abort was called within the session; the socket is closed as it ends.
	abort bool
	// sessOpen is set while a session may hold the socket's read lock, closing once
	// CloseNow was called: together they keep CloseNow from calling Close while a
	// session is open (Go's Close waits for the descriptor's users, here the session,
	// to let go of it), and a session from opening once CloseNow ran.
	sessOpen, closing atomic.Bool
}

// ErrWouldBlock is a Read's error within a Session when the socket has nothing more.
var ErrWouldBlock = rawio.ErrWouldBlock

// CanSession reports whether the connection is a plain TCP socket whose reads can run
// in a Session.
func (c *Conn) CanSession() bool { return c.io.For(c.Conn) && c.io.Raw() }

// Session runs f within one wait for input (rawio.Conn.Session) and returns nil when f
// returns true. Within f, Read never waits: it returns ErrWouldBlock when the socket has
// nothing, and f returns false to wait for input, with the read deadline the Timer
// wants then (the idle bound in force, from now). Drained reports whether a Read since
// the last wait found the socket empty: then f may wait without reading first. A wait
// ends the session with the deadline's error (one the Timer left in place that fired
// early is moved, and the wait goes on in a new session), or io.EOF when the
// connection was told to drain while idle.
//
// Within f, Abort closes the socket only as the session ends, and another goroutine's
// CloseNow shuts the socket down (what a blocked read or write sees) and leaves the
// close to the connection's own goroutine: Go's Close waits until no call uses the
// descriptor, and the session is such a call until f returns.
func (c *Conn) Session(f func() bool) error {
	if c.sessStep == nil {
		c.sessStep = c.step
	}
	c.sessOpen.Store(true)
	defer c.sessOpen.Store(false)
	if c.closing.Load() {
		return net.ErrClosed
	}
	c.sessF, c.sessErr = f, nil
	defer func() { c.sessF, c.inSess = nil, false }()
	for {
		// As Read does before it reads: a deadline that passed (left in place while a
		// request was served) is moved from now, or the wait would end before it began.
		c.Timer.RefreshRead(c.Conn)
		c.inSess, c.drained = true, false
		err := c.io.Session(c.sessStep)
		c.inSess = false
		if c.abort {
			c.abort = false
			_ = c.Raw().Close()
			return net.ErrClosed
		}
		if err == nil {
			return c.sessErr
		}
		if !c.Timer.Early(c.Conn, err) {
			return err
		}
	}
}

// step is a session's callback: the caller's f, and the deadline before a wait.
func (c *Conn) step() bool {
	c.drained = false
	if c.sessF() || c.abort {
		return true
	}
	if c.Drain.Load() && c.state.Load() != active {
		c.sessErr = io.EOF
		return true
	}
	c.Timer.RefreshRead(c.Conn)
	return false
}

// InSession reports whether a Session is in progress: the connection's read lock is
// held, and nothing may wait on its socket for input (syscall.RawConn.Read would
// wait for that lock for ever).
func (c *Conn) InSession() bool { return c.inSess }

// PeerGone looks at the socket's input without taking it and without waiting: gone is
// true when the client closed or reset it; more when it sent bytes not read yet; both
// false when nothing is there (or the connection is not a TCP socket).
func (c *Conn) PeerGone() (gone, more bool) {
	t := c.TCP()
	if t == nil {
		return false, false
	}
	rc, err := t.SyscallConn()
	if err != nil {
		return false, false
	}
	_ = rc.Control(func(fd uintptr) { gone, more, _ = PeekInput(fd) })
	return gone, more
}

// PeekInput looks at socket fd's input without taking it and without waiting: gone when
// the peer closed or reset it, more when bytes are there, neither (empty) when nothing
// is there yet.
func PeekInput(fd uintptr) (gone, more, empty bool) {
	var b [1]byte
	n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	switch {
	case err == syscall.EAGAIN || err == syscall.EINTR:
		return false, false, true
	case err != nil || n == 0:
		return true, false, false
	}
	return false, true, false
}

// Drained reports, within a Session, whether a Read since the last wait found the
// socket empty (it returned less than asked, or ErrWouldBlock).
func (c *Conn) Drained() bool { return c.drained }

const (
	idle   int32 = iota // waiting for its first request
	active              // serving a request (or not HTTP/1.1: never idle)
	kept                // idle between requests (keep-alive): the first to shed
)

// NewConn is a downstream connection over c, whose original destination (iptables
// REDIRECT) is orig.
func NewConn(c net.Conn, orig netip.AddrPort) *Conn {
	tc := &Conn{Conn: c, Orig: orig}
	tc.io.Init(c)
	return tc
}

// Read returns io.EOF at once on a connection told to drain while idle between requests.
func (c *Conn) Read(p []byte) (int, error) {
	if c.Drain.Load() && c.state.Load() != active {
		return 0, io.EOF
	}
	if c.inSess {
		n, err := c.io.SessionRead(p)
		c.drained = n < len(p)
		return n, err
	}
	c.Timer.RefreshRead(c.Conn)
	for {
		n, err := c.io.ReadOf(c.Conn, p)
		if n > 0 || err == nil || !c.Timer.Early(c.Conn, err) {
			return n, err
		}
	}
}

func (c *Conn) Write(p []byte) (int, error) {
	c.Timer.RefreshWrite(c.Conn)
	n, err := c.io.WriteOf(c.Conn, p)
	c.Written += int64(n)
	return n, err
}

// SetIdleTimeout switches the idle bound (keep-alive idle between requests, stream idle
// within one); the next Read or Write applies it.
func (c *Conn) SetIdleTimeout(d time.Duration) { c.Timer.Idle = d }

// SetBusy marks the connection as serving a request (true) or waiting for the next one
// (false): only a waiting connection is woken by a drain.
func (c *Conn) SetBusy(busy bool) {
	switch {
	case busy:
		c.state.Store(active)
	case c.state.Load() == active:
		c.state.Store(kept) // it served a request: a keep-alive connection now
	}
}

// WakeIfIdle makes a connection that waits for its next request give up now. It shuts
// the read side rather than moving the deadline, which the connection's own goroutine
// may be refreshing at the same moment.
func (c *Conn) WakeIfIdle() {
	if c.state.Load() == active {
		return
	}
	c.ShutRead()
}

// ShutRead makes a read of the connection that another goroutine is blocked in return,
// for good (the connection cannot serve another request afterwards). Over TLS the
// socket's read side is shut: a TLS close_notify would be a write, which the
// connection's own goroutine may be doing.
func (c *Conn) ShutRead() {
	raw := c.Raw()
	if cr, ok := raw.(interface{ CloseRead() error }); ok {
		_ = cr.CloseRead()
		return
	}
	_ = raw.Close()
}

// Abort resets the connection (RST instead of FIN, as net/http's ErrAbortHandler does),
// discarding what is still buffered for it: the only signal left once a response's head
// is sent and its body cannot be completed.
func (c *Conn) Abort() {
	if t := c.TCP(); t != nil {
		_ = t.SetLinger(0)
	}
	if c.inSess {
		c.abort = true // closed as the session ends (Session)
		return
	}
	_ = c.Raw().Close()
}

// Linger prepares a connection meshd closes while the client may still be sending (an
// error answer to a request whose body or pipelined successors were not read). Closing
// a socket with unread input makes the kernel send a reset at once and drop what it has
// not transmitted yet, so the answer, held back by the client's receive window or lost
// and due for retransmission, never arrives. So the write side is shut first (what is
// queued is sent, then FIN), and input is read and dropped until the client closes, up
// to max bytes or until d has passed (nginx's lingering close; HAProxy drains alike).
// The caller closes the connection afterwards, as before.
func (c *Conn) Linger(d time.Duration, max int64) {
	t := c.TCP()
	if t == nil {
		return
	}
	if tc, ok := c.Conn.(*tls.Conn); ok {
		// close_notify before the FIN, as Close would send it: a body delimited by the
		// close is complete only with it.
		_ = tc.SetWriteDeadline(time.Now().Add(d))
		_ = tc.CloseWrite()
	}
	if err := t.CloseWrite(); err != nil {
		return
	}
	if err := t.SetReadDeadline(time.Now().Add(d)); err != nil {
		return
	}
	// io.Discard reads into pooled buffers: nothing allocated per connection.
	_, _ = io.CopyN(io.Discard, t, max)
}

// CloseNow closes the socket under any TLS layer at once, without a TLS close_notify
// (which could wait up to crypto/tls's 5 s on a peer that reads nothing): for another
// goroutine than the connection's own, e.g. a drain that ran out of time.
// A parked connection is resumed (Closed) first: once its socket is closed, epoll would
// never report it.
func (c *Conn) CloseNow() error {
	if c.parker != nil {
		c.parker.unpark(c, Closed)
	}
	c.closing.Store(true)
	if c.sessOpen.Load() {
		// Close would wait for the session (Session); a shutdown ends its reads and
		// writes now, and the connection's goroutine closes the socket as it ends.
		if t := c.TCP(); t != nil {
			if rc, err := t.SyscallConn(); err == nil {
				_ = rc.Control(func(fd uintptr) { _ = syscall.Shutdown(int(fd), syscall.SHUT_RDWR) })
				return nil
			}
		}
	}
	return c.Raw().Close()
}

// Raw is the network connection under any layer (TLS) the listener put over it.
func (c *Conn) Raw() net.Conn {
	nc := c.Conn
	for {
		u, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			return nc
		}
		nc = u.NetConn()
	}
}

// TCP is the TCP socket under the connection (TLS included), nil if there is none.
func (c *Conn) TCP() *net.TCPConn {
	t, _ := c.Raw().(*net.TCPConn)
	return t
}

// Tracker is the set of open downstream connections, which a drain walks. The zero
// value is ready; safe for concurrent use.
type Tracker struct {
	// Max bounds the open connections of every listener together (Admit); 0: none. Set
	// before the first Admit.
	Max int

	mu     sync.Mutex
	conns  map[*Conn]struct{}
	wg     sync.WaitGroup
	closed bool
	// shedding counts the connections shed (woken to close) but not yet untracked:
	// their room is already given to the connections admitted in their place.
	shedding int
	noIdle   time.Time     // a scan for an idle connection to shed found none: not again before
	freed    chan struct{} // a connection was untracked (for the accept loop's back-off)
}

// Track publishes c; false when the tracker is closed (draining): close c instead.
func (t *Tracker) Track(c *Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.addLocked(c, nil)
	return true
}

func (t *Tracker) addLocked(c *Conn, l *Limit) {
	if t.conns == nil {
		t.conns = make(map[*Conn]struct{})
	}
	t.conns[c] = struct{}{}
	if l != nil {
		c.lim = l
		l.open++
		l.gauge.Store(int64(l.open))
	}
	t.wg.Add(1)
}

// Wrap makes nc (a *tls.Conn over c's socket) c's connection. Only c's serving goroutine
// may call it; it holds the tracker's lock, which every walk of the connections (Close,
// Each) holds too, so a drain never reads c's connection while it changes.
func (t *Tracker) Wrap(c *Conn, nc net.Conn) {
	t.mu.Lock()
	c.Conn = nc
	c.io.Init(nc)
	t.mu.Unlock()
}

// Untrack removes c once its serving goroutine is done with it.
func (t *Tracker) Untrack(c *Conn) {
	t.mu.Lock()
	delete(t.conns, c)
	if l := c.lim; l != nil {
		l.open--
		l.gauge.Store(int64(l.open))
		if c.shed {
			l.shedding--
		}
	}
	if c.shed {
		t.shedding--
	}
	freed := t.freed
	t.mu.Unlock()
	if freed != nil {
		select {
		case freed <- struct{}{}:
		default:
		}
	}
	t.wg.Done()
}

// Close refuses later Track calls and wakes every idle connection.
func (t *Tracker) Close() {
	t.mu.Lock()
	t.closed = true
	for c := range t.conns {
		c.WakeIfIdle()
	}
	t.mu.Unlock()
}

// Each calls f for every open connection, under the tracker's lock (f must not block).
func (t *Tracker) Each(f func(*Conn)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for c := range t.conns {
		f(c)
	}
}

// Len counts the open connections.
func (t *Tracker) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

// Wait returns a channel closed when every tracked connection was untracked.
func (t *Tracker) Wait() <-chan struct{} {
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	return done
}

// OriginalDst returns the original destination of a redirected connection, or the zero
// AddrPort when the connection was not redirected (its destination is the listener
// itself) or it cannot be read. lookup nil means the kernel's (SO_ORIGINAL_DST).
func OriginalDst(c net.Conn, lookup func(*net.TCPConn) (netip.AddrPort, error)) netip.AddrPort {
	tcp, ok := c.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}
	}
	if lookup == nil {
		lookup = intercept.OriginalDst
	}
	ap, err := lookup(tcp)
	if err != nil || !ap.IsValid() {
		return netip.AddrPort{}
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if la, ok := tcp.LocalAddr().(*net.TCPAddr); ok {
		if l := la.AddrPort(); l.Port() == ap.Port() && l.Addr().Unmap() == ap.Addr() {
			return netip.AddrPort{}
		}
	}
	return ap
}

// AcceptLoop accepts connections from ln until it is closed (or ctx is done), wrapping
// each in a Conn (original destination read by origDst) tracked by t and served by
// serve on a goroutine of its own, with no connection limit (Acceptor.Run).
func AcceptLoop(ctx context.Context, ln net.Listener, name string, t *Tracker, origDst func(net.Conn) netip.AddrPort,
	serve func(*Conn), log *slog.Logger) {
	(&Acceptor{Name: name, Tracker: t, OrigDst: origDst, Serve: serve, Log: log}).Run(ctx, ln)
}

// acceptBackoff is the wait after a failed Accept that followed a wait of prev.
func acceptBackoff(prev time.Duration) time.Duration {
	if prev == 0 {
		return 5 * time.Millisecond
	}
	return min(2*prev, time.Second)
}
