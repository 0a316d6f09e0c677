package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/meshd/meshd/balancer"
	"github.com/meshd/meshd/internal/h1"
	"github.com/meshd/meshd/resilience"
	"github.com/meshd/meshd/router"
)

const (
	downstreamReadBuf  = 16 << 10
	downstreamWriteBuf = 16 << 10
)

var noDeadline time.Time

var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, downstreamReadBuf) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, downstreamWriteBuf) }}
)

func getReader(r io.Reader) *bufio.Reader {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

func putReader(br *bufio.Reader) { br.Reset(nil); readerPool.Put(br) }

func getWriter(w io.Writer) *bufio.Writer {
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(w)
	return bw
}

func putWriter(bw *bufio.Writer) { bw.Reset(nil); writerPool.Put(bw) }

// randUint64 is the per-request random source for weighted target picks: math/rand/v2's
// global generator is lock-free and per-P, so it costs no contention.
func randUint64() uint64 { return rand.Uint64() }

// h1conn is the state of one downstream HTTP/1.1 connection. Everything in it is reused
// across the connection's requests, so the steady state allocates nothing.
type h1conn struct {
	s    *Server
	kind listenerKind
	tc   *trackedConn
	br   *bufio.Reader
	bw   *bufio.Writer
	rd   *h1.Reader

	req  h1.Request
	resp h1.Response
	rr   router.Request

	hdrs    joinedHeaders // c.req as the router's header getter
	up      *upConn       // upstream connection kept from the previous exchange
	extra   []h1.Header
	scratch []byte
	client  string // the peer IP, for x-forwarded-for
	local   int    // the local port this connection was addressed to (ingress)
	ids     *rand.PCG
}

// codeHeaderTimeout is the x-meshd-error of the 408 for a request head that took longer
// than Options.HeaderTimeout.
const codeHeaderTimeout = "request_header_timeout"

var limits = h1.Limits{MaxHeaderBytes: 60 << 10, MaxHeaders: 100}

func (s *Server) serveH1(tc *trackedConn, br *bufio.Reader, kind listenerKind) {
	c := &h1conn{s: s, kind: kind, tc: tc, br: br, bw: getWriter(tc)}
	defer putWriter(c.bw)
	c.rd = h1.NewReader(br, limits)
	c.hdrs.req = &c.req
	c.extra = make([]h1.Header, 0, 4)
	c.scratch = make([]byte, 0, 1024)
	c.ids = rand.NewPCG(rand.Uint64(), rand.Uint64())
	if ta, ok := tc.RemoteAddr().(*net.TCPAddr); ok {
		c.client = ta.IP.String()
	}
	if kind == kindIngress {
		c.local = int(tc.orig.Port())
	}
	defer c.releaseUp()
	for {
		tc.state.Store(connIdle)
		if s.draining.Load() {
			return
		}
		tc.setIdle(s.opts.KeepAliveIdle)
		// Between requests the connection may idle for KeepAliveIdle; once a head has
		// started, it must end within HeaderTimeout however the bytes are paced.
		if _, err := c.br.Peek(1); err != nil {
			return
		}
		tc.timer.setHard(time.Now().Add(s.opts.HeaderTimeout))
		err := c.rd.ReadRequest(&c.req)
		tc.timer.setHard(time.Time{})
		tc.state.Store(connActive)
		if err != nil {
			var he *h1.Error
			if errors.As(err, &he) {
				c.localReply(he.Status, codeBadRequest, "meshd: "+he.Msg+"\n", true)
			} else if isTimeout(err) {
				tc.setIdle(s.opts.StreamIdle) // a fresh deadline for the reply
				c.localReply(408, codeHeaderTimeout, "meshd: request head not complete within "+s.opts.HeaderTimeout.String()+"\n", true)
			}
			return
		}
		tc.setIdle(s.opts.StreamIdle)
		if !c.handle() {
			return
		}
	}
}

// releaseUp returns the kept upstream connection to its pool.
func (c *h1conn) releaseUp() {
	if c.up != nil {
		c.up.pool.put(c.up)
		c.up = nil
	}
}

// closing reports whether this response must be the connection's last: the client
// asked, the server drains, or a reload removed the listener the connection came to.
// The response then says Connection: close.
func (c *h1conn) closing() bool {
	return c.req.Close || c.s.draining.Load() || c.tc.drain.Load()
}

// localReply answers with a response meshd generated itself. It reports whether the
// connection can be kept.
func (c *h1conn) localReply(status int, code, msg string, closeConn bool) bool {
	hdr := [...]h1.Header{{Name: HeaderError, Value: code}, {Name: "Content-Type", Value: "text/plain; charset=utf-8"}}
	closeConn = closeConn || c.closing()
	if err := h1.WriteSimpleResponse(c.bw, status, hdr[:], []byte(msg), closeConn); err != nil {
		return false
	}
	if err := c.bw.Flush(); err != nil {
		return false
	}
	return !closeConn
}

// handle serves one request; false means close the downstream connection.
func (c *h1conn) handle() bool {
	req := &c.req
	snap := c.s.snap.Load()

	target := req.Target
	authority := req.Host
	scheme := "http"
	if len(target) > 0 && target[0] != '/' && target != "*" && req.Method != "CONNECT" {
		sch, auth, path, ok := h1.SplitAbsoluteTarget(target)
		if !ok {
			return c.localReply(400, codeBadRequest, "meshd: malformed request target\n", true)
		}
		scheme, authority, target = sch, auth, path
	}
	if req.Method == "CONNECT" {
		return c.localReply(405, codeBadRequest, "meshd: CONNECT is not supported\n", true)
	}
	c.rr = router.Request{Authority: authority, Method: req.Method, Path: target, Scheme: scheme, Header: &c.hdrs}
	if ct, ok := req.Get("content-type"); ok && len(ct) >= 16 && ct[:16] == "application/grpc" {
		c.rr.GRPC = true
	}
	d := c.s.resolve(snap, c.kind, &c.rr, c.local, c.tc.orig)
	if d.route == nil {
		return c.drainBodyThenReply(d.status, d.code, d.msg)
	}
	rp := snap.res.policy(d.route)
	if refused, wait := snap.res.rateLimited(c.ingressPort(snap), rp); refused {
		return c.rateLimitReply(wait)
	}
	if req.ExpectContinue {
		// Answer 100 Continue ourselves and drop Expect: relaying it would leave the
		// client waiting for an interim response while meshd waits for the body.
		req.Headers = deleteHeader(req.Headers, "expect")
		if _, err := c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
			return false
		}
		if err := c.bw.Flush(); err != nil {
			return false
		}
	}
	if d.cluster.h2 {
		return c.forwardRoundTrip(snap, d, target, scheme)
	}
	return c.forward(d, target, rp)
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
		if !equalFoldASCII(hs[i].Name, name) {
			continue
		}
		if first < 0 {
			first = i
			continue
		}
		h.buf = append(h.buf[:0], hs[first].Value...)
		for j := i; j < len(hs); j++ {
			if equalFoldASCII(hs[j].Name, name) {
				h.buf = append(h.buf, ',')
				h.buf = append(h.buf, hs[j].Value...)
			}
		}
		return str(h.buf), true
	}
	if first < 0 {
		return "", false
	}
	return hs[first].Value, true
}

// ingressPort is the local listener port of an ingress connection, 0 for egress.
func (c *h1conn) ingressPort(snap *Snapshot) int {
	if c.kind != kindIngress {
		return 0
	}
	if c.local != 0 {
		return c.local
	}
	return snap.localNodePort
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
	hdr := [...]h1.Header{{Name: HeaderError, Value: codeRateLimited}, {Name: "Retry-After", Value: retryAfterValue(wait)},
		{Name: "Content-Type", Value: "text/plain; charset=utf-8"}}
	if h1.WriteSimpleResponse(c.bw, 429, hdr[:], []byte("meshd: rate limit exceeded\n"), closeConn) != nil || c.bw.Flush() != nil {
		return false
	}
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

func deleteHeader(hs []h1.Header, lower string) []h1.Header {
	out := hs[:0]
	for _, h := range hs {
		if !equalFoldASCII(h.Name, lower) {
			out = append(out, h)
		}
	}
	return out
}

func equalFoldASCII(s, lower string) bool {
	if len(s) != len(lower) {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if b != lower[i] {
			return false
		}
	}
	return true
}

// str views b as a string without copying; the caller keeps b unchanged while the
// string is in use (until the next request reuses scratch).
func str(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// buildForwardHeaders sets x-forwarded-for (appended), x-forwarded-proto (kept if
// present on egress, where the app is trusted; replaced on ingress) and x-request-id
// (kept if present, generated otherwise). Fields the client named in Connection are
// removed first (RFC 9110 §7.6.1), so naming a forwarding header there cannot make the
// writer drop the value meshd computed. Repeated
// X-Forwarded-For fields are merged into the first one (RFC 9110 §5.3) before the client
// is appended, so the client's address is the last entry whatever it sent. Values are
// built in c.scratch, which is sized so that appends never move it within one request;
// only repeated X-Forwarded-For fields can make it grow.
func (c *h1conn) buildForwardHeaders(scheme string) {
	c.extra = c.extra[:0]
	c.scratch = c.scratch[:0]
	req := &c.req
	if connectionNamesFields(req.Headers) {
		req.Headers = stripConnectionNamed(req.Headers)
	}
	xff, nxff, xffLen := -1, 0, 0
	haveProto, haveID := false, false
	for i := range req.Headers {
		switch n := req.Headers[i].Name; {
		case equalFoldASCII(n, "x-forwarded-for"):
			if xff < 0 {
				xff = i
			}
			nxff++
			xffLen += len(req.Headers[i].Value) + 2
		case equalFoldASCII(n, "x-forwarded-proto"):
			haveProto = true
		case equalFoldASCII(n, "x-request-id"):
			haveID = true
		}
	}
	if c.client != "" {
		if xff >= 0 {
			need := xffLen + len(c.client)
			if need > cap(c.scratch) {
				c.scratch = make([]byte, 0, need+64)
			}
			start := len(c.scratch)
			for i := xff; i < len(req.Headers); i++ {
				h := &req.Headers[i]
				if h.Value == "" || (i > xff && !equalFoldASCII(h.Name, "x-forwarded-for")) {
					continue
				}
				if len(c.scratch) > start {
					c.scratch = append(c.scratch, ", "...)
				}
				c.scratch = append(c.scratch, h.Value...)
			}
			if len(c.scratch) > start {
				c.scratch = append(c.scratch, ", "...)
			}
			c.scratch = append(c.scratch, c.client...)
			req.Headers[xff].Value = str(c.scratch[start:])
			if nxff > 1 {
				req.Headers = removeFieldsAfter(req.Headers, xff, "x-forwarded-for")
			}
		} else {
			c.extra = append(c.extra, h1.Header{Name: "X-Forwarded-For", Value: c.client})
		}
	}
	if haveProto && c.kind == kindIngress {
		// From the network, the scheme is what meshd saw, not what the peer claims.
		req.Headers = deleteHeader(req.Headers, "x-forwarded-proto")
		haveProto = false
	}
	if !haveProto {
		c.extra = append(c.extra, h1.Header{Name: "X-Forwarded-Proto", Value: scheme})
	}
	if !haveID {
		if cap(c.scratch)-len(c.scratch) < 36 {
			c.scratch = make([]byte, 0, 64)
		}
		start := len(c.scratch)
		c.scratch = appendUUID(c.scratch, c.ids.Uint64(), c.ids.Uint64())
		c.extra = append(c.extra, h1.Header{Name: "X-Request-Id", Value: str(c.scratch[start:])})
	}
}

// connectionNamesFields reports whether a Connection field lists a field name (anything
// beyond close, keep-alive and upgrade), so the common request skips stripConnectionNamed.
func connectionNamesFields(hs []h1.Header) bool {
	for i := range hs {
		if !equalFoldASCII(hs[i].Name, "connection") {
			continue
		}
		for list := hs[i].Value; list != ""; {
			var elem string
			elem, list = nextToken(list)
			if elem != "" && !equalFoldASCII(elem, "close") && !equalFoldASCII(elem, "keep-alive") && !equalFoldASCII(elem, "upgrade") {
				return true
			}
		}
	}
	return false
}

// nextToken splits the first element off a comma-separated list, trimming OWS.
func nextToken(list string) (elem, rest string) {
	elem = list
	for i := 0; i < len(list); i++ {
		if list[i] == ',' {
			elem, rest = list[:i], list[i+1:]
			break
		}
	}
	for len(elem) > 0 && (elem[0] == ' ' || elem[0] == '\t') {
		elem = elem[1:]
	}
	for len(elem) > 0 && (elem[len(elem)-1] == ' ' || elem[len(elem)-1] == '\t') {
		elem = elem[:len(elem)-1]
	}
	return elem, rest
}

// stripConnectionNamed removes, in place, the fields a Connection field names. Fields
// the request writer handles itself (Host, framing, Connection, TE, Upgrade, Trailer)
// stay for it to treat. Connection fields are always kept, so the region the compaction
// has already overwritten still holds every Connection value the scan needs.
func stripConnectionNamed(hs []h1.Header) []h1.Header {
	out := hs[:0]
	for _, h := range hs {
		if !writerHandled(h.Name) && namedInConnection(hs, h.Name) {
			continue
		}
		out = append(out, h)
	}
	return out
}

func writerHandled(name string) bool {
	for _, n := range [...]string{"host", "content-length", "transfer-encoding", "connection", "te", "upgrade", "trailer"} {
		if equalFoldASCII(name, n) {
			return true
		}
	}
	return false
}

// namedInConnection reports whether a Connection field in hs lists name.
func namedInConnection(hs []h1.Header, name string) bool {
	for i := range hs {
		if !equalFoldASCII(hs[i].Name, "connection") {
			continue
		}
		for list := hs[i].Value; list != ""; {
			var elem string
			elem, list = nextToken(list)
			if len(elem) == len(name) && equalFoldBoth(elem, name) {
				return true
			}
		}
	}
	return false
}

// equalFoldBoth compares two ASCII strings case-insensitively (equalFoldASCII wants
// its second argument in lower case).
func equalFoldBoth(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// removeFieldsAfter removes, in place, the fields called lower that come after index
// keep, preserving the order of the others.
func removeFieldsAfter(hs []h1.Header, keep int, lower string) []h1.Header {
	out := hs[:keep+1]
	for _, h := range hs[keep+1:] {
		if !equalFoldASCII(h.Name, lower) {
			out = append(out, h)
		}
	}
	return out
}

// appendUUID formats a random (version 4) UUID.
func appendUUID(b []byte, hi, lo uint64) []byte {
	const hex = "0123456789abcdef"
	hi = (hi &^ (0xf << 12)) | (4 << 12)
	lo = (lo &^ (0x3 << 62)) | (0x2 << 62)
	var raw [16]byte
	for i := 0; i < 8; i++ {
		raw[i] = byte(hi >> (56 - 8*i))
		raw[8+i] = byte(lo >> (56 - 8*i))
	}
	for i, v := range raw {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, hex[v>>4], hex[v&0xf])
	}
	return b
}

// takeConn reuses the connection kept from the previous exchange when the balancer
// picked the same endpoint, and otherwise gets one from the endpoint's pool.
func (c *h1conn) takeConn(p *endpointPool) (*upConn, error) {
	if u := c.up; u != nil {
		c.up = nil
		if u.pool == p {
			return u, nil
		}
		u.pool.put(u)
	}
	return p.get(context.Background())
}

// forward relays one request over HTTP/1.1 to a picked endpoint and the response
// back: the hot path. rp is the route's policy (nil: no retries). With a cluster
// breaker, the whole request (retries included) runs as one breaker attempt: an open
// breaker answers 503 at once. It reports whether the downstream connection can be kept.
func (c *h1conn) forward(d decision, target string, rp *routePolicy) bool {
	cl := d.cluster
	if cl.breaker == nil {
		keep, _ := c.forwardAttempts(d, target, rp)
		return keep
	}
	var keep bool
	// The closure escapes into gobreaker: one allocation, paid only by clusters that
	// configure a breaker.
	err := cl.breaker.Do(func() resilience.Outcome {
		var o resilience.Outcome
		keep, o = c.forwardAttempts(d, target, rp)
		return o
	})
	if err != nil {
		return c.failReply(errBreakerOpen(cl.ref.Name, err))
	}
	return keep
}

// forwardAttempts runs the attempts of one request: pick (avoiding the endpoint that
// just failed), exchange, and on a retriable outcome that the policy, the retry budget
// and the deadline allow, back off and go again. A request body that fits in the read
// buffer is peeked, not consumed, so it can be replayed (the bounded buffer);
// a larger or chunked one is retried only when nothing of it was sent. It reports
// whether the downstream connection can be kept, and the outcome for the breaker.
func (c *h1conn) forwardAttempts(d decision, target string, rp *routePolicy) (bool, resilience.Outcome) {
	req := &c.req
	cl := d.cluster
	timeout, idle := d.timeouts(c.s.opts.StreamIdle)
	c.tc.setIdle(idle)
	if err := cl.acquireSlot(context.Background()); err != nil {
		return c.failReply(err), resilience.Ignored
	}
	defer cl.releaseSlot()
	start := time.Now()
	var deadline time.Time
	if timeout > 0 {
		deadline = start.Add(timeout)
	}
	c.buildForwardHeaders(c.rr.Scheme)
	upgrade := req.Upgrade != ""

	var body []byte
	replayable := !req.HasBody()
	if !req.Chunked && req.ContentLength > 0 && req.ContentLength <= int64(c.br.Size()) {
		b, err := c.br.Peek(int(req.ContentLength))
		if err != nil {
			return false, resilience.Ignored
		}
		body, replayable = b, true
	}

	var rs retryState
	if rp != nil && !upgrade {
		rs.policy, rs.route = rp.retry, rp.counters
	}
	defer rs.release(cl)
	var (
		avoid *balancer.Endpoint
		res   balancer.Result
		pool  *endpointPool
		u     *upConn
	)
	for {
		var err error
		res, err = pickEndpoint(cl, avoid)
		if err != nil {
			return c.failReply(err), resilience.Ignored
		}
		pool = res.Endpoint.Meta.(*endpointPool)
		attemptStart := time.Now()
		hard, perTry := deadline, false
		if rs.policy != nil {
			if pt := rs.policy.PerRetryTimeout(); pt > 0 {
				if t := attemptStart.Add(pt); hard.IsZero() || t.Before(hard) {
					hard, perTry = t, true
				}
			}
		}
		var sent bool
		u, sent, err = c.exchange(pool, target, body, upgrade, replayable, idle, hard)
		if err != nil {
			if cbe, ok := asClientBodyError(err); ok {
				// The client failed, not the endpoint: no outlier or breaker charge, no retry.
				cl.attemptEnd(res, balancer.DoneInfo{Latency: time.Since(attemptStart)}, false)
				c.clientBodyReply(cbe)
				return false, resilience.Ignored
			}
			cl.attemptEnd(res, balancer.DoneInfo{Err: err, Latency: time.Since(attemptStart)}, true)
			werr := wrapReset(err)
			perTryExpired := perTry && isTimeout(err) && (deadline.IsZero() || time.Now().Before(deadline))
			if retriableErr(rs.policy, werr, replayable || !sent, perTryExpired) {
				if wait, ok := rs.plan(-1, deadline); ok && rs.next(cl) {
					rs.sleep(wait)
					avoid = res.Endpoint
					continue
				}
			}
			keep := c.failReply(werr)
			// When part of a streamed request body was consumed the downstream framing is
			// lost and the connection must close.
			return keep && replayable, resilience.Failure
		}
		resp := &c.resp
		if rs.policy == nil || !replayable || !rs.policy.RetryOnStatus(resp.Status) {
			break
		}
		v, ok := resp.Get("retry-after")
		wait, ok := rs.plan(retryAfterOf(resp.Status, v, ok, time.Now()), deadline)
		if !ok || !rs.next(cl) {
			break // relay this response: no retry left, or no time to wait for one
		}
		drainRetried(u, resp)
		cl.attemptEnd(res, balancer.DoneInfo{Status: resp.Status, Latency: time.Since(attemptStart)}, true)
		rs.sleep(wait)
		avoid = res.Endpoint
	}
	if body != nil {
		_, _ = c.br.Discard(len(body))
	}

	// Interim responses: 101 switches protocols, other 1xx are relayed to HTTP/1.1
	// clients and flushed at once (103 Early Hints is useless once the final response
	// is there); an HTTP/1.0 client must not get them (RFC 9110 §15.2), so they are
	// dropped for it.
	resp := &c.resp
	for resp.Status >= 100 && resp.Status < 200 && resp.Status != 101 {
		if req.Minor > 0 {
			err := h1.WriteResponseHead(c.bw, resp, nil, false, false)
			if err == nil {
				err = c.bw.Flush()
			}
			if err != nil {
				pool.discard(u)
				cl.attemptEnd(res, balancer.DoneInfo{Err: err}, false)
				return false, resilience.Ignored
			}
		}
		if err := u.readResponse(resp, req.Method); err != nil {
			pool.discard(u)
			cl.attemptEnd(res, balancer.DoneInfo{Err: err}, true)
			c.failReply(wrapReset(err))
			return false, resilience.Failure
		}
	}
	if resp.Status == 101 {
		if !upgradeAsked(req.Upgrade, resp.Upgrade) {
			// RFC 9110 §7.8: a server switches only to a protocol the client listed in
			// Upgrade; anything else would hand the client bytes it cannot read.
			pool.discard(u)
			err := &upstreamError{kind: errProtocol, err: errors.New("upstream switched protocols to \"" + resp.Upgrade + "\" which the request did not ask for")}
			cl.attemptEnd(res, balancer.DoneInfo{Err: err, Status: 101, Latency: time.Since(start)}, true)
			return c.failReply(err) && !req.HasBody(), resilience.Failure
		}
		res.Done(balancer.DoneInfo{Status: 101, Latency: time.Since(start)})
		return c.tunnel(u), resilience.Success
	}

	closeDown := c.closing()
	untilClose := !resp.NoBody && !resp.Chunked && resp.ContentLength < 0
	dechunk := resp.Chunked && req.Minor == 0 // an HTTP/1.0 client cannot read chunked
	if untilClose || dechunk {
		closeDown = true
	}
	status := resp.Status
	if err := h1.WriteResponseHead(c.bw, respForClient(resp, dechunk), nil, false, closeDown); err != nil {
		pool.discard(u)
		cl.attemptEnd(res, balancer.DoneInfo{Err: err, Status: status}, false)
		return false, resilience.Ignored
	}
	if !resp.NoBody {
		var err error
		if dechunk {
			_, err = h1.BodyCopy{Chunked: true, Dechunk: true}.Copy(c.bw, u.br)
		} else {
			_, err = copyResponseBody(c.bw, u.br, resp, untilClose)
		}
		if err != nil && !(untilClose && errors.Is(err, io.EOF)) {
			pool.discard(u)
			blame := upstreamSide(err)
			cl.attemptEnd(res, balancer.DoneInfo{Err: err, Status: status, Latency: time.Since(start)}, blame)
			if blame {
				// Mid-body failure: an orderly close would end an until-close body (or a
				// de-chunked one) as if complete, so the client gets a reset instead.
				c.abortDown()
			}
			return false, breakerOutcome(status, err, blame)
		}
	}
	flushErr := c.bw.Flush()
	cl.attemptEnd(res, balancer.DoneInfo{Status: status, Latency: time.Since(start)}, true)
	if resp.Close || untilClose || dechunk {
		pool.discard(u)
	} else if cl.slots != nil || flushErr != nil || closeDown {
		pool.put(u) // limited pools share connections rather than keep them per downstream
	} else {
		// Kept for this downstream connection's next request: like a pooled one, a
		// failure on it may be a stale keep-alive the server closed meanwhile.
		u.reused = true
		u.lastUsed = time.Now()
		c.up = u
	}
	return flushErr == nil && !closeDown, breakerOutcome(status, nil, true)
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
		elem, list = nextToken(list)
		if elem != "" && equalFoldBoth(elem, switched) {
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
func (c *h1conn) exchange(pool *endpointPool, target string, body []byte, upgrade, replayable bool, idle time.Duration, hard time.Time) (u *upConn, sent bool, err error) {
	for attempt := 0; ; attempt++ {
		if attempt == 0 {
			u, err = c.takeConn(pool)
		} else {
			// A new connection: another idle one may be just as stale.
			u, err = pool.dialNew(context.Background())
		}
		if err != nil {
			return nil, sent, err
		}
		u.timer.idle = idle
		// Always, zero included: a connection kept from this client's previous request
		// (c.up) still carries that request's deadline, which pool.put would have cleared.
		u.setHardDeadline(hard)
		sent = true
		rx, tx, buffered := u.rx, u.tx, u.br.Buffered()
		err = c.writeRequest(u, target, body, upgrade)
		if err == nil {
			err = u.readResponse(&c.resp, c.req.Method)
		}
		if err == nil {
			return u, sent, nil
		}
		reused := u.reused
		pool.discard(u)
		if reused && replayable && attempt == 0 && c.staleReplay(err, u.tx == tx, u.rx == rx && buffered == 0) {
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
	if _, fromClient := asClientBodyError(err); !readNothing || fromClient || isTimeout(err) {
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
func drainRetried(u *upConn, resp *h1.Response) {
	switch {
	case resp.Close:
	case resp.NoBody || resp.ContentLength == 0:
		u.pool.put(u)
		return
	case !resp.Chunked && resp.ContentLength > 0 && resp.ContentLength <= maxDrainBody:
		if _, err := u.br.Discard(int(resp.ContentLength)); err == nil {
			u.pool.put(u)
			return
		}
	}
	u.pool.discard(u)
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

func wrapReset(err error) error {
	var ue *upstreamError
	if errors.As(err, &ue) {
		return err
	}
	if isTimeout(err) {
		return &upstreamError{kind: errTimeout, err: err}
	}
	var he *h1.Error
	if errors.As(err, &he) {
		return &upstreamError{kind: errProtocol, err: err}
	}
	return &upstreamError{kind: errReset, err: err}
}

// clientBodyError is a failure reading the request body from the downstream client
// while it was being forwarded (the client stalled, closed, reset, or sent a malformed
// chunked body): the client's doing, so it is never held against the endpoint.
type clientBodyError struct{ err error }

func (e *clientBodyError) Error() string { return "reading the request body: " + e.err.Error() }
func (e *clientBodyError) Unwrap() error { return e.err }

// asClientBodyError finds a *clientBodyError in err's chain. Call it only with a
// non-nil error: errors.As's target escapes, so it costs an allocation.
func asClientBodyError(err error) (*clientBodyError, bool) {
	var cbe *clientBodyError
	ok := errors.As(err, &cbe)
	return cbe, ok
}

// clientBodyReply answers a request whose body the client failed to deliver: 408 when
// it stalled past the idle timeout, 400 otherwise. The connection closes: its framing
// is lost.
func (c *h1conn) clientBodyReply(e *clientBodyError) {
	status := 400
	if isTimeout(e.err) {
		status = 408
		c.tc.setIdle(c.s.opts.StreamIdle) // the expired deadline would fail the reply too
	}
	c.s.log.Debug("request body failed", "status", status, "err", e.err)
	c.localReply(status, codeBadRequest, "meshd: "+e.Error()+"\n", true)
}

func (c *h1conn) writeRequest(u *upConn, target string, body []byte, upgrade bool) error {
	req := &c.req
	if err := h1.WriteRequestHead(u.bw, req, target, c.extra, upgrade); err != nil {
		return err
	}
	if body != nil {
		if _, err := u.bw.Write(body); err != nil {
			return err
		}
	} else if req.HasBody() {
		if _, err := h1.CopyBody(u.bw, c.br, req.ContentLength, req.Chunked, false); err != nil {
			var be *h1.BodyError
			var pe *h1.Error
			if errors.As(err, &pe) || (errors.As(err, &be) && be.Op == "read") {
				return &clientBodyError{err: err}
			}
			return err
		}
	}
	return u.bw.Flush()
}

func (u *upConn) readResponse(resp *h1.Response, method string) error {
	if u.rd == nil {
		u.rd = h1.NewReader(u.br, limits)
	}
	return u.rd.ReadResponse(resp, method)
}

// failReply answers an upstream failure with meshd's status and code.
func (c *h1conn) failReply(err error) bool {
	status, code := replyStatus(err)
	if code == codeOverflow {
		hdr := [...]h1.Header{{Name: HeaderError, Value: code}, {Name: HeaderLimit, Value: overflowLimit(err)},
			{Name: "Content-Type", Value: "text/plain; charset=utf-8"}}
		msg := "meshd: " + err.Error() + "\n"
		closeConn := c.req.Close || c.req.HasBody()
		if h1.WriteSimpleResponse(c.bw, status, hdr[:], []byte(msg), closeConn) != nil || c.bw.Flush() != nil {
			return false
		}
		return !closeConn
	}
	c.s.log.Debug("upstream failure", "status", status, "code", code, "err", err)
	return c.localReply(status, code, "meshd: "+err.Error()+"\n", c.req.HasBody())
}

// tunnel relays bytes both ways after a 101 Switching Protocols (WebSocket and other
// upgrades), propagating half-closes. An open tunnel may idle (TCP keep-alive finds dead
// peers); once one direction has ended, the other gets StreamIdle to finish.
func (c *h1conn) tunnel(u *upConn) bool {
	if err := h1.WriteResponseHead(c.bw, &c.resp, nil, true, false); err != nil {
		u.pool.discard(u)
		return false
	}
	if err := c.bw.Flush(); err != nil {
		u.pool.discard(u)
		return false
	}
	c.tc.timer = deadlineTimer{}
	u.timer = deadlineTimer{}
	_ = c.tc.Conn.SetDeadline(noDeadline)
	_ = u.conn.SetDeadline(noDeadline)
	done := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(u.conn, c.br) // client → upstream, including bytes already buffered
		closeWrite(u.conn)
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(c.tc.Conn, u.br) // upstream → client
		closeWrite(c.tc.Conn)
		done <- struct{}{}
	}()
	<-done
	grace := time.Now().Add(c.s.opts.StreamIdle)
	_ = c.tc.Conn.SetDeadline(grace)
	_ = u.conn.SetDeadline(grace)
	<-done
	u.pool.discard(u)
	return false
}

// shutRead makes a read of the downstream connection that another goroutine is blocked
// in return, for good (the connection cannot serve another request afterwards).
func (c *h1conn) shutRead() {
	if cr, ok := c.tc.Conn.(interface{ CloseRead() error }); ok {
		_ = cr.CloseRead()
		return
	}
	_ = c.tc.Conn.Close()
}

// abortDown resets the downstream connection (RST instead of FIN, as net/http's
// ErrAbortHandler does), discarding what is still buffered for it: the only signal left
// once a response's head is sent and its body cannot be completed. The connection's
// serving goroutine then ends.
func (c *h1conn) abortDown() {
	if t, ok := c.tc.Conn.(*net.TCPConn); ok {
		_ = t.SetLinger(0)
	}
	_ = c.tc.Conn.Close()
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
