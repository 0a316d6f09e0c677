package upstream

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/h1"
)

// TestIdleConnShedsBuffers: a pooled connection idle past bufferIdleAge gives its read
// and write buffers back at the reaper's sweep (not before, and not while its read
// buffer holds bytes); Get gives it buffers again, and the next exchange on it works,
// its response reader included.
func TestIdleConnShedsBuffers(t *testing.T) {
	u, s := awaitPair(t)
	p := &Pool{addr: "test", cl: &Cluster{maxIdle: 4}}
	u.Pool = p
	u.RD = h1.NewReader(u.BR, respLimits)
	const answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	exchange := func(u *Conn) {
		t.Helper()
		if _, err := u.BW.WriteString("GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if err := u.BW.Flush(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		if _, err := io.ReadFull(s, buf); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write([]byte(answer)); err != nil {
			t.Fatal(err)
		}
		var resp h1.Response
		if err := u.RD.ReadResponse(&resp, "GET"); err != nil {
			t.Fatalf("response: %v", err)
		}
		if resp.Status != 200 || resp.ContentLength != 2 {
			t.Fatalf("response %d, length %d; want 200, 2", resp.Status, resp.ContentLength)
		}
		body := make([]byte, 2)
		if _, err := io.ReadFull(u.BR, body); err != nil || string(body) != "ok" {
			t.Fatalf("body %q, %v", body, err)
		}
	}
	exchange(u)
	p.Put(u)
	used := u.LastUsed

	p.reapIdle(used.Add(bufferIdleAge-time.Millisecond), maxIdleAge)
	if u.BR == nil || u.BW == nil {
		t.Fatal("buffers taken before bufferIdleAge")
	}
	p.reapIdle(used.Add(bufferIdleAge), maxIdleAge)
	if u.BR != nil || u.BW != nil {
		t.Fatal("buffers kept by a connection idle for bufferIdleAge")
	}
	if len(p.idle) != 1 {
		t.Fatalf("%d idle connections, want the one kept", len(p.idle))
	}

	g, err := p.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if g != u || u.BR == nil || u.BW == nil {
		t.Fatalf("Get: %p with buffers %v/%v, want the pooled connection %p with buffers", g, u.BR != nil, u.BW != nil, u)
	}
	exchange(u)

	// A read buffer holding bytes is not taken (they belong to the connection).
	if _, err := s.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := u.BR.Peek(1); err != nil {
		t.Fatal(err)
	}
	p.Put(u)
	p.reapIdle(u.LastUsed.Add(bufferIdleAge), maxIdleAge)
	if u.BR == nil || u.BR.Buffered() != 1 {
		t.Fatal("a read buffer holding a byte was taken")
	}
}
