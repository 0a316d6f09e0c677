package h2

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// raw is a hand-driven HTTP/2 peer for tests: frames written and read one by one.
type raw struct {
	t    *testing.T
	c    net.Conn
	fr   *http2.Framer
	enc  *hpack.Encoder
	hbuf bytes.Buffer
}

// rawConn opens a client connection to a server: preface and empty SETTINGS sent.
func rawConn(t *testing.T, addr string) *raw {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := &raw{t: t, c: c, fr: http2.NewFramer(c, bufio.NewReader(c))}
	r.enc = hpack.NewEncoder(&r.hbuf)
	r.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	if err := r.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *raw) block(fields ...string) []byte {
	r.hbuf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		_ = r.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return append([]byte(nil), r.hbuf.Bytes()...)
}

func (r *raw) writeHeaders(id uint32, end bool, method, path string, extra ...string) {
	r.t.Helper()
	f := append([]string{":method", method, ":scheme", "http", ":authority", "x", ":path", path}, extra...)
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.block(f...), EndStream: end, EndHeaders: true}); err != nil {
		r.t.Fatal(err)
	}
}

// next reads frames until one satisfies ok (settings and pings are answered).
func (r *raw) next(ok func(http2.Frame) bool) http2.Frame {
	r.t.Helper()
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			r.t.Fatalf("read frame: %v", err)
		}
		if sf, is := f.(*http2.SettingsFrame); is && !sf.IsAck() {
			_ = r.fr.WriteSettingsAck()
		}
		if ok(f) {
			return f
		}
	}
}

func (r *raw) waitReset(id uint32) string {
	f := r.next(func(f http2.Frame) bool {
		rs, ok := f.(*http2.RSTStreamFrame)
		return ok && rs.StreamID == id
	})
	return f.(*http2.RSTStreamFrame).ErrCode.String()
}

func (r *raw) waitGoAway() *http2.GoAwayFrame {
	return r.next(func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok }).(*http2.GoAwayFrame)
}

// rawServer accepts one connection and hands a server-side raw peer to fn.
func rawServer(t *testing.T, fn func(r *raw)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				pre := make([]byte, len(http2.ClientPreface))
				if _, err := io.ReadFull(br, pre); err != nil {
					return
				}
				r := &raw{t: t, c: c, fr: http2.NewFramer(c, br)}
				r.enc = hpack.NewEncoder(&r.hbuf)
				r.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
				_ = r.fr.WriteSettings()
				fn(r)
			}()
		}
	}()
	return ln.Addr().String()
}

// The upstream's REFUSED_STREAM and GOAWAY (stream above its last id) both come back
// as ErrUnprocessed, at once: the transport does not retry by itself.
func TestTransportUnprocessed(t *testing.T) {
	cases := map[string]func(r *raw, id uint32){
		"refused": func(r *raw, id uint32) { _ = r.fr.WriteRSTStream(id, http2.ErrCodeRefusedStream) },
		"goaway":  func(r *raw, id uint32) { _ = r.fr.WriteGoAway(0, http2.ErrCodeNo, nil) },
	}
	for name, answer := range cases {
		t.Run(name, func(t *testing.T) {
			addr := rawServer(t, func(r *raw) {
				f := r.next(func(f http2.Frame) bool { _, ok := f.(*http2.MetaHeadersFrame); return ok })
				answer(r, f.Header().StreamID)
				time.Sleep(100 * time.Millisecond)
			})
			tr := &Transport{Dial: dialer()}
			defer tr.Close()
			start := time.Now()
			_, err := (&http.Client{Transport: tr}).Get("http://" + addr + "/")
			if !errors.Is(err, ErrUnprocessed) {
				t.Fatalf("error %v, want ErrUnprocessed", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("took %v: retried internally?", d)
			}
		})
	}
}

// A client that resets most of its streams before the answer loses the connection
// (rapid reset), counted.
func TestRapidResetClosesConnection(t *testing.T) {
	s, addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}), Limits{RapidResetStreams: 20})
	r := rawConn(t, addr)
	for i := uint32(0); i < 20; i++ {
		id := 1 + 2*i
		r.writeHeaders(id, true, "GET", "/")
		_ = r.fr.WriteRSTStream(id, http2.ErrCodeCancel)
	}
	ga := r.waitGoAway()
	if ga.ErrCode != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("GOAWAY %v, want ENHANCE_YOUR_CALM", ga.ErrCode)
	}
	if n := s.Counters.Flood(FloodRapidReset); n != 1 {
		t.Fatalf("rapid_reset counter %d", n)
	}
}

// Each flood defence closes the connection with GOAWAY ENHANCE_YOUR_CALM and counts it.
func TestFloodDefences(t *testing.T) {
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now } // frozen: the bucket never refills
	cases := []struct {
		name  string
		flood Flood
		send  func(r *raw)
	}{
		{"ping", FloodPing, func(r *raw) {
			for range 20 {
				_ = r.fr.WritePing(false, [8]byte{})
			}
		}},
		{"settings", FloodSettings, func(r *raw) {
			for range 20 {
				_ = r.fr.WriteSettings()
			}
		}},
		{"empty data", FloodEmptyFrames, func(r *raw) {
			r.writeHeaders(1, false, "POST", "/")
			for range 5 {
				_ = r.fr.WriteData(1, false, nil)
			}
		}},
		{"window update", FloodWindowUpdate, func(r *raw) {
			for range 50 {
				_ = r.fr.WriteWindowUpdate(0, 1)
			}
		}},
		{"priority", FloodPriority, func(r *raw) {
			for range 50 {
				_ = r.fr.WritePriority(3, http2.PriorityParam{StreamDep: 0, Weight: 1})
			}
		}},
		{"continuation", FloodContinuation, func(r *raw) {
			blk := r.block(":method", "GET", ":scheme", "http", ":authority", "x", ":path", "/")
			_ = r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk[:1], EndStream: true})
			for i := range 10 {
				_ = r.fr.WriteContinuation(1, false, blk[1+i%(len(blk)-1):2+i%(len(blk)-1)])
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}),
				Limits{ControlBurst: 10, PriorityPerStream: 10, MaxContinuations: 4, Now: clock})
			r := rawConn(t, addr)
			tc.send(r)
			ga := r.waitGoAway()
			if ga.ErrCode != http2.ErrCodeEnhanceYourCalm {
				t.Fatalf("GOAWAY %v, want ENHANCE_YOUR_CALM", ga.ErrCode)
			}
			if n := s.Counters.Flood(tc.flood); n != 1 {
				t.Fatalf("%s counter %d", tc.flood, n)
			}
		})
	}
}

// Shutdown sends GOAWAY with the last stream taken, lets it finish, then closes.
func TestShutdownGoAway(t *testing.T) {
	release := make(chan struct{})
	s, addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		_, _ = w.Write([]byte("done"))
	}), Limits{})
	r := rawConn(t, addr)
	r.writeHeaders(1, true, "GET", "/")
	time.Sleep(50 * time.Millisecond)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- s.Shutdown(ctx)
	}()
	ga := r.waitGoAway()
	if ga.LastStreamID != 1 || ga.ErrCode != http2.ErrCodeNo {
		t.Fatalf("GOAWAY last %d code %v", ga.LastStreamID, ga.ErrCode)
	}
	close(release)
	r.next(func(f http2.Frame) bool { d, ok := f.(*http2.DataFrame); return ok && d.StreamEnded() })
	if err := <-done; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

// A client that stops reading a response loses the stream after the write timeout
// (RST_STREAM CANCEL) and the handler's Write fails, instead of waiting for ever.
func TestStalledReaderStreamReset(t *testing.T) {
	wrote := make(chan error, 1)
	_, addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 32<<10)
		for {
			if _, err := w.Write(chunk); err != nil {
				wrote <- err
				return
			}
			w.(http.Flusher).Flush()
		}
	}), Limits{WriteTimeout: 300 * time.Millisecond})
	r := rawConn(t, addr)
	r.writeHeaders(1, true, "GET", "/")
	// Never send WINDOW_UPDATE: the 64 KiB default window fills and stays closed.
	if code := r.waitReset(1); code != "CANCEL" {
		t.Fatalf("stream reset with %s, want CANCEL", code)
	}
	select {
	case err := <-wrote:
		if !errors.Is(err, ErrStalled) {
			t.Fatalf("handler's Write error %v, want ErrStalled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler's Write is still blocked")
	}
}

// An upstream that goes silent (no FIN, no RST) is found out: after a request is given
// up, a PING goes out, and without an answer the connection closes, so the next request
// gets a new connection.
func TestTransportProbesSilentUpstream(t *testing.T) {
	var conns atomic.Int32
	addr := rawServer(t, func(r *raw) {
		n := conns.Add(1)
		for {
			f, err := r.fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					_ = r.fr.WriteSettingsAck()
				}
			case *http2.MetaHeadersFrame:
				if n > 1 {
					_ = r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: f.StreamID, BlockFragment: r.block(":status", "200"), EndStream: true, EndHeaders: true})
				}
				// The first connection answers nothing more, ever (PINGs included).
			}
		}
	})
	tr := &Transport{Dial: dialer()}
	defer tr.Close()
	c := &http.Client{Transport: tr}
	time.Sleep(1100 * time.Millisecond) // nothing read for probeSilence by the time the request is given up
	ctx, cancel := context.WithTimeout(context.Background(), 1200*time.Millisecond)
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/", nil)
	if _, err := c.Do(req); err == nil {
		t.Fatal("the silent upstream answered")
	}
	cancel()
	deadline := time.Now().Add(probeWait + 3*time.Second)
	for tr.Conns() > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if tr.Conns() != 0 {
		t.Fatal("the silent connection is still pooled")
	}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after the probe: %v %v", resp, err)
	}
	resp.Body.Close()
}

// Data meshd drops unread (a stream answered without reading its body, then reset)
// still goes back to the connection window: a later stream can send its body.
func TestDroppedDataReturnsConnectionWindow(t *testing.T) {
	_, addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ignore" {
			_, _ = w.Write([]byte("ignored"))
			return
		}
		n, _ := io.Copy(io.Discard, r.Body)
		_, _ = fmt.Fprint(w, n)
	}), Limits{})
	r := rawConn(t, addr)
	chunk := make([]byte, 16384)
	// Fill the 1 MiB connection window on 16 streams nobody reads, each within its
	// 64 KiB stream window; each is answered (and then reset with NO_ERROR).
	for i := range 16 {
		id := uint32(1 + 2*i)
		r.writeHeaders(id, false, "POST", "/ignore")
		for range 4 {
			if err := r.fr.WriteData(id, false, chunk[:16383]); err != nil {
				t.Fatal(err)
			}
		}
	}
	answered := 0
	r.next(func(f http2.Frame) bool {
		if d, ok := f.(*http2.DataFrame); ok && d.StreamEnded() {
			answered++
		}
		return answered == 16
	})
	// The second body needs the window back.
	r.writeHeaders(33, false, "POST", "/count")
	go func() {
		// Within the windows: the server's WINDOW_UPDATEs are not tracked here, so the
		// body is no larger than what a returned connection window allows.
		for i := range 3 {
			_ = r.fr.WriteData(33, i == 2, chunk)
		}
	}()
	f := r.next(func(f http2.Frame) bool { d, ok := f.(*http2.DataFrame); return ok && d.StreamID == 33 })
	if got := string(f.(*http2.DataFrame).Data()); got != fmt.Sprint(3*16384) {
		t.Fatalf("second stream counted %q bytes", got)
	}
}

// A stream the server took (at or below the last stream id of its GOAWAY) is answered
// even when the GOAWAY raced with its arrival: here the idle timeout fires as the
// request comes in. Before the fix the reader recorded the stream id, the idle GOAWAY
// then announced it as taken and closed the connection at once (no stream registered
// yet), and the request, which the client may not send again, was dropped unanswered.
func TestIdleGoAwayRaceKeepsTakenStream(t *testing.T) {
	const idle = 2 * time.Millisecond
	_, addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok"))
	}), Limits{IdleTimeout: idle})
	var served, refused, dropped int
	deadline := time.Now().Add(2 * time.Second)
	for i := 0; i < 5000 && time.Now().Before(deadline); i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		fr := http2.NewFramer(c, bufio.NewReader(c))
		var hbuf bytes.Buffer
		enc := hpack.NewEncoder(&hbuf)
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {":path", "/"}} {
			_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		_, _ = c.Write([]byte(http2.ClientPreface))
		_ = fr.WriteSettings()
		// Around the idle timeout: sometimes before it, sometimes after, sometimes on it.
		time.Sleep(idle/2 + time.Duration(i%20)*idle/20)
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hbuf.Bytes(), EndStream: true, EndHeaders: true})
		var last uint32
		goAway, answered := false, false
		for !answered {
			f, err := fr.ReadFrame()
			if err != nil {
				break
			}
			switch f := f.(type) {
			case *http2.GoAwayFrame:
				goAway, last = true, f.LastStreamID
			case *http2.HeadersFrame:
				answered = f.StreamID == 1
			}
		}
		c.Close()
		switch {
		case answered:
			served++
		case goAway && last < 1:
			refused++ // not taken: the client may send it again
		default:
			dropped++
			t.Errorf("attempt %d: stream 1 not answered, GOAWAY %v with last stream id %d", i, goAway, last)
		}
		if dropped > 3 {
			break
		}
	}
	t.Logf("%d answered, %d refused by an idle GOAWAY, %d dropped", served, refused, dropped)
}

// A connection that closes while the reader is setting up a new stream does not leave
// that stream's handler waiting for ever: before the fix the stream was registered
// after closeConn had failed the connection's streams (the client went away, so the
// flusher's write failed, while the reader still handled the buffered HEADERS), its
// handler blocked reading a body that could not come, and ServeConn never returned
// (FuzzServerFrames found it; ~1 in 40 to 1500 attempts here).
func TestCloseWhileOpeningStream(t *testing.T) {
	var in bytes.Buffer
	in.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&in, nil)
	_ = fr.WriteSettings()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", "x"}, {":path", "/"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true}) // body to follow
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(io.Discard, r.Body) })}
	defer srv.Close()
	deadline := time.Now().Add(time.Second)
	for i := 0; i < 10000 && time.Now().Before(deadline); i++ {
		cli, sc := net.Pipe()
		served := make(chan struct{})
		go func() {
			defer close(served)
			srv.ServeConn(context.Background(), sc, nil, ConnInfo{})
		}()
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			_, _ = io.Copy(io.Discard, cli)
		}()
		_, _ = cli.Write(in.Bytes())
		_ = cli.Close() // the server's next write fails: the connection closes
		select {
		case <-served:
		case <-time.After(2 * time.Second):
			t.Fatalf("attempt %d: ServeConn still running 2s after the client closed:\n%s", i, stacks())
		}
		<-drained
	}
}

// Shutdown's GOAWAY does not wait for room in the write queue: a connection whose
// client stopped reading (its queue full) would otherwise hold the GOAWAY, and the
// GOAWAY of every connection after it, for the write timeout.
func TestGoAwayDoesNotWaitForSlowReader(t *testing.T) {
	s, addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 1<<20)
		for range 256 {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	}), Limits{WriteTimeout: time.Minute})
	slow := rawConn(t, addr)
	if err := slow.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: maxWindow}); err != nil {
		t.Fatal(err)
	}
	if err := slow.fr.WriteWindowUpdate(0, maxWindow-initialWindow); err != nil {
		t.Fatal(err)
	}
	slow.writeHeaders(1, true, "GET", "/")
	slow.next(func(f http2.Frame) bool { _, ok := f.(*http2.MetaHeadersFrame); return ok })
	time.Sleep(300 * time.Millisecond) // the socket buffers and the write queue fill
	start := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_ = s.Shutdown(ctx) // the slow stream does not finish: ctx ends it
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown still running 5s after its context ended: held by the GOAWAY to a client that does not read")
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("Shutdown took %v with a 100ms context", el)
	}
}
