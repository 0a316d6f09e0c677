//go:build !linux

package intercept

import (
	"errors"
	"net"
	"net/netip"
)

// OriginalDst is only available on Linux, where iptables REDIRECT exists.
func OriginalDst(c *net.TCPConn) (netip.AddrPort, error) {
	return netip.AddrPort{}, errors.New("original destination: only supported on Linux")
}
