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

// clientSeeds are upstream answers to stream 1: valid ones (a response with a body and
// trailers, a trailers-only one, interim 103, window updates, a GOAWAY, a refusal) and
// malformed ones (DATA before the head, a pseudo-header in trailers).
func clientSeeds() [][]byte {
	hdr := func(fr *http2.Framer, block []byte, end bool) {
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block, EndStream: end, EndHeaders: true})
	}
	return [][]byte{
		fuzzSeq(func(fr *http2.Framer, hb func(...string) []byte) {
			hdr(fr, hb(":status", "200", "content-type", "text/plain"), false)
			_ = fr.WriteData(1, false, []byte("hello"))
			hdr(fr, hb("grpc-status", "0"), true)
		}),
		fuzzSeq(func(fr *http2.Framer, hb func(...string) []byte) {
			hdr(fr, hb(":status", "200", "grpc-status", "14"), true)
		}),
		fuzzSeq(func(fr *http2.Framer, hb func(...string) []byte) {
			hdr(fr, hb(":status", "103", "link", "</a>"), false)
			_ = fr.WriteWindowUpdate(0, 1000)
			_ = fr.WriteWindowUpdate(1, 1000)
			hdr(fr, hb(":status", "204"), true)
		}),
		fuzzSeq(func(fr *http2.Framer, hb func(...string) []byte) {
			_ = fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1})
			_ = fr.WritePing(false, [8]byte{1})
			_ = fr.WriteGoAway(0, http2.ErrCodeNo, []byte("bye"))
		}),
		fuzzSeq(func(fr *http2.Framer, hb func(...string) []byte) {
			_ = fr.WriteRSTStream(1, http2.ErrCodeRefusedStream)
		}),
		fuzzSeq(func(fr *http2.Framer, hb func(...string) []byte) {
			_ = fr.WriteData(1, false, []byte("early"))
			hdr(fr, hb(":status", "200", "content-length", "2"), false)
			_ = fr.WriteData(1, true, []byte("toolong"))
		}),
		fuzzSeq(func(fr *http2.Framer, hb func(...string) []byte) {
			hdr(fr, hb(":status", "200"), false)
			hdr(fr, hb(":status", "200"), true)
			_ = fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: hb(":method", "GET"), EndHeaders: true})
		}),
	}
}

// FuzzClientFrames answers a Transport's request with the fuzzer's bytes as the
// upstream (after an empty SETTINGS), then closes. For any input: RoundTrip and reading
// the body end within a bound (with a response or an error), nothing panics, and no
// goroutine of the transport is left once it is closed.
func FuzzClientFrames(f *testing.F) {
	for _, s := range clientSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cli, up := net.Pipe()
		upDone := make(chan struct{})
		go func() {
			defer close(upDone)
			defer up.Close()
			_ = up.SetDeadline(time.Now().Add(3 * time.Second))
			br := bufio.NewReader(up)
			pre := make([]byte, len(http2.ClientPreface))
			if _, err := io.ReadFull(br, pre); err != nil {
				return
			}
			// Drain what the client sends, so its writes never block the test.
			go func() { _, _ = io.Copy(io.Discard, br) }()
			_ = http2.NewFramer(up, nil).WriteSettings()
			_, _ = up.Write(data)
			time.Sleep(20 * time.Millisecond)
		}()
		tr := &Transport{
			Dial:   func(context.Context, string) (net.Conn, error) { return cli, nil },
			Limits: Limits{WriteTimeout: 2 * time.Second},
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		req, _ := http.NewRequestWithContext(ctx, "POST", "http://fuzz/", strings.NewReader("body"))
		finished := make(chan struct{})
		go func() {
			defer close(finished)
			resp, err := tr.RoundTrip(req)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
		}()
		select {
		case <-finished:
		case <-time.After(5 * time.Second):
			t.Fatalf("RoundTrip still running after 5s:\n%s", stacks())
		}
		cancel()
		tr.Close()
		_ = cli.Close()
		<-upDone
		deadline := time.Now().Add(3 * time.Second)
		for left := h2Goroutines(); len(left) > 0; left = h2Goroutines() {
			if time.Now().After(deadline) {
				t.Fatalf("%d goroutines of the transport left:\n%s", len(left), strings.Join(left, "\n\n"))
			}
			time.Sleep(time.Millisecond)
		}
	})
}
