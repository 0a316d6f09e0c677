package proxy_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// TestCloudWatchEMF: with Options.CloudWatchEMF, each cluster and listener that served
// requests gets one Embedded Metric Format line per interval (here: the last flush at
// shutdown) that CloudWatch turns into metrics with no agent: the _aws block names the
// namespace, dimensions and metrics, and the values are the interval's counts.
func TestCloudWatchEMF(t *testing.T) {
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			w.WriteHeader(500)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	path := filepath.Join(t.TempDir(), "emf.log")
	srv, err := proxy.New(proxy.Options{Node: "app", IngressAddr: "127.0.0.1:0", EgressAddr: "127.0.0.1:0", AdminAddr: "off",
		CloudWatchEMF: path, CloudWatchEMFInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Apply(context.Background(), testutil.ParseConfig(t, resMesh([]int{up.Port}, "", "")), "t"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	c := testutil.HTTPClient(t, srv.EgressAddr())
	for _, p := range []string{"/", "/", "/fail"} {
		resp, err := c.Get("http://svc.t.local" + p)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	c.CloseIdleConnections()
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cluster, listener map[string]any
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if m["Cluster"] == "svc" {
			cluster = m
		}
		if m["Listener"] == "egress" {
			listener = m
		}
	}
	if cluster == nil || listener == nil {
		t.Fatalf("no line for cluster svc or the egress listener in:\n%s", b)
	}
	if cluster["Requests"] != float64(3) || cluster["Responses5xx"] != float64(1) || cluster["Mesh"] != "t" || cluster["VirtualNode"] != "app" {
		t.Fatalf("cluster line %v", cluster)
	}
	aws := cluster["_aws"].(map[string]any)
	cw := aws["CloudWatchMetrics"].([]any)[0].(map[string]any)
	if cw["Namespace"] != "meshd" || len(cw["Metrics"].([]any)) != 6 {
		t.Fatalf("_aws block %v", aws)
	}
}
