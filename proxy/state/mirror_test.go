package state

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
)

const mirrorDoc = `
mesh: {meshName: m}
virtualNodes:
  - virtualNodeName: front
    spec:
      listeners: [{portMapping: {port: 9000, protocol: http}}]
      backends: [{virtualService: {virtualServiceName: svc.local}}]
  - virtualNodeName: v1
    spec:
      listeners: [{portMapping: {port: 9001, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:9001"]}}
  - virtualNodeName: v2
    spec:
      listeners: [{portMapping: {port: 9002, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:9002"]}}
virtualServices:
  - virtualServiceName: svc.local
    spec: {provider: {virtualRouter: {virtualRouterName: r}}}
virtualRouters:
  - virtualRouterName: r
    spec: {listeners: [{portMapping: {port: 80, protocol: http}}]}
routes:
  - routeName: main
    virtualRouterName: r
    spec:
      httpRoute:
        match: {prefix: /}
        action: {weightedTargets: [{virtualNode: v1, weight: 1}]MIRROR}
`

// TestMirrorCompiledAndCarried: a route's mirror reaches its cluster in the snapshot,
// samples by its threshold, and across reloads keeps the cluster's in-flight count and
// the route's counters (also while the mirror is removed).
func TestMirrorCompiledAndCarried(t *testing.T) {
	h := &Holder{Node: "front", Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Options: originOptions(t)}
	t.Cleanup(h.Shutdown)
	ctx := context.Background()
	apply := func(mirror string) *RoutePolicy {
		t.Helper()
		if _, err := h.ApplyDocument(ctx, ApplyRequest{Data: []byte(strings.Replace(mirrorDoc, "MIRROR", mirror, 1)), Source: "test"}); err != nil {
			t.Fatal(err)
		}
		for _, p := range h.Load().Policies() {
			if p != nil && p.Key() == "svc.local/main" {
				return p
			}
		}
		t.Fatal("no policy for svc.local/main")
		return nil
	}
	p := apply(", mirror: {virtualNode: v2, percent: 25}")
	m := p.Mirror()
	if m == nil || m.Cluster() != h.Load().Cluster("v2") {
		t.Fatalf("mirror %+v, want one to cluster v2", m)
	}
	if !m.Sampled(0) || !m.Sampled(1<<62-1) || m.Sampled(1<<62) || m.Sampled(^uint64(0)) {
		t.Errorf("25%% samples the wrong draws")
	}
	if !m.Acquire(1) || m.Acquire(1) {
		t.Fatal("a bound of 1 admitted 0 or 2")
	}
	m.Stats().Sent.Add(3)

	p = apply(", mirror: {virtualNode: v2, percent: 100}")
	m2 := p.Mirror()
	if !m2.Sampled(^uint64(0)) {
		t.Error("100% left a draw out")
	}
	if m2.InFlight() != 1 || m2.Acquire(1) {
		t.Errorf("in flight %d after the reload, want the 1 taken before", m2.InFlight())
	}
	m.Release() // the copy started under the old snapshot ends
	if m2.InFlight() != 0 || !m2.Acquire(1) {
		t.Errorf("in flight %d once the old copy ended, want 0 and a free slot", m2.InFlight())
	}
	m2.Release()

	p = apply("")
	if p.Mirror() != nil || p.MirrorStats() == nil || p.MirrorStats().Sent.Load() != 3 {
		t.Errorf("mirror removed: mirror %v, counters %v; want none and the counters kept", p.Mirror(), p.MirrorStats())
	}
}
