package proxy_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// The tests of this file drive meshd's h2c listener with real HTTP/2 clients (curl,
// h2load, net/http's HTTP/2 client) toward a real HTTP/2 upstream (net/http's h2c
// server): what any HTTP/2 implementation inside meshd must carry unchanged.

// h2Data is the deterministic content of a test body: seed's ChaCha8 stream, n bytes.
func h2Data(seed uint64, n int64) io.Reader {
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	return io.LimitReader(rand.NewChaCha8(s), n)
}

// h2DataSum is the SHA-256 (hex) of h2Data(seed, n).
func h2DataSum(seed uint64, n int64) string {
	h := sha256.New()
	_, _ = io.Copy(h, h2Data(seed, n))
	return hex.EncodeToString(h.Sum(nil))
}

// h2Upstream is the net/http h2c upstream of these tests.
//
//	GET  /hello             200 "hello\n"
//	GET  /data?n=N&seed=S   N bytes of h2Data(S, N); with &stream=1 of unknown length
//	                        (no Content-Length, flushed every 64 KiB), else sized
//	POST /sum               reads the body; answers "<proto> <bytes> <sha256 hex>"
//	POST /slowsum           the same, but stops reading after 1 MiB until hold is released
type h2Upstream struct {
	*testutil.Upstream
	written atomic.Int64  // bytes /data wrote so far
	held    chan struct{} // /slowsum: closed when it has stopped reading
	hold    chan struct{} // /slowsum: close to let it read on
}

func startH2Upstream(t *testing.T) *h2Upstream {
	t.Helper()
	u := &h2Upstream{held: make(chan struct{}), hold: make(chan struct{})}
	var heldOnce sync.Once
	sum := func(w http.ResponseWriter, r *http.Request, pause bool) {
		h := sha256.New()
		var n int64
		buf := make([]byte, 32<<10)
		for {
			if pause && n >= 1<<20 {
				heldOnce.Do(func() { close(u.held) })
				select {
				case <-u.hold:
				case <-r.Context().Done():
					return
				}
			}
			k, err := r.Body.Read(buf)
			h.Write(buf[:k])
			n += int64(k)
			if err == io.EOF {
				break
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
		}
		fmt.Fprintf(w, "%s %d %x", r.Proto, n, h.Sum(nil))
	}
	u.Upstream = testutil.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hello":
			_, _ = io.WriteString(w, "hello\n")
		case "/data":
			n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
			seed, _ := strconv.ParseUint(r.URL.Query().Get("seed"), 10, 64)
			stream := r.URL.Query().Get("stream") == "1"
			if !stream {
				w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
			}
			rc := http.NewResponseController(w)
			src, buf := h2Data(seed, n), make([]byte, 64<<10)
			for {
				k, err := src.Read(buf)
				if k > 0 {
					if _, werr := w.Write(buf[:k]); werr != nil {
						return
					}
					u.written.Add(int64(k))
					if stream {
						_ = rc.Flush()
					}
				}
				if err != nil {
					return
				}
			}
		case "/sum":
			sum(w, r, false)
		case "/slowsum":
			sum(w, r, true)
		default:
			http.NotFound(w, r)
		}
	}))
	return u
}

// startH2Mesh starts the h2c upstream and a meshd whose egress routes h2.t.local to it
// over HTTP/2.
func startH2Mesh(t *testing.T) (*proxy.Server, *h2Upstream) {
	t.Helper()
	up := startH2Upstream(t)
	srv, _ := meshDef{services: []svcDef{
		{name: "h2.t.local", node: "h2", port: up.Port, proto: "http2", routes: []string{
			`{http2Route: {match: {prefix: /}, action: {weightedTargets: [{virtualNode: h2, weight: 1}]}}}`}},
	}}.start(t)
	return srv, up
}

// runTool runs a client program with a deadline and returns its standard output,
// failing the test (with both outputs) when it fails.
func runTool(t *testing.T, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", filepath.Base(name), strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// TestCurlHTTP2PriorKnowledge: curl, speaking HTTP/2 with prior knowledge (h2c, the
// nghttp2 client stack), gets through meshd to an h2c upstream: a GET answers 200 with
// the upstream's body over HTTP/2, and a POST of 1 MiB reaches the upstream whole
// (its length and SHA-256 match) over HTTP/2 on both legs.
func TestCurlHTTP2PriorKnowledge(t *testing.T) {
	curl := externalTool(t, "curl", "", "apt-get install curl")
	srv, _ := startH2Mesh(t)
	connectTo := "h2.t.local:80:" + srv.EgressAddr()
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	base := []string{"-sS", "--http2-prior-knowledge", "--max-time", "20", "--connect-to", connectTo,
		"-o", out, "-w", "%{http_version} %{http_code}"}

	t.Run("GET", func(t *testing.T) {
		got := runTool(t, 30*time.Second, curl, append(base, "http://h2.t.local/hello")...)
		body, _ := os.ReadFile(out)
		if got != "2 200" || string(body) != "hello\n" {
			t.Fatalf("curl GET: %q body %q, want \"2 200\" \"hello\\n\"", got, body)
		}
	})
	t.Run("POST 1 MiB", func(t *testing.T) {
		const n = 1 << 20
		in := filepath.Join(dir, "in")
		b, _ := io.ReadAll(h2Data(7, n))
		if err := os.WriteFile(in, b, 0o600); err != nil {
			t.Fatal(err)
		}
		got := runTool(t, 30*time.Second, curl, append(base, "--data-binary", "@"+in,
			"-H", "Content-Type: application/octet-stream", "http://h2.t.local/sum")...)
		body, _ := os.ReadFile(out)
		if want := fmt.Sprintf("HTTP/2.0 %d %s", n, h2DataSum(7, n)); got != "2 200" || string(body) != want {
			t.Fatalf("curl POST: %q, upstream saw %q; want \"2 200\", %q", got, body, want)
		}
	})
}

// TestH2LoadThroughMeshd: nghttp2's h2load, 2000 requests over 4 connections with up to
// 10 concurrent streams each, all succeed with a 2xx through meshd: many multiplexed
// streams per connection, opened and closed at load, are each answered.
func TestH2LoadThroughMeshd(t *testing.T) {
	h2load := externalTool(t, "h2load", "", "apt-get install nghttp2-client")
	srv, _ := startH2Mesh(t)
	const n = 2000
	out := runTool(t, 45*time.Second, h2load, "-n", strconv.Itoa(n), "-c", "4", "-m", "10",
		"-H", ":authority: h2.t.local", "http://"+srv.EgressAddr()+"/hello")
	m := regexp.MustCompile(`requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout`).FindStringSubmatch(out)
	codes := regexp.MustCompile(`status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx`).FindStringSubmatch(out)
	if m == nil || codes == nil {
		t.Fatalf("h2load's output has no requests/status codes line:\n%s", out)
	}
	if m[1] != strconv.Itoa(n) || m[4] != strconv.Itoa(n) || codes[1] != strconv.Itoa(n) {
		t.Fatalf("h2load: %s; %s; want all %d succeeded with 2xx. Output:\n%s", m[0], codes[0], n, out)
	}
}

// TestH2CClientMultiplexedStreams: net/http's HTTP/2 client (prior knowledge, through
// http.Protocols) sends 100 concurrent POSTs with distinct bodies through meshd to
// net/http's h2c server, all on one client connection: every stream gets its own
// answer (no crossed streams), over HTTP/2 on both legs.
func TestH2CClientMultiplexedStreams(t *testing.T) {
	srv, _ := startH2Mesh(t)
	var dials atomic.Int32
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, "tcp", srv.EgressAddr())
		},
		Protocols: new(http.Protocols),
	}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	// One request first, so that the 100 share the connection it opened.
	if resp, err := c.Get("http://h2.t.local/hello"); err != nil {
		t.Fatal(err)
	} else {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 100 {
		wg.Go(func() {
			n := int64(1 + i*997)
			resp, err := c.Post("http://h2.t.local/sum", "application/octet-stream", h2Data(uint64(i), n))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if want := fmt.Sprintf("HTTP/2.0 %d %s", n, h2DataSum(uint64(i), n)); resp.StatusCode != 200 || resp.ProtoMajor != 2 || string(b) != want {
				errs <- fmt.Errorf("stream %d: %s %s %q, want HTTP/2 200 %q", i, resp.Proto, resp.Status, b, want)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if d := dials.Load(); d != 1 {
		t.Errorf("the client opened %d connections, want 1 carrying every stream", d)
	}
}

// TestH2CLargeBodies: 32 MiB each way through meshd between net/http's HTTP/2 client and
// h2c server, verified by SHA-256: an upload reaches the upstream whole, and downloads
// reach the client whole, sized (Content-Length) and streamed (unknown length, the
// upstream flushing as it writes). Flow control windows are exhausted and refilled many
// times over on both legs.
func TestH2CLargeBodies(t *testing.T) {
	const n = 32 << 20
	srv, _ := startH2Mesh(t)
	c := testutil.H2CClient(t, srv.EgressAddr())
	c.Timeout = 0
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("upload", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(ctx, "POST", "http://h2.t.local/sum", h2Data(1, n))
		req.ContentLength = n
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if want := fmt.Sprintf("HTTP/2.0 %d %s", n, h2DataSum(1, n)); resp.StatusCode != 200 || string(b) != want {
			t.Fatalf("upload: %s %q, want 200 %q", resp.Status, b, want)
		}
	})
	for _, stream := range []string{"0", "1"} {
		t.Run("download stream="+stream, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://h2.t.local/data?seed=2&n="+strconv.Itoa(n)+"&stream="+stream, nil)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			h := sha256.New()
			got, err := io.Copy(h, resp.Body)
			if err != nil || resp.StatusCode != 200 || got != n || hex.EncodeToString(h.Sum(nil)) != h2DataSum(2, n) {
				t.Fatalf("download: %s, %d bytes (%v), checksum match %v; want 200, %d bytes, the upstream's checksum",
					resp.Status, got, err, hex.EncodeToString(h.Sum(nil)) == h2DataSum(2, n), n)
			}
			if stream == "0" && resp.ContentLength != n {
				t.Errorf("sized download: Content-Length %d, want %d", resp.ContentLength, n)
			}
		})
	}
}

// heapInUse is the process's live heap after a collection. meshd runs inside the test
// process (with the test's client and upstream), so its growth bounds what meshd
// buffers, as in TestHTTP2StalledStreamsBoundedMemory.
func heapInUse() int64 {
	// Twice: the first collection moves sync.Pool contents to the victim cache, the
	// second frees them, so buffers pooled by earlier tests do not count.
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

// heapBound is the growth allowed while a 64 MiB body is stalled: flow control should
// hold meshd to its windows (256 KiB per stream and 1 MiB per connection downstream,
// the same upstream) plus relay buffers, a few MiB; buffering the body would take 64.
const heapBound = 32 << 20

// TestH2CSlowReaderBoundedMemory: a client that opens a 64 MiB download (of unknown
// length, the upstream writing as fast as it can) and then stops reading for a while
// does not make meshd buffer the body: flow control pushes back on the upstream, the
// heap stays within heapBound of where it was, and when the client reads on it gets
// every byte intact.
func TestH2CSlowReaderBoundedMemory(t *testing.T) {
	const n = 64 << 20
	srv, up := startH2Mesh(t)
	c := testutil.H2CClient(t, srv.EgressAddr())
	c.Timeout = 0
	// The client's own windows are small, so what could grow is meshd's buffering.
	c.Transport.(*http.Transport).HTTP2 = &http.HTTP2Config{MaxReceiveBufferPerStream: 64 << 10, MaxReceiveBufferPerConnection: 64 << 10}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	base := heapInUse()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://h2.t.local/data?seed=3&stream=1&n="+strconv.Itoa(n), nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, resp.Body, 1<<20); err != nil {
		t.Fatalf("first MiB: %v", err)
	}
	peak := stallAndMeasure(t, &up.written, n)
	rest, err := io.Copy(h, resp.Body)
	if err != nil || rest != n-1<<20 || hex.EncodeToString(h.Sum(nil)) != h2DataSum(3, n) {
		t.Fatalf("after the stall: %d more bytes (%v), checksum match %v; want the remaining %d, intact", rest, err,
			hex.EncodeToString(h.Sum(nil)) == h2DataSum(3, n), n-1<<20)
	}
	if grew := peak - base; grew > heapBound {
		t.Fatalf("heap grew by %d MiB while the client stopped reading a 64 MiB download (bound %d MiB)", grew>>20, heapBound>>20)
	} else {
		t.Logf("heap grew by %.1f MiB while the client stopped reading", float64(grew)/(1<<20))
	}
}

// TestH2CSlowUpstreamReaderBoundedMemory: a client uploads 64 MiB as fast as it can to
// an upstream that stops reading after 1 MiB for a while: meshd does not buffer the
// body (the heap stays within heapBound of where it was, flow control pushing back on
// the client), and when the upstream reads on it gets every byte intact.
func TestH2CSlowUpstreamReaderBoundedMemory(t *testing.T) {
	const n = 64 << 20
	srv, up := startH2Mesh(t)
	c := testutil.H2CClient(t, srv.EgressAddr())
	c.Timeout = 0
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	base := heapInUse()
	var sent atomic.Int64
	body := io.TeeReader(h2Data(4, n), writerFunc(func(p []byte) (int, error) { sent.Add(int64(len(p))); return len(p), nil }))
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://h2.t.local/slowsum", body)
	req.ContentLength = n
	type result struct {
		status int
		body   string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := c.Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		done <- result{resp.StatusCode, string(b), err}
	}()
	select {
	case <-up.held:
	case r := <-done:
		t.Fatalf("the upload ended before the upstream stopped reading: %+v", r)
	case <-ctx.Done():
		t.Fatal("the upstream never got 1 MiB")
	}
	peak := stallAndMeasure(t, &sent, n)
	close(up.hold)
	r := <-done
	if want := fmt.Sprintf("HTTP/2.0 %d %s", n, h2DataSum(4, n)); r.err != nil || r.status != 200 || r.body != want {
		t.Fatalf("upload: %d %q %v, want 200 %q", r.status, r.body, r.err, want)
	}
	if grew := peak - base; grew > heapBound {
		t.Fatalf("heap grew by %d MiB while the upstream stopped reading a 64 MiB upload (bound %d MiB)", grew>>20, heapBound>>20)
	} else {
		t.Logf("heap grew by %.1f MiB while the upstream stopped reading", float64(grew)/(1<<20))
	}
}

// stallAndMeasure waits, while one side of a transfer of total bytes has stopped
// reading, until the other side's progress counter stops moving (flow control has
// pushed back; at most 5 s), then samples the heap a few times over a second and returns
// the largest sample. The sender must have been held back to less than half of total:
// had it sent most of the body, meshd (or something) would be holding it.
func stallAndMeasure(t *testing.T, progress *atomic.Int64, total int64) int64 {
	t.Helper()
	for last, deadline := int64(-1), time.Now().Add(5*time.Second); ; {
		time.Sleep(200 * time.Millisecond)
		cur := progress.Load()
		if cur == last || time.Now().After(deadline) {
			break
		}
		last = cur
	}
	var peak int64
	for range 4 {
		peak = max(peak, heapInUse())
		time.Sleep(250 * time.Millisecond)
	}
	p := progress.Load()
	t.Logf("stalled with the sender at %.1f MiB of %d MiB", float64(p)/(1<<20), total>>20)
	if p > total/2 {
		t.Errorf("the sender got %.1f MiB of %d MiB out while the receiver was not reading: flow control did not push back on it",
			float64(p)/(1<<20), total>>20)
	}
	return peak
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
