package proxy_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

// TestRetryWaitEndsWhenClientCloses: a request waiting out a Retry-After before its
// retry is abandoned as soon as its client closes the connection, over HTTP/1.1 (the
// wait watches the socket without reading it) and over HTTP/2 (the request's context):
// the endpoint's in-flight count drops at once, and no retry is sent later.
func TestRetryWaitEndsWhenClientCloses(t *testing.T) {
	var attempts atomic.Int64
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		attempts.Add(1)
		w.Header().Set("Retry-After", "20")
		w.WriteHeader(503)
	}))
	route := `{match: {prefix: /}, action: {weightedTargets: [{virtualNode: svc, weight: 1}]}, retryPolicy: {maxRetries: 2, perRetryTimeout: {unit: s, value: 5}, httpRetryEvents: [gateway-error]}, timeout: {perRequest: {unit: s, value: 60}}}`
	srv := testutil.StartMeshd(t, "app", resMesh([]int{up.Port}, "", route))
	inFlight := func() int64 {
		resp, err := http.Get("http://" + srv.AdminAddr() + "/clusters")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var page struct {
			Clusters []struct {
				Name      string
				Endpoints []struct{ InFlight int64 }
			}
		}
		if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
			t.Fatal(err)
		}
		for _, c := range page.Clusters {
			if c.Name == "svc" && len(c.Endpoints) > 0 {
				return c.Endpoints[0].InFlight
			}
		}
		t.Fatal("no svc cluster on /clusters")
		return 0
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not happen within 5s", what)
			}
		}
	}
	check := func(t *testing.T, send func() (stop func())) {
		before := attempts.Load()
		stop := send()
		waitFor("the first attempt", func() bool { return attempts.Load() == before+1 })
		waitFor("the wait before the retry", func() bool { return inFlight() == 1 })
		stop()
		waitFor("the request's end after its client left", func() bool { return inFlight() == 0 })
		if got := attempts.Load() - before; got != 1 {
			t.Fatalf("%d attempts reached the upstream, want 1", got)
		}
	}
	t.Run("http1", func(t *testing.T) {
		check(t, func() func() {
			c, err := net.Dial("tcp", srv.EgressAddr())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc.t.local\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			return func() { _ = c.Close() }
		})
	})
	t.Run("h2c", func(t *testing.T) {
		check(t, func() func() {
			client := testutil.H2CClient(t, srv.EgressAddr())
			req, _ := http.NewRequest("GET", "http://svc.t.local/", nil)
			done := make(chan struct{})
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				defer close(done)
				resp, err := client.Do(req.WithContext(ctx))
				if err == nil {
					resp.Body.Close()
				} else if !strings.Contains(err.Error(), "canceled") {
					t.Errorf("h2c request: %v", err)
				}
			}()
			return func() { cancel(); <-done }
		})
	})
}
