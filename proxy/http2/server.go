// Package http2 is the HTTP/2 front end: h2c (prior knowledge) connections handed over
// by the listener after sniffing, served by meshd's own HTTP/2 server (internal/h2, one
// per listener kind), each request resolved and sent through the forward pipeline
// (forward.RoundTrip over the cluster's transport), and the response streamed back with
// its trailers.
package http2

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"math/rand/v2"

	"strconv"

	"github.com/meshd/meshd/balancer"
	"github.com/meshd/meshd/internal/h2"
	"github.com/meshd/meshd/proxy/forward"
	"github.com/meshd/meshd/proxy/listen"
	"github.com/meshd/meshd/proxy/upstream"
	"github.com/meshd/meshd/router"
	"github.com/meshd/meshd/telemetry"
)

type connKey struct{}

// Server serves the HTTP/2 connections of one listener kind.
type Server struct {
	env  *forward.Env
	kind forward.Kind
	srv  *h2.Server
}

// Limits are the HTTP/2 defences of downstream connections: base (Envoy's edge
// defaults where zero: 100 streams, 64 KiB stream window, 1 MiB connection window, the
// flood limits), with the request head bounded as on HTTP/1.1 (60 KiB, 100 fields: 431)
// and the listener's idle timeout.
func Limits(base h2.Limits, idle time.Duration) h2.Limits {
	l := base
	l.MaxHeaderListSize = maxHeaderBytes
	l.MaxHeaderFields = maxHeaderFields
	l.IdleTimeout = idle
	return l
}

// New builds the HTTP/2 server of one listener kind on meshd's own HTTP/2
// (internal/h2) with the defences lim; counters receive its connection events.
func New(env *forward.Env, kind forward.Kind, lim h2.Limits, counters *h2.Counters) *Server {
	s := &Server{env: env, kind: kind}
	s.srv = &h2.Server{
		Handler:  s,
		Limits:   Limits(lim, env.KeepAliveIdle),
		Counters: counters,
		Log:      env.Log,
		LocalReply: func(w http.ResponseWriter, r *http.Request, status int) {
			msg := "meshd: bad request\n"
			if status == http.StatusRequestHeaderFieldsTooLarge {
				msg = fmt.Sprintf("meshd: request head larger than %d bytes or %d fields\n", maxHeaderBytes, maxHeaderFields)
			}
			LocalReply(w, strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc"), status, forward.CodeBadRequest, "", msg)
		},
	}
	return s
}

// Request head bounds, the same as the HTTP/1.1 front end's (http1.Limits).
const (
	maxHeaderBytes  = 60 << 10
	maxHeaderFields = 100
)

// Shutdown sends GOAWAY on every connection and waits (bounded by ctx) for their open
// streams to finish.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

// Close closes every connection at once.
func (s *Server) Close() error { return s.srv.Close() }

// GoAway sends GOAWAY on tc's HTTP/2 connection, if it is one (a removed listener):
// its open streams finish, and it closes when it has none.
func (s *Server) GoAway(tc *listen.Conn) bool {
	return s.srv.GoAway(func(ctx context.Context) bool { return ctx.Value(connKey{}) == tc }) > 0
}

// ServeConn serves an HTTP/2 connection, h2c or over the TLS the listener terminated
// (br holds the bytes the sniffer read), until it closes.
//
// firstBy is when the first request's header block must be complete (zero: the h2
// server's default); a connection past it gets GOAWAY, is closed and counted.
func (s *Server) ServeConn(tc *listen.Conn, br *bufio.Reader, firstBy time.Time) {
	ctx := context.WithValue(context.Background(), connKey{}, tc)
	s.srv.ServeConn(ctx, tc.Conn, br, h2.ConnInfo{RemoteAddr: tc.RemoteAddr().String(), TLS: tc.TLS,
		FirstRequestBy: firstBy, FirstRequestTimeouts: &s.env.FirstRequestTimeouts[s.kind]})
}

// ServeHTTP resolves one request, runs it through the forward pipeline and streams
// the response back.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.ServeHTTPContext(r.Context(), w, r)
}

// ServeHTTPContext is ServeHTTP with the request's context beside it (h2.ContextHandler:
// the HTTP/2 server saves a request copy per request); r's own context is not used.
func (s *Server) ServeHTTPContext(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	env := s.env
	snap := env.State.Load()
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	rr := router.Request{
		Authority: r.Host,
		Method:    r.Method,
		Path:      r.URL.RequestURI(),
		Scheme:    scheme,
		GRPC:      strings.HasPrefix(first(r.Header["Content-Type"]), "application/grpc"),
		Header:    forward.HTTPHeader(r.Header),
	}
	var local int
	var orig netip.AddrPort
	var peer string // the verified identity of the caller (ingress mTLS)
	if tc, ok := ctx.Value(connKey{}).(*listen.Conn); ok {
		orig, peer = tc.Orig, tc.Peer
		if s.kind == forward.Ingress {
			local = int(orig.Port())
		}
	}
	// The record of the request, for the statistics and the snapshot's observers.
	// What the request needs once, in one allocation: its record, the upstream exchange
	// and the values of the forwarding fields.
	one := perRequests.Get().(*perRequest)
	rec := &one.rec
	*rec = telemetry.Request{Start: time.Now(), Listener: s.kind.String(), Protocol: "HTTP/2", Method: r.Method,
		Authority: r.Host, Path: rr.Path, Remote: r.RemoteAddr, Req: forward.HTTPHeader(r.Header), BytesReceived: max(r.ContentLength, 0),
		TLS: r.TLS, Peer: peer, GRPC: rr.GRPC}
	var d forward.Decision
	var span telemetry.Span
	if env.Tracer != nil {
		span = env.Tracer.StartRequest(rec.Req, rec)
	}
	ls := env.ListenerStats(s.kind)
	ls.InFlight.Add(1)
	// recycle: the request ended on the clean path, where one's memory can serve the
	// next request (perRequests).
	recycle := false
	var upResp *http.Response // the final attempt's response, once there is one
	var upBody io.ReadCloser  // its body as its transport made it
	defer func() {
		var route, cluster *telemetry.HTTPStats
		if d.Policy != nil {
			route = d.Policy.Stats()
		}
		if d.Cluster != nil {
			cluster = d.Cluster.Stats()
		}
		forward.Finish(rec, ls, route, cluster, d.GatewayStats, span, snap.Observers())
		// An attempt that did not settle (one abandoned by a per-try timeout or a retry,
		// a failed one, one whose deadline fired mid-body) may still reach the stream's
		// context from a transport's or a timer's goroutine: the stream must not serve
		// another request, whose context would be that same memory zeroed.
		if !one.rt.Settled() {
			if k, ok := w.(streamKeeper); ok {
				k.KeepStream()
			}
		}
		// A span keeps the record; an observer must not (telemetry.Observer).
		if recycle && span == nil && one.rt.Recycle() {
			one.rec, one.spare = telemetry.Request{}, [4]string{}
			perRequests.Put(one)
			// Recycle found every upstream attempt's body closed: nothing reads the
			// request body any more, and its stream may serve another request.
			if b, ok := w.(bodyReleaser); ok && r.Body != http.NoBody {
				b.ReleaseBody()
			}
			// Nothing holds the header map either (the forwarded head was built in it:
			// the attempts are over, no mirror copy or span kept it, and observers must
			// not keep it): the server may fill it with a later request's fields.
			if h, ok := w.(headerReleaser); ok {
				h.ReleaseHeader()
			}
			// Nor the upstream's response head (or the downstream head it became).
			upstream.ReleaseResponse(upResp, upBody)
		}
	}()
	if env.IsOverloaded() {
		env.OverloadRejected[s.kind].Add(1)
		noteLocal(rec, http.StatusServiceUnavailable, forward.CodeOverloaded)
		LocalReply(w, rr.GRPC, http.StatusServiceUnavailable, forward.CodeOverloaded, "", "meshd: overloaded, try again later\n")
		return
	}
	d = forward.Resolve(snap, env.Passthrough, s.kind, &rr, local, orig, rand.Uint64())
	forward.NoteRoute(rec, &d)
	if d.GRPCHealth != 0 {
		noteLocal(rec, http.StatusOK, d.Code)
		grpcHealthReply(w, d.GRPCHealth)
		return
	}
	if d.Failed() || !env.Authorize(snap, &d, peer, &rr) {
		noteLocal(rec, d.Status, d.Code)
		LocalReply(w, rr.GRPC, d.Status, d.Code, "", d.Msg)
		return
	}
	if r.Method == http.MethodConnect && !d.Cluster.HTTP2() {
		// As on the HTTP/1.1 front end: meshd tunnels nothing through an HTTP/1.1
		// upstream's pooled connections (a 2xx would turn one into a tunnel).
		noteLocal(rec, http.StatusMethodNotAllowed, forward.CodeBadRequest)
		LocalReply(w, rr.GRPC, http.StatusMethodNotAllowed, forward.CodeBadRequest, "", "meshd: CONNECT is not supported\n")
		return
	}
	if ok, wait := d.Admit(snap); !ok {
		noteLocal(rec, http.StatusTooManyRequests, forward.CodeRateLimited)
		w.Header().Set("Retry-After", forward.RetryAfterValue(wait))
		LocalReply(w, rr.GRPC, http.StatusTooManyRequests, forward.CodeRateLimited, "", "meshd: rate limit exceeded\n")
		return
	}
	client, _, _ := net.SplitHostPort(r.RemoteAddr)
	// The head was decoded for this request alone (internal/h2): forwarded in place.
	hf, ok := w.(hopFreeReporter)
	hdr := forward.HTTPForwardingInto(r.Header, client, peer, s.kind == forward.Ingress, scheme, one.spare[:0], ok && hf.RequestHopFree())
	var hv router.HeaderVars
	rh := d.Rules()
	if rh.Any() {
		hv = forward.RouteVars(&d, r.RemoteAddr, peer, snap.Node())
		forward.ApplyRouteHTTP(hdr, rh, &hv, true)
	}
	var grpcTimeout time.Duration
	if rr.GRPC {
		grpcTimeout = forward.GRPCTimeout(true, first(r.Header["Grpc-Timeout"]))
	}
	call, idle := forward.NewCall(&d, env.StreamIdle, grpcTimeout)
	call.Ctx = ctx
	call.Span = span
	var aff forward.Affinity
	if h := d.Cluster.Balancer().HashOn(); h != nil {
		aff = forward.HTTPAffinity(h, r.Header, client, rand.Uint64())
		aff.Apply(&call)
	}
	x := &one.rt
	x.InitOut(r.Method, rr.Path, rr.Authority, hdr, r.Body, r.ContentLength, r.Trailer, d.Cluster, idle, env.ReplayBound())
	x.Ctx = ctx
	pm := env.Mirrors.TakeRoundTrip(&d, r.Method, rr.Path, r.Host, hdr)
	fl, err := forward.Do(&call, x)
	rec.Attempts = call.Attempts
	if err != nil {
		status, code := forward.Status(err)
		if ce, ok := forward.AsClientError(err); ok {
			status, code = forward.ClientStatus(ce), forward.CodeBadRequest
			pm.Abandon()
		}
		pm.Finish(x)
		noteLocal(rec, status, code)
		LocalReply(w, rr.GRPC, status, code, upstream.LimitOf(err), "meshd: "+err.Error()+"\n")
		return
	}
	defer x.Close()
	upResp, upBody = x.Response(), x.TransportBody()
	if aff.SetCookie != "" {
		x.Response().Header.Add("Set-Cookie", aff.SetCookie)
	}
	// The copy leaves at the response head when the body is whole by then (a unary
	// call's is), else once the response was relayed.
	pm.Try(x)
	if rh.Any() {
		forward.ApplyRouteHTTP(x.Response().Header, rh, &hv, false)
	}
	// A response head of meshd's HTTP/1.1 transport holds no hop-by-hop field (it leaves
	// them out), unless a route rule added one since.
	clean := CopyResponse(w, x, &fl, rr.GRPC, rec, !rh.Any() && upstream.HopByHopFree(upBody))
	pm.Finish(x)
	// A mirror's copy may still be sending the forwarded head, whose X-Forwarded-*
	// values are in one.spare; x.Close (deferred, before the statistics) decides the rest.
	recycle = clean && pm == nil
}

// perRequest is what a request needs once, allocated together. It is pooled: 1,352 bytes
// per request were half of what the HTTP/2 path allocated, and the collector's work
// follows the bytes. Only a request that ended on the clean path gives it back
// (forward.RoundTrip.Recycle says when nothing else can reach it); any other is left to
// the collector.
type perRequest struct {
	rec   telemetry.Request
	rt    forward.RoundTrip
	spare [4]string // the forwarding fields' values (forward.HTTPForwardingInto)
}

var perRequests = sync.Pool{New: func() any { return new(perRequest) }}

// first is a field's first value ("" when none): http.Header.Get for a canonical key,
// without canonicalizing it again.
func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

// headerAdopter is a ResponseWriter that can take over a header map (internal/h2's).
type headerAdopter interface{ AdoptHeader(http.Header) bool }

// headRetractor is a ResponseWriter that can drop a head that has not left yet
// (internal/h2's).
type headRetractor interface{ RetractHead() bool }

// streamKeeper is a ResponseWriter whose stream the server may reuse after the handler
// returns unless told not to (internal/h2's).
type streamKeeper interface{ KeepStream() }

// bodyReleaser is a ResponseWriter whose stream may be reused after a request with a
// body once the handler says nothing reads the body any more (internal/h2's).
type bodyReleaser interface{ ReleaseBody() }

// hopFreeReporter is internal/h2's report that a request has no hop-by-hop field
// (responseWriter.RequestHopFree).
type hopFreeReporter interface{ RequestHopFree() bool }

// headerReleaser is the server's side of the request header map's reuse
// (internal/h2 responseWriter.ReleaseHeader).
type headerReleaser interface{ ReleaseHeader() }

// responseEnder is a ResponseWriter that can end its response before the handler
// returns (internal/h2's).
type responseEnder interface{ EndResponse() error }

// noteLocal records an answer meshd gave itself.
func noteLocal(rec *telemetry.Request, status int, code string) { rec.Status, rec.Code = status, code }

// CopyResponse streams the final response of x to w: headers, body (flushed as it
// arrives when its length is unknown, so gRPC and server-sent events are not held
// back), then trailers, and reports the attempt's end. A body that fails midway is
// aborted (RST_STREAM) so the client sees an error rather than a short body; but when
// meshd's own timeout cut a gRPC call, the stream ends with trailers carrying
// DEADLINE_EXCEEDED, which is what happened, as gRPC clients expect.
//
// It reports whether the response was relayed whole and ended (clean). hopFree says
// the response head is known to hold no hop-by-hop field, which saves the pass that
// removes them.
func CopyResponse(w http.ResponseWriter, x *forward.RoundTrip, fl *forward.Flight, grpc bool, rec *telemetry.Request, hopFree bool) (clean bool) {
	resp := x.Response()
	if rec != nil {
		rec.Status, rec.Upstream, rec.UpstreamTime = resp.StatusCode, fl.Res.Endpoint.Address, time.Since(fl.Start)
		rec.Resp = forward.HTTPHeader(resp.Header)
	}
	if !hopFree {
		forward.RemoveHopByHop(resp.Header)
	}
	var dst http.Header
	if a, ok := w.(headerAdopter); ok && a.AdoptHeader(resp.Header) {
		// The response head is this request's alone: it becomes the downstream head.
		dst = resp.Header
	} else {
		dst = w.Header()
		for k, v := range resp.Header {
			dst[k] = v
		}
	}
	// The trailer names known before the body are announced in the head; trailers that
	// turn up only at the end of the body go out under http.TrailerPrefix.
	var announced []string
	if len(resp.Trailer) > 0 {
		announced = make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			announced = append(announced, k)
		}
		dst.Set("Trailer", strings.Join(announced, ", "))
	}
	w.WriteHeader(resp.StatusCode)
	n, err := copyFlush(w, resp.Body, resp.ContentLength < 0)
	if rec != nil {
		rec.BytesSent = n
	}
	if err != nil && grpc {
		if cause := x.TimeoutCause(); cause != nil && !isDownstream(err) {
			fl.End(balancer.DoneInfo{Err: err, Status: resp.StatusCode, Latency: time.Since(fl.Start)}, true)
			// The message names the timeout (cause), not the Read error: after the idle
			// timer cut the attempt that is a bare "context canceled".
			dst[trailerGRPCStatus] = []string{strconv.Itoa(forward.GRPCDeadlineExceeded)}
			dst[trailerGRPCMessage] = []string{forward.GRPCMessageEncode("meshd: upstream_timeout: " + cause.Error())}
			dst[http.TrailerPrefix+forward.HeaderError] = []string{forward.CodeTimeout}
			return false
		}
	}
	for k, v := range resp.Trailer {
		if slices.Contains(announced, k) {
			dst[k] = v
		} else {
			dst[trailerKey(k)] = v
		}
	}
	if rec != nil && len(resp.Trailer) > 0 {
		rec.Trailers = forward.HTTPHeader(resp.Trailer)
	}
	// A copy error is the upstream's when reading failed, the client's when writing did;
	// copyFlush tells them apart.
	fromUpstream := err != nil && !isDownstream(err)
	fl.End(balancer.DoneInfo{Err: err, Status: resp.StatusCode, Latency: time.Since(fl.Start)}, err == nil || fromUpstream)
	if e, ok := w.(responseEnder); ok && err == nil {
		// The response is whole and the attempt ended (its pool slot is free before
		// the client can send its next request): it leaves now, before the statistics,
		// the mirror and the upstream request's release, which are then off its
		// latency. A failure is the client's; the stream is reset when the handler
		// returns.
		return e.EndResponse() == nil
	}
	if fromUpstream {
		if r, ok := w.(headRetractor); ok && r.RetractHead() {
			// Nothing of the response has left: the client gets meshd's answer rather
			// than a reset stream, as on the HTTP/1.1 path.
			status, code := forward.UpstreamStatus(err)
			if x.TimeoutCause() != nil {
				// meshd's own timeout cancelled the body's read ("context canceled").
				status, code = 504, forward.CodeTimeout
			}
			if rec != nil {
				rec.BytesSent, rec.Trailers = 0, nil
				noteLocal(rec, status, code)
			}
			LocalReply(w, grpc, status, code, "", "meshd: the upstream failed before its response was sent: "+err.Error()+"\n")
			return false
		}
	}
	if err != nil {
		// Mid-body failure: abort the stream so the client sees an error, not a short body.
		panic(http.ErrAbortHandler)
	}
	return false
}

// isDownstream reports an error of the client's side. Its own function: the target of
// errors.As escapes, and declared in CopyResponse it cost an allocation per response,
// error or not.
func isDownstream(err error) bool {
	var de *forward.DownstreamError
	return errors.As(err, &de)
}

// copyBufPool holds the 32 KiB relay buffers of the net/http path: one per response
// would be the path's largest allocation (and most of its GC work).
var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyFlush copies src to w. A body of unknown length (gRPC, server-sent events, any
// stream) is flushed after every read, so nothing is held back; a body of known length
// is flushed once, when the handler returns, so its HEADERS and DATA frames leave in
// one write instead of one write each (net/http's ReverseProxy makes the same split).
func copyFlush(w http.ResponseWriter, src io.Reader, stream bool) (int64, error) {
	rc := http.NewResponseController(w)
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	buf := *bp
	var total int64
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return total, &forward.DownstreamError{Err: werr}
			}
			total += int64(n)
			// At the end (the last bytes came with io.EOF) the response's end flushes
			// them, with the trailers, in one write; bytes that came with an error still
			// leave before it is handled.
			if stream && err != io.EOF {
				if ferr := rc.Flush(); ferr != nil {
					return total, &forward.DownstreamError{Err: ferr}
				}
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// LocalReply answers a request with an error meshd generated. A gRPC request gets a
// gRPC-shaped answer (HTTP 200, trailers-only, grpc-status and grpc-message), as Envoy
// gives, so every gRPC client sees a status code and meshd's reason instead of a bare
// HTTP status it has to interpret; the x-meshd-* headers are there in both shapes.
func LocalReply(w http.ResponseWriter, grpc bool, status int, code, limit, msg string) {
	if !grpc {
		localHTTPError(w, status, code, limit, msg)
		return
	}
	h := w.Header()
	h.Set(forward.HeaderError, code)
	if limit != "" {
		h.Set(forward.HeaderLimit, limit)
	}
	h.Set("Content-Type", "application/grpc")
	h.Set("Grpc-Status", forward.GRPCStatusString(status, code))
	h.Set("Grpc-Message", forward.GRPCMessageEncode(strings.TrimSpace(msg)))
	w.WriteHeader(http.StatusOK)
}

// grpcHealthReply answers a gRPC health check meshd serves itself: a HealthCheckResponse
// with status st, then grpc-status 0 in the trailers.
func grpcHealthReply(w http.ResponseWriter, st uint8) {
	h := w.Header()
	h.Set(forward.HeaderError, forward.CodeHealthCheck)
	h.Set("Content-Type", "application/grpc")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(forward.GRPCHealthMessage(st))
	h.Set(trailerGRPCStatus, "0")
}

func localHTTPError(w http.ResponseWriter, status int, code, limit, msg string) {
	h := w.Header()
	h.Set(forward.HeaderError, code)
	if limit != "" {
		h.Set(forward.HeaderLimit, limit)
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, msg)
}

// The "Trailer:"-prefixed keys of gRPC's trailers, built once: CopyResponse sets one or
// two per call, and a concatenation is an allocation each.
const (
	trailerGRPCStatus  = http.TrailerPrefix + "Grpc-Status"
	trailerGRPCMessage = http.TrailerPrefix + "Grpc-Message"
)

// trailerKey is the key under which a trailer not announced in the head is set.
func trailerKey(k string) string {
	switch k {
	case "Grpc-Status":
		return trailerGRPCStatus
	case "Grpc-Message":
		return trailerGRPCMessage
	}
	return http.TrailerPrefix + k
}
