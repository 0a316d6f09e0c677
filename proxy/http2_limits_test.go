package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// TestHTTP2HeadLimits: an h2c request head is bounded as an HTTP/1.1 one is: more than
// 100 fields, or more than 60 KiB of fields, is refused (431 or a refused stream), never
// forwarded.
func TestHTTP2HeadLimits(t *testing.T) {
	var reached int
	var mu sync.Mutex
	up := testutil.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		reached++
		mu.Unlock()
	}))
	srv, _ := meshDef{services: []svcDef{
		{name: "h2.t.local", node: "h2", port: up.Port, proto: "http2", routes: []string{
			`{http2Route: {match: {prefix: /}, action: {weightedTargets: [{virtualNode: h2, weight: 1}]}}}`}},
	}}.start(t)
	c := testutil.H2CClient(t, srv.EgressAddr())
	send := func(fields int, size int) (int, string, error) {
		req, _ := http.NewRequest("GET", "http://h2.t.local/", nil)
		for i := range fields {
			req.Header.Set(fmt.Sprintf("X-F%d", i), strings.Repeat("v", size))
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, resp.Header.Get(proxy.HeaderError), nil
	}
	if code, _, err := send(10, 10); err != nil || code != 200 {
		t.Fatalf("a small head: %d %v", code, err)
	}
	if code, xerr, err := send(150, 1); err != nil || code != 431 || xerr != "bad_request" {
		t.Fatalf("150 fields: %d %q %v, want 431 bad_request", code, xerr, err)
	}
	if code, _, err := send(20, 4<<10); err == nil && code != 431 {
		t.Fatalf("80 KiB of fields: %d, want 431 or a refused stream", code)
	}
	mu.Lock()
	defer mu.Unlock()
	if reached != 1 {
		t.Fatalf("the upstream saw %d requests, want only the small one", reached)
	}
}

// TestHTTP2StalledStreamsBoundedMemory: an h2c client whose 100 streams stop reading
// large responses does not make meshd buffer net/http's default 4 MiB per stream: the
// receive windows (256 KiB per stream, 1 MiB per connection) keep the heap bounded.
func TestHTTP2StalledStreamsBoundedMemory(t *testing.T) {
	chunk := make([]byte, 64<<10)
	var pushed atomic.Int64 // bytes the upstream managed to write
	up := testutil.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		for i := 0; i < 128 && r.Context().Err() == nil; i++ { // up to 8 MiB each
			if _, err := w.Write(chunk); err != nil {
				return
			}
			_ = rc.Flush()
			pushed.Add(int64(len(chunk)))
		}
	}))
	srv, _ := meshDef{services: []svcDef{
		{name: "h2.t.local", node: "h2", port: up.Port, proto: "http2", routes: []string{
			`{http2Route: {match: {prefix: /}, action: {weightedTargets: [{virtualNode: h2, weight: 1}]}}}`}},
	}}.start(t)
	// The client's own windows are small, as a stalled client's effectively are, so
	// what grows is meshd's buffering, not the test client's.
	c := testutil.H2CClient(t, srv.EgressAddr())
	c.Timeout = 0
	c.Transport.(*http.Transport).HTTP2 = &http.HTTP2Config{MaxReceiveBufferPerStream: 64 << 10, MaxReceiveBufferPerConnection: 1 << 20}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://h2.t.local/", nil)
			resp, err := c.Do(req)
			if err != nil {
				return
			}
			<-ctx.Done() // never read the body
			resp.Body.Close()
		})
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	// Let the upstream push what the windows allow: until its count stops growing.
	for last, deadline := int64(-1), time.Now().Add(10*time.Second); time.Now().Before(deadline); {
		time.Sleep(250 * time.Millisecond)
		cur := pushed.Load()
		if cur == last && cur > 0 {
			break
		}
		last = cur
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	cancel()
	wg.Wait()
	// meshd, the test's client and upstream share this heap: all of them together must
	// stay far below the 400 MiB that 4 MiB per stream would take.
	if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > 128<<20 {
		t.Fatalf("heap grew by %d MiB with 100 stalled streams", grew>>20)
	}
}
