package proxy_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/meshd/meshd/proxy/forward"
)

// TestUpstreamDiesAfterHead: an HTTP/1.1 upstream that dies (reset or close) after its
// response head never leaves an HTTP/1.1 client with a bare reset. When nothing of the
// response has reached the client, it gets meshd's 502; when some has, it gets every
// byte meshd received and then an orderly end (EOF) that its framing shows as truncated:
// fewer bytes than Content-Length, or no last chunk. Each case runs many times to show
// the outcome does not depend on timing.
func TestUpstreamDiesAfterHead(t *testing.T) {
	const contentLength = 100_000
	// More than meshd's 16 KiB client write buffer, so part of it reaches the client
	// before the failure.
	big := bytes.Repeat([]byte("0123456789abcdef"), 40_000/16)
	port := tcpServer(t, func(c *net.TCPConn) {
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		var out []byte
		switch strings.TrimSuffix(strings.TrimSuffix(req.URL.Path, "/rst"), "/fin") {
		case "/cl-partial":
			out = append(fmt.Appendf(nil, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", contentLength), big...)
		case "/cl-head":
			out = fmt.Appendf(nil, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", contentLength)
		case "/cl-small":
			out = append(fmt.Appendf(nil, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", contentLength), big[:100]...)
		case "/chunked":
			out = []byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n01234567")
		case "/no-head":
		}
		_, _ = c.Write(out)
		if strings.HasSuffix(req.URL.Path, "/fin") {
			_ = c.CloseWrite()
			_, _ = io.Copy(io.Discard, c) // until meshd lets go
			return
		}
		// Let meshd read what was sent before the reset: a reset discards what the
		// receiving kernel still holds, which is not meshd's to deliver.
		waitSent(c)
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		_, _ = c.Read(make([]byte, 1))
		_ = c.SetLinger(0)
	})
	srv, _ := meshDef{services: []svcDef{{name: "die.t.local", node: "die", port: port}}}.start(t)

	partialHead := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", contentLength)
	for _, tc := range []struct {
		path     string
		want502  bool
		wantBody []byte // the body bytes the client gets before EOF (truncated cases)
		chunked  bool
	}{
		{path: "/cl-partial/rst", wantBody: big},
		{path: "/cl-partial/fin", wantBody: big},
		{path: "/cl-head/rst", want502: true},
		{path: "/cl-head/fin", want502: true},
		{path: "/cl-small/rst", want502: true},
		{path: "/chunked/rst", chunked: true, wantBody: []byte("01234567")},
		{path: "/chunked/fin", chunked: true, wantBody: []byte("01234567")},
		{path: "/no-head/rst", want502: true},
		{path: "/no-head/fin", want502: true},
	} {
		t.Run(strings.TrimPrefix(tc.path, "/"), func(t *testing.T) {
			end := time.Now().Add(8 * time.Second)
			runs := 0
			for ; runs < 200 && time.Now().Before(end); runs++ {
				c, err := net.Dial("tcp", srv.EgressAddr())
				if err != nil {
					t.Fatal(err)
				}
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_, err = io.WriteString(c, "GET "+tc.path+" HTTP/1.1\r\nHost: die.t.local\r\n\r\n")
				if err != nil {
					t.Fatal(err)
				}
				if tc.want502 {
					// meshd's own answer: complete, so the connection may stay open.
					resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "GET"})
					var body []byte
					if err == nil {
						body, err = io.ReadAll(resp.Body)
					}
					_ = c.Close()
					if err != nil {
						t.Fatalf("run %d: %v; want meshd's 502", runs, err)
					}
					if resp.StatusCode != 502 || resp.Header.Get(forward.HeaderError) != forward.CodeReset {
						t.Fatalf("run %d: got %d %s=%q %q; want 502 %s", runs, resp.StatusCode, forward.HeaderError, resp.Header.Get(forward.HeaderError), body, forward.CodeReset)
					}
					continue
				}
				got, err := io.ReadAll(c)
				_ = c.Close()
				if err != nil {
					t.Fatalf("run %d: after %d bytes %q…: %v; want an orderly end, never a reset", runs, len(got), clip(got), err)
				}
				resp, rerr := http.ReadResponse(bufio.NewReader(bytes.NewReader(got)), &http.Request{Method: "GET"})
				if rerr != nil {
					t.Fatalf("run %d: got %q: %v", runs, clip(got), rerr)
				}
				if resp.StatusCode != 200 {
					t.Fatalf("run %d: status %d, want the upstream's 200", runs, resp.StatusCode)
				}
				body, berr := io.ReadAll(resp.Body)
				// The client's own framing must call it truncated, never complete.
				if !errors.Is(berr, io.ErrUnexpectedEOF) {
					t.Fatalf("run %d: body of %d bytes ended with %v; want io.ErrUnexpectedEOF", runs, len(body), berr)
				}
				if !bytes.Equal(body, tc.wantBody) {
					t.Fatalf("run %d: client got %d body bytes, want the %d the upstream sent", runs, len(body), len(tc.wantBody))
				}
				if tc.chunked {
					if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
						t.Fatalf("run %d: transfer encoding %v; want chunked", runs, resp.TransferEncoding)
					}
				} else if resp.ContentLength != contentLength || !bytes.HasPrefix(got, []byte("HTTP/1.1 200 OK\r\n")) {
					t.Fatalf("run %d: head %q; want the upstream's %q", runs, clip(got), partialHead)
				}
			}
			if runs < 10 {
				t.Fatalf("only %d runs within the time bound", runs)
			}
		})
	}
}

// waitSent waits (boundedly) until the kernel has nothing of c's output left to send.
func waitSent(c *net.TCPConn) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	for range 200 {
		var queued int32
		_ = rc.Control(func(fd uintptr) {
			_, _, _ = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&queued)))
		})
		if queued == 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func clip(b []byte) []byte {
	if len(b) > 120 {
		return b[:120]
	}
	return b
}
