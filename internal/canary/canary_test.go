package canary

import (
	"io"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/config"
)

const yamlDoc = `# the shop mesh
mesh: {meshName: shop}
virtualNodes:
  - virtualNodeName: front
    spec:
      listeners: [{portMapping: {port: 9000, protocol: http}}]
      backends: [{virtualService: {virtualServiceName: app.local}}]
  - virtualNodeName: app-v1
    spec:
      listeners: [{portMapping: {port: 8080, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:8080"]}}
  - virtualNodeName: app-v2
    spec:
      listeners: [{portMapping: {port: 8080, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:8081"]}}
virtualRouters:
  - virtualRouterName: app
    spec: {listeners: [{portMapping: {port: 8080, protocol: http}}]}
routes:
  - routeName: other
    virtualRouterName: app
    spec: {priority: 0, httpRoute: {match: {prefix: /admin}, action: {weightedTargets: [{virtualNode: app-v1, weight: 1}]}}}
  - routeName: main
    virtualRouterName: app
    spec:
      priority: 1
      httpRoute:
        match: {prefix: /}
        action:
          weightedTargets:
            - virtualNode: app-v1 # the primary
              weight: 3
            - {virtualNode: app-v1b, weight: 1}
virtualServices:
  - virtualServiceName: app.local
    spec: {provider: {virtualRouter: {virtualRouterName: app}}}
`

func TestSplit(t *testing.T) {
	for _, c := range []struct {
		in   []Target
		pct  int
		want string
	}{
		{[]Target{{"a", 3}, {"b", 1}}, 10, "a=68 b=22 c=10"}, // 67.5 and 22.5: the earlier first
		{[]Target{{"a", 1}, {"b", 1}, {"c", 1}}, 0, "a=50 b=50 c=0"},
		{[]Target{{"a", 1}, {"b", 1}, {"d", 1}}, 0, "a=34 b=33 d=33 c=0"},
		{[]Target{{"a", 0}, {"b", 0}, {"c", 50}}, 50, "a=25 b=25 c=50"}, // no weights left: equal
		{[]Target{{"a", 100}}, 100, "a=0 c=100"},
		{[]Target{{"a", 90}, {"c", 10}}, 50, "a=50 c=50"},
		{[]Target{{"a", 1}, {"b", 2}}, 0, "a=33 b=67 c=0"},
	} {
		got := Split(c.in, "c", c.pct)
		var parts []string
		sum := 0
		for _, t := range got {
			parts = append(parts, t.Node+"="+strconv.Itoa(t.Weight))
			sum += t.Weight
		}
		if s := strings.Join(parts, " "); s != c.want || sum != 100 {
			t.Errorf("Split(%v, c, %d) = %s (sum %d), want %s", c.in, c.pct, s, sum, c.want)
		}
	}
}

// TestSetCanaryYAML: the canary joins the route as a target, the weights are written,
// everything else (comments, the other route, key order) stays, and the result parses.
func TestSetCanaryYAML(t *testing.T) {
	doc, err := ParseDoc([]byte(yamlDoc))
	if err != nil {
		t.Fatal(err)
	}
	ts, err := doc.SetCanary("app", "main", "app-v2", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 3 || ts[2] != (Target{"app-v2", 10}) || ts[0].Weight+ts[1].Weight != 90 {
		t.Fatalf("targets written %v", ts)
	}
	out, err := doc.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# the shop mesh", "# the primary", "routeName: other"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("written config lost %q:\n%s", want, out)
		}
	}
	cfg, err := config.Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, r := range cfg.Routes {
		if r.RouteName == "main" {
			for _, wt := range r.Spec.HTTPRoute.Action.WeightedTargets {
				got[wt.VirtualNode] = int(wt.Weight)
			}
		}
	}
	if got["app-v1"] != 68 || got["app-v1b"] != 22 || got["app-v2"] != 10 {
		t.Fatalf("weights in the written config %v", got)
	}
	// Again from the written config: resumes from its weights.
	doc2, _ := ParseDoc(out)
	ts, _ = doc2.Targets("app", "main")
	if pct, found := CanaryPercent(ts, "app-v2"); pct != 10 || !found {
		t.Fatalf("canary at %d%% (found %v)", pct, found)
	}
	if _, err := doc2.SetCanary("app", "main", "app-v2", 100); err != nil {
		t.Fatal(err)
	}
	ts, _ = doc2.Targets("app", "main")
	if pct, _ := CanaryPercent(ts, "app-v2"); pct != 100 {
		t.Fatalf("promoted to %d%%", pct)
	}
}

// TestSetCanaryJSON: a JSON config is written back as JSON in its key order.
func TestSetCanaryJSON(t *testing.T) {
	in := `{"mesh": {"meshName": "shop"},
 "virtualNodes": [{"virtualNodeName": "a", "spec": {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}]}},
   {"virtualNodeName": "b", "spec": {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}]}}],
 "virtualRouters": [{"virtualRouterName": "r", "spec": {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}]}}],
 "routes": [{"routeName": "x", "virtualRouterName": "r", "spec": {"httpRoute": {"match": {"prefix": "/"},
   "action": {"weightedTargets": [{"virtualNode": "a", "weight": 1}, {"virtualNode": "b", "weight": 0}]}}}}]}`
	doc, err := ParseDoc([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := doc.SetCanary("r", "x", "b", 50); err != nil {
		t.Fatal(err)
	}
	out, err := doc.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	if !strings.HasPrefix(s, "{\n  \"mesh\": {") || strings.Index(s, `"virtualNodes"`) > strings.Index(s, `"routes"`) ||
		!strings.Contains(s, `"virtualNode": "b",`) || !strings.Contains(s, `"weight": 50`) {
		t.Fatalf("JSON written:\n%s", s)
	}
}

func TestSetCanaryErrors(t *testing.T) {
	doc, _ := ParseDoc([]byte(yamlDoc))
	for _, c := range []struct{ router, route, want string }{
		{"app", "nope", "route app/nope: not in the config"},
		{"nope", "main", "route nope/main: not in the config"},
	} {
		if _, err := doc.SetCanary(c.router, c.route, "app-v2", 10); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s/%s: %v, want %q", c.router, c.route, err, c.want)
		}
	}
	if _, err := ParseDoc([]byte("- a\n- b\n")); err == nil {
		t.Error("a list at the top was accepted")
	}
	one, _ := ParseDoc([]byte(strings.Replace(yamlDoc, "            - {virtualNode: app-v1b, weight: 1}\n", "", 1)))
	if _, err := one.SetCanary("app", "main", "app-v1", 50); err == nil || !strings.Contains(err.Error(), "only target") {
		t.Errorf("the canary as the only target: %v", err)
	}
}

const exposition = `# TYPE meshd_cluster_requests_total counter
meshd_cluster_requests_total{virtual_node="app-v1",cluster="app-v1",code_class="2xx"} 900
meshd_cluster_requests_total{virtual_node="app-v1",cluster="app-v1",code_class="5xx"} 9
meshd_cluster_requests_total{virtual_node="app-v2",cluster="app-v2@app.local",code_class="2xx"} 80
meshd_cluster_requests_total{virtual_node="app-v2",cluster="app-v2@app.local",code_class="5xx"} 20
meshd_cluster_requests_total{virtual_node="x",cluster="unrelated",code_class="5xx"} 1000
# TYPE meshd_cluster_grpc_calls_total counter
meshd_cluster_grpc_calls_total{virtual_node="app-v2",cluster="app-v2",grpc_result="error"} 5
meshd_cluster_grpc_calls_total{virtual_node="app-v2",cluster="app-v2",grpc_result="ok"} 50
# TYPE meshd_cluster_request_duration_seconds histogram
meshd_cluster_request_duration_seconds_bucket{virtual_node="app-v2",cluster="app-v2",le="0.01"} 90
meshd_cluster_request_duration_seconds_bucket{virtual_node="app-v2",cluster="app-v2",le="0.1"} 99
meshd_cluster_request_duration_seconds_bucket{virtual_node="app-v2",cluster="app-v2",le="+Inf"} 100
meshd_cluster_request_duration_seconds_sum{virtual_node="app-v2",cluster="app-v2"} 1
meshd_cluster_request_duration_seconds_count{virtual_node="app-v2",cluster="app-v2"} 100
`

// TestRead: two sidecars' expositions summed by side; a TLS cluster (node@service)
// counts for its node; gRPC errors add to 5xx; unrelated clusters are left out.
func TestRead(t *testing.T) {
	s, err := Read([]io.Reader{strings.NewReader(exposition), strings.NewReader(exposition)}, "app-v2", []string{"app-v1"})
	if err != nil {
		t.Fatal(err)
	}
	if s.Canary.Requests != 200 || s.Canary.Errors != 50 || s.Primary.Requests != 1818 || s.Primary.Errors != 18 {
		t.Fatalf("sides %+v", s)
	}
	if q := s.Canary.Quantile(0.99); q != 0.1 {
		t.Fatalf("p99 %v, want the 0.1 bucket", q)
	}
	if q := s.Canary.Quantile(0.5); q != 0.01 {
		t.Fatalf("p50 %v", q)
	}
	if !math.IsNaN(s.Primary.Quantile(0.99)) {
		t.Fatal("a side without a histogram has a p99")
	}
	if _, err := Read([]io.Reader{strings.NewReader("not { metrics")}, "a", nil); err == nil {
		t.Fatal("a malformed exposition was read")
	}
}

func TestDecide(t *testing.T) {
	th := Thresholds{MaxErrorRate: 0.05, MaxP99: 50 * time.Millisecond, MinRequests: 20}
	mk := func(req, errs float64, fast float64) Sides {
		return Sides{Canary: Counts{Requests: req, Errors: errs, Buckets: map[float64]float64{0.01: fast, math.Inf(1): req}},
			Primary: Counts{Requests: 100}}
	}
	for _, c := range []struct {
		name string
		s    Sides
		want Verdict
		why  string
	}{
		{"too few", mk(10, 0, 10), Hold, "10 requests, 20 needed"},
		{"healthy", mk(100, 1, 100), Next, "error rate 1.00%"},
		{"errors", mk(100, 50, 100), Rollback, "above --max-error-rate 5.00%"},
		{"slow", mk(100, 0, 50), Rollback, "above --max-p99 50ms"},
	} {
		v, why := Decide(c.s, th)
		if v != c.want || !strings.Contains(why, c.why) {
			t.Errorf("%s: %v %q, want %v and %q", c.name, v, why, c.want, c.why)
		}
	}
}

func TestStartStep(t *testing.T) {
	steps := []int{10, 50, 100}
	for cur, want := range map[int]int{0: 0, 5: 0, 10: 1, 49: 1, 50: 2, 99: 2, 100: 3} {
		if got := StartStep(steps, cur); got != want {
			t.Errorf("StartStep(%d) = %d, want %d", cur, got, want)
		}
	}
}
