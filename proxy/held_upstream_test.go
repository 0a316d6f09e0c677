package proxy_test

import (
	"io"
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

// startHeldH2C is startHeld over h2c.
func startHeldH2C(t *testing.T, capacity int) *heldUpstream {
	t.Helper()
	h := &heldUpstream{arrived: make(chan string, capacity), release: make(chan struct{})}
	h.Upstream = testutil.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.arrived <- r.URL.Path
		select {
		case <-h.release:
			_, _ = io.WriteString(w, "released "+r.URL.Path)
		case <-r.Context().Done():
		}
	}))
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
