package upstream

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/meshd/meshd/balancer"
	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/internal/h1"
	"github.com/meshd/meshd/internal/h2"
	"github.com/meshd/meshd/internal/rawio"
	"github.com/meshd/meshd/proxy/internal/deadline"
	"github.com/meshd/meshd/resilience"
	"github.com/meshd/meshd/router"
	"github.com/meshd/meshd/telemetry"
	meshtls "github.com/meshd/meshd/tls"
)

// Upstream I/O buffer sizes. 16 KiB each holds a typical request or response head and a
// small body in one read, and keeps a pooled connection at ~32 KiB of buffers (Envoy's
// per-connection guidance, ANCHORS.md).
const (
	upstreamReadBuf  = 16 << 10
	upstreamWriteBuf = 16 << 10
	// DefaultMaxIdlePerEndpoint bounds the idle keep-alive connections kept per endpoint:
	// Envoy's default connection limit (max_connections 1024). Below the concurrency a
	// busy endpoint sees, connections churn: at 500 concurrent requests (50 HTTP/2
	// clients x 10 streams) a bound of 64 made meshd dial and close ~400 connections a
	// second, half its CPU. Idle ones are reaped after maxIdleAge.
	DefaultMaxIdlePerEndpoint = 1024
	// maxIdleAge closes pooled connections that sat unused this long: servers commonly
	// time keep-alive connections out after 60-120 s, and reusing one the server is
	// closing costs a failed exchange.
	maxIdleAge = 50 * time.Second
)

// cluster is the proxy's runtime view of one upstream cluster: its balancer, its
// connection limits, and (hung on each balancer endpoint) the keep-alive pools.
type Cluster struct {
	ref router.ClusterRef
	bal *balancer.Cluster
	h2  bool // upstream speaks HTTP/2 (listener protocol http2 or grpc)

	dialer         *net.Dialer
	connectTimeout time.Duration

	// Listener timeouts of the target node; a route's own timeout takes precedence.
	perRequest time.Duration
	idle       time.Duration
	streamIdle time.Duration // used when idle is not configured
	maxIdle    int           // idle connections an endpoint's pool keeps

	// HTTP/1.1 limits (connectionPool.http): slots bounds concurrently used upstream
	// connections; nil means unlimited. maxPending bounds requests waiting for a slot.
	slots      chan struct{}
	maxPending int64
	pending    atomic.Int64
	// HTTP/2 limit (connectionPool.http2/grpc maxRequests); nil means unlimited.
	streams chan struct{}

	openConns atomic.Int64
	l4        *L4Stats // L4 connections (l4.go); carried to a successor of the same name
	closed    atomic.Bool

	poolsMu sync.RWMutex
	pools   map[*Pool]struct{} // every endpoint's pool, for close
	byAddr  map[string]*Pool   // the same pools by endpoint address (EndpointPool)

	// rt is the path off the HTTP/1.1 fast path: meshd's HTTP/2 transport for HTTP/2
	// upstreams; for HTTP/1.1 upstreams of HTTP/2 clients, meshd's HTTP/1.1 transport
	// over the endpoints' pools (h1transport.go).
	rt         http.RoundTripper
	h2Counters *h2.Counters

	// Resilience: every decision is counted in counters (kept by cluster name across
	// reloads). budget always exists; outlier, breaker and health are nil when the
	// target listener does not configure them.
	clock      resilience.Clock
	log        *slog.Logger
	counters   *resilience.Counters
	stats      *telemetry.HTTPStats
	budget     *resilience.RetryBudget
	outlier    *resilience.OutlierDetector
	sweepEvery time.Duration
	breaker    *resilience.Breaker
	health     *healthChecker
	// The control goroutine (outlier sweeps, health checks) exits when stop closes;
	// close waits for it.
	stop      chan struct{}
	controlWG sync.WaitGroup

	follow follow // discovery: the names the endpoint set follows (discovery.go)

	tls *tlsOrigin // nil: plaintext (tls.go)
}

func New(ref router.ClusterRef, opts Options) *Cluster {
	c := &Cluster{
		ref:            ref,
		h2:             ref.Protocol == config.ProtoHTTP2 || ref.Protocol == config.ProtoGRPC,
		dialer:         opts.Dialer,
		connectTimeout: opts.ConnectTimeout,
		streamIdle:     opts.StreamIdle,
		maxIdle:        opts.MaxIdlePerEndpoint,
		pools:          make(map[*Pool]struct{}),
		byAddr:         make(map[string]*Pool),
		stop:           make(chan struct{}),
		h2Counters:     opts.HTTP2,
	}
	if c.maxIdle <= 0 {
		c.maxIdle = DefaultMaxIdlePerEndpoint
	}
	if opts.TLS != nil { // before the health checker, which dials through it
		var st *meshtls.HandshakeStats
		if opts.TLSStats != nil {
			st = opts.TLSStats(ref.Name)
		}
		c.tls = newTLSOrigin(opts.TLS, ref.Protocol, st)
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
	hash, slow := balancing(ref.LB)
	c.bal = balancer.NewCluster(ref.Name, balancer.Options{
		Policy:                balancer.Policy(ref.LBPolicy),
		PanicThresholdPercent: panicThreshold(ref.Listener),
		Hash:                  hash,
		SlowStart:             slow,
		Clock:                 c.clock,
		Known:                 opts.Known,
		OnAdd: func(ep *balancer.Endpoint) {
			p := &Pool{addr: ep.Address, cl: c, ep: ep}
			ep.Meta = p
			c.poolsMu.Lock()
			c.pools[p] = struct{}{}
			c.byAddr[p.addr] = p
			c.poolsMu.Unlock()
			c.outlier.Add(ep.Address)
			c.health.add(ep)
		},
		OnRemove: func(ep *balancer.Endpoint) {
			if p, ok := ep.Meta.(*Pool); ok {
				c.poolsMu.Lock()
				delete(c.pools, p)
				if c.byAddr[p.addr] == p {
					delete(c.byAddr, p.addr)
				}
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

// Dial connects to the endpoint at addr within the connect timeout; when the cluster
// originates TLS the handshake completes within the same timeout, and the connection
// returned is the *tls.Conn. Failures of either are Connect *Errors.
func (c *Cluster) Dial(ctx context.Context, addr string) (net.Conn, error) {
	if c.connectTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.connectTimeout)
		defer cancel()
	}
	conn, err := c.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &Error{Kind: Connect, Err: fmt.Errorf("connect to %s: %w", addr, err)}
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	if c.tls != nil {
		return c.handshake(ctx, conn, addr, c.tls.cfg.NextProtos)
	}
	return conn, nil
}

// newRoundTripper builds the http.RoundTripper used off the HTTP/1.1 fast path.
func (c *Cluster) newRoundTripper() http.RoundTripper {
	if c.h2 {
		// HTTP/2 with prior knowledge over cleartext (h2c), meshd's own (internal/h2):
		// streams multiplexed per endpoint within the upstream's concurrency limit;
		// receive windows bounded so that a downstream that stops reading makes meshd
		// hold at most 256 KiB per upstream stream and 1 MiB per connection; a refused
		// or GOAWAY-ed stream comes back as not processed, for the retry policy.
		lim := h2.DefaultLimits()
		lim.StreamWindow = 256 << 10
		lim.ConnWindow = 1 << 20
		lim.IdleTimeout = maxIdleAge
		return &h2.Transport{Dial: c.Dial, Limits: lim, Counters: c.h2Counters}
	}
	// HTTP/1.1: meshd's own transport over the endpoints' pools, so the connections are
	// those of the HTTP/1.1 fast path (shared, reaped and closed with them).
	return &h1Transport{cl: c}
}

// AcquireSlot enforces connectionPool.http: it returns at once when a slot is free,
// waits (bounded by ctx) when the pending queue has room, and fails with ErrOverflow
// otherwise. waited reports that it did not return at once (a clock reading taken
// before the call is then stale). release must be called exactly once after a nil
// error.
func (c *Cluster) AcquireSlot(ctx context.Context) (waited bool, err error) {
	if c.slots == nil {
		return false, nil
	}
	select {
	case c.slots <- struct{}{}:
		return false, nil
	default:
	}
	if c.pending.Add(1) > c.maxPending {
		c.pending.Add(-1)
		c.counters.OverflowMaxPendingRequests.Add(1)
		return false, &Error{Kind: Overflow, Err: fmt.Errorf("cluster %s: maxConnections %d and maxPendingRequests %d reached: %w",
			c.ref.Name, cap(c.slots), c.maxPending, ErrOverflow), Limit: "maxPendingRequests"}
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
		return true, nil
	case <-ctx.Done():
		return true, ctx.Err()
	case <-t.C:
		c.counters.OverflowMaxConnections.Add(1)
		return true, &Error{Kind: Overflow, Err: fmt.Errorf("cluster %s: no connection slot within %v (maxConnections %d): %w",
			c.ref.Name, wait, cap(c.slots), ErrOverflow), Limit: "maxConnections"}
	}
}

func (c *Cluster) ReleaseSlot() {
	if c.slots != nil {
		<-c.slots
	}
}

// acquireStream enforces maxRequests on HTTP/2 clusters; it never queues.
func (c *Cluster) AcquireStream() error {
	if c.streams == nil {
		return nil
	}
	select {
	case c.streams <- struct{}{}:
		return nil
	default:
		c.counters.OverflowMaxRequests.Add(1)
		return &Error{Kind: Overflow, Err: fmt.Errorf("cluster %s: maxRequests %d reached: %w",
			c.ref.Name, cap(c.streams), ErrOverflow), Limit: "maxRequests"}
	}
}

func (c *Cluster) ReleaseStream() {
	if c.streams != nil {
		<-c.streams
	}
}

// close stops the cluster from pooling: idle connections close now, busy ones when
// they are returned.
func (c *Cluster) Close() {
	if c.closed.Swap(true) {
		return
	}
	c.stopFollowing()
	c.closeResilience()
	c.poolsMu.Lock()
	pools := make([]*Pool, 0, len(c.pools))
	for p := range c.pools {
		pools = append(pools, p)
	}
	c.poolsMu.Unlock()
	for _, p := range pools {
		p.closeIdle()
	}
	if rt, ok := c.rt.(*h2.Transport); ok {
		rt.Close()
	}
}

// Pool keeps idle HTTP/1.1 keep-alive connections to one endpoint. The lock
// is held only to push or pop a slice element.
type Pool struct {
	addr string
	cl   *Cluster
	ep   *balancer.Endpoint

	mu     sync.Mutex
	idle   []*Conn
	closed bool
}

// Conn is one upstream HTTP/1.1 connection with its buffers.
type Conn struct {
	NetConn net.Conn
	BR      *bufio.Reader
	BW      *bufio.Writer
	// RD is the response reader over BR, made on first use by the HTTP/1.1 front end or
	// the HTTP/1.1 transport.
	RD       *h1.Reader
	Pool     *Pool
	LastUsed time.Time
	// Reused is set once the connection served an exchange: a failure on it may be a
	// stale keep-alive the server closed meanwhile.
	Reused bool
	Timer  deadline.Timer
	// Bytes read and written so far: the HTTP/1.1 front end compares them across an
	// attempt to tell a server that closed without a word from one that had started
	// answering.
	RX, TX int64
	// rt is the HTTP/1.1 transport's response head and body reader (h1transport.go),
	// made on its first exchange on the connection.
	rt *h1State
	// io does the reads and writes when NetConn is a plain TCP socket, with system calls
	// that do not wake the runtime's sysmon thread (internal/rawio).
	io rawio.Conn
	// raw is the socket's raw connection when it is plain TCP (FlushAwait); await is set
	// while FlushAwait flushes.
	raw   syscall.RawConn
	wrote bool // the last Read or Write was a Write: see Read
	await bool
	aw    *awaitState
}

func (u *Conn) Read(p []byte) (int, error) {
	// A read right after a write (the response after its request) keeps the deadline
	// the write applied: the idle time counts from that activity, a few microseconds
	// earlier, and a clock read per exchange is saved (issue 17).
	if u.wrote {
		u.wrote = false
	} else {
		u.Timer.Refresh(u.NetConn)
	}
	n, err := u.io.ReadOf(u.NetConn, p)
	u.RX += int64(n)
	return n, err
}

func (u *Conn) Write(p []byte) (int, error) {
	u.Timer.Refresh(u.NetConn)
	if u.Timer.Bounded() {
		// Only a bounded timer: the HTTP/1.1 transport and tunnels clear it and then
		// write on another goroutine than the one reading.
		u.wrote = true
	}
	var n int
	var err error
	if u.await {
		n, err = u.writeAwait(p)
	} else {
		n, err = u.io.WriteOf(u.NetConn, p)
	}
	u.TX += int64(n)
	return n, err
}

// setHardDeadline bounds the current exchange (the per-request timeout); the zero
// time removes the bound.
func (u *Conn) SetHardDeadline(t time.Time) {
	u.Timer.SetHard(t)
	u.wrote = false // the next Read applies the bound even right after a write
}

func (p *Pool) Get(ctx context.Context) (*Conn, error) {
	now := time.Now()
	p.mu.Lock()
	for n := len(p.idle); n > 0; n = len(p.idle) {
		u := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		if now.Sub(u.LastUsed) < maxIdleAge {
			p.mu.Unlock()
			if u.BR == nil {
				u.attachBuffers()
			}
			return u, nil
		}
		p.mu.Unlock()
		p.Discard(u)
		p.mu.Lock()
	}
	p.mu.Unlock()
	return p.DialNew(ctx)
}

// dialNew opens a new connection to the endpoint, bypassing the idle ones.
func (p *Pool) DialNew(ctx context.Context) (*Conn, error) {
	conn, err := p.cl.Dial(ctx, p.addr)
	if err != nil {
		return nil, err
	}
	p.cl.openConns.Add(1)
	u := &Conn{NetConn: conn, Pool: p, raw: rawTCP(conn)}
	u.io.Init(conn)
	u.Timer.Idle = p.cl.idle
	if u.Timer.Idle == 0 {
		u.Timer.Idle = p.cl.streamIdle
	}
	u.attachBuffers() // buffers an idle connection gave back, else new ones
	return u, nil
}

// Buffers of pooled connections that sat idle past bufferIdleAge go back to these
// pools (the reaper's sweep), so that the connections a burst opened do not keep 32 KiB
// each for as long as they stay pooled (up to maxIdleAge, and DefaultMaxIdlePerEndpoint
// of them per endpoint); Get gives a connection buffers again before it is used.
var (
	readBufPool  sync.Pool // *bufio.Reader of upstreamReadBuf
	writeBufPool sync.Pool // *bufio.Writer of upstreamWriteBuf
)

// bufferIdleAge is how long a pooled connection sits unused before the reaper takes its
// buffers: long enough that a connection in steady use never loses them.
const bufferIdleAge = 5 * time.Second

// attachBuffers gives u read and write buffers again (after shedBuffers).
func (u *Conn) attachBuffers() {
	if br, _ := readBufPool.Get().(*bufio.Reader); br != nil {
		br.Reset(u)
		u.BR = br
	} else {
		u.BR = bufio.NewReaderSize(u, upstreamReadBuf)
	}
	if bw, _ := writeBufPool.Get().(*bufio.Writer); bw != nil {
		bw.Reset(u)
		u.BW = bw
	} else {
		u.BW = bufio.NewWriterSize(u, upstreamWriteBuf)
	}
	if u.RD != nil {
		u.RD.Reset(u.BR)
	}
}

// shedBuffers returns an idle connection's buffers to the pools when they hold nothing.
// Only for a connection in its pool's idle list, under the pool's lock (no one else
// holds it then).
func (u *Conn) shedBuffers() {
	if u.BR == nil || u.BR.Buffered() > 0 || u.BW.Buffered() > 0 {
		return
	}
	u.BR.Reset(nil)
	u.BW.Reset(nil)
	readBufPool.Put(u.BR)
	writeBufPool.Put(u.BW)
	u.BR, u.BW = nil, nil
	if u.RD != nil {
		u.RD.Reset(nil)
	}
}

// put returns a healthy connection after a complete exchange.
func (p *Pool) Put(u *Conn) {
	u.LastUsed = time.Now()
	u.Reused = true
	if !u.Timer.Hard().IsZero() {
		u.SetHardDeadline(time.Time{})
	}
	p.mu.Lock()
	if p.closed || p.cl.closed.Load() || len(p.idle) >= p.cl.maxIdle {
		p.mu.Unlock()
		p.Discard(u)
		return
	}
	p.idle = append(p.idle, u)
	p.mu.Unlock()
}

// discard closes a connection that must not be reused.
func (p *Pool) Discard(u *Conn) {
	_ = u.NetConn.Close()
	p.cl.openConns.Add(-1)
}

func (p *Pool) closeIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.closed = true
	p.mu.Unlock()
	for _, u := range idle {
		p.Discard(u)
	}
}

// reapIdle closes the idle connections that sat unused for maxAge at now, and takes the
// buffers of those unused for bufferIdleAge. Without it a connection the server closed
// stays in CLOSE_WAIT (and a descriptor stays open) until the next get happens to pop it.
func (p *Pool) reapIdle(now time.Time, maxAge time.Duration) {
	p.mu.Lock()
	keep := p.idle[:0]
	var stale []*Conn
	for _, u := range p.idle {
		switch idle := now.Sub(u.LastUsed); {
		case idle >= maxAge:
			stale = append(stale, u)
		case idle >= bufferIdleAge:
			u.shedBuffers()
			keep = append(keep, u)
		default:
			keep = append(keep, u)
		}
	}
	clear(p.idle[len(keep):])
	p.idle = keep
	p.mu.Unlock()
	for _, u := range stale {
		p.Discard(u)
	}
}

// reapIdle runs reapIdle on every endpoint pool of c.
func (c *Cluster) ReapIdle(now time.Time, maxAge time.Duration) {
	c.poolsMu.Lock()
	pools := make([]*Pool, 0, len(c.pools))
	for p := range c.pools {
		pools = append(pools, p)
	}
	c.poolsMu.Unlock()
	for _, p := range pools {
		p.reapIdle(now, maxAge)
	}
}

// Defaults of Reaper.
const (
	reapEvery = 10 * time.Second
	reapAge   = maxIdleAge
)

// Reaper is the Server's one goroutine that sweeps idle upstream connections out of
// the endpoint pools (Server.Start starts it, Shutdown stops and joins it). Every and
// MaxAge are set before Start; zero means reapEvery and reapAge.
type Reaper struct {
	Every, MaxAge time.Duration
	stop          chan struct{}
	done          chan struct{}
}

func (r *Reaper) Start(sweep func(now time.Time, maxAge time.Duration)) {
	if r.Every <= 0 {
		r.Every = reapEvery
	}
	if r.MaxAge <= 0 {
		r.MaxAge = reapAge
	}
	r.stop, r.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(r.done)
		t := time.NewTicker(r.Every)
		defer t.Stop()
		for {
			select {
			case <-r.stop:
				return
			case now := <-t.C:
				sweep(now, r.MaxAge)
			}
		}
	}()
}

// halt stops the goroutine and waits for it; a reaper never started is left alone.
func (r *Reaper) Halt() {
	if r.stop == nil {
		return
	}
	close(r.stop)
	<-r.done
	r.stop = nil
}
