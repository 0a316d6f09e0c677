package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

// heldUpstream answers 200 only once release is closed (or the request is cancelled);
// each arriving request is announced on arrived.
type heldUpstream struct {
	*testutil.Upstream
	arrived chan string
	release chan struct{}
}

func startHeld(t *testing.T, capacity int) *heldUpstream {
	t.Helper()
	h := &heldUpstream{arrived: make(chan string, capacity), release: make(chan struct{})}
	h.Upstream = testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.arrived <- r.URL.Path
		select {
		case <-h.release:
			_, _ = io.WriteString(w, "released "+r.URL.Path)
		case <-r.Context().Done():
		}
	}))
	// Registered after the server, so it runs first: handlers return before Close waits.
	t.Cleanup(h.releaseAll)
	return h
}

func (h *heldUpstream) releaseAll() {
	select {
	case <-h.release:
	default:
		close(h.release)
	}
}

// waitArrived waits for n requests to reach the upstream, bounded in time.
func (h *heldUpstream) waitArrived(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for i := 0; i < n; i++ {
		select {
		case <-h.arrived:
		case <-timeout:
			t.Fatalf("%d of %d requests reached the upstream", i, n)
		}
	}
}

// asyncGet sends a GET in the background and reports its status (or error).
func asyncGet(c *http.Client, url string) <-chan result {
	ch := make(chan result, 1)
	go func() {
		resp, err := c.Get(url)
		if err != nil {
			ch <- result{err: err}
			return
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		ch <- result{status: resp.StatusCode, body: string(body), err: err, header: resp.Header}
	}()
	return ch
}

type result struct {
	status int
	body   string
	header http.Header
	err    error
}

func wait(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("request did not complete")
		return result{}
	}
}

// eventually polls cond until it holds, for at most 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestGracefulDrain(t *testing.T) {
	t.Run("http1", func(t *testing.T) { testDrain(t, false) })
	t.Run("h2c", func(t *testing.T) { testDrain(t, true) })
}

// testDrain holds 20 requests at the upstream, over 20 HTTP/1.1 connections or one
// h2c connection, while meshd shuts down.
func testDrain(t *testing.T, h2c bool) {
	const n = 20
	held := startHeld(t, n)
	srv, client := meshDef{services: []svcDef{{name: "slow.t.local", node: "slow", port: held.Port}}}.start(t)
	if h2c {
		client = testutil.H2CClient(t, srv.EgressAddr())
	}
	adminClient := testutil.HTTPClient(t, srv.AdminAddr())

	results := make([]<-chan result, n)
	for i := range results {
		results[i] = asyncGet(client, fmt.Sprintf("http://slow.t.local/r%d", i))
	}
	held.waitArrived(t, n)

	shutdown := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		shutdown <- srv.Shutdown(ctx)
	}()

	eventually(t, "/ready to fail while draining", func() bool {
		resp, err := adminClient.Get("http://admin/ready")
		if err != nil {
			t.Fatalf("admin during drain: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	eventually(t, "new connections to be refused", func() bool {
		c, err := net.Dial("tcp", srv.EgressAddr())
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned %v with %d requests in flight", err, n)
	default:
	}

	held.releaseAll()
	for i, ch := range results {
		if r := wait(t, ch); r.err != nil || r.status != 200 {
			t.Fatalf("request %d: status %d (%v)", i, r.status, r.err)
		}
	}
	select {
	case err := <-shutdown:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Shutdown did not return after the requests completed")
	}
	if c, err := net.Dial("tcp", srv.AdminAddr()); err == nil {
		c.Close()
		t.Fatal("admin still accepting after Shutdown")
	}
}
