package upstream

import (
	"net"
	"strconv"
	"testing"

	"github.com/meshd/meshd/router"
)

// TestPassthroughLRU: passthrough clusters are bounded; past the bound the least
// recently used one is closed rather than a fresh cluster built (and leaked) per
// request.
func TestPassthroughLRU(t *testing.T) {
	p := &PassCache{Max: 2}
	defer p.CloseAll()
	get := func(port int) *Cluster {
		addr := "192.0.2.1:" + strconv.Itoa(port)
		return p.Get(addr, func() *Cluster {
			return New(router.ClusterRef{Name: "passthrough:" + addr, Protocol: "http"}, Options{Dialer: &net.Dialer{}})
		})
	}

	a, b := get(1), get(2)
	if get(1) != a {
		t.Fatal("a known destination got a new cluster")
	}
	c := get(3) // evicts 2, the least recently used
	if !b.closed.Load() || a.closed.Load() || c.closed.Load() {
		t.Fatalf("closed: a=%v b=%v c=%v, want only b", a.closed.Load(), b.closed.Load(), c.closed.Load())
	}
	if got := len(p.Clusters()); got != 2 {
		t.Fatalf("%d clusters held, want 2", got)
	}
	if b2 := get(2); b2 == b || b2.closed.Load() {
		t.Fatal("an evicted destination did not get a new, open cluster")
	}
	if !a.closed.Load() {
		t.Fatal("a was least recently used after 3 and 2 and must have been evicted")
	}
}
