package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLingeringCloseKeepsErrorResponse: a client that pipelines a request meshd rejects
// behind one whose large response it has not read yet, followed by more bytes, must
// still read both responses whole. Closing a socket with unread input makes the kernel
// send a reset at once and drop what it has not transmitted yet (the rest of the first
// response and the error answer, held back by the client's receive window). meshd
// shuts its write side and drains the input for a bounded time instead (lingering
// close, as nginx and HAProxy do), so the responses leave before the close. Each case
// runs many times: before, the client lost the tail in every run.
func TestLingeringCloseKeepsErrorResponse(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), (256<<10)/16)
	port := tcpServer(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(big), big); err != nil {
				return
			}
		}
	})
	srv, _ := meshDef{services: []svcDef{{name: "linger.t.local", node: "linger", port: port}}}.start(t)
	first := "GET /big HTTP/1.1\r\nHost: linger.t.local\r\n\r\n"
	// Bytes the client pipelines after the rejected request, which meshd never reads
	// as a request.
	garbage := strings.Repeat("x", 64<<10)
	for _, tc := range []struct {
		name, head string
		status     int
	}{
		{"bad-header", "GET / HTTP/1.1\r\nHost: linger.t.local\r\nBad Header: 1\r\n\r\n", 400},
		{"cl-and-te", "POST / HTTP/1.1\r\nHost: linger.t.local\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"unknown-host-large-body", "POST / HTTP/1.1\r\nHost: nowhere.t.local\r\nContent-Length: 10000000\r\n\r\n", 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			deadline := time.Now().Add(60 * time.Second)
			for i := range 200 {
				if time.Now().After(deadline) {
					t.Fatalf("only %d runs within the time bound", i)
				}
				lingerOnce(t, srv.EgressAddr(), first+tc.head+garbage, len(big), tc.status, i)
			}
		})
	}
}

func lingerOnce(t *testing.T, addr, in string, bigLen, status, run int) {
	t.Helper()
	// A small receive buffer: meshd's responses wait in its own send queue, as they do
	// for a client at the far end of a real network.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
	}}
	c, err := d.DialContext(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		// meshd stops reading at some point: the write may fail, which is fine.
		_, _ = io.WriteString(c, in)
	}()
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("run %d: the first response was lost: %v", run, err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || resp.StatusCode != 200 || n != int64(bigLen) {
		t.Fatalf("run %d: the first response: %d, %d of %d body bytes, %v", run, resp.StatusCode, n, bigLen, err)
	}
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("run %d: the error response was lost: %v", run, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("run %d: the error response's body was cut: %v (got %q)", run, err, body)
	}
	if resp.StatusCode != status || resp.Header.Get("x-meshd-error") == "" || !bytes.HasPrefix(body, []byte("meshd: ")) {
		t.Fatalf("run %d: %d %q %q", run, resp.StatusCode, resp.Header.Get("x-meshd-error"), body)
	}
	if !resp.Close {
		t.Fatalf("run %d: the response does not say Connection: close", run)
	}
	_ = c.Close()
	<-wrote
}
