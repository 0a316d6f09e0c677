package proxy_test

// HTTP/2 connection lifecycle through meshd: upstream GOAWAY and REFUSED_STREAM
// (requests the upstream did not process are sent again, on another connection or
// endpoint), downstream GOAWAY on shutdown, on a removed listener and on idleness, and a
// gRPC deadline cut by the route's timeout. Upstreams and clients that must show frames
// are driven by hand with x/net/http2's Framer.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// h2Peer is one end of an HTTP/2 connection driven frame by frame. Its methods return
// errors instead of failing the test, so upstream goroutines can use them too.
type h2Peer struct {
	c    net.Conn
	bw   *bufio.Writer
	fr   *http2.Framer
	enc  *hpack.Encoder
	hbuf bytes.Buffer
}

func newH2Peer(c net.Conn) *h2Peer {
	p := &h2Peer{c: c, bw: bufio.NewWriter(c)}
	p.fr = http2.NewFramer(p.bw, bufio.NewReader(c))
	p.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	p.fr.SetMaxReadFrameSize(1 << 20)
	p.enc = hpack.NewEncoder(&p.hbuf)
	return p
}

// headers queues a HEADERS frame with fields (name, value, ...); flush sends it.
func (p *h2Peer) headers(id uint32, end bool, fields ...string) error {
	p.hbuf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		if err := p.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]}); err != nil {
			return err
		}
	}
	return p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: p.hbuf.Bytes(), EndStream: end, EndHeaders: true})
}

func (p *h2Peer) flush() error { return p.bw.Flush() }

// read returns the next frame, acknowledging SETTINGS and PING on the way. A DATA
// frame's payload is only valid until the next read.
func (p *h2Peer) read() (http2.Frame, error) {
	f, err := p.fr.ReadFrame()
	if err != nil {
		return nil, err
	}
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if !f.IsAck() {
			if err := p.fr.WriteSettingsAck(); err != nil {
				return nil, err
			}
			return f, p.flush()
		}
	case *http2.PingFrame:
		if !f.IsAck() {
			if err := p.fr.WritePing(true, f.Data); err != nil {
				return nil, err
			}
			return f, p.flush()
		}
	}
	return f, nil
}

// respond queues a complete response: HEADERS (:status 200) and one DATA frame with body.
func (p *h2Peer) respond(id uint32, body string) error {
	if err := p.headers(id, false, ":status", "200", "content-type", "text/plain", "content-length", strconv.Itoa(len(body))); err != nil {
		return err
	}
	return p.fr.WriteData(id, true, []byte(body))
}

// startRawH2 is an h2c upstream whose connections serve runs by hand (conn counts them
// from 1), after the preface was read and the upstream's SETTINGS sent.
func startRawH2(t *testing.T, serve func(p *h2Peer, conn int)) *testutil.Upstream {
	t.Helper()
	var n atomic.Int64
	return testutil.StartRaw(t, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		pre := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(c, pre); err != nil || string(pre) != http2.ClientPreface {
			return
		}
		p := newH2Peer(c)
		if p.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 100}) != nil || p.flush() != nil {
			return
		}
		serve(p, int(n.Add(1)))
	})
}

// dialH2 opens an h2c connection to addr as a hand-driven client: preface, SETTINGS
// with a 16 MiB stream window, and as much connection window, so a response never
// waits for the test's window updates.
func dialH2(t *testing.T, addr string) *h2Peer { t.Helper(); return dialH2Window(t, addr, 1<<24) }

// dialH2Window is dialH2 with the given stream and connection windows (one SETTINGS,
// one WINDOW_UPDATE: meshd takes a second connection WINDOW_UPDATE before any stream
// for a flood, as Envoy's 1 + 2×(streams + 10×DATA frames sent) limit does).
func dialH2Window(t *testing.T, addr string, win uint32) *h2Peer {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	p := newH2Peer(c)
	if _, err := p.bw.WriteString(http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := p.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: win}); err != nil {
		t.Fatal(err)
	}
	if err := p.fr.WriteWindowUpdate(0, win-65535); err != nil {
		t.Fatal(err)
	}
	if err := p.flush(); err != nil {
		t.Fatal(err)
	}
	return p
}

// get sends a GET for path on stream id (a client peer).
func (p *h2Peer) get(t *testing.T, id uint32, authority, path string) {
	t.Helper()
	if err := p.headers(id, true, ":method", "GET", ":scheme", "http", ":authority", authority, ":path", path); err != nil {
		t.Fatal(err)
	}
	if err := p.flush(); err != nil {
		t.Fatal(err)
	}
}

// h2Response is what a hand-driven client read of one stream.
type h2Response struct {
	status string
	body   []byte
	ended  bool // END_STREAM arrived
}

// lcMesh is node "app" calling svc.t.local, provided by node "svc" (an http2 listener)
// at the given endpoints; route, when set, is the http2Route spec of a virtual router
// in between (else the service is provided by the node itself, with the default
// retry policy).
func lcMesh(ports []int, route string) string {
	y := resMesh(ports, "", "")
	if route != "" {
		y = resMesh(ports, "", "PLACEHOLDER")
		y = strings.Replace(y, "spec: {httpRoute: PLACEHOLDER}", "spec: {http2Route: "+route+"}", 1)
	}
	return strings.ReplaceAll(y, "port: 8080, protocol: http}", "port: 8080, protocol: http2}")
}

// getAll sends n GETs with c from workers goroutines and returns the failures (a
// transport error or a status other than 200) and the bodies of the successes.
func getAll(c *http.Client, url string, n, workers int) (failures []string, bodies []string) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range workers {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				resp, err := c.Get(fmt.Sprintf("%s?i=%d", url, i))
				var msg, body string
				if err != nil {
					msg = fmt.Sprintf("request %d: %v", i, err)
				} else {
					b, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					body = string(b)
					if err != nil || resp.StatusCode != 200 {
						msg = fmt.Sprintf("request %d: %d %s (%v): %s", i, resp.StatusCode, resp.Header.Get(proxy.HeaderError), err, b)
					}
				}
				mu.Lock()
				if msg != "" {
					failures = append(failures, msg)
				} else {
					bodies = append(bodies, body)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return failures, bodies
}

// TestUpstreamGoAwayMovesStreams proves that an upstream ending each connection with
// GOAWAY after answering goAwayAfter streams (as nginx's keepalive_requests does) costs
// no request: meshd opens new streams on a fresh connection, and a stream that crossed
// the GOAWAY on the wire (above its last stream id, not processed) is sent again, under
// the default retry policy. Sequential and concurrent requests all get 200, and the
// upstream sees several connections.
func TestUpstreamGoAwayMovesStreams(t *testing.T) {
	const goAwayAfter = 10
	var ignored atomic.Int64 // streams that arrived after a GOAWAY
	var goAways atomic.Int64
	var answeredMu sync.Mutex
	answeredPaths := map[string]int{} // request path (unique per request) -> times answered
	up := startRawH2(t, func(p *h2Peer, conn int) {
		answered, gone := 0, false
		for {
			f, err := p.read()
			if err != nil {
				return // meshd closed the connection after the GOAWAY
			}
			h, ok := f.(*http2.MetaHeadersFrame)
			if !ok {
				continue
			}
			if gone {
				ignored.Add(1) // above the last stream id: not processed
				continue
			}
			id := h.StreamID
			answeredMu.Lock()
			answeredPaths[h.PseudoValue("path")]++
			answeredMu.Unlock()
			if p.respond(id, fmt.Sprintf("conn %d stream %d", conn, id)) != nil {
				return
			}
			if answered++; answered == goAwayAfter {
				// The answer and the GOAWAY leave together.
				if p.fr.WriteGoAway(id, http2.ErrCodeNo, nil) != nil {
					return
				}
				goAways.Add(1)
				gone = true
			}
			if p.flush() != nil {
				return
			}
		}
	})
	srv := testutil.StartMeshd(t, "app", lcMesh([]int{up.Port}, ""))
	for _, tc := range []struct {
		name     string
		client   *http.Client
		n, conc  int
		minConns int64
	}{
		{"sequential http1", testutil.HTTPClient(t, srv.EgressAddr()), 3*goAwayAfter + 5, 1, 4},
		{"concurrent h2c", testutil.H2CClient(t, srv.EgressAddr()), 10 * goAwayAfter, 6, 10},
		{"concurrent http1", testutil.HTTPClient(t, srv.EgressAddr()), 10 * goAwayAfter, 6, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := up.Accepted()
			answeredMu.Lock()
			clear(answeredPaths)
			answeredMu.Unlock()
			failures, bodies := getAll(tc.client, "http://svc.t.local/", tc.n, tc.conc)
			// A stream the upstream processed (at or below its GOAWAY's last stream id)
			// is never sent again: each request's path was answered once.
			answeredMu.Lock()
			for path, n := range answeredPaths {
				if n != 1 {
					t.Errorf("upstream processed %s %d times", path, n)
				}
			}
			answeredMu.Unlock()
			for _, f := range failures {
				t.Error(f)
			}
			conns := map[string]bool{}
			for _, b := range bodies {
				conns[strings.Fields(b)[1]] = true
			}
			if got := up.Accepted() - before; got < tc.minConns {
				t.Errorf("upstream accepted %d connections for %d requests, want at least %d (one per %d streams)", got, tc.n, tc.minConns, goAwayAfter)
			}
			t.Logf("%d requests over %d upstream connections; %d streams crossed a GOAWAY so far", tc.n, len(conns), ignored.Load())
		})
	}
	// One retry per stream above a GOAWAY. The peer counts the ones it read; a stream
	// meshd sent just before closing the connection can be lost to the peer unread (the
	// close resets a socket with unread input), so meshd may have retried up to the
	// concurrency more per GOAWAY than the peer counted, never fewer.
	const maxConc = 6
	if r, ig := readStats(t, srv).Clusters["svc"]["retries"], ignored.Load(); r < ig || r > ig+maxConc*goAways.Load() {
		t.Errorf("cluster retries = %d, want one per stream above a GOAWAY (%d counted by the peer, up to %d more unread after %d GOAWAYs)", r, ig, maxConc*goAways.Load(), goAways.Load())
	}
}

// refusingUpstream answers every request with RST_STREAM REFUSED_STREAM and counts them.
func refusingUpstream(t *testing.T, refused *atomic.Int64) *testutil.Upstream {
	return startRawH2(t, func(p *h2Peer, _ int) {
		for {
			f, err := p.read()
			if err != nil {
				return
			}
			if h, ok := f.(*http2.MetaHeadersFrame); ok {
				refused.Add(1)
				if p.fr.WriteRSTStream(h.StreamID, http2.ErrCodeRefusedStream) != nil || p.flush() != nil {
					return
				}
			}
			// DATA of a refused stream is dropped; its window is not returned, as the
			// few bytes of these requests never exhaust it.
		}
	})
}

// TestRefusedStreamRetriedElsewhere proves that a request an upstream refused
// (RST_STREAM REFUSED_STREAM: not processed, RFC 9113 §8.7) is sent to the other
// endpoint even when it is not idempotent (POST) and the route's retry policy names no
// event that covers it (only gateway-error): the client always gets 200, the refusing
// endpoint did see requests (so retries really happened), and the body reached the good
// endpoint intact. Without any retryPolicy the same holds (App Mesh's default policy
// retries refused streams twice); with maxRetries: 0 retries are off, and a refused
// request is answered 502 upstream_reset.
func TestRefusedStreamRetriedElsewhere(t *testing.T) {
	var refused atomic.Int64
	bad := refusingUpstream(t, &refused)
	var mu sync.Mutex
	var bodies []string
	good := testutil.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
		_, _ = io.WriteString(w, "good:"+string(b))
	}))
	routed := func(policy string) string {
		return lcMesh([]int{bad.Port, good.Port}, `{match: {prefix: /}, action: {weightedTargets: [{virtualNode: svc, weight: 1}]}, retryPolicy: `+policy+`}`)
	}
	const n = 20
	for _, tc := range []struct {
		name, yaml string
		retried    bool
	}{
		{"gateway-error policy", routed(`{maxRetries: 1, perRetryTimeout: {unit: s, value: 5}, httpRetryEvents: [gateway-error]}`), true},
		{"tcp-only policy", routed(`{maxRetries: 1, perRetryTimeout: {unit: s, value: 5}, tcpRetryEvents: [connection-error]}`), true},
		{"no retryPolicy (default)", lcMesh([]int{bad.Port, good.Port}, ""), true},
		{"maxRetries 0", routed(`{maxRetries: 0, perRetryTimeout: {unit: s, value: 5}, httpRetryEvents: [gateway-error]}`), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testutil.StartMeshd(t, "app", tc.yaml)
			refused.Store(0)
			mu.Lock()
			bodies = nil
			mu.Unlock()
			for _, c := range []struct {
				name   string
				client *http.Client
			}{{"h2c", testutil.H2CClient(t, srv.EgressAddr())}, {"http1", testutil.HTTPClient(t, srv.EgressAddr())}} {
				before := refused.Load()
				ok, failed := 0, 0
				for i := range n {
					body := fmt.Sprintf("payload-%s-%d-%s", c.name, i, strings.Repeat("x", 100))
					resp, err := c.client.Post("http://svc.t.local/submit", "text/plain", strings.NewReader(body))
					if err != nil {
						t.Fatalf("%s POST %d: %v", c.name, i, err)
					}
					got, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					switch {
					case resp.StatusCode == 200 && string(got) == "good:"+body:
						ok++
					case !tc.retried && resp.StatusCode == 502 && resp.Header.Get(proxy.HeaderError) == "upstream_reset":
						failed++
					default:
						t.Fatalf("%s POST %d: %d %s %q", c.name, i, resp.StatusCode, resp.Header.Get(proxy.HeaderError), got)
					}
				}
				hits := refused.Load() - before
				if hits == 0 {
					t.Fatalf("%s: the refusing endpoint was never picked in %d requests", c.name, n)
				}
				if tc.retried && ok != n {
					t.Fatalf("%s: %d of %d succeeded", c.name, ok, n)
				}
				if !tc.retried && int64(failed) != hits {
					t.Fatalf("%s: %d refused, %d answered 502: want every refused request failed, none retried", c.name, hits, failed)
				}
				t.Logf("%s: %d of %d requests refused first, %d answered 200", c.name, hits, n, ok)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, b := range bodies {
				if !strings.HasPrefix(b, "payload-") || !strings.HasSuffix(b, strings.Repeat("x", 100)) {
					t.Fatalf("the good endpoint received a damaged body %q", b)
				}
			}
			if want := 2*n - int(refused.Load()); !tc.retried && len(bodies) != want {
				t.Fatalf("the good endpoint received %d bodies, want %d", len(bodies), want)
			}
		})
	}
}

// TestStreamAboveGoAwayRetried proves that a stream above the last stream id of an
// upstream's GOAWAY is sent again: on its first connection the upstream takes two
// concurrent POSTs, answers GOAWAY with the first one's id as the last, and then answers
// the first; the second, which it never processed, is retried on a new connection and
// also gets 200 with its body intact.
func TestStreamAboveGoAwayRetried(t *testing.T) {
	var firstConnStreams atomic.Int64
	type stream struct {
		body  []byte
		ended bool
	}
	up := startRawH2(t, func(p *h2Peer, conn int) {
		streams := map[uint32]*stream{}
		var first uint32
		gone := false
		for {
			f, err := p.read()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.MetaHeadersFrame:
				if gone {
					continue // above the GOAWAY's last stream id: not processed
				}
				id := f.StreamID
				streams[id] = &stream{ended: f.StreamEnded()}
				if conn == 1 {
					firstConnStreams.Add(1)
					if first == 0 {
						first = id
						continue
					}
					// The second concurrent stream: GOAWAY keeps only the first.
					if p.fr.WriteGoAway(first, http2.ErrCodeNo, []byte("second stream not taken")) != nil || p.flush() != nil {
						return
					}
					gone = true
					delete(streams, id)
				}
			case *http2.DataFrame:
				if s := streams[f.StreamID]; s != nil {
					s.body = append(s.body, f.Data()...)
					s.ended = f.StreamEnded()
				}
			}
			if conn == 1 && !gone {
				continue // the first stream waits for the second
			}
			for id, s := range streams {
				if s.ended {
					delete(streams, id)
					if p.respond(id, fmt.Sprintf("conn %d: %s", conn, s.body)) != nil || p.flush() != nil {
						return
					}
				}
			}
		}
	})
	srv := testutil.StartMeshd(t, "app", lcMesh([]int{up.Port}, ""))
	client := testutil.H2CClient(t, srv.EgressAddr())
	post := func(body string) <-chan result {
		ch := make(chan result, 1)
		go func() {
			// Bounded well below the test's limit: a stream meshd failed to retry would
			// otherwise wait for the upstream, which never answers it.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "POST", "http://svc.t.local/p", strings.NewReader(body))
			resp, err := client.Do(req)
			if err != nil {
				ch <- result{err: err}
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			ch <- result{status: resp.StatusCode, body: string(b), err: err, header: resp.Header}
		}()
		return ch
	}
	a := post("first")
	eventually(t, "the first POST to reach the upstream", func() bool { return firstConnStreams.Load() == 1 })
	b := post("second")
	ra, rb := wait(t, a), wait(t, b)
	if ra.err != nil || ra.status != 200 || ra.body != "conn 1: first" {
		t.Fatalf("first POST: %d %q %v, want 200 from the first connection", ra.status, ra.body, ra.err)
	}
	if rb.err != nil || rb.status != 200 || rb.body != "conn 2: second" {
		t.Fatalf("second POST: %d %q %v (%s), want 200 from a second connection", rb.status, rb.body, rb.err, rb.header.Get(proxy.HeaderError))
	}
	if n := firstConnStreams.Load(); n != 2 {
		t.Fatalf("the first connection carried %d streams, want both POSTs", n)
	}
	if r := readStats(t, srv).Clusters["svc"]["retries"]; r != 1 {
		t.Errorf("cluster retries = %d, want 1", r)
	}
}

// slowH2C is an h2c upstream whose /slow answers half of a 256 KiB body, then the rest
// once release is closed; arrivals are announced (by path) on arrived.
type slowH2C struct {
	*testutil.Upstream
	arrived chan string
	release chan struct{}
}

const slowBody = 256 << 10

func startSlowH2C(t *testing.T) *slowH2C {
	t.Helper()
	s := &slowH2C{arrived: make(chan string, 16), release: make(chan struct{})}
	s.Upstream = testutil.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.arrived <- r.URL.Path
		if r.URL.Path != "/slow" {
			_, _ = io.WriteString(w, "fast")
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(slowBody))
		_, _ = w.Write(bytes.Repeat([]byte("a"), slowBody/2))
		w.(http.Flusher).Flush()
		select {
		case <-s.release:
		case <-r.Context().Done():
			return
		}
		_, _ = w.Write(bytes.Repeat([]byte("b"), slowBody/2))
	}))
	t.Cleanup(func() {
		select {
		case <-s.release:
		default:
			close(s.release)
		}
	})
	return s
}

func (s *slowH2C) waitArrived(t *testing.T, path string) {
	t.Helper()
	select {
	case p := <-s.arrived:
		if p != path {
			t.Fatalf("upstream got %s, want %s", p, path)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s never reached the upstream", path)
	}
}

// drainedStream follows a client connection after its GOAWAY: it reads the rest of
// stream id (which must complete with the slow body) and reports whether any frame of
// another stream arrived, until the server closes the connection.
func drainedStream(t *testing.T, p *h2Peer, id uint32, got *h2Response) {
	t.Helper()
	for {
		f, err := p.read()
		if err != nil {
			// A reset is not a close: the peer's kernel drops what its application has
			// not read yet when one arrives (the end of the stream).
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return // closed by the server, as it should once the stream is done
			}
			t.Fatalf("connection after GOAWAY: %v (stream %d: %d bytes, ended %v)", err, id, len(got.body), got.ended)
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if f.StreamID != id {
				t.Fatalf("HEADERS on stream %d after the GOAWAY that excluded it", f.StreamID)
			}
			if s := f.PseudoValue("status"); s != "" {
				got.status = s
			}
			got.ended = got.ended || f.StreamEnded()
		case *http2.DataFrame:
			if f.StreamID != id {
				t.Fatalf("DATA on stream %d after the GOAWAY that excluded it", f.StreamID)
			}
			got.body = append(got.body, f.Data()...)
			got.ended = got.ended || f.StreamEnded()
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				t.Fatalf("stream %d reset (%v) after the GOAWAY that kept it", id, f.ErrCode)
			}
		case *http2.GoAwayFrame:
			t.Fatalf("a second GOAWAY: last %d %v", f.LastStreamID, f.ErrCode)
		}
	}
}

// readUntilGoAway reads frames of stream id (into got) until a GOAWAY, and returns it.
func readUntilGoAway(t *testing.T, p *h2Peer, id uint32, got *h2Response) *http2.GoAwayFrame {
	t.Helper()
	for {
		f, err := p.read()
		if err != nil {
			t.Fatalf("waiting for GOAWAY: %v", err)
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			return f
		case *http2.MetaHeadersFrame:
			if f.StreamID == id {
				got.status = f.PseudoValue("status")
			}
		case *http2.DataFrame:
			if f.StreamID == id {
				got.body = append(got.body, f.Data()...)
			}
		}
	}
}

func checkSlowBody(t *testing.T, got *h2Response) {
	t.Helper()
	want := append(bytes.Repeat([]byte("a"), slowBody/2), bytes.Repeat([]byte("b"), slowBody/2)...)
	if got.status != "200" || !got.ended || !bytes.Equal(got.body, want) {
		t.Fatalf("in-flight stream: status %q, ended %v, %d of %d body bytes (intact %v)", got.status, got.ended, len(got.body), slowBody, bytes.Equal(got.body, want))
	}
}

// TestDownstreamDrainGoAway proves meshd's HTTP/2 drain on Shutdown, on the wire: with
// one slow stream in flight on an h2c connection, Drain (no grace) sends GOAWAY
// NO_ERROR whose last stream id is that stream's; a stream the client opens after the
// GOAWAY is not served (no frame of it comes back and the upstream never sees it: the
// client may send it again elsewhere); the in-flight stream completes with its whole
// body; then meshd closes the connection and Drain returns.
func TestDownstreamDrainGoAway(t *testing.T) {
	up := startSlowH2C(t)
	srv := testutil.StartMeshd(t, "app", lcMesh([]int{up.Port}, ""))
	p := dialH2(t, srv.EgressAddr())
	p.get(t, 1, "svc.t.local", "/slow")
	up.waitArrived(t, "/slow")

	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		drained <- srv.Drain(ctx, 0)
	}()
	var got h2Response
	ga := readUntilGoAway(t, p, 1, &got)
	if ga.LastStreamID != 1 || ga.ErrCode != http2.ErrCodeNo {
		t.Fatalf("GOAWAY last stream %d code %v, want 1 NO_ERROR", ga.LastStreamID, ga.ErrCode)
	}
	// A new stream after the GOAWAY: above its last stream id, never processed.
	p.get(t, 3, "svc.t.local", "/new")
	time.Sleep(100 * time.Millisecond) // time for a wrongly served stream to reach the upstream
	close(up.release)
	drainedStream(t, p, 1, &got)
	checkSlowBody(t, &got)
	select {
	case path := <-up.arrived:
		t.Fatalf("the upstream got %s, opened after the GOAWAY", path)
	default:
	}
	select {
	case err := <-drained:
		if err != nil {
			t.Fatalf("Drain: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Drain did not return after the last stream ended")
	}
}

// TestH2GracefulCloseLingers proves that an h2c connection meshd closes gracefully (a
// drain's GOAWAY, on a connection whose stream is done) is half-closed, not closed:
// what the client sends after the close (here a PING, as a client's SETTINGS or PING
// acknowledgement may arrive) is read and dropped, so the client's kernel gets no
// reset and keeps what the client has not read yet: the whole response, the GOAWAY,
// then the end of the stream. With a plain close, the PING reaching the closed socket
// drew a reset and the client lost the response it had not read
// (TestRemovedListenerGoAway failed so under load).
func TestH2GracefulCloseLingers(t *testing.T) {
	const size = 48 << 10 // fits the client's socket buffer unread
	done := make(chan struct{})
	up := testutil.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(done)
		w.Header().Set("Content-Length", strconv.Itoa(size))
		_, _ = w.Write(bytes.Repeat([]byte("x"), size))
	}))
	srv := testutil.StartMeshd(t, "app", lcMesh([]int{up.Port}, ""))
	p := dialH2(t, srv.EgressAddr())
	p.get(t, 1, "svc.t.local", "/")
	<-done
	time.Sleep(100 * time.Millisecond) // the response reaches the client's socket; nothing reads it
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		drained <- srv.Drain(ctx, 0)
	}()
	time.Sleep(100 * time.Millisecond) // GOAWAY, and the close of the idle connection
	if err := p.fr.WritePing(false, [8]byte{'l', 'a', 't', 'e'}); err != nil {
		t.Fatal(err)
	}
	if err := p.flush(); err != nil {
		t.Fatal(err)
	}
	var got h2Response
	ga := readUntilGoAway(t, p, 1, &got)
	if ga.ErrCode != http2.ErrCodeNo {
		t.Fatalf("GOAWAY %v, want NO_ERROR", ga.ErrCode)
	}
	drainedStream(t, p, 1, &got)
	if got.status != "200" || len(got.body) != size {
		t.Fatalf("response before the GOAWAY: status %q, %d of %d body bytes", got.status, len(got.body), size)
	}
	_ = p.c.Close()
	select {
	case err := <-drained:
		if err != nil {
			t.Fatalf("Drain: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Drain did not return after the client closed")
	}
}

// lcIngressMesh is node "app" with an http2 listener on each port (the local app is
// 127.0.0.1:port).
func lcIngressMesh(ports ...int) string {
	var ls []string
	for _, p := range ports {
		ls = append(ls, fmt.Sprintf("{portMapping: {port: %d, protocol: http2}}", p))
	}
	return fmt.Sprintf(`mesh: {meshName: t, spec: {egressFilter: {type: DROP_ALL}}}
virtualNodes:
  - virtualNodeName: app
    spec:
      listeners: [%s]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:%d"]}}
`, strings.Join(ls, ", "), ports[0])
}

// TestRemovedListenerGoAway proves that an h2c ingress connection addressed to a node
// listener that a new config removes gets GOAWAY (last stream id its in-flight
// stream's), that stream completes with its whole body, and the connection then
// closes; the listener that stays keeps serving new connections.
func TestRemovedListenerGoAway(t *testing.T) {
	removed := startSlowH2C(t)
	kept := testutil.StartH2C(t, echoHandler("kept"))
	seam := &origSeam{}
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", OriginalDst: seam.lookup}, lcIngressMesh(removed.Port, kept.Port))
	seam.set(fmt.Sprintf("127.0.0.1:%d", removed.Port))

	p := dialH2(t, srv.IngressAddr())
	p.get(t, 1, "app.local", "/slow")
	removed.waitArrived(t, "/slow")

	if _, err := srv.Apply(context.Background(), testutil.ParseConfig(t, lcIngressMesh(kept.Port)), "remove a listener"); err != nil {
		t.Fatal(err)
	}
	var got h2Response
	ga := readUntilGoAway(t, p, 1, &got)
	if ga.LastStreamID != 1 || ga.ErrCode != http2.ErrCodeNo {
		t.Fatalf("GOAWAY last stream %d code %v, want 1 NO_ERROR", ga.LastStreamID, ga.ErrCode)
	}
	close(removed.release)
	drainedStream(t, p, 1, &got)
	checkSlowBody(t, &got)

	// The listener that stays serves a new connection.
	seam.set(fmt.Sprintf("127.0.0.1:%d", kept.Port))
	resp, err := testutil.H2CClient(t, srv.IngressAddr()).Get("http://app.local/after")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Upstream") != "kept" {
		t.Fatalf("new connection to the kept listener: %d from %q", resp.StatusCode, resp.Header.Get("X-Upstream"))
	}
}

// TestIdleH2ConnGoAway proves that with Options.KeepAliveIdle set, an h2c connection
// idle that long (after its one request) gets GOAWAY NO_ERROR, not before, and is
// then closed.
func TestIdleH2ConnGoAway(t *testing.T) {
	const idle = 300 * time.Millisecond
	up := testutil.StartH2C(t, echoHandler("svc"))
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", KeepAliveIdle: idle}, lcMesh([]int{up.Port}, ""))
	p := dialH2(t, srv.EgressAddr())
	p.get(t, 1, "svc.t.local", "/")
	var last time.Time
	for {
		f, err := p.read()
		if err != nil {
			t.Fatalf("response: %v", err)
		}
		if _, ok := f.(*http2.GoAwayFrame); ok {
			t.Fatal("GOAWAY before the response ended")
		}
		if f.Header().StreamID == 1 && f.Header().Flags.Has(http2.FlagDataEndStream) {
			last = time.Now()
			break
		}
	}
	for {
		f, err := p.read()
		if err != nil {
			t.Fatalf("idle connection ended without GOAWAY: %v", err)
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			if el := time.Since(last); el < idle-50*time.Millisecond {
				t.Fatalf("GOAWAY %v after the last stream, want about %v", el, idle)
			}
			if ga.ErrCode != http2.ErrCodeNo || ga.LastStreamID != 1 {
				t.Fatalf("GOAWAY %v last stream %d, want NO_ERROR 1", ga.ErrCode, ga.LastStreamID)
			}
			break
		}
	}
	if f, err := p.read(); err == nil {
		t.Fatalf("connection still open after the idle GOAWAY: %T", f)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("connection not closed after the idle GOAWAY: %v", err)
	}
}

// sleepyHealth answers Check after sleeping the duration in the call's "sleep" metadata,
// ignoring cancellation (a server that does not watch its context).
type sleepyHealth struct {
	healthpb.UnimplementedHealthServer
	done atomic.Int64
}

func (s *sleepyHealth) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	defer s.done.Add(1)
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get("sleep")) == 1 {
		d, _ := time.ParseDuration(md.Get("sleep")[0])
		time.Sleep(d)
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

// TestGRPCUnaryDeadlineSleepingServer proves that a unary gRPC call to a server that
// sleeps past the route's perRequest timeout, not watching its context, ends with
// DEADLINE_EXCEEDED from meshd at the route's timeout, although the client's own
// deadline (sent as grpc-timeout) is far later; and that the upstream connection the
// late answer comes back on stays usable: later calls succeed on it.
func TestGRPCUnaryDeadlineSleepingServer(t *testing.T) {
	h := &sleepyHealth{}
	up := testutil.StartGRPC(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, h) })
	srv, _ := meshDef{services: []svcDef{{name: "sleepy.t.local", node: "sleepy", port: up.Port, proto: "grpc", routes: []string{
		`{grpcRoute: {match: {serviceName: grpc.health.v1.Health}, action: {weightedTargets: [{virtualNode: sleepy, weight: 1}]}, timeout: {perRequest: {unit: ms, value: 200}}}}`}}}}.start(t)
	hc := healthpb.NewHealthClient(grpcDial(t, srv.EgressAddr(), "sleepy.t.local"))
	call := func(sleep string) (time.Duration, metadata.MD, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if sleep != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "sleep", sleep)
		}
		var trailer metadata.MD
		start := time.Now()
		_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Trailer(&trailer))
		return time.Since(start), trailer, err
	}
	if _, _, err := call(""); err != nil {
		t.Fatalf("warm-up call: %v", err)
	}
	el, trailer, err := call("700ms")
	st := status.Convert(err)
	if st.Code() != codes.DeadlineExceeded || !strings.Contains(st.Message(), "meshd") {
		t.Fatalf("sleeping call: %v (code %v), want DeadlineExceeded from meshd", err, st.Code())
	}
	if got := trailer.Get("x-meshd-error"); len(got) != 1 || got[0] != "upstream_timeout" {
		t.Errorf("x-meshd-error = %q, want [upstream_timeout]", got)
	}
	if el < 150*time.Millisecond || el > 1500*time.Millisecond {
		t.Errorf("sleeping call ended after %v, want about the route's 200ms (not the client's 5s)", el)
	}
	if _, _, err := call(""); err != nil {
		t.Fatalf("call while the sleeping handler still runs: %v", err)
	}
	eventually(t, "the sleeping handler to return", func() bool { return h.done.Load() == 3 })
	if _, _, err := call(""); err != nil {
		t.Fatalf("call after the late answer: %v", err)
	}
	if n := up.Accepted(); n != 1 {
		t.Errorf("upstream accepted %d connections, want the one, kept through the timeout", n)
	}
}

// TestRemovedListenerGoAwaySlowReader proves that a removed listener's h2c connection
// whose client stopped reading (meshd's write queue for it full) holds up neither the
// config apply that removes the listener nor new connections: the GOAWAY is queued
// without waiting for the socket.
func TestRemovedListenerGoAwaySlowReader(t *testing.T) {
	const big = 256 << 20
	removed := testutil.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 1<<20)
		for n := 0; n < big; n += len(buf) {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	}))
	kept := testutil.StartH2C(t, echoHandler("kept"))
	seam := &origSeam{}
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", OriginalDst: seam.lookup}, lcIngressMesh(removed.Port, kept.Port))
	seam.set(fmt.Sprintf("127.0.0.1:%d", removed.Port))

	// A client that grants every window and reads nothing after the response head.
	p := dialH2Window(t, srv.IngressAddr(), 1<<31-1)
	p.get(t, 1, "app.local", "/big")
	for {
		f, err := p.read()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := f.(*http2.MetaHeadersFrame); ok {
			break
		}
	}
	time.Sleep(500 * time.Millisecond) // meshd fills the socket buffers and its write queue

	applied := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := srv.Apply(context.Background(), testutil.ParseConfig(t, lcIngressMesh(kept.Port)), "remove a listener")
		applied <- err
	}()
	select {
	case err := <-applied:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatalf("Apply still running after %v: held up by the GOAWAY to a connection that does not read", time.Since(start))
	}
	seam.set(fmt.Sprintf("127.0.0.1:%d", kept.Port))
	c := testutil.H2CClient(t, srv.IngressAddr())
	c.Timeout = 3 * time.Second
	resp, err := c.Get("http://app.local/after")
	if err != nil {
		t.Fatalf("new connection after the apply: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Upstream") != "kept" {
		t.Fatalf("new connection to the kept listener: %d from %q", resp.StatusCode, resp.Header.Get("X-Upstream"))
	}
	_ = p.c.Close() // the stalled stream ends; meshd's shutdown need not wait for it
}
