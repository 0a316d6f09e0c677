package proxy_test

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// TestSlowStartRampsNewEndpoint: with ROUND_ROBIN and slowStart (window 30 s), a reload
// that adds a third endpoint gives it 10% of its weight at first, half after 15 s and
// all of it after 30 s on meshd's clock, while the others keep theirs.
func TestSlowStartRampsNewEndpoint(t *testing.T) {
	ports := whoUpstreams(t, 3, false)
	clk := newTickClock()
	lb := "{policy: ROUND_ROBIN, slowStart: {window: {unit: s, value: 30}}}"
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", Clock: clk}, lbMesh(ports[:2], "http", lb))
	client := testutil.HTTPClient(t, srv.EgressAddr())
	newPort := strconv.Itoa(ports[2])
	share := func(n int) float64 {
		hits := 0
		for range n {
			if w, _ := who(t, client, userReq(t, "")); w == newPort {
				hits++
			}
		}
		return float64(hits) / float64(n)
	}
	if _, err := srv.Apply(context.Background(), testutil.ParseConfig(t, lbMesh(ports, "http", lb)), "test"); err != nil {
		t.Fatal(err)
	}
	svc := lbls{"virtual_node": "svc", "cluster": "svc"}
	scrape(t, srv, "").expect(t, "meshd_cluster_endpoints_slow_start", svc, 1)
	// Round robin is exact: weights 100, 100, 10 → 10 of every 210.
	if got := share(420); got < 0.04 || got > 0.06 {
		t.Fatalf("new endpoint's share at once %.3f; want 0.048 (10%% of its weight)", got)
	}
	// The control goroutine ticks on clk; wait (bounded) for the ramp to be published.
	waitShare := func(want float64, step string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			got := share(250)
			if got > want-0.03 && got < want+0.03 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: new endpoint's share %.3f; want %.3f", step, got, want)
			}
		}
	}
	for clk.liveTickers() == 0 {
		time.Sleep(time.Millisecond) // bounded by the test timeout: the goroutine starts at once
	}
	clk.Advance(15 * time.Second)
	waitShare(0.5/2.5, "after 15 s")
	clk.Advance(15 * time.Second)
	waitShare(1.0/3, "after 30 s")
	scrape(t, srv, "").expect(t, "meshd_cluster_endpoints_slow_start", svc, 0)
}

// weightMesh is node "app" calling svc.t.local through a router whose one route splits
// between nodes a (port pa) and b (port pb) with weights wa and wb.
func weightMesh(pa, pb, wa, wb int) string {
	return fmt.Sprintf(`mesh: {meshName: t, spec: {egressFilter: {type: DROP_ALL}}}
virtualNodes:
  - virtualNodeName: app
    spec:
      listeners: [{portMapping: {port: 1, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:1"]}}
      backends: [{virtualService: {virtualServiceName: svc.t.local}}]
  - virtualNodeName: a
    spec:
      listeners: [{portMapping: {port: 8080, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:%d"]}}
  - virtualNodeName: b
    spec:
      listeners: [{portMapping: {port: 8080, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:%d"]}}
virtualServices:
  - virtualServiceName: svc.t.local
    spec: {provider: {virtualRouter: {virtualRouterName: r}}}
virtualRouters:
  - virtualRouterName: r
    spec: {listeners: [{portMapping: {port: 8080, protocol: http}}]}
routes:
  - routeName: split
    virtualRouterName: r
    spec:
      httpRoute:
        match: {prefix: /}
        action: {weightedTargets: [{virtualNode: a, weight: %d}, {virtualNode: b, weight: %d}]}
`, pa, pb, wa, wb)
}

// TestWeightShiftAcrossReloads: under a steady load of 4 clients, reloads move a route's
// weights 90/10 → 50/50 → 10/90. In every phase, and already in its first 100 requests,
// b's share is the configured one within a tolerance; no request fails, including those
// in flight across a reload. (The weighted pick is a fresh draw per request, so a reload
// restarts no sequence that could send a run of requests to one side.)
func TestWeightShiftAcrossReloads(t *testing.T) {
	ports := whoUpstreams(t, 2, false)
	phases := []int{10, 50, 90} // b's weight; a's is 100 minus it
	srv := testutil.StartMeshd(t, "app", weightMesh(ports[0], ports[1], 100-phases[0], phases[0]))
	bPort := strconv.Itoa(ports[1])

	const perPhase, workers = 800, 4
	var (
		phase  atomic.Int32
		mu     sync.Mutex
		seen   = make([][]bool, len(phases)) // per phase, in completion order: went to b
		failed atomic.Int64
		stop   atomic.Bool
		wg     sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := testutil.HTTPClient(t, srv.EgressAddr())
			for i := 0; !stop.Load() && i < 10*perPhase; i++ { // bounded in count
				p := phase.Load()
				resp, err := client.Get("http://svc.t.local:8080/")
				if err != nil {
					failed.Add(1)
					t.Errorf("request failed: %v", err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
					t.Errorf("status %d (%s)", resp.StatusCode, resp.Header.Get("X-Meshd-Error"))
					return
				}
				if phase.Load() != p {
					continue // straddled a reload: either snapshot may have routed it
				}
				w := resp.Header.Get("X-Who")
				mu.Lock()
				seen[p] = append(seen[p], strings.HasSuffix(w, "@"+bPort))
				mu.Unlock()
			}
		}()
	}
	count := func(p int) int {
		mu.Lock()
		defer mu.Unlock()
		return len(seen[p])
	}
	deadline := time.Now().Add(60 * time.Second) // bounded in time
	for p := range phases {
		if p > 0 {
			if _, err := srv.Apply(context.Background(), testutil.ParseConfig(t, weightMesh(ports[0], ports[1], 100-phases[p], phases[p])), "test"); err != nil {
				t.Fatal(err)
			}
			phase.Store(int32(p))
		}
		for count(p) < perPhase && failed.Load() == 0 {
			if time.Now().After(deadline) {
				stop.Store(true)
				wg.Wait()
				t.Fatalf("phase %d: %d requests before the deadline", p, count(p))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	stop.Store(true)
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d requests failed", failed.Load())
	}
	frac := func(bs []bool) float64 {
		n := 0
		for _, b := range bs {
			if b {
				n++
			}
		}
		return float64(n) / float64(len(bs))
	}
	for p, w := range phases {
		want := float64(w) / 100
		got := frac(seen[p])
		if got < want-0.06 || got > want+0.06 { // 3.5σ of 800 draws at p=0.5
			t.Errorf("phase %d (b weight %d): b's share %.3f of %d", p, w, got, len(seen[p]))
		}
		if first := frac(seen[p][:100]); first < want-0.16 || first > want+0.16 {
			t.Errorf("phase %d: b's share in the first 100 requests %.2f; want %.2f (a burst to one side)", p, first, want)
		}
		// No run to one side: the longest run is what independent draws give, not a
		// sequence restarted by the reload.
		run, longest := 0, 0
		for i, b := range seen[p][:200] {
			if i > 0 && b == seen[p][i-1] {
				run++
			} else {
				run = 1
			}
			longest = max(longest, run)
		}
		if w == 50 && longest > 20 {
			t.Errorf("phase %d: a run of %d requests to one side at 50/50", p, longest)
		}
	}
}
