package upstream

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// awaitPair is a client Conn (as DialNew makes it) and the server side of its socket.
func awaitPair(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	u := &Conn{NetConn: c, raw: rawTCP(c)}
	if u.raw == nil {
		t.Fatal("no raw connection for a TCP socket")
	}
	u.BR = bufio.NewReaderSize(u, upstreamReadBuf)
	u.BW = bufio.NewWriterSize(u, upstreamWriteBuf)
	return u, s
}

// TestFlushAwaitWaitsForTheAnswer: FlushAwait writes the request and returns only once
// the answer is there (never before the server wrote it), and the read after it gets it.
func TestFlushAwaitWaitsForTheAnswer(t *testing.T) {
	u, s := awaitPair(t)
	var answered atomic.Bool
	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, 64)
		n, _ := io.ReadAtLeast(s, buf, len("GET / HTTP/1.1\r\n\r\n"))
		got <- buf[:n]
		time.Sleep(30 * time.Millisecond)
		answered.Store(true)
		_, _ = s.Write([]byte("answer"))
	}()
	_, _ = u.BW.WriteString("GET / HTTP/1.1\r\n\r\n")
	if err := u.FlushAwait(); err != nil {
		t.Fatal(err)
	}
	if !answered.Load() {
		t.Fatal("FlushAwait returned before the server answered")
	}
	if b := <-got; string(b) != "GET / HTTP/1.1\r\n\r\n" {
		t.Fatalf("server got %q", b)
	}
	line := make([]byte, 6)
	if _, err := io.ReadFull(u.BR, line); err != nil || string(line) != "answer" {
		t.Fatalf("read %q, %v", line, err)
	}
	if u.TX != int64(len("GET / HTTP/1.1\r\n\r\n")) {
		t.Fatalf("TX = %d", u.TX)
	}
}

// TestFlushAwaitDeadline: with no answer, the wait ends at the read deadline, the write
// counts as done, and the read that follows reports the timeout.
func TestFlushAwaitDeadline(t *testing.T) {
	u, s := awaitPair(t)
	go func() { _, _ = io.Copy(io.Discard, s) }()
	u.Timer.SetHard(time.Now().Add(100 * time.Millisecond))
	_, _ = u.BW.WriteString("GET / HTTP/1.1\r\n\r\n")
	if err := u.FlushAwait(); err != nil {
		t.Fatalf("FlushAwait: %v", err)
	}
	if _, err := u.BR.ReadByte(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after the deadline: %v", err)
	}
}

// TestFlushAwaitServerClosed: a server that closed the connection (a stale keep-alive)
// wakes the wait, and the read sees the end of the connection.
func TestFlushAwaitServerClosed(t *testing.T) {
	u, s := awaitPair(t)
	s.Close()
	time.Sleep(10 * time.Millisecond) // the FIN reaches the client's socket
	_, _ = u.BW.WriteString("GET / HTTP/1.1\r\n\r\n")
	done := make(chan error, 1)
	go func() { done <- u.FlushAwait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("FlushAwait did not return on a closed connection")
	}
	if _, err := u.BR.ReadByte(); err == nil {
		t.Fatal("read succeeded on a connection the server closed")
	}
}

// TestFlushAwaitLargeWrite: a request larger than the socket buffers takes the usual
// blocking write for what the non-blocking one left, and every byte arrives in order.
func TestFlushAwaitLargeWrite(t *testing.T) {
	u, s := awaitPair(t)
	_ = u.NetConn.(*net.TCPConn).SetWriteBuffer(4096)
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, len(payload))
		time.Sleep(20 * time.Millisecond) // let the client's buffer fill first
		_, _ = io.ReadFull(s, buf)
		got <- buf
		_, _ = s.Write([]byte("ok"))
	}()
	u.BW = bufio.NewWriterSize(u, len(payload))
	_, _ = u.BW.Write(payload)
	if err := u.FlushAwait(); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, payload) {
		t.Fatal("the server got other bytes than were written")
	}
	if u.TX != int64(len(payload)) {
		t.Fatalf("TX = %d, want %d", u.TX, len(payload))
	}
}
