//go:build !linux

package proxy

import "net"

// originalPort: transparent interception (iptables REDIRECT) exists only on Linux.
func originalPort(net.Conn) int { return 0 }
