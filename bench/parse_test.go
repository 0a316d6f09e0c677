package bench

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestReadResponse(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		status   int
		keep     bool
		wantKind string // "" = no error
	}{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200, true, ""},
		{"chunked with trailer", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n3\r\nabc\r\n0\r\nT: 1\r\n\r\n", 200, true, ""},
		{"connection close", "HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", 503, false, ""},
		{"http/1.0 default close", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, false, ""},
		{"http/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok", 200, true, ""},
		{"204 has no body", "HTTP/1.1 204 No Content\r\n\r\n", 204, true, ""},
		{"header case", "HTTP/1.1 200 OK\r\ncOnTeNt-LeNgTh: 1\r\n\r\nx", 200, true, ""},
		{"body to EOF", "HTTP/1.1 200 OK\r\n\r\nabc", 200, false, ""},
		{"garbage status", "HTTX/1.1 200 OK\r\n\r\n", 0, false, ErrProtocol},
		{"non-digit status", "HTTP/1.1 2x0 OK\r\n\r\n", 0, false, ErrProtocol},
		{"bad content-length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", 200, false, ErrProtocol},
		{"header without colon", "HTTP/1.1 200 OK\r\nbroken\r\n\r\n", 200, false, ErrProtocol},
		{"bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 200, false, ErrProtocol},
		{"truncated body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 200, false, ErrReset},
		{"truncated head", "HTTP/1.1 200 OK\r\nContent-Le", 200, false, ErrReset},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const next = "NEXT"
			in := tc.in
			if tc.keep {
				in += next
			}
			br := bufio.NewReader(strings.NewReader(in))
			status, keep, err := readResponse(br)
			if tc.wantKind != "" {
				if err == nil || errorKind(err) != tc.wantKind {
					t.Fatalf("err %v, want kind %s", err, tc.wantKind)
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
				rest, _ := io.ReadAll(br)
				if string(rest) != next {
					t.Errorf("left %q after the response, want %q", rest, next)
				}
			}
		})
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
		br := bufio.NewReader(bytes.NewReader(b))
		status, _, err := readResponse(br)
		if err == nil && (status < 0 || status > 999) {
			t.Fatalf("status %d accepted", status)
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
	br := bufio.NewReader(c)
	for i := range 3 {
		status, keep, err := readResponse(br)
		if err != nil || status != 200 || keep != (i < 2) {
			t.Fatalf("response %d: status %d keep %v err %v", i, status, keep, err)
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
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
	go func() { done <- ServeHTTPUtil(ctx, ln, up) }()
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
