// Package l4 is the L4 front end: opaque TCP and TLS passthrough. A connection is routed
// by its original destination (or the TLS ClientHello's SNI) to a cluster, the
// cluster's connectionPool.tcp limit applies, the connect is retried on other endpoints,
// and bytes are copied both ways (spliced by the kernel; through user space when either
// side is TLS, the listener's that meshd terminated or the cluster's that it originates,
// whose half-close is a close_notify) with half-closes and an idle timeout.
package l4

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
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
	"github.com/meshd/meshd/proxy/forward"
	"github.com/meshd/meshd/proxy/listen"
	"github.com/meshd/meshd/proxy/state"
	"github.com/meshd/meshd/proxy/upstream"
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

// Server serves L4 connections. It holds the server-wide L4 counters: egress
// connections that matched no backend, and those forwarded to their original
// destination (ALLOW_ALL).
type Server struct {
	Env *forward.Env
	// ConnectTimeout bounds a connect to an original destination (ALLOW_ALL).
	ConnectTimeout time.Duration
	// Dialer connects to original destinations; it must refuse meshd's own listeners.
	Dialer *net.Dialer

	dropped     atomic.Int64 // closed: DROP_ALL, no original destination, or no target
	passthrough upstream.L4Stats
}

// EgressL4View is the /clusters view of egress L4 traffic outside any cluster.
type EgressL4View struct {
	// Dropped counts egress connections meshd closed because they matched no backend
	// and the egressFilter is DROP_ALL (or there was no original destination to go to).
	Dropped     int64            `json:"dropped"`
	Passthrough *upstream.L4View `json:"passthrough,omitempty"`
}

// View is the /clusters view of the server-wide counters.
func (l *Server) View() EgressL4View {
	return EgressL4View{Dropped: l.dropped.Load(), Passthrough: l.passthrough.View()}
}

// TCPOnlyPort reports whether port is served by at least one tcp backend and by no
// backend of another protocol.
func TCPOnlyPort(snap *state.Snapshot, port int) bool {
	tcp := false
	for _, svc := range snap.Table().Services() {
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

// l4Decision is where one L4 connection goes: a cluster picked by a route, or (egress
// ALLOW_ALL) straight to the original destination. Neither means close.
type l4Decision struct {
	route   *router.Route
	cluster *upstream.Cluster
	direct  netip.AddrPort
	idle    time.Duration
	reason  string // why the connection is closed, for the debug log
}

// decideL4 routes an L4 connection. orig is its original destination (zero when not
// redirected), sni the TLS server name (empty when none). It never blocks.
func (s *Server) decideL4(snap *state.Snapshot, kind forward.Kind, orig netip.AddrPort, sni string) l4Decision {
	port := int(orig.Port())
	var rt *router.Route
	if kind == forward.Ingress {
		port = snap.IngressPort(port)
		rt = snap.Table().Ingress(port).MatchTCP(port)
		if rt == nil {
			return l4Decision{reason: "node " + snap.Node() + " has no tcp listener on port " + strconv.Itoa(port)}
		}
	} else {
		if sni != "" {
			if svc := snap.Table().Egress(sni, port); svc != nil {
				if rt = svc.MatchTCP(port); rt == nil {
					// TLS passthrough to an HTTP service: the route a bare GET / would take.
					rt = svc.Match(&router.Request{Authority: sni, Method: "GET", Path: "/", Scheme: "https", Port: port})
				}
			}
		}
		if rt == nil && orig.IsValid() {
			rt = forward.EgressByDst(snap, orig, true, true).MatchTCP(port)
		}
		if rt == nil {
			switch {
			case !orig.IsValid():
				return l4Decision{reason: "no original destination (not redirected by iptables) and no backend named by SNI"}
			case !snap.EgressAllowAll():
				return l4Decision{reason: orig.String() + " is not a backend of node " + snap.Node() + " and the mesh egressFilter is DROP_ALL"}
			case s.Env.Passthrough.IsSelf(orig.Addr().String(), port):
				return l4Decision{reason: orig.String() + " is meshd itself"}
			}
			return l4Decision{direct: orig, idle: defaultL4Idle}
		}
	}
	t := rt.PickTarget(rand.Uint64())
	if t == nil {
		return l4Decision{reason: "route " + rt.Name + " has no target with weight > 0"}
	}
	c := snap.Cluster(t.Cluster)
	if c == nil {
		return l4Decision{reason: "cluster " + t.Cluster + " is not built"}
	}
	idle := rt.IdleTimeout
	if idle == 0 {
		idle = listenerTCPIdle(c.Listener())
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

// Serve relays an L4 connection: it routes it, enforces the cluster's
// connectionPool.tcp.maxConnections, connects (retrying connect failures on other
// endpoints), sends the bytes the sniffer buffered, and copies both ways until both
// sides closed, one failed, or the idle timeout passed. It owns br and returns it to
// the pool; the caller closes tc afterwards.
func (s *Server) Serve(tc *listen.Conn, br *bufio.Reader, kind forward.Kind, sni []byte) {
	// The drain wake-up (CloseRead) would look like the app's half-close: an L4
	// connection is only closed at the end of the drain.
	tc.SetBusy(true)
	tc.SetIdleTimeout(0)
	snap := s.Env.State.Load()
	if kind == forward.Ingress && !s.Env.AuthorizeConn(snap, snap.IngressPort(int(tc.Orig.Port())), tc.Peer) {
		// The listener's authorization does not allow the caller: closed before a byte
		// reaches the application.
		listen.PutReader(br)
		return
	}
	d := s.decideL4(snap, kind, tc.Orig, forward.Str(sni))
	if d.route == nil && !d.direct.IsValid() {
		listen.PutReader(br)
		if kind == forward.Egress {
			s.dropped.Add(1)
		}
		s.Env.Log.Debug("l4 connection closed", "listener", kind.String(), "remote", tc.RemoteAddr().String(), "reason", d.reason)
		return
	}
	st := &s.passthrough
	if d.cluster != nil {
		st = d.cluster.L4()
	}
	active := st.Active.Add(1)
	defer st.Active.Add(-1)
	if limit := tcpMaxConnections(listenerOf(d.cluster)); limit > 0 && active > limit {
		st.Rejected.Add(1)
		listen.PutReader(br)
		s.Env.Log.Debug("l4 connection rejected", "cluster", d.cluster.Name(), "maxConnections", limit)
		return
	}
	st.Accepted.Add(1)

	start := time.Now()
	var info balancer.PickInfo
	if d.cluster != nil && d.cluster.Balancer().HashOn() != nil {
		// Validation lets a node with tcp listeners hash on sourceIp only.
		if ta, ok := tc.RemoteAddr().(*net.TCPAddr); ok {
			info.Hash, info.Hashed = balancer.Key(ta.IP.String()), true
		}
	}
	up, res, err := s.dialL4(d, info, st)
	if err != nil {
		listen.PutReader(br)
		s.Env.Log.Debug("l4 connect failed", "listener", kind.String(), "err", err)
		return
	}
	defer up.Close()
	// Flush what the sniffer peeked, then hand the raw sockets to the copy so that
	// TCPConn.ReadFrom can splice.
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		if _, err := up.Write(b); err != nil {
			listen.PutReader(br)
			res.Done(balancer.DoneInfo{Err: err, Latency: time.Since(start)})
			return
		}
		st.BytesSent.Add(int64(n))
	}
	listen.PutReader(br)
	_ = tc.Conn.SetDeadline(time.Time{})
	err = relay(tc.Conn, up, d.idle, st)
	if errors.Is(err, errL4Idle) {
		err = nil
	}
	res.Done(balancer.DoneInfo{Err: err, Latency: time.Since(start)})
}

func listenerOf(c *upstream.Cluster) *config.Listener {
	if c == nil {
		return nil
	}
	return c.Listener()
}

// dialL4 connects to the decision's destination. For a cluster a failed connect is
// retried up to l4ConnectRetries times, each on another endpoint when there is one.
// The returned Result (zero for a direct connection) must be Done by the caller.
func (s *Server) dialL4(d l4Decision, info balancer.PickInfo, st *upstream.L4Stats) (net.Conn, balancer.Result, error) {
	ctx := context.Background()
	if d.cluster == nil {
		dctx, cancel := context.WithTimeout(ctx, s.ConnectTimeout)
		defer cancel()
		conn, err := s.Dialer.DialContext(dctx, "tcp", d.direct.String())
		if err != nil {
			st.ConnectFailures.Add(1)
			return nil, balancer.Result{}, fmt.Errorf("connect to original destination %s: %w", d.direct, err)
		}
		return conn, balancer.Result{}, nil
	}
	var (
		avoid   *balancer.Endpoint
		lastErr error
	)
	for range l4ConnectRetries + 1 {
		info.Avoid = avoid
		res, err := d.cluster.PickFor(info)
		if err != nil {
			return nil, res, err
		}
		conn, err := d.cluster.Dial(ctx, res.Endpoint.Address)
		if err == nil {
			return conn, res, nil
		}
		res.Done(balancer.DoneInfo{Err: err})
		st.ConnectFailures.Add(1)
		lastErr = err
		if d.cluster.Balancer().Len() < 2 {
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
func relay(down, up net.Conn, idle time.Duration, st *upstream.L4Stats) error {
	r := &relayState{idle: idle, tick: min(idle/2, max(time.Second, idle/8))}
	start := time.Now().UnixNano()
	r.last.Store(start)
	r.since[0].Store(start)
	r.since[1].Store(start)
	// The watchdog: a direction blocked writing to a peer that reads nothing never
	// wakes at its read deadline, so the pumps alone cannot see a connection stalled
	// that way (both ways, neither wakes at all). It closes both connections, which
	// ends the blocked writes, once nothing moved for the idle time.
	var wd atomic.Pointer[time.Timer] // the callback re-arms the timer it runs from
	t := time.AfterFunc(time.Duration(math.MaxInt64), func() {
		if r.done.Load() {
			return
		}
		if r.stalled(time.Now().UnixNano(), [2]net.Conn{down, up}) {
			r.idleClosed.Store(true)
			_ = down.Close()
			_ = up.Close()
			return
		}
		wd.Load().Reset(r.tick)
	})
	wd.Store(t)
	t.Reset(r.tick) // armed once stored: the callback finds it
	defer func() {
		r.done.Store(true)
		t.Stop()
	}()
	var wg sync.WaitGroup
	var upErr error
	wg.Go(func() {
		upErr = r.pump(up, down, &st.BytesReceived, 0)
		if upErr != nil {
			_ = down.Close()
			_ = up.Close()
		}
	})
	downErr := r.pump(down, up, &st.BytesSent, 1)
	if downErr != nil {
		_ = down.Close()
		_ = up.Close()
	}
	wg.Wait()
	err := downErr
	if err == nil {
		err = upErr
	}
	if errors.Is(downErr, errL4Idle) || errors.Is(upErr, errL4Idle) || r.idleClosed.Load() {
		st.IdleTimeouts.Add(1)
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
	// quiet[d] says direction d's last wake moved nothing (or it has ended). A
	// direction's progress is seen only when its read returns, at its tick: a busy
	// direction whose goroutine was not scheduled for a while (a loaded machine) has
	// not reported its bytes yet, and the silent one must not take that for idleness.
	quiet [2]atomic.Bool
	// since[d] is when direction d's current copy began (unix nanos). A copy returns at
	// its read deadline, a tick, unless its goroutine is starved or it is blocked
	// writing to a peer that reads nothing; the send queue tells the two apart.
	since [2]atomic.Int64
	// done ends the watchdog; idleClosed says it closed the connections.
	done, idleClosed atomic.Bool
	// The watchdog's own (one callback at a time): the bytes direction d's destination
	// had acknowledged at its last look, and since when that has stood still with data
	// queued (0: not so).
	acked   [2]uint64
	stillAt [2]int64
}

// stalled reports whether nothing moved either way for the idle time: each direction
// quiet at its last wake, or in one copy for longer than idle+tick with data queued
// for its destination and nothing of it acknowledged for the idle time (the peer reads
// nothing). dst[d] is direction d's destination (0: up→down, 1: down→up).
func (r *relayState) stalled(now int64, dst [2]net.Conn) bool {
	if time.Duration(now-r.last.Load()) < r.idle {
		return false
	}
	for d := range 2 {
		if r.quiet[d].Load() {
			continue
		}
		if time.Duration(now-r.since[d].Load()) < r.idle+r.tick {
			return false // its copy returns soon, with its progress
		}
		queued, acked, ok := sendState(dst[d])
		if !ok || queued == 0 {
			r.stillAt[d] = 0 // starved, not blocked: the peer has taken what was sent
			return false
		}
		if acked != r.acked[d] || r.stillAt[d] == 0 {
			r.acked[d], r.stillAt[d] = acked, now // the peer reads, if slowly
			return false
		}
		if time.Duration(now-r.stillAt[d]) < r.idle {
			return false
		}
	}
	return true
}

// pump copies src to dst until EOF (nil, after CloseWrite on dst), the idle timeout
// (errL4Idle) or an error.
func (r *relayState) pump(src, dst net.Conn, n *atomic.Int64, dir int) error {
	for {
		begin := time.Now()
		r.since[dir].Store(begin.UnixNano())
		_ = src.SetReadDeadline(begin.Add(r.tick))
		w, err := readFrom(dst, src)
		now := time.Now().UnixNano()
		if w > 0 {
			n.Add(w)
			r.last.Store(now)
		}
		r.quiet[dir].Store(w == 0)
		if err == nil {
			r.quiet[dir].Store(true) // this direction is over: it moves nothing more
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
			return nil
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// Idle only when neither direction has moved anything for the idle time and
			// the other one's last wake found nothing either.
			if w == 0 && time.Duration(now-r.last.Load()) >= r.idle && r.quiet[1-dir].Load() {
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
