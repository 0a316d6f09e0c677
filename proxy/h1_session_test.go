package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/rawio"
)

// TestH1KeepAliveWaitsWithoutEmptyReads: between a keep-alive client's requests the
// HTTP/1.1 front end waits for input without first trying a read that finds nothing
// (internal/rawio's Session): 300 sequential requests on one connection cost meshd
// almost no read that returned EAGAIN, where each used to cost one (a system call each).
func TestH1KeepAliveWaitsWithoutEmptyReads(t *testing.T) {
	up, stop := rawUpstream(t)
	defer stop()
	s := benchServer(t, up, Options{})
	defer s.Shutdown(context.Background())
	c, err := net.Dial("tcp", s.EgressAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	req := []byte("GET /k HTTP/1.1\r\nHost: upstream.bench.local\r\n\r\n")
	for range 20 {
		sessionRoundTrip(t, c, br, req)
	}
	before := rawio.WouldBlocks()
	const n = 300
	for range n {
		sessionRoundTrip(t, c, br, req)
	}
	// A few may come from elsewhere in the process (another test's connections ending).
	if got := rawio.WouldBlocks() - before; got > n/10 {
		t.Fatalf("%d reads found nothing in %d keep-alive requests, want at most %d", got, n, n/10)
	}
}

// TestH1PipelinedDuringSession: requests a client pipelines (sent before the answer to
// the one before, here while meshd waits for a slow upstream, or several in one write)
// are all answered: the session's wait does not lose the readiness of bytes that arrived
// while it served a request. The hold is long (an hour), so a lost wake-up would not be
// rescued by the hold's timeout; the client's read deadline (10 s) catches it.
func TestH1PipelinedDuringSession(t *testing.T) {
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	up := serveConns(t, func(c net.Conn) {
		ubr := bufio.NewReader(c)
		for {
			line, err := ubr.ReadSlice('\n')
			if err != nil {
				return
			}
			if bytes.HasPrefix(line, []byte("GET /slow")) {
				time.Sleep(50 * time.Millisecond)
			}
			if len(line) == 2 {
				if _, err := c.Write(resp); err != nil {
					return
				}
			}
		}
	})
	s := benchServer(t, up, Options{KeepAliveIdle: 2 * time.Hour, Limits: ConnLimits{UpstreamHold: time.Hour}})
	defer s.Shutdown(context.Background())
	c, err := net.Dial("tcp", s.EgressAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	get := func(path string) []byte {
		return []byte("GET " + path + " HTTP/1.1\r\nHost: upstream.bench.local\r\n\r\n")
	}
	for i := range 5 {
		sessionRoundTrip(t, c, br, get("/warm"))
		// The next request leaves while meshd waits for the slow upstream's answer.
		if _, err := c.Write(get("/slow")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
		if _, err := c.Write(get("/after")); err != nil {
			t.Fatal(err)
		}
		readOK(t, br, i)
		readOK(t, br, i)
		// Three at once.
		if _, err := c.Write(bytes.Repeat(get("/three"), 3)); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			readOK(t, br, i)
		}
	}
}

func sessionRoundTrip(t *testing.T, c net.Conn, br *bufio.Reader, req []byte) {
	t.Helper()
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	readOK(t, br, 0)
}

// readOK reads one response and checks it is a 200 with a body.
func readOK(t *testing.T, br *bufio.Reader, round int) {
	t.Helper()
	status, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("round %d: reading a response: %v (a pipelined request not answered?)", round, err)
	}
	if status != "HTTP/1.1 200 OK\r\n" {
		t.Fatalf("round %d: status line %q", round, status)
	}
	cl := 0
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "\r\n" {
			break
		}
		if v, ok := bytes.CutPrefix([]byte(line), []byte("Content-Length: ")); ok {
			for _, d := range bytes.TrimSpace(v) {
				cl = cl*10 + int(d-'0')
			}
		}
	}
	if _, err := io.CopyN(io.Discard, br, int64(cl)); err != nil {
		t.Fatal(err)
	}
}

// TestH1AbortInSession: a keep-alive request served in the session whose response body
// is delimited by the close fails mid-body (the upstream resets after part of it): the
// client gets what arrived and then a reset, as outside the session (the reset is the
// only sign of the truncation), and meshd's goroutine does not wait for itself (a
// socket closed inside the session's read would).
func TestH1AbortInSession(t *testing.T) {
	up := serveConns(t, func(c net.Conn) {
		ubr := bufio.NewReader(c)
		for {
			line, err := ubr.ReadSlice('\n')
			if err != nil {
				return
			}
			cut := bytes.HasPrefix(line, []byte("GET /cut"))
			for len(line) != 2 {
				if line, err = ubr.ReadSlice('\n'); err != nil {
					return
				}
			}
			if !cut {
				_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
				continue
			}
			// No length: the body ends with the connection. Part of it, then a reset.
			_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + string(bytes.Repeat([]byte("x"), 1000))))
			time.Sleep(100 * time.Millisecond)
			_ = c.(*net.TCPConn).SetLinger(0)
			return
		}
	})
	s := benchServer(t, up, Options{})
	defer s.Shutdown(context.Background())
	c, err := net.Dial("tcp", s.EgressAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	sessionRoundTrip(t, c, br, []byte("GET /ok HTTP/1.1\r\nHost: upstream.bench.local\r\n\r\n"))
	if _, err := c.Write([]byte("GET /cut HTTP/1.1\r\nHost: upstream.bench.local\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(br)
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("the client read %d bytes, then %v; want a reset after part of the body", len(b), err)
	}
	if !bytes.Contains(b, []byte("xxxx")) {
		t.Errorf("the client got %q before the reset, want the head and part of the body", b)
	}
}

// serveConns accepts connections on 127.0.0.1 until the test ends and runs handle on
// each in a goroutine of its own (the connection closed when it returns); it returns the
// address.
func serveConns(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}
