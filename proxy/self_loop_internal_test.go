package proxy

import (
	"net/netip"
	"testing"
)

func TestIsOwnAddr(t *testing.T) {
	ap := netip.MustParseAddrPort
	local := func() []netip.Addr {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("fd00::5")}
	}
	own := []netip.AddrPort{ap("0.0.0.0:15000"), ap("127.0.0.1:15001"), ap("[::1]:15001"), ap("[::]:15002")}
	for _, tc := range []struct {
		dst  string
		want bool
	}{
		{"127.0.0.1:15000", true},         // wildcard bind: loopback
		{"127.0.0.5:15000", true},         // any loopback address reaches a wildcard bind
		{"10.1.2.3:15000", true},          // wildcard bind: the pod's own address
		{"[::ffff:10.1.2.3]:15000", true}, // the same, IPv4-mapped
		{"0.0.0.0:15000", true},
		{"10.9.9.9:15000", false}, // another host
		{"127.0.0.1:15001", true}, // specific bind
		{"[::1]:15001", true},
		{"127.0.0.2:15001", false}, // a specific bind is reached only at its address
		{"10.1.2.3:15001", false},
		{"[fd00::5]:15002", true},
		{"[fd00::6]:15002", false},
		{"127.0.0.1:8080", false}, // not a meshd port
	} {
		if got := isOwnAddr(own, ap(tc.dst), local); got != tc.want {
			t.Errorf("isOwnAddr(%s) = %v, want %v", tc.dst, got, tc.want)
		}
	}
}
