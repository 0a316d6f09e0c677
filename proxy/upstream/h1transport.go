package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/meshd/meshd/balancer"
	"github.com/meshd/meshd/internal/reqctx"

	"github.com/meshd/meshd/internal/h1"
)

// h1Transport is the http.RoundTripper of an HTTP/1.1 cluster: the requests that do not
// take the HTTP/1.1 fast path (those of HTTP/2 clients, through forward.RoundTrip) go to
// the upstream on the same pooled connections (Pool, Conn), written and read with the
// HTTP/1.1 codec (internal/h1). net/http's client transport is not used.
//
// One exchange at a time on a connection, as on the fast path: the request's URL.Host
// names the endpoint, whose pool gives an idle keep-alive connection or dials a new one;
// the request is written (its body, if any, by a goroutine of its own while the
// response head is read: a client slow to send the body cannot hold the exchange past
// its context, and the upstream may answer first), the response head read, and the
// response body handed to the caller as an io.ReadCloser that decodes
// the framing from the connection's buffer. A body read to its end gives the connection
// back to the pool (keep-alive); a body closed early closes it, as net/http does: a
// caller that wants the connection kept reads the body first (forward.RoundTrip's
// Discard reads up to forward.MaxDrainBody).
//
// Deadlines and cancellation come from the request's context (forward.RoundTrip gives it
// the attempt's deadline and cancels it for the idle timeout): when it ends, the
// connection gets a deadline in the past, the blocked read or write returns, the caller
// gets the context's error, and the connection is closed, never pooled. The connection's
// own deadline.Timer is idle meanwhile (no idle bound, no hard deadline), so nothing of
// it stays on a pooled connection.
//
// A kept-alive connection the server had closed (EOF or a reset before any response
// byte) is replaced once by a new one, like the fast path's stale replay, when the
// request can be sent again: no body, or a body GetBody gives again (forward.RoundTrip
// gives one while it keeps the body whole), and nothing of the request was written or
// its method is idempotent.
type h1Transport struct{ cl *Cluster }

// respLimits bound a response head: those of the HTTP/1.1 front end (http1.Limits),
// which reads responses on these connections too.
var respLimits = h1.Limits{MaxHeaderBytes: 60 << 10, MaxHeaders: 100}

// withHeadBody is the largest sized request body written out with the head; before a
// larger body, or one of unknown length, the head is flushed on its own.
const withHeadBody = upstreamWriteBuf / 2

// maxWriteWait bounds how long the end of a response waits for its request's body
// writer to finish before the connection is given up rather than reused (net/http
// waits likewise).
const maxWriteWait = 50 * time.Millisecond

var errConnect = errors.New("upstream: CONNECT is not supported on pooled HTTP/1.1 connections")

// aLongTimeAgo is the deadline that interrupts a connection's blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

// h1State is what the transport keeps on a connection for its exchanges.
type h1State struct {
	resp h1.Response
	body h1.BodyReader
	// interrupt sets a deadline in the past on the connection: run when an exchange's
	// context ends (made once per connection).
	interrupt func()
}

// EndpointPool, or a pool of its own that keeps nothing for an address that is not an
// endpoint (any more: the set changed since the pick).
func (c *Cluster) poolFor(addr string) *Pool {
	if p, ok := c.EndpointPool(addr); ok {
		return p
	}
	return &Pool{addr: addr, cl: c, closed: true}
}

// RoundTrip implements http.RoundTripper.
func (t *h1Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.RoundTripContext(req.Context(), req)
}

// RoundTripContext implements ContextRoundTripper.
func (t *h1Transport) RoundTripContext(ctx context.Context, req *http.Request) (*http.Response, error) {
	return t.roundTrip(ctx, req, nil)
}

// RoundTripEndpoint implements EndpointRoundTripper: ep is the pick req.URL.Host names.
func (t *h1Transport) RoundTripEndpoint(ctx context.Context, req *http.Request, ep *balancer.Endpoint) (*http.Response, error) {
	p, _ := ep.Meta.(*Pool)
	if p != nil && (p.cl != t.cl || p.addr != req.URL.Host) {
		p = nil // not this cluster's endpoint, or not the request's address: look it up
	}
	return t.roundTrip(ctx, req, p)
}

// roundTrip sends req on a connection of pool (nil: the pool of req.URL.Host's
// endpoint).
func (t *h1Transport) roundTrip(ctx context.Context, req *http.Request, pool *Pool) (*http.Response, error) {
	body := req.Body
	if body == http.NoBody {
		body = nil
	}
	if err := ctx.Err(); err != nil {
		closeBody(body)
		return nil, err
	}
	if req.Method == http.MethodConnect {
		// A 2xx would make the pooled connection a tunnel; the front ends refuse CONNECT.
		closeBody(body)
		return nil, errConnect
	}
	var head h1.HeaderRequest
	fillHead(&head, req, body != nil)
	if pool == nil {
		pool = t.cl.poolFor(req.URL.Host)
	}
	for attempt := 0; ; attempt++ {
		var u *Conn
		var err error
		if attempt == 0 {
			u, err = pool.Get(ctx)
		} else {
			u, err = pool.DialNew(ctx) // another idle one may be just as stale
		}
		if err != nil {
			closeBody(body)
			return nil, err
		}
		resp, stale, err := t.exchange(ctx, req, &head, body, u)
		if err == nil {
			return resp, nil
		}
		if stale && attempt == 0 && ctx.Err() == nil {
			if body == nil {
				continue
			}
			if req.GetBody != nil {
				if nb, gerr := req.GetBody(); gerr == nil {
					body = nb
					if body == http.NoBody {
						body = nil
					}
					fillHead(&head, req, body != nil)
					continue
				}
			}
		}
		return nil, err
	}
}

// fillHead describes req's head for the codec: the request-target from the URL as
// forward.OutRequest built it (escaped path, raw query; an opaque URL as is), Host from
// req.Host, and the framing net/http would give it: Content-Length for a known length
// (0 only for POST, PUT and PATCH), chunked for a body of unknown length; req.Close
// asks the server to close.
func fillHead(h *h1.HeaderRequest, req *http.Request, hasBody bool) {
	u := req.URL
	h.Method = req.Method
	if h.Method == "" {
		h.Method = http.MethodGet
	}
	if u.Opaque != "" {
		h.Path = u.RequestURI()
	} else {
		h.Path, h.Query, h.ForceQuery = u.EscapedPath(), u.RawQuery, u.ForceQuery
	}
	h.Host = req.Host
	if h.Host == "" {
		h.Host = u.Host
	}
	h.Header, h.Trailer, h.Close = req.Header, req.Trailer, req.Close
	h.ContentLength = -1
	switch {
	case hasBody && req.ContentLength > 0:
		h.ContentLength = req.ContentLength
	case hasBody:
		h.Chunked = true
	case req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch:
		h.ContentLength = 0
	}
}

// bodyWriter is a request body being written by a goroutine of its own.
type bodyWriter struct {
	done chan struct{} // closed when the writer is finished with the connection
	// Set before done closes: the writer's failure, and whether nothing of the request
	// reached the connection (tx is its byte count before the request).
	err          error
	wroteNothing bool
	tx           int64
}

// finishedOK reports whether the writer finished (within wait) without failing.
func (w *bodyWriter) finishedOK(wait time.Duration) bool {
	select {
	case <-w.done:
		return w.err == nil
	default:
	}
	if wait <= 0 {
		return false
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-w.done:
		return w.err == nil
	case <-t.C:
		return false
	}
}

// clientFailed reports the writer's failure when the request body (its reader, the
// client) failed.
func (w *bodyWriter) clientFailed() (error, bool) {
	select {
	case <-w.done:
		if isBodyRead(w.err) {
			return w.err, true
		}
	default:
	}
	return nil, false
}

// wait waits up to d for the writer to finish and reports whether it did.
func (w *bodyWriter) wait(d time.Duration) bool {
	select {
	case <-w.done:
		return true
	default:
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-w.done:
		return true
	case <-t.C:
		return false
	}
}

// RequestBodyError is an exchange that failed because the request body could not be
// read: the client's side (the HTTP/2 stream reset, a body shorter than its
// Content-Length), not the upstream's. It unwraps to the body's own error.
type RequestBodyError struct{ Err error }

func (e *RequestBodyError) Error() string { return "request body: " + e.Err.Error() }
func (e *RequestBodyError) Unwrap() error { return e.Err }

// clientSide marks a failure of WriteBody to read the request body as the client's.
func clientSide(err error) error {
	var be *h1.BodyError
	if errors.As(err, &be) && be.Op == "read" {
		return &RequestBodyError{Err: be.Err}
	}
	return err
}

// isBodyRead reports a failure to read the request body (the client's side).
func isBodyRead(err error) bool {
	var re *RequestBodyError
	return errors.As(err, &re)
}

// exchange runs one request on u up to the response head. On failure u is discarded,
// and stale reports the signs of a kept-alive connection the server had closed, where
// the request may be sent again on a new one.
func (t *h1Transport) exchange(ctx context.Context, req *http.Request, head *h1.HeaderRequest, body io.ReadCloser, u *Conn) (_ *http.Response, stale bool, _ error) {
	// No idle bound or hard deadline of the fast path's applies here, and the deadline
	// such a bound may have left on the connection is cleared: the context bounds the
	// exchange. After this Refresh, Read and Write leave the deadline alone (and may run
	// on two goroutines).
	u.Timer.Idle = 0
	u.Timer.SetHard(time.Time{})
	u.Timer.Refresh(u.NetConn)
	if u.rt == nil {
		nc := u.NetConn
		u.rt = &h1State{interrupt: func() { _ = nc.SetDeadline(aLongTimeAgo) }}
	}
	stop := watchCtx(ctx, u.rt.interrupt)
	if u.RD == nil {
		u.RD = h1.NewReader(u.BR, respLimits)
	}
	reused := u.Reused
	rx, tx, buffered := u.RX, u.TX, u.BR.Buffered()

	// fail ends the attempt: the connection is closed, and the error says why (the
	// context's when it ended: its deadline or cancel interrupted the I/O).
	fail := func(err error, wroteNothing bool) (*http.Response, bool, error) {
		readNothing := u.RX == rx && buffered == 0
		stop.stop()
		u.Pool.Discard(u)
		if cerr := ctx.Err(); cerr != nil {
			return nil, false, cerr
		}
		return nil, reused && readNothing && !isBodyRead(err) && staleErr(err) && (wroteNothing || idempotent(req)), err
	}

	// The head goes into the write buffer (an invalid field is refused before anything
	// is written); without a body it is flushed now, with one the body is written by a
	// goroutine of its own (run): a client slow to send it then cannot hold the exchange
	// past its context (the read below is what the context interrupts), and the upstream
	// may answer before it has taken the whole body (413, or an early answer it then
	// closes on: its response is read and relayed all the same).
	var w *bodyWriter
	err := h1.WriteHeaderRequest(u.BW, head)
	if err == nil && body == nil {
		err = u.FlushAwait()
	}
	if err != nil {
		closeBody(body)
		return fail(fmt.Errorf("writing the request to %s: %w", u.Pool.addr, err), u.TX == tx)
	}
	if body != nil {
		w = &bodyWriter{done: make(chan struct{}), tx: tx}
		go w.run(u, body, head.ContentLength, head.Chunked, req.Trailer)
	}

	hr := &u.rt.resp
	for interim := 0; ; interim++ {
		err = u.RD.ReadResponse(hr, req.Method)
		if err != nil || hr.Status >= 200 {
			break
		}
		if hr.Status == 101 {
			err = &Error{Kind: Protocol, Err: fmt.Errorf("upstream %s switched protocols to %q, which the request did not ask for", u.Pool.addr, hr.Upgrade)}
			break
		}
		// Interim responses (100 Continue, 103 Early Hints) are not relayed, and not
		// taken without end.
		if interim == h1.MaxInterim {
			err = &Error{Kind: Protocol, Err: fmt.Errorf("upstream %s sent more than %d interim (1xx) responses", u.Pool.addr, h1.MaxInterim)}
			break
		}
	}
	if err != nil {
		wroteNothing := false
		if w != nil {
			// Interrupt the writer's I/O and give it a moment to end (it may be inside a
			// read of the body, which nothing here can interrupt): a client that failed to
			// deliver the body is the cause, and a writer that wrote nothing makes the
			// request safe to send again.
			_ = u.NetConn.SetDeadline(aLongTimeAgo)
			if ctx.Err() == nil && w.wait(maxWriteWait) {
				wroteNothing = w.wroteNothing
			}
			if cerr, ok := w.clientFailed(); ok {
				err = cerr
			}
		}
		if !isBodyRead(err) {
			var ue *Error
			if !errors.As(err, &ue) {
				err = fmt.Errorf("reading the response head from %s: %w", u.Pool.addr, err)
			}
		}
		return fail(err, wroteNothing)
	}
	reuse := !hr.Close && !req.Close
	resp := newResponse(req, hr)
	rb := &resp.body
	if hr.NoBody {
		resp.Body = http.NoBody
		finish(u, stop, w, reuse)
		return &resp.Response, false, nil
	}
	u.rt.body.Reset(u.BR, hr.ContentLength, hr.Chunked, hr.UntilClose())
	*rb = h1Body{u: u, ctx: ctx, stop: stop, w: w, resp: &resp.Response, owner: resp, reuse: reuse, chunked: hr.Chunked}
	resp.Body = rb
	return &resp.Response, false, nil
}

// run writes the request body after the head already buffered, flushes it, and closes
// the body. A client that fails to deliver the body ends the exchange: the connection's
// reads are interrupted.
func (w *bodyWriter) run(u *Conn, body io.ReadCloser, contentLength int64, chunked bool, trailer http.Header) {
	var err error
	if chunked || contentLength > withHeadBody {
		// A body of unknown length may be a stream the upstream answers as it goes, and a
		// large one takes time: the head leaves first. A small one (usually all there
		// already) leaves with it, in one write.
		if ferr := u.BW.Flush(); ferr != nil {
			err = fmt.Errorf("writing the request head: %w", ferr)
		}
	}
	if err == nil {
		_, err = h1.WriteBody(u.BW, body, contentLength, chunked, trailer)
	}
	if err == nil {
		if ferr := u.BW.Flush(); ferr != nil {
			err = fmt.Errorf("writing the request body: %w", ferr)
		}
	}
	closeBody(body)
	err = clientSide(err)
	client := isBodyRead(err)
	w.err, w.wroteNothing = err, u.TX == w.tx
	close(w.done)
	if client {
		_ = u.NetConn.SetDeadline(aLongTimeAgo)
	}
}

// finish ends an exchange on u: the context watch stops, and u goes back to its pool
// when reuse holds and nothing can touch it any more (the watch did not fire, the body
// writer finished), otherwise it closes.
func finish(u *Conn, stop ctxWatch, w *bodyWriter, reuse bool) {
	if !stop.stop() {
		reuse = false // the watch fired: the connection has a deadline in the past
	}
	if w != nil {
		wait := time.Duration(0)
		if reuse {
			wait = maxWriteWait
		}
		if !w.finishedOK(wait) {
			reuse = false
		}
	}
	if reuse {
		u.Pool.Put(u)
	} else {
		// A writer still running fails on the closed connection and ends.
		u.Pool.Discard(u)
	}
}

// staleErr reports the failures of a connection the server closed without a word: a
// clean EOF, or a reset (ECONNRESET, EPIPE). A timeout or a malformed response shows a
// server at work.
func staleErr(err error) bool {
	if IsTimeout(err) {
		return false
	}
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// idempotent reports whether req may be repeated without changing its effect: an
// idempotent method (RFC 9110 §9.2.2) or an Idempotency-Key field.
func idempotent(req *http.Request) bool {
	switch req.Method {
	case "", "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	_, ok := req.Header["Idempotency-Key"]
	if !ok {
		_, ok = req.Header["X-Idempotency-Key"]
	}
	return ok
}

func closeBody(b io.ReadCloser) {
	if b != nil {
		_ = b.Close()
	}
}

// h1Response is a response and its body in one allocation.
type h1Response struct {
	http.Response
	body h1Body
	vals [8]string // the header's values, when it has at most 8 fields (buildHeader)
	// fields is the number of fields the header map was filled with (what its size
	// follows; deletes since then shrink its length, not its size).
	fields int
	// spare is the emptied header map of the response this one was before
	// (ReleaseResponse), for buildHeader.
	spare http.Header
}

// HopByHopFree reports whether body (a response's Body as its transport returned it)
// is this transport's, whose response head holds no hop-by-hop field: buildHeader
// leaves out what h1.HopByHop names and what a Connection field lists, as
// forward.RemoveHopByHop would remove.
func HopByHopFree(body io.ReadCloser) bool {
	_, ok := body.(*h1Body)
	return ok
}

// responses holds the h1Responses ReleaseResponse was given, for newResponse: the
// response, its header map and their values were three of an h2c request's five
// allocations, and half its bytes, when the upstream speaks HTTP/1.1 (issue 12).
var responses sync.Pool

// ReleaseResponse gives resp's memory back for a later response, when resp is one of
// this transport's whose body was closed (its connection released); body is resp's
// Body as the transport returned it (before any wrapper). The caller promises that
// nothing uses resp, its header map or the value slices in it any more, on any
// goroutine; anything else is left to the collector.
func ReleaseResponse(resp *http.Response, body io.ReadCloser) {
	if resp == nil {
		return
	}
	b, ok := body.(*h1Body)
	if !ok || b.owner == nil || &b.owner.Response != resp || !b.released.Load() {
		return
	}
	r := b.owner
	h := resp.Header
	if r.fields > len(r.vals) || len(h) > len(r.vals) {
		// A cleared map keeps its size, and ranging over it costs its capacity.
		h = nil
	}
	clear(h)
	*r = h1Response{spare: h}
	responses.Put(r)
}

// newResponse builds the http.Response of the head hr: its fields copied out of the
// connection's buffer (one string for all of them), canonical keys, hop-by-hop fields
// removed; ContentLength -1 when the length is unknown (chunked, until close), 0 for
// 1xx/204/304, the Content-Length of a HEAD response; Trailer holding the announced
// trailer names of a chunked body.
func newResponse(req *http.Request, hr *h1.Response) *h1Response {
	r, _ := responses.Get().(*h1Response)
	if r == nil {
		r = new(h1Response)
	}
	resp := &r.Response
	resp.StatusCode = hr.Status
	resp.Status = statusText(hr.Status, hr.Reason)
	resp.Proto, resp.ProtoMajor, resp.ProtoMinor = "HTTP/1.1", 1, 1
	if hr.Minor == 0 {
		resp.Proto, resp.ProtoMinor = "HTTP/1.0", 0
	}
	resp.Request = req
	resp.Close = hr.Close
	switch {
	case hr.Chunked:
		resp.ContentLength = -1
		resp.TransferEncoding = []string{"chunked"}
	case hr.NoBody && req.Method != http.MethodHead:
		resp.ContentLength = 0
	default:
		resp.ContentLength = hr.ContentLength
	}
	resp.Header = buildHeader(hr.Headers, !hr.Chunked && hr.ContentLength >= 0, r.vals[:], r.spare)
	r.fields = len(hr.Headers)
	r.spare = nil
	if hr.Chunked {
		resp.Trailer = announcedTrailers(hr.Headers)
	}
	return r
}

// buildHeader copies the end-to-end fields of hs into an http.Header: hop-by-hop fields
// and those a Connection field names are left out, Content-Length too unless keepCL.
// Names are canonicalized as net/http's are (textproto.CanonicalMIMEHeaderKey: h1 names
// are tokens). All names and values are copied into one string, and every value slice
// is cut from one backing array.
//
// spare backs the values (each a one-element window) when it has room for them all;
// into, an empty map, is filled instead of a new one when it is not nil.
func buildHeader(hs []h1.Header, keepCL bool, spare []string, into http.Header) http.Header {
	var arr [4]string
	conn := arr[:0]
	for i := range hs {
		if h1.EqualFoldLower(hs[i].Name, "connection") {
			conn = append(conn, hs[i].Value)
		}
	}
	keep := func(name string) bool {
		if h1.HopByHop(name) {
			return false
		}
		if !keepCL && h1.EqualFoldLower(name, "content-length") {
			return false
		}
		return len(conn) == 0 || !namedIn(conn, name)
	}
	size, n := 0, 0
	for i := range hs {
		if keep(hs[i].Name) {
			size += len(hs[i].Name) + len(hs[i].Value)
			n++
		}
	}
	h := into
	if h == nil {
		h = make(http.Header, n)
	}
	if n == 0 {
		return h
	}
	var b strings.Builder
	b.Grow(size)
	for i := range hs {
		if keep(hs[i].Name) {
			writeCanonical(&b, hs[i].Name)
			b.WriteString(hs[i].Value)
		}
	}
	s := b.String()
	vals := spare
	if len(vals) < n {
		vals = make([]string, n)
	}
	off, j := 0, 0
	for i := range hs {
		if !keep(hs[i].Name) {
			continue
		}
		k := s[off : off+len(hs[i].Name)]
		off += len(k)
		v := s[off : off+len(hs[i].Value)]
		off += len(v)
		vals[j] = v
		if prev, ok := h[k]; ok {
			h[k] = append(prev, v)
		} else {
			h[k] = vals[j : j+1 : j+1]
		}
		j++
	}
	return h
}

// writeCanonical writes name in net/http's canonical form: upper case first and after
// each '-', lower case elsewhere.
//
// The name is built on the stack and appended once: a WriteByte per byte (its copy check
// and append each time) was most of the response head's conversion (issue 12).
func writeCanonical(b *strings.Builder, name string) {
	var buf [64]byte
	out := buf[:0]
	if len(name) > len(buf) {
		out = make([]byte, 0, len(name))
	}
	upper := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		if upper && 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		} else if !upper && 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		out = append(out, c)
		upper = c == '-'
	}
	b.Write(out)
}

// announcedTrailers is the response's Trailer map before its body is read: the names its
// Trailer fields announce, canonical, with no values yet (as net/http gives it); nil when
// none are announced.
func announcedTrailers(hs []h1.Header) http.Header {
	var t http.Header
	for i := range hs {
		if !h1.EqualFoldLower(hs[i].Name, "trailer") {
			continue
		}
		for list := hs[i].Value; list != ""; {
			var name string
			name, list, _ = strings.Cut(list, ",")
			name = strings.TrimSpace(name)
			if name == "" || !h1.TrailerField(name) {
				continue
			}
			if t == nil {
				t = make(http.Header, 2)
			}
			t[http.CanonicalHeaderKey(strings.Clone(name))] = nil
		}
	}
	return t
}

// namedIn reports whether one of the Connection values lists name.
func namedIn(conn []string, name string) bool {
	for _, list := range conn {
		for list != "" {
			var elem string
			elem, list, _ = strings.Cut(list, ",")
			if h1.EqualFold(strings.TrimSpace(elem), name) {
				return true
			}
		}
	}
	return false
}

// statusLines are net/http's Status strings ("200 OK") of the registered codes, so a
// response with the standard reason phrase costs no allocation.
var statusLines = func() map[int]string {
	m := make(map[int]string)
	for code := 100; code < 600; code++ {
		if text := http.StatusText(code); text != "" {
			m[code] = strconv.Itoa(code) + " " + text
		}
	}
	return m
}()

// statusText is the Status of a response: code and reason phrase.
func statusText(code int, reason string) string {
	if reason == http.StatusText(code) {
		if s, ok := statusLines[code]; ok {
			return s
		}
	}
	return strconv.Itoa(code) + " " + reason
}

// h1Body is a response body read from the connection: it decodes the framing from the
// connection's buffer (h1.BodyReader), fills the response's Trailer when a chunked body
// ends, and releases the connection once: to its pool when the body was read to its
// end on a connection that stays open, closed otherwise (an early Close, an error, a
// context that ended). Read and Close may be called from different goroutines (Close
// interrupts a Read).
type h1Body struct {
	u       *Conn
	ctx     context.Context
	stop    ctxWatch
	w       *bodyWriter // the request body's writer, when it ran concurrently
	resp    *http.Response
	owner   *h1Response // resp's, for ReleaseResponse
	reuse   bool        // the connection may be kept after the body
	chunked bool

	released atomic.Bool
	err      error // the sticky end (io.EOF) or failure; Read's goroutine only
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	rd := &b.u.rt.body
	n, err := rd.Read(p)
	switch {
	case err == nil:
		return n, nil
	case err == io.EOF:
		if b.chunked {
			b.fillTrailers(rd.Trailers)
		}
		b.err = io.EOF
		b.release(b.reuse && rd.Done())
		return n, io.EOF
	}
	if w := b.w; w != nil {
		if cerr, ok := w.clientFailed(); ok {
			err = cerr
		}
	}
	if cerr := b.ctx.Err(); cerr != nil && !isBodyRead(err) {
		err = cerr
	} else if !isBodyRead(err) {
		err = fmt.Errorf("reading the response body from %s: %w", b.u.Pool.addr, err)
	}
	b.err = err
	b.release(false)
	return n, err
}

// Close implements io.Closer: a body not read to its end closes the connection.
func (b *h1Body) Close() error {
	b.release(false)
	return nil
}

func (b *h1Body) release(reuse bool) {
	if b.released.CompareAndSwap(false, true) {
		finish(b.u, b.stop, b.w, reuse)
	}
}

// fillTrailers sets the trailer fields that ended a chunked body in the response's
// Trailer map (made when no names were announced), copied out of the connection's
// buffer, canonical keys.
func (b *h1Body) fillTrailers(ts []h1.Header) {
	if len(ts) == 0 {
		return
	}
	size := 0
	for _, f := range ts {
		size += len(f.Name) + len(f.Value)
	}
	var sb strings.Builder
	sb.Grow(size)
	for _, f := range ts {
		writeCanonical(&sb, f.Name)
		sb.WriteString(f.Value)
	}
	s := sb.String()
	if b.resp.Trailer == nil {
		b.resp.Trailer = make(http.Header, len(ts))
	}
	t := b.resp.Trailer
	off := 0
	for _, f := range ts {
		k := s[off : off+len(f.Name)]
		off += len(k)
		v := s[off : off+len(f.Value)]
		off += len(v)
		t[k] = append(t[k], v)
	}
}

// ctxWatch runs a function when an exchange's context ends, until stopped. Over the
// request path's own context (reqctx.Ctx: what forward.RoundTrip gives every attempt)
// it is a hook in an inline slot, allocating nothing; over any other context it is
// context.AfterFunc.
type ctxWatch struct {
	rc  *reqctx.Ctx
	id  uint32
	std func() bool
}

func watchCtx(ctx context.Context, f func()) ctxWatch {
	if rc, ok := ctx.(*reqctx.Ctx); ok {
		return ctxWatch{rc: rc, id: rc.Hook(f)}
	}
	if ctx.Done() == nil {
		return ctxWatch{}
	}
	return ctxWatch{std: context.AfterFunc(ctx, f)}
}

// stop ends the watch; false when the function already ran (or is running), as
// context.AfterFunc's stop. A watch of a context that cannot end reports true.
func (w ctxWatch) stop() bool {
	switch {
	case w.rc != nil:
		return w.rc.Unhook(w.id)
	case w.std != nil:
		return w.std()
	}
	return true
}
