package forward

import (
	"testing"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/router"
)

const hostCacheMesh = `mesh: {meshName: m, spec: {egressFilter: {type: DROP_ALL}}}
virtualNodes:
  - virtualNodeName: client
    spec:
      listeners: [{portMapping: {port: 8080, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:8080"]}}
      backends: [{virtualService: {virtualServiceName: a.m.local}}, {virtualService: {virtualServiceName: b.m.local}}]
  - virtualNodeName: up
    spec:
      listeners: [{portMapping: {port: 9000, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:9000"]}}
virtualServices:
  - virtualServiceName: a.m.local
    spec: {provider: {virtualNode: {virtualNodeName: up}}}
  - virtualServiceName: b.m.local
    spec: {provider: {virtualNode: {virtualNodeName: up}}}
`

// TestHostCacheGivesTheTablesAnswer checks that a connection's HostCache answers what
// the table's own lookup does as the Host changes, repeats in another case, is longer
// than the cache, names no backend, and as the table is replaced (a reload).
func TestHostCacheGivesTheTablesAnswer(t *testing.T) {
	cfg, err := config.Parse([]byte(hostCacheMesh))
	if err != nil {
		t.Fatal(err)
	}
	t1, err := router.Compile(cfg, "client")
	if err != nil {
		t.Fatal(err)
	}
	t2, err := router.Compile(cfg, "client")
	if err != nil {
		t.Fatal(err)
	}
	long := "x" + string(make([]byte, 100))
	var hc HostCache
	buf := []byte("a.m.local")
	for i, c := range []struct {
		table *router.Table
		host  string
	}{
		{t1, "a.m.local"}, {t1, "a.m.local"}, {t1, "A.M.Local"}, {t1, "b.m.local"}, {t1, "a.m.local."},
		{t1, "c.m.local"}, {t1, "c.m.local"}, {t1, long}, {t2, "a.m.local"}, {t1, "a.m.local"}, {t2, "b.m.local"},
	} {
		// The Host aliases a buffer the next request overwrites: the cache must not.
		buf = append(buf[:0], c.host...)
		host := string(buf) // a copy for the table's lookup
		got, want := hc.egress(c.table, Str(buf), 80), c.table.Egress(host, 80)
		if got != want {
			t.Fatalf("step %d (%q): cache gave %v, the table %v", i, c.host, got, want)
		}
		if want == nil && c.host != "c.m.local" && c.host != long {
			t.Fatalf("step %d (%q): the table found nothing", i, c.host)
		}
	}
	if hc.table != t2 {
		t.Fatal("the cache did not follow the table")
	}
	var none *HostCache
	if none.egress(t1, "a.m.local", 80) != t1.Egress("a.m.local", 80) {
		t.Fatal("a nil cache does not look up")
	}
}
