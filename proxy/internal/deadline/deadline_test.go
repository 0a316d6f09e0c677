package deadline

import (
	"errors"
	"math"
	"net"
	"os"
	"testing"
	"time"
)

// recConn records the deadlines set on a real (pipe) connection.
type recConn struct {
	net.Conn
	sets []time.Time
}

func (r *recConn) SetDeadline(t time.Time) error {
	r.sets = append(r.sets, t)
	return r.Conn.SetDeadline(t)
}

// TestDeadlineTimer checks when refresh moves a deadline: every move is a runtime timer
// operation under the poll descriptor's lock, paid per request if the rules are loose,
// while a missed move is a wrong timeout.
func TestDeadlineTimer(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := &recConn{Conn: a}
	var tm Timer

	tm.Idle = time.Hour
	tm.Refresh(c)
	tm.Refresh(c)
	if len(c.sets) != 1 {
		t.Fatalf("idle only: %d deadline moves for two refreshes within a second, want 1", len(c.sets))
	}

	// A head that arrives whole: the header timeout is set and cleared with no Read in
	// between, and the idle deadline stays where it was: no move at all.
	tm.SetHard(time.Now().Add(30 * time.Second))
	tm.SetHard(time.Time{})
	tm.Refresh(c)
	if len(c.sets) != 1 {
		t.Fatalf("hard set and cleared between refreshes moved the deadline (%d moves)", len(c.sets))
	}

	// A shorter bound takes effect at once.
	tm.Idle = 5 * time.Minute
	tm.Refresh(c)
	if len(c.sets) != 2 || time.Until(c.sets[1]) > 5*time.Minute {
		t.Fatalf("switching to a shorter idle: moves %v", c.sets)
	}

	// Absolute bounds apply exactly, also when the next one is later by less than a second.
	h1 := time.Now().Add(200 * time.Millisecond)
	tm.SetHard(h1)
	tm.Refresh(c)
	h2 := h1.Add(300 * time.Millisecond)
	tm.SetHard(h2)
	tm.Refresh(c)
	if n := len(c.sets); n != 4 || !c.sets[2].Equal(h1) || !c.sets[3].Equal(h2) {
		t.Fatalf("hard deadlines: moves %v, want %v then %v", c.sets, h1, h2)
	}

	// Clearing everything clears the deadline once.
	tm.SetHard(time.Time{})
	tm.Idle = 0
	tm.Refresh(c)
	tm.Refresh(c)
	if n := len(c.sets); n != 5 || !c.sets[4].IsZero() {
		t.Fatalf("clearing: moves %v", c.sets)
	}

	// A sub-second idle keeps a slack of a quarter of itself, so activity keeps it alive.
	tm.Idle = 100 * time.Millisecond
	tm.Refresh(c)
	first := c.sets[len(c.sets)-1]
	tm.setR = first.Sub(epoch) - 30*time.Millisecond // as if set 30 ms ago
	tm.setW = tm.setR
	tm.Refresh(c)
	if last := c.sets[len(c.sets)-1]; !last.After(first.Add(-30 * time.Millisecond)) {
		t.Fatalf("sub-second idle not extended after 30 ms of activity: moves %v", c.sets)
	}
}

// readConn records the read deadlines set on a real TCP connection, and signals each.
type readConn struct {
	net.Conn
	sets  []time.Time
	moved chan struct{}
}

func (r *readConn) SetReadDeadline(t time.Time) error {
	r.sets = append(r.sets, t)
	select {
	case r.moved <- struct{}{}:
	default:
	}
	return r.Conn.SetReadDeadline(t)
}

// read is listen.Conn's read: RefreshRead, then the read retried while Early says the
// timeout was the timer's own early deadline.
func read(tm *Timer, c net.Conn, p []byte) (int, error) {
	tm.RefreshRead(c)
	for {
		n, err := c.Read(p)
		if n > 0 || err == nil || !tm.Early(c, err) {
			return n, err
		}
	}
}

func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		client.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// TestReadDeadlineLeftToFire: a keep-alive connection switches between a short idle
// bound (between requests) and a long one (within a request) twice per request; the
// read deadline is moved only when it must be earlier, and an early one that fires is
// moved to the one due while the read goes on, so the bytes that come later are read.
func TestReadDeadlineLeftToFire(t *testing.T) {
	client, server := tcpPair(t)
	c := &readConn{Conn: server, moved: make(chan struct{}, 8)}
	var tm Timer

	tm.Idle = 40 * time.Millisecond // the short bound: arms the read deadline
	tm.RefreshRead(c)
	for i := 0; i < 100; i++ {
		tm.Idle = time.Hour
		tm.RefreshRead(c)
		tm.RefreshWrite(c)
		tm.Idle = time.Minute
		tm.RefreshRead(c)
	}
	if len(c.sets) != 1 {
		t.Fatalf("%d read deadline moves for 100 switches between later bounds, want 1 (%v)", len(c.sets), c.sets)
	}
	<-c.moved

	// The short deadline fires during a read under the long bound: the read goes on.
	go func() {
		<-c.moved // Early re-armed the deadline
		_, _ = client.Write([]byte("x"))
	}()
	var b [1]byte
	n, err := read(&tm, c, b[:])
	if n != 1 || err != nil {
		t.Fatalf("read across the early deadline: %d, %v; want the byte", n, err)
	}
	if len(c.sets) != 2 || time.Until(c.sets[1]) < 30*time.Second {
		t.Fatalf("read deadline moves %v: want the early one moved once, to the minute's", c.sets)
	}

	// The bound due passes: the timeout is reported.
	tm.Idle = 30 * time.Millisecond
	if _, err := read(&tm, c, b[:]); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the idle bound: %v, want the timeout", err)
	}

	// Someone else's earlier deadline (a sniff's, a wake-up) is not retried.
	tm.Forget()
	tm.Idle = time.Hour
	tm.RefreshRead(c)
	_ = server.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := c.Read(b[:]); !errors.Is(err, os.ErrDeadlineExceeded) || tm.Early(c, err) {
		t.Fatalf("a deadline set directly: %v, want its timeout, not retried", err)
	}

	// An absolute bound is kept exactly though the read deadline was left earlier.
	tm.Forget()
	tm.Idle = 20 * time.Millisecond
	tm.RefreshRead(c)
	tm.Idle = time.Hour
	hard := time.Now().Add(60 * time.Millisecond)
	tm.SetHard(hard)
	if _, err := read(&tm, c, b[:]); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the absolute bound: %v, want the timeout", err)
	}
	if last := c.sets[len(c.sets)-1]; !last.Equal(hard) {
		t.Fatalf("read deadline moves %v: want the last at the absolute bound %v", c.sets, hard)
	}
}

// TestHugeIdleBound: an idle bound too long for the clock's arithmetic means no
// deadline soon, not one in the past.
func TestHugeIdleBound(t *testing.T) {
	client, server := tcpPair(t)
	var tm Timer
	tm.Idle = time.Duration(math.MaxInt64)
	go func() {
		time.Sleep(30 * time.Millisecond)
		_, _ = client.Write([]byte("x"))
	}()
	var b [1]byte
	if n, err := read(&tm, server, b[:]); n != 1 || err != nil {
		t.Fatalf("read under a huge idle bound: %d, %v; want the byte", n, err)
	}
	if _, err := server.Write(b[:]); err != nil {
		t.Fatalf("write under a huge idle bound: %v", err)
	}
}
