package state

import (
	"context"
	"io"
	"log/slog"
	"runtime/metrics"
	"testing"

	"github.com/meshd/meshd/internal/meshgen"
)

func forcedGCs() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/forced:gc-cycles"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestReleaseMemory: with ReleaseMemory an applied config ends with a forced collection
// (debug.FreeOSMemory's), and without it, when the config is rejected, or when the
// request defers the release to its caller, none is run.
func TestReleaseMemory(t *testing.T) {
	doc := []byte(`{"mesh": {"meshName": "shop"}, "virtualNodes": [{"virtualNodeName": "front", "spec": {"listeners": [{"portMapping": {"port": 9000, "protocol": "http"}}]}}]}`)
	for _, c := range []struct {
		name    string
		release bool
		defer_  bool
		doc     []byte
		applied bool
		want    uint64
	}{
		{"applied, release", true, false, doc, true, 1},
		{"applied, no release", false, false, doc, true, 0},
		{"rejected, release", true, false, []byte(`{"mesh": {}}`), false, 0},
		{"applied, release deferred by the request", true, true, doc, true, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := &Holder{Node: "front", Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Options: originOptions(t), ReleaseMemory: c.release}
			t.Cleanup(func() { h.Shutdown() })
			before := forcedGCs()
			_, err := h.ApplyDocument(context.Background(), ApplyRequest{Data: c.doc, Source: "test", DeferRelease: c.defer_})
			if (err == nil) != c.applied {
				t.Fatalf("apply: %v", err)
			}
			if got := forcedGCs() - before; got != c.want {
				t.Fatalf("%d forced collections, want %d", got, c.want)
			}
		})
	}
}

// TestRouteStatsLazy: a route's statistics are made at its first request (Stats), the
// admin's reader does not make them (StatsIfAny), and a reload carries them over by key,
// so a request on either snapshot counts in the same statistics.
func TestRouteStatsLazy(t *testing.T) {
	h := &Holder{Node: "front", Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Options: originOptions(t)}
	t.Cleanup(func() { h.Shutdown() })
	apply := func(weight int) *Snapshot {
		t.Helper()
		snap, err := h.ApplyDocument(context.Background(), ApplyRequest{Data: meshgen.Spec{Routers: 1, RoutesPerRouter: 2, WeightV1: weight}.JSON(), Source: "test"})
		if err != nil {
			t.Fatal(err)
		}
		return snap
	}
	policy := func(s *Snapshot, key string) *RoutePolicy {
		t.Helper()
		for _, p := range s.Policies() {
			if p != nil && p.Key() == key {
				return p
			}
		}
		t.Fatalf("no policy %q", key)
		return nil
	}
	key := meshgen.Service(0) + "/" + meshgen.RouteName(0, 1)
	first := apply(90)
	p1 := policy(first, key)
	if p1.StatsIfAny() != nil {
		t.Fatal("statistics made before any request")
	}
	st := p1.Stats()
	if st == nil || p1.Stats() != st || p1.StatsIfAny() != st {
		t.Fatal("Stats does not keep the statistics it made")
	}
	st.Classes[2].Add(1)
	p2 := policy(apply(50), key)
	if p2.StatsIfAny() != st || p2.Stats().Classes[2].Load() != 1 {
		t.Fatal("the reload did not carry the statistics over")
	}
	other := policy(first, meshgen.Service(0)+"/"+meshgen.RouteName(0, 0))
	if other.StatsIfAny() != nil {
		t.Fatal("another route's statistics were made")
	}
}
