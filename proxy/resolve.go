package proxy

import (
	"bufio"
	"bytes"
	"container/list"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/meshd/meshd/balancer"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/router"
)

// http2Preface is the client connection preface (RFC 9113 §3.4).
var http2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// serveConn sniffs the first bytes and hands the connection to the HTTP/1.1 or the
// HTTP/2 (prior knowledge) server. It owns tc and closes it.
func (s *Server) serveConn(tc *trackedConn, kind listenerKind) {
	defer s.untrack(tc)
	defer tc.Close()
	if t, ok := tc.Conn.(*net.TCPConn); ok {
		_ = t.SetNoDelay(true)
	}
	tc.setIdle(s.opts.KeepAliveIdle)
	br := getReader(tc)
	proto, sni, err := s.classifyConn(tc, br, kind)
	if err != nil {
		putReader(br)
		return
	}
	if proto == protoTLS || proto == protoOpaque {
		s.serveL4(tc, br, kind, sni)
		return
	}
	if proto == protoHTTP2 {
		// The reader is not pooled afterwards: net/http's HTTP/2 frame reader may still be
		// inside a Read on it after the connection is closed.
		// The HTTP/2 server drains with GOAWAY; the idle wake-up must not touch it.
		tc.state.Store(connActive)
		tc.setIdle(0)
		_ = tc.Conn.SetDeadline(noDeadline)
		s.serveH2(tc, br, kind)
		return
	}
	s.serveH1(tc, br, kind)
	// Close before pooling: no read of tc through br can be pending afterwards (an
	// HTTP/2 upstream's body writer stops reading the request body first, h1Body.abort).
	_ = tc.Close()
	putReader(br)
}

// sniffH2 reads just enough to tell the HTTP/2 preface from an HTTP/1.x request,
// without waiting for bytes a short HTTP/1.0 request would never send.
func sniffH2(br *bufio.Reader) (bool, error) {
	n := 1
	for {
		b, err := br.Peek(n)
		if len(b) > 0 && !bytes.HasPrefix(http2Preface, b[:min(len(b), len(http2Preface))]) {
			return false, nil
		}
		if len(b) >= len(http2Preface) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		// Look at everything already buffered but never ask for more than the preface:
		// Peek beyond what the client sent blocks until it sends more, and a complete
		// short request (POST/PUT/PATCH share the preface's leading 'P') sends nothing more.
		n = min(max(br.Buffered(), n+1), len(http2Preface))
	}
}

// decision is the outcome of routing one request.
type decision struct {
	route   *router.Route
	cluster *cluster
	// on failure:
	status int
	code   string
	msg    string
}

// timeouts returns the exchange's absolute timeout (route perRequest, else the target
// listener's; 0 = none) and its idle timeout (route idle, else the listener's, else
// streamIdle).
func (d decision) timeouts(streamIdle time.Duration) (perRequest, idle time.Duration) {
	perRequest, idle = d.route.PerRequestTimeout, d.route.IdleTimeout
	if perRequest == 0 {
		perRequest = d.cluster.perRequest
	}
	if idle == 0 {
		idle = d.cluster.idle
	}
	if idle == 0 {
		idle = streamIdle
	}
	return perRequest, idle
}

// resolve routes one request on snap. localPort is the ingress port the connection was
// addressed to (0 when unknown); orig is the connection's original destination (zero
// when not redirected). Egress routes by Host first; a Host that names no backend falls
// back to orig (l7ByDst), and ALLOW_ALL forwards to orig rather than to the Host.
func (s *Server) resolve(snap *Snapshot, kind listenerKind, rr *router.Request, localPort int, orig netip.AddrPort) decision {
	var svc *router.Service
	if kind == kindIngress {
		if localPort == 0 {
			localPort = snap.localNodePort
		}
		svc = snap.Table.Ingress(localPort)
		if svc == nil {
			return decision{status: 404, code: codeNoListener,
				msg: "meshd: node " + snap.Node + " has no listener on port " + portString(localPort) + "\n"}
		}
	} else {
		host, port := splitHostPort(rr.Authority)
		if port != 0 {
			rr.Port = port
		} else if rr.Port == 0 {
			if rr.Port = int(orig.Port()); rr.Port == 0 {
				rr.Port = 80
			}
		}
		svc = snap.Table.Egress(host, rr.Port)
		if svc == nil && orig.IsValid() {
			svc = l7ByDst(snap, host, orig)
		}
		if svc == nil {
			if snap.egressAllowAll && orig.IsValid() {
				return s.passthroughDecision(orig.Addr().String(), int(orig.Port()))
			}
			if snap.egressAllowAll && host != "" {
				return s.passthroughDecision(host, rr.Port)
			}
			return decision{status: 404, code: codeEgressDenied,
				msg: "meshd: " + host + " is not a backend of node " + snap.Node + " and the mesh egressFilter is DROP_ALL\n"}
		}
	}
	rt := svc.Match(rr)
	if rt == nil {
		return decision{status: 404, code: codeNoRoute,
			msg: "meshd: no route matched " + rr.Method + " " + rr.Path + " in service " + svc.Name + "\n"}
	}
	t := rt.PickTarget(randUint64())
	if t == nil {
		return decision{status: 503, code: codeNoEndpoint, msg: "meshd: route " + rt.Name + " has no target with weight > 0\n"}
	}
	c := snap.clusters[t.Cluster]
	if c == nil {
		return decision{status: 503, code: codeNoEndpoint, msg: "meshd: cluster " + t.Cluster + " is not built\n"}
	}
	return decision{route: rt, cluster: c}
}

// passthroughDecision forwards to a destination outside the mesh (egressFilter
// ALLOW_ALL). Each host:port gets a small cluster of its own so keep-alive works.
func (s *Server) passthroughDecision(host string, port int) decision {
	addr := net.JoinHostPort(host, portString(port))
	if s.isSelf(host, port) {
		return decision{status: 508, code: codeLoop, msg: "meshd: " + addr + " is meshd itself\n"}
	}
	c := s.passthrough.get(addr, func() *cluster {
		opts := s.compileOptions()
		opts.dialer = s.selfGuardDialer()
		c := newCluster(router.ClusterRef{Name: "passthrough:" + addr, Protocol: "http"}, opts)
		c.bal.Update([]discovery.Endpoint{{Address: addr, Weight: 1}})
		return c
	})
	return decision{route: passthroughRoute, cluster: c}
}

// maxPassthroughClusters bounds the passthrough clusters kept for keep-alive.
const maxPassthroughClusters = 1024

// passCache holds the passthrough clusters, one per destination host:port, as a bounded
// LRU: the least recently used one is closed when a new destination would exceed max
// (its idle connections close now, busy ones when their request ends), so the number
// of upstream sockets stays bounded however many destinations the app talks to.
// The zero value is ready (max 0 means maxPassthroughClusters); safe for concurrent use.
type passCache struct {
	mu  sync.Mutex
	max int
	m   map[string]*list.Element // of *passEntry
	lru list.List                // front: most recently used
}

type passEntry struct {
	addr string
	c    *cluster
}

// get returns addr's cluster, building it with build when absent.
func (p *passCache) get(addr string, build func() *cluster) *cluster {
	p.mu.Lock()
	if e, ok := p.m[addr]; ok {
		p.lru.MoveToFront(e)
		c := e.Value.(*passEntry).c
		p.mu.Unlock()
		return c
	}
	if p.m == nil {
		p.m = make(map[string]*list.Element)
	}
	limit := p.max
	if limit <= 0 {
		limit = maxPassthroughClusters
	}
	c := build()
	p.m[addr] = p.lru.PushFront(&passEntry{addr: addr, c: c})
	var evicted *cluster
	if p.lru.Len() > limit {
		old := p.lru.Remove(p.lru.Back()).(*passEntry)
		delete(p.m, old.addr)
		evicted = old.c
	}
	p.mu.Unlock()
	if evicted != nil {
		evicted.close()
	}
	return c
}

// clusters returns the clusters held now.
func (p *passCache) clusters() []*cluster {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*cluster, 0, p.lru.Len())
	for e := p.lru.Front(); e != nil; e = e.Next() {
		out = append(out, e.Value.(*passEntry).c)
	}
	return out
}

// closeAll closes and forgets every cluster (Shutdown).
func (p *passCache) closeAll() {
	p.mu.Lock()
	cs := make([]*cluster, 0, p.lru.Len())
	for e := p.lru.Front(); e != nil; e = e.Next() {
		cs = append(cs, e.Value.(*passEntry).c)
	}
	p.lru.Init()
	p.m = nil
	p.mu.Unlock()
	for _, c := range cs {
		c.close()
	}
}

// sweepIdle closes idle upstream connections older than maxAge at now, in the clusters
// of the snapshot in force and the passthrough ones; the idle reaper calls it.
func (s *Server) sweepIdle(now time.Time, maxAge time.Duration) {
	if snap := s.snap.Load(); snap != nil {
		for _, c := range snap.clusters {
			c.reapIdle(now, maxAge)
		}
	}
	for _, c := range s.passthrough.clusters() {
		c.reapIdle(now, maxAge)
	}
}

var passthroughRoute = &router.Route{Name: "passthrough", Service: "passthrough", Kind: "http"}

// isSelf reports whether host:port is one of meshd's own listeners, which an
// ALLOW_ALL passthrough must never connect to (it would loop until file descriptors run out).
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

// errSelfLoop is the dial error for a passthrough destination that resolved to one of
// meshd's own listeners.
var errSelfLoop = errors.New("destination is one of meshd's own listeners")

// selfGuardDialer is s's dialer with a Control hook that refuses to connect to any of
// meshd's own listener addresses, checked on the address the name resolved to: names
// isSelf cannot judge (any name that resolves to meshd) would otherwise loop back into
// meshd, one connection per hop, until file descriptors run out. The refusal surfaces as
// errSelfLoop, answered 508 (replyStatus).
func (s *Server) selfGuardDialer() *net.Dialer {
	d := *s.dialer
	d.Control = func(_, address string, _ syscall.RawConn) error {
		dst, err := netip.ParseAddrPort(address)
		if err != nil {
			return nil
		}
		if isOwnAddr(s.listenerAddrs(), dst, localAddrs) {
			return fmt.Errorf("%s: %w", address, errSelfLoop)
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

// replyStatus is the status and x-meshd-error code of a failed upstream exchange:
// classify's, except that a refused self-loop is 508 loop_detected.
func replyStatus(err error) (int, string) {
	if errors.Is(err, errSelfLoop) {
		return 508, codeLoop
	}
	return classify(err)
}

func pickEndpoint(c *cluster, avoid *balancer.Endpoint) (balancer.Result, error) {
	res, err := c.bal.Pick(balancer.PickInfo{Avoid: avoid})
	if err != nil {
		return res, &upstreamError{kind: errNoEndpoint, err: err}
	}
	return res, nil
}
