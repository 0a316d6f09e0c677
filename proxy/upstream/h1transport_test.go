package upstream_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/balancer"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/internal/h1"
	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy/upstream"
	"github.com/meshd/meshd/router"
)

// h1Cluster is an HTTP/1.1 cluster with the one endpoint addr.
func h1Cluster(t *testing.T, addr string) *upstream.Cluster {
	t.Helper()
	c := upstream.New(router.ClusterRef{Name: "t", Protocol: "http"}, upstream.Options{Dialer: &net.Dialer{}, ConnectTimeout: 5 * time.Second})
	c.Follow(nil, discovery.Plan{Fixed: []discovery.Endpoint{{Address: addr}}})
	t.Cleanup(c.Close)
	return c
}

// outReq is a request as forward.RoundTrip hands it to the cluster's RoundTripper:
// URL.Host the endpoint, Host the authority.
func outReq(t *testing.T, ctx context.Context, method, addr, target string, body io.Reader, n int64) *http.Request {
	t.Helper()
	u, err := url.ParseRequestURI(target)
	if err != nil {
		t.Fatal(err)
	}
	u.Scheme, u.Host = "http", addr
	var rc io.ReadCloser = http.NoBody
	if body != nil {
		rc = io.NopCloser(body)
	}
	req := &http.Request{Method: method, URL: u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"X-Request-Id": {"rid"}}, Body: rc, ContentLength: n, Host: "svc.t.local"}
	return req.WithContext(ctx)
}

func roundTrip(t *testing.T, c *upstream.Cluster, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := c.RoundTripper().RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: body: %v", req.Method, req.URL, err)
	}
	return resp, string(b)
}

// waitOpen waits for the cluster's open connection count to reach n.
func waitOpen(t *testing.T, c *upstream.Cluster, n int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for c.OpenConns() != n {
		if time.Now().After(deadline) {
			t.Fatalf("open upstream connections %d, want %d", c.OpenConns(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestH1TransportRequests: GET, POST with a known length, and POST of unknown length
// (chunked, with trailers) reach a net/http server whole, with the request's fields and
// Host, without hop-by-hop fields; sequential requests share one kept-alive connection,
// the endpoint's pool's (the cluster counts it open).
func TestH1TransportRequests(t *testing.T) {
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Host", r.Host)
		w.Header().Set("X-Framing", fmt.Sprintf("cl=%d te=%v", r.ContentLength, r.TransferEncoding))
		w.Header().Set("X-Seen", r.Header.Get("X-Request-Id")+"|"+r.Header.Get("X-Secret")+"|"+r.Header.Get("Keep-Alive"))
		w.Header().Add("X-Multi", "a")
		w.Header().Add("X-Multi", "b")
		_, _ = fmt.Fprintf(w, "%s %s body=%s trailer=%s", r.Method, r.RequestURI, b, r.Trailer.Get("X-Sum"))
	}))
	c := h1Cluster(t, up.Addr)
	ctx := context.Background()
	for i := range 3 {
		get := outReq(t, ctx, "GET", up.Addr, "/a%2Fb?q=1&r", nil, 0)
		get.Header.Set("Connection", "X-Secret")
		get.Header.Set("X-Secret", "s")
		get.Header.Set("Keep-Alive", "timeout=1")
		resp, body := roundTrip(t, c, get)
		if resp.StatusCode != 200 || resp.Status != "200 OK" || body != "GET /a%2Fb?q=1&r body= trailer=" || resp.Proto != "HTTP/1.1" {
			t.Fatalf("GET %d: %s %s %q", i, resp.Status, resp.Proto, body)
		}
		if got := resp.Header.Get("X-Seen"); got != "rid||" {
			t.Errorf("GET: the upstream saw X-Request-Id|X-Secret|Keep-Alive %q, want only the first", got)
		}
		if got := resp.Header.Get("X-Host"); got != "svc.t.local" {
			t.Errorf("GET: Host %q", got)
		}
		if got := resp.Header.Values("X-Multi"); len(got) != 2 || got[0] != "a" || got[1] != "b" {
			t.Errorf("GET: X-Multi %q", got)
		}
		if resp.ContentLength != int64(len(body)) || resp.Header.Get("Content-Length") != strconv.Itoa(len(body)) {
			t.Errorf("GET: ContentLength %d, Content-Length %q, body of %d", resp.ContentLength, resp.Header.Get("Content-Length"), len(body))
		}
		if resp.Request != get {
			t.Error("GET: resp.Request is not the request")
		}

		post := outReq(t, ctx, "POST", up.Addr, "/p", strings.NewReader("hello"), 5)
		resp, body = roundTrip(t, c, post)
		if body != "POST /p body=hello trailer=" || resp.Header.Get("X-Framing") != "cl=5 te=[]" {
			t.Fatalf("POST sized: %q %q", body, resp.Header.Get("X-Framing"))
		}

		pr, pw := io.Pipe()
		chunked := outReq(t, ctx, "POST", up.Addr, "/c", pr, -1)
		chunked.Trailer = http.Header{"X-Sum": nil}
		go func() {
			_, _ = io.WriteString(pw, "stre")
			_, _ = io.WriteString(pw, "amed")
			chunked.Trailer.Set("X-Sum", "42") // filled before the body's EOF, as net/http's servers do
			_ = pw.Close()
		}()
		resp, body = roundTrip(t, c, chunked)
		if body != "POST /c body=streamed trailer=42" || resp.Header.Get("X-Framing") != "cl=-1 te=[chunked]" {
			t.Fatalf("POST chunked: %q %q", body, resp.Header.Get("X-Framing"))
		}

		empty := outReq(t, ctx, "PUT", up.Addr, "/e", nil, 0)
		resp, _ = roundTrip(t, c, empty)
		if resp.Header.Get("X-Framing") != "cl=0 te=[]" {
			t.Fatalf("PUT without a body: %q, want Content-Length: 0", resp.Header.Get("X-Framing"))
		}
	}
	if n := up.Accepted(); n != 1 {
		t.Errorf("the upstream accepted %d connections for sequential requests, want 1 kept alive", n)
	}
	waitOpen(t, c, 1)
	if _, ok := c.EndpointPool(up.Addr); !ok {
		t.Error("EndpointPool: the endpoint has no pool")
	}
}

// TestH1TransportNoBodyFraming: responses to HEAD, 204 and 304 end after their head
// whatever their fields say, and the connection stays in step for the next request.
func TestH1TransportNoBodyFraming(t *testing.T) {
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(204)
		case "/304":
			w.Header().Set("ETag", `"x"`)
			w.WriteHeader(304)
		default:
			w.Header().Set("Content-Length", "100")
			if r.Method != "HEAD" {
				_, _ = io.WriteString(w, strings.Repeat("x", 100))
			}
		}
	}))
	c := h1Cluster(t, up.Addr)
	for _, tc := range []struct {
		method, path string
		status       int
		cl           int64
		body         string
	}{
		{"HEAD", "/", 200, 100, ""},
		{"GET", "/204", 204, 0, ""},
		{"GET", "/304", 304, 0, ""},
		{"GET", "/", 200, 100, strings.Repeat("x", 100)},
		{"HEAD", "/", 200, 100, ""},
		{"GET", "/", 200, 100, strings.Repeat("x", 100)},
	} {
		resp, body := roundTrip(t, c, outReq(t, context.Background(), tc.method, up.Addr, tc.path, nil, 0))
		if resp.StatusCode != tc.status || resp.ContentLength != tc.cl || body != tc.body {
			t.Fatalf("%s %s: %d ContentLength %d body %q, want %d %d %q", tc.method, tc.path, resp.StatusCode, resp.ContentLength, body, tc.status, tc.cl, tc.body)
		}
		if tc.status == 304 && resp.Header.Get("Etag") != `"x"` {
			t.Errorf("304: ETag %q", resp.Header.Get("Etag"))
		}
	}
	if n := up.Accepted(); n != 1 {
		t.Errorf("the upstream accepted %d connections, want 1: bodyless responses keep the connection", n)
	}
}

// rawHTTP serves connections with respond, called for each request head read (body
// bytes, if any, are left unread); respond returning false closes the connection.
func rawHTTP(t *testing.T, respond func(c net.Conn, br *bufio.Reader, n int, reqHead string) bool) *testutil.Upstream {
	return testutil.StartRaw(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for n := 0; ; n++ {
			var head strings.Builder
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				head.WriteString(line)
				if line == "\r\n" {
					break
				}
			}
			if !respond(c, br, n, head.String()) {
				return
			}
		}
	})
}

// rawHTTPConn is rawHTTP on a listener of its own, handing respond the *net.TCPConn
// (CloseWrite); it counts the connections it accepted.
func rawHTTPConn(t *testing.T, respond func(c *net.TCPConn, br *bufio.Reader, reqHead string) bool) *rawServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{Addr: ln.Addr().String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					var head strings.Builder
					for {
						line, err := br.ReadString('\n')
						if err != nil {
							return
						}
						head.WriteString(line)
						if line == "\r\n" {
							break
						}
					}
					if !respond(c.(*net.TCPConn), br, head.String()) {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return s
}

type rawServer struct {
	Addr     string
	accepted atomic.Int64
}

func (s *rawServer) Accepted() int64 { return s.accepted.Load() }

// TestH1TransportUntilClose: a response without framing ends when the upstream closes;
// its length is unknown and its connection is not kept.
func TestH1TransportUntilClose(t *testing.T) {
	up := rawHTTP(t, func(c net.Conn, _ *bufio.Reader, _ int, _ string) bool {
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
		return false
	})
	c := h1Cluster(t, up.Addr)
	for range 2 {
		resp, body := roundTrip(t, c, outReq(t, context.Background(), "GET", up.Addr, "/", nil, 0))
		if body != "until the end" || resp.ContentLength != -1 || !resp.Close {
			t.Fatalf("%q ContentLength %d Close %v", body, resp.ContentLength, resp.Close)
		}
		waitOpen(t, c, 0)
	}
	if n := up.Accepted(); n != 2 {
		t.Errorf("accepted %d, want 2 (a close-delimited body ends its connection)", n)
	}
}

// TestH1TransportResponseTrailers: a chunked response's trailers reach resp.Trailer
// when its body is read to the end: the announced names are keys (no values) before,
// and undeclared trailers are there too; hop-by-hop fields of the head are not in
// resp.Header.
func TestH1TransportResponseTrailers(t *testing.T) {
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		rc := http.NewResponseController(w)
		_, _ = io.WriteString(w, "first;")
		_ = rc.Flush()
		_, _ = io.WriteString(w, "second")
		w.Header().Set("X-Checksum", "abc")
		w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
	}))
	c := h1Cluster(t, up.Addr)
	for range 2 {
		resp, err := c.RoundTripper().RoundTrip(outReq(t, context.Background(), "GET", up.Addr, "/", nil, 0))
		if err != nil {
			t.Fatal(err)
		}
		if v, ok := resp.Trailer["X-Checksum"]; !ok || v != nil || len(resp.Trailer) != 1 {
			t.Errorf("before the body: Trailer %v, want the announced X-Checksum without a value", resp.Trailer)
		}
		if resp.ContentLength != -1 || len(resp.TransferEncoding) != 1 {
			t.Errorf("ContentLength %d TransferEncoding %v, want a chunked body", resp.ContentLength, resp.TransferEncoding)
		}
		for _, k := range []string{"Trailer", "Transfer-Encoding", "Connection"} {
			if _, ok := resp.Header[k]; ok {
				t.Errorf("hop-by-hop %s in resp.Header", k)
			}
		}
		b, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil || string(b) != "first;second" {
			t.Fatalf("body %q %v", b, err)
		}
		if resp.Trailer.Get("X-Checksum") != "abc" || resp.Trailer.Get("Grpc-Status") != "0" {
			t.Errorf("after the body: Trailer %v", resp.Trailer)
		}
	}
	if n := up.Accepted(); n != 1 {
		t.Errorf("accepted %d, want 1", n)
	}
}

// TestH1TransportStaleKeepAlive: an upstream that closes each connection after its
// response (without saying so) leaves a stale connection in the pool; the next request
// finds it closed and is sent again on a new one, transparently, when that is safe (the
// fast path's rule): an idempotent request (a GET, a PUT, a POST with an
// Idempotency-Key) whose body, if any, GetBody gives again. Requests whose body is gone
// get the error. (A POST with GetBody is sent again only when none of it was written:
// which it is depends on timing, so it is not tested here.)
func TestH1TransportStaleKeepAlive(t *testing.T) {
	up := rawHTTP(t, func(c net.Conn, br *bufio.Reader, _ int, head string) bool {
		if strings.Contains(head, "Content-Length: 4\r\n") {
			_, _ = br.Discard(4)
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return false
	})
	c := h1Cluster(t, up.Addr)
	do := func(req *http.Request) (*http.Response, error) {
		resp, err := c.RoundTripper().RoundTrip(req)
		if err == nil {
			_, _ = io.ReadAll(resp.Body)
			_ = resp.Body.Close()
		}
		// Let the upstream's close arrive, so the pooled connection is stale for sure.
		time.Sleep(50 * time.Millisecond)
		return resp, err
	}
	if _, err := do(outReq(t, context.Background(), "GET", up.Addr, "/", nil, 0)); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := do(outReq(t, context.Background(), "GET", up.Addr, "/", nil, 0)); err != nil {
			t.Fatalf("GET %d on a stale connection: %v, want it sent again on a new one", i, err)
		}
	}
	withBody := func(method string, getBody bool, hdr ...string) *http.Request {
		req := outReq(t, context.Background(), method, up.Addr, "/", strings.NewReader("body"), 4)
		if getBody {
			req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("body")), nil }
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		return req
	}
	if _, err := do(withBody("PUT", true)); err != nil {
		t.Fatalf("PUT with GetBody on a stale connection: %v", err)
	}
	if _, err := do(withBody("POST", true, "Idempotency-Key", "k1")); err != nil {
		t.Fatalf("POST with an Idempotency-Key and GetBody on a stale connection: %v", err)
	}
	for _, tc := range []struct {
		name string
		req  *http.Request
	}{{"PUT without GetBody", withBody("PUT", false)}, {"POST without GetBody", withBody("POST", false)}} {
		// A request that succeeds leaves a (stale) connection in the pool again.
		if _, err := do(outReq(t, context.Background(), "GET", up.Addr, "/", nil, 0)); err != nil {
			t.Fatal(err)
		}
		_, err := do(tc.req)
		if err == nil {
			t.Fatalf("%s on a stale connection succeeded: it was sent once already", tc.name)
		}
		if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") && !strings.Contains(err.Error(), "broken pipe") {
			t.Errorf("%s: %v, want the stale connection's EOF or reset", tc.name, err)
		}
	}
	// Each request that succeeded found the previous one's connection in the pool, stale,
	// and needed a new one; those that failed did not get one.
	if n := up.Accepted(); n != 8 {
		t.Errorf("accepted %d, want 8: one per request that succeeded", n)
	}
	waitOpen(t, c, 0)
}

// TestH1TransportMalformed: a malformed response head, or a malformed chunked body,
// comes back as an error the pipeline classifies as a protocol error (*h1.Error), and
// the connection is not kept.
func TestH1TransportMalformed(t *testing.T) {
	up := rawHTTP(t, func(c net.Conn, _ *bufio.Reader, _ int, head string) bool {
		if strings.HasPrefix(head, "GET /body") {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n")
		} else {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")
		}
		return true
	})
	c := h1Cluster(t, up.Addr)
	_, err := c.RoundTripper().RoundTrip(outReq(t, context.Background(), "GET", up.Addr, "/", nil, 0))
	var he *h1.Error
	if !errors.As(err, &he) {
		t.Fatalf("malformed head: %v, want an *h1.Error", err)
	}
	resp, err := c.RoundTripper().RoundTrip(outReq(t, context.Background(), "GET", up.Addr, "/body", nil, 0))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if string(b) != "abc" || !errors.As(err, &he) {
		t.Fatalf("malformed chunked body: %q %v, want abc then an *h1.Error", b, err)
	}
	waitOpen(t, c, 0)
}

// TestH1TransportInterim: a 101 the request did not ask for is a protocol
// error; other interim responses are skipped.
func TestH1TransportInterim(t *testing.T) {
	up := rawHTTP(t, func(c net.Conn, _ *bufio.Reader, _ int, head string) bool {
		if strings.HasPrefix(head, "GET /101") {
			_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
			return false
		}
		_, _ = io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	c := h1Cluster(t, up.Addr)
	resp, body := roundTrip(t, c, outReq(t, context.Background(), "GET", up.Addr, "/", nil, 0))
	if resp.StatusCode != 200 || body != "ok" || resp.Header.Get("Link") != "" {
		t.Fatalf("%d %q %v, want the final 200 only", resp.StatusCode, body, resp.Header)
	}
	_, err := c.RoundTripper().RoundTrip(outReq(t, context.Background(), "GET", up.Addr, "/101", nil, 0))
	if upstream.KindOf(err) != upstream.Protocol {
		t.Fatalf("unsolicited 101: %v, want a protocol error", err)
	}
}

// TestH1TransportCancel: a context that ends while the transport waits for the
// response head, or mid-body, makes it return at once with the context's error, and
// the connection is closed, not pooled (the upstream sees it close).
func TestH1TransportCancel(t *testing.T) {
	closed := make(chan struct{}, 4)
	up := rawHTTP(t, func(c net.Conn, br *bufio.Reader, _ int, head string) bool {
		if strings.HasPrefix(head, "GET /body") {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
		}
		// Then nothing more: wait for meshd to give up.
		_, _ = io.Copy(io.Discard, br)
		closed <- struct{}{}
		return false
	})
	c := h1Cluster(t, up.Addr)
	waitClosed := func(what string) {
		t.Helper()
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the upstream connection was not closed", what)
		}
		waitOpen(t, c, 0)
	}

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := c.RoundTripper().RoundTrip(outReq(t, ctx, "GET", up.Addr, "/head", nil, 0))
	if !errors.Is(err, context.Canceled) || time.Since(start) > 2*time.Second {
		t.Fatalf("cancel while waiting for the head: %v after %v, want context.Canceled at once", err, time.Since(start))
	}
	waitClosed("head")

	ctx, cancel2 := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel2()
	_, err = c.RoundTripper().RoundTrip(outReq(t, ctx, "GET", up.Addr, "/head", nil, 0))
	if !errors.Is(err, context.DeadlineExceeded) || !upstream.IsTimeout(err) {
		t.Fatalf("deadline while waiting for the head: %v, want context.DeadlineExceeded", err)
	}
	waitClosed("deadline")

	ctx, cancel3 := context.WithCancel(context.Background())
	defer cancel3()
	resp, err := c.RoundTripper().RoundTrip(outReq(t, ctx, "GET", up.Addr, "/body", nil, 0))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 7)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "partial" {
		t.Fatalf("first bytes %q %v", buf, err)
	}
	time.AfterFunc(100*time.Millisecond, cancel3)
	start = time.Now()
	_, err = resp.Body.Read(buf)
	if !errors.Is(err, context.Canceled) || time.Since(start) > 2*time.Second {
		t.Fatalf("cancel mid-body: %v after %v, want context.Canceled at once", err, time.Since(start))
	}
	_ = resp.Body.Close()
	waitClosed("mid-body")
	if n := up.Accepted(); n != 3 {
		t.Errorf("accepted %d, want 3: no connection of a cancelled exchange is reused", n)
	}
}

// TestH1TransportEarlyResponse: an upstream that answers before it has read the whole
// request body, and closes, still has its answer relayed, whether the body was written
// with the head (small) or by the concurrent writer (large); and an upstream that
// answers at once and then reads a streamed body (full duplex) gets the response head
// to the caller while the body is still being sent.
func TestH1TransportEarlyResponse(t *testing.T) {
	up := rawHTTPConn(t, func(c *net.TCPConn, br *bufio.Reader, head string) bool {
		if strings.HasPrefix(head, "POST /duplex") {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
			var b h1.BodyReader
			b.Reset(br, 0, true, false)
			buf := make([]byte, 100)
			for {
				n, err := b.Read(buf)
				if n > 0 {
					_, _ = fmt.Fprintf(c, "%x\r\n%s\r\n", n, buf[:n])
				}
				if err != nil {
					break
				}
			}
			_, _ = io.WriteString(c, "0\r\n\r\n")
			return true
		}
		_, _ = io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Length: 8\r\n\r\ntoo big\n")
		// Close gracefully, as servers do, so the answer is not lost to a reset.
		_ = c.CloseWrite()
		time.Sleep(200 * time.Millisecond)
		return false
	})
	c := h1Cluster(t, up.Addr)
	for _, n := range []int{1000, 32 << 20} {
		req := outReq(t, context.Background(), "POST", up.Addr, "/upload", strings.NewReader(strings.Repeat("x", n)), int64(n))
		resp, body := roundTrip(t, c, req)
		if resp.StatusCode != 413 || body != "too big\n" {
			t.Fatalf("body of %d: %d %q, want the upstream's early 413", n, resp.StatusCode, body)
		}
	}

	pr, pw := io.Pipe()
	defer pw.Close()
	resp, err := c.RoundTripper().RoundTrip(outReq(t, context.Background(), "POST", up.Addr, "/duplex", pr, -1))
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	for _, msg := range []string{"ping", "pong"} {
		if _, err := io.WriteString(pw, msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(br, got); err != nil || string(got) != msg {
			t.Fatalf("echo %q %v, want %q", got, err, msg)
		}
	}
	_ = pw.Close()
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("end of the duplex exchange: %q %v", rest, err)
	}
	_ = resp.Body.Close()
	// Both sides ended: the connection is reused.
	before := up.Accepted()
	resp, _ = roundTrip(t, c, outReq(t, context.Background(), "POST", up.Addr, "/duplex", strings.NewReader("again"), -1))
	if resp.StatusCode != 200 || up.Accepted() != before {
		t.Errorf("after a duplex exchange: %d, accepted %d → %d, want the connection kept", resp.StatusCode, before, up.Accepted())
	}
}

// TestH1TransportClientBodyFails: a request body that fails to read (the client's side)
// comes back from RoundTrip as that error, whether written with the head or by the
// concurrent writer, and the connection is closed.
func TestH1TransportClientBodyFails(t *testing.T) {
	up := rawHTTP(t, func(c net.Conn, br *bufio.Reader, _ int, _ string) bool {
		_, _ = io.Copy(io.Discard, br)
		return false
	})
	c := h1Cluster(t, up.Addr)
	boom := errors.New("client reset the stream")
	for _, tc := range []struct {
		name string
		n    int64
	}{{"sized", 100}, {"large", 1 << 20}, {"chunked", -1}} {
		body := io.MultiReader(strings.NewReader("some"), errReader{boom})
		_, err := c.RoundTripper().RoundTrip(outReq(t, context.Background(), "POST", up.Addr, "/", body, tc.n))
		if !errors.Is(err, boom) {
			t.Errorf("%s: %v, want the body's error", tc.name, err)
		}
	}
	waitOpen(t, c, 0)
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// TestH1TransportConcurrent: concurrent requests each get their own connection from the
// endpoint's pool, and every response is its own (run with -race).
func TestH1TransportConcurrent(t *testing.T) {
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write(b)
	}))
	c := h1Cluster(t, up.Addr)
	var wg sync.WaitGroup
	var failed atomic.Int32
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				msg := fmt.Sprintf("g%d-i%d", g, i)
				var n int64 = -1
				if i%2 == 0 {
					n = int64(len(msg))
				}
				resp, err := c.RoundTripper().RoundTrip(outReq(t, context.Background(), "POST", up.Addr, "/", strings.NewReader(msg), n))
				if err != nil {
					failed.Add(1)
					t.Error(err)
					return
				}
				b, err := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if err != nil || string(b) != msg {
					failed.Add(1)
					t.Errorf("%q %v, want %q", b, err, msg)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := up.Accepted(); n > 8 {
		t.Errorf("accepted %d connections for 8 concurrent callers", n)
	}
}

// TestH1TransportResponseHeader: the response head's fields reach resp.Header under
// net/http's canonical keys, repeated fields (whatever their case) in order; hop-by-hop
// fields and those Connection fields name are left out.
func TestH1TransportResponseHeader(t *testing.T) {
	up := rawHTTP(t, func(c net.Conn, _ *bufio.Reader, _ int, _ string) bool {
		_, _ = io.WriteString(c, "HTTP/1.1 299 Fine By Me\r\nx-custom-HEADER: a\r\nSet-Cookie: 1\r\nset-cookie: 2\r\n"+
			"Connection: x-a\r\nConnection: x-b\r\nConnection: x-c\r\nConnection: x-d\r\nConnection: x-e, keep-alive\r\n"+
			"X-A: 1\r\nX-E: 5\r\nKeep-Alive: timeout=5\r\nProxy-Connection: x\r\nUpgrade: no\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	c := h1Cluster(t, up.Addr)
	resp, body := roundTrip(t, c, outReq(t, context.Background(), "GET", up.Addr, "/", nil, 0))
	want := http.Header{"X-Custom-Header": {"a"}, "Set-Cookie": {"1", "2"}, "X-Kept": {"yes"}, "Content-Length": {"2"}}
	if body != "ok" || resp.Status != "299 Fine By Me" || len(resp.Header) != len(want) {
		t.Fatalf("%s %q header %v, want %v", resp.Status, body, resp.Header, want)
	}
	for k, v := range want {
		if got := resp.Header[k]; strings.Join(got, ",") != strings.Join(v, ",") {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	// The values are the response's own: the next exchange on the connection does not
	// change them.
	roundTrip(t, c, outReq(t, context.Background(), "GET", up.Addr, "/", nil, 0))
	if resp.Header.Get("X-Custom-Header") != "a" || resp.Header.Values("Set-Cookie")[1] != "2" {
		t.Errorf("header changed by the next exchange: %v", resp.Header)
	}
}

// BenchmarkH1Transport measures one GET through the HTTP/1.1 transport on a kept-alive
// connection to an upstream that answers with a fixed response, reading the body to its
// end: allocs/op are the transport's (the response, its header, the context watch).
func BenchmarkH1Transport(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: Mon, 01 Jan 2026 00:00:00 GMT\r\nContent-Length: 63\r\n\r\n" + strings.Repeat("x", 63))
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					for {
						line, err := br.ReadSlice('\n')
						if err != nil {
							return
						}
						if len(line) == 2 {
							break
						}
					}
					if _, err := c.Write(resp); err != nil {
						return
					}
				}
			}()
		}
	}()
	addr := ln.Addr().String()
	c := upstream.New(router.ClusterRef{Name: "b", Protocol: "http"}, upstream.Options{Dialer: &net.Dialer{}})
	c.Follow(nil, discovery.Plan{Fixed: []discovery.Endpoint{{Address: addr}}})
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req := (&http.Request{Method: "GET", URL: &url.URL{Scheme: "http", Host: addr, Path: "/bench"}, Host: "svc",
		Header: http.Header{"User-Agent": {"bench"}, "X-Request-Id": {"id"}}, Body: http.NoBody}).WithContext(ctx)
	rt := c.RoundTripper()
	buf := make([]byte, 1024)
	b.ReportAllocs()
	for b.Loop() {
		resp, err := rt.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		for {
			_, err := resp.Body.Read(buf)
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		_ = resp.Body.Close()
	}
}

// TestH1TransportStalledRequestBody: a client that stops sending the request body does
// not hold the exchange past its context: RoundTrip returns at its deadline (the body's
// writer, blocked in the client's Read, ends when the body does).
func TestH1TransportStalledRequestBody(t *testing.T) {
	up := rawHTTP(t, func(c net.Conn, br *bufio.Reader, _ int, _ string) bool {
		_, _ = io.Copy(io.Discard, br)
		return false
	})
	c := h1Cluster(t, up.Addr)
	for _, n := range []int64{100, 1 << 20, -1} {
		pr, pw := io.Pipe()
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		start := time.Now()
		_, err := c.RoundTripper().RoundTrip(outReq(t, ctx, "POST", up.Addr, "/", io.MultiReader(strings.NewReader("a"), pr), n))
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
			t.Errorf("body of %d stalled: %v after %v, want context.DeadlineExceeded at once", n, err, time.Since(start))
		}
		_ = pw.CloseWithError(errors.New("client gone"))
	}
	waitOpen(t, c, 0)
}

// TestH1TransportEndpointPool: given the balancer's pick (RoundTripEndpoint), the
// transport takes the connection pool hung on the endpoint, as the HTTP/1.1 front end
// does, instead of looking it up by address: the one connection serves every request.
// A pick that is not this cluster's endpoint, or not the request's address, is not
// trusted: the pool is looked up by the request's address as before.
func TestH1TransportEndpointPool(t *testing.T) {
	name := func(n string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, n) })
	}
	a := testutil.StartHTTP(t, name("a"))
	b := testutil.StartHTTP(t, name("b"))
	ca, cb := h1Cluster(t, a.Addr), h1Cluster(t, b.Addr)
	resA, err := ca.Pick(nil)
	if err != nil {
		t.Fatal(err)
	}
	resB, err := cb.Pick(nil)
	if err != nil {
		t.Fatal(err)
	}
	ert, ok := ca.RoundTripper().(upstream.EndpointRoundTripper)
	if !ok {
		t.Fatal("the HTTP/1.1 transport takes no endpoint")
	}
	for i, ep := range []*balancer.Endpoint{resA.Endpoint, resA.Endpoint, resB.Endpoint, resA.Endpoint} {
		resp, err := ert.RoundTripEndpoint(context.Background(), outReq(t, context.Background(), "GET", a.Addr, "/", nil, 0), ep)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		got, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if string(got) != "a" {
			t.Fatalf("request %d (pick %s) reached %q, want the request's address (a)", i, ep.Address, got)
		}
	}
	waitOpen(t, ca, 1)
	if n := cb.OpenConns(); n != 0 {
		t.Fatalf("the other cluster opened %d connections", n)
	}
}
