package config

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// docServer serves one document with a strong ETag and answers If-None-Match with 304.
type docServer struct {
	mu     sync.Mutex
	body   string
	status int // when not 0, answer this instead
	gets   atomic.Int64
	notMod atomic.Int64
	auth   atomic.Value // last Authorization header seen
}

func (d *docServer) set(body string, status int) {
	d.mu.Lock()
	d.body, d.status = body, status
	d.mu.Unlock()
}

func (d *docServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	d.gets.Add(1)
	d.auth.Store(r.Header.Get("Authorization"))
	d.mu.Lock()
	body, status := d.body, d.status
	d.mu.Unlock()
	if status != 0 {
		http.Error(w, "nope", status)
		return
	}
	sum := digestBytes([]byte(body))
	etag := fmt.Sprintf(`"%x"`, sum[:6])
	if r.Header.Get("If-None-Match") == etag {
		d.notMod.Add(1)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("ETag", etag)
	_, _ = w.Write([]byte(body))
}

func startDocServer(t *testing.T, body string) (*docServer, *httptest.Server) {
	t.Helper()
	d := &docServer{body: body}
	ts := httptest.NewServer(d)
	t.Cleanup(ts.Close)
	return d, ts
}

func TestPollSourceFetch(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // runs after the other cleanups
	d, ts := startDocServer(t, "v1")
	src := &PollSource{URL: ts.URL + "/mesh.yaml", Client: ts.Client(), Header: http.Header{"Authorization": {"Bearer s3cret"}}}
	ctx := context.Background()
	doc, err := src.Fetch(ctx)
	if err != nil || string(doc.Data) != "v1" || !strings.HasPrefix(doc.Origin, "url:"+ts.URL+"/mesh.yaml etag ") {
		t.Fatalf("Fetch = %q %q %v", doc.Data, doc.Origin, err)
	}
	if got := d.auth.Load(); got != "Bearer s3cret" {
		t.Fatalf("Authorization sent: %v", got)
	}
	// The second fetch sends If-None-Match, gets 304, and still returns the document.
	doc, err = src.Fetch(ctx)
	if err != nil || string(doc.Data) != "v1" || d.notMod.Load() != 1 {
		t.Fatalf("second Fetch = %q %v (304s: %d)", doc.Data, err, d.notMod.Load())
	}
	d.set("", http.StatusInternalServerError)
	if _, err := src.Fetch(ctx); err == nil || !strings.Contains(err.Error(), "500") || !strings.Contains(err.Error(), ts.URL) {
		t.Fatalf("500: %v", err)
	}
	if _, err := (&PollSource{URL: "http://127.0.0.1:1/x"}).Fetch(ctx); err == nil {
		t.Fatal("fetch from a closed port succeeded")
	}
	ts.Client().CloseIdleConnections()
}

func TestPollSourceWatch(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // runs after the other cleanups
	d, ts := startDocServer(t, "v1")
	defer ts.Client().CloseIdleConnections()
	src := &PollSource{URL: ts.URL, Client: ts.Client(), Interval: 5 * time.Millisecond}
	doc, err := src.Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	src.Applied(doc)
	ctx, cancel := context.WithCancel(context.Background())
	docs := make(chan Document, 8)
	done := make(chan error, 1)
	go func() { done <- src.Watch(ctx, func(doc Document) error { docs <- doc; return nil }) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	}()

	// Unchanged: polls are answered 304 and nothing is delivered.
	waitFor(t, func() bool { return d.notMod.Load() >= 3 })
	select {
	case doc := <-docs:
		t.Fatalf("unchanged document delivered: %q", doc.Data)
	default:
	}
	// A failing server is tolerated; the next good answer is delivered.
	d.set("", http.StatusServiceUnavailable)
	before := d.gets.Load()
	waitFor(t, func() bool { return d.gets.Load() >= before+2 })
	d.set("v2", 0)
	select {
	case doc := <-docs:
		if string(doc.Data) != "v2" {
			t.Fatalf("delivered %q, want v2", doc.Data)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("v2 never delivered")
	}
	// And only once.
	n := d.notMod.Load()
	waitFor(t, func() bool { return d.notMod.Load() >= n+3 })
	if len(docs) != 0 {
		t.Fatalf("v2 delivered more than once")
	}
}

// waitFor waits until cond holds, checking every few milliseconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for !cond() {
		select {
		case <-deadline:
			t.Fatal("condition not reached within 10s")
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// TestPollSourceRedactsPresignedURL: a presigned URL's signature (its query) and a
// password in the URL appear in no error and no document origin.
func TestPollSourceRedactsPresignedURL(t *testing.T) {
	d, ts := startDocServer(t, "v1")
	const sig = "X-Amz-Signature=deadbeef&X-Amz-Credential=AKIAEXAMPLE"
	src := &PollSource{URL: ts.URL + "/mesh.yaml?" + sig, Client: ts.Client()}
	ctx := context.Background()
	doc, err := src.Fetch(ctx)
	if err != nil || string(doc.Data) != "v1" {
		t.Fatalf("Fetch = %q %v", doc.Data, err)
	}
	if strings.Contains(doc.Origin, "deadbeef") || !strings.Contains(doc.Origin, ts.URL+"/mesh.yaml?REDACTED") {
		t.Fatalf("origin %q", doc.Origin)
	}
	d.set("", http.StatusForbidden)
	if _, err := src.Fetch(ctx); err == nil || strings.Contains(err.Error(), "deadbeef") || !strings.Contains(err.Error(), "403") {
		t.Fatalf("403: %v", err)
	}
	// net/http's own error (a refused connection) names the URL too.
	closed := &PollSource{URL: "http://user:pa55@127.0.0.1:1/x?" + sig}
	if _, err := closed.Fetch(ctx); err == nil || strings.Contains(err.Error(), "deadbeef") || strings.Contains(err.Error(), "pa55") {
		t.Fatalf("refused: %v", err)
	}
	ts.Client().CloseIdleConnections()
	for raw, want := range map[string]string{
		"https://b.s3.amazonaws.com/m.yaml?" + sig: "https://b.s3.amazonaws.com/m.yaml?REDACTED",
		"https://b.s3.amazonaws.com/m.yaml":        "https://b.s3.amazonaws.com/m.yaml",
		"https://u:p@h/m.yaml":                     "https://u:xxxxx@h/m.yaml",
	} {
		if got := RedactURL(raw); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", raw, got, want)
		}
	}
}
