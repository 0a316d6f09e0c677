package proxy

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net"
	"sync/atomic"
	"testing"

	"github.com/meshd/meshd/config"
)

// TestMirrorAllocs: on the HTTP/1.1 fast path a route with a mirror costs no
// allocation for the requests its draw leaves out (as BenchmarkForwardH1 without a
// mirror: 0 allocs/op); only the sampled ones pay for their copy.
func TestMirrorAllocs(t *testing.T) {
	up, stop := rawUpstream(t)
	defer stop()
	shadow, stopShadow := rawUpstream(t)
	defer stopShadow()
	_, port, _ := net.SplitHostPort(up)
	_, sport, _ := net.SplitHostPort(shadow)
	cfg, err := config.Parse(fmt.Appendf(nil, `mesh: {meshName: bench, spec: {egressFilter: {type: DROP_ALL}}}
virtualNodes:
  - virtualNodeName: client
    spec:
      listeners: [{portMapping: {port: 18080, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:18080"]}}
      backends: [{virtualService: {virtualServiceName: upstream.bench.local}}]
  - virtualNodeName: upstream
    spec:
      listeners: [{portMapping: {port: %s, protocol: http}}]
      serviceDiscovery: {static: {endpoints: [%q]}}
  - virtualNodeName: shadow
    spec:
      listeners: [{portMapping: {port: %s, protocol: http}}]
      serviceDiscovery: {static: {endpoints: [%q]}}
virtualServices:
  - virtualServiceName: upstream.bench.local
    spec: {provider: {virtualRouter: {virtualRouterName: r}}}
virtualRouters:
  - virtualRouterName: r
    spec: {listeners: [{portMapping: {port: 80, protocol: http}}]}
routes:
  - routeName: all
    virtualRouterName: r
    spec:
      httpRoute:
        match: {prefix: /}
        action: {weightedTargets: [{virtualNode: upstream, weight: 1}], mirror: {virtualNode: shadow, percent: 50}}
`, port, up, sport, shadow))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Node: "client", IngressAddr: "127.0.0.1:0", EgressAddr: "127.0.0.1:0", AdminAddr: "off"})
	if err != nil {
		t.Fatal(err)
	}
	var sample atomic.Bool
	s.env.Mirrors.Draw = func() uint64 {
		if sample.Load() {
			return 0
		}
		return math.MaxUint64 - 1 // above the 50 % threshold: left out
	}
	if _, err := s.Apply(context.Background(), cfg, "test"); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())

	c, err := net.Dial("tcp", s.EgressAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := []byte("GET /bench HTTP/1.1\r\nHost: upstream.bench.local\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	br := bufio.NewReaderSize(c, 16<<10)
	roundTrip := func() {
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				t.Fatal(err)
			}
			if len(line) == 2 {
				break
			}
		}
		if _, err := br.Discard(63); err != nil {
			t.Fatal(err)
		}
	}
	for range 50 {
		roundTrip()
	}
	if a := testing.AllocsPerRun(200, roundTrip); a != 0 {
		t.Errorf("%.1f allocs per request left out of the mirror, want 0", a)
	}
	stats := s.state.Load().Policies()
	var sent func() uint64
	for _, p := range stats {
		if p != nil && p.Mirror() != nil {
			ms := p.MirrorStats()
			sent = func() uint64 { return ms.Sent.Load() + ms.Failed.Load() + ms.SkippedOverflow.Load() }
		}
	}
	if sent == nil || sent() != 0 {
		t.Fatalf("no mirror compiled, or copies sent while none was sampled")
	}
	sample.Store(true)
	a := testing.AllocsPerRun(50, roundTrip)
	if a == 0 {
		t.Errorf("sampled requests allocated nothing: were they copied?")
	}
	if n := sent(); n < 50 {
		t.Errorf("%d of at least 50 sampled requests counted", n)
	}
	t.Logf("%.0f allocs per copied request", a)
}
