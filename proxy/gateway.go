package proxy

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/meshd/meshd/proxy/forward"
	"github.com/meshd/meshd/proxy/listen"
)

// DefaultGatewayAddr is where a gateway's listeners bind by default: every address,
// since a gateway faces clients outside the host (an NLB, other hosts).
const DefaultGatewayAddr = "0.0.0.0"

// gatewayListeners are the bound listeners of the virtual gateway a Server serves, by
// the listener port of the config. They follow the config: a reload that adds a
// listener binds it, one that removes a listener closes it.
type gatewayListeners struct {
	mu     sync.Mutex
	lns    map[int]net.Listener
	live   bool // Start bound them; reloads now bind and close
	closed bool // the drain closed them; nothing binds again
}

// gatewayListen binds the listener of gateway port port.
func (s *Server) gatewayListen(port int) (net.Listener, error) {
	if s.opts.GatewayListen != nil {
		return s.opts.GatewayListen(port)
	}
	return net.Listen("tcp", net.JoinHostPort(s.opts.GatewayAddr, strconv.Itoa(port)))
}

// startGateway binds every listener of the gateway in force and starts accepting; on a
// bind error nothing stays bound.
func (s *Server) startGateway() error {
	g := &s.gw
	g.mu.Lock()
	defer g.mu.Unlock()
	g.lns = map[int]net.Listener{}
	gw := s.state.Load().Gateway()
	ports := slices.Sorted(maps.Keys(gw.Listeners))
	for _, p := range ports {
		ln, err := s.gatewayListen(p)
		if err != nil {
			for _, l := range g.lns {
				_ = l.Close()
			}
			g.lns = nil
			return fmt.Errorf("gateway %s listener port %d: %w", s.opts.Gateway, p, err)
		}
		g.lns[p] = ln
	}
	for _, p := range ports {
		s.acceptGateway(g.lns[p], p)
	}
	g.live = true
	return nil
}

// acceptGateway accepts on ln, the listener of gateway port port, under the ingress
// listener's connection limits and the overload watermarks (limits.go), as a node's
// listeners do. Its connections are served as ingress ones whose original destination
// port is the listener's port of the config (whatever ln bound: tests bind port 0),
// which picks the listener's tls, gateway routes and health check.
func (s *Server) acceptGateway(ln net.Listener, port int) {
	s.loopWG.Add(1)
	go func() {
		defer s.loopWG.Done()
		a := listen.Acceptor{
			Name: "gateway:" + strconv.Itoa(port), Tracker: &s.conns, Limit: &s.limits[forward.Ingress], Log: s.log, Parker: s.parker,
			OrigDst: func(c net.Conn) netip.AddrPort {
				var addr netip.Addr
				if ta, ok := c.LocalAddr().(*net.TCPAddr); ok {
					addr, _ = netip.AddrFromSlice(ta.IP)
				}
				return netip.AddrPortFrom(addr.Unmap(), uint16(port))
			},
			Serve:         func(tc *listen.Conn) { s.serveConn(tc, forward.Ingress) },
			Overloaded:    s.over.active.Load,
			OnFDExhausted: func() { s.sweepIdle(time.Now(), 0) },
		}
		a.Run(s.ctx, ln)
	}()
}

// syncGateway makes the bound listeners follow next's gateway after a reload: new ports
// are bound (a failure is logged: the config serves on, without that listener), removed
// ones closed, and their connections drained as a node's removed listeners' are.
func (s *Server) syncGateway(next *Snapshot) {
	g := &s.gw
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.live || g.closed || next == nil || next.Gateway() == nil {
		return
	}
	want := next.Gateway().Listeners
	var removed []int
	for p, ln := range g.lns {
		if want[p] == nil {
			_ = ln.Close()
			delete(g.lns, p)
			removed = append(removed, p)
		}
	}
	for _, p := range slices.Sorted(maps.Keys(want)) {
		if g.lns[p] != nil {
			continue
		}
		ln, err := s.gatewayListen(p)
		if err != nil {
			s.log.Error("gateway listener not bound: its routes are unreachable until it can be (free the port and reload, or restart)",
				"gateway", s.opts.Gateway, "port", p, "err", err)
			continue
		}
		g.lns[p] = ln
		s.acceptGateway(ln, p)
		s.log.Info("gateway listener bound", "gateway", s.opts.Gateway, "port", p, "addr", ln.Addr().String())
	}
	if len(removed) == 0 {
		return
	}
	var gone []*listen.Conn
	s.conns.Each(func(c *listen.Conn) {
		if slices.Contains(removed, int(c.Orig.Port())) {
			c.Drain.Store(true)
			c.WakeIfIdle()
			gone = append(gone, c)
		}
	})
	for _, c := range gone {
		s.h2in.GoAway(c)
	}
	s.log.Info("gateway listeners removed", "gateway", s.opts.Gateway, "ports", removed, "draining_connections", len(gone))
}

// closeGateway closes the gateway's listeners for the drain.
func (s *Server) closeGateway() {
	g := &s.gw
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	for _, ln := range g.lns {
		_ = ln.Close()
	}
}

// GatewayAddrs reports the bound address of each gateway listener, by the listener
// port of the config; empty when the server serves a node.
func (s *Server) GatewayAddrs() map[int]string {
	g := &s.gw
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[int]string, len(g.lns))
	for p, ln := range g.lns {
		out[p] = ln.Addr().String()
	}
	return out
}

// served is the name of the node or gateway served.
func (o *Options) served() string {
	if o.Gateway != "" {
		return o.Gateway
	}
	return o.Node
}

// startGatewayServer is Start for a gateway: the gateway's listeners and the admin.
func (s *Server) startGatewayServer() error {
	if err := s.startGateway(); err != nil {
		s.stopEMF()
		s.stopParker()
		return err
	}
	if err := s.StartAdmin(); err != nil {
		s.stopEMF()
		s.stopParker()
		s.closeGateway()
		return err
	}
	s.reaper.Start(s.sweepIdle)
	s.startOverload()
	s.ready.Store(true)
	s.log.Info("meshd listening as a virtual gateway", "gateway", s.opts.Gateway, "listeners", s.GatewayAddrs(), "admin", s.AdminAddr(),
		"max_connections", s.conns.Max, "max_listener_connections", s.opts.Limits.MaxListenerConnections, "rlimit_nofile", NoFileLimit())
	return nil
}
