package proxy_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// TestPerRetryTimeoutMovesToGoodEndpoint: with one endpoint that never answers and one
// that does, perRetryTimeout cuts the hanging attempt and the retry succeeds on the
// other endpoint, over both forwarding paths.
func TestPerRetryTimeoutMovesToGoodEndpoint(t *testing.T) {
	hang := startHeld(t, 64)
	good, goodUp := startCounting(t, 200)
	route := `{match: {prefix: /}, action: {weightedTargets: [{virtualNode: svc, weight: 1}]}, retryPolicy: {maxRetries: 2, perRetryTimeout: {unit: ms, value: 200}, httpRetryEvents: [gateway-error]}}`
	srv := testutil.StartMeshd(t, "app", resMesh([]int{hang.Port, goodUp.Port}, "", route))
	const n = 8
	for _, c := range []struct {
		name   string
		client *http.Client
	}{{"http1", testutil.HTTPClient(t, srv.EgressAddr())}, {"h2c", testutil.H2CClient(t, srv.EgressAddr())}} {
		for i := range n {
			start := time.Now()
			if resp := get(t, c.client, "http://svc.t.local/"); resp.StatusCode != 200 {
				t.Fatalf("%s request %d: %d (%s), want 200 via the good endpoint", c.name, i, resp.StatusCode, resp.Header.Get("x-meshd-error"))
			}
			if el := time.Since(start); el > 5*time.Second {
				t.Fatalf("%s request %d took %v", c.name, i, el)
			}
		}
	}
	if good.hits.Load() != 2*n {
		t.Errorf("good endpoint served %d, want %d", good.hits.Load(), 2*n)
	}
	hung := len(hang.arrived)
	if hung == 0 {
		t.Fatal("the hanging endpoint was never picked: the per-retry timeout was not exercised")
	}
	if r := readStats(t, srv).Clusters["svc"]["retries"]; r != int64(hung) {
		t.Errorf("retries = %d, want one per hung attempt (%d)", r, hung)
	}
}

// TestLargeBodyNotRetried: a request body beyond the replay bound (64 KiB by default,
// the same for every protocol) is sent once: a 5xx is relayed, not retried. A body
// within it, small or larger than the HTTP/1.1 read buffer, is retried under the same
// policy, so the policy itself is live.
func TestLargeBodyNotRetried(t *testing.T) {
	testReplayBound(t, proxy.Options{Node: "app"}, []replayCase{
		{"http1 small", false, 1 << 10, 3},
		// One replay bound for every protocol (64 KiB by default): a 20 KiB body, larger
		// than the HTTP/1.1 read buffer, is retried over HTTP/1.1 as over HTTP/2.
		{"http1 over 16KiB", false, 20 << 10, 3},
		{"http1 over 64KiB", false, 70 << 10, 1},
		{"h2c small", true, 1 << 10, 3},
		{"h2c over 64KiB", true, 70 << 10, 1},
	})
}

// TestMaxReplayBody: Options.MaxReplayBody (meshd run --max-replay-body) is the one
// bound on the request body kept for a retry, for HTTP/1.1 and h2c alike: a body within
// it is retried, a larger one is sent once and its 5xx relayed.
func TestMaxReplayBody(t *testing.T) {
	testReplayBound(t, proxy.Options{Node: "app", MaxReplayBody: 1024}, []replayCase{
		{"http1 within the bound", false, 1024, 3},
		{"http1 over the bound", false, 1025, 1},
		{"h2c within the bound", true, 1024, 3},
		{"h2c over the bound", true, 4096, 1},
	})
}

type replayCase struct {
	name     string
	h2c      bool
	size     int
	attempts int64
}

// testReplayBound POSTs each case's body through meshd to an upstream that answers 500
// under a policy of two retries on server-error, and counts the attempts it saw.
func testReplayBound(t *testing.T, opts proxy.Options, cases []replayCase) {
	t.Helper()
	var hits atomic.Int64
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		hits.Add(1)
		w.WriteHeader(500)
	}))
	route := `{match: {prefix: /}, action: {weightedTargets: [{virtualNode: svc, weight: 1}]}, retryPolicy: {maxRetries: 2, perRetryTimeout: {unit: s, value: 5}, httpRetryEvents: [server-error]}}`
	srv := testutil.StartMeshdOpts(t, opts, resMesh([]int{up.Port}, "", route))
	for _, tc := range cases {
		client := testutil.HTTPClient(t, srv.EgressAddr())
		if tc.h2c {
			client = testutil.H2CClient(t, srv.EgressAddr())
		}
		before := hits.Load()
		resp, err := client.Post("http://svc.t.local/", "application/octet-stream", bytes.NewReader(make([]byte, tc.size)))
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

// TestRetryBudgetConfigured: the listener's retryBudget extension sets the cluster's
// budget. With n concurrent requests whose first attempt fails and whose retries are
// held at the upstream, exactly the allowed number of retries is outstanding; the others
// answer the failure at once, counted as overflow_max_retries (the absolute limit binds)
// or retry_budget_exhausted (the budget binds).
func TestRetryBudgetConfigured(t *testing.T) {
	cases := []struct {
		name         string
		budget       string
		n, admitted  int
		counter      string
		otherCounter string
	}{
		{"maxRetries binds", "retryBudget: {maxRetries: 1}", 4, 1, "overflow_max_retries", "retry_budget_exhausted"},
		{"minRetryConcurrency sets the floor", "retryBudget: {minRetryConcurrency: 5}", 7, 5, "retry_budget_exhausted", "overflow_max_retries"},
		{"maxRetries below the floor", "retryBudget: {minRetryConcurrency: 5, maxRetries: 2}", 5, 2, "overflow_max_retries", "retry_budget_exhausted"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			var seen sync.Map
			var heldRetries atomic.Int64
			up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if _, again := seen.LoadOrStore(r.Header.Get("X-Request-Id"), true); !again {
					w.WriteHeader(503) // first attempt of each request
					return
				}
				heldRetries.Add(1)
				select { // retries wait, holding the budget
				case <-release:
				case <-r.Context().Done():
				}
				_, _ = io.WriteString(w, "ok")
			}))
			t.Cleanup(func() {
				select {
				case <-release:
				default:
					close(release)
				}
			})
			srv := testutil.StartMeshd(t, "app", resMesh([]int{up.Port}, tc.budget, ""))
			client := testutil.HTTPClient(t, srv.EgressAddr())
			statuses := make(chan int, tc.n)
			for i := range tc.n {
				go func() {
					req, _ := http.NewRequest("GET", "http://svc.t.local/", nil)
					req.Header.Set("X-Request-Id", fmt.Sprintf("req-%d", i))
					resp, err := client.Do(req)
					if err != nil {
						statuses <- 0
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					statuses <- resp.StatusCode
				}()
			}
			timeout := time.After(10 * time.Second)
			for range tc.n - tc.admitted {
				select {
				case s := <-statuses:
					if s != 503 {
						t.Fatalf("a request refused a retry answered %d, want the upstream's 503", s)
					}
				case <-timeout:
					t.Fatal("requests refused a retry did not answer at once")
				}
			}
			eventually(t, "the admitted retries at the upstream", func() bool { return heldRetries.Load() == int64(tc.admitted) })
			st := readStats(t, srv).Clusters["svc"]
			if st["retries"] != int64(tc.admitted) || st[tc.counter] != int64(tc.n-tc.admitted) || st[tc.otherCounter] != 0 {
				t.Errorf("stats %+v, want %d retries and %d %s", st, tc.admitted, tc.n-tc.admitted, tc.counter)
			}
			var cl struct {
				Clusters []struct {
					Name       string
					Resilience struct{ RetriesInFlight int64 }
				}
			}
			adminJSON(t, srv, "/clusters", &cl)
			for _, c := range cl.Clusters {
				if c.Name == "svc" && c.Resilience.RetriesInFlight != int64(tc.admitted) {
					t.Errorf("/clusters retriesInFlight = %d, want %d", c.Resilience.RetriesInFlight, tc.admitted)
				}
			}
			close(release)
			for range tc.admitted {
				if s := <-statuses; s != 200 {
					t.Errorf("an admitted retry answered %d, want 200", s)
				}
			}
		})
	}
}
