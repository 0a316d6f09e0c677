package proxy_test

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

// TestPerTryTimeoutStartsWithTheAttempt: a replayable request body the client is slow to
// send is read before the first attempt; that time is the client's, so the route's
// per-try timeout (300 ms) counts from the attempt, not from the request head (the
// client here takes 500 ms to send its body): one attempt, 200, no retry.
func TestPerTryTimeoutStartsWithTheAttempt(t *testing.T) {
	var hits atomic.Int64
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
	}))
	srv := testutil.StartMeshd(t, "app", resMesh([]int{up.Port}, "",
		`{match: {prefix: /}, action: {weightedTargets: [{virtualNode: svc, weight: 1}]}, retryPolicy: {maxRetries: 1, perRetryTimeout: {unit: ms, value: 300}, httpRetryEvents: [gateway-error]}}`))
	c := dialRaw(t, srv.EgressAddr())
	c.send(t, "POST / HTTP/1.1\r\nHost: svc.t.local\r\nContent-Length: 100\r\n\r\n")
	time.Sleep(500 * time.Millisecond)
	c.send(t, strings.Repeat("x", 100))
	resp, body := c.read(t, "POST")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d (%s): %s", resp.StatusCode, resp.Header.Get("X-Meshd-Error"), body)
	}
	if n := hits.Load(); n != 1 {
		t.Errorf("upstream saw %d requests, want 1", n)
	}
	if r := readStats(t, srv).Clusters["svc"]["retries"]; r != 0 {
		t.Errorf("cluster retries = %d, want 0 (the first attempt timed out before it began)", r)
	}
}

// TestPerTryTimeoutAfterSlotWait: a request that waits for a connectionPool slot
// (maxConnections 1, held 700 ms by another request) starts its per-try timeout (1 s)
// when its attempt starts: its own 500 ms exchange succeeds without a retry.
func TestPerTryTimeoutAfterSlotWait(t *testing.T) {
	var hits atomic.Int64
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path == "/hold" {
			time.Sleep(700 * time.Millisecond)
		} else {
			time.Sleep(500 * time.Millisecond)
		}
		w.WriteHeader(http.StatusOK)
	}))
	srv := testutil.StartMeshd(t, "app", resMesh([]int{up.Port}, "connectionPool: {http: {maxConnections: 1, maxPendingRequests: 10}}",
		`{match: {prefix: /}, action: {weightedTargets: [{virtualNode: svc, weight: 1}]}, retryPolicy: {maxRetries: 1, perRetryTimeout: {unit: ms, value: 1000}, httpRetryEvents: [gateway-error]}}`))
	hold := dialRaw(t, srv.EgressAddr())
	hold.send(t, "GET /hold HTTP/1.1\r\nHost: svc.t.local\r\n\r\n")
	time.Sleep(50 * time.Millisecond) // the hold takes the only slot first
	c := dialRaw(t, srv.EgressAddr())
	c.send(t, "GET /b HTTP/1.1\r\nHost: svc.t.local\r\n\r\n")
	if resp, body := c.read(t, "GET"); resp.StatusCode != http.StatusOK {
		t.Fatalf("the request that waited for a slot: status %d (%s): %s", resp.StatusCode, resp.Header.Get("X-Meshd-Error"), body)
	}
	if resp, body := hold.read(t, "GET"); resp.StatusCode != http.StatusOK {
		t.Fatalf("the holding request: status %d: %s", resp.StatusCode, body)
	}
	if n := hits.Load(); n != 2 {
		t.Errorf("upstream saw %d requests, want 2", n)
	}
	if r := readStats(t, srv).Clusters["svc"]["retries"]; r != 0 {
		t.Errorf("cluster retries = %d, want 0", r)
	}
}
