package upstream

import (
	"net"
	"os"
	"syscall"

	"github.com/meshd/meshd/internal/rawio"
)

// FlushAwait flushes the request head buffered in BW and, when the connection is a
// plain TCP socket, returns only once the response is readable (or the read deadline
// passed, or the connection failed): the read that follows then finds data at its first
// try. Flush followed by a read costs one more syscall per exchange: the read runs
// before the upstream could answer, fails with EAGAIN and parks; HAProxy instead waits
// for readiness after a send. The write is done inside the raw connection's read wait,
// after the poller's readiness flag was reset for it, so an answer that arrives at any
// time after the write wakes the wait (a write before it could lose that edge).
//
// Only for an exchange whose whole request is in BW: nothing else may read the
// connection meanwhile.
func (u *Conn) FlushAwait() error {
	if u.raw == nil || u.BW.Buffered() == 0 || u.BR.Buffered() > 0 {
		return u.BW.Flush()
	}
	u.await = true
	err := u.BW.Flush()
	u.await = false
	return err
}

// awaitState is FlushAwait's write in progress; its step is made once per connection
// so a raw wait allocates nothing.
type awaitState struct {
	p      []byte
	n      int
	called bool
	err    error
	step   func(fd uintptr) bool
}

// writeAwait writes p (the whole buffered request) inside a raw read wait: see
// FlushAwait. What the non-blocking write could not take is written the usual way.
func (u *Conn) writeAwait(p []byte) (int, error) {
	a := u.aw
	if a == nil {
		a = &awaitState{}
		a.step = a.run
		u.aw = a
	}
	a.p, a.n, a.called, a.err = p, 0, false, nil
	// The wait's own error (a deadline, a closed connection) is the read's to report.
	_ = u.raw.Read(a.step)
	n, werr := a.n, a.err
	a.p, a.err = nil, nil
	if werr != nil {
		return n, &net.OpError{Op: "write", Net: "tcp", Source: u.NetConn.LocalAddr(), Addr: u.NetConn.RemoteAddr(), Err: os.NewSyscallError("write", werr)}
	}
	if n == len(p) {
		return n, nil
	}
	m, err := u.io.WriteOf(u.NetConn, p[n:])
	return n + m, err
}

// run is the raw wait's callback: the first call writes, and asks to wait when all of it
// was taken; the next (readable) ends the wait.
func (a *awaitState) run(fd uintptr) bool {
	if a.called {
		return true
	}
	a.called = true
	for a.n < len(a.p) {
		m, err := rawio.Write(int(fd), a.p[a.n:])
		if m > 0 {
			a.n += m
		}
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return true // the socket buffer is full: the rest is written the usual way
		case err != nil:
			a.err = err
			return true
		case m == 0:
			return true
		}
	}
	return false // all written: wait for the answer
}

// rawTCP is c's raw connection when c is a plain TCP socket (not TLS), for FlushAwait.
func rawTCP(c net.Conn) syscall.RawConn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}
