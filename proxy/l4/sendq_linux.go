package l4

import (
	"net"

	"golang.org/x/sys/unix"
)

// sendState is what c's socket holds unsent or unacknowledged (SIOCOUTQ) and the bytes
// its peer has acknowledged so far (tcp_info's bytes_acked), through any TLS layer;
// false when c is not a TCP socket or a call fails. A copy blocked on a peer that reads
// nothing has a queue that stays non-empty while bytes_acked stands still; a slow
// reader moves bytes_acked, and a starved copy (not blocked) leaves the queue empty.
func sendState(c net.Conn) (unsent int, acked uint64, ok bool) {
	for {
		u, isWrap := c.(interface{ NetConn() net.Conn })
		if !isWrap {
			break
		}
		c = u.NetConn()
	}
	tc, isTCP := c.(*net.TCPConn)
	if !isTCP {
		return 0, 0, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, 0, false
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		if unsent, ierr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ); ierr != nil {
			return
		}
		var ti *unix.TCPInfo
		if ti, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); ierr == nil {
			acked = ti.Bytes_acked
		}
	}); err != nil || ierr != nil {
		return 0, 0, false
	}
	return unsent, acked, true
}
