package forward

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/balancer"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/internal/reqctx"
	"github.com/meshd/meshd/proxy/upstream"
	"github.com/meshd/meshd/router"
)

// closingUpstream answers every request with 200 and closes the connection without
// saying so (each pooled connection is stale for the next request); it reads a body of
// the Content-Length given and records it.
func closingUpstream(t *testing.T) (addr string, bodies chan string, accepted *atomic.Int64) {
	t.Helper()
	bodies = make(chan string, 16)
	accepted = new(atomic.Int64)
	addr = acceptEach(t, func(c net.Conn) {
		accepted.Add(1)
		br := bufio.NewReader(c)
		n := 0
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if v, ok := strings.CutPrefix(line, "Content-Length: "); ok {
				for _, d := range strings.TrimSpace(v) {
					n = n*10 + int(d-'0')
				}
			}
			if line == "\r\n" {
				break
			}
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(br, b); err != nil {
			return
		}
		bodies <- string(b)
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	return addr, bodies, accepted
}

// acceptEach accepts connections on 127.0.0.1 until the test ends and runs handle on each
// in a goroutine of its own (the connection closed when it returns); it returns the
// address.
func acceptEach(t *testing.T, handle func(net.Conn)) string {
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

func h1TestCluster(t *testing.T, addr string) *upstream.Cluster {
	t.Helper()
	cl := upstream.New(router.ClusterRef{Name: "t", Protocol: "http"}, upstream.Options{Dialer: &net.Dialer{}, ConnectTimeout: 5 * time.Second})
	cl.Follow(nil, discovery.Plan{Fixed: []discovery.Endpoint{{Address: addr}}})
	t.Cleanup(cl.Close)
	return cl
}

// exchangeOnce runs one attempt of rt and reads its response to the end.
func exchangeOnce(t *testing.T, rt *RoundTrip, cl *upstream.Cluster) (int, error) {
	t.Helper()
	res, err := cl.Pick(nil)
	if err != nil {
		t.Fatal(err)
	}
	status, err := rt.Exchange(res, time.Time{})
	if err == nil {
		_, _ = io.ReadAll(rt.Response().Body)
		rt.Close()
	}
	res.Done(balancer.DoneInfo{Status: status, Err: err})
	return status, err
}

// TestRoundTripReplaysBodyOnStaleConnection: the HTTP/1.1 transport replays an
// idempotent request a stale keep-alive connection lost, with the body GetBody gives
// from the replay buffer: the upstream gets it whole.
func TestRoundTripReplaysBodyOnStaleConnection(t *testing.T) {
	addr, bodies, accepted := closingUpstream(t)
	cl := h1TestCluster(t, addr)
	first := NewRoundTrip(OutRequest("GET", "/", "svc", http.Header{}, nil, 0, nil), cl, 0, 0)
	if status, err := exchangeOnce(t, first, cl); err != nil || status != 200 {
		t.Fatalf("first: %d %v", status, err)
	}
	<-bodies
	time.Sleep(50 * time.Millisecond) // the upstream's close arrives: the pooled connection is stale
	put := NewRoundTrip(OutRequest("PUT", "/", "svc", http.Header{},
		io.NopCloser(strings.NewReader("the body")), 8, nil), cl, 0, 0)
	if status, err := exchangeOnce(t, put, cl); err != nil || status != 200 {
		t.Fatalf("PUT on a stale connection: %d %v, want it replayed", status, err)
	}
	if b := <-bodies; b != "the body" {
		t.Errorf("the upstream got %q, want the whole body", b)
	}
	if n := accepted.Load(); n != 2 {
		t.Errorf("accepted %d, want 2", n)
	}
}

// TestRoundTripClientBodyFailure: a request body that fails to read while the HTTP/1.1
// transport sends it is the client's failure (*ClientError), never the endpoint's.
func TestRoundTripClientBodyFailure(t *testing.T) {
	// An upstream that reads and never answers: the body's failure is what ends it.
	addr := acceptEach(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	cl := h1TestCluster(t, addr)
	boom := errors.New("stream reset by the client")
	for _, n := range []int64{100, -1} {
		body := io.NopCloser(io.MultiReader(strings.NewReader("part"), failingReader{boom}))
		rt := NewRoundTrip(OutRequest("POST", "/", "svc", http.Header{}, body, n, nil), cl, 0, 0)
		_, err := exchangeOnce(t, rt, cl)
		if ce, ok := AsClientError(err); !ok || !errors.Is(ce, boom) {
			t.Errorf("body of %d failing: %v, want a *ClientError with the body's error", n, err)
		}
	}
}

type failingReader struct{ err error }

func (r failingReader) Read([]byte) (int, error) { return 0, r.err }

// TestRoundTripSettled: after Close, a RoundTrip says its attempt can no longer reach
// the parent context only when that holds: on the clean path, not after the attempt's
// deadline fired mid-body (its timer's goroutine ran the cancel, and its detach from
// the parent), and not for an attempt that failed before a response.
func TestRoundTripSettled(t *testing.T) {
	addr := acceptEach(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			switch {
			case strings.HasPrefix(line, "GET /slow "):
				// A head, a byte of the body, then nothing until meshd gives up.
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nx")
				_, _ = io.Copy(io.Discard, br)
				return
			case strings.HasPrefix(line, "GET /reset "):
				return
			case line == "\r\n":
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}
		}
	})
	cl := h1TestCluster(t, addr)
	run := func(path string, deadline time.Time) (*RoundTrip, *reqctx.Ctx) {
		parent := reqctx.New(context.Background())
		rt := NewRoundTrip(OutRequest("GET", path, "svc", http.Header{}, nil, 0, nil), cl, 0, 0)
		rt.Ctx = parent
		res, err := cl.Pick(nil)
		if err != nil {
			t.Fatal(err)
		}
		status, err := rt.Exchange(res, deadline)
		if err == nil {
			_, _ = io.ReadAll(rt.Response().Body)
			rt.Close()
		}
		res.Done(balancer.DoneInfo{Status: status, Err: err})
		return rt, parent
	}
	if rt := NewRoundTrip(OutRequest("GET", "/", "svc", http.Header{}, nil, 0, nil), cl, 0, 0); !rt.Settled() {
		t.Error("a RoundTrip without an attempt is not settled")
	}
	// The first request dials: the connect timeout is a context package context derives
	// from the attempt's, which may reach it after the RoundTrip is done (its stop runs
	// from the timer goroutine when the timeout fires as the dial succeeds).
	if rt, _ := run("/ok", time.Time{}); rt.Settled() {
		t.Error("a request that dialled its connection is settled")
	}
	if rt, _ := run("/ok", time.Time{}); !rt.Settled() {
		t.Error("the clean path is not settled")
	}
	if rt, _ := run("/ok", time.Now().Add(time.Minute)); !rt.Settled() {
		t.Error("the clean path with a deadline that did not fire is not settled")
	}
	rt, parent := run("/slow", time.Now().Add(50*time.Millisecond))
	if rt.Settled() {
		t.Error("settled after the attempt's deadline fired mid-body")
	}
	parent.Cancel()
	if rt, _ := run("/reset", time.Time{}); rt.Settled() {
		t.Error("settled after a failed attempt")
	}
}

// stepReader hands out one slice sent on ch per Read (io.EOF once ch is closed) and
// says on reading when a Read has started: a client body whose arrival the test paces.
type stepReader struct {
	ch      chan []byte
	reading chan struct{}
}

func (s *stepReader) Read(p []byte) (int, error) {
	s.reading <- struct{}{}
	b, ok := <-s.ch
	if !ok {
		return 0, io.EOF
	}
	return copy(p, b), nil
}

func (s *stepReader) Close() error { return nil }

// TestReplayAfterStaleOverflow: an abandoned attempt's body writer still waiting in a
// read of the client's body when a retry starts takes the client's next bytes, and they
// overflow the replay buffer. The retry must then fail (the body is no longer whole),
// not go on reading the client and send the body without those bytes. The client sends
// AAAA BBBBBBBB CCCC; before the fix the retry sent "CCCC" without an error.
func TestReplayAfterStaleOverflow(t *testing.T) {
	src := &stepReader{ch: make(chan []byte), reading: make(chan struct{}, 4)}
	rb := &replayBody{src: src, limit: 10}
	first := rb.attempt()
	go func() { src.ch <- []byte("AAAA") }()
	p := make([]byte, 64)
	if n, err := first.Read(p); err != nil || string(p[:n]) != "AAAA" {
		t.Fatalf("first attempt's read: %q, %v", p[:n], err)
	}
	staleDone := make(chan error, 1)
	go func() {
		_, err := first.Read(make([]byte, 64))
		staleDone <- err
	}()
	<-src.reading // the first read
	<-src.reading // the first attempt's writer waits for more of the client's body
	if !rb.replayable() {
		t.Fatal("4 of at most 10 bytes kept, yet not replayable")
	}
	retry := rb.attempt()
	src.ch <- []byte("BBBBBBBB") // to the stale reader: 12 bytes, over the limit
	if err := <-staleDone; !errors.Is(err, errStaleAttempt) {
		t.Fatalf("the superseded attempt's read: %v, want errStaleAttempt", err)
	}
	go func() { src.ch <- []byte("CCCC"); close(src.ch) }()
	got, err := io.ReadAll(retry)
	if !errors.Is(err, errNotReplayable) {
		t.Fatalf("the retry read %q, %v; want errNotReplayable (the client sent AAAABBBBBBBBCCCC)", got, err)
	}
	if rb.replayable() {
		t.Fatal("replayable after the overflow")
	}
}

// TestReplayOverflowStreamsOn: the attempt that overflows the buffer itself reads on
// and passes on the whole body (only a replay is lost).
func TestReplayOverflowStreamsOn(t *testing.T) {
	src := &stepReader{ch: make(chan []byte), reading: make(chan struct{}, 8)}
	rb := &replayBody{src: src, limit: 10}
	a := rb.attempt()
	go func() {
		for _, b := range []string{"AAAA", "BBBBBBBB", "CCCC"} {
			src.ch <- []byte(b)
		}
		close(src.ch)
	}()
	got, err := io.ReadAll(a)
	if err != nil || string(got) != "AAAABBBBBBBBCCCC" {
		t.Fatalf("read %q, %v; want the whole body", got, err)
	}
}
