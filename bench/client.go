package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/meshd/meshd/internal/h1"
)

// Proto is the protocol the load generator speaks to its target.
type Proto string

// Protocols.
const (
	H1  Proto = "h1"  // HTTP/1.1 with keep-alive
	H2C Proto = "h2c" // HTTP/2 over cleartext, prior knowledge
	// GRPC is unary gRPC calls of GRPCMethod by a grpc-go client, over h2c.
	GRPC Proto = "grpc"
)

// ParseProto accepts h1, http1.1, h2c, h2, grpc.
func ParseProto(s string) (Proto, error) {
	switch s {
	case "h1", "http1.1", "http/1.1", "":
		return H1, nil
	case "h2c", "h2":
		return H2C, nil
	case "grpc":
		return GRPC, nil
	}
	return "", fmt.Errorf("protocol %q: want h1, h2c or grpc", s)
}

// Multiplexes says whether proto can carry more than one request at a time on a
// connection (LoadSpec.Streams > 1).
func (p Proto) Multiplexes() bool { return p == H2C || p == GRPC }

// Error kinds counted in Result.Errors. Non-2xx/3xx answers count as "http_NNN".
const (
	ErrConnect  = "connect"
	ErrTimeout  = "timeout"
	ErrWrite    = "write"
	ErrRead     = "read"
	ErrReset    = "reset"
	ErrProtocol = "protocol"
	ErrNotSent  = "not_sent" // scheduled within the run but never sent before the drain deadline
	ErrTLS      = "tls"      // TLS handshake failed (https targets)
)

// requester sends one request at a time, over one connection it owns or as one of
// the stream slots of a shared connection (connRequesters). It is used by exactly one
// worker goroutine.
type requester interface {
	// do sends a request and reads the whole response by deadline. On error the
	// requester has already dropped its connection and redials on the next call.
	do(ctx context.Context, deadline time.Time) (status int, err error)
	close()
}

// connector is a requester that can open its connection ahead of its first request
// (Run opens every connection before the clock starts). A failure is not kept: the
// first request dials again and records it.
type connector interface {
	connect(ctx context.Context, deadline time.Time) error
}

// streamPeaker is a requester on a connection shared by several slots; it reports
// the most requests that were in flight on that connection at once.
type streamPeaker interface {
	peakStreams() int
}

// connRequesters returns the requesters of one connection: streams of them, sharing
// it, for a multiplexed phase or gRPC; otherwise the one requester that owns it.
func connRequesters(proto Proto, streams int, t target) []requester {
	switch {
	case proto == GRPC:
		return newGRPCConn(t, streams)
	case proto == H2C && streams > 1:
		return newH2Mux(t, streams)
	}
	return []requester{newRequester(proto, t)}
}

type target struct {
	addr    string
	host    string
	path    string
	reqBody int
	// method overrides GET (POST with a body); headers are sent with every request.
	method  string
	headers []Header
	// tls, when set, wraps each connection in TLS (an https target); its NextProtos
	// are set per protocol by tlsFor.
	tls *tls.Config
}

// Header is one extra request header (-H).
type Header struct{ Name, Value string }

// scheme is the :scheme of the target's requests.
func (t target) scheme() string {
	if t.tls != nil {
		return "https"
	}
	return "http"
}

// tlsFor returns t's TLS config offering alpn.
func (t target) tlsFor(alpn string) *tls.Config {
	c := t.tls.Clone()
	c.NextProtos = []string{alpn}
	return c
}

// dialTarget connects to t.addr by deadline, with TLS offering alpn when t is https;
// a handshake that does not agree on alpn fails, so that a target that cannot speak
// the protocol is an error, not a silent downgrade.
func dialTarget(ctx context.Context, t target, alpn string, deadline time.Time) (net.Conn, error) {
	d := net.Dialer{Deadline: deadline}
	c, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, &reqError{kind: ErrConnect, err: err}
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	if t.tls == nil {
		return c, nil
	}
	tc := tls.Client(c, t.tlsFor(alpn))
	_ = tc.SetDeadline(deadline)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, &reqError{kind: ErrTLS, err: err}
	}
	if got := tc.ConnectionState().NegotiatedProtocol; got != alpn && alpn == "h2" {
		c.Close()
		return nil, &reqError{kind: ErrTLS, err: fmt.Errorf("TLS: server chose ALPN %q, want %q", got, alpn)}
	}
	_ = tc.SetDeadline(time.Time{})
	return tc, nil
}

func newRequester(proto Proto, t target) requester {
	switch proto {
	case H2C:
		return newH2Requester(t)
	case GRPC:
		return newGRPCConn(t, 1)[0]
	}
	method := t.requestMethod()
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: meshbench\r\n", method, t.path, t.host)
	for _, h := range t.headers {
		fmt.Fprintf(&b, "%s: %s\r\n", h.Name, h.Value)
	}
	if t.reqBody > 0 {
		fmt.Fprintf(&b, "Content-Type: application/octet-stream\r\nContent-Length: %d\r\n", t.reqBody)
	}
	b.WriteString("\r\n")
	b.Write(bytes.Repeat([]byte{'x'}, t.reqBody))
	return &h1Requester{t: t, method: method, req: b.Bytes()}
}

// requestMethod is the method given, else POST with a body and GET without.
func (t target) requestMethod() string {
	switch {
	case t.method != "":
		return t.method
	case t.reqBody > 0:
		return "POST"
	}
	return "GET"
}

// h1Limits are the proxy's limits for message heads (proxy/http1.Limits), so that a response
// meshd would refuse from an upstream is refused here too.
var h1Limits = h1.Limits{MaxHeaderBytes: 60 << 10, MaxHeaders: 100}

// h1Requester is a lean HTTP/1.1 client over one keep-alive connection. Responses are
// parsed by internal/h1, the proxy's codec, and their bodies discarded; net/http's
// Transport would cost more CPU than some of the proxies under test. Its reader,
// response and sink are reused across requests and connections, so the steady state
// allocates nothing.
type h1Requester struct {
	t      target
	method string
	req    []byte
	conn   net.Conn
	br     *bufio.Reader
	rd     *h1.Reader
	resp   h1.Response
	sink   *bufio.Writer // response bodies go here, to io.Discard
}

func (r *h1Requester) close() {
	if r.conn != nil {
		r.conn.Close()
		r.conn = nil
	}
}

// attach makes the requester read responses from src (its connection).
func (r *h1Requester) attach(src io.Reader) {
	if r.br == nil {
		r.br = bufio.NewReaderSize(src, 16<<10)
		r.rd = h1.NewReader(r.br, h1Limits)
		// io.Discard never fails and writes larger than the buffer bypass it, so a
		// small buffer is enough.
		r.sink = bufio.NewWriterSize(io.Discard, 256)
		return
	}
	r.br.Reset(src)
}

func (r *h1Requester) connect(ctx context.Context, deadline time.Time) error {
	if r.conn != nil {
		return nil
	}
	c, err := dialTarget(ctx, r.t, "http/1.1", deadline)
	if err != nil {
		return err
	}
	r.conn = c
	r.attach(c)
	return nil
}

func (r *h1Requester) do(ctx context.Context, deadline time.Time) (int, error) {
	if r.conn == nil {
		c, err := dialTarget(ctx, r.t, "http/1.1", deadline)
		if err != nil {
			return 0, err
		}
		r.conn = c
		r.attach(c)
	}
	_ = r.conn.SetDeadline(deadline)
	if _, err := r.conn.Write(r.req); err != nil {
		r.close()
		return 0, classify(ErrWrite, err)
	}
	status, keep, err := r.readResponse()
	if err != nil {
		r.close()
		return status, err
	}
	if !keep {
		r.close()
	}
	return status, nil
}

var errUnaskedUpgrade = errors.New("101 Switching Protocols to a request that asked for no upgrade")

// readResponse reads the response to r.method and discards its body. Interim 1xx
// responses are skipped, as the proxy does. keep is false when the connection cannot
// be reused: Connection: close, HTTP/1.0 without keep-alive, or a body delimited by
// close.
func (r *h1Requester) readResponse() (status int, keep bool, err error) {
	resp := &r.resp
	for {
		if err := r.rd.ReadResponse(resp, r.method); err != nil {
			return resp.Status, false, h1Error(err)
		}
		if resp.Status >= 200 {
			break
		}
		if resp.Status == 101 {
			return resp.Status, false, &reqError{kind: ErrProtocol, err: errUnaskedUpgrade}
		}
	}
	if !resp.NoBody {
		// The body is validated like the proxy's; only its payload reaches the sink
		// (Dechunk, DropTrailers): no chunk framing is re-encoded just to be discarded.
		body := h1.BodyCopy{ContentLength: resp.ContentLength, Chunked: resp.Chunked, UntilClose: resp.UntilClose(),
			Dechunk: true, DropTrailers: true}
		if _, err := body.Copy(r.sink, r.br); err != nil {
			return resp.Status, false, h1Error(err)
		}
	}
	return resp.Status, !resp.Close, nil
}

// h1Error classifies an error from internal/h1: protocol violations (*h1.Error) are
// ErrProtocol, anything else is a failed read of the response.
func h1Error(err error) error {
	var pe *h1.Error
	if errors.As(err, &pe) {
		return &reqError{kind: ErrProtocol, err: err}
	}
	return classify(ErrRead, err)
}

// reqError carries the error kind reported in Result.Errors.
type reqError struct {
	kind string
	err  error
}

func (e *reqError) Error() string { return e.kind + ": " + e.err.Error() }
func (e *reqError) Unwrap() error { return e.err }

func classify(kind string, err error) error {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		kind = ErrTimeout
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		kind = ErrReset
	}
	return &reqError{kind: kind, err: err}
}

// errorKind maps an error from a requester to its Result.Errors key.
func errorKind(err error) string {
	var re *reqError
	if errors.As(err, &re) {
		return re.kind
	}
	return ErrProtocol
}

// h2Requester sends one request at a time over its own h2c connection (prior
// knowledge), so that Connections means TCP connections in both protocols. It is the
// h2c client of one-at-a-time phases (Streams 1), kept as it was so that their
// results compare with earlier runs; multiplexed phases use h2Mux.
type h2Requester struct {
	t    target
	tr   *http.Transport
	cc   *http.ClientConn
	url  string
	body []byte
}

func newH2Requester(t target) *h2Requester {
	tr := h2cTransport()
	if t.tls != nil {
		tr = h2TLSTransport(t.tlsFor("h2"))
	}
	r := &h2Requester{t: t, tr: tr, url: t.scheme() + "://" + t.host + t.path}
	if t.reqBody > 0 {
		r.body = bytes.Repeat([]byte{'x'}, t.reqBody)
	}
	return r
}

func (r *h2Requester) close() {
	if r.cc != nil {
		r.cc.Close()
		r.cc = nil
	}
	r.tr.CloseIdleConnections()
}

func (r *h2Requester) connect(ctx context.Context, deadline time.Time) error {
	if r.cc != nil {
		return nil
	}
	rctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	cc, err := r.tr.NewClientConn(rctx, r.t.scheme(), r.t.addr)
	if err != nil {
		return err
	}
	r.cc = cc
	return nil
}

func (r *h2Requester) do(ctx context.Context, deadline time.Time) (int, error) {
	rctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	if r.cc == nil || r.cc.Err() != nil {
		if r.cc != nil {
			r.cc.Close()
		}
		cc, err := r.tr.NewClientConn(rctx, r.t.scheme(), r.t.addr)
		if err != nil {
			r.cc = nil
			return 0, &reqError{kind: ErrConnect, err: err}
		}
		r.cc = cc
	}
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(rctx, r.t.requestMethod(), r.url, body)
	if err != nil {
		return 0, &reqError{kind: ErrProtocol, err: err}
	}
	for _, h := range r.t.headers {
		req.Header.Add(h.Name, h.Value)
	}
	resp, err := r.cc.RoundTrip(req)
	if err != nil {
		r.cc.Close()
		r.cc = nil
		return 0, classify(ErrRead, err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		r.cc.Close()
		r.cc = nil
		return resp.StatusCode, classify(ErrRead, err)
	}
	return resp.StatusCode, nil
}

// h2TLSTransport returns a Transport that speaks HTTP/2 over TLS (ALPN h2) and
// nothing else.
func h2TLSTransport(cfg *tls.Config) *http.Transport {
	var p http.Protocols
	p.SetHTTP2(true)
	return &http.Transport{Protocols: &p, TLSClientConfig: cfg, DisableCompression: true, MaxIdleConnsPerHost: 1}
}

// h2cTransport returns a Transport that speaks HTTP/2 prior knowledge over
// cleartext and nothing else.
func h2cTransport() *http.Transport {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Transport{Protocols: &p, DisableCompression: true, MaxIdleConnsPerHost: 1}
}
