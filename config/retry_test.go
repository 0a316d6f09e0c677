package config

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/goleak"

	"github.com/meshd/meshd/telemetry"
)

var errTransient = errors.New("lookup svc.local: temporary failure")

// delivery is one deliver call as seen by a test, with the bubble's time.
type delivery struct {
	data string
	at   time.Duration
}

// TestFileSourceRetriesRejectedDelivery: a document deliver does not accept is not
// settled; the watcher reads the file again with backoff (RetryMin, doubling) without
// any new event, stops once it is accepted, and a later identical event delivers nothing.
func TestFileSourceRetriesRejectedDelivery(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mesh.yaml")
	write(t, path, "v1")
	synctest.Test(t, func(t *testing.T) {
		const d = 100 * time.Millisecond
		src := &FileSource{Path: path, Debounce: d}
		doc, err := src.Fetch(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		src.Applied(doc)
		fw := &fileWatch{src: src, abs: path, dir: dir, log: telemetry.OrDiscard(nil)}
		events := make(chan fsnotify.Event)
		start := time.Now()
		var mu sync.Mutex
		var got []delivery
		rejects := 3
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() {
			done <- fw.loop(ctx, events, nil, func(doc Document) error {
				mu.Lock()
				defer mu.Unlock()
				got = append(got, delivery{string(doc.Data), time.Since(start)})
				if rejects > 0 {
					rejects--
					return errTransient
				}
				return nil
			})
		}()
		write(t, path, "v2")
		events <- fsnotify.Event{Name: path, Op: fsnotify.Write}
		time.Sleep(d + RetryMin + 2*RetryMin + 4*RetryMin + time.Minute) // the bubble's clock
		synctest.Wait()
		events <- fsnotify.Event{Name: path, Op: fsnotify.Chmod} // identical: settled
		time.Sleep(time.Minute)
		synctest.Wait()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		want := []delivery{{"v2", d}, {"v2", d + RetryMin}, {"v2", d + 3*RetryMin}, {"v2", d + 7*RetryMin}}
		mu.Lock()
		defer mu.Unlock()
		if len(got) != len(want) {
			t.Fatalf("deliveries %v, want %v", got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("deliveries %v, want %v", got, want)
			}
		}
	})
}

// TestFileSourceRetryBackoffCaps: the delay doubles up to RetryMax and stays there.
func TestFileSourceRetryBackoffCaps(t *testing.T) {
	r := newRetryTimer()
	defer r.settled()
	var got []time.Duration
	for range 8 {
		got = append(got, r.failed())
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second, 30 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("backoff %v, want %v", got, want)
		}
	}
	r.settled()
	if d := r.failed(); d != RetryMin {
		t.Fatalf("after an accepted delivery the backoff restarts at %v, got %v", RetryMin, d)
	}
}

// TestFileSourceWatchAppliesUnsettledStartDocument: when the document fetched at start
// was not applied (meshd fell back to its persisted config), the watcher delivers the
// current file after RetryMin without waiting for a file event.
func TestFileSourceWatchAppliesUnsettledStartDocument(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mesh.yaml")
	write(t, path, "v1")
	synctest.Test(t, func(t *testing.T) {
		src := &FileSource{Path: path}
		if _, err := src.Fetch(context.Background()); err != nil {
			t.Fatal(err)
		}
		// No Applied: the fetched document was rejected.
		fw := &fileWatch{src: src, abs: path, dir: dir, log: telemetry.OrDiscard(nil)}
		start := time.Now()
		got := make(chan delivery, 4)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() {
			done <- fw.loop(ctx, nil, nil, func(doc Document) error {
				got <- delivery{string(doc.Data), time.Since(start)}
				return nil
			})
		}()
		time.Sleep(time.Minute)
		synctest.Wait()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 {
			t.Fatalf("%d deliveries, want 1", len(got))
		}
		if g := <-got; g != (delivery{"v1", RetryMin}) {
			t.Fatalf("delivered %v, want v1 after %v", g, RetryMin)
		}
	})
}

// TestPollSourceRetriesRejectedDelivery: a rejected document is offered again though
// the server answers 304 (its bytes did not change), and no more once accepted.
func TestPollSourceRetriesRejectedDelivery(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	d, ts := startDocServer(t, "v1")
	defer ts.Client().CloseIdleConnections()
	src := &PollSource{URL: ts.URL, Client: ts.Client(), Interval: 5 * time.Millisecond}
	doc, err := src.Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	src.Applied(doc)
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var got []string
	done := make(chan error, 1)
	go func() {
		done <- src.Watch(ctx, func(doc Document) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, string(doc.Data))
			if len(got) == 1 {
				return errTransient
			}
			return nil
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	}()
	deliveries := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got...)
	}
	d.set("v2", 0)
	waitFor(t, func() bool { return len(deliveries()) >= 2 })
	n := d.notMod.Load()
	waitFor(t, func() bool { return d.notMod.Load() >= n+3 })
	if g := deliveries(); len(g) != 2 || g[0] != "v2" || g[1] != "v2" {
		t.Fatalf("deliveries %q, want v2 rejected then v2 accepted, then nothing", g)
	}
}

// TestPollSourceWatchAppliesUnsettledStartDocument: with nothing settled at start the
// poller offers the document after RetryMin, long before its first tick.
func TestPollSourceWatchAppliesUnsettledStartDocument(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	_, ts := startDocServer(t, "v1")
	defer ts.Client().CloseIdleConnections()
	src := &PollSource{URL: ts.URL, Client: ts.Client(), Interval: time.Hour}
	if _, err := src.Fetch(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	docs := make(chan Document, 4)
	done := make(chan error, 1)
	go func() { done <- src.Watch(ctx, func(doc Document) error { docs <- doc; return nil }) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	}()
	select {
	case doc := <-docs:
		if string(doc.Data) != "v1" {
			t.Fatalf("delivered %q, want v1", doc.Data)
		}
	case <-time.After(10 * time.Second): // RetryMin is 1s; the bound only turns a hang into a failure
		t.Fatal("the unsettled start document was never delivered")
	}
}
