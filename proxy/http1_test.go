package proxy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestHeaders(t *testing.T) {
	echo := testutil.StartHTTP(t, echoHandler("echo"))
	// The raw upstream answers with hop-by-hop fields of its own.
	raw := testutil.StartRaw(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: X-Resp-Hop\r\nX-Resp-Hop: 1\r\nKeep-Alive: timeout=5\r\n"+
			"Proxy-Connection: keep-alive\r\nX-End: kept\r\nContent-Length: 2\r\n\r\nok")
	})
	srv, _ := meshDef{services: []svcDef{
		{name: "echo.t.local", node: "echo", port: echo.Port},
		{name: "raw.t.local", node: "raw", port: raw.Port},
	}}.start(t)

	t.Run("request", func(t *testing.T) {
		c := dialRaw(t, srv.EgressAddr())
		c.send(t, "GET /h HTTP/1.1\r\nHost: echo.t.local\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\n"+
			"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers, deflate\r\n"+
			"X-Forwarded-For: 10.0.0.1\r\nX-Request-Id: abc-123\r\nX-End: yes\r\n\r\n")
		resp, body := c.read(t, "GET")
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		var info echoInfo
		if err := json.Unmarshal([]byte(body), &info); err != nil {
			t.Fatal(err)
		}
		h := info.Header
		for _, name := range []string{"X-Hop", "Keep-Alive", "Proxy-Connection"} {
			if v, ok := h[name]; ok {
				t.Errorf("hop-by-hop %s reached the upstream: %q", name, v)
			}
		}
		if got := h.Values("Te"); len(got) != 1 || got[0] != "trailers" {
			t.Errorf("TE = %q, want just trailers", got)
		}
		if got := h.Get("X-Forwarded-For"); got != "10.0.0.1, 127.0.0.1" {
			t.Errorf("X-Forwarded-For = %q, want the client appended", got)
		}
		if got := h.Get("X-Forwarded-Proto"); got != "http" {
			t.Errorf("X-Forwarded-Proto = %q", got)
		}
		if got := h.Get("X-Request-Id"); got != "abc-123" {
			t.Errorf("X-Request-Id = %q, want the client's kept", got)
		}
		if info.Host != "echo.t.local" || h.Get("X-End") != "yes" {
			t.Errorf("Host %q X-End %q", info.Host, h.Get("X-End"))
		}

		// Without an id, meshd generates a UUID v4, a new one each time.
		ids := map[string]bool{}
		for i := 0; i < 3; i++ {
			c.send(t, "GET /h HTTP/1.1\r\nHost: echo.t.local\r\n\r\n")
			_, body = c.read(t, "GET")
			info = echoInfo{}
			if err := json.Unmarshal([]byte(body), &info); err != nil {
				t.Fatal(err)
			}
			id := info.Header.Get("X-Request-Id")
			if !uuidV4.MatchString(id) {
				t.Fatalf("generated X-Request-Id %q is not a UUID v4", id)
			}
			ids[id] = true
			if got := info.Header.Get("X-Forwarded-For"); got != "127.0.0.1" {
				t.Errorf("X-Forwarded-For = %q", got)
			}
		}
		if len(ids) != 3 {
			t.Fatalf("request ids repeat: %v", ids)
		}
	})

	t.Run("response", func(t *testing.T) {
		c := dialRaw(t, srv.EgressAddr())
		c.send(t, "GET / HTTP/1.1\r\nHost: raw.t.local\r\n\r\n")
		resp, body := c.read(t, "GET")
		if resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("status %d body %q", resp.StatusCode, body)
		}
		for _, name := range []string{"X-Resp-Hop", "Keep-Alive", "Proxy-Connection"} {
			if v, ok := resp.Header[name]; ok {
				t.Errorf("hop-by-hop %s reached the client: %q", name, v)
			}
		}
		if resp.Header.Get("X-End") != "kept" {
			t.Errorf("X-End = %q", resp.Header.Get("X-End"))
		}
	})
}

// TestHeadersH2C: the same removals on the HTTP/2 front end, whose decoder reports the
// requests with no hop-by-hop field (the removal pass is skipped for them) and whose
// HTTP/1.1 transport's responses come without them already.
func TestHeadersH2C(t *testing.T) {
	echo := testutil.StartHTTP(t, echoHandler("echo"))
	// An HTTP/2 upstream too: the HTTP/1.1 writer drops hop-by-hop fields itself, the
	// HTTP/2 one only the connection-specific ones.
	echo2 := testutil.StartH2C(t, echoHandler("echo2"))
	raw := testutil.StartRaw(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: X-Resp-Hop\r\nX-Resp-Hop: 1\r\nKeep-Alive: timeout=5\r\n"+
				"Proxy-Connection: keep-alive\r\nProxy-Authenticate: Basic\r\nX-End: kept\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	srv, _ := meshDef{services: []svcDef{
		{name: "echo.t.local", node: "echo", port: echo.Port},
		{name: "echo2.t.local", node: "echo2", port: echo2.Port, proto: "http2"},
		{name: "raw.t.local", node: "raw", port: raw.Port},
	}}.start(t)
	client := testutil.H2CClient(t, srv.EgressAddr())
	for _, svc := range []string{"echo", "echo2"} {
		t.Run(svc, func(t *testing.T) { headersH2C(t, client, svc) })
	}
	for range 3 {
		resp, err := client.Get("http://raw.t.local/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("status %d body %q", resp.StatusCode, body)
		}
		for _, name := range []string{"X-Resp-Hop", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Connection"} {
			if v, ok := resp.Header[name]; ok {
				t.Errorf("hop-by-hop %s reached the client: %q", name, v)
			}
		}
		if resp.Header.Get("X-End") != "kept" {
			t.Errorf("X-End = %q", resp.Header.Get("X-End"))
		}
	}
}

// headersH2C sends h2c requests with and without the hop-by-hop fields HTTP/2 admits
// to svc (an echo upstream) and checks what reached it.
func headersH2C(t *testing.T, client *http.Client, svc string) {
	// Each hop-by-hop field HTTP/2 admits alone (the decoder must report each), none,
	// and all of them.
	for _, hops := range [][]string{{"Te"}, nil, {"Proxy-Authorization"}, {"Proxy-Authenticate"}, nil,
		{"Te", "Proxy-Authorization", "Proxy-Authenticate"}} {
		req, _ := http.NewRequest("GET", "http://"+svc+".t.local/h", nil)
		req.Header.Set("X-End", "yes")
		values := map[string]string{"Te": "trailers", "Proxy-Authorization": "Basic c2VjcmV0", "Proxy-Authenticate": "Basic"}
		for _, name := range hops {
			req.Header.Set(name, values[name])
		}
		hop := slices.Contains(hops, "Te")
		info := getEcho(t, client, req)
		h := info.Header
		for _, name := range []string{"Proxy-Authorization", "Proxy-Authenticate"} {
			if v, ok := h[name]; ok {
				t.Errorf("hop-by-hop %s reached the upstream: %q (sent %v)", name, v, hops)
			}
		}
		if got := h.Values("Te"); hop && (len(got) != 1 || got[0] != "trailers") || !hop && len(got) != 0 {
			t.Errorf("hop-by-hop fields sent %v: TE = %q", hops, got)
		}
		if h.Get("X-End") != "yes" || h.Get("X-Forwarded-For") != "127.0.0.1" || h.Get("X-Forwarded-Proto") != "http" ||
			!uuidV4.MatchString(h.Get("X-Request-Id")) {
			t.Errorf("hop-by-hop fields sent %v: the upstream saw %v", hops, h)
		}
	}
}

// pattern is an endless reader of a fixed byte pattern: bodies are generated, never held.
type pattern struct{ i int }

func (p *pattern) Read(b []byte) (int, error) {
	for k := range b {
		b[k] = byte('a' + (p.i+k)%26)
	}
	p.i += len(b)
	return len(b), nil
}

func bodiesHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/echo", echoHandler("bodies"))
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < 3; i++ {
			fmt.Fprintf(w, "part%d;", i)
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/head", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1234")
		if r.Method != "HEAD" {
			_, _ = w.Write(bytes.Repeat([]byte("x"), 1234))
		}
	})
	mux.HandleFunc("/204", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	mux.HandleFunc("/304", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"v1"`)
		w.WriteHeader(304)
	})
	mux.HandleFunc("/count", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		fmt.Fprintf(w, "%d", n)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(bigBody))
		_, _ = io.CopyN(w, &pattern{}, bigBody)
	})
	return mux
}

const bigBody = 100 << 20

func TestBodies(t *testing.T) {
	up := testutil.StartHTTP(t, bodiesHandler())
	untilClose := testutil.StartRaw(t, func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it until close")
	})
	srv, client := meshDef{services: []svcDef{
		{name: "bodies.t.local", node: "bodies", port: up.Port},
		{name: "eof.t.local", node: "eof", port: untilClose.Port},
	}}.start(t)
	eg := srv.EgressAddr()

	t.Run("content-length POST", func(t *testing.T) {
		info := getEcho(t, client, newReq(t, "POST", "http://bodies.t.local/echo", strings.NewReader("hello body")))
		if info.Body != "hello body" || info.Method != "POST" {
			t.Fatalf("upstream got %s %q", info.Method, info.Body)
		}
	})

	t.Run("chunked POST with trailers", func(t *testing.T) {
		req := newReq(t, "POST", "http://bodies.t.local/echo", io.MultiReader(strings.NewReader("chunk-one "), strings.NewReader("chunk-two")))
		req.ContentLength = -1
		req.Trailer = http.Header{"X-Checksum": {"abc"}}
		info := getEcho(t, client, req)
		if info.Body != "chunk-one chunk-two" {
			t.Fatalf("body %q", info.Body)
		}
		if info.Trailer.Get("X-Checksum") != "abc" {
			t.Fatalf("trailer %v, want X-Checksum: abc", info.Trailer)
		}
	})

	t.Run("chunked response", func(t *testing.T) {
		resp, err := client.Get("http://bodies.t.local/chunked")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "part0;part1;part2;" || len(resp.TransferEncoding) != 1 {
			t.Fatalf("body %q transfer-encoding %v", body, resp.TransferEncoding)
		}
	})

	t.Run("response until close", func(t *testing.T) {
		c := dialRaw(t, eg)
		c.send(t, "GET / HTTP/1.1\r\nHost: eof.t.local\r\n\r\n")
		resp, body := c.read(t, "GET")
		if resp.StatusCode != 200 || body != "all of it until close" {
			t.Fatalf("status %d body %q", resp.StatusCode, body)
		}
	})

	t.Run("HEAD 204 304 keep the connection", func(t *testing.T) {
		c := dialRaw(t, eg)
		c.send(t, "HEAD /head HTTP/1.1\r\nHost: bodies.t.local\r\n\r\n")
		resp, body := c.read(t, "HEAD")
		if resp.StatusCode != 200 || resp.ContentLength != 1234 || body != "" {
			t.Fatalf("HEAD: %d length %d body %q", resp.StatusCode, resp.ContentLength, body)
		}
		c.send(t, "GET /204 HTTP/1.1\r\nHost: bodies.t.local\r\n\r\n")
		if resp, body = c.read(t, "GET"); resp.StatusCode != 204 || body != "" {
			t.Fatalf("204: %d %q", resp.StatusCode, body)
		}
		c.send(t, "GET /304 HTTP/1.1\r\nHost: bodies.t.local\r\nIf-None-Match: \"v1\"\r\n\r\n")
		if resp, body = c.read(t, "GET"); resp.StatusCode != 304 || body != "" || resp.Header.Get("ETag") != `"v1"` {
			t.Fatalf("304: %d %q %v", resp.StatusCode, body, resp.Header)
		}
		c.send(t, "GET /head HTTP/1.1\r\nHost: bodies.t.local\r\n\r\n")
		if resp, body = c.read(t, "GET"); resp.StatusCode != 200 || len(body) != 1234 {
			t.Fatalf("GET after: %d len %d", resp.StatusCode, len(body))
		}
	})

	t.Run("expect 100-continue", func(t *testing.T) {
		c := dialRaw(t, eg)
		c.send(t, "POST /echo HTTP/1.1\r\nHost: bodies.t.local\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
		resp, _ := c.read(t, "POST")
		if resp.StatusCode != 100 {
			t.Fatalf("first answer %d, want 100 Continue", resp.StatusCode)
		}
		c.send(t, "hello")
		resp, body := c.read(t, "POST")
		var info echoInfo
		if err := json.Unmarshal([]byte(body), &info); resp.StatusCode != 200 || err != nil || info.Body != "hello" {
			t.Fatalf("final: %d %q (%v)", resp.StatusCode, body, err)
		}
	})

	t.Run("expect 100-continue answered without a route", func(t *testing.T) {
		// The client waits for 100 Continue before it sends the body: meshd must answer
		// the 404 at once instead of waiting for a body that will not come.
		c := dialRaw(t, eg)
		c.send(t, "POST /echo HTTP/1.1\r\nHost: nowhere.t.local\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
		resp, _ := c.read(t, "POST")
		if resp.StatusCode != 404 || resp.Header.Get(proxy.HeaderError) != "egress_denied" {
			t.Fatalf("status %d %q, want 404 egress_denied", resp.StatusCode, resp.Header.Get(proxy.HeaderError))
		}
	})

	t.Run("HTTP/1.0 keep-alive and close", func(t *testing.T) {
		c := dialRaw(t, eg)
		for i := 0; i < 2; i++ {
			c.send(t, "GET /head HTTP/1.0\r\nHost: bodies.t.local\r\nConnection: keep-alive\r\n\r\n")
			resp, body := c.read(t, "GET")
			if resp.StatusCode != 200 || len(body) != 1234 || resp.Close {
				t.Fatalf("1.0 keep-alive %d: %d len %d close %v", i, resp.StatusCode, len(body), resp.Close)
			}
		}
		// A chunked upstream answer reaches a 1.0 client de-chunked, ended by close.
		c.send(t, "GET /chunked HTTP/1.0\r\nHost: bodies.t.local\r\nConnection: keep-alive\r\n\r\n")
		resp, body := c.read(t, "GET")
		if resp.StatusCode != 200 || body != "part0;part1;part2;" || len(resp.TransferEncoding) != 0 {
			t.Fatalf("1.0 chunked: %d %q %v", resp.StatusCode, body, resp.TransferEncoding)
		}
		c.expectClosed(t)

		c = dialRaw(t, eg)
		c.send(t, "GET /head HTTP/1.0\r\nHost: bodies.t.local\r\n\r\n")
		if resp, body = c.read(t, "GET"); resp.StatusCode != 200 || len(body) != 1234 {
			t.Fatalf("1.0 close: %d len %d", resp.StatusCode, len(body))
		}
		c.expectClosed(t)
	})

	t.Run("100 MB request body streams", func(t *testing.T) {
		growth := measureAlloc(t, func() {
			req := newReq(t, "POST", "http://bodies.t.local/count", io.LimitReader(&pattern{}, bigBody))
			req.ContentLength = bigBody
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != fmt.Sprint(bigBody) {
				t.Fatalf("upstream counted %q (status %d), want %d", body, resp.StatusCode, bigBody)
			}
		})
		t.Logf("100 MB request: %d KiB allocated", growth>>10)
	})

	t.Run("100 MB response body streams", func(t *testing.T) {
		growth := measureAlloc(t, func() {
			resp, err := client.Get("http://bodies.t.local/big")
			if err != nil {
				t.Fatal(err)
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || n != bigBody {
				t.Fatalf("read %d bytes (%v), want %d", n, err, bigBody)
			}
		})
		t.Logf("100 MB response: %d KiB allocated", growth>>10)
	})
}

// measureAlloc runs f and fails the test when it allocated anywhere near a body's
// worth: everything in this process (client, meshd, upstream) counts, so a relay that
// buffered the body would show 100 MB or more.
func measureAlloc(t *testing.T, f func()) uint64 {
	t.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	growth := after.TotalAlloc - before.TotalAlloc
	if growth > 32<<20 {
		t.Fatalf("allocated %d MiB while relaying a 100 MB body, want < 32 MiB", growth>>20)
	}
	return growth
}

func TestServerSentEventsFlush(t *testing.T) {
	release := make(chan struct{})
	sse := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "data: two\n\n")
	}))
	srv, client := meshDef{services: []svcDef{{name: "sse.t.local", node: "sse", port: sse.Port}}}.start(t)

	check := func(t *testing.T, c *http.Client, release func()) {
		resp, err := c.Get("http://sse.t.local/events")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		// The first event arrives while the upstream still holds the second.
		for _, want := range []string{"data: one\n", "\n"} {
			if line, err := br.ReadString('\n'); err != nil || line != want {
				t.Fatalf("read %q (%v), want %q", line, err, want)
			}
		}
		release()
		rest, err := io.ReadAll(br)
		if err != nil || string(rest) != "data: two\n\n" {
			t.Fatalf("rest %q (%v)", rest, err)
		}
	}
	t.Run("http1", func(t *testing.T) { check(t, client, func() { release <- struct{}{} }) })
	t.Run("h2c", func(t *testing.T) {
		check(t, testutil.H2CClient(t, srv.EgressAddr()), func() { release <- struct{}{} })
	})
}

func TestUpstreamKeepAlive(t *testing.T) {
	up := testutil.StartHTTP(t, echoHandler("ka"))
	_, client := meshDef{services: []svcDef{{name: "ka.t.local", node: "ka", port: up.Port}}}.start(t)

	for i := 0; i < 50; i++ {
		getEcho(t, client, newReq(t, "GET", "http://ka.t.local/", nil))
	}
	if n := up.Accepted(); n != 1 {
		t.Fatalf("50 requests over one client connection opened %d upstream connections, want 1", n)
	}

	// The upstream closes its idle connection; the next GET must not fail.
	up.Listener.CloseAll()
	for i := 0; i < 3; i++ {
		getEcho(t, client, newReq(t, "GET", "http://ka.t.local/again", nil))
	}
	if n := up.Accepted(); n != 2 {
		t.Fatalf("after the upstream closed its connection: %d connections, want 2", n)
	}
}

func TestBadRequests(t *testing.T) {
	up := testutil.StartHTTP(t, echoHandler("echo"))
	srv, client := meshDef{services: []svcDef{{name: "echo.t.local", node: "echo", port: up.Port}}}.start(t)

	for _, tc := range []struct{ name, req string }{
		{"malformed request line", "GARBAGE\r\n\r\n"},
		{"two Host headers", "GET / HTTP/1.1\r\nHost: echo.t.local\r\nHost: other.t.local\r\n\r\n"},
		{"CL and TE", "POST / HTTP/1.1\r\nHost: echo.t.local\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, srv.EgressAddr())
			c.send(t, tc.req)
			resp, body := c.read(t, "GET")
			if resp.StatusCode != 400 || resp.Header.Get(proxy.HeaderError) != "bad_request" {
				t.Fatalf("status %d %s=%q body %q, want 400 bad_request", resp.StatusCode, proxy.HeaderError, resp.Header.Get(proxy.HeaderError), body)
			}
			c.expectClosed(t)
			getEcho(t, client, newReq(t, "GET", "http://echo.t.local/after", nil))
		})
	}
	if up.Accepted() != 1 {
		t.Fatalf("bad requests reached the upstream: %d connections", up.Accepted())
	}
}
