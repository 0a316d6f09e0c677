package h2

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestStreamReuseKeepsNothing: a connection reuses its finished streams (serverConn.free);
// requests on one connection, bodyless ones (reused) between ones with a body (not
// reused), concurrent and sequential, each see only their own method, path, header and
// body, and each response carries only its own fields and trailer.
func TestStreamReuseKeepsNothing(t *testing.T) {
	_, addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v := r.Header.Get("X-Only-Odd"); v != "" {
			w.Header().Set("X-Saw-Odd", v)
		}
		echo(w, r)
	}), Limits{})
	c := stdClient()
	one := func(i int) error {
		method, body := "GET", io.Reader(nil)
		if i%5 == 4 {
			method, body = "POST", strings.NewReader(fmt.Sprintf("body-%d", i))
		}
		req, _ := http.NewRequest(method, fmt.Sprintf("http://%s/r/%d?i=%d", addr, i, i), body)
		req.Header.Set("X-Req", fmt.Sprint(i))
		if i%2 == 1 {
			req.Header.Set("X-Only-Odd", fmt.Sprint(i))
		}
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		got, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		wantBody := "ok:"
		if method == "POST" {
			wantBody += fmt.Sprintf("body-%d", i)[:min(len(fmt.Sprintf("body-%d", i)), 10)]
		}
		odd := ""
		if i%2 == 1 {
			odd = fmt.Sprint(i)
		}
		switch {
		case resp.Header.Get("X-Method") != method, resp.Header.Get("X-Path") != fmt.Sprintf("/r/%d?i=%d", i, i):
			return fmt.Errorf("request %d: method %q path %q", i, resp.Header.Get("X-Method"), resp.Header.Get("X-Path"))
		case resp.Header.Get("X-Saw-Odd") != odd:
			return fmt.Errorf("request %d: X-Saw-Odd %q, want %q", i, resp.Header.Get("X-Saw-Odd"), odd)
		case string(got) != wantBody:
			return fmt.Errorf("request %d: body %q, want %q", i, got, wantBody)
		case resp.Trailer.Get("X-Trailer") != fmt.Sprintf("t-%d", i):
			return fmt.Errorf("request %d: trailer %q", i, resp.Trailer.Get("X-Trailer"))
		}
		return nil
	}
	for i := range 40 {
		if err := one(i); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				if err := one(100 + w*25 + i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestKeepStreamIsNotReused: a stream whose handler called KeepStream (it left work
// holding the stream's context) never serves a later request, while streams of other
// requests are reused (the same context comes back).
func TestKeepStreamIsNotReused(t *testing.T) {
	// The kept streams' contexts stay referenced here, so that the collector cannot free
	// a kept stream and hand its address to a new one (which would look like reuse).
	var keptMu sync.Mutex
	var keptCtx []context.Context
	_, addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Keep") != "" {
			w.(interface{ KeepStream() }).KeepStream()
			keptMu.Lock()
			keptCtx = append(keptCtx, r.Context())
			keptMu.Unlock()
		}
		w.Header().Set("X-Ctx", fmt.Sprintf("%p", r.Context()))
		w.WriteHeader(http.StatusNoContent)
	}), Limits{})
	markedNeverReused(t, addr, "X-Keep")
	keptMu.Lock()
	if len(keptCtx) != 10 {
		t.Errorf("%d kept streams, want 10", len(keptCtx))
	}
	keptMu.Unlock()
}

// TestReleaseBodyReusesStream: a stream whose request had a body is reused only when its
// handler released the body (nothing reads it any more); each request on a reused stream
// reads its own body.
func TestReleaseBodyReusesStream(t *testing.T) {
	var keptMu sync.Mutex
	var keptCtx []context.Context // the unreleased streams' contexts, kept from the collector
	_, addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Header.Get("X-Release") != "" {
			w.(interface{ ReleaseBody() }).ReleaseBody()
		} else {
			keptMu.Lock()
			keptCtx = append(keptCtx, r.Context())
			keptMu.Unlock()
		}
		w.Header().Set("X-Ctx", fmt.Sprintf("%p", r.Context()))
		_, _ = w.Write(b)
	}), Limits{})
	c := stdClient()
	post := func(i int, release bool) string {
		t.Helper()
		body := fmt.Sprintf("body-%d", i)
		req, _ := http.NewRequest("POST", "http://"+addr+"/", strings.NewReader(body))
		if release {
			req.Header.Set("X-Release", "1")
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(got) != body {
			t.Fatalf("request %d read %q, want %q", i, got, body)
		}
		return resp.Header.Get("X-Ctx")
	}
	released := map[string]int{}
	unreleased := map[string]bool{}
	for i := range 60 {
		p := post(i, i%3 != 0)
		if unreleased[p] {
			t.Fatalf("request %d got the stream (context %s) of a request whose body was not released", i, p)
		}
		if i%3 == 0 {
			unreleased[p] = true
		} else {
			released[p]++
		}
		time.Sleep(time.Millisecond) // the finished stream is recycled before the next request
	}
	if len(released) == 40 {
		t.Fatal("no stream of a released body was reused in 40 requests")
	}
	keptMu.Lock()
	defer keptMu.Unlock()
	if len(keptCtx) != 20 {
		t.Errorf("%d unreleased streams, want 20", len(keptCtx))
	}
}

// TestReleaseHeaderReusesMap: a request's header map serves a later request of its
// connection only when its handler released it (ReleaseHeader) and it was small; every
// request sees exactly its own fields, whichever map holds them.
func TestReleaseHeaderReusesMap(t *testing.T) {
	var mu sync.Mutex
	var kept []http.Header // the maps not released, kept from the collector
	bad := make(chan string, 1)
	_, addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := r.Header.Get("X-I")
		// The request's regular fields are X-I, its own X-Own-<i> and, for every third
		// one, 12 more (a map too large to keep), plus what the client adds.
		for k := range r.Header {
			if strings.HasPrefix(k, "X-Own-") && k != "X-Own-"+i {
				select {
				case bad <- fmt.Sprintf("request %s saw %s", i, k):
				default:
				}
			}
		}
		if r.Header.Get("X-Own-"+i) != i {
			select {
			case bad <- fmt.Sprintf("request %s lost its X-Own-%s", i, i):
			default:
			}
		}
		if r.Header.Get("X-Release") != "" {
			w.(interface{ ReleaseHeader() }).ReleaseHeader()
		}
		if r.Header.Get("X-Release") == "" || r.Header.Get("X-Pad-0") != "" {
			// Referenced to the end, so that the collector cannot hand a map that must
			// not come back to a new request (which would look like reuse).
			mu.Lock()
			kept = append(kept, r.Header)
			mu.Unlock()
		}
		w.Header().Set("X-Map", fmt.Sprintf("%p", r.Header))
		w.WriteHeader(http.StatusNoContent)
	}), Limits{})
	c := stdClient()
	get := func(i int, release, large bool) string {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		req.Header.Set("X-I", fmt.Sprint(i))
		req.Header.Set(fmt.Sprintf("X-Own-%d", i), fmt.Sprint(i))
		if release {
			req.Header.Set("X-Release", "1")
		}
		if large {
			for j := range 12 {
				req.Header.Set(fmt.Sprintf("X-Pad-%d", j), "p")
			}
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header.Get("X-Map")
	}
	small := map[string]int{}    // maps of released small requests, and how often each served
	noReuse := map[string]bool{} // maps that must never come back
	for i := range 90 {
		release, large := i%4 != 0, i%3 == 0
		p := get(i, release, large)
		if noReuse[p] {
			t.Fatalf("request %d got the header map %s of an unreleased or large request", i, p)
		}
		if release && !large {
			small[p]++
		} else {
			noReuse[p] = true
		}
		time.Sleep(time.Millisecond) // the finished stream is recycled before the next request
	}
	select {
	case msg := <-bad:
		t.Fatal(msg)
	default:
	}
	reused := 0
	for _, n := range small {
		reused += n - 1
	}
	if reused == 0 {
		t.Fatal("no released header map served a second request in 90: the test shows nothing")
	}
	mu.Lock()
	t.Logf("%d released small maps served %d later requests; %d maps kept", len(small), reused, len(kept))
	mu.Unlock()
}

// TestDerivedContextStreamNotReused: a stream whose handler derived a context from the
// request's with package context (context.WithTimeout) never serves a later request: the
// derived context's stop may reach the stream's context from a timer goroutine after
// the handler returned (reqctx.Ctx.Derived). Streams of other requests are reused.
func TestDerivedContextStreamNotReused(t *testing.T) {
	var keptMu sync.Mutex
	var keptCtx []context.Context // kept from the collector (see TestKeepStreamIsNotReused)
	_, addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Derive") != "" {
			ctx, cancel := context.WithTimeout(r.Context(), time.Hour)
			cancel()
			keptMu.Lock()
			keptCtx = append(keptCtx, ctx, r.Context())
			keptMu.Unlock()
		}
		w.Header().Set("X-Ctx", fmt.Sprintf("%p", r.Context()))
		w.WriteHeader(http.StatusNoContent)
	}), Limits{})
	markedNeverReused(t, addr, "X-Derive")
	keptMu.Lock()
	defer keptMu.Unlock()
	if len(keptCtx) != 20 {
		t.Errorf("%d derived contexts, want 20", len(keptCtx))
	}
}

// markedNeverReused sends 60 sequential requests to addr, every sixth with the header
// mark set, and fails if a later request gets the stream (its context, which the
// handler writes in X-Ctx) of a marked one, or if no stream was reused at all.
func markedNeverReused(t *testing.T, addr, mark string) {
	t.Helper()
	c := stdClient()
	seen := map[string]int{}
	marked := map[string]bool{}
	for i := range 60 {
		req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		if i%6 == 0 {
			req.Header.Set(mark, "1")
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		p := resp.Header.Get("X-Ctx")
		if marked[p] {
			t.Fatalf("request %d got the stream (context %s) of a request with %s", i, p, mark)
		}
		if i%6 == 0 {
			marked[p] = true
		}
		seen[p]++
		time.Sleep(time.Millisecond) // the finished stream is recycled before the next request
	}
	if len(seen) == 60 {
		t.Fatal("no stream was reused in 60 sequential requests: the test shows nothing")
	}
}
