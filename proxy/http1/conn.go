// Package http1 is the HTTP/1.1 front end: meshd's fast path. A downstream connection's
// requests are parsed by the strict zero-allocation codec (internal/h1) into structs
// reused across requests, resolved and sent through the forward pipeline with this
// package's exchanger (pooled upstream HTTP/1.1 connections, connection deadlines rather
// than contexts), and the response relayed back. Requests to an HTTP/2 upstream go
// through net/http's transport instead (bridge.go).
package http1

import (
	"bufio"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/meshd/meshd/balancer"
	"github.com/meshd/meshd/internal/h1"
	"github.com/meshd/meshd/proxy/forward"
	"github.com/meshd/meshd/proxy/internal/deadline"
	"github.com/meshd/meshd/proxy/listen"
	"github.com/meshd/meshd/proxy/state"
	"github.com/meshd/meshd/proxy/upstream"
	"github.com/meshd/meshd/router"
	"github.com/meshd/meshd/telemetry"
)

const (
	downstreamWriteBuf = 16 << 10

	// A connection meshd closes after answering, while the client may still be sending,
	// lingers this long at most, discarding at most lingerBytes of input (listen.Conn.Linger).
	lingerTime  = 5 * time.Second
	lingerBytes = 1 << 20
)

// Limits bounds a request head (and, on the upstream side, a response head).
var Limits = h1.Limits{MaxHeaderBytes: 60 << 10, MaxHeaders: 100}

// h1conn is the state of one downstream HTTP/1.1 connection. Everything in it is reused
// across the connection's requests, so the steady state allocates nothing. It is the
// forward.Exchanger of its requests to HTTP/1.1 upstreams.
type h1conn struct {
	env  *forward.Env
	kind forward.Kind
	tc   *listen.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	rd   *h1.Reader

	req  h1.Request
	resp h1.Response
	rr   router.Request

	// readAt is the monotonic reading taken as the request's head began to be read.
	// When relayed is set, dur is the request's duration from the record's start to the
	// relay's reading at the response's end, which the statistics take.
	readAt  time.Time
	dur     time.Duration
	relayed bool
	hosts   forward.HostCache // the egress Host's backend, while it repeats

	hdrs joinedHeaders // c.req as the router's header getter
	// recHdrs is the record's view of the request as forwarded: c.req's fields and
	// the forwarding fields meshd added (the x-request-id it generated, for one).
	recHdrs forwardedHeaders
	fwd     *forward.H1Forwarding
	up      *upstream.Conn   // upstream connection kept from the previous exchange
	client  string           // the peer IP, for x-forwarded-for
	aff     forward.Affinity // this request's hash key (a hash-policy cluster); reset per request
	local   int              // the local port this connection was addressed to (ingress)

	// The request in flight, for the Exchanger methods.
	x struct {
		target     string
		body       []byte // the request body kept for a replay (nil: none or streamed)
		replayable bool   // the body can be sent again (none, or kept in body)
		waitedBody bool   // keepBody read some of the body from the client
		upgrade    bool
		idle       time.Duration
		sent       bool           // some of the request was written in the last attempt
		u          *upstream.Conn // the last attempt's connection, holding its response head
	}
	bodyBuf *[]byte // pooled buffer holding x.body when it did not fit the read buffer

	// rec is the record of the request in progress, for the snapshot's observers (obs);
	// filled only when there are observers, reused across requests.
	rec telemetry.Request
	obs []telemetry.Observer
	// The route's and cluster's statistics of the request in progress (nil: none).
	routeStats, clusterStats *telemetry.HTTPStats
	gatewayStats             *telemetry.HTTPStats // the gateway route's, on a gateway
	span                     telemetry.Span       // the request's server span; nil: not traced
	// linger: meshd ends the connection after a response it wrote whole, while the
	// client may still be sending (an error answer to a request whose body or
	// successors were not read, a close after a response delimited by the close):
	// the connection closes through a lingering close, not at once.
	linger bool
	// idled: holdUp saw the client idle for the hold with nothing buffered, so the
	// connection waits for its next request without buffers (releaseBufs); small and pre
	// take the first bytes of that request.
	idled bool
	small [idleReadSize]byte
	pre   prefixReader
	// rh are the current request's route header rules (nil: none), hv their variables,
	// respExtra the response fields they add.
	rh        forward.RouteRules
	hv        router.HeaderVars
	respExtra []h1.Header

	end func(last *bufio.Reader) // Serve's caller's: closes the connection

	// The session in progress (session): its phase, result and head error, and its
	// step, made once per h1conn (it is bound to c, which recycle keeps).
	sphase  uint8
	sres    sessResult
	sessErr error
	sstep   func() bool
}

// idleReadSize is what an idle connection reads before it takes its buffers back: a
// typical request head arrives whole in it, so the head is parsed without another read.
const idleReadSize = 512

// prefixReader reads the bytes an idle connection read without buffers, then the
// connection.
type prefixReader struct {
	b    []byte
	conn io.Reader
}

func (p *prefixReader) Read(b []byte) (int, error) {
	if len(p.b) > 0 {
		n := copy(b, p.b)
		p.b = p.b[n:]
		return n, nil
	}
	return p.conn.Read(b)
}

// Serve serves the HTTP/1.1 requests of tc (br holds what the sniffer read) until the
// client closes, a request says close, the server drains or an error ends the
// connection, then calls end with the reader to pool (not necessarily br: an idle
// connection gives its buffers back and takes others; nil when it ended without one);
// end closes tc. A connection idle past the hold may park (listen.Conn.Park): Serve then
// returns at once, and the connection goes on, and ends, on another goroutine. The
// caller must not touch tc after Serve returns.
func Serve(env *forward.Env, tc *listen.Conn, br *bufio.Reader, kind forward.Kind, end func(last *bufio.Reader)) {
	client, local := "", 0
	if ta, ok := tc.RemoteAddr().(*net.TCPAddr); ok {
		client = ta.IP.String()
	}
	if kind == forward.Ingress {
		local = int(tc.Orig.Port())
	}
	c := (&idleConn{env: env, kind: kind, tc: tc, client: client, local: local, end: end}).take()
	c.br, c.bw = br, getWriter(tc)
	c.rd.Reset(br)
	// The first request's head must be complete by first (the caller set it as tc's
	// absolute bound, counted from accept); later ones wait up to KeepAliveIdle.
	c.run(tc.Timer.Hard(), false)
}

// idleConn is what a parked connection keeps of its h1conn: what it needs to take one
// again. The h1conn itself, with its request and response storage and its forwarding
// scratch (about 4 KiB), goes back to connPool while the connection is parked.
type idleConn struct {
	env    *forward.Env
	kind   forward.Kind
	tc     *listen.Conn
	client string // the peer IP, for x-forwarded-for
	local  int
	end    func(last *bufio.Reader)
}

// connPool holds the h1conns of parked and ended connections, their reusable storage
// kept (recycle).
var connPool = sync.Pool{New: func() any { return new(h1conn) }}

// take returns an h1conn for the connection, from the pool.
func (ic *idleConn) take() *h1conn {
	c := connPool.Get().(*h1conn)
	c.env, c.kind, c.tc, c.client, c.local, c.end = ic.env, ic.kind, ic.tc, ic.client, ic.local, ic.end
	if c.fwd == nil {
		c.fwd = forward.NewH1Forwarding()
		c.rd = h1.NewReader(nil, Limits)
	}
	c.hdrs.req = &c.req
	c.recHdrs = forwardedHeaders{req: &c.req, fwd: c.fwd}
	return c
}

// recycle puts c back in the pool. Only the storage it owns outright stays (the
// request's and response's, filled anew by the next read; the forwarding scratch):
// everything that could point at a snapshot, a cluster, another connection or a
// pooled buffer is cleared.
func (c *h1conn) recycle() {
	fwd, rd, sstep := c.fwd, c.rd, c.sstep
	rd.Reset(nil)
	req, resp := c.req, c.resp
	*c = h1conn{fwd: fwd, rd: rd, req: req, resp: resp, sstep: sstep}
	connPool.Put(c)
}

// run serves requests until the connection ends (then finish) or parks. resumed: the
// connection was parked and the first bytes of its next request are read (wakeRead).
func (c *h1conn) run(first time.Time, resumed bool) {
	if c.serve(first, resumed) {
		c.finish()
	}
}

// finish ends the connection: what it holds goes back, and the caller's end closes it.
func (c *h1conn) finish() {
	c.releaseUp()
	if c.linger {
		c.tc.Linger(lingerTime, lingerBytes)
	}
	if c.bw != nil {
		putWriter(c.bw)
		c.bw = nil
	}
	end, last := c.end, c.br
	c.br = nil
	end(last)
}

// resume is a parked connection's way back (on a goroutine of its own): with the first
// bytes of its next request, or, when it expired, was closed, or its client left, to
// its end.
func (ic *idleConn) resume(why listen.Wake) {
	if why != listen.Ready {
		ic.end(nil)
		return
	}
	c := ic.take()
	if c.wakeRead() != nil {
		c.finish()
		return
	}
	c.run(time.Time{}, true)
}

// serve is the request loop; it reports false when the connection parked (another
// goroutine owns it now), true when it is to end.
func (c *h1conn) serve(first time.Time, resumed bool) bool {
	env, tc, kind := c.env, c.tc, c.kind
	for {
		held := false
		if !resumed && first.IsZero() && tc.CanSession() {
			switch c.session() {
			case sessEnd:
				return true
			case sessHead:
				if !c.serveHead() {
					return true
				}
				continue
			case sessHeadErr:
				c.headFailed(c.sessErr, false, env.HeaderTimeout)
				return true
			case sessHeld:
				held = true
			case sessSlow:
				// Part of a head is buffered: the usual way reads the rest.
			}
		}
		if !resumed {
			tc.SetBusy(false)
			if env.Draining.Load() {
				return true
			}
			if held {
				c.releaseUp()
				c.idled = true
			} else if !c.holdUp() {
				return true
			}
			tc.SetIdleTimeout(env.KeepAliveIdle)
			// Between requests the connection may idle for KeepAliveIdle; once a head has
			// started, it must end within HeaderTimeout however the bytes are paced.
			if c.idled {
				// Idle past the hold: wait without buffers (10,000 idle keep-alive clients held
				// 32 KiB each) and, where it can, without a goroutine (its stack was 8-16 KiB),
				// and take them back with the first bytes.
				c.releaseBufs()
				// Before its first request the connection keeps its goroutine: the first
				// request's bound (first) is its socket deadline's, which the Parker knows
				// nothing of.
				if first.IsZero() && c.park() {
					return false
				}
				if err := c.wakeRead(); err != nil {
					return true
				}
			}
		}
		resumed = false
		// Bytes buffered (holdUp's wait read them) need no wait: Peek would return at once.
		if c.br.Buffered() == 0 {
			if _, err := c.br.Peek(1); err != nil {
				if !first.IsZero() && upstream.IsTimeout(err) {
					// Nothing of a request arrived: nothing to answer, just close.
					env.FirstRequestTimeouts[kind].Add(1)
				}
				return true
			}
		}
		// One monotonic reading serves the head's deadline and, when nothing needs a
		// timestamp, the request's start (startRecord).
		mono := deadline.Mono()
		c.readAt = deadline.At(mono)
		limit := env.HeaderTimeout
		byFirst := !first.IsZero() && first.Before(deadline.At(mono+limit))
		if byFirst {
			limit = env.FirstRequestTimeout
			tc.Timer.SetHard(first)
		} else {
			tc.Timer.SetHardAt(mono + env.HeaderTimeout)
		}
		err := c.rd.ReadRequest(&c.req)
		tc.Timer.SetHard(time.Time{})
		tc.SetBusy(true)
		if err != nil {
			c.headFailed(err, byFirst, limit)
			return true
		}
		first = time.Time{}
		if !c.serveHead() {
			return true
		}
	}
}

// headFailed answers a request head that could not be read (err): 400 and the like for
// a malformed one, 408 for one not complete within limit (the first request's bound when
// byFirst); nothing when the client left.
func (c *h1conn) headFailed(err error, byFirst bool, limit time.Duration) {
	var he *h1.Error
	if errors.As(err, &he) {
		c.localReply(he.Status, forward.CodeBadRequest, "meshd: "+he.Msg+"\n", true)
	} else if upstream.IsTimeout(err) {
		if byFirst {
			c.env.FirstRequestTimeouts[c.kind].Add(1)
		}
		c.tc.SetIdleTimeout(c.env.StreamIdle) // a fresh deadline for the reply
		c.localReply(408, forward.CodeHeaderTimeout, "meshd: request head not complete within "+limit.String()+"\n", true)
	}
}

// serveHead serves the request whose head was just read; false: end the connection.
func (c *h1conn) serveHead() bool {
	c.tc.SetIdleTimeout(c.env.StreamIdle)
	if c.env.IsOverloaded() {
		c.overloadReply()
		return false
	}
	keep := c.handle()
	c.observe()
	return keep
}

// sessResult is how a session ended: what the request loop does next.
type sessResult uint8

const (
	sessEnd     sessResult = iota // the connection is to end
	sessHead                      // a head was read that the session does not serve (serveHead)
	sessHeadErr                   // a head was read and is malformed (sessErr)
	sessSlow                      // part of a head is buffered: ReadRequest reads the rest
	sessHeld                      // the hold passed with no request (holdUp's timeout)
)

// The phases of a session's request loop.
const (
	phaseBoundary uint8 = iota // a request was served (or none yet): the next one's wait begins
	phaseHold                  // waiting for the next request within the hold
	phaseIdle                  // waiting for it past the hold, or with no hold
	phaseHead                  // its head is being read
)

// session serves the connection's keep-alive requests inside one wait for input
// (listen.Conn.Session) as long as each arrives with its head whole and without a body
// still to read, so that waiting for the next one costs no read that finds nothing
// (rawio.Conn.Session says why: one system call per request, 1.3-1.5 µs here, which
// HAProxy does not make). The loop is the usual one's (serve, holdUp) with the waits
// turned into returns to the session's wait; anything it does not serve ends it, with
// what the usual loop is to do next.
func (c *h1conn) session() sessResult {
	if c.sstep == nil {
		c.sstep = c.sessionStep
	}
	c.sres, c.sphase, c.sessErr = sessEnd, phaseBoundary, nil
	err := c.tc.Session(c.sstep)
	switch {
	case err == nil:
		return c.sres
	case c.sphase == phaseHold && upstream.IsTimeout(err):
		return sessHeld
	}
	return sessEnd
}

// sessionStep is the session's callback: it serves requests until one needs a wait for
// input (false: the session waits, with the Timer's deadline for the idle bound set
// here) or the loop is to leave the session (true, with sres).
func (c *h1conn) sessionStep() bool {
	env, tc := c.env, c.tc
	for {
		if c.sphase == phaseBoundary {
			tc.SetBusy(false)
			if env.Draining.Load() {
				c.sres = sessEnd
				return true
			}
			// holdUp's rule: within the hold the upstream connection stays; past it
			// (the session's wait times out) the usual loop gives it back.
			c.sphase = phaseIdle
			if hold := env.Hold(); c.br.Buffered() == 0 && hold < env.KeepAliveIdle {
				c.sphase = phaseHold
				tc.SetIdleTimeout(hold)
			} else {
				tc.SetIdleTimeout(env.KeepAliveIdle)
			}
		}
		if c.br.Buffered() == 0 {
			if tc.Drained() {
				return false
			}
			if _, err := c.br.Peek(1); err != nil {
				if err == listen.ErrWouldBlock {
					return false
				}
				c.sres = sessEnd
				return true
			}
		}
		if c.sphase == phaseHold {
			tc.SetIdleTimeout(env.KeepAliveIdle) // as after holdUp: for a reply to a bad head
		}
		c.sphase = phaseHead
		c.readAt = deadline.Now()
		ok, err := c.rd.ReadBufferedRequest(&c.req)
		if !ok {
			c.sres = sessSlow
			return true
		}
		tc.SetBusy(true)
		if err != nil {
			c.sres, c.sessErr = sessHeadErr, err
			return true
		}
		if !c.sessionServes() {
			c.sres = sessHead
			return true
		}
		if !c.serveHead() {
			c.sres = sessEnd
			return true
		}
		c.sphase = phaseBoundary
	}
}

// sessionServes reports whether the session may serve the request just read: nothing
// of it is left to read from the connection (no body, or all of it buffered), and
// nothing reads the connection while it is served (no upgrade, CONNECT or
// 100-continue). Within the session a read never waits.
func (c *h1conn) sessionServes() bool {
	req := &c.req
	if req.Upgrade != "" || req.ExpectContinue || req.Method == "CONNECT" {
		return false
	}
	return !req.HasBody() || (!req.Chunked && req.ContentLength <= int64(c.br.Buffered()))
}

// holdUp waits, while the connection keeps the upstream connection of its last
// exchange, at most the hold (Env.Hold) for the next request, then puts the upstream
// connection back in its endpoint's pool (closed there if the pool is full): a client
// idle between requests must not pin an upstream connection (9,000 idle keep-alive
// clients used to hold 9,000 of them). It costs a busy client nothing more than the
// keep-alive wait did: the deadline moves once to the hold and once back to the stream
// idle when the next request comes, as it moved to the keep-alive idle and back. It
// reports false when the connection is to close (the client left or it was woken).
//
// The same hold decides when an idle connection gives its buffers back (idled).
func (c *h1conn) holdUp() bool {
	c.idled = false
	hold := c.env.Hold()
	if c.br.Buffered() > 0 || hold >= c.env.KeepAliveIdle {
		return true
	}
	c.tc.SetIdleTimeout(hold)
	_, err := c.br.Peek(1)
	if err == nil {
		return true
	}
	if !upstream.IsTimeout(err) {
		return false
	}
	c.releaseUp()
	c.idled = true
	return true
}

// releaseBufs gives the idle connection's buffers back to the pools.
func (c *h1conn) releaseBufs() {
	listen.PutReader(c.br)
	c.br = nil
	putWriter(c.bw)
	c.bw = nil
}

// park hands the idle connection to the listener's Parker until its next request (or
// the end of its keep-alive idle, as waiting on the socket would have been), reporting
// whether it did. Over TLS it parks as well: the hold's read ended in a timeout, so
// crypto/tls holds no decrypted bytes and no complete record (a Read processes every
// complete record it has before it waits), only part of one whose rest is still to
// come on the socket, which wakes the connection as any input does.
func (c *h1conn) park() bool {
	ic := &idleConn{env: c.env, kind: c.kind, tc: c.tc, client: c.client, local: c.local, end: c.end}
	if !c.tc.Park(time.Now().Add(c.env.KeepAliveIdle), ic.resume) {
		return false
	}
	// Parked: another goroutine may resume it at once, with an h1conn of its own.
	c.recycle()
	return true
}

// wakeRead waits (KeepAliveIdle, set by the caller) for the next request's first bytes
// with a small read of its own, then takes pooled buffers again, the bytes read first
// in the reader. An error ends the connection (the client left, the idle timeout, a
// drain's wake-up).
func (c *h1conn) wakeRead() error {
	n, err := c.tc.Read(c.small[:])
	if n == 0 {
		if err == nil {
			err = io.ErrNoProgress
		}
		return err
	}
	c.pre = prefixReader{b: c.small[:n], conn: c.tc}
	c.br = listen.GetReader(&c.pre)
	c.rd.Reset(c.br)
	c.bw = getWriter(c.tc)
	return nil
}

// overloadReply answers a request meshd sheds while past its overload watermark: 503
// overloaded, and the connection closes, so the client goes elsewhere or comes back
// later on a new one.
func (c *h1conn) overloadReply() {
	c.env.OverloadRejected[c.kind].Add(1)
	c.startRecord(c.env.State.Load())
	if req := &c.req; req.HasBody() && !req.ExpectContinue && !req.Chunked && req.ContentLength <= int64(c.br.Size()) {
		// A body left unread would make the close a reset, which can lose the answer.
		_, _ = c.br.Discard(int(req.ContentLength))
	}
	c.localReply(503, forward.CodeOverloaded, "meshd: overloaded, try again later\n", true)
	c.observe()
}

// releaseUp returns the kept upstream connection to its pool.
func (c *h1conn) releaseUp() {
	if c.up != nil {
		c.up.Pool.Put(c.up)
		c.up = nil
	}
}

// handle serves one request; false means close the downstream connection.
func (c *h1conn) handle() bool {
	req := &c.req
	snap := c.env.State.Load()
	c.startRecord(snap)
	c.rh = forward.RouteRules{}

	target := req.Target
	authority := req.Host
	scheme := "http"
	if c.tc.TLS != nil {
		scheme = "https"
	}
	if len(target) > 0 && target[0] != '/' && target != "*" && req.Method != "CONNECT" {
		sch, auth, path, ok := h1.SplitAbsoluteTarget(target)
		if !ok {
			return c.localReply(400, forward.CodeBadRequest, "meshd: malformed request target\n", true)
		}
		scheme, authority, target = sch, auth, path
	}
	if req.Method == "CONNECT" {
		return c.localReply(405, forward.CodeBadRequest, "meshd: CONNECT is not supported\n", true)
	}
	if forward.EqualFoldASCII(req.Upgrade, "h2c") {
		// An h2c upgrade is refused by ignoring it (RFC 9113 §3.1 obsoletes it; a
		// client must cope): the request is served as HTTP/1.1, Upgrade and the
		// HTTP2-Settings field (Connection names it) are not forwarded.
		req.Upgrade = ""
	}
	c.rr = router.Request{Authority: authority, Method: req.Method, Path: target, Scheme: scheme, Header: &c.hdrs}
	if ct, ok := req.Get("content-type"); ok && len(ct) >= 16 && ct[:16] == "application/grpc" {
		c.rr.GRPC = true
	}
	d := forward.ResolveCached(snap, c.env.Passthrough, c.kind, &c.rr, c.local, c.tc.Orig, c.fwd.Draw(), &c.hosts)
	c.recordDecision(&d)
	if d.Failed() || !c.env.Authorize(snap, &d, c.tc.Peer, &c.rr) {
		return c.drainBodyThenReply(d.Status, d.Code, d.Msg)
	}
	if ok, wait := d.Admit(snap); !ok {
		return c.rateLimitReply(wait)
	}
	if req.ExpectContinue {
		// Answer 100 Continue ourselves and drop Expect: relaying it would leave the
		// client waiting for an interim response while meshd waits for the body.
		req.Headers = forward.DeleteHeader(req.Headers, "expect")
		if _, err := c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
			return false
		}
		if err := c.bw.Flush(); err != nil {
			return false
		}
	}
	c.aff = forward.Affinity{}
	if h := d.Cluster.Balancer().HashOn(); h != nil {
		c.affinity(h) // before the forwarding rules touch the head
	}
	if d.Path != "" { // a gateway route's rewrites
		target = d.Path
	}
	if d.Host != "" {
		req.Host = d.Host
	}
	// The forwarding rules apply once, whatever the upstream speaks.
	c.fwd.Apply(req, c.client, c.tc.Peer, c.kind == forward.Ingress, scheme)
	if c.rh = d.Rules(); c.rh.Any() {
		if c.rh.Vars() { // the address string is built only for a rule that uses it
			c.hv = forward.RouteVars(&d, c.tc.RemoteAddr().String(), c.tc.Peer, snap.Node())
		}
	}
	c.recHdrs.applied = true
	if d.Cluster.HTTP2() {
		return c.bridge(snap, &d, target) // the route's request rules apply to its net/http head
	}
	if c.rh.Any() {
		c.fwd.ApplyRoute(req, c.rh, &c.hv)
	}
	return c.forward(&d, target)
}

// bodyPool holds the buffers of request bodies larger than the read buffer but within
// the replay bound (of the default size; a larger configured bound allocates).
var bodyPool = sync.Pool{New: func() any { b := make([]byte, forward.DefaultMaxReplayBody); return &b }}

// keepBody makes a sized request body replayable when it fits the replay bound: one
// that fits the read buffer is peeked, not consumed, until the exchange is done; a
// larger one is read into a pooled buffer first. Chunked and larger bodies stream (and
// are retried only when none of them was sent). It reports false when the client failed
// to deliver the body (answered already).
func (c *h1conn) keepBody() bool {
	req := &c.req
	c.x.body, c.x.replayable, c.x.waitedBody = nil, !req.HasBody(), false
	if req.Chunked || req.ContentLength <= 0 {
		return true
	}
	if req.ContentLength > int64(c.env.ReplayBound()) {
		return true
	}
	n := int(req.ContentLength)
	c.x.waitedBody = c.br.Buffered() < n
	if n <= c.br.Size() {
		b, err := c.br.Peek(n)
		if err != nil {
			c.clientBodyReply(&forward.ClientError{Err: err})
			return false
		}
		c.x.body, c.x.replayable = b, true
		return true
	}
	if n <= forward.DefaultMaxReplayBody {
		c.bodyBuf = bodyPool.Get().(*[]byte)
	} else {
		b := make([]byte, n)
		c.bodyBuf = &b
	}
	b := (*c.bodyBuf)[:n]
	if _, err := io.ReadFull(c.br, b); err != nil {
		c.putBody()
		c.clientBodyReply(&forward.ClientError{Err: err})
		return false
	}
	c.x.body, c.x.replayable = b, true
	return true
}

// putBody returns a pooled body buffer.
func (c *h1conn) putBody() {
	if c.bodyBuf != nil {
		if cap(*c.bodyBuf) == forward.DefaultMaxReplayBody {
			bodyPool.Put(c.bodyBuf)
		}
		c.bodyBuf = nil
	}
}

// forward relays one request to an HTTP/1.1 upstream through the pipeline and the
// response back: the hot path. It reports whether the downstream connection can be kept.
func (c *h1conn) forward(d *forward.Decision, target string) bool {
	req := &c.req
	var call forward.Call
	idle := call.Init(d, c.env.StreamIdle, 0)
	c.tc.SetIdleTimeout(idle)
	c.x.target, c.x.idle, c.x.upgrade, c.x.sent, c.x.u = target, idle, req.Upgrade != "", false, nil
	call.NoRetry = c.x.upgrade
	call.Span = c.span
	c.aff.Apply(&call)
	if !c.keepBody() {
		return false
	}
	if !c.x.waitedBody {
		// Nothing was read from the client since the head's reading (no body, one
		// already buffered, or one the attempt streams): that reading stands for the
		// first attempt's start. Waiting for a body to replay took the client's time,
		// which must not count against the per-try timeout.
		call.Start = c.rec.Start
	}
	defer c.putBody()
	peeked := c.bodyBuf == nil && c.x.body != nil
	if s := c.env.Mirrors.Take(d); s != nil {
		c.mirror(s, target)
	}

	fl, err := forward.Do(&call, c)
	c.rec.Attempts = call.Attempts
	if err != nil {
		if ce, ok := forward.AsClientError(err); ok {
			c.clientBodyReply(ce)
			return false
		}
		// When part of a streamed request body was consumed the downstream framing is
		// lost and the connection must close (failReply closes whenever there is a body).
		return c.failReply(err)
	}
	if peeked {
		_, _ = c.br.Discard(len(c.x.body))
	}
	return c.relay(&fl, c.x.u)
}

// Exchange implements forward.Exchanger: one attempt on a connection to the picked
// endpoint, up to the response head.
func (c *h1conn) Exchange(res balancer.Result, hard time.Time) (int, error) {
	pool := res.Endpoint.Meta.(*upstream.Pool)
	u, sent, err := c.exchange(pool, c.x.target, c.x.body, c.x.upgrade, c.x.replayable, c.x.idle, hard)
	c.x.sent = c.x.sent || sent
	c.x.u = u
	if err != nil {
		return 0, err
	}
	return c.resp.Status, nil
}

// SetHeader implements forward.Exchanger: the field is set among the extra fields the
// request is written with (replacing one of the same name), and the request's own
// fields of that name are removed, so the upstream gets one value (a caller's
// traceparent is replaced by the attempt's, not repeated after it).
func (c *h1conn) SetHeader(name, value string) {
	hs := c.req.Headers[:0]
	for _, h := range c.req.Headers {
		if !forward.EqualFoldBoth(h.Name, name) {
			hs = append(hs, h)
		}
	}
	c.req.Headers = hs
	for i := range c.fwd.Extra {
		if forward.EqualFoldBoth(c.fwd.Extra[i].Name, name) {
			c.fwd.Extra[i].Value = value
			return
		}
	}
	c.fwd.Extra = append(c.fwd.Extra, h1.Header{Name: name, Value: value})
}

// Replayable implements forward.Exchanger.
func (c *h1conn) Replayable() bool { return c.x.replayable || !c.x.sent }

// Header implements forward.Exchanger.
func (c *h1conn) Header(name string) (string, bool) { return c.resp.Get(name) }

// Discard implements forward.Exchanger.
func (c *h1conn) Discard() {
	drainRetried(c.x.u, &c.resp)
	c.x.u = nil
}

// Wait implements forward.Exchanger: it waits d for the next attempt and reports false
// as soon as the client closes or resets its connection. Nothing is read: the kernel is
// asked to peek (MSG_PEEK) when the socket turns readable, so buffered request bytes and
// a peeked request body stay where they are. Over TLS the socket under it is peeked:
// a reset or a close without close_notify ends the wait; bytes (a TLS record, which
// may be the client's close_notify) count as the client still there.
func (c *h1conn) Wait(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	if c.tc.InSession() {
		// The session holds the socket's read lock: no wait for the client's input is
		// possible. The client is looked at before and after a plain sleep instead (a
		// client that leaves meanwhile is seen at its end, not at once).
		if gone, _ := c.tc.PeerGone(); gone {
			return false
		}
		forward.Sleep(context.Background(), d)
		gone, _ := c.tc.PeerGone()
		return !gone
	}
	end := time.Now().Add(d)
	tcp := c.tc.TCP()
	if tcp == nil {
		return forward.Sleep(context.Background(), d)
	}
	rc, err := tcp.SyscallConn()
	if err != nil {
		return forward.Sleep(context.Background(), d)
	}
	_ = tcp.SetReadDeadline(end)
	defer c.tc.Timer.Forget() // the connection's own deadline is applied again on next use
	gone, more := false, false
	err = rc.Read(func(fd uintptr) bool {
		// Not readable yet (empty): wait, bounded by the read deadline. Gone: reset, or the
		// client closed. More: pipelined bytes, the client is there.
		var empty bool
		gone, more, empty = listen.PeekInput(fd)
		return !empty
	})
	_ = tcp.SetReadDeadline(time.Time{})
	if gone {
		return false
	}
	if err == nil && more {
		return forward.Sleep(context.Background(), time.Until(end))
	}
	return true // the deadline ended the wait
}

// relay sends the response the final attempt got (its head read on u) to the client:
// interim responses, a protocol switch, or the response with its body.
func (c *h1conn) relay(fl *forward.Flight, u *upstream.Conn) bool {
	req := &c.req
	pool := u.Pool
	start := fl.Start
	// Interim responses: 101 switches protocols, other 1xx are relayed to HTTP/1.1
	// clients and flushed at once (103 Early Hints is useless once the final response
	// is there); an HTTP/1.0 client must not get them (RFC 9110 §15.2), so they are
	// dropped for it.
	resp := &c.resp
	for interim := 1; resp.Status >= 100 && resp.Status < 200 && resp.Status != 101; interim++ {
		if interim > h1.MaxInterim {
			pool.Discard(u)
			err := &upstream.Error{Kind: upstream.Protocol, Err: errors.New("upstream sent more than " + strconv.Itoa(h1.MaxInterim) + " interim (1xx) responses")}
			fl.End(balancer.DoneInfo{Err: err, Status: resp.Status, Latency: time.Since(start)}, true)
			return c.failReply(err) && !req.HasBody()
		}
		if req.Minor > 0 {
			err := h1.WriteResponseHead(c.bw, resp, nil, false, false)
			if err == nil {
				err = c.bw.Flush()
			}
			if err != nil {
				pool.Discard(u)
				fl.End(balancer.DoneInfo{Err: err}, false)
				return false
			}
		}
		if err := readResponse(u, resp, req.Method); err != nil {
			pool.Discard(u)
			fl.End(balancer.DoneInfo{Err: err}, true)
			c.failReply(upstream.Wrap(err, isMalformed))
			return false
		}
	}
	if resp.Status == 101 {
		if !upgradeAsked(req.Upgrade, resp.Upgrade) {
			// RFC 9110 §7.8: a server switches only to a protocol the client listed in
			// Upgrade; anything else would hand the client bytes it cannot read.
			pool.Discard(u)
			err := &upstream.Error{Kind: upstream.Protocol, Err: errors.New("upstream switched protocols to \"" + resp.Upgrade + "\" which the request did not ask for")}
			fl.End(balancer.DoneInfo{Err: err, Status: 101, Latency: time.Since(start)}, true)
			return c.failReply(err) && !req.HasBody()
		}
		fl.End(balancer.DoneInfo{Status: 101, Latency: time.Since(start)}, true)
		return c.tunnel(u)
	}

	if c.obs != nil || c.span != nil {
		c.rec.Upstream = fl.Res.Endpoint.Address
		c.rec.UpstreamTime = time.Since(start)
		c.rec.Resp = resp
	}
	closeDown := c.closing()
	untilClose := !resp.NoBody && !resp.Chunked && resp.ContentLength < 0
	dechunk := resp.Chunked && req.Minor == 0 // an HTTP/1.0 client cannot read chunked
	if untilClose || dechunk {
		closeDown = true
	}
	status := resp.Status
	c.rec.Status = status
	written := c.tc.Written // what reached the client before this response: see midBodyFailure
	var extra []h1.Header
	if c.rh.Any() {
		c.respExtra = forward.ApplyRouteResponse(resp, c.respExtra[:0], c.rh, &c.hv)
		extra = c.respExtra
	}
	if c.aff.SetCookie != "" { // meshd's own field, after the route's rules
		if !c.rh.Any() {
			extra = c.respExtra[:0]
		}
		extra = append(extra, h1.Header{Name: "Set-Cookie", Value: c.aff.SetCookie})
		c.respExtra = extra
	}
	if err := h1.WriteResponseHead(c.bw, respForClient(resp, dechunk), extra, false, closeDown); err != nil {
		pool.Discard(u)
		fl.End(balancer.DoneInfo{Err: err, Status: status}, false)
		return false
	}
	if !resp.NoBody {
		var err error
		var n int64
		if dechunk {
			n, err = h1.BodyCopy{Chunked: true, Dechunk: true}.Copy(c.bw, u.BR)
		} else {
			n, err = copyResponseBody(c.bw, u.BR, resp, untilClose)
		}
		c.rec.BytesSent = n
		if err != nil && !(untilClose && errors.Is(err, io.EOF)) {
			pool.Discard(u)
			blame := upstreamSide(err)
			fl.End(balancer.DoneInfo{Err: err, Status: status, Latency: time.Since(start)}, blame)
			if blame {
				return c.midBodyFailure(err, written, untilClose || dechunk)
			}
			return false
		}
	}
	flushErr := c.bw.Flush()
	latency := time.Since(start)
	// The request's end too: observe reads no clock. The final attempt started with the
	// request unless an earlier one failed.
	c.dur, c.relayed = latency, true
	if start != c.rec.Start {
		c.dur += start.Sub(c.rec.Start)
	}
	switch {
	case resp.Close || untilClose || dechunk:
		pool.Discard(u)
	case pool.Cluster().Shared() || flushErr != nil || closeDown:
		pool.Put(u) // limited pools share connections rather than keep them per downstream
	default:
		// Kept for this downstream connection's next request: like a pooled one, a
		// failure on it may be a stale keep-alive the server closed meanwhile.
		// (LastUsed is not read before Pool.Put stamps it.)
		u.Reused = true
		c.up = u
	}
	// The slot is freed after the connection is back in the pool: a request waiting for
	// the slot of a maxConnections pool then finds the connection instead of dialling
	// another (TestConnectionPoolLimits saw 2 connections under load).
	fl.End(balancer.DoneInfo{Status: status, Latency: latency}, true)
	c.linger = flushErr == nil && closeDown
	return flushErr == nil && !closeDown
}

// midBodyFailure ends a response whose body the upstream failed to deliver (reset,
// early close, malformed chunking) after its head was read. written is the client
// connection's byte count before the response head was written. It reports whether the
// downstream connection can be kept.
//
// If nothing of the response has reached the client yet (head and body bytes are all
// still in c.bw), they are dropped and the client gets meshd's 502 instead: an answer it
// can act on rather than a cut connection. Otherwise every byte received is delivered and
// the connection closes: with Content-Length (fewer bytes than announced) or chunked
// framing (no last chunk) the client sees the message is truncated, so an orderly close
// (FIN) is enough and keeps the bytes a reset would discard from the kernel's buffers. A
// body delimited by the close itself (until close, or de-chunked for an HTTP/1.0 client)
// would look complete after an orderly close: that client gets a reset.
func (c *h1conn) midBodyFailure(err error, written int64, closeDelimited bool) bool {
	if c.tc.Written == written {
		c.bw.Reset(c.tc)
		c.rec.BytesSent = 0
		return c.failReply(upstream.Wrap(err, isMalformed))
	}
	if closeDelimited {
		c.tc.Abort()
		return false
	}
	if ferr := c.bw.Flush(); ferr != nil {
		c.env.Log.Debug("flushing a truncated response failed", "err", ferr)
	} else {
		c.linger = true // the truncated response's bytes must not be dropped by a reset
	}
	return false
}

// startRecord begins the record of the request just read: its start, for the
// statistics; all of it when snap has observers.
func (c *h1conn) startRecord(snap *state.Snapshot) {
	c.obs = snap.Observers()
	c.routeStats, c.clusterStats, c.gatewayStats, c.span = nil, nil, nil, nil
	c.recHdrs.applied = false
	c.env.ListenerStats(c.kind).InFlight.Add(1)
	if c.obs == nil && c.env.Tracer == nil {
		// Without observers or a tracer the start serves durations only: the monotonic
		// reading taken before the head was parsed does, when the head was whole in the
		// buffer then (the statistics count from the head's arrival, not from a slow
		// client's first byte).
		start := c.readAt
		if start.IsZero() || !c.rd.HeadWasBuffered() {
			start = time.Now()
		}
		c.rec.Start, c.rec.Status, c.rec.Code, c.rec.Attempts = start, 0, "", 0
		c.relayed = false
		return
	}
	c.relayed = false
	req := &c.req
	c.rec = telemetry.Request{
		Start: time.Now(), Listener: c.kind.String(), Protocol: req.Proto, Method: req.Method,
		Authority: req.Host, Path: req.Target, Remote: c.tc.RemoteAddr().String(), Req: &c.recHdrs,
		TLS: c.tc.TLS, Peer: c.tc.Peer,
	}
	if req.ContentLength > 0 {
		c.rec.BytesReceived = req.ContentLength
	}
	if c.env.Tracer != nil {
		c.span = c.env.Tracer.StartRequest(&c.hdrs, &c.rec)
	}
}

// recordDecision notes where the request was routed.
func (c *h1conn) recordDecision(d *forward.Decision) {
	if d.Policy != nil {
		c.routeStats = d.Policy.Stats()
	}
	if d.Cluster != nil {
		c.clusterStats = d.Cluster.Stats()
	}
	c.gatewayStats = d.GatewayStats
	if c.obs != nil || c.span != nil {
		forward.NoteRoute(&c.rec, d)
	}
}

// observe records the finished request in the statistics and hands its record to the
// observers.
func (c *h1conn) observe() {
	if c.relayed {
		forward.FinishAfter(&c.rec, c.dur, c.env.ListenerStats(c.kind), c.routeStats, c.clusterStats, c.gatewayStats, c.span, c.obs)
	} else {
		forward.Finish(&c.rec, c.env.ListenerStats(c.kind), c.routeStats, c.clusterStats, c.gatewayStats, c.span, c.obs)
	}
	c.span = nil
	c.rec.Req, c.rec.Resp = nil, nil
}

// isMalformed reports a response the codec refused.
func isMalformed(err error) bool {
	var he *h1.Error
	return errors.As(err, &he)
}

var writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, downstreamWriteBuf) }}

func getWriter(w io.Writer) *bufio.Writer {
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(w)
	return bw
}

func putWriter(bw *bufio.Writer) { bw.Reset(nil); writerPool.Put(bw) }

// closing reports whether this response must be the connection's last: the client
// asked, the server drains, or a reload removed the listener the connection came to.
// The response then says Connection: close.
func (c *h1conn) closing() bool {
	return c.req.Close || c.env.Draining.Load() || c.tc.Drain.Load() || c.env.IsOverloaded()
}

// localReply answers with a response meshd generated itself. It reports whether the
// connection can be kept.
func (c *h1conn) localReply(status int, code, msg string, closeConn bool) bool {
	c.rec.Status, c.rec.Code = status, code
	hdr := [...]h1.Header{{Name: forward.HeaderError, Value: code}, {Name: "Content-Type", Value: "text/plain; charset=utf-8"}}
	closeConn = closeConn || c.closing()
	if err := h1.WriteSimpleResponse(c.bw, status, hdr[:], []byte(msg), closeConn); err != nil {
		return false
	}
	if err := c.bw.Flush(); err != nil {
		return false
	}
	c.linger = closeConn
	return !closeConn
}

// joinedHeaders is the router's view of a request head: a router.HeaderJoiner, so a
// header condition sees every value of a repeated field. Values are joined in buf, reused
// across the connection's requests; a field sent once is returned as is, without copying.
type joinedHeaders struct {
	req *h1.Request
	buf []byte
}

func (h *joinedHeaders) Get(name string) (string, bool) { return h.req.Get(name) }

// GetJoined returns the values of every field called name (lower case) joined with ",".
// The value is valid until the next GetJoined; the router does not retain it.
func (h *joinedHeaders) GetJoined(name string) (string, bool) {
	hs := h.req.Headers
	first := -1
	for i := range hs {
		if !forward.EqualFoldASCII(hs[i].Name, name) {
			continue
		}
		if first < 0 {
			first = i
			continue
		}
		h.buf = append(h.buf[:0], hs[first].Value...)
		for j := i; j < len(hs); j++ {
			if forward.EqualFoldASCII(hs[j].Name, name) {
				h.buf = append(h.buf, ',')
				h.buf = append(h.buf, hs[j].Value...)
			}
		}
		return forward.Str(h.buf), true
	}
	if first < 0 {
		return "", false
	}
	return hs[first].Value, true
}

// rateLimitReply answers 429 with Retry-After; a small request body is dropped so the
// connection can be kept, as drainBodyThenReply does.
func (c *h1conn) rateLimitReply(wait time.Duration) bool {
	closeConn := c.closing()
	if c.req.HasBody() {
		if c.req.ExpectContinue || c.req.Chunked || c.req.ContentLength > int64(c.br.Size()) {
			closeConn = true
		} else if _, err := c.br.Discard(int(c.req.ContentLength)); err != nil {
			closeConn = true
		}
	}
	c.rec.Status, c.rec.Code = 429, forward.CodeRateLimited
	hdr := [...]h1.Header{{Name: forward.HeaderError, Value: forward.CodeRateLimited}, {Name: "Retry-After", Value: forward.RetryAfterValue(wait)},
		{Name: "Content-Type", Value: "text/plain; charset=utf-8"}}
	if h1.WriteSimpleResponse(c.bw, 429, hdr[:], []byte("meshd: rate limit exceeded\n"), closeConn) != nil || c.bw.Flush() != nil {
		return false
	}
	c.linger = closeConn
	return !closeConn
}

// drainBodyThenReply answers a local error; a request body that is small is read and
// dropped so the connection can be kept, a larger one closes it.
func (c *h1conn) drainBodyThenReply(status int, code, msg string) bool {
	if !c.req.HasBody() {
		return c.localReply(status, code, msg, false)
	}
	if c.req.ExpectContinue {
		// The client waits for 100 Continue before sending the body (RFC 9110 §10.1.1):
		// reading it here would wait for the idle timeout. Answer now; since the client
		// may send the body anyway, the connection's framing is unknown and it closes.
		return c.localReply(status, code, msg, true)
	}
	if !c.req.Chunked && c.req.ContentLength <= int64(c.br.Size()) {
		if _, err := c.br.Discard(int(c.req.ContentLength)); err == nil {
			return c.localReply(status, code, msg, false)
		}
	}
	return c.localReply(status, code, msg, true)
}

// takeConn reuses the connection kept from the previous exchange when the balancer
// picked the same endpoint, and otherwise gets one from the endpoint's pool.
func (c *h1conn) takeConn(p *upstream.Pool) (*upstream.Conn, error) {
	if u := c.up; u != nil {
		c.up = nil
		if u.Pool == p {
			return u, nil
		}
		u.Pool.Put(u)
	}
	return p.Get(context.Background())
}

// upgradeAsked reports whether a 101's Upgrade protocol is one the request's Upgrade
// field listed (both empty: not an upgrade the client asked for). Protocol names
// compare case-insensitively, versions ("websocket/13") included.
func upgradeAsked(requested, switched string) bool {
	if requested == "" || switched == "" {
		return false
	}
	for list := requested; list != ""; {
		var elem string
		elem, list = forward.NextToken(list)
		if elem != "" && forward.EqualFoldBoth(elem, switched) {
			return true
		}
	}
	return false
}

// exchange sends the request on a connection to pool's endpoint and reads the response
// head. sent reports whether any of the request was written, so a streamed body may
// have been consumed. hard bounds the exchange (zero: none). On error the connection is
// already discarded.
//
// A kept-alive connection that turns out to have been closed by the server is replaced
// once, without any retry policy, when the body can be replayed and the request provably
// was not answered (see staleReplay). This is the stale keep-alive race every client
// has, not a retry: configured retries are forwardAttempts' business.
func (c *h1conn) exchange(pool *upstream.Pool, target string, body []byte, upgrade, replayable bool, idle time.Duration, hard time.Time) (u *upstream.Conn, sent bool, err error) {
	for attempt := 0; ; attempt++ {
		if attempt == 0 {
			u, err = c.takeConn(pool)
		} else {
			// A new connection: another idle one may be just as stale.
			u, err = pool.DialNew(context.Background())
		}
		if err != nil {
			return nil, sent, err
		}
		u.Timer.Idle = idle
		// Always, zero included: a connection kept from this client's previous request
		// (c.up) still carries that request's deadline, which pool.put would have cleared.
		u.SetHardDeadline(hard)
		sent = true
		rx, tx, buffered := u.RX, u.TX, u.BR.Buffered()
		err = c.writeRequest(u, target, body, upgrade)
		if err == nil {
			err = readResponse(u, &c.resp, c.req.Method)
		}
		if err == nil {
			return u, sent, nil
		}
		reused := u.Reused
		pool.Discard(u)
		if reused && replayable && attempt == 0 && c.staleReplay(err, u.TX == tx, u.RX == rx && buffered == 0) {
			continue
		}
		return nil, sent, err
	}
}

// staleReplay decides whether a request that failed on a reused connection may be sent
// again on a new one without a retry policy. The server must have closed the connection
// without answering: a clean EOF or a reset (ECONNRESET, EPIPE) with no byte of response
// read. A partial or malformed response, or a timeout, shows the server was working on
// the request. Then, as net/http does, the request is replayed when nothing of it was
// written, or when its method is idempotent (RFC 9110 §9.2.2) or it carries an
// Idempotency-Key: the server may have processed it before closing.
func (c *h1conn) staleReplay(err error, wroteNothing, readNothing bool) bool {
	if _, fromClient := forward.AsClientError(err); !readNothing || fromClient || upstream.IsTimeout(err) {
		return false
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		return false
	}
	return wroteNothing || idempotent(&c.req)
}

// idempotent reports whether req may be repeated without changing its effect: an
// idempotent method (RFC 9110 §9.2.2) or an Idempotency-Key field (either spelling, as
// net/http accepts).
func idempotent(req *h1.Request) bool {
	switch req.Method {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	if _, ok := req.Get("idempotency-key"); ok {
		return true
	}
	_, ok := req.Get("x-idempotency-key")
	return ok
}

// drainRetried disposes of a response that is about to be retried: a small sized body
// is read and dropped so the connection can be reused; anything else (chunked, until
// close, large, Connection: close, a read error) closes the connection.
func drainRetried(u *upstream.Conn, resp *h1.Response) {
	switch {
	case resp.Close:
	case resp.NoBody || resp.ContentLength == 0:
		u.Pool.Put(u)
		return
	case !resp.Chunked && resp.ContentLength > 0 && resp.ContentLength <= forward.MaxDrainBody:
		if _, err := u.BR.Discard(int(resp.ContentLength)); err == nil {
			u.Pool.Put(u)
			return
		}
	}
	u.Pool.Discard(u)
}

// upstreamSide reports whether a body relay error came from the upstream (a read) rather
// than the downstream client (a write), for outlier detection and the breaker.
func upstreamSide(err error) bool {
	var be *h1.BodyError
	if errors.As(err, &be) {
		return be.Op == "read"
	}
	return true // a malformed chunked body from the upstream (*h1.Error)
}

// respForClient adjusts framing for an HTTP/1.0 client of a chunked response: the body
// is sent de-chunked and delimited by closing the connection.
func respForClient(resp *h1.Response, dechunk bool) *h1.Response {
	if !dechunk {
		return resp
	}
	cp := *resp
	cp.Chunked = false
	cp.ContentLength = -1
	return &cp
}

// clientBodyReply answers a request whose body the client failed to deliver: 408 when
// it stalled past the idle timeout, 400 otherwise. The connection closes: its framing
// is lost.
func (c *h1conn) clientBodyReply(e *forward.ClientError) {
	status := 400
	if upstream.IsTimeout(e.Err) {
		status = 408
		c.tc.SetIdleTimeout(c.env.StreamIdle) // the expired deadline would fail the reply too
	}
	c.env.Log.Debug("request body failed", "status", status, "err", e.Err)
	c.localReply(status, forward.CodeBadRequest, "meshd: "+e.Error()+"\n", true)
}

func (c *h1conn) writeRequest(u *upstream.Conn, target string, body []byte, upgrade bool) error {
	req := &c.req
	if err := h1.WriteRequestHead(u.BW, req, target, c.fwd.Extra, upgrade); err != nil {
		return err
	}
	if body != nil {
		if _, err := u.BW.Write(body); err != nil {
			return err
		}
	} else if req.HasBody() {
		if _, err := h1.CopyBody(u.BW, c.br, req.ContentLength, req.Chunked, false); err != nil {
			var be *h1.BodyError
			var pe *h1.Error
			if errors.As(err, &pe) || (errors.As(err, &be) && be.Op == "read") {
				return &forward.ClientError{Err: err}
			}
			return err
		}
	}
	// The response is read next: FlushAwait saves the read that would find nothing yet.
	return u.FlushAwait()
}

func readResponse(u *upstream.Conn, resp *h1.Response, method string) error {
	if u.RD == nil {
		u.RD = h1.NewReader(u.BR, Limits)
	}
	return u.RD.ReadResponse(resp, method)
}

// failReply answers an upstream failure with meshd's status and code.
func (c *h1conn) failReply(err error) bool {
	status, code := forward.Status(err)
	if code == forward.CodeOverflow {
		c.rec.Status, c.rec.Code = status, code
		hdr := [...]h1.Header{{Name: forward.HeaderError, Value: code}, {Name: forward.HeaderLimit, Value: upstream.LimitOf(err)},
			{Name: "Content-Type", Value: "text/plain; charset=utf-8"}}
		msg := "meshd: " + err.Error() + "\n"
		closeConn := c.req.Close || c.req.HasBody()
		if h1.WriteSimpleResponse(c.bw, status, hdr[:], []byte(msg), closeConn) != nil || c.bw.Flush() != nil {
			return false
		}
		c.linger = closeConn
		return !closeConn
	}
	c.env.Log.Debug("upstream failure", "status", status, "code", code, "err", err)
	return c.localReply(status, code, "meshd: "+err.Error()+"\n", c.req.HasBody())
}

// tunnel relays bytes both ways after a 101 Switching Protocols (WebSocket and other
// upgrades), propagating half-closes. An open tunnel may idle (TCP keep-alive finds dead
// peers); once one direction has ended, the other gets StreamIdle to finish.
func (c *h1conn) tunnel(u *upstream.Conn) bool {
	if err := h1.WriteResponseHead(c.bw, &c.resp, nil, true, false); err != nil {
		u.Pool.Discard(u)
		return false
	}
	if err := c.bw.Flush(); err != nil {
		u.Pool.Discard(u)
		return false
	}
	c.tc.Timer = deadline.Timer{}
	u.Timer = deadline.Timer{}
	_ = c.tc.Conn.SetDeadline(time.Time{})
	_ = u.NetConn.SetDeadline(time.Time{})
	done := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(u.NetConn, c.br) // client → upstream, including bytes already buffered
		closeWrite(u.NetConn)
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(c.tc.Conn, u.BR) // upstream → client
		closeWrite(c.tc.Conn)
		done <- struct{}{}
	}()
	<-done
	grace := time.Now().Add(c.env.StreamIdle)
	_ = c.tc.Conn.SetDeadline(grace)
	_ = u.NetConn.SetDeadline(grace)
	<-done
	u.Pool.Discard(u)
	return false
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

// copyResponseBody relays a response body. Bodies of unknown length (chunked or until
// close) are flushed whenever the upstream has nothing more buffered, so streams
// (server-sent events, long polls) are not held back; sized bodies flush once at the end.
func copyResponseBody(dst *bufio.Writer, src *bufio.Reader, resp *h1.Response, untilClose bool) (int64, error) {
	if resp.Chunked || untilClose {
		return h1.CopyBodyFlush(dst, src, resp.ContentLength, resp.Chunked, untilClose)
	}
	return h1.CopyBody(dst, src, resp.ContentLength, false, false)
}

// forwardedHeaders is a request head as forwarded: the request's own fields, then the
// forwarding fields H1Forwarding added (after Apply; before it, only the request's).
type forwardedHeaders struct {
	req     *h1.Request
	fwd     *forward.H1Forwarding
	applied bool
}

func (h *forwardedHeaders) Get(name string) (string, bool) {
	if v, ok := h.req.Get(name); ok {
		return v, true
	}
	if h.applied {
		for _, f := range h.fwd.Extra {
			if forward.EqualFoldASCII(f.Name, name) {
				return f.Value, true
			}
		}
	}
	return "", false
}

// affinity finds the request's key for the cluster's hash policy: a header's value, the
// client's IP address, or the affinity cookie (generated when absent). Header and source
// IP keys allocate nothing.
func (c *h1conn) affinity(h *balancer.HashOn) {
	switch {
	case h.Header != "":
		c.aff.FromHeader(c.req.Get(h.Header))
	case h.SourceIP:
		c.aff.FromSourceIP(c.client)
	case h.Cookie != "":
		for i := range c.req.Headers {
			f := &c.req.Headers[i]
			if !forward.EqualFoldASCII(f.Name, "cookie") {
				continue
			}
			if v, ok := balancer.CookieValue(f.Value, h.Cookie); ok {
				c.aff.FromCookie(h, v, true, 0)
				return
			}
		}
		c.aff.FromCookie(h, "", false, rand.Uint64())
	}
}
