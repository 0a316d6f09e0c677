package listen

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// emfileThen fails Accept with EMFILE while fail says so, then accepts from the real
// listener underneath.
type emfileThen struct {
	net.Listener
	mu    sync.Mutex
	fails int
	calls int
}

func (l *emfileThen) Accept() (net.Conn, error) {
	l.mu.Lock()
	l.calls++
	fail := l.calls <= l.fails
	l.mu.Unlock()
	if fail {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	return l.Listener.Accept()
}

// TestReservedListenerUsesReserve: out of descriptors, the admin listener gives back a
// reserved descriptor per failure and accepts again at once, without returning the
// error to its server; Fill takes the reserve back.
func TestReservedListenerUsesReserve(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &FDReserve{N: 3}
	r.Fill()
	defer r.Close()
	if r.Held() != 3 {
		t.Fatalf("reserve holds %d, want 3", r.Held())
	}
	ln := &ReservedListener{Listener: &emfileThen{Listener: inner, fails: 2}, Reserve: r, Name: "admin", Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	defer ln.Close()
	go func() {
		if c, err := net.Dial("tcp", inner.Addr().String()); err == nil {
			defer c.Close()
			time.Sleep(time.Second)
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("Accept: %v, want a connection after two EMFILEs", err)
	}
	c.Close()
	if r.Held() != 1 {
		t.Errorf("reserve holds %d after two EMFILEs, want 1", r.Held())
	}
	r.Fill()
	if r.Held() != 3 {
		t.Errorf("refilled reserve holds %d, want 3", r.Held())
	}
}

// TestReservedListenerSpentWaits: with the reserve spent, Accept backs off instead of
// returning EMFILE (net/http's server would log each one) and Close ends the wait.
// On synctest's clock.
func TestReservedListenerSpentWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := &fdListener{n: 1 << 30}
		ln := &ReservedListener{Listener: fl, Reserve: &FDReserve{}, Name: "admin", Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
		errc := make(chan error, 1)
		go func() { _, err := ln.Accept(); errc <- err }()
		time.Sleep(10 * time.Second)
		fl.mu.Lock()
		calls := fl.calls
		fl.mu.Unlock()
		if calls < 10 || calls > 20 {
			t.Errorf("%d Accepts in 10 s with the reserve spent, want 10-20 (back-off to 1 s)", calls)
		}
		select {
		case err := <-errc:
			t.Fatalf("Accept returned %v while out of descriptors, want it to wait", err)
		default:
		}
		fl.mu.Lock()
		fl.n = 0 // now closed
		fl.mu.Unlock()
		ln.Close()
		if err := <-errc; !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
		}
	})
}
