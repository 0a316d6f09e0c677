package proxy_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

// TestH2RecycleKeepsRequestsApart: with the HTTP/2 front end recycling its per-request
// objects, concurrent streams on one connection mixing clean requests, retried ones,
// ones whose first attempt the per-try timeout abandoned (its transport may still be at
// work when the retry answers) and ones with a body each reach the upstream with their
// own path, fields and body, and get their own answer, with their own response fields
// (the request's and the upstream response's header maps are recycled too; some
// requests and responses carry more fields than a recycled map may hold). Run under
// -race: a recycled object still reached by an abandoned attempt or a timer is a
// reported race.
func TestH2RecycleKeepsRequestsApart(t *testing.T) {
	t.Run("h1-upstream", func(t *testing.T) { recycleApart(t, "") })
	t.Run("h2-upstream", func(t *testing.T) { recycleApart(t, "http2") })
}

func recycleApart(t *testing.T, proto string) {
	var mu sync.Mutex
	seen := map[string]int{}
	echo := echoHandler("up")
	start, route := func(t testing.TB, h http.Handler) *testutil.Upstream { return testutil.StartHTTP(t, h) }, "httpRoute"
	if proto == "http2" {
		start, route = testutil.StartH2C, "http2Route"
	}
	up := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path]++
		n := seen[r.URL.Path]
		mu.Unlock()
		id := r.Header.Get("X-Request-Id")
		w.Header().Set("X-Resp-"+id, id)
		if strings.HasSuffix(id, "3") {
			for k := range 10 {
				w.Header().Set(fmt.Sprintf("X-Pad-%d", k), id)
			}
		}
		switch {
		case strings.HasPrefix(r.URL.Path, "/flaky/") && n == 1:
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		case strings.HasPrefix(r.URL.Path, "/slow/") && n == 1:
			select {
			case <-r.Context().Done():
			case <-time.After(2 * time.Second):
			}
			return
		}
		echo.ServeHTTP(w, r)
	}))
	srv, _ := meshDef{services: []svcDef{{name: "up.t.local", node: "up", port: up.Port, proto: proto, routes: []string{
		`{` + route + `: {match: {prefix: /}, action: {weightedTargets: [{virtualNode: up, weight: 1}]},
		  retryPolicy: {maxRetries: 2, perRetryTimeout: {unit: ms, value: 150}, httpRetryEvents: [server-error, gateway-error]}}}`}}}}.start(t)
	client := testutil.H2CClient(t, srv.EgressAddr())

	const workers, each = 8, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := fmt.Sprintf("%d-%d", g, i)
				kind := [...]string{"clean", "flaky", "body", "clean", "slow"}[i%5]
				method, body := "GET", ""
				if kind == "body" {
					method, body = "POST", strings.Repeat("b"+id, 50)
				}
				req, err := http.NewRequest(method, "http://up.t.local/"+kind+"/"+id+"?q="+id, strings.NewReader(body))
				if err != nil {
					errs <- err
					return
				}
				if body == "" {
					req.Body, req.ContentLength = nil, 0
				}
				req.Header.Set("X-Request-Id", id)
				req.Header.Set("X-Val", strings.Repeat(id, 20))
				req.Header.Set("X-Own-"+id, id)
				if strings.HasSuffix(id, "7") {
					for k := range 10 {
						req.Header.Set(fmt.Sprintf("X-Fill-%d", k), id)
					}
				}
				info, rh, err := echoOnceHeader(client, req)
				switch {
				case err != nil:
					errs <- fmt.Errorf("%s %s: %w", kind, id, err)
				case !onlyOwn(info.Header, "X-Own-", id) || !onlyOwn(rh, "X-Resp-", id):
					errs <- fmt.Errorf("%s %s: another request's field: request %v, response %v", kind, id, info.Header, rh)
				case info.Path != "/"+kind+"/"+id+"?q="+id || info.Method != method || info.Body != body ||
					info.Header.Get("X-Request-Id") != id || info.Header.Get("X-Val") != strings.Repeat(id, 20) ||
					info.Header.Get("X-Forwarded-For") != "127.0.0.1":
					errs <- fmt.Errorf("%s %s: the upstream saw %s %s body %q fields %v", kind, id, info.Method, info.Path, info.Body, info.Header)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, kind := range []string{"flaky", "slow"} {
		if seen["/"+kind+"/0-"+map[string]string{"flaky": "1", "slow": "4"}[kind]] != 2 {
			t.Errorf("%s requests were not retried: %v", kind, seen)
		}
	}
}

// onlyOwn reports whether h has exactly one field named prefix+something, prefix+id,
// whose value is id.
func onlyOwn(h http.Header, prefix, id string) bool {
	n := 0
	for k := range h {
		if strings.HasPrefix(k, prefix) {
			n++
		}
	}
	return n == 1 && h.Get(prefix+id) == id
}

// echoOnceHeader is getEcho returning its failure instead of ending the test (for
// goroutines), and the response's header.
func echoOnceHeader(c *http.Client, req *http.Request) (echoInfo, http.Header, error) {
	var info echoInfo
	resp, err := c.Do(req)
	if err != nil {
		return info, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return info, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return info, nil, fmt.Errorf("status %d (%s): %s", resp.StatusCode, resp.Header.Get("X-Meshd-Error"), b)
	}
	return info, resp.Header, json.Unmarshal(b, &info)
}
