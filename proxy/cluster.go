package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/balancer"
	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/internal/h1"
	"github.com/meshd/meshd/resilience"
	"github.com/meshd/meshd/router"
)

// Upstream I/O buffer sizes. 16 KiB each holds a typical request or response head and a
// small body in one read, and keeps a pooled connection at ~32 KiB of buffers (Envoy's
// per-connection guidance, ANCHORS.md).
const (
	upstreamReadBuf  = 16 << 10
	upstreamWriteBuf = 16 << 10
	// maxIdlePerEndpoint bounds the idle keep-alive connections kept per endpoint.
	maxIdlePerEndpoint = 64
	// maxIdleAge closes pooled connections that sat unused this long: servers commonly
	// time keep-alive connections out after 60-120 s, and reusing one the server is
	// closing costs a failed exchange.
	maxIdleAge = 50 * time.Second
)

var errOverflow = errors.New("upstream connection pool full")

// cluster is the proxy's runtime view of one upstream cluster: its balancer, its
// connection limits, and (hung on each balancer endpoint) the keep-alive pools.
type cluster struct {
	ref router.ClusterRef
	bal *balancer.Cluster
	h2  bool // upstream speaks HTTP/2 (listener protocol http2 or grpc)

	dialer         *net.Dialer
	connectTimeout time.Duration

	// Listener timeouts of the target node; a route's own timeout takes precedence.
	perRequest time.Duration
	idle       time.Duration
	streamIdle time.Duration // used when idle is not configured

	// HTTP/1.1 limits (connectionPool.http): slots bounds concurrently used upstream
	// connections; nil means unlimited. maxPending bounds requests waiting for a slot.
	slots      chan struct{}
	maxPending int64
	pending    atomic.Int64
	// HTTP/2 limit (connectionPool.http2/grpc maxRequests); nil means unlimited.
	streams chan struct{}

	openConns atomic.Int64
	l4        *l4Stats // L4 connections (l4.go); carried to a successor of the same name
	closed    atomic.Bool

	poolsMu sync.Mutex
	pools   map[*endpointPool]struct{} // every endpoint's pool, for close

	rt http.RoundTripper // net/http path (h2 upstreams, and h2 downstream to h1 upstreams)

	// Resilience: every decision is counted in counters (kept by cluster name across
	// reloads). budget always exists; outlier, breaker and health are nil when the
	// target listener does not configure them.
	clock      resilience.Clock
	log        *slog.Logger
	counters   *resilience.Counters
	budget     *resilience.RetryBudget
	outlier    *resilience.OutlierDetector
	sweepEvery time.Duration
	breaker    *resilience.Breaker
	health     *healthChecker
	// The control goroutine (outlier sweeps, health checks) exits when stop closes;
	// close waits for it.
	stop      chan struct{}
	controlWG sync.WaitGroup
}

func newCluster(ref router.ClusterRef, opts compileOptions) *cluster {
	c := &cluster{
		ref:            ref,
		h2:             ref.Protocol == config.ProtoHTTP2 || ref.Protocol == config.ProtoGRPC,
		dialer:         opts.dialer,
		connectTimeout: opts.connectTimeout,
		streamIdle:     opts.streamIdle,
		pools:          make(map[*endpointPool]struct{}),
		stop:           make(chan struct{}),
	}
	c.initResilience(opts)
	if l := ref.Listener; l != nil {
		if t := l.Timeout; t != nil {
			var ht *config.HTTPTimeout
			switch ref.Protocol {
			case config.ProtoHTTP:
				ht = t.HTTP
			case config.ProtoHTTP2:
				ht = t.HTTP2
			case config.ProtoGRPC:
				ht = t.GRPC
			}
			if ht != nil {
				c.perRequest = ht.PerRequest.D()
				c.idle = ht.Idle.D()
			}
		}
		if p := l.ConnectionPool; p != nil {
			if p.HTTP != nil && p.HTTP.MaxConnections > 0 {
				c.slots = make(chan struct{}, p.HTTP.MaxConnections)
				c.maxPending = int64(p.HTTP.MaxPendingRequests)
				if c.maxPending == 0 {
					c.maxPending = math.MaxInt32 // App Mesh's default: unbounded queue
				}
			}
			h2p := p.HTTP2
			if h2p == nil {
				h2p = p.GRPC
			}
			if h2p != nil && h2p.MaxRequests > 0 {
				c.streams = make(chan struct{}, h2p.MaxRequests)
			}
		}
	}
	c.bal = balancer.NewCluster(ref.Name, balancer.Options{
		Policy:                balancer.Policy(ref.LBPolicy),
		PanicThresholdPercent: panicThreshold(ref.Listener),
		OnAdd: func(ep *balancer.Endpoint) {
			p := &endpointPool{addr: ep.Address, cl: c, ep: ep}
			ep.Meta = p
			c.poolsMu.Lock()
			c.pools[p] = struct{}{}
			c.poolsMu.Unlock()
			c.outlier.Add(ep.Address)
			c.health.add(ep)
		},
		OnRemove: func(ep *balancer.Endpoint) {
			if p, ok := ep.Meta.(*endpointPool); ok {
				c.poolsMu.Lock()
				delete(c.pools, p)
				c.poolsMu.Unlock()
				p.closeIdle()
			}
			c.outlier.Remove(ep.Address)
			c.health.remove(ep)
		},
	})
	c.rt = c.newRoundTripper()
	c.startControl()
	return c
}

func (c *cluster) dial(ctx context.Context, addr string) (net.Conn, error) {
	if c.connectTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.connectTimeout)
		defer cancel()
	}
	conn, err := c.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &upstreamError{kind: errConnect, err: fmt.Errorf("connect to %s: %w", addr, err)}
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	return conn, nil
}

// newRoundTripper builds the net/http transport used off the HTTP/1.1 fast path.
func (c *cluster) newRoundTripper() http.RoundTripper {
	if c.h2 {
		// HTTP/2 with prior knowledge over cleartext (h2c), net/http's own HTTP/2.
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		return &http.Transport{
			Protocols: &p,
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				return c.dial(ctx, addr)
			},
			DisableCompression: true,
			IdleConnTimeout:    maxIdleAge,
			HTTP2: &http.HTTP2Config{
				SendPingTimeout: 30 * time.Second,
				PingTimeout:     15 * time.Second,
			},
		}
	}
	return &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return c.dial(ctx, addr)
		},
		MaxIdleConnsPerHost: maxIdlePerEndpoint,
		IdleConnTimeout:     maxIdleAge,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
}

// acquireSlot enforces connectionPool.http: it returns at once when a slot is free,
// waits (bounded by ctx) when the pending queue has room, and fails with errOverflow
// otherwise. release must be called exactly once after a nil error.
func (c *cluster) acquireSlot(ctx context.Context) error {
	if c.slots == nil {
		return nil
	}
	select {
	case c.slots <- struct{}{}:
		return nil
	default:
	}
	if c.pending.Add(1) > c.maxPending {
		c.pending.Add(-1)
		c.counters.OverflowMaxPendingRequests.Add(1)
		return &upstreamError{kind: errOverflowKind, err: fmt.Errorf("cluster %s: maxConnections %d and maxPendingRequests %d reached: %w",
			c.ref.Name, cap(c.slots), c.maxPending, errOverflow), limit: "maxPendingRequests"}
	}
	defer c.pending.Add(-1)
	wait := c.connectTimeout
	if wait <= 0 {
		wait = 5 * time.Second
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case c.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		c.counters.OverflowMaxConnections.Add(1)
		return &upstreamError{kind: errOverflowKind, err: fmt.Errorf("cluster %s: no connection slot within %v (maxConnections %d): %w",
			c.ref.Name, wait, cap(c.slots), errOverflow), limit: "maxConnections"}
	}
}

func (c *cluster) releaseSlot() {
	if c.slots != nil {
		<-c.slots
	}
}

// acquireStream enforces maxRequests on HTTP/2 clusters; it never queues.
func (c *cluster) acquireStream() error {
	if c.streams == nil {
		return nil
	}
	select {
	case c.streams <- struct{}{}:
		return nil
	default:
		c.counters.OverflowMaxRequests.Add(1)
		return &upstreamError{kind: errOverflowKind, err: fmt.Errorf("cluster %s: maxRequests %d reached: %w",
			c.ref.Name, cap(c.streams), errOverflow), limit: "maxRequests"}
	}
}

func (c *cluster) releaseStream() {
	if c.streams != nil {
		<-c.streams
	}
}

// close stops the cluster from pooling: idle connections close now, busy ones when
// they are returned.
func (c *cluster) close() {
	if c.closed.Swap(true) {
		return
	}
	c.closeResilience()
	c.poolsMu.Lock()
	pools := make([]*endpointPool, 0, len(c.pools))
	for p := range c.pools {
		pools = append(pools, p)
	}
	c.poolsMu.Unlock()
	for _, p := range pools {
		p.closeIdle()
	}
	if rt, ok := c.rt.(*http.Transport); ok {
		rt.CloseIdleConnections()
	}
}

// endpointPool keeps idle HTTP/1.1 keep-alive connections to one endpoint. The lock
// is held only to push or pop a slice element.
type endpointPool struct {
	addr string
	cl   *cluster
	ep   *balancer.Endpoint

	mu     sync.Mutex
	idle   []*upConn
	closed bool
}

// upConn is one upstream HTTP/1.1 connection with its buffers.
type upConn struct {
	conn     net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	rd       *h1.Reader
	pool     *endpointPool
	lastUsed time.Time
	reused   bool // served an exchange before: a failure may be a stale keep-alive
	timer    deadlineTimer
	// Bytes read and written so far: exchange compares them across an attempt to tell a
	// server that closed without a word from one that had started answering.
	rx, tx int64
}

func (u *upConn) Read(p []byte) (int, error) {
	u.timer.refresh(u.conn)
	n, err := u.conn.Read(p)
	u.rx += int64(n)
	return n, err
}

func (u *upConn) Write(p []byte) (int, error) {
	u.timer.refresh(u.conn)
	n, err := u.conn.Write(p)
	u.tx += int64(n)
	return n, err
}

// setHardDeadline bounds the current exchange (the per-request timeout); the zero
// time removes the bound.
func (u *upConn) setHardDeadline(t time.Time) { u.timer.setHard(t) }

// setHard sets the absolute bound (zero: none); the next Read or Write applies it.
func (t *deadlineTimer) setHard(h time.Time) { t.hard = h }

// deadlineTimer keeps a connection's deadline at min(hard, last activity + idle).
// Moving a deadline costs a runtime timer operation under the poll descriptor's lock,
// so refresh moves it only when it must: when none is set, when the one set is later
// than wanted (a shorter bound took effect), or when activity has pushed the wanted one
// a second (a quarter of a shorter idle bound) or more past it. A parameter change costs nothing until the next Read or
// Write, and one that leaves the wanted deadline where it was costs nothing at all (the
// common case: a head that arrives whole never touches the header timeout's deadline).
type deadlineTimer struct {
	idle time.Duration // 0: no idle bound
	hard time.Time     // zero: no absolute bound
	set  time.Time     // the deadline currently applied; zero: none
}

func (t *deadlineTimer) refresh(c net.Conn) {
	if t.idle <= 0 && t.hard.IsZero() {
		if !t.set.IsZero() {
			t.set = time.Time{}
			_ = c.SetDeadline(time.Time{})
		}
		return
	}
	want := t.hard
	if t.idle > 0 {
		if d := time.Now().Add(t.idle); want.IsZero() || d.Before(want) {
			want = d
		}
	}
	// The slack is a second, or a quarter of a shorter idle bound so that activity keeps
	// a sub-second idle deadline from firing.
	slack := time.Second
	if t.idle > 0 && t.idle/4 < slack {
		slack = t.idle / 4
	}
	// An absolute bound is applied exactly: a per-request timeout must not inherit the
	// previous request's deadline on a kept connection.
	if t.set.IsZero() || t.set.After(want) || (want.Equal(t.hard) && !t.set.Equal(want)) || want.Sub(t.set) >= slack {
		t.set = want
		_ = c.SetDeadline(want)
	}
}

func (p *endpointPool) get(ctx context.Context) (*upConn, error) {
	now := time.Now()
	p.mu.Lock()
	for n := len(p.idle); n > 0; n = len(p.idle) {
		u := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		if now.Sub(u.lastUsed) < maxIdleAge {
			p.mu.Unlock()
			return u, nil
		}
		p.mu.Unlock()
		p.discard(u)
		p.mu.Lock()
	}
	p.mu.Unlock()
	return p.dialNew(ctx)
}

// dialNew opens a new connection to the endpoint, bypassing the idle ones.
func (p *endpointPool) dialNew(ctx context.Context) (*upConn, error) {
	conn, err := p.cl.dial(ctx, p.addr)
	if err != nil {
		return nil, err
	}
	p.cl.openConns.Add(1)
	u := &upConn{conn: conn, pool: p}
	u.timer.idle = p.cl.idle
	if u.timer.idle == 0 {
		u.timer.idle = p.cl.streamIdle
	}
	u.br = bufio.NewReaderSize(u, upstreamReadBuf)
	u.bw = bufio.NewWriterSize(u, upstreamWriteBuf)
	return u, nil
}

// put returns a healthy connection after a complete exchange.
func (p *endpointPool) put(u *upConn) {
	u.lastUsed = time.Now()
	u.reused = true
	if !u.timer.hard.IsZero() {
		u.setHardDeadline(time.Time{})
	}
	p.mu.Lock()
	if p.closed || p.cl.closed.Load() || len(p.idle) >= maxIdlePerEndpoint {
		p.mu.Unlock()
		p.discard(u)
		return
	}
	p.idle = append(p.idle, u)
	p.mu.Unlock()
}

// discard closes a connection that must not be reused.
func (p *endpointPool) discard(u *upConn) {
	_ = u.conn.Close()
	p.cl.openConns.Add(-1)
}

func (p *endpointPool) closeIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.closed = true
	p.mu.Unlock()
	for _, u := range idle {
		p.discard(u)
	}
}

// reapIdle closes the idle connections that sat unused for maxAge at now. Without it a
// connection the server closed stays in CLOSE_WAIT (and a descriptor stays open) until
// the next get happens to pop it.
func (p *endpointPool) reapIdle(now time.Time, maxAge time.Duration) {
	p.mu.Lock()
	keep := p.idle[:0]
	var stale []*upConn
	for _, u := range p.idle {
		if now.Sub(u.lastUsed) >= maxAge {
			stale = append(stale, u)
		} else {
			keep = append(keep, u)
		}
	}
	clear(p.idle[len(keep):])
	p.idle = keep
	p.mu.Unlock()
	for _, u := range stale {
		p.discard(u)
	}
}

// reapIdle runs reapIdle on every endpoint pool of c.
func (c *cluster) reapIdle(now time.Time, maxAge time.Duration) {
	c.poolsMu.Lock()
	pools := make([]*endpointPool, 0, len(c.pools))
	for p := range c.pools {
		pools = append(pools, p)
	}
	c.poolsMu.Unlock()
	for _, p := range pools {
		p.reapIdle(now, maxAge)
	}
}

// Defaults of idleReaper.
const (
	reapEvery = 10 * time.Second
	reapAge   = maxIdleAge
)

// idleReaper is the Server's one goroutine that sweeps idle upstream connections out of
// the endpoint pools (Server.Start starts it, Shutdown stops and joins it). every and
// maxAge are set before start; zero means reapEvery and reapAge.
type idleReaper struct {
	every, maxAge time.Duration
	stop          chan struct{}
	done          chan struct{}
}

func (r *idleReaper) start(sweep func(now time.Time, maxAge time.Duration)) {
	if r.every <= 0 {
		r.every = reapEvery
	}
	if r.maxAge <= 0 {
		r.maxAge = reapAge
	}
	r.stop, r.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(r.done)
		t := time.NewTicker(r.every)
		defer t.Stop()
		for {
			select {
			case <-r.stop:
				return
			case now := <-t.C:
				sweep(now, r.maxAge)
			}
		}
	}()
}

// halt stops the goroutine and waits for it; a reaper never started is left alone.
func (r *idleReaper) halt() {
	if r.stop == nil {
		return
	}
	close(r.stop)
	<-r.done
	r.stop = nil
}
