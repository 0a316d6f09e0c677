// Package rawio reads and writes plain TCP sockets with system calls the Go scheduler is
// not told about.
//
// Why: every read and write of a net.Conn goes through syscall.Read or syscall.Write,
// which call the runtime's entersyscall and exitsyscall. When the process was idle (all
// Ps idle), entersyscall wakes the sysmon thread from its deep sleep (a futex wake), and
// sysmon then polls every 20 µs until the process is idle again (nanosleep) before it
// sleeps on a futex once more. At 1000 HTTP/2 requests a second, each request arriving
// into an idle process, that cost meshd 1.6 futex and 1.3-1.6 nanosleep calls and about
// three context switches per request more than HAProxy (perf stat, BENCHMARKS.md
// "Session 9"); with sysmon kept out of deep sleep the counts matched HAProxy's. The
// sockets are non-blocking, so a read or write returns at once (EAGAIN when it cannot
// proceed, and the wait is the netpoller's, as for net.Conn): there is nothing for
// entersyscall to hand off.
//
// Under the race detector the annotated syscall.Read and syscall.Write are used, so the
// detector sees the same happens-before edges as with net.Conn.
package rawio

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
)

// Conn does the reads and writes of one connection. Init binds it to a net.Conn: a
// *net.TCPConn gets raw system calls, anything else (a TLS connection, a test's pipe)
// its own Read and Write. One Read and one Write may run at the same time (the state of
// each is its own), but not two Reads or two Writes. A Conn must not be copied after
// Init: the callbacks it hands the runtime point into it.
type Conn struct {
	nc net.Conn
	rc syscall.RawConn
	r  op
	w  op
	// The Session in progress: its callback, the descriptor the wait gave it (for
	// SessionRead), and the wait's step, made once.
	sf    func() bool
	sfd   int
	sstep func(fd uintptr) bool
}

// ErrWouldBlock is SessionRead's error when the socket has nothing to read: the
// session's callback returns false to wait for input.
var ErrWouldBlock = errors.New("rawio: nothing to read yet")

// errNotRaw is Session's error on a connection without raw calls.
var errNotRaw = errors.New("rawio: not a plain TCP socket")

// op is one direction's call in progress; its step is bound once, so a raw call
// allocates nothing.
type op struct {
	p    []byte
	n    int
	err  error
	step func(fd uintptr) bool
}

// Init binds c to nc.
//
// The raw calls rely on the socket staying non-blocking, as the net package leaves it:
// nothing may put it in blocking mode (e.g. through the descriptor of a
// (*net.TCPConn).File duplicate, which shares the file status flags), or a read would
// block a thread that holds a P, and a stop-the-world would wait for it.
func (c *Conn) Init(nc net.Conn) {
	c.nc, c.rc = nc, nil
	if tc, ok := nc.(*net.TCPConn); ok {
		if rc, err := tc.SyscallConn(); err == nil {
			c.rc = rc
		}
	}
	if c.r.step == nil {
		c.r.step = c.r.read
		c.w.step = c.w.write
	}
}

// For reports whether c was bound to nc (a caller whose connection may be replaced,
// e.g. by a TLS layer, checks before using c).
func (c *Conn) For(nc net.Conn) bool { return c.nc == nc && c.nc != nil }

// ReadOf is Read when c is bound to nc, else nc.Read: for a holder whose connection
// may have been replaced since Init, or that was built without it.
func (c *Conn) ReadOf(nc net.Conn, p []byte) (int, error) {
	if c.For(nc) {
		return c.Read(p)
	}
	return nc.Read(p)
}

// WriteOf is Write when c is bound to nc, else nc.Write (see ReadOf).
func (c *Conn) WriteOf(nc net.Conn, p []byte) (int, error) {
	if c.For(nc) {
		return c.Write(p)
	}
	return nc.Write(p)
}

// Read is net.Conn.Read: it waits (in the netpoller, honouring the read deadline) until
// something can be read, returns io.EOF at the end of the stream, and errors as
// *net.OpError with Op "read".
func (c *Conn) Read(p []byte) (int, error) {
	if c.rc == nil {
		return c.nc.Read(p)
	}
	if len(p) == 0 {
		return c.nc.Read(p) // net.Conn's answer (an error on a closed connection), rare
	}
	o := &c.r
	o.p, o.n, o.err = p, 0, nil
	werr := c.rc.Read(o.step)
	n, err := o.n, o.err
	o.p, o.err = nil, nil
	switch {
	case err != nil:
		return 0, c.opError("read", os.NewSyscallError("read", err))
	case werr != nil:
		return 0, renamed(werr, "read")
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Raw reports whether c makes raw calls (a plain TCP socket): only then does Session
// work.
func (c *Conn) Raw() bool { return c.rc != nil }

// Session calls f inside one wait of the connection for input: f runs at once, and
// again each time the socket turns readable after f returned false (to wait). Session
// returns nil when f returns true, or the wait's error (the read deadline passed, the
// connection closed) without calling f. Within f, SessionRead reads without waiting;
// Read must not be called (the wait holds the connection's read lock).
//
// Why: a Read begins by clearing the poller's readiness flag for the socket (the
// runtime's poll reset), so a server's Read of the next request, right after it wrote a
// response, finds nothing, fails with EAGAIN and only then waits: a system call per
// keep-alive request (1.3-1.5 µs on the benchmark VM) that an event loop such as
// HAProxy's, which remembers readiness, does not make. Within one Session the flag is
// cleared once, at its start, and then only by the waits; so once a SessionRead found
// the socket drained (a read shorter than its buffer, or EAGAIN), input that arrives
// afterwards sets the flag, and f may return false to wait without reading again: the
// wait returns at once if input came meanwhile (edge-triggered readiness is never lost
// inside a wait). Between two Reads, or two Sessions, that input's readiness would be
// cleared, and waiting without reading first could wait for ever. (TCP urgent data is
// the one exception: a read stops short at its mark with more queued, and the wait then
// lasts until more input or the deadline. HTTP clients do not send it.)
func (c *Conn) Session(f func() bool) error {
	if c.rc == nil {
		return errNotRaw
	}
	if c.sstep == nil {
		c.sstep = func(fd uintptr) bool {
			c.sfd = int(fd)
			return c.sf()
		}
	}
	c.sf = f
	err := c.rc.Read(c.sstep)
	c.sf = nil
	if err != nil {
		return renamed(err, "read")
	}
	return nil
}

// SessionRead is a read within Session's callback that never waits: ErrWouldBlock
// when nothing is there, io.EOF at the end of the stream, else Read's answers.
func (c *Conn) SessionRead(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, err := sysRead(c.sfd, p)
		switch err {
		case nil:
			if n == 0 {
				return 0, io.EOF
			}
			return n, nil
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			wouldBlock.Add(1)
			return 0, ErrWouldBlock
		default:
			return 0, c.opError("read", os.NewSyscallError("read", err))
		}
	}
}

// Write is net.Conn.Write: all of p is written (waiting in the netpoller, honouring the
// write deadline, while the socket buffer is full) unless an error comes first.
func (c *Conn) Write(p []byte) (int, error) {
	if c.rc == nil {
		return c.nc.Write(p)
	}
	if len(p) == 0 {
		return c.nc.Write(p)
	}
	o := &c.w
	o.p, o.n, o.err = p, 0, nil
	werr := c.rc.Write(o.step)
	n, err := o.n, o.err
	o.p, o.err = nil, nil
	switch {
	case err == io.ErrUnexpectedEOF:
		return n, c.opError("write", err)
	case err != nil:
		return n, c.opError("write", os.NewSyscallError("write", err))
	case werr != nil:
		return n, renamed(werr, "write")
	}
	return n, nil
}

func (o *op) read(fd uintptr) bool {
	for {
		n, err := sysRead(int(fd), o.p)
		switch err {
		case nil:
			o.n = n
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			wouldBlock.Add(1)
			return false
		default:
			o.err = err
			return true
		}
	}
}

// wouldBlock counts the reads that found nothing (EAGAIN), process-wide.
var wouldBlock atomic.Uint64

// WouldBlocks is how many reads through this package found nothing to read (EAGAIN)
// since the process started: each is a system call that did no work, and a server
// that waits for readiness before it reads makes none between keep-alive requests
// (Session). For tests and benchmarks.
func WouldBlocks() uint64 { return wouldBlock.Load() }

// maxRW bounds one write call, as the net package's does (1 GiB).
const maxRW = 1 << 30

func (o *op) write(fd uintptr) bool {
	for o.n < len(o.p) {
		n, err := sysWrite(int(fd), o.p[o.n:min(len(o.p), o.n+maxRW)])
		if n > 0 {
			o.n += n
		}
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return false
		case err != nil:
			o.err = err
			return true
		case n == 0:
			o.err = io.ErrUnexpectedEOF
			return true
		}
	}
	return true
}

// opError is the error the net package gives for a failed system call. One difference:
// Net is always "tcp", where net names a tcp6 listener's connections "tcp6".
func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.nc.LocalAddr(), Addr: c.nc.RemoteAddr(), Err: err}
}

// renamed gives the raw connection's own errors (a deadline, a closed connection),
// which it names "raw-read" or "raw-write", the name net.Conn gives them.
func renamed(err error, op string) error {
	if oe, ok := err.(*net.OpError); ok {
		oe.Op = op
	}
	return err
}

// Write is one write system call on fd (non-blocking), not announced to the scheduler
// (see the package comment): for callers with a raw connection of their own.
func Write(fd int, p []byte) (int, error) { return sysWrite(fd, p) }

// TCP is a plain TCP connection whose Read and Write are raw (Conn), for a layer that
// reads and writes a net.Conn itself, such as crypto/tls. Everything else is the
// embedded *net.TCPConn's; NetConn unwraps it.
type TCP struct {
	*net.TCPConn
	io Conn
}

// WrapTCP is c as a *TCP when it is a *net.TCPConn, else c itself.
func WrapTCP(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	w := &TCP{TCPConn: tc}
	w.io.Init(tc)
	return w
}

func (c *TCP) Read(p []byte) (int, error)  { return c.io.Read(p) }
func (c *TCP) Write(p []byte) (int, error) { return c.io.Write(p) }

// NetConn is the wrapped connection.
func (c *TCP) NetConn() net.Conn { return c.TCPConn }
