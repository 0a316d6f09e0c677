package bench

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// startFloor runs the floor relay in front of a raw upstream whose connection the test
// drives: it returns a client connection to the relay and the upstream's side.
func startFloor(t *testing.T) (client net.Conn, up net.Conn) {
	t.Helper()
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer upLn.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeFloor(ctx, ln, upLn.Addr().String()) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ServeFloor: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("ServeFloor did not end")
		}
	})
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	_ = upLn.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	up, err = upLn.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	return client, up
}

// TestFloorRelaysKeepAlive: requests with and without a body and their responses pass
// byte for byte on one kept connection, HEAD's response carries no body, and a chunked
// message ends both connections with nothing of it sent on (the floor frames by
// Content-Length only).
func TestFloorRelaysKeepAlive(t *testing.T) {
	client, up := startFloor(t)
	_ = client.SetDeadline(time.Now().Add(5 * time.Second))
	_ = up.SetDeadline(time.Now().Add(5 * time.Second))
	cr, ur := bufio.NewReader(client), bufio.NewReader(up)
	exchange := func(req, wantUp, resp, wantClient string) {
		t.Helper()
		if _, err := io.WriteString(client, req); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(wantUp))
		if _, err := io.ReadFull(ur, got); err != nil || string(got) != wantUp {
			t.Fatalf("upstream got %q (%v), want %q", got, err, wantUp)
		}
		if _, err := io.WriteString(up, resp); err != nil {
			t.Fatal(err)
		}
		got = make([]byte, len(wantClient))
		if _, err := io.ReadFull(cr, got); err != nil || string(got) != wantClient {
			t.Fatalf("client got %q (%v), want %q", got, err, wantClient)
		}
	}
	get := "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
	ok := "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
	exchange(get, get, ok, ok)
	post := "POST /b HTTP/1.1\r\nHost: x\r\ncontent-length: 3\r\n\r\nabc"
	exchange(post, post, ok, ok)
	head := "HEAD /c HTTP/1.1\r\nHost: x\r\n\r\n"
	headResp := "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
	exchange(head, head, headResp, headResp)
	exchange(get, get, ok, ok) // the HEAD response's length did not eat this one

	chunked := "POST /d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
	if _, err := io.WriteString(client, chunked); err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(cr); len(b) != 0 {
		t.Fatalf("client got %q for a chunked request, want the connection closed", b)
	}
	if b, _ := io.ReadAll(ur); len(b) != 0 {
		t.Fatalf("upstream got %q, want nothing of a message the floor cannot frame, then the close", b)
	}
}

// TestFloorScenarioHTTP1Only: over HTTP/2 the floor is skipped, saying why.
func TestFloorScenarioHTTP1Only(t *testing.T) {
	_, err := startScenario(context.Background(), ScenarioFloor, &env{proto: H2C})
	if se, ok := err.(*SkipError); !ok || !strings.Contains(se.Reason, "HTTP/1.1 only") {
		t.Fatalf("floor over h2c: %v, want a SkipError naming HTTP/1.1", err)
	}
}
