package listen

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// tcpPair returns the two ends of a real loopback TCP connection.
func tcpPair(t *testing.T) (server, client net.Conn) {
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
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = server.Close(); _ = client.Close() })
	return server, client
}

// shut reports whether the server side's read side was shut (a read ends at once).
func shut(t *testing.T, c *Conn) bool {
	t.Helper()
	_ = c.Conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	defer func() { _ = c.Conn.SetReadDeadline(time.Time{}) }()
	var b [1]byte
	_, err := c.Conn.Read(b[:])
	return err == io.EOF
}

// TestAdmitShedsIdleKeepAlive: at the total bound a new connection takes the room of an
// idle keep-alive connection, which is woken to close; a connection that has not served
// a request yet, or is serving one, is never shed; with nothing idle the new connection
// is refused. The shed one's room counts as free before it is untracked.
func TestAdmitShedsIdleKeepAlive(t *testing.T) {
	tr := Tracker{Max: 2}
	var lim Limit
	mk := func() *Conn { s, _ := tcpPair(t); return &Conn{Conn: s} }
	a, b := mk(), mk()
	if tr.Admit(a, &lim) != Admitted || tr.Admit(b, &lim) != Admitted {
		t.Fatal("the first two connections were not admitted")
	}
	if lim.Open() != 2 {
		t.Fatalf("open %d, want 2", lim.Open())
	}
	// a served a request and waits for the next; b is busy.
	a.SetBusy(true)
	a.SetBusy(false)
	b.SetBusy(true)
	c := mk()
	if got := tr.Admit(c, &lim); got != Admitted {
		t.Fatalf("third connection: %v, want admitted in the idle one's room", got)
	}
	if !shut(t, a) {
		t.Error("the idle keep-alive connection was not woken to close")
	}
	if lim.IdleShed.Load() != 1 {
		t.Errorf("IdleShed %d, want 1", lim.IdleShed.Load())
	}
	// Nothing idle now: b is busy, c has not served a request.
	d := mk()
	if got := tr.Admit(d, &lim); got != OverLimit {
		t.Fatalf("fourth connection: %v, want OverLimit", got)
	}
	if shut(t, b) || shut(t, c) {
		t.Error("a busy or a new connection was shed")
	}
	// a's goroutine ends: its room was already given to c; the count is right again.
	tr.Untrack(a)
	if lim.Open() != 2 || tr.Len() != 2 {
		t.Errorf("after the shed one left: open %d, tracked %d, want 2 and 2", lim.Open(), tr.Len())
	}
	tr.Untrack(b)
	if got := tr.Admit(d, &lim); got != Admitted {
		t.Errorf("after a close: %v, want admitted", got)
	}
}

// TestAdmitListenerBound: a listener's own bound sheds and refuses within the listener
// only; another listener's idle connections are left alone.
func TestAdmitListenerBound(t *testing.T) {
	var tr Tracker
	in, out := Limit{Max: 1}, Limit{Max: 1}
	mk := func() *Conn { s, _ := tcpPair(t); return &Conn{Conn: s} }
	a, b := mk(), mk()
	tr.Admit(a, &in)
	tr.Admit(b, &out)
	b.SetBusy(true)
	b.SetBusy(false) // idle keep-alive, but egress's
	if got := tr.Admit(mk(), &in); got != OverLimit {
		t.Fatalf("second ingress connection: %v, want OverLimit (egress's idle one is not ingress's to shed)", got)
	}
	if shut(t, b) {
		t.Error("another listener's idle connection was shed")
	}
	if got := tr.Admit(mk(), &out); got != Admitted || !shut(t, b) {
		t.Errorf("second egress connection: %v (idle one shut: see above), want admitted in the idle one's room", got)
	}
}

// fdListener fails its first n Accepts with EMFILE, then reports itself closed.
type fdListener struct {
	mu    sync.Mutex
	n     int
	calls int
	onErr func(call int)
}

func (l *fdListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	l.calls++
	call, n := l.calls, l.n
	l.mu.Unlock()
	if call <= n {
		if l.onErr != nil {
			l.onErr(call)
		}
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	return nil, net.ErrClosed
}
func (l *fdListener) Close() error   { return nil }
func (l *fdListener) Addr() net.Addr { return &net.TCPAddr{} }

// countHandler counts log records.
type countHandler struct {
	mu    sync.Mutex
	lines []string
}

func (h *countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.lines = append(h.lines, r.Message)
	h.mu.Unlock()
	return nil
}
func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countHandler) WithGroup(string) slog.Handler      { return h }

// TestAcceptOutOfFDs: out of file descriptors, the accept loop counts each failure,
// sheds idle keep-alive connections and the server's idle upstream ones, backs off
// (a 60 s run of failures is ~70 Accepts, not a spin) and logs a warning at most every
// 10 s. On synctest's clock.
func TestAcceptOutOfFDs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srvSide, _ := net.Pipe()
		var tr Tracker
		idle := &Conn{Conn: srvSide}
		tr.Admit(idle, nil)
		idle.SetBusy(true)
		idle.SetBusy(false)
		var lim Limit
		upstreamSweeps := 0
		h := &countHandler{}
		start := time.Now()
		ln := &fdListener{n: 1 << 30}
		ln.onErr = func(int) {
			if time.Since(start) >= 60*time.Second {
				ln.mu.Lock()
				ln.n = 0 // the listener is closed from now on
				ln.mu.Unlock()
			}
		}
		a := Acceptor{Name: "test", Tracker: &tr, Limit: &lim, Log: slog.New(h),
			OrigDst:       func(net.Conn) netip.AddrPort { return netip.AddrPort{} },
			Serve:         func(*Conn) { t.Error("served a connection that was never accepted") },
			OnFDExhausted: func() { upstreamSweeps++ },
		}
		a.Run(context.Background(), ln)
		n := lim.FDExhausted.Load()
		if n < 60 || n > 80 {
			t.Errorf("%d failed accepts in 60 s, want 60-80 (back-off up to 1 s, no spin)", n)
		}
		if lim.IdleShed.Load() != 0 { // idle has no Limit; the tracker sheds it all the same
			t.Errorf("IdleShed %d on the failing listener, want 0 (the shed connection is not its own)", lim.IdleShed.Load())
		}
		if !idle.shed {
			t.Error("the idle keep-alive connection was not shed")
		}
		if upstreamSweeps != int(n) {
			t.Errorf("idle upstream connections swept %d times for %d failures", upstreamSweeps, n)
		}
		if len(h.lines) < 6 || len(h.lines) > 8 {
			t.Errorf("%d log lines for %d failures over 60 s, want one per 10 s: %s", len(h.lines), n, strings.Join(h.lines, "; "))
		}
	})
}

// TestAcceptOutOfFDsWakesOnClose: the back-off of an accept loop out of descriptors
// ends as soon as a connection closes (a descriptor is free), not when the timer says.
func TestAcceptOutOfFDsWakesOnClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srvSide, _ := net.Pipe()
		var tr Tracker
		c := &Conn{Conn: srvSide}
		tr.Track(c)
		var times []time.Time
		ln := &fdListener{n: 12}
		ln.onErr = func(call int) {
			times = append(times, time.Now())
			if call == 11 {
				go func() { time.Sleep(10 * time.Millisecond); tr.Untrack(c) }()
			}
		}
		a := Acceptor{Name: "test", Tracker: &tr, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
			OrigDst: func(net.Conn) netip.AddrPort { return netip.AddrPort{} }, Serve: func(*Conn) {}}
		a.Run(context.Background(), ln)
		if got := times[11].Sub(times[10]); got != 10*time.Millisecond {
			t.Errorf("the wait after the 11th failure took %v, want 10ms (the close), not the 1 s back-off", got)
		}
	})
}

// TestRefuse: a connection refused at accept whose HTTP/1.x request is already there
// gets 503 overloaded with Connection: close; one whose first bytes are TLS, the HTTP/2
// preface, or nothing yet is just closed.
func TestRefuse(t *testing.T) {
	for _, c := range []struct {
		name, first string
		answered    bool
	}{
		{"HTTP/1.1 request", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false},
		{"TLS ClientHello", "\x16\x03\x01\x00\xa5\x01", false},
		{"nothing yet", "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv, cl := tcpPair(t)
			if c.first != "" {
				if _, err := io.WriteString(cl, c.first); err != nil {
					t.Fatal(err)
				}
				time.Sleep(20 * time.Millisecond) // the bytes cross loopback before the refusal looks
			}
			Refuse(srv)
			_ = cl.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, err := io.ReadAll(cl)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the refused connection was not closed")
			}
			if c.answered {
				resp, rerr := http.ReadResponse(bufio.NewReader(strings.NewReader(string(got))), nil)
				if rerr != nil {
					t.Fatalf("answer %q: %v", got, rerr)
				}
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 503 || resp.Header.Get("x-meshd-error") != "overloaded" || !resp.Close || !strings.Contains(string(body), "too many connections") {
					t.Errorf("answer %d %v close %v %q, want 503 overloaded, Connection: close", resp.StatusCode, resp.Header, resp.Close, body)
				}
			} else if len(got) != 0 {
				t.Errorf("answered %q, want a bare close", got)
			}
		})
	}
}
