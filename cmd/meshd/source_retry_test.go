package main

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/proxy"
)

// flakyResolver fails every lookup (a temporary DNS failure) until ok is set.
type flakyResolver struct{ ok atomic.Bool }

func (r *flakyResolver) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	if !r.ok.Load() {
		return nil, &net.DNSError{Err: "temporary failure in name resolution", Name: host, IsTemporary: true}
	}
	return []net.IPAddr{{IP: net.IPv4(127, 0, 0, 1)}}, nil
}

// A config rejected at start only because its endpoints' DNS lookup failed leaves
// meshd on the persisted config; the file's watcher then retries the same file, with
// no file event, and applies it once DNS answers.
func TestWatcherRetriesConfigRejectedByTransientDNS(t *testing.T) {
	dir := t.TempDir()
	persisted := filepath.Join(dir, "last-good.yaml")
	writeFile(t, persisted, reloadCfg(7000))
	path := filepath.Join(dir, "mesh.yaml")
	writeFile(t, path, strings.Replace(reloadCfg(7001), `static: {endpoints: ["127.0.0.1:7001"]}`, `dns: {hostname: app.internal}`, 1))
	res := &flakyResolver{}
	srv, err := proxy.New(proxy.Options{Node: "client", AdminAddr: "off", Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	log := slog.New(slog.DiscardHandler)
	src := &config.FileSource{Path: path, Logger: log}
	if err := applyInitial(context.Background(), srv, src, persisted, log); err != nil {
		t.Fatal(err)
	}
	if got := srv.Snapshot().Source(); got != "persisted:"+persisted {
		t.Fatalf("serving from %q, want the persisted config", got)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := src.Watch(ctx, sourceDeliver(ctx, srv)); err != nil {
			t.Errorf("Watch: %v", err)
		}
	})
	defer wg.Wait()
	defer cancel()

	fileRejections := func() int {
		n := 0
		for _, a := range srv.History() {
			if a.Source == "file:"+path && a.Result == proxy.ResultRejected && a.Stage == proxy.StageCompile {
				n++
			}
		}
		return n
	}
	// The watcher's own retry (after config.RetryMin) is rejected too while DNS fails.
	waitUntil(t, "a retry of the file rejected at compile", func() bool { return fileRejections() >= 2 })
	res.ok.Store(true)
	waitUntil(t, "the file's config applied", func() bool { return srv.Snapshot().Source() == "file:"+path })
}

// waitUntil polls cond every few milliseconds for at most 20 s (retries back off from
// config.RetryMin: 1 s, then 2 s).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
