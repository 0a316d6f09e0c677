package proxy_test

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// resetUpstream resets every connection after reading the start of a request.
func resetUpstream(t *testing.T) *testutil.Upstream {
	return testutil.StartRaw(t, func(c net.Conn) {
		buf := make([]byte, 4096)
		_, _ = c.Read(buf)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
	})
}

// TestOutlierLocalOriginEjectionReturnsOnItsOwn: connect refusals and resets (no 5xx at
// all) eject the endpoint; after baseEjectionDuration on the injected clock the
// cluster's background sweep returns it with no test seam called.
func TestOutlierLocalOriginEjectionReturnsOnItsOwn(t *testing.T) {
	failing := map[string]func(t *testing.T) int{
		"connect refused": func(t *testing.T) int { return testutil.ClosedPort(t) },
		"reset":           func(t *testing.T) int { return resetUpstream(t).Port },
	}
	for name, start := range failing {
		t.Run(name, func(t *testing.T) {
			clk := newTickClock()
			good, goodUp := startCounting(t, 200)
			badPort := start(t)
			od := "outlierDetection: {maxServerErrors: 2, interval: {unit: s, value: 10}, baseEjectionDuration: {unit: s, value: 30}, maxEjectionPercent: 50}"
			srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", Clock: clk}, resMesh([]int{goodUp.Port, badPort}, od, ""))
			client := testutil.HTTPClient(t, srv.EgressAddr())
			badAddr := fmt.Sprintf("127.0.0.1:%d", badPort)
			ejected := func() bool { st, _ := endpointState(t, srv, "svc"); return st[badAddr][1] }
			for i := 0; i < 40 && !ejected(); i++ {
				if resp := get(t, client, "http://svc.t.local/"); resp.StatusCode != 200 {
					t.Fatalf("request %d: %d (%s), want 200 after a retry", i, resp.StatusCode, resp.Header.Get(proxy.HeaderError))
				}
			}
			if !ejected() {
				t.Fatal("the failing endpoint was not ejected")
			}
			st := readStats(t, srv).Clusters["svc"]
			if st["outlier_errors_local_origin"] < 2 || st["outlier_errors_upstream"] != 0 || st["outlier_ejections_total"] != 1 {
				t.Errorf("outlier counters %+v, want ≥2 local-origin errors, none upstream, one ejection", st)
			}
			before := good.hits.Load()
			for range 10 {
				get(t, client, "http://svc.t.local/")
			}
			if good.hits.Load()-before != 10 || readStats(t, srv).Clusters["svc"]["retries"] != st["retries"] {
				t.Fatal("the ejected endpoint still got attempts")
			}
			eventually(t, "the control goroutine's ticker", func() bool { return clk.liveTickers() == 1 })
			clk.Advance(29 * time.Second)
			// The sweep tick due at +20 s is taken by the control goroutine before the check,
			// so a (wrong) early return has its chance to show.
			eventually(t, "the sweep tick to be taken", func() bool { return clk.undelivered() == 0 })
			if !ejected() {
				t.Fatal("returned before baseEjectionDuration")
			}
			advanceUntil(t, clk, time.Second, "the background sweep to return the endpoint", func() bool { return !ejected() })
			if now := clk.Now(); now.Sub(time.Unix(1_700_000_000, 0)) < 30*time.Second {
				t.Fatalf("returned at +%v, before baseEjectionDuration", now.Sub(time.Unix(1_700_000_000, 0)))
			}
		})
	}
}
