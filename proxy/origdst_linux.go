package proxy

import (
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// originalPort returns the destination port a connection had before an iptables
// REDIRECT rewrote it (SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST), or 0 when the
// connection was not redirected (its original destination is the listener itself) or
// the kernel has no conntrack entry for it.
func originalPort(c net.Conn) int {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return 0
	}
	la, _ := tc.LocalAddr().(*net.TCPAddr)
	ip, port, ok := originalDst(tc)
	if !ok || la == nil || (port == la.Port && ip.Equal(la.IP)) {
		return 0
	}
	return port
}

// originalDst reads the pre-NAT destination of a redirected TCP connection.
func originalDst(tc *net.TCPConn) (net.IP, int, bool) {
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil, 0, false
	}
	var (
		ip   net.IP
		port int
		ok   bool
	)
	v6 := false
	if la, _ := tc.LocalAddr().(*net.TCPAddr); la != nil && la.IP.To4() == nil {
		v6 = true
	}
	_ = raw.Control(func(fd uintptr) {
		if v6 {
			var sa unix.RawSockaddrInet6
			l := uint32(unsafe.Sizeof(sa))
			// IP6T_SO_ORIGINAL_DST has the same value (80) as SO_ORIGINAL_DST, at level SOL_IPV6.
			_, _, e := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, unix.SOL_IPV6, unix.SO_ORIGINAL_DST,
				uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&l)), 0)
			if e == 0 {
				ip = net.IP(append([]byte(nil), sa.Addr[:]...))
				port = int(sa.Port>>8 | sa.Port<<8)
				ok = true
			}
			return
		}
		var sa unix.RawSockaddrInet4
		l := uint32(unsafe.Sizeof(sa))
		_, _, e := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, unix.SOL_IP, unix.SO_ORIGINAL_DST,
			uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&l)), 0)
		if e == 0 {
			ip = net.IPv4(sa.Addr[0], sa.Addr[1], sa.Addr[2], sa.Addr[3])
			port = int(sa.Port>>8 | sa.Port<<8)
			ok = true
		}
	})
	return ip, port, ok
}
