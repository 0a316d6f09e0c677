package proxy

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/meshd/meshd/proxy/upstream"
)

// isSelf reports whether host:port is one of meshd's own listeners, which an ALLOW_ALL
// passthrough must never connect to (it would loop until file descriptors run out).
func (s *Server) isSelf(host string, port int) bool {
	for _, l := range []net.Listener{s.ingress, s.egress, s.egress6} {
		if l == nil {
			continue
		}
		ta, ok := l.Addr().(*net.TCPAddr)
		if !ok || ta.Port != port {
			continue
		}
		if host == "localhost" {
			return true
		}
		ip := net.ParseIP(host)
		if ip != nil && (ip.IsLoopback() || ip.IsUnspecified() || ta.IP.Equal(ip)) {
			return true
		}
	}
	return false
}

// selfGuardDialer is s's dialer with a Control hook that refuses to connect to any of
// meshd's own listener addresses, checked on the address the name resolved to: names
// isSelf cannot judge (any name that resolves to meshd) would otherwise loop back into
// meshd, one connection per hop, until file descriptors run out. The refusal surfaces
// as upstream.ErrSelfLoop, answered 508 (forward.Status).
func (s *Server) selfGuardDialer() *net.Dialer {
	d := *s.dialer
	d.Control = func(_, address string, _ syscall.RawConn) error {
		dst, err := netip.ParseAddrPort(address)
		if err != nil {
			return nil
		}
		if isOwnAddr(s.listenerAddrs(), dst, localAddrs) {
			return fmt.Errorf("%s: %w", address, upstream.ErrSelfLoop)
		}
		return nil
	}
	return &d
}

// listenerAddrs are the bound addresses of meshd's proxy listeners.
func (s *Server) listenerAddrs() []netip.AddrPort {
	var out []netip.AddrPort
	for _, l := range []net.Listener{s.ingress, s.egress, s.egress6} {
		if l == nil {
			continue
		}
		if ta, ok := l.Addr().(*net.TCPAddr); ok {
			out = append(out, ta.AddrPort())
		}
	}
	return out
}

// isOwnAddr reports whether dst reaches one of the listeners at own. A listener bound
// to an unspecified address (0.0.0.0, ::) is reached on its port at any local address:
// loopback, unspecified, or one of local()'s interface addresses (asked only then).
func isOwnAddr(own []netip.AddrPort, dst netip.AddrPort, local func() []netip.Addr) bool {
	ip := dst.Addr().Unmap()
	for _, l := range own {
		if l.Port() != dst.Port() {
			continue
		}
		lip := l.Addr().Unmap()
		if !lip.IsUnspecified() {
			if lip == ip {
				return true
			}
			continue
		}
		if ip.IsLoopback() || ip.IsUnspecified() {
			return true
		}
		for _, a := range local() {
			if a.Unmap() == ip {
				return true
			}
		}
	}
	return false
}

// localAddrs lists the host's interface addresses.
func localAddrs() []netip.Addr {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr())
		}
	}
	return out
}

// checkAdminExposure refuses an admin listener reachable from other hosts without a
// token: PUT /config on it would let anyone on the network reroute the node's traffic.
func checkAdminExposure(o Options) error {
	if o.AdminAddr == "off" || o.AdminToken != "" || isLoopbackAddr(o.AdminAddr) {
		return nil
	}
	return fmt.Errorf("proxy: admin address %q is not a loopback address, so the admin API needs a token: "+
		"set Options.AdminToken (meshd run: --admin-token-file or MESHD_ADMIN_TOKEN), or bind the admin listener to 127.0.0.1", o.AdminAddr)
}

// isLoopbackAddr reports whether host:port binds only loopback interfaces. An empty
// host (all interfaces) and names other than "localhost" are not loopback.
func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
