package proxy_test

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/meshd/meshd/internal/testutil"
)

// TestDefaultRetryBudgetSavesIntermittentFailures: with the default config (App Mesh's
// hidden retry policy, meshd's default retry budget), 8 concurrent clients against an
// endpoint failing one request in five (20%) all get 200: every failure is retried, and
// the budget never refuses a retry App Mesh would have made. (A failed request's retry
// succeeds, so any error left would be the budget's.)
func TestDefaultRetryBudgetSavesIntermittentFailures(t *testing.T) {
	var n atomic.Int64
	var seen sync.Map
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := n.Add(1)
		if _, retry := seen.LoadOrStore(r.Header.Get("X-Request-Id"), true); !retry && v%5 == 0 {
			w.WriteHeader(503)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	srv := testutil.StartMeshd(t, "app", resMesh([]int{up.Port}, "", ""))
	const clients, each = 8, 50
	var bad atomic.Int64
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			c := testutil.HTTPClient(t, srv.EgressAddr())
			for range each {
				resp, err := c.Get("http://svc.t.local/")
				if err != nil {
					bad.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					bad.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if b := bad.Load(); b != 0 {
		_, stats := adminGet(t, srv, "/stats")
		t.Fatalf("%d of %d requests failed; stats: %s", b, clients*each, stats)
	}
	if got := n.Load(); got <= clients*each {
		t.Fatalf("upstream saw %d attempts for %d requests: no retry happened", got, clients*each)
	}
}

// TestDefaultRetryBudgetBoundsRetryStorm: against a cluster where every first attempt
// fails and retries hang, the default budget admits at most its floor (32) of retries
// at once out of 64 concurrent requests; the rest answer at once with the failure and
// are counted as retry_budget_exhausted, so a failing cluster does not get a retry per
// request on top of its load.
func TestDefaultRetryBudgetBoundsRetryStorm(t *testing.T) {
	release := make(chan struct{})
	var first sync.Map
	var retries atomic.Int64
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, again := first.LoadOrStore(r.Header.Get("X-Request-Id"), true); !again {
			w.WriteHeader(503)
			return
		}
		retries.Add(1)
		<-release
		_, _ = io.WriteString(w, "ok")
	}))
	srv := testutil.StartMeshd(t, "app", resMesh([]int{up.Port}, "", ""))
	const n = 64
	codes := make(chan int, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			resp, err := testutil.HTTPClient(t, srv.EgressAddr()).Get("http://svc.t.local/")
			if err != nil {
				codes <- 0
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes <- resp.StatusCode
		})
	}
	refused := 0
	for refused < n-32 {
		if c := <-codes; c == 503 {
			refused++
		} else {
			t.Fatalf("a request answered %d while the retries hang", c)
		}
	}
	if r := retries.Load(); r > 32 {
		t.Fatalf("%d retries reached the upstream at once, want at most the budget's 32", r)
	}
	close(release)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Errorf("an admitted retry answered %d", c)
		}
	}
	if got := fmt.Sprint(retries.Load()); got != "32" {
		t.Errorf("retries made: %s, want 32", got)
	}
}
