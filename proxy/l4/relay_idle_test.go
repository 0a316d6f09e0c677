package l4

import (
	"errors"
	"github.com/meshd/meshd/proxy/upstream"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// loopbackPair is a connected pair of TCP connections on 127.0.0.1, closed at cleanup.
func loopbackPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := ln.Accept(); ch <- res{c, err} }()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { _ = a.Close(); _ = r.c.Close() })
	return a, r.c
}

// A relay whose traffic flows one way only is not idle: with an idle timeout at or
// below the 1 s tick floor, the silent direction used to wake at the same moment as the
// busy one and, not yet seeing its progress, close a connection that was streaming.
func TestRelayOneWayStreamIsNotIdle(t *testing.T) {
	for _, idle := range []time.Duration{300 * time.Millisecond, time.Second} {
		t.Run(idle.String(), func(t *testing.T) {
			client, down := loopbackPair(t)
			up, server := loopbackPair(t)
			var st upstream.L4Stats
			relayDone := make(chan error, 1)
			go func() { relayDone <- relay(down, up, idle, &st) }()
			var wg sync.WaitGroup
			var got int64
			wg.Go(func() { got, _ = io.Copy(io.Discard, client) }) // the client only reads

			// The upstream streams 1 KiB every 5 ms for three idle periods.
			const chunk = 1024
			chunks := int(3 * idle / (5 * time.Millisecond))
			pace := time.NewTicker(5 * time.Millisecond)
			buf := make([]byte, chunk)
			for i := range chunks {
				<-pace.C
				if _, err := server.Write(buf); err != nil {
					pace.Stop()
					t.Fatalf("upstream write %d of %d: %v (relay ended: %v)", i+1, chunks, err, <-relayDone)
				}
				select {
				case err := <-relayDone:
					pace.Stop()
					t.Fatalf("relay ended after %d of %d chunks while the upstream was streaming: %v", i+1, chunks, err)
				default:
				}
			}
			pace.Stop()

			// Silent both ways now: the idle timeout must still fire.
			select {
			case err := <-relayDone:
				if !errors.Is(err, errL4Idle) {
					t.Fatalf("relay ended with %v, want the idle timeout", err)
				}
			case <-time.After(idle + 10*time.Second):
				t.Fatal("relay did not time out once the stream stopped")
			}
			wg.Wait()
			if want := int64(chunks * chunk); got != want || st.BytesReceived.Load() != want {
				t.Fatalf("client got %d bytes, relay counted %d, want %d", got, st.BytesReceived.Load(), want)
			}
		})
	}
}

// scriptedConn is an upstream whose reads follow a script: each step waits, then gives
// data or an error. It stands for a busy direction whose goroutine is not scheduled for
// a while (a loaded machine): its bytes are on their way but not yet reported.
type scriptedConn struct {
	net.Conn // nil: only what relay uses is implemented
	steps    chan scriptStep
	closed   chan struct{}
	once     sync.Once
}

type scriptStep struct {
	wait time.Duration
	data []byte
	err  error
}

func (c *scriptedConn) Read(p []byte) (int, error) {
	select {
	case s := <-c.steps:
		time.Sleep(s.wait)
		return copy(p, s.data), s.err
	case <-c.closed:
		return 0, net.ErrClosed
	}
}
func (c *scriptedConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *scriptedConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptedConn) SetWriteDeadline(time.Time) error { return nil }
func (c *scriptedConn) Close() error                     { c.once.Do(func() { close(c.closed) }); return nil }

// A streaming direction that reports its progress late (its read returns after more
// than the idle timeout, with bytes) keeps the relay open: the silent direction does not
// take the missing report for idleness while the busy one's last wake moved data.
func TestRelayLateProgressIsNotIdle(t *testing.T) {
	const idle = 300 * time.Millisecond
	client, down := loopbackPair(t)
	deadline := &net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}
	up := &scriptedConn{steps: make(chan scriptStep, 8), closed: make(chan struct{})}
	chunk := make([]byte, 1024)
	for _, s := range []scriptStep{
		{data: chunk},                 // moved at once
		{err: deadline},               // the tick: progress reported
		{wait: 3 * idle, data: chunk}, // starved for three idle periods, then moved
		{err: deadline},               // reported late
		{err: io.EOF},                 // the upstream is done
	} {
		up.steps <- s
	}
	var st upstream.L4Stats
	relayDone := make(chan error, 1)
	go func() { relayDone <- relay(down, up, idle, &st) }()
	got, err := io.Copy(io.Discard, client) // until the relay's CloseWrite after the upstream's EOF
	if err != nil || got != 2048 {
		t.Fatalf("client got %d bytes (%v), want both chunks and a clean end; relay: %v", got, err, <-relayDone)
	}
	_ = client.Close()
	select {
	case err := <-relayDone:
		if errors.Is(err, errL4Idle) {
			t.Fatalf("relay ended idle: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("relay did not end after both sides closed")
	}
	if st.IdleTimeouts.Load() != 0 {
		t.Fatalf("%d idle timeouts counted", st.IdleTimeouts.Load())
	}
}

// writeForever writes to c until a write fails (the relay closed its side).
func writeForever(c net.Conn) {
	b := make([]byte, 64<<10)
	for {
		if _, err := c.Write(b); err != nil {
			return
		}
	}
}

// TestRelayStalledReaderIsIdle: a client that stops reading while the upstream keeps
// sending fills the socket buffers, and the relay's up→down copy blocks in its write,
// where no read deadline reaches it. The connection made no progress for the idle
// time, so it is closed as idle and counted, instead of holding its goroutines and its
// connection slot until a drain.
func TestRelayStalledReaderIsIdle(t *testing.T) {
	_, down := loopbackPair(t) // the client end never reads
	up, server := loopbackPair(t)
	go writeForever(server)
	relayEndsIdle(t, down, up)
}

// relayEndsIdle relays down and up with a 300 ms idle timeout and fails unless the
// relay ends as idle, counted once, within 10 s.
func relayEndsIdle(t *testing.T, down, up net.Conn) {
	t.Helper()
	var st upstream.L4Stats
	done := make(chan error, 1)
	go func() { done <- relay(down, up, 300*time.Millisecond, &st) }()
	select {
	case err := <-done:
		if !errors.Is(err, errL4Idle) || st.IdleTimeouts.Load() != 1 {
			t.Fatalf("relay: %v, %d idle timeouts; want errL4Idle, counted once", err, st.IdleTimeouts.Load())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("relay still running 10 s after the traffic stalled (idle 300 ms)")
	}
}

// TestRelayStalledBothWaysIsIdle: both peers send and neither reads, so both copies
// block in their writes and neither ever wakes; the connection still ends as idle.
func TestRelayStalledBothWaysIsIdle(t *testing.T) {
	client, down := loopbackPair(t)
	up, server := loopbackPair(t)
	go writeForever(client)
	go writeForever(server)
	relayEndsIdle(t, down, up)
}

// TestRelaySlowReaderIsNotIdle: a client that reads, slowly, what the upstream floods
// it with keeps the connection: the blocked copy returns rarely, but its destination
// keeps acknowledging bytes, which is progress.
func TestRelaySlowReaderIsNotIdle(t *testing.T) {
	client, down := loopbackPair(t)
	up, server := loopbackPair(t)
	go writeForever(server)
	var st upstream.L4Stats
	done := make(chan error, 1)
	go func() { done <- relay(down, up, 300*time.Millisecond, &st) }()
	// 64 KiB every 50 ms: the client's kernel opens its window again only once a
	// sizeable part of its buffer is free (twice the loopback MSS), so a reader much
	// slower than that looks stopped at a 300 ms idle timeout; at an idle timeout of
	// minutes the same holds for readers of a few hundred bytes a second.
	b := make([]byte, 64<<10)
	for range 40 { // 2 s, about 1.3 MB/s
		select {
		case err := <-done:
			t.Fatalf("relay ended while the client was reading: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		if _, err := io.ReadFull(client, b); err != nil {
			t.Fatalf("client read: %v", err)
		}
	}
	_ = client.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("relay still running after the client closed")
	}
}
