package h1

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestReadResponse(t *testing.T) {
	type want struct {
		status                 int
		reason                 string
		cl                     int64
		chunked, close, noBody bool
		upgrade                string
	}
	tests := []struct {
		name   string
		method string
		in     string
		want   want
	}{
		{"200 content-length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", want{200, "OK", 5, false, false, false, ""}},
		{"chunked", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", want{200, "OK", -1, true, false, false, ""}},
		{"read until close", "GET", "HTTP/1.1 200 OK\r\n\r\nbody", want{200, "OK", -1, false, true, false, ""}},
		{"http/1.0 closes", "GET", "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", want{200, "OK", 0, false, true, false, ""}},
		{"http/1.0 keep-alive", "GET", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", want{200, "OK", 0, false, false, false, ""}},
		{"connection close", "GET", "HTTP/1.1 500 Oops\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", want{500, "Oops", 0, false, true, false, ""}},
		{"empty reason with SP", "GET", "HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n", want{404, "", 0, false, false, false, ""}},
		{"no reason no SP", "GET", "HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", want{404, "", 0, false, false, false, ""}},
		{"HEAD keeps content-length", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", want{200, "OK", 1234, false, false, true, ""}},
		{"HEAD with TE", "HEAD", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", want{200, "OK", -1, false, false, true, ""}},
		{"304 keeps content-length", "GET", "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", want{304, "Not Modified", 10, false, false, true, ""}},
		{"204 ignores content-length", "GET", "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n", want{204, "No Content", -1, false, false, true, ""}},
		{"100 continue", "POST", "HTTP/1.1 100 Continue\r\n\r\n", want{100, "Continue", -1, false, false, true, ""}},
		{"101 upgrade", "GET", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", want{101, "Switching Protocols", -1, false, false, true, "websocket"}},
		{"CONNECT 200 is a tunnel", "CONNECT", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", want{200, "OK", -1, false, false, true, ""}},
	}
	for _, tt := range tests {
		for _, oneByte := range []bool{false, true} {
			t.Run(tt.name, func(t *testing.T) {
				var src io.Reader = strings.NewReader(tt.in)
				if oneByte {
					src = iotest.OneByteReader(src)
				}
				r := NewReader(bufio.NewReader(src), Limits{})
				var resp Response
				if err := r.ReadResponse(&resp, tt.method); err != nil {
					t.Fatal(err)
				}
				got := want{resp.Status, resp.Reason, resp.ContentLength, resp.Chunked, resp.Close, resp.NoBody, resp.Upgrade}
				if got != tt.want {
					t.Errorf("got  %+v\nwant %+v", got, tt.want)
				}
			})
		}
	}
}

func TestReadResponseRejects(t *testing.T) {
	tests := []struct{ name, method, in string }{
		{"bad version", "GET", "HTTP/2.0 200 OK\r\n\r\n"},
		{"lower-case version", "GET", "http/1.1 200 OK\r\n\r\n"},
		{"two-digit status", "GET", "HTTP/1.1 20 OK\r\n\r\n"},
		{"four-digit status", "GET", "HTTP/1.1 2000 OK\r\n\r\n"},
		{"status 099", "GET", "HTTP/1.1 099 X\r\n\r\n"},
		{"status 600", "GET", "HTTP/1.1 600 X\r\n\r\n"},
		{"TE and CL", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"},
		{"TE gzip", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"},
		{"TE in 1.0", "GET", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"CL list", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\n"},
		{"CL bad on 304", "GET", "HTTP/1.1 304 Not Modified\r\nContent-Length: x\r\n\r\n"},
		{"obs-fold", "GET", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n"},
		{"bare LF", "GET", "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n"},
		{"NUL in reason", "GET", "HTTP/1.1 200 O\x00K\r\n\r\n"},
		{"too large", "GET", "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", 200) + "\r\n\r\n"},
		{"bare LF in a field", "GET", "HTTP/1.1 200 OK\r\nX: a\nContent-Length: 0\r\n\r\n"},
		{"CR in a value", "GET", "HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n"},
		{"empty line first", "GET", "\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
		{"too many fields", "GET", "HTTP/1.1 200 OK\r\n" + strings.Repeat("X: a\r\n", 101) + "\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A head whole in the buffer is split in memory, one read byte by byte line by
			// line: the same error either way.
			var msgs [2]string
			for i, oneByte := range []bool{false, true} {
				var src io.Reader = strings.NewReader(tt.in)
				if oneByte {
					src = iotest.OneByteReader(src)
				}
				r := NewReader(bufio.NewReader(src), Limits{MaxHeaderBytes: 100})
				if tt.name == "too many fields" {
					r = NewReader(bufio.NewReader(src), Limits{})
				}
				var resp Response
				err := r.ReadResponse(&resp, tt.method)
				var he *Error
				if !errors.As(err, &he) || he.Status != 502 {
					t.Fatalf("one byte at a time %v: err = %v, want *Error 502", oneByte, err)
				}
				msgs[i] = err.Error()
			}
			if msgs[0] != msgs[1] {
				t.Errorf("whole head: %q; byte by byte: %q", msgs[0], msgs[1])
			}
		})
	}
	r := NewReader(bufio.NewReader(strings.NewReader("")), Limits{})
	if err := r.ReadResponse(&Response{}, "GET"); err != io.EOF {
		t.Errorf("empty upstream: err = %v, want io.EOF", err)
	}
}
