package main

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/proxy"
)

// flakyDNS fails every lookup (a temporary DNS failure) until ok is set.
type flakyDNS struct{ ok atomic.Bool }

func (r *flakyDNS) LookupIP(_ context.Context, host, _ string) ([]netip.Addr, time.Duration, error) {
	if !r.ok.Load() {
		return nil, 0, errors.New("read udp 127.0.0.1:53: i/o timeout")
	}
	return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, time.Minute, nil
}

func (r *flakyDNS) LookupSRV(context.Context, string) ([]discovery.SRV, time.Duration, error) {
	return nil, 0, discovery.ErrNXDomain
}

// A backend name that does not resolve at start does not keep meshd from starting on
// the config it was given (not the persisted one, not an exit): the config applies, the
// cluster stays empty while DNS fails, and fills once DNS answers, with no reload.
func TestUnresolvedNameDoesNotStopStart(t *testing.T) {
	dir := t.TempDir()
	persisted := filepath.Join(dir, "last-good.yaml")
	writeFile(t, persisted, reloadCfg(7000))
	path := filepath.Join(dir, "mesh.yaml")
	writeFile(t, path, strings.Replace(reloadCfg(7001), `static: {endpoints: ["127.0.0.1:7001"]}`, `dns: {hostname: app.internal}`, 1))
	res := &flakyDNS{}
	srv, err := proxy.New(proxy.Options{Node: "client", AdminAddr: "off", DNS: res, FirstResolveWait: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	log := slog.New(slog.DiscardHandler)
	src := &config.FileSource{Path: path, Logger: log}
	if err := applyInitial(context.Background(), srv, src, persisted, log); err != nil {
		t.Fatal(err)
	}
	if got := srv.Snapshot().Source(); got != "file:"+path {
		t.Fatalf("serving from %q, want the file's config", got)
	}
	endpoints := func() int {
		n := 0
		for _, c := range srv.Snapshot().Clusters() {
			if c.Ref().Node == "app" {
				n += c.Balancer().Len()
			}
		}
		return n
	}
	if n := endpoints(); n != 0 {
		t.Fatalf("%d endpoints while DNS fails", n)
	}
	res.ok.Store(true)
	waitUntil(t, "the name's endpoint", func() bool { return endpoints() == 1 })
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
