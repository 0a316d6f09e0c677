//go:build !linux

package l4

import "net"

// unsent is unknown off Linux: a relay blocked writing to a peer that reads nothing is
// then ended only by a drain.
func unsent(net.Conn) (int, bool) { return 0, false }
