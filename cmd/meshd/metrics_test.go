package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// The series the demo config exports at the default metrics level, as docs/metrics.md
// states them: idle (config applied, no request yet) and after the demo's traffic (the
// header canary, the 90/10 split reaching both versions, the ingress listener, and an
// unknown host refused by DROP_ALL). meshd_ series are meshd's own; envoy_ series the
// Envoy-compatible ones; the process and Go runtime collectors are not counted.
const (
	demoMeshdIdle    = 81
	demoMeshdTraffic = 97
	demoEnvoyIdle    = 82
	demoEnvoyTraffic = 91
)

// countSeries counts the sample lines of a Prometheus text exposition by name prefix.
func countSeries(t *testing.T, r io.Reader) map[string]int {
	t.Helper()
	out := map[string]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, _, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		prefix, _, _ := strings.Cut(name, "_")
		out[prefix+"_"]++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func scrapeCounts(t *testing.T, srv *proxy.Server) map[string]int {
	t.Helper()
	resp, err := http.Get("http://" + srv.AdminAddr() + "/stats/prometheus")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/stats/prometheus: %s", resp.Status)
	}
	return countSeries(t, resp.Body)
}

// clusterRequests sums envoy_cluster_upstream_rq_total over the clusters.
func clusterRequests(t *testing.T, srv *proxy.Server) float64 {
	t.Helper()
	resp, err := http.Get("http://" + srv.AdminAddr() + "/stats/prometheus")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "envoy_cluster_upstream_rq_total{") {
			v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			sum += v
		}
	}
	return sum
}

// TestDemoSeriesCount counts the series of the embedded demo config at the default
// level and fails when they exceed what docs/metrics.md states (or when the page no
// longer states these numbers).
func TestDemoSeriesCount(t *testing.T) {
	var ports demoPorts
	for _, app := range []struct {
		name string
		port *int
	}{{"frontend", &ports.Frontend}, {"backend-v1", &ports.V1}, {"backend-v2", &ports.V2}} {
		ln, srv, err := startApp(app.name, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
		})
		*app.port = ln.Addr().(*net.TCPAddr).Port
	}
	raw, err := renderDemo(ports)
	if err != nil {
		t.Fatal(err)
	}
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "frontend"}, string(raw))

	idle := scrapeCounts(t, srv)
	t.Logf("idle: %d meshd_ series, %d envoy_ series", idle["meshd_"], idle["envoy_"])
	if idle["meshd_"] > demoMeshdIdle || idle["envoy_"] > demoEnvoyIdle {
		t.Errorf("idle demo: %d meshd_ and %d envoy_ series, documented %d and %d", idle["meshd_"], idle["envoy_"], demoMeshdIdle, demoEnvoyIdle)
	}

	egress := testutil.HTTPClient(t, srv.EgressAddr())
	do := func(c *http.Client, host string, hdr map[string]string, status int) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+host+"/hello", nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != status {
			t.Fatalf("GET http://%s/hello %v: %d, want %d", host, hdr, resp.StatusCode, status)
		}
	}
	do(egress, "backend.shop.local", map[string]string{"x-canary": "1"}, 200)
	for range 40 { // the 90/10 split reaches backend-v1 (and very likely v2 too)
		do(egress, "backend.shop.local", nil, 200)
	}
	do(testutil.HTTPClient(t, srv.IngressAddr()), "frontend", nil, 200)
	do(egress, "elsewhere.example", nil, 404)

	// A front end records a request after its response went out: wait until the
	// cluster totals (recorded last) show all 42 requests that reached a cluster.
	for deadline := time.Now().Add(5 * time.Second); clusterRequests(t, srv) != 42; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the cluster request totals did not reach 42 (have %v)", clusterRequests(t, srv))
		}
	}
	busy := scrapeCounts(t, srv)
	t.Logf("after traffic: %d meshd_ series, %d envoy_ series", busy["meshd_"], busy["envoy_"])
	if busy["meshd_"] > demoMeshdTraffic || busy["envoy_"] > demoEnvoyTraffic {
		t.Errorf("demo after traffic: %d meshd_ and %d envoy_ series, documented at most %d and %d", busy["meshd_"], busy["envoy_"], demoMeshdTraffic, demoEnvoyTraffic)
	}
	if busy["meshd_"] >= 100 {
		t.Errorf("the demo exports %d meshd_ series at the default level; keep it under 100", busy["meshd_"])
	}

	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range []string{
		"| idle (config applied, no request yet) | " + strconv.Itoa(demoMeshdIdle) + " | " + strconv.Itoa(demoEnvoyIdle) + " |",
		"| after the demo's traffic | " + strconv.Itoa(demoMeshdTraffic) + " | " + strconv.Itoa(demoEnvoyTraffic) + " |",
	} {
		if !strings.Contains(string(doc), row) {
			t.Errorf("docs/metrics.md does not state the demo's series count as %q", row)
		}
	}
}
