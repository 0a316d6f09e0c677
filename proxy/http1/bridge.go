package http1

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshd/meshd/balancer"
	"github.com/meshd/meshd/proxy/forward"
	"github.com/meshd/meshd/proxy/state"
	"golang.org/x/net/http/httpguts"
)

// forwardRoundTrip serves an HTTP/1.1 downstream request whose cluster speaks HTTP/2:
// the request is converted to net/http form, sent through the cluster's HTTP/2
// transport, and the response written back as HTTP/1.1 (chunked when its length is
// unknown, trailers in the chunked trailer section).
func (c *h1conn) bridge(snap *state.Snapshot, d *forward.Decision, target string) bool {
	req := &c.req
	hdr := forward.H1ToHTTP(req.Headers, c.fwd.Extra)
	if c.rh.Any() {
		forward.ApplyRouteHTTP(hdr, c.rh, &c.hv, true)
	}
	var body io.ReadCloser = http.NoBody
	var rb *h1Body
	var trailer http.Header
	cl := req.ContentLength
	switch {
	case req.Chunked:
		// Trailer names announced by the client are declared up front: net/http sends
		// request trailers only for keys present when the request starts. (The Trailer
		// field itself is hop-by-hop: hdr no longer has it.)
		for _, f := range req.Headers {
			if !forward.EqualFoldASCII(f.Name, "trailer") {
				continue
			}
			for _, name := range strings.Split(f.Value, ",") {
				if name = textproto.TrimString(name); name != "" {
					if trailer == nil {
						trailer = http.Header{}
					}
					// A copy: an already canonical name comes back as it is, a view of
					// the connection's buffer, which the next request overwrites while
					// the upstream body writer may still encode the trailers.
					trailer[strings.Clone(textproto.CanonicalMIMEHeaderKey(name))] = nil
				}
			}
		}
		rb = newH1Body(httputil.NewChunkedReader(c.br), c.br, true, trailer, c.tc.ShutRead)
		body, cl = rb, -1
	case req.ContentLength > 0:
		rb = newH1Body(&exactReader{r: c.br, n: req.ContentLength}, c.br, false, nil, c.tc.ShutRead)
		body = rb
	default:
		cl = 0
	}
	call, idle := forward.NewCall(d, c.env.StreamIdle, forward.GRPCTimeout(c.rr.GRPC, hdr.Get("Grpc-Timeout")))
	x := forward.NewOutRoundTrip(req.Method, target, c.rr.Authority, hdr, body, cl, trailer, d.Cluster, idle, c.env.ReplayBound())
	call.Span = c.span
	c.aff.Apply(&call)
	pm := c.env.Mirrors.TakeRoundTrip(d, req.Method, target, c.rr.Authority, hdr)
	fl, err := forward.Do(&call, x)
	c.rec.Attempts = call.Attempts
	if err != nil {
		// net/http may still be reading the body: stop it before this goroutine uses the
		// connection again.
		rb.abort()
		if ce, ok := forward.AsClientError(err); ok {
			pm.Abandon()
			c.clientBodyReply(ce)
			return false
		}
		pm.Finish(x)
		return c.failReply(err) && !req.HasBody()
	}
	pm.Try(x)
	defer pm.Finish(x) // after the relay: a body still streaming at the head may be whole by then
	resp := x.Response()
	// A request body the upstream did not read to its end leaves the downstream
	// connection mid-message: it must close after this response. Until it is aborted,
	// net/http's goroutine may be reading the connection, so the response is written
	// around the trackedConn (whose deadline bookkeeping is the reader's).
	unfinished := !rb.finished()
	if unfinished {
		c.bw.Reset(connWriter{conn: c.tc.Conn, idle: c.env.StreamIdle})
	}
	defer func() {
		rb.abort() // before closing the response: net/http waits for the body writer
		x.Close()
		if unfinished {
			c.bw.Reset(c.tc)
		}
	}()
	start := fl.Start
	closeDown := c.closing() || req.Minor == 0 || unfinished
	forward.RemoveHopByHop(resp.Header)
	if c.rh.Any() {
		forward.ApplyRouteHTTP(resp.Header, c.rh, &c.hv, false)
	}
	if c.aff.SetCookie != "" { // meshd's own field, after the route's rules
		resp.Header.Add("Set-Cookie", c.aff.SetCookie)
	}
	bw := c.bw
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(strconv.Itoa(resp.StatusCode))
	bw.WriteByte(' ')
	bw.WriteString(http.StatusText(resp.StatusCode))
	bw.WriteString("\r\n")
	c.rec.Status = resp.StatusCode
	if c.obs != nil {
		c.rec.Upstream, c.rec.UpstreamTime, c.rec.Resp = fl.Res.Endpoint.Address, time.Since(start), forward.HTTPHeader(resp.Header)
	}
	noBody := req.Method == "HEAD" || resp.StatusCode == 204 || resp.StatusCode == 304
	chunked := !noBody && resp.ContentLength < 0 && req.Minor > 0
	if err := resp.Header.Write(bw); err != nil {
		fl.End(balancer.DoneInfo{Err: err}, false)
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
		// A body of unknown length (a stream: server-sent events, gRPC-web, long polls)
		// leaves as it arrives: the head at once, then each read; a sized body leaves in
		// one write at the end, as on the HTTP/1.1 path.
		stream := resp.ContentLength < 0
		if stream {
			copyErr = bw.Flush()
		}
		if copyErr == nil && chunked {
			cw := httputil.NewChunkedWriter(bw)
			c.rec.BytesSent, copyErr = copyBody(cw, bw, resp.Body, stream)
			if copyErr == nil {
				copyErr = cw.Close()
			}
			if copyErr == nil {
				copyErr = resp.Trailer.Write(bw)
				bw.WriteString("\r\n")
			}
		} else if copyErr == nil {
			c.rec.BytesSent, copyErr = copyBody(bw, bw, resp.Body, stream)
		}
	}
	if copyErr != nil {
		fl.End(balancer.DoneInfo{Err: copyErr, Status: resp.StatusCode, Latency: time.Since(start)}, true)
		if chunked || resp.ContentLength >= 0 {
			// The framing tells the client the body is incomplete (no last chunk, or fewer
			// bytes than Content-Length): deliver what arrived, then close.
			c.linger = bw.Flush() == nil
			return false
		}
		// A body delimited by close (HTTP/1.0 client) would look complete after an orderly
		// close: reset instead.
		c.tc.Abort()
		return false
	}
	flushErr := bw.Flush()
	fl.End(balancer.DoneInfo{Status: resp.StatusCode, Latency: time.Since(start)}, true)
	c.linger = flushErr == nil && closeDown
	return flushErr == nil && !closeDown
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
// use. Read errors other than the body's end are the client's: *forward.ClientError.
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
		err = &forward.ClientError{Err: err}
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
	if e.n == 0 && err == nil {
		// The end with the last bytes: a reader that stops at the length (the HTTP/2
		// client does) reads no further, and the body must still count as read to its
		// end, or the downstream connection closes after the response.
		err = io.EOF
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

// copyBody copies src to dst (which writes into bw), flushing bw after each read when
// stream is set, through a pooled buffer.
func copyBody(dst io.Writer, bw *bufio.Writer, src io.Reader, stream bool) (int64, error) {
	bp := bridgeBufPool.Get().(*[]byte)
	defer bridgeBufPool.Put(bp)
	var total int64
	for {
		n, err := src.Read(*bp)
		if n > 0 {
			if _, werr := dst.Write((*bp)[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
			if stream {
				if ferr := bw.Flush(); ferr != nil {
					return total, ferr
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

var bridgeBufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
