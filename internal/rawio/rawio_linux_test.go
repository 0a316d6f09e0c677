package rawio

import (
	"net"
	"syscall"
	"testing"
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
