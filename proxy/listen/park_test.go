//go:build linux

package listen

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns the two ends of a real loopback TCP connection.
func parkPair(t *testing.T, ln net.Listener) (client, server net.Conn) {
	t.Helper()
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- nil
			return
		}
		ch <- c
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-ch
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func newParker(t *testing.T) *Parker {
	t.Helper()
	p, err := NewParker(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func listenTCP(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// wakeOf parks c and returns a channel that receives why it was resumed.
func wakeOf(t *testing.T, c *Conn, expire time.Time) <-chan Wake {
	t.Helper()
	ch := make(chan Wake, 2) // 2: a second resume would be a bug the test sees
	if !c.Park(expire, func(w Wake) { ch <- w }) {
		t.Fatal("Park refused a TCP connection")
	}
	return ch
}

func within(t *testing.T, ch <-chan Wake, want Wake) {
	t.Helper()
	select {
	case got := <-ch:
		if got != want {
			t.Fatalf("resumed %v, want %v", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("not resumed (%v) within 10 s", want)
	}
	select {
	case got := <-ch:
		t.Fatalf("resumed a second time (%v)", got)
	case <-time.After(20 * time.Millisecond):
	}
}

// TestParkerWakes: a parked connection is resumed once, Ready, when its client sends
// something, hangs up, or a drain shuts its read side; Expired at its expiry; Closed
// by CloseNow (after which its socket is closed) and by the Parker's Close. The
// Parker's count follows.
func TestParkerWakes(t *testing.T) {
	ln := listenTCP(t)
	p := newParker(t)
	far := time.Now().Add(time.Hour)

	cl, sv := parkPair(t, ln)
	c := &Conn{Conn: sv, parker: p}
	ch := wakeOf(t, c, far)
	if p.Len() != 1 {
		t.Fatalf("Len %d after a park, want 1", p.Len())
	}
	if _, err := cl.Write([]byte("GET")); err != nil {
		t.Fatal(err)
	}
	within(t, ch, Ready)
	if p.Len() != 0 {
		t.Fatalf("Len %d after the wake, want 0", p.Len())
	}
	buf := make([]byte, 8)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "GET" {
		t.Fatalf("read after the wake: %q %v", buf[:n], err)
	}
	// Parked again, the same connection wakes again.
	ch = wakeOf(t, c, far)
	cl.Close()
	within(t, ch, Ready)

	_, sv = parkPair(t, ln)
	c = &Conn{Conn: sv, parker: p}
	c.state.Store(kept)
	ch = wakeOf(t, c, far)
	c.WakeIfIdle() // a drain or a shed
	within(t, ch, Ready)

	_, sv = parkPair(t, ln)
	c = &Conn{Conn: sv, parker: p}
	ch = wakeOf(t, c, time.Now().Add(50*time.Millisecond))
	within(t, ch, Expired)

	_, sv = parkPair(t, ln)
	c = &Conn{Conn: sv, parker: p}
	ch = wakeOf(t, c, far)
	if err := c.CloseNow(); err != nil {
		t.Fatal(err)
	}
	within(t, ch, Closed)

	_, sv = parkPair(t, ln)
	c = &Conn{Conn: sv, parker: p}
	ch = wakeOf(t, c, far)
	p.Close()
	within(t, ch, Closed)
	if c.Park(far, func(Wake) {}) {
		t.Fatal("a closed Parker took a connection")
	}
}

// TestParkerExpiryOrder: expiries are served in their order whatever the order of the
// parks, the loop's wait shortened by a park that expires sooner than the one it waits
// for; connections not due stay parked.
func TestParkerExpiryOrder(t *testing.T) {
	ln := listenTCP(t)
	p := newParker(t)
	var order []int
	var mu sync.Mutex
	done := make(chan struct{}, 3)
	now := time.Now()
	for i, d := range []time.Duration{time.Hour, 400 * time.Millisecond, 100 * time.Millisecond} {
		_, sv := parkPair(t, ln)
		c := &Conn{Conn: sv, parker: p}
		if !c.Park(now.Add(d), func(w Wake) {
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			done <- struct{}{}
		}) {
			t.Fatal("Park refused")
		}
	}
	for range 2 {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("expiries not served within 10 s")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(order) != 2 || order[0] != 2 || order[1] != 1 {
		t.Fatalf("expiry order %v, want [2 1]", order)
	}
	if p.Len() != 1 {
		t.Fatalf("Len %d, want the hour-long one still parked", p.Len())
	}
}

// TestParkerConcurrent (run with -race): connections parked, woken by their clients,
// by CloseNow and by expiry at once, from many goroutines; each is resumed exactly
// once and the set ends empty.
func TestParkerConcurrent(t *testing.T) {
	const n = 200
	ln := listenTCP(t)
	p := newParker(t)
	var resumed [n]atomic.Int32
	var wg sync.WaitGroup
	for i := range n {
		cl, sv := parkPair(t, ln)
		c := &Conn{Conn: sv, parker: p}
		wg.Add(1)
		expire := time.Now().Add(time.Hour)
		if i%3 == 2 {
			expire = time.Now().Add(time.Duration(i%7) * time.Millisecond)
		}
		if !c.Park(expire, func(Wake) { resumed[i].Add(1); wg.Done() }) {
			t.Fatal("Park refused")
		}
		go func() {
			switch i % 3 {
			case 0:
				_, _ = cl.Write([]byte("x"))
			case 1:
				_ = c.CloseNow()
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("not every connection resumed within 20 s (%d parked)", p.Len())
	}
	for i := range resumed {
		if got := resumed[i].Load(); got != 1 {
			t.Fatalf("connection %d resumed %d times", i, got)
		}
	}
	if p.Len() != 0 {
		t.Fatalf("Len %d after every wake", p.Len())
	}
}

// TestParkerSettle: the settle hook runs once after a wave of SettleMin parks and a
// quiet second, not before the wave is complete.
func TestParkerSettle(t *testing.T) {
	if testing.Short() {
		t.Skip("opens SettleMin connections")
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur < 2*SettleMin+256 {
		t.Skipf("RLIMIT_NOFILE %d: too low for %d connections' two ends", lim.Cur, SettleMin)
	}
	ln := listenTCP(t)
	settled := make(chan struct{}, 4)
	p, err := NewParker(func() { settled <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	park := func() {
		_, sv := parkPair(t, ln)
		c := &Conn{Conn: sv, parker: p}
		if !c.Park(time.Now().Add(time.Hour), func(Wake) {}) {
			t.Fatal("Park refused")
		}
	}
	for range SettleMin - 1 {
		park()
	}
	select {
	case <-settled:
		t.Fatal("settled before the wave was complete")
	case <-time.After(SettleQuiet + 200*time.Millisecond):
	}
	park()
	select {
	case <-settled:
	case <-time.After(10 * time.Second):
		t.Fatal("no settle within 10 s of the wave's end")
	}
	select {
	case <-settled:
		t.Fatal("settled twice for one wave")
	case <-time.After(SettleQuiet + 200*time.Millisecond):
	}
}
