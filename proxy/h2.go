package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshd/meshd/balancer"
	"github.com/meshd/meshd/resilience"
	"github.com/meshd/meshd/router"
	"golang.org/x/net/http/httpguts"
)

// bufferedConn lets the HTTP/2 server read the bytes the sniffer already buffered,
// and tells serveConn when the server is done with the connection.
type bufferedConn struct {
	*trackedConn
	r     *bufio.Reader
	local int // ingress: the original destination port
	once  sync.Once
	done  chan struct{}
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// Write bypasses trackedConn's deadline bookkeeping, which belongs to one goroutine:
// HTTP/2 reads and writes on different goroutines, and its own timeouts apply.
func (b *bufferedConn) Write(p []byte) (int, error) { return b.trackedConn.Conn.Write(p) }

func (b *bufferedConn) Close() error {
	b.once.Do(func() { close(b.done) })
	return b.trackedConn.Close()
}

// connListener hands sniffed HTTP/2 connections to a net/http server.
type connListener struct {
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newConnListener() *connListener {
	return &connListener{ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *connListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

type localPortKey struct{}

// newH2Server builds the HTTP/2 prior-knowledge server of one listener kind. The
// x/net/http2 server types are deprecated wrappers of this same code in net/http.
func (s *Server) newH2Server(kind listenerKind) (*http.Server, *connListener) {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:     &h2handler{s: s, kind: kind},
		Protocols:   &p,
		IdleTimeout: s.opts.KeepAliveIdle,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: 250,
			MaxReadFrameSize:     1 << 20,
		},
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			ctx = withOrigDst(ctx, c)
			if bc, ok := c.(*bufferedConn); ok && bc.local != 0 {
				return context.WithValue(ctx, localPortKey{}, bc.local)
			}
			return ctx
		},
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	return srv, newConnListener()
}

// serveH2 hands an HTTP/2 prior-knowledge (h2c) connection to the listener kind's
// net/http server and waits until that server is done with it.
func (s *Server) serveH2(tc *trackedConn, br *bufio.Reader, kind listenerKind) {
	bc := &bufferedConn{trackedConn: tc, r: br, done: make(chan struct{})}
	ln := s.h2outL
	if kind == kindIngress {
		bc.local = int(tc.orig.Port())
		ln = s.h2inL
	}
	select {
	case ln.ch <- bc:
		<-bc.done
	case <-ln.closed:
	}
}

type h2handler struct {
	s    *Server
	kind listenerKind
}

// httpHeaderGetter adapts http.Header to the router's lookup.
type httpHeaderGetter http.Header

func (h httpHeaderGetter) Get(name string) (string, bool) {
	v, ok := h[textproto.CanonicalMIMEHeaderKey(name)]
	if !ok || len(v) == 0 {
		return "", false
	}
	return v[0], true
}

// GetJoined makes httpHeaderGetter a router.HeaderJoiner: the values of a repeated
// field joined with "," (allocating only then).
func (h httpHeaderGetter) GetJoined(name string) (string, bool) {
	v, ok := h[textproto.CanonicalMIMEHeaderKey(name)]
	switch {
	case !ok || len(v) == 0:
		return "", false
	case len(v) == 1:
		return v[0], true
	}
	return strings.Join(v, ","), true
}

func (h *h2handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	snap := h.s.snap.Load()
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	rr := router.Request{
		Authority: r.Host,
		Method:    r.Method,
		Path:      r.URL.RequestURI(),
		Scheme:    scheme,
		GRPC:      strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc"),
		Header:    httpHeaderGetter(r.Header),
	}
	local, _ := r.Context().Value(localPortKey{}).(int)
	d := h.s.resolve(snap, h.kind, &rr, local, origDst(r.Context()))
	if d.route == nil {
		localReply(w, rr.GRPC, d.status, d.code, "", d.msg)
		return
	}
	rp := snap.res.policy(d.route)
	ingressPort := 0
	if h.kind == kindIngress {
		ingressPort = local
		if ingressPort == 0 {
			ingressPort = snap.localNodePort
		}
	}
	if refused, wait := snap.res.rateLimited(ingressPort, rp); refused {
		w.Header().Set("Retry-After", retryAfterValue(wait))
		localReply(w, rr.GRPC, http.StatusTooManyRequests, codeRateLimited, "", "meshd: rate limit exceeded\n")
		return
	}
	out := newOutRequest(r.Context(), r.Method, rr.Path, r.Host, r.Header, r.Body, r.ContentLength, r.Trailer, scheme, r.RemoteAddr, h.kind == kindIngress)
	resp, res, cancel, err := roundTrip(d, out, h.s.opts.StreamIdle, rp, grpcTimeout(rr.GRPC, r.Header.Get("Grpc-Timeout")))
	if err != nil {
		status, code := replyStatus(err)
		localReply(w, rr.GRPC, status, code, overflowLimit(err), "meshd: "+err.Error()+"\n")
		return
	}
	defer cancel()
	start := time.Now()
	copyResponse(w, resp, d.cluster, res, start)
}

// grpcTimeout is the deadline a gRPC client asked for in grpc-timeout; 0 when absent,
// malformed (ignored, as grpc-go does) or not a gRPC request.
func grpcTimeout(isGRPC bool, v string) time.Duration {
	if !isGRPC || v == "" {
		return 0
	}
	d, ok := resilience.ParseGRPCTimeout(v)
	if !ok {
		return 0
	}
	return d
}

// roundTrip sends out to an endpoint of d's cluster through the cluster's net/http
// transport, applying the route/listener timeout (lowered by grpcTimeout when > 0), the
// HTTP/2 request limit, the cluster breaker and the route's retry policy rp (nil: no
// retries). On success the caller owns resp.Body, must call cancel when done with it
// and must report the attempt's end with d.cluster.attemptEnd (copyResponse does both).
func roundTrip(d decision, out *http.Request, streamIdle time.Duration, rp *routePolicy, grpcTimeout time.Duration) (*http.Response, balancer.Result, context.CancelFunc, error) {
	cl := d.cluster
	if cl.breaker == nil {
		return roundTripAttempts(d, out, streamIdle, rp, grpcTimeout)
	}
	var (
		resp *http.Response
		res  balancer.Result
		done context.CancelFunc
		err  error
	)
	berr := cl.breaker.Do(func() resilience.Outcome {
		resp, res, done, err = roundTripAttempts(d, out, streamIdle, rp, grpcTimeout)
		if err != nil {
			if errorKind(err) == errOverflowKind || errorKind(err) == errNoEndpoint {
				return resilience.Ignored
			}
			return breakerOutcome(0, err, out.Context().Err() == nil)
		}
		return breakerOutcome(resp.StatusCode, nil, true)
	})
	if berr != nil {
		return nil, balancer.Result{}, nil, errBreakerOpen(cl.ref.Name, berr)
	}
	return resp, res, done, err
}

func roundTripAttempts(d decision, out *http.Request, streamIdle time.Duration, rp *routePolicy, grpcTimeout time.Duration) (*http.Response, balancer.Result, context.CancelFunc, error) {
	cl := d.cluster
	timeout, idle := d.timeouts(streamIdle)
	if grpcTimeout > 0 && (timeout == 0 || grpcTimeout < timeout) {
		timeout = grpcTimeout // lowers the deadline, never raises it
	}
	ctx, cancel := context.WithCancel(out.Context())
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(out.Context(), timeout)
	}
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	acquire, release := cl.acquireStream, cl.releaseStream
	if !cl.h2 {
		// An HTTP/1.1 upstream reached from an HTTP/2 client: connectionPool.http applies.
		acquire = func() error { return cl.acquireSlot(ctx) }
		release = cl.releaseSlot
	}
	if err := acquire(); err != nil {
		cancel()
		return nil, balancer.Result{}, nil, err
	}
	var rs retryState
	if rp != nil && rp.retry.MaxRetries() > 0 {
		rs.policy, rs.route = rp.retry, rp.counters
	}
	var rb *replayBody
	bodyless := out.Body == nil || out.Body == http.NoBody
	if rs.policy != nil && !bodyless {
		rb = &replayBody{src: out.Body, limit: maxReplayBody}
	}
	var avoid *balancer.Endpoint
	for {
		res, err := pickEndpoint(cl, avoid)
		if err != nil {
			rs.release(cl)
			release()
			cancel()
			return nil, res, nil, err
		}
		actx, acancel := ctx, context.CancelFunc(func() {})
		perTry := false
		if rs.policy != nil && rs.policy.PerRetryTimeout() > 0 {
			actx, acancel = context.WithTimeout(ctx, rs.policy.PerRetryTimeout())
			perTry = true
		}
		// The idle timeout also bounds the wait for the response head (newIdleBody only
		// covers the body): an upstream that accepts the request and then says nothing
		// must not hold it for ever.
		var hw *headWatch
		if idle > 0 {
			hw = newHeadWatch(actx, idle, acancel)
			actx, acancel = hw.ctx, hw.cancelAll
		}
		req := out.WithContext(actx)
		u := *out.URL
		u.Host = res.Endpoint.Address
		req.URL = &u
		if rb != nil {
			req.Body = rb.attempt()
		}
		if hw != nil && req.Body != nil && req.Body != http.NoBody {
			req.Body = &activityBody{ReadCloser: req.Body, hw: hw}
		}
		start := time.Now()
		resp, err := cl.rt.RoundTrip(req)
		stalled := hw.stop()
		if err != nil && stalled {
			err = &upstreamError{kind: errTimeout, err: fmt.Errorf("no response head within the idle timeout %v: %w", idle, context.DeadlineExceeded)}
		}
		if err != nil {
			// The client went away or failed to deliver the body: not the endpoint's fault.
			_, bodyFailed := asClientBodyError(err)
			gone := out.Context().Err() != nil || bodyFailed
			cl.attemptEnd(res, balancer.DoneInfo{Err: err, Latency: time.Since(start)}, !gone)
			perTryExpired := perTry && errors.Is(actx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
			acancel()
			var ue *upstreamError
			if !errors.As(err, &ue) {
				if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) || perTryExpired {
					err = &upstreamError{kind: errTimeout, err: err}
				} else {
					err = &upstreamError{kind: errReset, err: err}
				}
			}
			if !gone && retriableErr(rs.policy, err, bodyless || rb.replayable(), perTryExpired) {
				if wait, ok := rs.plan(-1, deadline); ok && rs.next(cl) {
					rs.sleep(wait)
					avoid = res.Endpoint
					continue
				}
			}
			rs.release(cl)
			release()
			cancel()
			return nil, res, nil, err
		}
		if rs.policy != nil && (bodyless || rb.replayable()) && retriableResponse(rs.policy, resp) {
			ra := retryAfterOf(resp.StatusCode, resp.Header.Get("Retry-After"), resp.Header.Get("Retry-After") != "", time.Now())
			if wait, ok := rs.plan(ra, deadline); ok && rs.next(cl) {
				// Read a little of the body so the connection (HTTP/1.1) can be reused;
				// net/http closes it when more is left.
				_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrainBody))
				_ = resp.Body.Close()
				cl.attemptEnd(res, balancer.DoneInfo{Status: resp.StatusCode, Latency: time.Since(start)}, true)
				acancel()
				rs.sleep(wait)
				avoid = res.Endpoint
				continue
			}
		}
		// The idle timeout cancels the exchange when the response body makes no progress.
		resp.Body = newIdleBody(resp.Body, idle, cancel)
		done := func() { rs.release(cl); release(); acancel(); cancel() }
		return resp, res, done, nil
	}
}

// retriableResponse reports whether a response head may be retried under p: its HTTP
// status, or for gRPC a grpc-status in the head (a trailers-only response, how servers
// answer calls they reject at once). A grpc-status that arrives in trailers, after the
// body started to flow to the client, cannot be retried.
func retriableResponse(p *resilience.RetryPolicy, resp *http.Response) bool {
	if p.RetryOnStatus(resp.StatusCode) {
		return true
	}
	if v := resp.Header.Get("Grpc-Status"); v != "" {
		if code, err := strconv.Atoi(v); err == nil {
			return p.RetryOnGRPC(code)
		}
	}
	return false
}

// replayBody keeps the first limit bytes of a request body so that a retry can send it
// again (net/http's GetBody idea, bounded). Each attempt reads through its own
// attemptBody; a newer attempt makes older ones fail, because net/http may still read
// an abandoned attempt's body from its write goroutine after RoundTrip returned. Every
// byte taken from src is recorded (until overflow), whichever attempt read it.
type replayBody struct {
	// srcMu serializes reads of src (an abandoned attempt may still be inside one);
	// mu guards the rest and is never held across a read, so replayable never waits
	// for the client to send more of a stream.
	srcMu    sync.Mutex
	mu       sync.Mutex
	src      io.ReadCloser
	buf      []byte
	limit    int
	overflow bool  // more than limit bytes were read: no replay
	srcErr   error // src's sticky end (io.EOF) or failure
	gen      int
}

var errStaleAttempt = errors.New("request body: superseded by a retry")

// replayable reports whether a new attempt can send the whole body again. A nil rb (no
// body kept) is not replayable.
func (rb *replayBody) replayable() bool {
	if rb == nil {
		return false
	}
	rb.mu.Lock()
	defer rb.mu.Unlock()
	return !rb.overflow
}

func (rb *replayBody) attempt() io.ReadCloser {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	rb.gen++
	return &attemptBody{rb: rb, gen: rb.gen}
}

type attemptBody struct {
	rb  *replayBody
	gen int
	off int
}

// fromBuf serves what the buffer holds beyond a's offset; mu is held.
func (a *attemptBody) fromBuf(p []byte) (int, bool) {
	rb := a.rb
	if rb.overflow || a.off >= len(rb.buf) {
		return 0, false
	}
	n := copy(p, rb.buf[a.off:])
	a.off += n
	return n, true
}

func (a *attemptBody) Read(p []byte) (int, error) {
	rb := a.rb
	rb.mu.Lock()
	if a.gen != rb.gen {
		rb.mu.Unlock()
		return 0, errStaleAttempt
	}
	if n, ok := a.fromBuf(p); ok {
		rb.mu.Unlock()
		return n, nil
	}
	rb.mu.Unlock()

	rb.srcMu.Lock()
	defer rb.srcMu.Unlock()
	rb.mu.Lock()
	// Another reader may have appended while this one waited for srcMu.
	if n, ok := a.fromBuf(p); ok {
		rb.mu.Unlock()
		return n, nil
	}
	if err := rb.srcErr; err != nil {
		rb.mu.Unlock()
		return 0, err
	}
	rb.mu.Unlock()
	n, err := rb.src.Read(p)
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if n > 0 && !rb.overflow {
		if len(rb.buf)+n <= rb.limit {
			rb.buf = append(rb.buf, p[:n]...)
			a.off += n
		} else {
			rb.overflow, rb.buf = true, nil
		}
	}
	if err != nil {
		rb.srcErr = err
	}
	if a.gen != rb.gen {
		return 0, errStaleAttempt // the bytes are kept for the current attempt
	}
	return n, err
}

// Close leaves src open: the downstream request owns it.
func (a *attemptBody) Close() error { return nil }

// idleBody cancels an exchange whose body has not delivered a byte for idle.
type idleBody struct {
	io.ReadCloser
	idle  time.Duration
	timer *time.Timer
}

// headWatch cancels an attempt whose response head does not arrive within idle of the
// last sign of life (the request sent, or a request body read). stop ends the watch
// when RoundTrip returns; after it, touches do nothing, so a request body still
// streaming (gRPC bidi) cannot re-arm it.
type headWatch struct {
	ctx       context.Context
	cancel    context.CancelFunc // the watch's own context
	cancelAll context.CancelFunc // the watch's and the attempt's
	idle      time.Duration
	timer     *time.Timer

	mu      sync.Mutex
	stopped bool
	stalled bool
}

func newHeadWatch(parent context.Context, idle time.Duration, parentCancel context.CancelFunc) *headWatch {
	hw := &headWatch{idle: idle}
	hw.ctx, hw.cancel = context.WithCancel(parent)
	hw.cancelAll = func() { hw.cancel(); parentCancel() }
	hw.timer = time.AfterFunc(idle, hw.fire)
	return hw
}

func (hw *headWatch) fire() {
	hw.mu.Lock()
	if hw.stopped {
		hw.mu.Unlock()
		return
	}
	hw.stalled = true
	hw.mu.Unlock()
	hw.cancel()
}

func (hw *headWatch) touch() {
	hw.mu.Lock()
	if !hw.stopped {
		hw.timer.Reset(hw.idle)
	}
	hw.mu.Unlock()
}

// stop ends the watch and reports whether it cancelled the attempt. A nil watch did not.
func (hw *headWatch) stop() bool {
	if hw == nil {
		return false
	}
	hw.mu.Lock()
	defer hw.mu.Unlock()
	hw.stopped = true
	hw.timer.Stop()
	return hw.stalled
}

// activityBody is a request body whose reads count as activity for a headWatch.
type activityBody struct {
	io.ReadCloser
	hw *headWatch
}

func (a *activityBody) Read(p []byte) (int, error) {
	n, err := a.ReadCloser.Read(p)
	if n > 0 {
		a.hw.touch()
	}
	return n, err
}

func newIdleBody(rc io.ReadCloser, idle time.Duration, cancel context.CancelFunc) io.ReadCloser {
	if idle <= 0 {
		return rc
	}
	return &idleBody{ReadCloser: rc, idle: idle, timer: time.AfterFunc(idle, cancel)}
}

func (b *idleBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.timer.Reset(b.idle)
	}
	return n, err
}

func (b *idleBody) Close() error {
	b.timer.Stop()
	return b.ReadCloser.Close()
}

// newOutRequest builds the upstream request: hop-by-hop headers removed (RFC 9110
// §7.6.1), "te: trailers" kept for gRPC, x-forwarded-*/x-request-id set. ingress
// replaces a received x-forwarded-proto (the peer is not trusted to state the scheme);
// on egress the app's is kept.
func newOutRequest(ctx context.Context, method, pathQuery, host string, in http.Header, body io.ReadCloser,
	contentLength int64, trailer http.Header, scheme, remoteAddr string, ingress bool) *http.Request {
	hdr := make(http.Header, len(in)+3)
	for k, v := range in {
		hdr[k] = v
	}
	removeHopByHop(hdr)
	if te := in.Values("Te"); len(te) > 0 {
		for _, v := range te {
			if httpguts.HeaderValuesContainsToken([]string{v}, "trailers") {
				hdr.Set("Te", "trailers")
			}
		}
	}
	if ip, _, err := net.SplitHostPort(remoteAddr); err == nil {
		if prior := hdr.Values("X-Forwarded-For"); len(prior) > 0 {
			ip = strings.Join(prior, ", ") + ", " + ip
		}
		hdr.Set("X-Forwarded-For", ip)
	}
	if ingress || hdr.Get("X-Forwarded-Proto") == "" {
		hdr.Set("X-Forwarded-Proto", scheme)
	}
	if hdr.Get("X-Request-Id") == "" {
		var b [36]byte
		hdr.Set("X-Request-Id", string(appendUUID(b[:0], randUint64(), randUint64())))
	}
	u := &url.URL{Scheme: "http", Opaque: ""}
	if i := strings.IndexByte(pathQuery, '?'); i >= 0 {
		u.RawQuery = pathQuery[i+1:]
		pathQuery = pathQuery[:i]
	}
	if p, err := url.PathUnescape(pathQuery); err == nil {
		u.Path = p
		u.RawPath = pathQuery
	} else {
		u.Path = pathQuery
	}
	if body == nil || contentLength == 0 {
		body = http.NoBody
	}
	out := (&http.Request{
		Method:        method,
		URL:           u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        hdr,
		Body:          body,
		ContentLength: contentLength,
		Host:          host,
		Trailer:       trailer,
	}).WithContext(ctx)
	return out
}

// hopHeaders are the connection-specific headers of RFC 9110 §7.6.1 plus the legacy
// ones proxies strip (Proxy-Connection, Keep-Alive).
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func removeHopByHop(h http.Header) {
	for _, f := range h.Values("Connection") {
		for _, name := range strings.Split(f, ",") {
			if name = textproto.TrimString(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}

// copyResponse streams resp to w: headers, body (flushed as it arrives, so gRPC and
// server-sent events are not held back), then trailers.
func copyResponse(w http.ResponseWriter, resp *http.Response, cl *cluster, res balancer.Result, start time.Time) {
	defer resp.Body.Close()
	removeHopByHop(resp.Header)
	dst := w.Header()
	for k, v := range resp.Header {
		dst[k] = v
	}
	announced := len(resp.Trailer)
	if announced > 0 {
		keys := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		dst.Set("Trailer", strings.Join(keys, ", "))
	}
	w.WriteHeader(resp.StatusCode)
	err := copyFlush(w, resp.Body, resp.ContentLength < 0)
	for k, v := range resp.Trailer {
		if announced > 0 {
			dst[k] = v
		} else {
			dst[http.TrailerPrefix+k] = v
		}
	}
	// A copy error is the upstream's when reading failed, the client's when writing did;
	// copyFlush tells them apart.
	var de *downstreamError
	cl.attemptEnd(res, balancer.DoneInfo{Err: err, Status: resp.StatusCode, Latency: time.Since(start)}, !errors.As(err, &de))
	if err != nil {
		// Mid-body failure: abort the stream so the client sees an error, not a short body.
		panic(http.ErrAbortHandler)
	}
}

// copyBufPool holds the 32 KiB relay buffers of the net/http path: one per response
// would be the path's largest allocation (and most of its GC work).
var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyFlush copies src to w. A body of unknown length (gRPC, server-sent events, any
// stream) is flushed after every read, so nothing is held back; a body of known length
// is flushed once, when the handler returns, so its HEADERS and DATA frames leave in
// one write instead of one write each (net/http's ReverseProxy makes the same split).
func copyFlush(w http.ResponseWriter, src io.Reader, stream bool) error {
	rc := http.NewResponseController(w)
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	buf := *bp
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return &downstreamError{werr}
			}
			if stream {
				if ferr := rc.Flush(); ferr != nil {
					return &downstreamError{ferr}
				}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// downstreamError marks a failure writing to the client, which outlier detection and
// the breaker do not hold against the endpoint.
type downstreamError struct{ err error }

func (e *downstreamError) Error() string { return "write to client: " + e.err.Error() }
func (e *downstreamError) Unwrap() error { return e.err }

// localReply answers a request with an error meshd generated. A gRPC request gets a
// gRPC-shaped answer (HTTP 200, trailers-only, grpc-status and grpc-message), as Envoy
// gives, so every gRPC client sees a status code and meshd's reason instead of a bare
// HTTP status it has to interpret; the x-meshd-* headers are there in both shapes.
func localReply(w http.ResponseWriter, grpc bool, status int, code, limit, msg string) {
	if !grpc {
		localHTTPError(w, status, code, limit, msg)
		return
	}
	h := w.Header()
	h.Set(HeaderError, code)
	if limit != "" {
		h.Set(HeaderLimit, limit)
	}
	h.Set("Content-Type", "application/grpc")
	h.Set("Grpc-Status", strconv.Itoa(grpcStatusFor(status, code)))
	h.Set("Grpc-Message", grpcMessageEncode(strings.TrimSpace(msg)))
	w.WriteHeader(http.StatusOK)
}

// gRPC status codes (google.golang.org/grpc/codes), without importing grpc into the
// data plane for five constants.
const (
	grpcUnknown          = 2
	grpcDeadlineExceeded = 4
	grpcPermissionDenied = 7
	grpcUnimplemented    = 12
	grpcInternal         = 13
	grpcUnavailable      = 14
	grpcUnauthenticated  = 16
)

// grpcStatusFor maps meshd's HTTP status to a gRPC status per gRPC's "HTTP to gRPC
// status code mapping" (doc/http-grpc-status-mapping.md), except that meshd's own
// timeouts say DEADLINE_EXCEEDED, which is what happened.
func grpcStatusFor(status int, code string) int {
	if code == codeTimeout || code == codeHeaderTimeout {
		return grpcDeadlineExceeded
	}
	switch status {
	case 400:
		return grpcInternal
	case 401:
		return grpcUnauthenticated
	case 403:
		return grpcPermissionDenied
	case 404:
		return grpcUnimplemented
	case 429, 502, 503, 504:
		return grpcUnavailable
	}
	return grpcUnknown
}

// grpcMessageEncode percent-encodes a grpc-message value (gRPC over HTTP/2 spec:
// bytes outside printable ASCII, and '%', are sent as %XX).
func grpcMessageEncode(msg string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func localHTTPError(w http.ResponseWriter, status int, code, limit, msg string) {
	h := w.Header()
	h.Set(HeaderError, code)
	if limit != "" {
		h.Set(HeaderLimit, limit)
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, msg)
}

// h1Body reads an HTTP/1.1 request body for net/http. For chunked bodies it also
// consumes the trailer section (which httputil's chunked reader leaves unread), filling
// the trailer keys that were declared.
//
// net/http reads it on a goroutine of its own, which may still be inside a Read of the
// downstream connection (through the connection's pooled bufio.Reader) after RoundTrip
// returned, even after the response was relayed. abort (and Close, which net/http calls
// when it gives up on the body) makes such a read return and waits for it, so that the
// downstream connection's reader is never used by two goroutines, or pooled while in
// use. Read errors other than the body's end are the client's: *clientBodyError.
type h1Body struct {
	r       io.Reader
	br      *bufio.Reader
	chunked bool
	trailer http.Header
	unblock func() // makes a read of the downstream connection return at once

	mu      sync.Mutex
	idle    sync.Cond // signalled when a read ends; L is &mu
	reading bool      // a Read is inside r
	done    bool      // the body was read to its end
	closed  bool      // aborted: no more reads
}

var errBodyAborted = errors.New("request body: abandoned by the forwarder")

func newH1Body(r io.Reader, br *bufio.Reader, chunked bool, trailer http.Header, unblock func()) *h1Body {
	b := &h1Body{r: r, br: br, chunked: chunked, trailer: trailer, unblock: unblock}
	b.idle.L = &b.mu
	return b
}

func (b *h1Body) Read(p []byte) (int, error) {
	b.mu.Lock()
	switch {
	case b.closed:
		b.mu.Unlock()
		return 0, errBodyAborted
	case b.done:
		b.mu.Unlock()
		return 0, io.EOF
	}
	b.reading = true
	b.mu.Unlock()

	n, err := b.r.Read(p)
	if err == io.EOF && b.chunked {
		if terr := readTrailers(b.br, b.trailer); terr != nil {
			err = terr
		}
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	b.reading = false
	b.idle.Broadcast()
	switch {
	case b.closed:
		return 0, errBodyAborted
	case err == io.EOF:
		b.done = true
	case err != nil:
		err = &clientBodyError{err: err}
	}
	return n, err
}

// finished reports whether the body was read to its end.
func (b *h1Body) finished() bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.done
}

// abort stops an unfinished body: later reads fail, and a read in progress is made to
// return (the downstream connection's read side is shut, so it cannot serve another
// request) and waited for. A nil or finished body is left alone. Safe from any goroutine.
func (b *h1Body) abort() {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	b.closed = true
	if b.reading {
		b.unblock()
		for b.reading {
			b.idle.Wait()
		}
	}
}

// Close is net/http giving up on the body (or done with it): see abort.
func (b *h1Body) Close() error {
	b.abort()
	return nil
}

// exactReader reads a Content-Length body: n bytes, then io.EOF; the client closing
// before that is io.ErrUnexpectedEOF (io.LimitReader would report a clean end).
type exactReader struct {
	r io.Reader
	n int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.n {
		p = p[:e.n]
	}
	n, err := e.r.Read(p)
	e.n -= int64(n)
	if err == io.EOF && e.n > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// connWriter writes to a downstream connection without its trackedConn's deadline
// bookkeeping (which belongs to the goroutine reading it), bounding each write by idle.
type connWriter struct {
	conn net.Conn
	idle time.Duration
}

func (w connWriter) Write(p []byte) (int, error) {
	if w.idle > 0 {
		_ = w.conn.SetWriteDeadline(time.Now().Add(w.idle))
	}
	return w.conn.Write(p)
}

// readTrailers consumes a chunked body's trailer section (RFC 9112 §7.1.2), keeping the
// fields whose names were declared in want.
func readTrailers(br *bufio.Reader, want http.Header) error {
	for i := 0; ; i++ {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("chunked trailer: %w", err)
		}
		if len(line) == 2 && line[0] == '\r' {
			return nil
		}
		if i >= 100 || len(line) < 3 || line[len(line)-2] != '\r' {
			return errors.New("chunked trailer: malformed or too many fields")
		}
		k, v, ok := strings.Cut(string(line[:len(line)-2]), ":")
		if !ok || !httpguts.ValidHeaderFieldName(k) {
			return errors.New("chunked trailer: malformed field")
		}
		ck := textproto.CanonicalMIMEHeaderKey(k)
		if _, declared := want[ck]; declared {
			want[ck] = append(want[ck], textproto.TrimString(v))
		}
	}
}

// forwardRoundTrip serves an HTTP/1.1 downstream request whose cluster speaks HTTP/2:
// the request is converted to net/http form, sent through the cluster's HTTP/2
// transport, and the response written back as HTTP/1.1 (chunked when its length is
// unknown, trailers in the chunked trailer section).
func (c *h1conn) forwardRoundTrip(snap *Snapshot, d decision, target, scheme string) bool {
	req := &c.req
	hdr := make(http.Header, len(req.Headers))
	for _, f := range req.Headers {
		hdr.Add(f.Name, f.Value)
	}
	var body io.ReadCloser = http.NoBody
	var rb *h1Body
	var trailer http.Header
	cl := req.ContentLength
	switch {
	case req.Chunked:
		// Trailer names announced by the client are declared up front: net/http sends
		// request trailers only for keys present when the request starts.
		for _, v := range hdr.Values("Trailer") {
			for _, name := range strings.Split(v, ",") {
				if name = textproto.TrimString(name); name != "" {
					if trailer == nil {
						trailer = http.Header{}
					}
					trailer[textproto.CanonicalMIMEHeaderKey(name)] = nil
				}
			}
		}
		rb = newH1Body(httputil.NewChunkedReader(c.br), c.br, true, trailer, c.shutRead)
		body, cl = rb, -1
	case req.ContentLength > 0:
		rb = newH1Body(&exactReader{r: c.br, n: req.ContentLength}, c.br, false, nil, c.shutRead)
		body = rb
	default:
		cl = 0
	}
	out := newOutRequest(context.Background(), req.Method, target, c.rr.Authority, hdr, body, cl, trailer, scheme, c.tc.RemoteAddr().String(), c.kind == kindIngress)
	resp, res, cancel, err := roundTrip(d, out, c.s.opts.StreamIdle, snap.res.policy(d.route), grpcTimeout(c.rr.GRPC, hdr.Get("Grpc-Timeout")))
	if err != nil {
		// net/http may still be reading the body: stop it before this goroutine uses the
		// connection again.
		rb.abort()
		if cbe, ok := asClientBodyError(err); ok {
			c.clientBodyReply(cbe)
			return false
		}
		return c.failReply(err) && !req.HasBody()
	}
	// A request body the upstream did not read to its end leaves the downstream
	// connection mid-message: it must close after this response. Until it is aborted,
	// net/http's goroutine may be reading the connection, so the response is written
	// around the trackedConn (whose deadline bookkeeping is the reader's).
	unfinished := !rb.finished()
	if unfinished {
		c.bw.Reset(connWriter{conn: c.tc.Conn, idle: c.s.opts.StreamIdle})
	}
	defer func() {
		rb.abort() // before closing the response: net/http waits for the body writer
		_ = resp.Body.Close()
		cancel()
		if unfinished {
			c.bw.Reset(c.tc)
		}
	}()
	start := time.Now()
	closeDown := c.closing() || req.Minor == 0 || unfinished
	removeHopByHop(resp.Header)
	bw := c.bw
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(strconv.Itoa(resp.StatusCode))
	bw.WriteByte(' ')
	bw.WriteString(http.StatusText(resp.StatusCode))
	bw.WriteString("\r\n")
	noBody := req.Method == "HEAD" || resp.StatusCode == 204 || resp.StatusCode == 304
	chunked := !noBody && resp.ContentLength < 0 && req.Minor > 0
	if err := resp.Header.Write(bw); err != nil {
		d.cluster.attemptEnd(res, balancer.DoneInfo{Err: err}, false)
		return false
	}
	switch {
	case noBody:
	case resp.ContentLength >= 0:
		bw.WriteString("Content-Length: " + strconv.FormatInt(resp.ContentLength, 10) + "\r\n")
	case chunked:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	default:
		closeDown = true
	}
	if closeDown {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
	var copyErr error
	if !noBody {
		if chunked {
			cw := httputil.NewChunkedWriter(bw)
			_, copyErr = io.Copy(cw, resp.Body)
			if copyErr == nil {
				copyErr = cw.Close()
			}
			if copyErr == nil {
				copyErr = resp.Trailer.Write(bw)
				bw.WriteString("\r\n")
			}
		} else {
			_, copyErr = io.Copy(bw, resp.Body)
		}
	}
	if copyErr != nil {
		// The head is out and the body cannot be completed: reset, so that a body
		// delimited by close (HTTP/1.0 client) does not look complete.
		d.cluster.attemptEnd(res, balancer.DoneInfo{Err: copyErr, Status: resp.StatusCode, Latency: time.Since(start)}, true)
		c.abortDown()
		return false
	}
	flushErr := bw.Flush()
	d.cluster.attemptEnd(res, balancer.DoneInfo{Status: resp.StatusCode, Latency: time.Since(start)}, true)
	return flushErr == nil && !closeDown
}
