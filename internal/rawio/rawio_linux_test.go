package rawio

import (
	"errors"
	"net"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"
)

// TestRawCalls runs the raw system calls themselves, which the race detector's build
// does not use inside Conn.
func TestRawCalls(t *testing.T) {
	a, b := tcpPair(t)
	ra, _ := a.SyscallConn()
	rb, _ := b.SyscallConn()
	var n int
	var err error
	_ = ra.Write(func(fd uintptr) bool { n, err = rawWrite(int(fd), []byte("ping")); return true })
	if n != 4 || err != nil {
		t.Fatalf("rawWrite: %d %v", n, err)
	}
	p := make([]byte, 16)
	_ = rb.Read(func(fd uintptr) bool {
		n, err = rawRead(int(fd), p)
		return err != syscall.EAGAIN
	})
	if n != 4 || err != nil || string(p[:n]) != "ping" {
		t.Fatalf("rawRead: %d %v %q", n, err, p[:n])
	}
	_ = rb.Read(func(fd uintptr) bool { n, err = rawRead(int(fd), p); return true })
	if err != syscall.EAGAIN {
		t.Fatalf("rawRead of an empty socket: %d %v; want EAGAIN", n, err)
	}
	if n, err := Write(-1, []byte("x")); err != syscall.EBADF || n != 0 {
		t.Fatalf("Write(-1): %d %v; want EBADF", n, err)
	}
}

// BenchmarkReadNothing is the cost of a read that finds the socket empty (EAGAIN): the
// system call a server makes between keep-alive requests when it reads before it waits
// (Session's reason; BENCHMARKS "Session 12": 1.27-1.51 µs on the benchmark VM).
// go test -run '^$' -bench ReadNothing ./internal/rawio
func BenchmarkReadNothing(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); accepted <- c }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if s := <-accepted; s != nil {
		defer s.Close()
	}
	rc, _ := c.(*net.TCPConn).SyscallConn()
	p := make([]byte, 512)
	b.ResetTimer()
	_ = rc.Control(func(fd uintptr) {
		for range b.N {
			if _, err := rawRead(int(fd), p); err != syscall.EAGAIN {
				b.Fatalf("read: %v, want EAGAIN", err)
			}
		}
	})
}

// TestRawWriteNoSIGPIPE: a write to a connection the peer reset fails (EPIPE or
// ECONNRESET) without the kernel raising SIGPIPE (sendto's MSG_NOSIGNAL; write(2) would
// raise it, which the runtime then handles and ignores).
func TestRawWriteNoSIGPIPE(t *testing.T) {
	a, b := tcpPair(t)
	_ = b.SetLinger(0)
	_ = b.Close() // RST
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGPIPE)
	defer signal.Stop(sig)
	ra, _ := a.SyscallConn()
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_ = ra.Write(func(fd uintptr) bool { _, err = rawWrite(int(fd), []byte("x")); return true })
		if err == nil {
			time.Sleep(time.Millisecond) // the reset is on its way
		}
	}
	if !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("write after the peer's reset: %v, want EPIPE or ECONNRESET", err)
	}
	_ = ra.Write(func(fd uintptr) bool { _, err = rawWrite(int(fd), []byte("x")); return true })
	if !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("second write after the reset: %v, want EPIPE", err)
	}
	select {
	case s := <-sig:
		t.Fatalf("the write raised %v", s)
	case <-time.After(100 * time.Millisecond):
	}
}

// BenchmarkLoopbackCalls is one small write and the read of it on a loopback TCP pair,
// with read(2)/write(2) and with recvfrom(2)/sendto(2), which rawRead and rawWrite use:
// the socket calls skip the VFS layer (BENCHMARKS "Session 13").
// go test -run '^$' -bench LoopbackCalls -count 6 ./internal/rawio
func BenchmarkLoopbackCalls(b *testing.B) {
	fdWrite := func(fd int, p []byte) (int, error) { return syscall.Write(fd, p) }
	fdRead := func(fd int, p []byte) (int, error) { return syscall.Read(fd, p) }
	for _, c := range []struct {
		name  string
		write func(int, []byte) (int, error)
		read  func(int, []byte) (int, error)
	}{{"read-write", fdWrite, fdRead}, {"recvfrom-sendto", rawWrite, rawRead}} {
		b.Run(c.name, func(b *testing.B) {
			x, y := tcpPair(b)
			rx, _ := x.SyscallConn()
			ry, _ := y.SyscallConn()
			msg, p := make([]byte, 120), make([]byte, 4096)
			b.ResetTimer()
			_ = rx.Control(func(wfd uintptr) {
				_ = ry.Control(func(rfd uintptr) {
					for range b.N {
						if _, err := c.write(int(wfd), msg); err != nil {
							b.Fatal(err)
						}
						// Loopback delivers within the write; a short wait covers a
						// softirq deferred to another CPU.
						for {
							if _, err := c.read(int(rfd), p); err == nil {
								break
							} else if err != syscall.EAGAIN {
								b.Fatal(err)
							}
						}
					}
				})
			})
		})
	}
}
