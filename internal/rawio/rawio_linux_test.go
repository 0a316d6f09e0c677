package rawio

import (
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
