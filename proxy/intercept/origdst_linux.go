package intercept

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// OriginalDst returns the destination a TCP connection had before a nat REDIRECT or
// DNAT rewrote it (SO_ORIGINAL_DST, or IP6T_SO_ORIGINAL_DST for IPv6). For a connection
// that was not rewritten it returns the connection's local address; it fails when the
// kernel has no conntrack entry for the connection. Safe to call from any goroutine.
func OriginalDst(c *net.TCPConn) (netip.AddrPort, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	la, _ := c.LocalAddr().(*net.TCPAddr)
	if la == nil {
		return netip.AddrPort{}, errors.New("original destination: connection has no local address")
	}
	v6 := la.IP.To4() == nil
	var (
		ap   netip.AddrPort
		serr error
	)
	cerr := raw.Control(func(fd uintptr) {
		if v6 {
			var sa unix.RawSockaddrInet6
			l := uint32(unsafe.Sizeof(sa))
			// IP6T_SO_ORIGINAL_DST has the same value (80) as SO_ORIGINAL_DST, at SOL_IPV6.
			_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_IPV6, unix.SO_ORIGINAL_DST,
				uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&l)), 0)
			if e != 0 {
				serr = e
				return
			}
			ap = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), ntohs(sa.Port))
			return
		}
		var sa unix.RawSockaddrInet4
		l := uint32(unsafe.Sizeof(sa))
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_IP, unix.SO_ORIGINAL_DST,
			uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&l)), 0)
		if e != 0 {
			serr = e
			return
		}
		ap = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), ntohs(sa.Port))
	})
	if cerr != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", cerr)
	}
	if serr != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: getsockopt SO_ORIGINAL_DST: %w", serr)
	}
	return ap, nil
}

// ntohs converts a port in network byte order, as the kernel stores it, to host order.
func ntohs(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}
