package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/meshd/meshd/balancer"
	"github.com/meshd/meshd/router"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
)

// bufferedConn lets the HTTP/2 server read the bytes the sniffer already buffered.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// serveH2 serves an HTTP/2 prior-knowledge (h2c) connection. This path uses net/http
// types: HTTP/2's framing, flow control and HPACK are x/net/http2's job.
func (s *Server) serveH2(tc *trackedConn, br *bufio.Reader, kind listenerKind) {
	local := 0
	if kind == kindIngress {
		local = originalPort(tc.Conn)
	}
	s.h2.ServeConn(&bufferedConn{Conn: tc, r: br}, &http2.ServeConnOpts{
		Context:    context.Background(),
		BaseConfig: s.h2base,
		Handler:    &h2handler{s: s, kind: kind, local: local},
	})
}

type h2handler struct {
	s     *Server
	kind  listenerKind
	local int
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
	d := h.s.resolve(snap, h.kind, &rr, h.local)
	if d.route == nil {
		localHTTPError(w, d.status, d.code, "", d.msg)
		return
	}
	out := newOutRequest(r.Context(), r.Method, rr.Path, r.Host, r.Header, r.Body, r.ContentLength, r.Trailer, scheme, r.RemoteAddr)
	resp, res, cancel, err := roundTrip(d, out)
	if err != nil {
		status, code := classify(err)
		localHTTPError(w, status, code, overflowLimit(err), "meshd: "+err.Error()+"\n")
		return
	}
	defer cancel()
	start := time.Now()
	copyResponse(w, resp, res, start)
}

// roundTrip sends out to an endpoint of d's cluster through the cluster's net/http
// transport, applying the route/listener timeout and the HTTP/2 request limit. On
// success the caller owns resp.Body, must call cancel when done with it and must call
// res.Done (copyResponse does both).
func roundTrip(d decision, out *http.Request) (*http.Response, balancer.Result, context.CancelFunc, error) {
	cl := d.cluster
	timeout := d.route.PerRequestTimeout
	if timeout == 0 {
		timeout = cl.perRequest
	}
	ctx := out.Context()
	cancel := context.CancelFunc(func() {})
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
	}
	if err := cl.acquireStream(); err != nil {
		cancel()
		return nil, balancer.Result{}, nil, err
	}
	res, err := pickEndpoint(cl, nil)
	if err != nil {
		cl.releaseStream()
		cancel()
		return nil, res, nil, err
	}
	out = out.WithContext(ctx)
	out.URL.Host = res.Endpoint.Address
	start := time.Now()
	resp, err := cl.rt.RoundTrip(out)
	if err != nil {
		res.Done(balancer.DoneInfo{Err: err, Latency: time.Since(start)})
		cl.releaseStream()
		cancel()
		var ue *upstreamError
		if !errors.As(err, &ue) {
			if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
				err = &upstreamError{kind: errTimeout, err: err}
			} else {
				err = &upstreamError{kind: errReset, err: err}
			}
		}
		return nil, res, nil, err
	}
	release := func() { cl.releaseStream(); cancel() }
	return resp, res, release, nil
}

// newOutRequest builds the upstream request: hop-by-hop headers removed (RFC 9110
// §7.6.1), "te: trailers" kept for gRPC, x-forwarded-*/x-request-id set.
func newOutRequest(ctx context.Context, method, pathQuery, host string, in http.Header, body io.ReadCloser,
	contentLength int64, trailer http.Header, scheme, remoteAddr string) *http.Request {
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
	if hdr.Get("X-Forwarded-Proto") == "" {
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
func copyResponse(w http.ResponseWriter, resp *http.Response, res balancer.Result, start time.Time) {
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
	err := copyFlush(w, resp.Body)
	for k, v := range resp.Trailer {
		if announced > 0 {
			dst[k] = v
		} else {
			dst[http.TrailerPrefix+k] = v
		}
	}
	res.Done(balancer.DoneInfo{Err: err, Status: resp.StatusCode, Latency: time.Since(start)})
	if err != nil {
		// Mid-body failure: abort the stream so the client sees an error, not a short body.
		panic(http.ErrAbortHandler)
	}
}

// copyFlush copies src to w, flushing whenever src has nothing more ready.
func copyFlush(w http.ResponseWriter, src io.Reader) error {
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			if ferr := rc.Flush(); ferr != nil {
				return ferr
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

// forwardRoundTrip serves an HTTP/1.1 downstream request whose cluster speaks HTTP/2:
// the request is converted to net/http form, sent through the cluster's HTTP/2
// transport, and the response written back as HTTP/1.1 (chunked when its length is
// unknown, trailers in the chunked trailer section).
func (c *h1conn) forwardRoundTrip(d decision, target, scheme string) bool {
	req := &c.req
	hdr := make(http.Header, len(req.Headers))
	for _, f := range req.Headers {
		hdr.Add(f.Name, f.Value)
	}
	var body io.ReadCloser = http.NoBody
	cl := req.ContentLength
	switch {
	case req.Chunked:
		body = io.NopCloser(httputil.NewChunkedReader(c.br))
		cl = -1
	case req.ContentLength > 0:
		body = io.NopCloser(io.LimitReader(c.br, req.ContentLength))
	default:
		cl = 0
	}
	out := newOutRequest(context.Background(), req.Method, target, c.rr.Authority, hdr, body, cl, nil, scheme, c.tc.RemoteAddr().String())
	resp, res, cancel, err := roundTrip(d, out)
	if err != nil {
		return c.failReply(err) && !req.HasBody()
	}
	defer cancel()
	defer resp.Body.Close()
	start := time.Now()
	closeDown := req.Close || req.Minor == 0 || c.s.draining.Load()
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
		res.Done(balancer.DoneInfo{Err: err})
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
	flushErr := bw.Flush()
	res.Done(balancer.DoneInfo{Err: copyErr, Status: resp.StatusCode, Latency: time.Since(start)})
	return copyErr == nil && flushErr == nil && !closeDown
}
