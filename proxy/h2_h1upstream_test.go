package proxy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

// TestH2CToHTTP1SharedConnections: requests of HTTP/2 clients to an HTTP/1.1 upstream go
// over the endpoint's pooled keep-alive connections, the same ones the HTTP/1.1 fast
// path uses: sequential h2c requests, then an HTTP/1.1 request, then h2c again, all on
// one upstream connection.
func TestH2CToHTTP1SharedConnections(t *testing.T) {
	up := testutil.StartHTTP(t, echoHandler("h1"))
	srv, _ := meshDef{services: []svcDef{{name: "h1.t.local", node: "h1", port: up.Port}}}.start(t)
	h2client := testutil.H2CClient(t, srv.EgressAddr())
	h2req := func(i int) {
		t.Helper()
		method, body := "GET", ""
		if i%2 == 1 {
			method, body = "POST", strings.Repeat("b", i*100)
		}
		info := getEcho(t, h2client, newReq(t, method, "http://h1.t.local/x", strings.NewReader(body)))
		if info.Name != "h1" || info.Proto != "HTTP/1.1" || info.Body != body || info.Method != method {
			t.Fatalf("request %d: %+v", i, info)
		}
	}
	for i := range 4 {
		h2req(i)
	}
	c := dialRaw(t, srv.EgressAddr())
	c.send(t, "GET /fast HTTP/1.1\r\nHost: h1.t.local\r\nConnection: close\r\n\r\n")
	if resp, _ := c.read(t, "GET"); resp.StatusCode != 200 {
		t.Fatalf("HTTP/1.1 request: %d", resp.StatusCode)
	}
	c.expectClosed(t) // meshd put the upstream connection back before closing this one
	for i := 4; i < 8; i++ {
		h2req(i)
	}
	if n := up.Accepted(); n != 1 {
		t.Errorf("the upstream accepted %d connections, want 1 shared by every request", n)
	}
}

// TestH2CToHTTP1StaleKeepAlive: an HTTP/1.1 upstream that closes each connection after
// its response without announcing it leaves meshd's pooled connection stale; the h2c
// client's next request is replayed on a new connection, not failed.
func TestH2CToHTTP1StaleKeepAlive(t *testing.T) {
	up := testutil.StartRaw(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if line == "\r\n" {
				break
			}
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	srv, _ := meshDef{services: []svcDef{{name: "raw.t.local", node: "raw", port: up.Port}}}.start(t)
	h2client := testutil.H2CClient(t, srv.EgressAddr())
	for i := range 4 {
		resp, err := h2client.Get("http://raw.t.local/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("request %d: %d %q, want 200 ok (a stale connection is replaced)", i, resp.StatusCode, b)
		}
		time.Sleep(30 * time.Millisecond) // the upstream's close arrives
	}
	if n := up.Accepted(); n != 4 {
		t.Errorf("accepted %d, want 4", n)
	}
}

// TestH2CToHTTP1Trailers: request trailers of an h2c client reach an HTTP/1.1 upstream
// (a chunked request body with its trailer section), and the upstream's response
// trailers, announced or not, reach the client.
func TestH2CToHTTP1Trailers(t *testing.T) {
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Sum")
		_, _ = io.WriteString(w, string(b)+"|"+r.Trailer.Get("X-Req")+"|"+strings.Join(r.TransferEncoding, ","))
		_ = http.NewResponseController(w).Flush()
		w.Header().Set("X-Sum", "s1")
		w.Header().Set(http.TrailerPrefix+"X-Late", "late")
	}))
	srv, _ := meshDef{services: []svcDef{{name: "h1.t.local", node: "h1", port: up.Port}}}.start(t)
	h2client := testutil.H2CClient(t, srv.EgressAddr())
	for range 2 {
		pr, pw := io.Pipe()
		req := newReq(t, "POST", "http://h1.t.local/t", pr)
		req.Trailer = http.Header{"X-Req": nil}
		go func() {
			_, _ = io.WriteString(pw, "streamed")
			req.Trailer.Set("X-Req", "r1")
			_ = pw.Close()
		}()
		resp, err := h2client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(b) != "streamed|r1|chunked" {
			t.Fatalf("%q %v, want the body, the request trailer and a chunked upstream request", b, err)
		}
		if resp.Trailer.Get("X-Sum") != "s1" || resp.Trailer.Get("X-Late") != "late" {
			t.Errorf("response trailers %v, want X-Sum and X-Late", resp.Trailer)
		}
	}
	if n := up.Accepted(); n != 1 {
		t.Errorf("accepted %d, want 1", n)
	}
}

// TestH2CConnectToHTTP1: an HTTP/2 client's CONNECT for an HTTP/1.1 cluster is refused
// with 405, as on the HTTP/1.1 front end; nothing reaches the upstream.
func TestH2CConnectToHTTP1(t *testing.T) {
	up := testutil.StartHTTP(t, echoHandler("h1"))
	srv, _ := meshDef{services: []svcDef{{name: "h1.t.local", node: "h1", port: up.Port}}}.start(t)
	h2client := testutil.H2CClient(t, srv.EgressAddr())
	req := &http.Request{Method: "CONNECT", URL: &url.URL{Scheme: "http", Host: "h1.t.local:80"}, Host: "h1.t.local:80", Header: http.Header{}}
	resp, err := h2client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Fatalf("CONNECT: %d, want 405", resp.StatusCode)
	}
	if n := up.Accepted(); n != 0 {
		t.Errorf("the upstream accepted %d connections, want none", n)
	}
}
