package router

import (
	"math"
	"slices"
	"testing"
)

// TestMirrorCompiled: a route's mirror names its cluster as a weighted target would
// ("node:port" for a node with several listeners), the cluster is in the table even
// though no weighted target reaches it, and the threshold samples the percent.
func TestMirrorCompiled(t *testing.T) {
	cfg := meshWithRoutes(t, `[{"routeName": "m", "spec": {"httpRoute": {"match": {"prefix": "/"},
		"action": {"weightedTargets": [{"virtualNode": "a", "weight": 1}],
		           "mirror": {"virtualNode": "multi", "port": 7001, "percent": 25}}}}}]`)
	tb := mustCompile(t, cfg, "client")
	var rt *Route
	for _, r := range tb.Routes() {
		if r.Name == "m" {
			rt = r
		}
	}
	if rt == nil || rt.Mirror == nil {
		t.Fatalf("route m has no mirror: %+v", rt)
	}
	if rt.Mirror.Cluster != "multi:7001" || rt.Mirror.Percent != 25 {
		t.Errorf("mirror = %+v, want cluster multi:7001, 25%%", *rt.Mirror)
	}
	if !slices.ContainsFunc(tb.Clusters(), func(c ClusterRef) bool { return c.Name == "multi:7001" && c.Port == 7001 && c.Node == "multi" }) {
		t.Errorf("mirror cluster missing from the table: %+v", tb.Clusters())
	}
	if got, want := rt.Mirror.Threshold(), uint64(1<<62); got != want {
		t.Errorf("threshold(25%%) = %d, want %d", got, want)
	}
	if got := (&Mirror{Percent: 100}).Threshold(); got != math.MaxUint64 {
		t.Errorf("threshold(100%%) = %d", got)
	}
	// A route without a mirror has none, and tcp routes never do.
	cfg = meshWithRoutes(t, `[{"routeName": "plain", "spec": {"httpRoute": {"match": {"prefix": "/"},
		"action": {"weightedTargets": [{"virtualNode": "a", "weight": 1}]}}}}]`)
	for _, r := range mustCompile(t, cfg, "client").Routes() {
		if r.Mirror != nil {
			t.Errorf("route %s has a mirror", r.Name)
		}
	}
}
