package proxy_test

import (
	"bytes"
	"io"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// TestMaxReplayBody: Options.MaxReplayBody (meshd run --max-replay-body) is the one
// bound on the request body kept for a retry, for HTTP/1.1 and h2c alike: a body within
// it is retried, a larger one is sent once and its 5xx relayed.
func TestMaxReplayBody(t *testing.T) {
	var hits atomic.Int64
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		hits.Add(1)
		w.WriteHeader(500)
	}))
	route := `{match: {prefix: /}, action: {weightedTargets: [{virtualNode: svc, weight: 1}]}, retryPolicy: {maxRetries: 2, perRetryTimeout: {unit: s, value: 5}, httpRetryEvents: [server-error]}}`
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", MaxReplayBody: 1024}, resMesh([]int{up.Port}, "", route))
	for _, tc := range []struct {
		name     string
		client   *http.Client
		size     int
		attempts int64
	}{
		{"http1 within the bound", testutil.HTTPClient(t, srv.EgressAddr()), 1024, 3},
		{"http1 over the bound", testutil.HTTPClient(t, srv.EgressAddr()), 1025, 1},
		{"h2c within the bound", testutil.H2CClient(t, srv.EgressAddr()), 1024, 3},
		{"h2c over the bound", testutil.H2CClient(t, srv.EgressAddr()), 4096, 1},
	} {
		before := hits.Load()
		resp, err := tc.client.Post("http://svc.t.local/", "application/octet-stream", bytes.NewReader(make([]byte, tc.size)))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 500 {
			t.Fatalf("%s: status %d, want the upstream's 500", tc.name, resp.StatusCode)
		}
		if got := hits.Load() - before; got != tc.attempts {
			t.Errorf("%s: upstream saw %d attempts, want %d", tc.name, got, tc.attempts)
		}
	}
}
