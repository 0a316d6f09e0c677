package listen

import (
	"io"
	"net"
	"testing"
	"time"
)

// TestConnWrittenCounts: Written counts the bytes that went to the peer, which the
// HTTP/1.1 front end compares to tell whether any of a failed response reached the client.
func TestConnWrittenCounts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int, 1)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer s.Close()
		_ = s.SetDeadline(time.Now().Add(10 * time.Second))
		b, _ := io.ReadAll(s)
		got <- len(b)
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := &Conn{Conn: nc}
	for _, s := range []string{"HTTP/1.1 200 OK\r\n", "Content-Length: 3\r\n\r\n", "abc"} {
		if _, err := io.WriteString(c, s); err != nil {
			t.Fatal(err)
		}
	}
	if c.Written != 41 {
		t.Errorf("Written = %d, want 41", c.Written)
	}
	_ = nc.Close()
	if n := <-got; n != int(c.Written) {
		t.Errorf("the peer read %d bytes, Written says %d", n, c.Written)
	}
}
