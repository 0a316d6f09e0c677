package h2

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// serveFirstBy serves each accepted connection with a first-request deadline of d from
// accept, counting the connections that miss it in n.
func serveFirstBy(t *testing.T, d time.Duration, n *atomic.Uint64) string {
	t.Helper()
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) })}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close(); _ = s.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.ServeConn(context.Background(), c, nil, ConnInfo{RemoteAddr: c.RemoteAddr().String(), FirstRequestBy: time.Now().Add(d), FirstRequestTimeouts: n})
		}
	}()
	return ln.Addr().String()
}

// TestFirstRequestDeadline: a connection that sends its preface and SETTINGS, then only
// PINGs, gets GOAWAY NO_ERROR (last stream 0) at its first-request deadline and is
// closed and counted; one whose first request came in time outlives the deadline.
func TestFirstRequestDeadline(t *testing.T) {
	const d = 300 * time.Millisecond
	var n atomic.Uint64
	addr := serveFirstBy(t, d, &n)

	t.Run("control frames only", func(t *testing.T) {
		r := rawConn(t, addr)
		start := time.Now()
		// One goroutine reads, this one writes: a Framer is not safe for both at once.
		frames := make(chan *http2.GoAwayFrame, 1)
		readErr := make(chan error, 1)
		go func() {
			for {
				f, err := r.fr.ReadFrame()
				if err != nil {
					readErr <- err
					return
				}
				if ga, ok := f.(*http2.GoAwayFrame); ok {
					frames <- ga
				}
			}
		}()
		var ga *http2.GoAwayFrame
		for i := 0; ga == nil; i++ { // a PING every 50ms, at most 60
			if i == 60 {
				t.Fatal("no GOAWAY after 60 PINGs")
			}
			select {
			case ga = <-frames:
			case err := <-readErr:
				// The close may be seen first when GOAWAY and EOF came together.
				select {
				case ga = <-frames:
					readErr <- err
				default:
					t.Fatalf("read before GOAWAY: %v", err)
				}
			case <-time.After(50 * time.Millisecond):
				_ = r.fr.WritePing(false, [8]byte{byte(i)})
			}
		}
		if ga.ErrCode != http2.ErrCodeNo || ga.LastStreamID != 0 {
			t.Fatalf("GOAWAY code %v last %d, want NO_ERROR 0", ga.ErrCode, ga.LastStreamID)
		}
		if el := time.Since(start); el < d/2 || el > 3*time.Second {
			t.Fatalf("GOAWAY after %v, want about %v", el, d)
		}
		if err := <-readErr; !errors.Is(err, io.EOF) {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("connection not closed after GOAWAY: %v", err)
			}
		}
		if got := n.Load(); got != 1 {
			t.Fatalf("counted %d first-request timeouts, want 1", got)
		}
	})

	t.Run("after the first request", func(t *testing.T) {
		r := rawConn(t, addr)
		r.writeHeaders(1, true, "GET", "/")
		r.next(func(f http2.Frame) bool { df, ok := f.(*http2.DataFrame); return ok && df.StreamEnded() })
		time.Sleep(2 * d)
		r.writeHeaders(3, true, "GET", "/")
		r.next(func(f http2.Frame) bool {
			if _, ok := f.(*http2.GoAwayFrame); ok {
				t.Fatal("GOAWAY after the first request: the first-request deadline outlived it")
			}
			df, ok := f.(*http2.DataFrame)
			return ok && df.StreamID == 3 && df.StreamEnded()
		})
		if got := n.Load(); got != 1 {
			t.Fatalf("counted %d first-request timeouts, want 1 (the first subtest's)", got)
		}
	})
}
