package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"syscall"
	"time"
)

// Proto is the protocol the load generator speaks to its target.
type Proto string

// Protocols.
const (
	H1  Proto = "h1"  // HTTP/1.1 with keep-alive
	H2C Proto = "h2c" // HTTP/2 over cleartext, prior knowledge
)

// ParseProto accepts h1, http1.1, h2c, h2.
func ParseProto(s string) (Proto, error) {
	switch s {
	case "h1", "http1.1", "http/1.1", "":
		return H1, nil
	case "h2c", "h2":
		return H2C, nil
	}
	return "", fmt.Errorf("protocol %q: want h1 or h2c", s)
}

// Error kinds counted in Result.Errors. Non-2xx/3xx answers count as "http_NNN".
const (
	ErrConnect  = "connect"
	ErrTimeout  = "timeout"
	ErrWrite    = "write"
	ErrRead     = "read"
	ErrReset    = "reset"
	ErrProtocol = "protocol"
	ErrNotSent  = "not_sent" // scheduled within the run but never sent before the drain deadline
)

// requester sends one request at a time over one connection it owns. It is used by
// exactly one worker goroutine.
type requester interface {
	// do sends a request and reads the whole response by deadline. On error the
	// requester has already dropped its connection and redials on the next call.
	do(ctx context.Context, deadline time.Time) (status int, err error)
	close()
}

type target struct {
	addr    string
	host    string
	path    string
	reqBody int
}

func newRequester(proto Proto, t target) requester {
	if proto == H2C {
		return newH2Requester(t)
	}
	method := "GET"
	var b bytes.Buffer
	if t.reqBody > 0 {
		method = "POST"
	}
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: meshbench\r\n", method, t.path, t.host)
	if t.reqBody > 0 {
		fmt.Fprintf(&b, "Content-Type: application/octet-stream\r\nContent-Length: %d\r\n", t.reqBody)
	}
	b.WriteString("\r\n")
	b.Write(bytes.Repeat([]byte{'x'}, t.reqBody))
	return &h1Requester{t: t, req: b.Bytes()}
}

// h1Requester is a lean HTTP/1.1 client over one keep-alive connection. It parses
// just enough of the response (status line, Content-Length, chunked, Connection:
// close) to find its end; net/http's Transport would cost more CPU than some of the
// proxies under test.
type h1Requester struct {
	t    target
	req  []byte
	conn net.Conn
	br   *bufio.Reader
}

func (r *h1Requester) close() {
	if r.conn != nil {
		r.conn.Close()
		r.conn = nil
	}
}

func (r *h1Requester) do(ctx context.Context, deadline time.Time) (int, error) {
	if r.conn == nil {
		d := net.Dialer{Deadline: deadline}
		c, err := d.DialContext(ctx, "tcp", r.t.addr)
		if err != nil {
			return 0, &reqError{kind: ErrConnect, err: err}
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
		}
		r.conn = c
		if r.br == nil {
			r.br = bufio.NewReaderSize(c, 16<<10)
		} else {
			r.br.Reset(c)
		}
	}
	_ = r.conn.SetDeadline(deadline)
	if _, err := r.conn.Write(r.req); err != nil {
		r.close()
		return 0, classify(ErrWrite, err)
	}
	status, keep, err := readResponse(r.br)
	if err != nil {
		r.close()
		return status, err
	}
	if !keep {
		r.close()
	}
	return status, nil
}

var errBadResponse = errors.New("malformed response")

// readResponse reads one HTTP/1.1 response from br and discards its body. keep is
// false when the server asked to close the connection.
func readResponse(br *bufio.Reader) (status int, keep bool, err error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, false, classify(ErrRead, err)
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, false, &reqError{kind: ErrProtocol, err: fmt.Errorf("status line %q: %w", line, errBadResponse)}
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return 0, false, &reqError{kind: ErrProtocol, err: fmt.Errorf("status line %q: %w", line, errBadResponse)}
		}
		status = status*10 + int(c-'0')
	}
	keep = line[7] == '1'
	contentLength := int64(-1)
	chunked := false
	for {
		h, err := br.ReadSlice('\n')
		if err != nil {
			return status, false, classify(ErrRead, err)
		}
		h = bytes.TrimRight(h, "\r\n")
		if len(h) == 0 {
			break
		}
		colon := bytes.IndexByte(h, ':')
		if colon <= 0 {
			return status, false, &reqError{kind: ErrProtocol, err: fmt.Errorf("header %q: %w", h, errBadResponse)}
		}
		name, val := h[:colon], bytes.TrimSpace(h[colon+1:])
		switch {
		case asciiEqualFold(name, "content-length"):
			n, perr := strconv.ParseInt(string(val), 10, 64)
			if perr != nil || n < 0 {
				return status, false, &reqError{kind: ErrProtocol, err: fmt.Errorf("content-length %q: %w", val, errBadResponse)}
			}
			contentLength = n
		case asciiEqualFold(name, "transfer-encoding"):
			chunked = asciiEqualFold(val, "chunked")
		case asciiEqualFold(name, "connection"):
			if asciiEqualFold(val, "close") {
				keep = false
			} else if asciiEqualFold(val, "keep-alive") {
				keep = true
			}
		}
	}
	if status < 200 || status == 204 || status == 304 {
		return status, keep, nil
	}
	switch {
	case chunked:
		if err := discardChunked(br); err != nil {
			return status, false, err
		}
	case contentLength >= 0:
		if _, err := br.Discard(int(contentLength)); err != nil {
			return status, false, classify(ErrRead, err)
		}
	default:
		// Body delimited by close: read to EOF.
		if _, err := io.Copy(io.Discard, br); err != nil {
			return status, false, classify(ErrRead, err)
		}
		keep = false
	}
	return status, keep, nil
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
// knowledge), so that Connections means TCP connections in both protocols.
type h2Requester struct {
	t    target
	tr   *http.Transport
	cc   *http.ClientConn
	url  string
	body []byte
}

func newH2Requester(t target) *h2Requester {
	r := &h2Requester{t: t, tr: h2cTransport(), url: "http://" + t.host + t.path}
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

func (r *h2Requester) do(ctx context.Context, deadline time.Time) (int, error) {
	rctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	if r.cc == nil || r.cc.Err() != nil {
		if r.cc != nil {
			r.cc.Close()
		}
		cc, err := r.tr.NewClientConn(rctx, "http", r.t.addr)
		if err != nil {
			r.cc = nil
			return 0, &reqError{kind: ErrConnect, err: err}
		}
		r.cc = cc
	}
	method := http.MethodGet
	var body io.Reader
	if r.body != nil {
		method = http.MethodPost
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(rctx, method, r.url, body)
	if err != nil {
		return 0, &reqError{kind: ErrProtocol, err: err}
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

// h2cTransport returns a Transport that speaks HTTP/2 prior knowledge over
// cleartext and nothing else.
func h2cTransport() *http.Transport {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Transport{Protocols: &p, DisableCompression: true, MaxIdleConnsPerHost: 1}
}
