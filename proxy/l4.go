package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/balancer"
	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/proxy/intercept"
	"github.com/meshd/meshd/router"
)

// l4ConnectRetries is how many times a failed upstream connect of an L4 connection is
// retried on another endpoint. App Mesh's tcpRoute has no retry policy; Envoy's
// tcp_proxy as App Mesh configured it retried connect failures, and App Mesh's hidden
// default elsewhere is 2 retries on connection-error (ANCHORS.md). Nothing has been sent
// upstream before the connect succeeds, so a retry is always safe.
const l4ConnectRetries = 2

// defaultL4Idle closes an L4 connection with no traffic either way for this long when
// neither the tcpRoute nor the target listener sets timeout.idle: Envoy tcp_proxy's
// default idle_timeout.
const defaultL4Idle = time.Hour

// l4Stats counts one cluster's L4 connections (opaque TCP and TLS passthrough). All
// fields are updated atomically from connection goroutines.
type l4Stats struct {
	accepted        atomic.Int64 // connections routed to the cluster
	active          atomic.Int64 // open now (dialing included)
	rejected        atomic.Int64 // closed at once by connectionPool.tcp.maxConnections
	connectFailures atomic.Int64 // failed connect attempts (each retry counts)
	idleTimeouts    atomic.Int64 // closed by timeout.idle
	bytesSent       atomic.Int64 // downstream to upstream
	bytesReceived   atomic.Int64 // upstream to downstream
}

// clusterL4Stats returns the L4 counters of s's cluster name, nil if none (compile's
// l4Stats option).
func (s *Snapshot) clusterL4Stats(name string) *l4Stats {
	if s == nil {
		return nil
	}
	if c := s.clusters[name]; c != nil {
		return c.l4
	}
	return nil
}

// L4View is the /clusters view of a cluster's L4 counters (Envoy's upstream_cx_*).
type L4View struct {
	Accepted        int64 `json:"accepted"`
	Active          int64 `json:"active"`
	Rejected        int64 `json:"rejected"`
	ConnectFailures int64 `json:"connectFailures"`
	IdleTimeouts    int64 `json:"idleTimeouts"`
	BytesSent       int64 `json:"bytesSent"`
	BytesReceived   int64 `json:"bytesReceived"`
}

// view returns the counters, or nil when the cluster never carried an L4 connection
// (an HTTP cluster's view stays as it was).
func (st *l4Stats) view() *L4View {
	if st.accepted.Load() == 0 && st.rejected.Load() == 0 {
		return nil
	}
	return &L4View{
		Accepted: st.accepted.Load(), Active: st.active.Load(), Rejected: st.rejected.Load(),
		ConnectFailures: st.connectFailures.Load(), IdleTimeouts: st.idleTimeouts.Load(),
		BytesSent: st.bytesSent.Load(), BytesReceived: st.bytesReceived.Load(),
	}
}

// l4Server holds the server-wide L4 counters: egress connections that matched no
// backend, and those forwarded to their original destination (ALLOW_ALL).
type l4Server struct {
	dropped     atomic.Int64 // closed: DROP_ALL, no original destination, or no target
	passthrough l4Stats
}

// EgressL4View is the /clusters view of egress L4 traffic outside any cluster.
type EgressL4View struct {
	// Dropped counts egress connections meshd closed because they matched no backend
	// and the egressFilter is DROP_ALL (or there was no original destination to go to).
	Dropped     int64   `json:"dropped"`
	Passthrough *L4View `json:"passthrough,omitempty"`
}

func (l *l4Server) view() EgressL4View {
	return EgressL4View{Dropped: l.dropped.Load(), Passthrough: l.passthrough.view()}
}

// sniffTimeout is Options.SniffTimeout with its default.
func (o *Options) sniffTimeout() time.Duration {
	if o.SniffTimeout > 0 {
		return o.SniffTimeout
	}
	return DefaultSniffTimeout
}

// originalDst returns the original destination of a redirected connection, or the
// zero AddrPort when the connection was not redirected (its destination is the
// listener itself) or it cannot be read. Options.OriginalDst replaces the kernel
// lookup in tests.
func (s *Server) originalDst(c net.Conn) netip.AddrPort {
	tcp, ok := c.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}
	}
	lookup := s.opts.OriginalDst
	if lookup == nil {
		lookup = intercept.OriginalDst
	}
	ap, err := lookup(tcp)
	if err != nil || !ap.IsValid() {
		return netip.AddrPort{}
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if la, ok := tcp.LocalAddr().(*net.TCPAddr); ok {
		if l := la.AddrPort(); l.Port() == ap.Port() && l.Addr().Unmap() == ap.Addr() {
			return netip.AddrPort{}
		}
	}
	return ap
}

// classifyConn decides how serveConn serves a new connection: L7 (protoHTTP1 or
// protoHTTP2) or L4 (protoTLS with sni, or protoOpaque), using the original
// destination read when the connection was accepted (tc.orig). Ingress uses the target
// listener's protocol: tcp is L4 without sniffing, anything else is HTTP (told apart from h2c by sniffH2). Egress
// connections that were not redirected are HTTP as well (meshd as HTTP_PROXY). Redirected
// egress connections are sniffed, except on ports that only tcp backends serve, where a
// server-first protocol must not wait for the sniff timeout. It runs on the
// connection's goroutine.
func (s *Server) classifyConn(tc *trackedConn, br *bufio.Reader, kind listenerKind) (protocol, []byte, error) {
	snap := s.snap.Load()
	if kind == kindIngress {
		port := int(tc.orig.Port())
		if port == 0 {
			port = snap.localNodePort
		}
		if svc := snap.Table.Ingress(port); svc != nil && svc.Protocol == config.ProtoTCP {
			return protoOpaque, nil, nil
		}
		isH2, err := sniffH2(br)
		if isH2 {
			return protoHTTP2, nil, err
		}
		return protoHTTP1, nil, err
	}
	if !tc.orig.IsValid() {
		// Not redirected: an app using meshd as its HTTP proxy (HTTP_PROXY). There is no
		// destination to relay opaque bytes to, so the HTTP server answers whatever comes.
		isH2, err := sniffH2(br)
		if isH2 {
			return protoHTTP2, nil, err
		}
		return protoHTTP1, nil, err
	}
	if tcpOnlyPort(snap, int(tc.orig.Port())) {
		return protoOpaque, nil, nil
	}
	// The timer's idle deadline is applied first, so that the trackedConn reads below
	// keep the shorter sniff deadline instead of replacing it.
	tc.timer.refresh(tc.Conn)
	timeout := s.opts.sniffTimeout()
	p, sni, err := sniff(br, func() { _ = tc.Conn.SetReadDeadline(time.Now().Add(timeout)) })
	tc.setIdle(s.opts.KeepAliveIdle) // the next Read or Write re-applies the idle deadline
	_ = tc.Conn.SetReadDeadline(noDeadline)
	return p, sni, err
}

// tcpOnlyPort reports whether port is served by at least one tcp backend and by no
// backend of another protocol.
func tcpOnlyPort(snap *Snapshot, port int) bool {
	tcp := false
	for _, svc := range snap.Table.Services() {
		if !slices.Contains(svc.Ports, port) {
			continue
		}
		if svc.Protocol != config.ProtoTCP {
			return false
		}
		tcp = true
	}
	return tcp
}

// egressByDst finds the backend service an egress connection or request was meant for
// from its original destination, when the name (Host, SNI) did not say. First a backend
// one of whose endpoints is exactly dst (the app resolved the service name and dialled
// the address); then, when byPort, the first backend (in the node's backends order)
// whose virtual router or provider node listens on dst's port. tcp selects tcp backends
// and their tcp routes; otherwise HTTP-family backends. Nil when nothing matches.
func egressByDst(snap *Snapshot, dst netip.AddrPort, tcp, byPort bool) *router.Service {
	var buf [64]byte
	addr := dst.AppendTo(buf[:0])
	port := int(dst.Port())
	for _, svc := range snap.Table.Services() {
		if (svc.Protocol == config.ProtoTCP) != tcp || svc.Protocol == "" {
			continue
		}
		for _, rt := range svc.Routes {
			if (rt.Kind == config.ProtoTCP) != tcp {
				continue
			}
			for _, t := range rt.Targets {
				if c := snap.clusters[t.Cluster]; c != nil && c.hasEndpoint(addr) {
					return svc
				}
			}
		}
	}
	if !byPort {
		return nil
	}
	for _, svc := range snap.Table.Services() {
		if (svc.Protocol == config.ProtoTCP) != tcp || svc.Protocol == "" || !slices.Contains(svc.Ports, port) {
			continue
		}
		if tcp && svc.MatchTCP(port) == nil {
			continue
		}
		return svc
	}
	return nil
}

// hasEndpoint reports whether addr ("ip:port", as netip.AddrPort formats it) is one
// of the cluster's current endpoints.
func (c *cluster) hasEndpoint(addr []byte) bool {
	c.poolsMu.Lock()
	defer c.poolsMu.Unlock()
	for p := range c.pools {
		if p.addr == string(addr) {
			return true
		}
	}
	return false
}

// l4Decision is where one L4 connection goes: a cluster picked by a route, or (egress
// ALLOW_ALL) straight to the original destination. Neither means close.
type l4Decision struct {
	route   *router.Route
	cluster *cluster
	direct  netip.AddrPort
	idle    time.Duration
	reason  string // why the connection is closed, for the debug log
}

// decideL4 routes an L4 connection. orig is its original destination (zero when not
// redirected), sni the TLS server name (empty when none). It never blocks.
func (s *Server) decideL4(snap *Snapshot, kind listenerKind, orig netip.AddrPort, sni string) l4Decision {
	port := int(orig.Port())
	var rt *router.Route
	if kind == kindIngress {
		if port == 0 {
			port = snap.localNodePort
		}
		rt = snap.Table.Ingress(port).MatchTCP(port)
		if rt == nil {
			return l4Decision{reason: "node " + snap.Node + " has no tcp listener on port " + portString(port)}
		}
	} else {
		if sni != "" {
			if svc := snap.Table.Egress(sni, port); svc != nil {
				if rt = svc.MatchTCP(port); rt == nil {
					// TLS passthrough to an HTTP service: the route a bare GET / would take.
					rt = svc.Match(&router.Request{Authority: sni, Method: "GET", Path: "/", Scheme: "https", Port: port})
				}
			}
		}
		if rt == nil && orig.IsValid() {
			rt = egressByDst(snap, orig, true, true).MatchTCP(port)
		}
		if rt == nil {
			switch {
			case !orig.IsValid():
				return l4Decision{reason: "no original destination (not redirected by iptables) and no backend named by SNI"}
			case !snap.egressAllowAll:
				return l4Decision{reason: orig.String() + " is not a backend of node " + snap.Node + " and the mesh egressFilter is DROP_ALL"}
			case s.isSelf(orig.Addr().String(), port):
				return l4Decision{reason: orig.String() + " is meshd itself"}
			}
			return l4Decision{direct: orig, idle: defaultL4Idle}
		}
	}
	t := rt.PickTarget(randUint64())
	if t == nil {
		return l4Decision{reason: "route " + rt.Name + " has no target with weight > 0"}
	}
	c := snap.clusters[t.Cluster]
	if c == nil {
		return l4Decision{reason: "cluster " + t.Cluster + " is not built"}
	}
	idle := rt.IdleTimeout
	if idle == 0 {
		idle = listenerTCPIdle(c.ref.Listener)
	}
	if idle == 0 {
		idle = defaultL4Idle
	}
	return l4Decision{route: rt, cluster: c, idle: idle}
}

func listenerTCPIdle(l *config.Listener) time.Duration {
	if l == nil || l.Timeout == nil || l.Timeout.TCP == nil {
		return 0
	}
	return l.Timeout.TCP.Idle.D()
}

func tcpMaxConnections(l *config.Listener) int64 {
	if l == nil || l.ConnectionPool == nil || l.ConnectionPool.TCP == nil {
		return 0
	}
	return int64(l.ConnectionPool.TCP.MaxConnections)
}

// serveL4 relays an L4 connection: it routes it, enforces the cluster's
// connectionPool.tcp.maxConnections, connects (retrying connect failures on other
// endpoints), sends the bytes the sniffer buffered, and copies both ways until both
// sides closed, one failed, or the idle timeout passed. It owns br and returns it to
// the pool; serveConn closes tc afterwards.
func (s *Server) serveL4(tc *trackedConn, br *bufio.Reader, kind listenerKind, sni []byte) {
	// The drain wake-up (CloseRead) would look like the app's half-close: an L4
	// connection is only closed at the end of the drain.
	tc.state.Store(connActive)
	tc.setIdle(0)
	snap := s.snap.Load()
	d := s.decideL4(snap, kind, tc.orig, str(sni))
	if d.route == nil && !d.direct.IsValid() {
		putReader(br)
		if kind == kindEgress {
			s.l4.dropped.Add(1)
		}
		s.log.Debug("l4 connection closed", "listener", kind.String(), "remote", tc.RemoteAddr().String(), "reason", d.reason)
		return
	}
	st := &s.l4.passthrough
	if d.cluster != nil {
		st = d.cluster.l4
	}
	active := st.active.Add(1)
	defer st.active.Add(-1)
	if limit := tcpMaxConnections(listenerOf(d.cluster)); limit > 0 && active > limit {
		st.rejected.Add(1)
		putReader(br)
		s.log.Debug("l4 connection rejected", "cluster", d.cluster.ref.Name, "maxConnections", limit)
		return
	}
	st.accepted.Add(1)

	start := time.Now()
	up, res, err := s.dialL4(d, st)
	if err != nil {
		putReader(br)
		s.log.Debug("l4 connect failed", "listener", kind.String(), "err", err)
		return
	}
	defer up.Close()
	// Flush what the sniffer peeked, then hand the raw sockets to the copy so that
	// TCPConn.ReadFrom can splice.
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		if _, err := up.Write(b); err != nil {
			putReader(br)
			res.Done(balancer.DoneInfo{Err: err, Latency: time.Since(start)})
			return
		}
		st.bytesSent.Add(int64(n))
	}
	putReader(br)
	_ = tc.Conn.SetDeadline(noDeadline)
	err = relay(tc.Conn, up, d.idle, st)
	if errors.Is(err, errL4Idle) {
		err = nil
	}
	res.Done(balancer.DoneInfo{Err: err, Latency: time.Since(start)})
}

func listenerOf(c *cluster) *config.Listener {
	if c == nil {
		return nil
	}
	return c.ref.Listener
}

// dialL4 connects to the decision's destination. For a cluster a failed connect is
// retried up to l4ConnectRetries times, each on another endpoint when there is one.
// The returned Result (zero for a direct connection) must be Done by the caller.
func (s *Server) dialL4(d l4Decision, st *l4Stats) (net.Conn, balancer.Result, error) {
	ctx := context.Background()
	if d.cluster == nil {
		dctx, cancel := context.WithTimeout(ctx, s.opts.ConnectTimeout)
		defer cancel()
		conn, err := s.selfGuardDialer().DialContext(dctx, "tcp", d.direct.String())
		if err != nil {
			st.connectFailures.Add(1)
			return nil, balancer.Result{}, fmt.Errorf("connect to original destination %s: %w", d.direct, err)
		}
		return conn, balancer.Result{}, nil
	}
	var (
		avoid   *balancer.Endpoint
		lastErr error
	)
	for range l4ConnectRetries + 1 {
		res, err := pickEndpoint(d.cluster, avoid)
		if err != nil {
			return nil, res, err
		}
		conn, err := d.cluster.dial(ctx, res.Endpoint.Address)
		if err == nil {
			return conn, res, nil
		}
		res.Done(balancer.DoneInfo{Err: err})
		st.connectFailures.Add(1)
		lastErr = err
		if d.cluster.bal.Len() < 2 {
			break // no other endpoint: retrying the refused one at once would fail alike
		}
		avoid = res.Endpoint
	}
	return nil, balancer.Result{}, lastErr
}

var errL4Idle = errors.New("l4 connection idle timeout")

// relay copies down→up and up→down at once, one direction on a new goroutine that it
// joins before returning. A direction that reaches EOF half-closes its destination
// (CloseWrite) and the other keeps going; an error in either closes both connections.
// With both connections *net.TCPConn, ReadFrom splices in the kernel. The idle timeout
// is enforced with read deadlines moved at most once per tick (≥1 s unless idle/2 is
// shorter): a direction that wakes finds whether anything moved either way since. A busy
// direction records its progress only when its copy returns at a tick, so the last
// record can be up to a tick old; the tick is at most idle/2 so that a silent direction
// never mistakes that lag for idleness (a connection idle both ways closes after
// between idle and idle+tick).
func relay(down, up net.Conn, idle time.Duration, st *l4Stats) error {
	r := &relayState{idle: idle, tick: min(idle/2, max(time.Second, idle/8))}
	r.last.Store(time.Now().UnixNano())
	var wg sync.WaitGroup
	var upErr error
	wg.Go(func() {
		upErr = r.pump(up, down, &st.bytesReceived)
		if upErr != nil {
			_ = down.Close()
			_ = up.Close()
		}
	})
	downErr := r.pump(down, up, &st.bytesSent)
	if downErr != nil {
		_ = down.Close()
		_ = up.Close()
	}
	wg.Wait()
	err := downErr
	if err == nil {
		err = upErr
	}
	if errors.Is(downErr, errL4Idle) || errors.Is(upErr, errL4Idle) {
		st.idleTimeouts.Add(1)
		return errL4Idle
	}
	if r.closing.Load() {
		return nil // the other direction failed first; its error is the one that counts
	}
	return err
}

type relayState struct {
	idle, tick time.Duration
	last       atomic.Int64 // unix nanos of the last observed progress, either way
	closing    atomic.Bool
}

// pump copies src to dst until EOF (nil, after CloseWrite on dst), the idle timeout
// (errL4Idle) or an error.
func (r *relayState) pump(src, dst net.Conn, n *atomic.Int64) error {
	for {
		_ = src.SetReadDeadline(time.Now().Add(r.tick))
		w, err := readFrom(dst, src)
		now := time.Now().UnixNano()
		if w > 0 {
			n.Add(w)
			r.last.Store(now)
		}
		if err == nil {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
			return nil
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if time.Duration(now-r.last.Load()) >= r.idle {
				return errL4Idle
			}
			continue
		}
		if r.closing.Swap(true) {
			return nil
		}
		return err
	}
}

// readFrom copies src to dst until EOF (nil) or an error. For *net.TCPConn on Linux,
// ReadFrom splices through a kernel pipe without copying into user space.
func readFrom(dst, src net.Conn) (int64, error) {
	if rf, ok := dst.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(dst, src)
}

// l7ByDst finds the backend an HTTP request was meant for when its Host named none:
// one of whose endpoints is orig; or, when Host is an IP literal or absent and the
// egressFilter is DROP_ALL, the first HTTP backend listening on orig's port. Under
// ALLOW_ALL such a request keeps going to its original destination instead, so that
// traffic to the outside world is never captured by a backend that shares its port.
func l7ByDst(snap *Snapshot, host string, orig netip.AddrPort) *router.Service {
	byPort := false
	if !snap.egressAllowAll {
		_, err := netip.ParseAddr(host)
		byPort = host == "" || err == nil
	}
	return egressByDst(snap, orig, false, byPort)
}

type origDstKey struct{}

// withOrigDst carries an HTTP/2 connection's original destination into its requests'
// contexts (the net/http server's ConnContext).
func withOrigDst(ctx context.Context, c net.Conn) context.Context {
	if bc, ok := c.(*bufferedConn); ok && bc.orig.IsValid() {
		return context.WithValue(ctx, origDstKey{}, bc.orig)
	}
	return ctx
}

// origDst is the original destination withOrigDst stored, or the zero AddrPort.
func origDst(ctx context.Context) netip.AddrPort {
	ap, _ := ctx.Value(origDstKey{}).(netip.AddrPort)
	return ap
}

// startEgress6 binds the IPv6 loopback egress listener that ip6tables REDIRECT targets
// ([::1]:<egress port>), when Options.EgressAddr6 asks for it or by default when the
// egress listener is on 127.0.0.1. A bind failure is logged: without IPv6 there is no
// IPv6 traffic to catch. Start calls it before any accept loop runs.
func (s *Server) startEgress6() {
	addr := s.opts.EgressAddr6
	if addr == "off" {
		return
	}
	if addr == "" {
		ta, ok := s.egress.Addr().(*net.TCPAddr)
		if !ok || !ta.IP.Equal(net.IPv4(127, 0, 0, 1)) {
			return
		}
		addr = net.JoinHostPort("::1", strconv.Itoa(ta.Port))
	}
	ln, err := net.Listen("tcp6", addr)
	if err != nil {
		s.log.Warn("IPv6 egress listener not bound; IPv6 connections redirected by ip6tables will fail", "addr", addr, "err", err)
		return
	}
	s.egress6 = ln
	s.loopWG.Add(1)
	go s.acceptLoop(ln, kindEgress)
}

// EgressAddr6 reports the bound IPv6 egress address, "" when there is none.
func (s *Server) EgressAddr6() string { return addrString(s.egress6) }
