package h1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

func writeHead(t *testing.T, r *HeaderRequest) (string, error) {
	t.Helper()
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	err := WriteHeaderRequest(bw, r)
	_ = bw.Flush()
	return out.String(), err
}

func TestWriteHeaderRequest(t *testing.T) {
	tests := []struct {
		name string
		r    HeaderRequest
		want string
	}{
		{"get", HeaderRequest{Method: "GET", Path: "/a%20b", Query: "x=1", Host: "svc.local", ContentLength: -1,
			Header: http.Header{"User-Agent": {"t"}, "Accept": {"a", "b"}, "X-Request-Id": {"id"}}},
			"GET /a%20b?x=1 HTTP/1.1\r\nHost: svc.local\r\nAccept: a\r\nAccept: b\r\nUser-Agent: t\r\nX-Request-Id: id\r\n\r\n"},
		{"empty path, forced query", HeaderRequest{Method: "GET", ForceQuery: true, Host: "h", ContentLength: -1},
			"GET /? HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"sized body", HeaderRequest{Method: "POST", Path: "/", Host: "h", ContentLength: 5,
			Header: http.Header{"Content-Length": {"99"}, "Transfer-Encoding": {"chunked"}, "Host": {"evil"}}},
			"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n"},
		{"zero length post", HeaderRequest{Method: "POST", Path: "/", Host: "h", ContentLength: 0},
			"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"},
		{"hop-by-hop dropped, TE trailers kept", HeaderRequest{Method: "GET", Path: "/", Host: "h", ContentLength: -1,
			Header: http.Header{"Connection": {"close, X-Secret"}, "X-Secret": {"s"}, "Keep-Alive": {"1"}, "Te": {"gzip, trailers"},
				"Upgrade": {"ws"}, "Proxy-Authorization": {"p"}, "Proxy-Connection": {"x"}, "Trailer": {"X"}, "X-Ok": {"1"}}},
			"GET / HTTP/1.1\r\nHost: h\r\nX-Ok: 1\r\nTE: trailers\r\n\r\n"},
		{"close", HeaderRequest{Method: "GET", Path: "/", Host: "h", ContentLength: -1, Close: true,
			Header: http.Header{"Connection": {"keep-alive"}}},
			"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"},
		{"chunked with trailers announced", HeaderRequest{Method: "POST", Path: "/", Host: "h", Chunked: true, ContentLength: -1,
			Trailer: http.Header{"X-Sum": nil}},
			"POST / HTTP/1.1\r\nHost: h\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n"},
	}
	for _, tc := range tests {
		got, err := writeHead(t, &tc.r)
		if err != nil || got != tc.want {
			t.Errorf("%s:\n got %q %v\nwant %q", tc.name, got, err, tc.want)
		}
	}
	for _, r := range []HeaderRequest{
		{Method: "GET", Host: "h", Header: http.Header{"X-A": {"v\r\nX-Evil: 1"}}},
		{Method: "GET", Host: "h", Header: http.Header{"X A": {"v"}}},
		{Method: "GET", Host: "h\r\nX: 1"},
	} {
		got, err := writeHead(t, &r)
		var fe *InvalidFieldError
		if !errors.As(err, &fe) || got != "" {
			t.Errorf("%+v: wrote %q, %v; want nothing and an *InvalidFieldError", r, got, err)
		}
	}
}

// TestWriteHeaderRequestAllocs: a typical head is written without allocating.
func TestWriteHeaderRequestAllocs(t *testing.T) {
	r := HeaderRequest{Method: "GET", Path: "/bench", Host: "upstream", ContentLength: -1,
		Header: http.Header{"User-Agent": {"bench"}, "X-Forwarded-For": {"127.0.0.1"}, "X-Forwarded-Proto": {"http"}, "X-Request-Id": {"abc"}}}
	bw := bufio.NewWriter(io.Discard)
	if n := testing.AllocsPerRun(1000, func() { _ = WriteHeaderRequest(bw, &r) }); n != 0 {
		t.Errorf("%v allocs per head, want 0", n)
	}
}

func TestWriteBody(t *testing.T) {
	big := strings.Repeat("0123456789", 5000)
	tests := []struct {
		name    string
		in      string
		cl      int64
		chunked bool
		trailer http.Header
		want    string
		n       int64
	}{
		{"sized", "hello world", 5, false, nil, "hello", 5},
		{"sized zero", "x", 0, false, nil, "", 0},
		{"sized large", big, int64(len(big)), false, nil, big, int64(len(big))},
		{"chunked", "hello", -1, true, nil, "5\r\nhello\r\n0\r\n\r\n", 5},
		{"chunked empty", "", -1, true, nil, "0\r\n\r\n", 0},
		{"chunked trailers", "ab", -1, true, http.Header{"X-Sum": {"1"}, "Content-Length": {"9"}}, "2\r\nab\r\n0\r\nX-Sum: 1\r\n\r\n", 2},
	}
	for _, tc := range tests {
		for _, oneByte := range []bool{false, true} {
			var src io.Reader = strings.NewReader(tc.in)
			if oneByte {
				src = iotest.OneByteReader(src)
			}
			var out bytes.Buffer
			bw := bufio.NewWriterSize(&out, 4096)
			n, err := WriteBody(bw, src, tc.cl, tc.chunked, tc.trailer)
			_ = bw.Flush()
			want := tc.want
			if oneByte && tc.chunked && tc.in != "" {
				// One chunk per read.
				var b strings.Builder
				for i := 0; i < len(tc.in); i++ {
					b.WriteString("1\r\n" + tc.in[i:i+1] + "\r\n")
				}
				want = b.String() + tc.want[strings.Index(tc.want, "0\r\n"):]
			}
			if err != nil || n != tc.n || out.String() != want {
				t.Errorf("%s (one byte %v): %d %v %.80q, want %d %.80q", tc.name, oneByte, n, err, out.String(), tc.n, want)
			}
			if tc.chunked {
				// What was written reads back through the parser.
				var b BodyReader
				b.Reset(bufio.NewReader(&out), 0, true, false)
				if _, err := io.ReadAll(&b); err != nil {
					t.Errorf("%s: written body does not parse: %v", tc.name, err)
				}
			}
		}
	}
	// A short body, a failing reader, a failing writer.
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	_, err := WriteBody(bw, strings.NewReader("abc"), 5, false, nil)
	var be *BodyError
	if !errors.As(err, &be) || be.Op != "read" || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short sized body: %v, want a read *BodyError with io.ErrUnexpectedEOF", err)
	}
	boom := errors.New("client reset")
	_, err = WriteBody(bw, iotest.ErrReader(boom), -1, true, nil)
	if !errors.As(err, &be) || be.Op != "read" || !errors.Is(err, boom) {
		t.Errorf("failing reader: %v, want a read *BodyError wrapping it", err)
	}
	bw = bufio.NewWriterSize(brokenWriter{}, 4096)
	_, err = WriteBody(bw, strings.NewReader("abc"), -1, true, nil)
	if !errors.As(err, &be) || be.Op != "write" {
		t.Errorf("failing writer: %v, want a write *BodyError", err)
	}
	_, err = WriteBody(bufio.NewWriter(io.Discard), strings.NewReader("abc"), -1, true, http.Header{"X": {"a\nb"}})
	var fe *InvalidFieldError
	if !errors.As(err, &fe) {
		t.Errorf("invalid trailer: %v, want *InvalidFieldError", err)
	}
}

type brokenWriter struct{}

func (brokenWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

// TestWriteHeaderRequestOrder: the fields leave sorted by name, below and above the
// count where sortFields changes method, each with its values in order.
func TestWriteHeaderRequestOrder(t *testing.T) {
	for _, n := range []int{0, 1, 2, 5, 16, 17, 40} {
		h := http.Header{}
		var names []string
		for i := range n {
			name := fmt.Sprintf("X-F%02d", (i*7)%n)
			h[name] = []string{name + "-a", name + "-b"}
			names = append(names, name)
		}
		slices.Sort(names)
		var want strings.Builder
		want.WriteString("GET / HTTP/1.1\r\nHost: h\r\n")
		for _, name := range names {
			fmt.Fprintf(&want, "%s: %s-a\r\n%s: %s-b\r\n", name, name, name, name)
		}
		want.WriteString("\r\n")
		got, err := writeHead(t, &HeaderRequest{Method: "GET", Host: "h", Header: h, ContentLength: -1})
		if err != nil {
			t.Fatal(err)
		}
		if got != want.String() {
			t.Errorf("%d fields:\n%s\nwant\n%s", n, got, want.String())
		}
	}
}
