package h2

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestClientInterimFlood: an upstream that answers with interim (1xx) heads without end
// gets its stream reset after maxInterim of them, rather than holding it until its
// deadline; a few interim heads, as real servers send, still lead to the response.
func TestClientInterimFlood(t *testing.T) {
	for _, tc := range []struct {
		name    string
		interim int
		ok      bool
	}{{"few", 3, true}, {"flood", 200, false}} {
		t.Run(tc.name, func(t *testing.T) {
			frames := fuzzSeq(func(fr *http2.Framer, hb func(...string) []byte) {
				for range tc.interim {
					_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb(":status", "103", "link", "</a>"), EndHeaders: true})
				}
				_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb(":status", "200", "content-length", "2"), EndHeaders: true})
				_ = fr.WriteData(1, true, []byte("ok"))
			})
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			upDone := make(chan struct{})
			go func() {
				defer close(upDone)
				up, err := ln.Accept()
				if err != nil {
					return
				}
				defer up.Close()
				_ = up.SetDeadline(time.Now().Add(5 * time.Second))
				br := bufio.NewReader(up)
				pre := make([]byte, len(http2.ClientPreface))
				if _, err := io.ReadFull(br, pre); err != nil {
					return
				}
				_ = http2.NewFramer(up, nil).WriteSettings()
				// Answer only once stream 1 is open: frames for a stream the client has
				// not opened yet would be a connection error.
				fr := http2.NewFramer(nil, br)
				for {
					f, err := fr.ReadFrame()
					if err != nil {
						return
					}
					if _, ok := f.(*http2.HeadersFrame); ok {
						break
					}
				}
				go func() { _, _ = io.Copy(io.Discard, br) }()
				_, _ = up.Write(frames)
				_, _ = io.Copy(io.Discard, up) // until the transport closes
			}()
			tr := &Transport{Dial: func(ctx context.Context, addr string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "tcp", ln.Addr().String())
			}}
			defer tr.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://up/", nil)
			resp, err := tr.RoundTrip(req)
			if tc.ok {
				if err != nil {
					t.Fatalf("RoundTrip: %v", err)
				}
				b, err := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || string(b) != "ok" {
					t.Fatalf("got %d %q %v, want 200 ok", resp.StatusCode, b, err)
				}
			} else {
				if err == nil {
					_ = resp.Body.Close()
					t.Fatalf("got %d, want the stream reset after %d interim heads", resp.StatusCode, maxInterim)
				}
				if ctx.Err() != nil || !strings.Contains(err.Error(), "interim") {
					t.Fatalf("got %v, want the interim bound's reset (not the deadline)", err)
				}
			}
			tr.Close()
			_ = ln.Close()
			<-upDone
		})
	}
}
