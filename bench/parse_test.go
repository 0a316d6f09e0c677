package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// responseReader returns an h1Requester that reads responses to method from src.
func responseReader(method string, src io.Reader) *h1Requester {
	r := &h1Requester{method: method}
	r.attach(src)
	return r
}

// failingReader returns err once its input is exhausted, as a connection that times out
// or is reset mid-response would.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		err = f.err
	}
	return n, err
}

func TestReadResponse(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		status   int
		keep     bool
		wantKind string // "" = no error
		method   string // "" = GET
		tail     error  // returned by the connection after in; nil = EOF
	}{
		{name: "content-length", in: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", status: 200, keep: true},
		{name: "chunked with trailer", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n3\r\nabc\r\n0\r\nT: 1\r\n\r\n", status: 200, keep: true},
		{name: "connection close", in: "HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", status: 503},
		{name: "connection list with close", in: "HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n", status: 200},
		{name: "http/1.0 default close", in: "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", status: 200},
		{name: "http/1.0 keep-alive", in: "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok", status: 200, keep: true},
		{name: "http/1.0 keep-alive body to EOF", in: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\nabc", status: 200},
		{name: "204 has no body", in: "HTTP/1.1 204 No Content\r\n\r\n", status: 204, keep: true},
		{name: "304 has no body despite content-length", in: "HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", status: 304, keep: true},
		{name: "HEAD response has no body", in: "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", status: 200, keep: true, method: "HEAD"},
		{name: "header case", in: "HTTP/1.1 200 OK\r\ncOnTeNt-LeNgTh: 1\r\n\r\nx", status: 200, keep: true},
		{name: "body to EOF", in: "HTTP/1.1 200 OK\r\n\r\nabc", status: 200},
		{name: "interim responses skipped", in: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok", status: 201, keep: true},
		{name: "unasked 101", in: "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", wantKind: ErrProtocol},
		{name: "garbage status", in: "HTTX/1.1 200 OK\r\n\r\n", wantKind: ErrProtocol},
		{name: "non-digit status", in: "HTTP/1.1 2x0 OK\r\n\r\n", wantKind: ErrProtocol},
		{name: "status out of range", in: "HTTP/1.1 600 OK\r\nContent-Length: 0\r\n\r\n", wantKind: ErrProtocol},
		{name: "http/2 status line", in: "HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", wantKind: ErrProtocol},
		{name: "bad content-length", in: "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", wantKind: ErrProtocol},
		{name: "repeated content-length", in: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", wantKind: ErrProtocol},
		{name: "content-length and chunked", in: "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", wantKind: ErrProtocol},
		{name: "header without colon", in: "HTTP/1.1 200 OK\r\nbroken\r\n\r\n", wantKind: ErrProtocol},
		{name: "obs-fold", in: "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n", wantKind: ErrProtocol},
		{name: "bare LF", in: "HTTP/1.1 200 OK\nContent-Length: 0\n\n", wantKind: ErrProtocol},
		{name: "header section over the proxy's limit", in: "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", 60<<10) + "\r\n\r\n", wantKind: ErrProtocol},
		{name: "too many headers", in: "HTTP/1.1 200 OK\r\n" + strings.Repeat("X: a\r\n", 101) + "\r\n", wantKind: ErrProtocol},
		{name: "bad chunk size", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", wantKind: ErrProtocol},
		{name: "chunk data without CRLF", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n", wantKind: ErrProtocol},
		{name: "closed before response", in: "", wantKind: ErrReset},
		{name: "truncated body", in: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", wantKind: ErrReset},
		{name: "truncated head", in: "HTTP/1.1 200 OK\r\nContent-Le", wantKind: ErrReset},
		{name: "truncated chunked body", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", wantKind: ErrReset},
		{name: "timeout in head", in: "HTTP/1.1 200 OK\r\n", tail: os.ErrDeadlineExceeded, wantKind: ErrTimeout},
		{name: "timeout in body", in: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", tail: os.ErrDeadlineExceeded, wantKind: ErrTimeout},
		{name: "reset in chunked body", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", tail: syscall.ECONNRESET, wantKind: ErrReset},
		{name: "other read error", in: "HTTP/1.1 200", tail: errors.New("boom"), wantKind: ErrRead},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const next = "NEXT"
			in := tc.in
			if tc.keep {
				in += next
			}
			var src io.Reader = strings.NewReader(in)
			if tc.tail != nil {
				src = &failingReader{r: src, err: tc.tail}
			}
			method := tc.method
			if method == "" {
				method = "GET"
			}
			r := responseReader(method, src)
			status, keep, err := r.readResponse()
			if tc.wantKind != "" {
				if err == nil || errorKind(err) != tc.wantKind {
					t.Fatalf("err %v (kind %q), want kind %s", err, errorKind(err), tc.wantKind)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if status != tc.status || keep != tc.keep {
				t.Errorf("status %d keep %v, want %d %v", status, keep, tc.status, tc.keep)
			}
			if tc.keep {
				rest, _ := io.ReadAll(r.br)
				if string(rest) != next {
					t.Errorf("left %q after the response, want %q", rest, next)
				}
			}
		})
	}
}

// The requester parses its responses with the method it sends.
func TestNewRequesterMethod(t *testing.T) {
	for _, tc := range []struct {
		reqBody int
		method  string
	}{{0, "GET"}, {3, "POST"}} {
		r := newRequester(H1, target{host: "x", path: "/", reqBody: tc.reqBody}).(*h1Requester)
		if r.method != tc.method || !bytes.HasPrefix(r.req, []byte(tc.method+" / HTTP/1.1\r\n")) {
			t.Errorf("reqBody %d: method %q, request %q", tc.reqBody, r.method, r.req)
		}
	}
}

// Reading responses reuses the requester's reader, response and sink: no allocation
// per response, whatever the framing.
func TestReadResponseAllocs(t *testing.T) {
	for _, in := range []string{
		"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\n" + strings.Repeat("x", 40<<10),
	} {
		src := strings.NewReader(in)
		r := responseReader("GET", src)
		allocs := testing.AllocsPerRun(100, func() {
			src.Reset(in)
			r.br.Reset(src)
			if _, _, err := r.readResponse(); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%.40q: %v allocations per response, want 0", in, allocs)
		}
	}
}

func TestReadRequest(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		keep    bool
		wantErr bool
	}{
		{"get", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", true, false},
		{"post content-length", "POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", true, false},
		{"post chunked", "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", true, false},
		{"close", "GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false, false},
		{"http/1.0", "GET / HTTP/1.0\r\n\r\n", false, false},
		{"not http", "GET / FTP/1.1\r\n\r\n", false, true},
		{"bad length", "POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(tc.in + "NEXT"))
			keep, err := readRequest(br)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			rest, _ := io.ReadAll(br)
			if keep != tc.keep || string(rest) != "NEXT" {
				t.Errorf("keep %v rest %q, want %v and NEXT", keep, rest, tc.keep)
			}
		})
	}
}

func FuzzReadResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"))
	f.Add([]byte("HTTP/1.0 204 X\r\nConnection: keep-alive\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		status, _, err := responseReader("GET", bytes.NewReader(b)).readResponse()
		if err != nil {
			// In memory, a response is either malformed or cut short.
			if k := errorKind(err); k != ErrProtocol && k != ErrReset {
				t.Fatalf("error %v classified %q", err, k)
			}
			return
		}
		if status < 200 || status > 599 {
			t.Fatalf("final status %d accepted", status)
		}
	})
}

func FuzzReadRequest(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Add([]byte("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = readRequest(bufio.NewReader(bytes.NewReader(b)))
	})
}

// The upstream answers pipelined HTTP/1.1 requests in order and h2c by preface.
func TestUpstreamPipeliningAndH2C(t *testing.T) {
	addr := startUpstream(t, UpstreamConfig{BodySize: 3})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhiGET /c HTTP/1.1\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	r := responseReader("", c)
	for i, method := range []string{"GET", "POST", "GET"} {
		r.method = method
		status, keep, err := r.readResponse()
		if err != nil || status != 200 || keep != (i < 2) {
			t.Fatalf("response %d: status %d keep %v err %v", i, status, keep, err)
		}
	}
	if _, err := r.br.ReadByte(); err != io.EOF {
		t.Errorf("connection not closed after Connection: close: %v", err)
	}

	resp, err := (&http.Client{Transport: h2cTransport()}).Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || string(body) != "xxx" {
		t.Errorf("h2c: proto %s body %q", resp.Proto, body)
	}
}

func TestHTTPUtilProxy(t *testing.T) {
	up := startUpstream(t, UpstreamConfig{BodySize: 63})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeHTTPUtil(ctx, ln, up, false) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	for _, proto := range []Proto{H1, H2C} {
		res, err := Run(ctx, LoadSpec{Addr: ln.Addr().String(), Proto: proto, Connections: 2, Rate: 200, Duration: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if res.OK != 40 || res.ErrorCount() != 0 {
			t.Errorf("%s through httputil: ok %d errors %v", proto, res.OK, res.Errors)
		}
	}
}
