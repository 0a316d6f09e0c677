package listen

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// failingListener fails its first n Accepts (as out of file descriptors would), then
// reports itself closed; it records when each Accept happened.
type failingListener struct {
	mu    sync.Mutex
	n     int
	calls []time.Time
}

var errEMFILE = errors.New("accept: too many open files")

func (l *failingListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, time.Now())
	if len(l.calls) <= l.n {
		return nil, errEMFILE
	}
	return nil, net.ErrClosed
}
func (l *failingListener) Close() error   { return nil }
func (l *failingListener) Addr() net.Addr { return &net.TCPAddr{} }

// TestAcceptBackoff: a failing Accept is retried after 5 ms, doubling up to 1 s,
// instead of spinning; the loop ends when the listener is closed. On synctest's clock.
func TestAcceptBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ln := &failingListener{n: 10}
		var tr Tracker
		AcceptLoop(context.Background(), ln, "test", &tr, func(net.Conn) netip.AddrPort { return netip.AddrPort{} },
			func(*Conn) { t.Error("served a connection that was never accepted") }, slog.New(slog.NewTextHandler(io.Discard, nil)))
		want := []time.Duration{5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000}
		if len(ln.calls) != len(want)+1 {
			t.Fatalf("%d Accept calls, want %d", len(ln.calls), len(want)+1)
		}
		for i, w := range want {
			if got := ln.calls[i+1].Sub(ln.calls[i]); got != w*time.Millisecond {
				t.Errorf("wait after failure %d: %v, want %v", i+1, got, w*time.Millisecond)
			}
		}
	})
}

// TestAcceptBackoffEndsOnShutdown: a back-off wait ends when the server shuts down.
func TestAcceptBackoffEndsOnShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ln := &failingListener{n: 1 << 30}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			var tr Tracker
			AcceptLoop(ctx, ln, "test", &tr, func(net.Conn) netip.AddrPort { return netip.AddrPort{} },
				func(*Conn) {}, slog.New(slog.NewTextHandler(io.Discard, nil)))
		}()
		time.Sleep(3 * time.Second)
		start := time.Now()
		cancel()
		<-done
		if took := time.Since(start); took != 0 {
			t.Errorf("the loop ended %v after shutdown, want at once", took)
		}
	})
}
