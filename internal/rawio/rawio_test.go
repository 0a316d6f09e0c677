package rawio

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// tcpPair is a connected pair of loopback TCP connections, closed at cleanup.
func tcpPair(t testing.TB) (a, b *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			c = nil
		}
		acc <- c
	}()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-acc
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { _ = d.Close(); _ = s.Close() })
	return d.(*net.TCPConn), s.(*net.TCPConn)
}

func bound(t *testing.T, nc net.Conn) *Conn {
	c := new(Conn)
	c.Init(nc)
	if _, ok := nc.(*net.TCPConn); ok && c.rc == nil {
		t.Fatal("a TCP connection did not get raw I/O")
	}
	return c
}

// TestRoundTripAndBackPressure: 8 MiB each way at once, far more than the socket
// buffers hold, so writes meet EAGAIN and wait in the netpoller while the peer is slow
// to read; every byte arrives in order, and the end of the stream is io.EOF.
func TestRoundTripAndBackPressure(t *testing.T) {
	a, b := tcpPair(t)
	ca, cb := bound(t, a), bound(t, b)
	const size = 8 << 20
	payload := func(seed uint64) []byte {
		p := make([]byte, size)
		r := rand.New(rand.NewPCG(seed, seed))
		for i := range p {
			p[i] = byte(r.Uint32())
		}
		return p
	}
	pa, pb := payload(1), payload(2)
	type result struct {
		got []byte
		err error
	}
	readAll := func(c *Conn, slow bool) <-chan result {
		ch := make(chan result, 1)
		go func() {
			var buf bytes.Buffer
			p := make([]byte, 7000)
			for {
				n, err := c.Read(p)
				buf.Write(p[:n])
				if err != nil {
					if err == io.EOF {
						err = nil
					}
					ch <- result{buf.Bytes(), err}
					return
				}
				if slow && buf.Len() < 1<<20 {
					time.Sleep(time.Millisecond) // the writer's socket buffer fills meanwhile
				}
			}
		}()
		return ch
	}
	gotB, gotA := readAll(cb, true), readAll(ca, false)
	writeAll := func(c *Conn, tc *net.TCPConn, p []byte) <-chan error {
		ch := make(chan error, 1)
		go func() {
			n, err := c.Write(p)
			if err == nil && n != len(p) {
				err = errors.New("short write without an error")
			}
			if err == nil {
				err = tc.CloseWrite()
			}
			ch <- err
		}()
		return ch
	}
	wa, wb := writeAll(ca, a, pa), writeAll(cb, b, pb)
	for _, ch := range []<-chan error{wa, wb} {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
	for name, c := range map[string]struct {
		ch   <-chan result
		want []byte
	}{"a to b": {gotB, pa}, "b to a": {gotA, pb}} {
		r := <-c.ch
		if r.err != nil {
			t.Fatalf("%s: read: %v", name, r.err)
		}
		if !bytes.Equal(r.got, c.want) {
			t.Fatalf("%s: %d bytes arrived, want the %d written, unchanged", name, len(r.got), len(c.want))
		}
	}
	if n, err := ca.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("read after the end: %d, %v; want 0, io.EOF", n, err)
	}
	if n, err := ca.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty read: %d, %v", n, err)
	}
}

// TestErrorsAsNetConn: deadlines, a reset, a closed connection and a write to a closed
// peer give the errors net.Conn gives (the same types, Op, and wrapped causes).
func TestErrorsAsNetConn(t *testing.T) {
	t.Run("read deadline", func(t *testing.T) {
		a, _ := tcpPair(t)
		c := bound(t, a)
		_ = a.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		_, err := c.Read(make([]byte, 10))
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "read" || !oe.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read past the deadline: %#v (%v); want a timeout *net.OpError with Op read", err, err)
		}
	})
	t.Run("write deadline", func(t *testing.T) {
		a, _ := tcpPair(t) // the peer never reads
		c := bound(t, a)
		_ = a.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		p := make([]byte, 64<<20)
		n, err := c.Write(p)
		var oe *net.OpError
		if n >= len(p) || !errors.As(err, &oe) || oe.Op != "write" || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("write past the deadline: n=%d err=%v; want a short write and a timeout with Op write", n, err)
		}
	})
	t.Run("reset", func(t *testing.T) {
		a, b := tcpPair(t)
		c := bound(t, a)
		_ = b.SetLinger(0)
		_ = b.Close() // RST
		_, err := c.Read(make([]byte, 10))
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "read" || !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("read after a reset: %v; want ECONNRESET in a *net.OpError with Op read", err)
		}
		if want := "read: connection reset by peer"; !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Fatalf("message %q, want it to say %q as net.Conn's does", err, want)
		}
		var werr error
		for i := 0; i < 100 && werr == nil; i++ { // a write into a reset connection fails at once or at the next
			_, werr = c.Write([]byte("x"))
		}
		if !errors.Is(werr, syscall.EPIPE) && !errors.Is(werr, syscall.ECONNRESET) {
			t.Fatalf("write after a reset: %v; want EPIPE or ECONNRESET", werr)
		}
	})
	t.Run("closed", func(t *testing.T) {
		a, _ := tcpPair(t)
		c := bound(t, a)
		_ = a.Close()
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read of a closed connection: %v; want net.ErrClosed", err)
		}
		if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("write to a closed connection: %v; want net.ErrClosed", err)
		}
	})
	t.Run("close wakes a waiting read", func(t *testing.T) {
		a, _ := tcpPair(t)
		c := bound(t, a)
		done := make(chan error, 1)
		go func() { _, err := c.Read(make([]byte, 1)); done <- err }()
		time.Sleep(20 * time.Millisecond)
		_ = a.Close()
		select {
		case err := <-done:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("woken read: %v; want net.ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a read waiting in the netpoller was not woken by Close")
		}
	})
}

// TestNotTCP: a connection that is not a plain TCP socket keeps its own Read and Write.
func TestNotTCP(t *testing.T) {
	x, y := net.Pipe()
	defer x.Close()
	defer y.Close()
	c := bound(t, x)
	if c.rc != nil || !c.For(x) || c.For(y) {
		t.Fatalf("pipe: raw=%v For(x)=%v For(y)=%v", c.rc != nil, c.For(x), c.For(y))
	}
	go func() { _, _ = y.Write([]byte("hello")) }()
	p := make([]byte, 5)
	if n, err := io.ReadFull(c, p); n != 5 || err != nil || string(p) != "hello" {
		t.Fatalf("pipe read: %d %v %q", n, err, p)
	}
	var zero Conn
	if zero.For(nil) {
		t.Fatal("a Conn never bound reports For(nil)")
	}
}

// TestNoAllocations: a read and a write that succeed allocate nothing (the hot path of
// every proxied request).
func TestNoAllocations(t *testing.T) {
	a, b := tcpPair(t)
	ca, cb := bound(t, a), bound(t, b)
	msg, p := []byte("0123456789"), make([]byte, 64)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := ca.Write(msg); err != nil {
			t.Fatal(err)
		}
		if n, err := io.ReadFull(cb, p[:len(msg)]); n != len(msg) || err != nil {
			t.Fatal(n, err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per write and read, want 0", allocs)
	}
}

// TestWrapTCP: a TCP connection wrapped for a layer such as crypto/tls reads and writes
// through the raw calls and unwraps to the socket; anything else is returned as it is.
func TestWrapTCP(t *testing.T) {
	a, b := tcpPair(t)
	w := WrapTCP(a)
	rw, ok := w.(*TCP)
	if !ok || rw.io.rc == nil || rw.NetConn() != net.Conn(a) {
		t.Fatalf("WrapTCP(%T) = %T; want a *TCP with raw I/O over the connection", a, w)
	}
	if _, err := w.Write([]byte("through")); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 7)
	if _, err := io.ReadFull(b, p); err != nil || string(p) != "through" {
		t.Fatalf("peer read %q, %v", p, err)
	}
	if _, err := b.Write([]byte("back")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(w, p[:4]); err != nil || string(p[:4]) != "back" {
		t.Fatalf("wrapped read %q, %v", p[:4], err)
	}
	x, y := net.Pipe()
	defer x.Close()
	defer y.Close()
	if WrapTCP(x) != x {
		t.Fatal("a pipe was wrapped")
	}
}

// TestReadOfWriteOf: bound to the connection given, the raw calls; otherwise that
// connection's own (a holder whose connection was replaced, or never bound).
func TestReadOfWriteOf(t *testing.T) {
	a, b := tcpPair(t)
	c := bound(t, a)
	x, y := net.Pipe()
	defer x.Close()
	defer y.Close()
	go func() { _, _ = c.WriteOf(x, []byte("pipe")) }() // not bound to x: x's own Write
	p := make([]byte, 4)
	if _, err := io.ReadFull(y, p); err != nil || string(p) != "pipe" {
		t.Fatalf("WriteOf another conn: %q %v", p, err)
	}
	if _, err := c.WriteOf(a, []byte("tcp!")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(b, p); err != nil || string(p) != "tcp!" {
		t.Fatalf("WriteOf the bound conn: %q %v", p, err)
	}
	_, _ = b.Write([]byte("back"))
	if n, err := c.ReadOf(a, p); err != nil || string(p[:n]) != "back" {
		t.Fatalf("ReadOf the bound conn: %q %v", p[:n], err)
	}
	var zero Conn
	go func() { _, _ = y.Write([]byte("zero")) }()
	if n, err := zero.ReadOf(x, p); err != nil || string(p[:n]) != "zero" {
		t.Fatalf("ReadOf on an unbound Conn: %q %v", p[:n], err)
	}
}

// TestSessionKeepsReadiness: within one Session, input that arrives after a read found
// the socket drained wakes the next wait, even though no read ran between them: the
// callback reads "a", then (still in the callback) the peer sends "b" and the callback
// waits without reading; the wait must end at once with "b" readable. (Between two
// Reads, the second would clear that readiness, and a wait without a read first would
// last until the deadline.) The wait's deadline ends a session that waits with nothing
// to come, and the close of the peer shows as io.EOF.
func TestSessionKeepsReadiness(t *testing.T) {
	a, b := tcpPair(t)
	cb := bound(t, b)
	if _, err := a.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got []byte
	buf := make([]byte, 16)
	calls, blocked := 0, 0
	err := cb.Session(func() bool {
		calls++
		for {
			n, err := cb.SessionRead(buf)
			switch {
			case err == ErrWouldBlock:
				blocked++
				return false
			case err != nil:
				t.Errorf("read: %v", err)
				return true
			}
			got = append(got, buf[:n]...)
			if string(got) == "a" {
				// Drained (1 byte of 16): the peer sends more now, and the callback
				// waits without reading again.
				if _, err := a.Write([]byte("b")); err != nil {
					t.Error(err)
					return true
				}
				time.Sleep(20 * time.Millisecond) // "b" has arrived: its edge came in the callback
				return false
			}
			if string(got) == "ab" {
				return true
			}
		}
	})
	if err != nil {
		t.Fatalf("session: %v (got %q): the readiness of input that arrived in the callback was lost", err, got)
	}
	if string(got) != "ab" || calls != 2 || blocked != 0 {
		t.Fatalf("got %q in %d calls with %d reads finding nothing, want \"ab\" in 2 calls and none", got, calls, blocked)
	}

	// Nothing more comes: the wait ends with the deadline's error, f not called again.
	_ = b.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	calls = 0
	err = cb.Session(func() bool {
		calls++
		if _, err := cb.SessionRead(buf); err != ErrWouldBlock {
			t.Errorf("read with nothing sent: %v, want ErrWouldBlock", err)
		}
		return false
	})
	if !errors.Is(err, os.ErrDeadlineExceeded) || calls != 1 {
		t.Fatalf("idle session: %v after %d calls, want the deadline's error after 1", err, calls)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" {
		t.Errorf("idle session's error %v, want a *net.OpError named read", err)
	}

	// The peer closes: SessionRead says io.EOF.
	_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
	_ = a.Close()
	err = cb.Session(func() bool {
		_, err := cb.SessionRead(buf)
		if err == ErrWouldBlock {
			return false
		}
		if err != io.EOF {
			t.Errorf("read after the peer's close: %v, want io.EOF", err)
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSessionNotRaw: a connection without raw calls (here a pipe) has no Session.
func TestSessionNotRaw(t *testing.T) {
	p, q := net.Pipe()
	defer p.Close()
	defer q.Close()
	c := bound(t, p)
	if c.Raw() {
		t.Fatal("a pipe reports raw calls")
	}
	if err := c.Session(func() bool { t.Error("f called"); return true }); err == nil {
		t.Fatal("Session on a pipe did not fail")
	}
}
