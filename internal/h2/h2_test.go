package h2

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// serve runs an h2.Server with h on a loopback listener.
func serve(t *testing.T, h http.Handler, lim Limits) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Handler: h, Limits: lim}
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.ServeConn(context.Background(), c, nil, ConnInfo{RemoteAddr: c.RemoteAddr().String()})
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		_ = s.Close()
		wg.Wait()
	})
	return s, ln.Addr().String()
}

// stdClient is net/http's HTTP/2 client with prior knowledge.
func stdClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}, Timeout: 20 * time.Second}
}

// stdServer is net/http's h2c server.
func stdServer(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &p}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

func dialer() func(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
}

func echo(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Method", r.Method)
	w.Header().Set("X-Path", r.URL.RequestURI())
	w.Header().Set("X-Host", r.Host)
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	sum := sha256.Sum256(body)
	w.Header().Set("X-Sum", fmt.Sprintf("%x", sum))
	w.Header().Set("Trailer", "X-Trailer")
	_, _ = w.Write([]byte("ok:" + string(body[:min(len(body), 10)])))
	w.Header().Set("X-Trailer", "t-"+r.Header.Get("X-Req"))
}

// Both halves against net/http: meshd's server under net/http's client, meshd's client
// against net/http's server, and the two of meshd's together, with bodies both ways
// and trailers.
func TestInteropWithNetHTTP(t *testing.T) {
	_, meshSrv := serve(t, http.HandlerFunc(echo), Limits{})
	std := stdServer(t, http.HandlerFunc(echo))
	tr := &Transport{Dial: dialer()}
	defer tr.Close()
	clients := map[string]struct {
		c    *http.Client
		addr string
	}{
		"std client → meshd server":   {stdClient(), meshSrv},
		"meshd client → std server":   {&http.Client{Transport: tr}, std},
		"meshd client → meshd server": {&http.Client{Transport: tr}, meshSrv},
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	want := fmt.Sprintf("%x", sha256.Sum256(big))
	for name, tc := range clients {
		t.Run(name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", "http://"+tc.addr+"/p/a?q=1", bytes.NewReader(big))
			req.Header.Set("X-Req", "r1")
			resp, err := tc.c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 200 || resp.Header.Get("X-Sum") != want || string(body) != "ok:0123456789" {
				t.Fatalf("status %d sum %s body %q", resp.StatusCode, resp.Header.Get("X-Sum"), body)
			}
			if resp.Header.Get("X-Path") != "/p/a?q=1" || resp.Header.Get("X-Method") != "POST" {
				t.Errorf("path %q method %q", resp.Header.Get("X-Path"), resp.Header.Get("X-Method"))
			}
			if got := resp.Trailer.Get("X-Trailer"); got != "t-r1" {
				t.Errorf("trailer %q, want t-r1 (trailer map %v)", got, resp.Trailer)
			}
			// Many concurrent streams on the shared connection(s).
			var wg sync.WaitGroup
			errs := make(chan error, 200)
			for i := range 200 {
				wg.Go(func() {
					r, err := tc.c.Get(fmt.Sprintf("http://%s/n/%d", tc.addr, i))
					if err != nil {
						errs <- err
						return
					}
					b, _ := io.ReadAll(r.Body)
					r.Body.Close()
					if r.StatusCode != 200 || string(b) != "ok:" || r.Header.Get("X-Path") != fmt.Sprintf("/n/%d", i) {
						errs <- fmt.Errorf("stream %d: %d %q %q", i, r.StatusCode, b, r.Header.Get("X-Path"))
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

// A response streamed in pieces reaches the client as each piece is flushed.
func TestServerFlushStreams(t *testing.T) {
	step := make(chan struct{})
	_, addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("first"))
		w.(http.Flusher).Flush()
		<-step
		_, _ = w.Write([]byte("second"))
	}), Limits{})
	resp, err := stdClient().Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first" {
		t.Fatalf("first piece: %q %v", buf, err)
	}
	close(step)
	rest, _ := io.ReadAll(resp.Body)
	if string(rest) != "second" {
		t.Fatalf("rest %q", rest)
	}
}

// Requests above the server's stream limit are refused, and the transport reports
// them as not processed.
func TestRefusedStreamIsUnprocessed(t *testing.T) {
	block := make(chan struct{})
	_, addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-block
	}), Limits{MaxConcurrentStreams: 1})
	defer close(block)
	raw := rawConn(t, addr)
	raw.writeHeaders(1, true, "GET", "/")
	raw.writeHeaders(3, true, "GET", "/")
	code := raw.waitReset(3)
	if code != "REFUSED_STREAM" {
		t.Fatalf("stream 3 reset with %s, want REFUSED_STREAM", code)
	}
}

// A slow reader of a large response holds meshd's buffers to the stream window.
func TestResponseBackPressure(t *testing.T) {
	const size = 32 << 20
	chunk := bytes.Repeat([]byte("x"), 32<<10)
	var wrote int64
	var mu sync.Mutex
	_, addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for n := 0; n < size; n += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			mu.Lock()
			wrote = int64(n + len(chunk))
			mu.Unlock()
		}
	}), Limits{})
	tr := &Transport{Dial: dialer(), Limits: Limits{StreamWindow: 64 << 10, ConnWindow: 1 << 20}}
	defer tr.Close()
	resp, err := (&http.Client{Transport: tr}).Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	time.Sleep(200 * time.Millisecond) // the server writes what the windows allow, then waits
	mu.Lock()
	w := wrote
	mu.Unlock()
	// Windows: 64 KiB (client stream) + the server's own buffer and socket buffers.
	if w > 8<<20 {
		t.Fatalf("server wrote %d bytes to a client that read none", w)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || n != size {
		t.Fatalf("read %d, %v", n, err)
	}
}

// ParseLimits sets the named fields over the base and refuses unknown keys and values
// out of range, naming them.
func TestParseLimits(t *testing.T) {
	l, err := ParseLimits("max-concurrent-streams=250, initial-stream-window=1048576,control-frame-rate=2.5", DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if l.MaxConcurrentStreams != 250 || l.StreamWindow != 1<<20 || l.ControlRate != 2.5 || l.ConnWindow != DefaultLimits().ConnWindow {
		t.Fatalf("parsed %+v", l)
	}
	for _, bad := range []string{"nope=1", "max-concurrent-streams", "initial-stream-window=-1", "rapid-reset-streams=1.5", "initial-connection-window=100"} {
		if _, err := ParseLimits(bad, DefaultLimits()); err == nil || !strings.Contains(err.Error(), strings.SplitN(bad, "=", 2)[0]) {
			t.Errorf("ParseLimits(%q) = %v, want an error naming it", bad, err)
		}
	}
}
