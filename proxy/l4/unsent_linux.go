package l4

import (
	"net"
	"syscall"
	"unsafe"
)

// unsent is the number of bytes in c's socket send queue not yet acknowledged by the
// peer (SIOCOUTQ, which is TIOCOUTQ's number), through any TLS layer; false when c is
// not a TCP socket or the call fails. A queue that stays full and unchanged means a
// peer that reads nothing.
func unsent(c net.Conn) (int, bool) {
	for {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = u.NetConn()
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return 0, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var n int32
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&n)))
	}); err != nil || errno != 0 {
		return 0, false
	}
	return int(n), true
}
