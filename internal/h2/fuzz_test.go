package h2

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// fuzzHandler reads the request body and answers a small response; a few paths take
// the other ways out of a handler (flushes, trailers, a body larger than the default
// window, a panic the server recovers).
func fuzzHandler(w http.ResponseWriter, r *http.Request) {
	n, _ := io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
	w.Header().Set("X-Len", strconv.FormatInt(n, 10))
	switch r.URL.Path {
	case "/flush":
		_, _ = io.WriteString(w, "a")
		w.(http.Flusher).Flush()
		_, _ = io.WriteString(w, "b")
	case "/trailer":
		w.Header().Set("Trailer", "X-T")
		_, _ = io.WriteString(w, "ok")
		w.Header().Set("X-T", "v")
	case "/big":
		_, _ = w.Write(make([]byte, 100<<10))
	case "/panic":
		panic("fuzz handler panic")
	default:
		_, _ = io.WriteString(w, "ok")
	}
}

// fuzzSeq builds a seed: the frames fn writes with a Framer (hb encodes a header block
// with the connection's one HPACK encoder, as a client would).
func fuzzSeq(fn func(fr *http2.Framer, hb func(fields ...string) []byte)) []byte {
	var out, hbuf bytes.Buffer
	fr := http2.NewFramer(&out, nil)
	enc := hpack.NewEncoder(&hbuf)
	hb := func(fields ...string) []byte {
		hbuf.Reset()
		for i := 0; i+1 < len(fields); i += 2 {
			_ = enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		return append([]byte(nil), hbuf.Bytes()...)
	}
	fn(fr, hb)
	return out.Bytes()
}

func req(method, path string, extra ...string) []string {
	return append([]string{":method", method, ":scheme", "http", ":authority", "fuzz", ":path", path}, extra...)
}

// fuzzSeeds are valid (and a few deliberately invalid) frame sequences.
func fuzzSeeds() [][]byte {
	hdr := func(fr *http2.Framer, id uint32, block []byte, end bool) {
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: end, EndHeaders: true})
	}
	return [][]byte{
		// GET, no body.
		fuzzSeq(func(fr *http2.Framer, hb func(...string) []byte) {
			hdr(fr, 1, hb(req("GET", "/")...), true)
		}),
		// POST: HEADERS + DATA, with content-length.
		fuzzSeq(func(fr *http2.Framer, hb func(...string) []byte) {
			hdr(fr, 1, hb(req("POST", "/", "content-length", "5")...), false)
			_ = fr.WriteData(1, true, []byte("hello"))
		}),
		// A header block split over CONTINUATION frames, then a body in two DATA frames.
		fuzzSeq(func(fr *http2.Framer, hb func(...string) []byte) {
			b := hb(req("POST", "/flush", "x-a", "1", "x-b", "2")...)
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:3]})
			_ = fr.WriteContinuation(1, false, b[3:6])
			_ = fr.WriteContinuation(1, true, b[6:])
			_ = fr.WriteData(1, false, []byte("abc"))
			_ = fr.WriteData(1, true, []byte("def"))
		}),
		// Control frames around a request: PING, SETTINGS (and an ACK of the server's),
		// WINDOW_UPDATE on the connection and the stream.
		fuzzSeq(func(fr *http2.Framer, hb func(...string) []byte) {
			_ = fr.WriteSettingsAck()
			_ = fr.WritePing(false, [8]byte{1, 2, 3, 4, 5, 6, 7, 8})
			_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20},
				http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 15},
				http2.Setting{ID: http2.SettingHeaderTableSize, Val: 100})
			_ = fr.WriteWindowUpdate(0, 1<<20)
			hdr(fr, 1, hb(req("GET", "/big")...), true)
			_ = fr.WriteWindowUpdate(1, 1<<16)
			_ = fr.WritePing(true, [8]byte{})
		}),
		// A zero stream window: the response waits for WINDOW_UPDATE.
		fuzzSeq(func(fr *http2.Framer, hb func(...string) []byte) {
			_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
			hdr(fr, 1, hb(req("GET", "/big")...), true)
			_ = fr.WriteWindowUpdate(1, 10)
			_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100})
		}),
		// RST_STREAM of an open request, and of a finished one.
		fuzzSeq(func(fr *http2.Framer, hb func(...string) []byte) {
			hdr(fr, 1, hb(req("POST", "/")...), false)
			_ = fr.WriteRSTStream(1, http2.ErrCodeCancel)
			hdr(fr, 3, hb(req("GET", "/")...), true)
			_ = fr.WriteRSTStream(3, http2.ErrCodeNo)
			_ = fr.WriteData(1, true, []byte("late"))
		}),
		// PRIORITY frames and a HEADERS with priority.
		fuzzSeq(func(fr *http2.Framer, hb func(...string) []byte) {
			_ = fr.WritePriority(1, http2.PriorityParam{StreamDep: 0, Weight: 15})
			_ = fr.WritePriority(5, http2.PriorityParam{StreamDep: 3, Exclusive: true, Weight: 200})
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb(req("GET", "/")...), EndStream: true, EndHeaders: true,
				Priority: http2.PriorityParam{StreamDep: 0, Weight: 3}})
			_ = fr.WritePriority(1, http2.PriorityParam{StreamDep: 1, Weight: 1}) // depends on itself
		}),
		// The client's GOAWAY after a request.
		fuzzSeq(func(fr *http2.Framer, hb func(...string) []byte) {
			hdr(fr, 1, hb(req("GET", "/")...), true)
			_ = fr.WriteGoAway(0, http2.ErrCodeNo, []byte("bye"))
			_ = fr.WritePing(false, [8]byte{9})
		}),
		// Padding on HEADERS and DATA.
		fuzzSeq(func(fr *http2.Framer, hb func(...string) []byte) {
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb(req("POST", "/")...), EndHeaders: true, PadLength: 7})
			_ = fr.WriteDataPadded(1, false, []byte("body"), make([]byte, 20))
			_ = fr.WriteDataPadded(1, true, nil, make([]byte, 3))
		}),
		// Two interleaved streams, one ending with trailers.
		fuzzSeq(func(fr *http2.Framer, hb func(...string) []byte) {
			hdr(fr, 1, hb(req("POST", "/trailer", "te", "trailers", "trailer", "x-sum")...), false)
			hdr(fr, 3, hb(req("POST", "/")...), false)
			_ = fr.WriteData(1, false, []byte("one"))
			_ = fr.WriteData(3, true, []byte("three"))
			hdr(fr, 1, hb("x-sum", "42"), true)
		}),
		// A handler that panics, then another request on the connection.
		fuzzSeq(func(fr *http2.Framer, hb func(...string) []byte) {
			hdr(fr, 1, hb(req("GET", "/panic")...), true)
			hdr(fr, 3, hb(req("GET", "/")...), true)
		}),
		// An unknown frame type (ignored), then a request.
		fuzzSeq(func(fr *http2.Framer, hb func(...string) []byte) {
			_ = fr.WriteRawFrame(0x42, 0x1, 1, []byte("ext"))
			hdr(fr, 1, hb(req("GET", "/")...), true)
		}),
		// Malformed: content-length mismatch, a DATA on a closed stream, an even stream id.
		fuzzSeq(func(fr *http2.Framer, hb func(...string) []byte) {
			hdr(fr, 1, hb(req("POST", "/", "content-length", "2")...), false)
			_ = fr.WriteData(1, true, []byte("toolong"))
			_ = fr.WriteData(1, true, []byte("x"))
			hdr(fr, 2, hb(req("GET", "/")...), true)
		}),
	}
}

// FuzzServerFrames writes the fuzzer's bytes, after the client preface and an empty
// SETTINGS, to an h2.Server over net.Pipe, then closes the client side. It proves, for
// any input: the server does not panic (a panic in its frame reader, unlike one in a
// handler, would crash the process), ServeConn returns within a bound once the client
// has gone, and no goroutine of the connection outlives it.
func FuzzServerFrames(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		srv := &Server{Handler: http.HandlerFunc(fuzzHandler), Limits: Limits{WriteTimeout: 2 * time.Second}}
		cli, sc := net.Pipe()
		served := make(chan struct{})
		go func() {
			defer close(served)
			srv.ServeConn(context.Background(), sc, nil, ConnInfo{RemoteAddr: "fuzz"})
		}()
		// The client side reads what the server writes, and reports the acknowledgement
		// of the PING sent after the input: by then the server's reader has handled
		// every frame of the input (its handlers may still be running).
		drained, pong := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(drained)
			fr := http2.NewFramer(nil, cli)
			fr.SetMaxReadFrameSize(1<<24 - 1)
			for {
				f, err := fr.ReadFrame()
				if err != nil {
					_, _ = io.Copy(io.Discard, cli)
					return
				}
				if p, ok := f.(*http2.PingFrame); ok && p.IsAck() && p.Data == fuzzPing {
					close(pong)
				}
			}
		}()
		_ = cli.SetWriteDeadline(time.Now().Add(2 * time.Second))
		var start, end bytes.Buffer
		start.WriteString(http2.ClientPreface)
		_ = http2.NewFramer(&start, nil).WriteSettings()
		_ = http2.NewFramer(&end, nil).WritePing(false, fuzzPing)
		if _, err := cli.Write(start.Bytes()); err == nil {
			// The server may close first: its error is the point.
			if _, err := cli.Write(data); err == nil && wholeFrames(data) {
				// (An input that ends inside a frame would swallow the PING.)
				if _, err := cli.Write(end.Bytes()); err == nil {
					select {
					case <-pong:
					case <-served:
					case <-time.After(500 * time.Millisecond):
					}
				}
			}
		}
		_ = cli.Close()
		select {
		case <-served:
		case <-time.After(5 * time.Second):
			t.Fatalf("ServeConn still running 5s after the client closed:\n%s", stacks())
		}
		<-drained
		if n := srv.Conns(); n != 0 {
			t.Fatalf("%d connections left after ServeConn returned", n)
		}
		_ = srv.Close() // stops the parked workers
		deadline := time.Now().Add(3 * time.Second)
		for left := h2Goroutines(); len(left) > 0; left = h2Goroutines() {
			if time.Now().After(deadline) {
				t.Fatalf("%d goroutines of the connection left:\n%s", len(left), strings.Join(left, "\n\n"))
			}
			time.Sleep(time.Millisecond)
		}
	})
}

// wholeFrames reports whether b is a sequence of complete frames (by their length
// fields), so that a frame written after it is read as a frame of its own.
func wholeFrames(b []byte) bool {
	for len(b) > 0 {
		if len(b) < 9 {
			return false
		}
		n := 9 + (int(b[0])<<16 | int(b[1])<<8 | int(b[2]))
		if len(b) < n {
			return false
		}
		b = b[n:]
	}
	return true
}

// fuzzPing is the payload of the PING that follows the input.
var fuzzPing = [8]byte{'f', 'u', 'z', 'z', 'p', 'i', 'n', 'g'}

// h2Goroutines returns the stacks of the goroutines running this package's code
// (connection readers, flushers, workers, handlers), the caller's excepted. The leak
// check counts them rather than runtime.NumGoroutine, whose count is not consistent
// while goroutines start and end (it read 1 with five running).
func h2Goroutines() []string {
	var out []string
	for _, g := range strings.Split(string(stacks()), "\n\n") {
		if strings.Contains(g, "meshd/internal/h2.") && !strings.Contains(g, "internal/h2.FuzzServerFrames") &&
			!strings.Contains(g, "internal/h2.FuzzClientFrames") &&
			!strings.Contains(g, "internal/h2.h2Goroutines") {
			out = append(out, g)
		}
	}
	return out
}

func stacks() []byte {
	buf := make([]byte, 1<<20)
	return buf[:runtime.Stack(buf, true)]
}
