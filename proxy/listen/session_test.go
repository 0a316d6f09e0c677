package listen

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

// TestSessionDeadlinePassedBefore: a read deadline that passed while the connection
// did other work (left in place by the Timer) does not end a session before it starts:
// it is moved from now, as Read moves it, and input already there is read.
func TestSessionDeadlinePassedBefore(t *testing.T) {
	s, cl := tcpPair(t)
	c := NewConn(s, netip.AddrPort{})
	c.SetIdleTimeout(50 * time.Millisecond)
	if _, err := cl.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	var b [8]byte
	if _, err := c.Read(b[:]); err != nil { // applies the deadline: 50 ms from now
		t.Fatal(err)
	}
	time.Sleep(120 * time.Millisecond) // the deadline passes
	if _, err := cl.Write([]byte("b")); err != nil {
		t.Fatal(err)
	}
	got := ""
	err := c.Session(func() bool {
		n, err := c.Read(b[:])
		if errors.Is(err, ErrWouldBlock) {
			return false
		}
		if err != nil {
			t.Errorf("read: %v", err)
		}
		got = string(b[:n])
		return true
	})
	if err != nil || got != "b" {
		t.Fatalf("session: %v, read %q; want \"b\" read", err, got)
	}
}

// TestSessionCloseNowDoesNotWait: CloseNow from another goroutine returns at once while
// the session's callback is busy (serving a request), where a Close would wait for the
// callback to return; the callback's next read sees the end, and Abort within a session
// closes the socket as it ends (the peer sees the reset), not within the callback.
func TestSessionCloseNowDoesNotWait(t *testing.T) {
	s, cl := tcpPair(t)
	c := NewConn(s, netip.AddrPort{})
	if _, err := cl.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	busy, release := make(chan struct{}), make(chan struct{})
	var after error
	done := make(chan error, 1)
	go func() {
		var b [8]byte
		first := true
		done <- c.Session(func() bool {
			n, err := c.Read(b[:])
			if first && n == 1 {
				first = false
				close(busy)
				<-release // a request being served
				_, after = c.Read(b[:])
				return true
			}
			return errors.Is(err, ErrWouldBlock) == false
		})
	}()
	<-busy
	closed := make(chan struct{})
	go func() { _ = c.CloseNow(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		close(release)
		t.Fatal("CloseNow waited for the session's callback")
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("session: %v", err)
	}
	if after != io.EOF {
		t.Errorf("the callback's read after CloseNow: %v, want io.EOF", after)
	}
	if err := c.Session(func() bool { t.Error("a session opened after CloseNow"); return true }); !errors.Is(err, net.ErrClosed) {
		t.Errorf("a session after CloseNow: %v, want net.ErrClosed", err)
	}
	_ = c.Close()

	// Abort within a session: the callback returns, then the socket is reset.
	s2, cl2 := tcpPair(t)
	c2 := NewConn(s2, netip.AddrPort{})
	if _, err := cl2.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	err := c2.Session(func() bool {
		var b [8]byte
		if _, err := c2.Read(b[:]); errors.Is(err, ErrWouldBlock) {
			return false
		}
		_, _ = c2.Write([]byte("partial"))
		c2.Abort()
		return false // even asking to wait: the abort ends the session
	})
	if !errors.Is(err, net.ErrClosed) {
		t.Fatalf("session with Abort: %v, want net.ErrClosed", err)
	}
	_ = cl2.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(cl2)
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the peer read %q then %v, want a reset", b, err)
	}
}
