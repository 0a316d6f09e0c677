package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// families is one parsed scrape of the admin Prometheus endpoint.
type families map[string]*dto.MetricFamily

// scrape reads path (default /stats/prometheus) of srv's admin API as the Prometheus
// text format, without a token: the endpoint is unauthenticated like /stats.
func scrape(t *testing.T, srv *proxy.Server, path string) families {
	t.Helper()
	if path == "" {
		path = "/stats/prometheus"
	}
	resp, err := http.Get("http://" + srv.AdminAddr() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s\n%s", path, resp.Status, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("GET %s: Content-Type %q, want the Prometheus text format", path, ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: parse: %v", path, err)
	}
	return fams
}

type lbls map[string]string

func labelsOf(m *dto.Metric) lbls {
	out := lbls{}
	for _, lp := range m.GetLabel() {
		out[lp.GetName()] = lp.GetValue()
	}
	return out
}

func (l lbls) String() string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "%s=%q", k, l[k])
	}
	return "{" + b.String() + "}"
}

func sameLabels(a, b lbls) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// metric returns the series of family name whose label set is exactly want, or nil.
func (f families) metric(name string, want lbls) *dto.Metric {
	for _, m := range f[name].GetMetric() {
		if sameLabels(labelsOf(m), want) {
			return m
		}
	}
	return nil
}

// value is the counter or gauge value of the series name{want}; it fails the test when
// there is no such series.
func (f families) value(t *testing.T, name string, want lbls) float64 {
	t.Helper()
	m := f.metric(name, want)
	if m == nil {
		var have []string
		for _, m := range f[name].GetMetric() {
			have = append(have, labelsOf(m).String())
		}
		t.Fatalf("no series %s%s; the family has %v", name, want, have)
	}
	switch f[name].GetType() {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	}
	t.Fatalf("%s is a %v, not a counter or gauge", name, f[name].GetType())
	return 0
}

func (f families) expect(t *testing.T, name string, want lbls, v float64) {
	t.Helper()
	if got := f.value(t, name, want); got != v {
		t.Errorf("%s%s = %v, want %v", name, want, got, v)
	}
}

func (f families) absent(t *testing.T, name string, want lbls) {
	t.Helper()
	if m := f.metric(name, want); m != nil {
		t.Errorf("%s%s is exported (%v); want no such series", name, want, m)
	}
}

// hist returns the histogram series name{want}.
func (f families) hist(t *testing.T, name string, want lbls) *dto.Histogram {
	t.Helper()
	m := f.metric(name, want)
	if m == nil || f[name].GetType() != dto.MetricType_HISTOGRAM {
		t.Fatalf("no histogram %s%s", name, want)
	}
	return m.GetHistogram()
}

// count is the number of series the scrape exposes whose family name starts with
// prefix (a histogram counts one series per bucket, plus _sum and _count).
func (f families) count(prefix string) int {
	n := 0
	for name, mf := range f {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		for _, m := range mf.GetMetric() {
			if h := m.GetHistogram(); h != nil {
				n += len(h.GetBucket()) + 2
				if !hasInf(h) {
					n++ // +Inf is implicit in the parsed form
				}
				continue
			}
			n++
		}
	}
	return n
}

func hasInf(h *dto.Histogram) bool {
	for _, b := range h.GetBucket() {
		if b.GetUpperBound() > 1e300 {
			return true
		}
	}
	return false
}

// metricsMesh is node "app" (its own listener on appPort) calling svc.t.local, whose
// router has route "ok" (/ok → node ok), "fail" (/fail → node bad, retries off) and
// "flaky" (/flaky → node bad, App Mesh's default retry policy: two retries on 503).
const metricsMesh = `mesh: {meshName: t, spec: {egressFilter: {type: DROP_ALL}}}
virtualNodes:
  - virtualNodeName: app
    spec:
      listeners: [{portMapping: {port: {{.App}}, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:{{.App}}"]}}
      backends: [{virtualService: {virtualServiceName: svc.t.local}}]
  - virtualNodeName: ok
    spec:
      listeners: [{portMapping: {port: 8080, protocol: http}{{.OKListener}}}]
      serviceDiscovery: {static: {endpoints: [{{.OKEndpoints}}]}}
  - virtualNodeName: bad
    spec:
      listeners: [{portMapping: {port: 8080, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:{{.Bad}}"]}}
virtualServices:
  - virtualServiceName: svc.t.local
    spec: {provider: {virtualRouter: {virtualRouterName: svc-router}}}
virtualRouters:
  - virtualRouterName: svc-router
    spec: {listeners: [{portMapping: {port: 8080, protocol: http}}]}
routes:
  - routeName: ok
    virtualRouterName: svc-router
    spec: {priority: 0, httpRoute: {match: {prefix: /ok}, action: {weightedTargets: [{virtualNode: ok, weight: 1}]}}}
  - routeName: fail
    virtualRouterName: svc-router
    spec: {priority: 1, httpRoute: {match: {prefix: /fail}, action: {weightedTargets: [{virtualNode: bad, weight: 1}]}, retryPolicy: {maxRetries: 0, perRetryTimeout: {unit: s, value: 5}, httpRetryEvents: [server-error]}}}
  - routeName: flaky
    virtualRouterName: svc-router
    spec: {priority: 2, httpRoute: {match: {prefix: /flaky}, action: {weightedTargets: [{virtualNode: bad, weight: 1}]}}}
`

type metricsEnv struct {
	srv               *proxy.Server
	appPort, okPort   int
	okHits, badHits   *counting
	egress, ingress   *http.Client
	ingressRoute, loc string // "ingress:<app port>", "local:<app port>"
}

// startMetricsMesh starts the three upstreams (app and ok answer 200, bad 503) and
// meshd for node app with opts; okListener and okEndpoints, when set, replace node ok's
// extra listener fields and its endpoint list.
func startMetricsMesh(t *testing.T, opts proxy.Options, okListener, okEndpoints string) *metricsEnv {
	t.Helper()
	app, appUp := startCounting(t, 200)
	ok, okUp := startCounting(t, 200)
	bad, badUp := startCounting(t, 503)
	_ = app
	if okListener != "" {
		okListener = ", " + okListener
	}
	if okEndpoints == "" {
		okEndpoints = strconv.Quote("127.0.0.1:" + strconv.Itoa(okUp.Port))
	}
	yaml := testutil.Render(t, metricsMesh, map[string]any{
		"App": appUp.Port, "Bad": badUp.Port, "OKListener": okListener, "OKEndpoints": okEndpoints,
	})
	opts.Node = "app"
	srv := testutil.StartMeshdOpts(t, opts, yaml)
	p := strconv.Itoa(appUp.Port)
	return &metricsEnv{
		srv: srv, appPort: appUp.Port, okPort: okUp.Port, okHits: ok, badHits: bad,
		egress: testutil.HTTPClient(t, srv.EgressAddr()), ingress: testutil.HTTPClient(t, srv.IngressAddr()),
		ingressRoute: "ingress:" + p, loc: "local:" + p,
	}
}

// send makes n requests for path to svc.t.local through the egress listener and
// checks their status.
func (m *metricsEnv) send(t *testing.T, n int, path string, status int) {
	t.Helper()
	for range n {
		if resp := get(t, m.egress, "http://svc.t.local"+path); resp.StatusCode != status {
			t.Fatalf("GET %s: %d, want %d", path, resp.StatusCode, status)
		}
	}
}

// knownTraffic: 3×200 on route ok, 2×503 on route fail (no retries), 1×503 on route
// flaky after two retries, one 404 no_route, and 1×200 through the ingress listener to
// the local app.
func (m *metricsEnv) knownTraffic(t *testing.T) {
	t.Helper()
	m.send(t, 3, "/ok", 200)
	m.send(t, 2, "/fail", 503)
	m.send(t, 1, "/flaky", 503)
	resp := get(t, m.egress, "http://svc.t.local/nomatch")
	if resp.StatusCode != 404 || resp.Header.Get("x-meshd-error") != "no_route" {
		t.Fatalf("GET /nomatch: %d %q, want 404 no_route", resp.StatusCode, resp.Header.Get("x-meshd-error"))
	}
	if resp := get(t, m.ingress, "http://app/in"); resp.StatusCode != 200 {
		t.Fatalf("ingress GET: %d", resp.StatusCode)
	}
	if got := m.badHits.hits.Load(); got != 5 {
		t.Fatalf("bad upstream got %d requests, want 5 (2 fail + 1 flaky with 2 retries)", got)
	}
	m.settle(t, map[string]float64{"ingress": 1, "egress": 7}, map[string]float64{"ok": 3, "bad": 3, m.loc: 1})
}

// settle waits until the statistics show the requests the test sent: a front end
// records a request after its response went out, so a scrape right after the client's
// last response may come first. Listener statistics are recorded before the route's
// and the cluster's, so the cluster totals settle last.
func (m *metricsEnv) settle(t *testing.T, listeners, clusters map[string]float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		f := scrape(t, m.srv, "")
		done := true
		for l, n := range listeners {
			if mm := f.metric("envoy_http_downstream_rq_total", tagged(f, lbls{"envoy_http_conn_manager_prefix": l})); mm.GetCounter().GetValue() != n {
				done = false
			}
		}
		for c, n := range clusters {
			if mm := f.metric("meshd_cluster_request_duration_seconds", tagged(f, clusterLabels(c))); mm.GetHistogram().GetSampleCount() != uint64(n) {
				done = false
			}
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the statistics did not settle on listeners %v, clusters %v", listeners, clusters)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// clusterLabels are the meshd labels of cluster c of the metrics mesh.
func clusterLabels(c string) lbls {
	if strings.HasPrefix(c, "local:") {
		return lbls{"virtual_node": "app", "cluster": c}
	}
	return lbls{"virtual_node": c, "cluster": c}
}

// tagged adds the App Mesh tags to l when the scrape carries them.
func tagged(f families, l lbls) lbls {
	for _, mm := range f["meshd_config_applies_total"].GetMetric() {
		if v, ok := labelsOf(mm)["appmesh_mesh"]; ok {
			l["appmesh_mesh"], l["appmesh_virtual_node"] = v, labelsOf(mm)["appmesh_virtual_node"]
		}
	}
	return l
}

// TestPrometheusKnownTraffic sends known traffic and checks the exact values and label
// sets of both naming schemes on /stats/prometheus (and that /metrics and
// /stats?format=prometheus serve the same exposition).
func TestPrometheusKnownTraffic(t *testing.T) {
	m := startMetricsMesh(t, proxy.Options{AdminToken: "s3cret"}, "", "")
	m.knownTraffic(t)
	f := scrape(t, m.srv, "")

	const vs = "svc.t.local"
	rt := func(route string, extra ...string) lbls {
		l := lbls{"virtual_service": vs, "route": route}
		for i := 0; i+1 < len(extra); i += 2 {
			l[extra[i]] = extra[i+1]
		}
		return l
	}
	// Routes.
	f.expect(t, "meshd_route_requests_total", rt("ok", "code_class", "2xx"), 3)
	f.expect(t, "meshd_route_requests_total", rt("fail", "code_class", "5xx"), 2)
	f.expect(t, "meshd_route_requests_total", rt("flaky", "code_class", "5xx"), 1)
	f.expect(t, "meshd_route_requests_total", lbls{"virtual_service": m.ingressRoute, "route": m.ingressRoute, "code_class": "2xx"}, 1)
	f.absent(t, "meshd_route_requests_total", rt("ok", "code_class", "5xx")) // used only
	f.expect(t, "meshd_route_requests_by_code_total", rt("ok", "code", "200"), 3)
	f.expect(t, "meshd_route_requests_by_code_total", rt("fail", "code", "503"), 2)
	f.expect(t, "meshd_route_requests_by_code_total", rt("flaky", "code", "503"), 1)
	f.expect(t, "meshd_route_retries_total", rt("flaky"), 2)
	f.absent(t, "meshd_route_retries_total", rt("fail"))
	if len(f["meshd_route_request_duration_seconds"].GetMetric()) != 0 {
		t.Errorf("route latency histograms at the default level")
	}

	// Clusters: ok, bad and the local app.
	ok, bad := lbls{"virtual_node": "ok", "cluster": "ok"}, lbls{"virtual_node": "bad", "cluster": "bad"}
	local := lbls{"virtual_node": "app", "cluster": m.loc}
	plus := func(l lbls, k, v string) lbls {
		out := lbls{k: v}
		for a, b := range l {
			out[a] = b
		}
		return out
	}
	f.expect(t, "meshd_cluster_requests_total", plus(ok, "code_class", "2xx"), 3)
	f.expect(t, "meshd_cluster_requests_total", plus(bad, "code_class", "5xx"), 3)
	f.expect(t, "meshd_cluster_requests_total", plus(local, "code_class", "2xx"), 1)
	f.expect(t, "meshd_cluster_requests_by_code_total", plus(bad, "code", "503"), 3)
	f.expect(t, "meshd_cluster_retries_total", bad, 2)
	f.absent(t, "meshd_cluster_retries_total", ok)
	f.expect(t, "meshd_cluster_endpoints", ok, 1)
	f.expect(t, "meshd_cluster_endpoints_healthy", ok, 1)
	f.expect(t, "meshd_cluster_requests_in_flight", ok, 0)
	for _, c := range []struct {
		l lbls
		n uint64
	}{{ok, 3}, {bad, 3}, {local, 1}} {
		h := f.hist(t, "meshd_cluster_request_duration_seconds", c.l)
		if h.GetSampleCount() != c.n || h.GetSampleSum() <= 0 {
			t.Errorf("meshd_cluster_request_duration_seconds%s: count %d sum %v, want count %d (the requests) and a positive sum", c.l, h.GetSampleCount(), h.GetSampleSum(), c.n)
		}
		if b := h.GetBucket(); len(b) != 17 || b[15].GetUpperBound() != 10 || b[16].GetCumulativeCount() != c.n || b[0].GetCumulativeCount() > b[15].GetCumulativeCount() {
			t.Errorf("meshd_cluster_request_duration_seconds%s buckets %v: want 16 cumulative bounds up to 10 s and +Inf", c.l, b)
		}
	}
	// Mechanisms the config does not enable have no series.
	for _, name := range []string{"meshd_cluster_breaker_state", "meshd_cluster_ejections_active", "meshd_cluster_requests_pending", "meshd_endpoint_requests_total"} {
		if n := len(f[name].GetMetric()); n != 0 {
			t.Errorf("%s has %d series; the mesh enables no such mechanism (or it is detailed)", name, n)
		}
	}

	// Listeners.
	eg, in := lbls{"listener": "egress"}, lbls{"listener": "ingress"}
	f.expect(t, "meshd_listener_requests_total", plus(eg, "code_class", "2xx"), 3)
	f.expect(t, "meshd_listener_requests_total", plus(eg, "code_class", "5xx"), 3)
	f.expect(t, "meshd_listener_requests_total", plus(eg, "code_class", "4xx"), 1)
	f.expect(t, "meshd_listener_requests_total", plus(in, "code_class", "2xx"), 1)
	f.expect(t, "meshd_listener_no_route_total", eg, 1)
	f.absent(t, "meshd_listener_no_route_total", in)
	f.expect(t, "meshd_listener_requests_in_flight", eg, 0)

	// The config.
	f.expect(t, "meshd_config_applies_total", lbls{"result": "applied"}, 1)
	f.expect(t, "meshd_config_applies_total", lbls{"result": "rejected"}, 0)
	f.expect(t, "meshd_config_info", lbls{"version": m.srv.Snapshot().Version()}, 1)

	// Envoy's names: App Mesh's cluster names, Envoy's labels.
	eok, ebad := lbls{"envoy_cluster_name": "cds_egress_t_ok_http_8080"}, lbls{"envoy_cluster_name": "cds_egress_t_bad_http_8080"}
	eloc := lbls{"envoy_cluster_name": "cds_ingress_t_app_self_redirect_http_" + strconv.Itoa(m.appPort)}
	f.expect(t, "envoy_cluster_upstream_rq_xx", plus(eok, "envoy_response_code_class", "2"), 3)
	f.expect(t, "envoy_cluster_upstream_rq_xx", plus(ebad, "envoy_response_code_class", "5"), 3)
	f.expect(t, "envoy_cluster_upstream_rq_xx", plus(eloc, "envoy_response_code_class", "2"), 1)
	f.absent(t, "envoy_cluster_upstream_rq_xx", plus(eok, "envoy_response_code_class", "5"))
	f.expect(t, "envoy_cluster_upstream_rq", plus(eok, "envoy_response_code", "200"), 3)
	f.expect(t, "envoy_cluster_upstream_rq", plus(ebad, "envoy_response_code", "503"), 3)
	f.expect(t, "envoy_cluster_upstream_rq_total", eok, 3)
	f.expect(t, "envoy_cluster_upstream_rq_retry", ebad, 2)
	f.expect(t, "envoy_cluster_upstream_rq_retry", eok, 0)
	f.expect(t, "envoy_cluster_upstream_rq_timeout", eok, 0)
	f.expect(t, "envoy_cluster_upstream_rq_pending_overflow", eok, 0)
	f.expect(t, "envoy_cluster_membership_total", eok, 1)
	f.expect(t, "envoy_cluster_membership_healthy", eok, 1)
	f.expect(t, "envoy_cluster_outlier_detection_ejections_active", eok, 0)
	f.expect(t, "envoy_cluster_upstream_rq_active", eok, 0)
	if v := f.value(t, "envoy_cluster_upstream_cx_active", eok); v < 0 || v > 1 {
		t.Errorf("envoy_cluster_upstream_cx_active%s = %v, want 0 or 1 (one keep-alive connection)", eok, v)
	}
	eh := f.hist(t, "envoy_cluster_upstream_rq_time", eok)
	if eh.GetSampleCount() != 3 {
		t.Errorf("envoy_cluster_upstream_rq_time%s count %d, want 3", eok, eh.GetSampleCount())
	}
	var les []string
	for _, b := range eh.GetBucket() {
		les = append(les, strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64))
	}
	if got, want := strings.Join(les, " "), "0.5 1 5 10 25 50 100 250 500 1000 2500 5000 10000 +Inf"; got != want && got+" +Inf" != want {
		t.Errorf("envoy_cluster_upstream_rq_time buckets (ms) %s, want Envoy's %s", got, want)
	}
	if ms, s := eh.GetSampleSum(), f.hist(t, "meshd_cluster_request_duration_seconds", ok).GetSampleSum(); ms < s*999 || ms > s*1001 {
		t.Errorf("envoy_cluster_upstream_rq_time_sum %v ms, meshd's %v s: want the same in ms", ms, s)
	}
	deg, din := lbls{"envoy_http_conn_manager_prefix": "egress"}, lbls{"envoy_http_conn_manager_prefix": "ingress"}
	f.expect(t, "envoy_http_downstream_rq_xx", plus(deg, "envoy_response_code_class", "2"), 3)
	f.expect(t, "envoy_http_downstream_rq_xx", plus(deg, "envoy_response_code_class", "4"), 1)
	f.expect(t, "envoy_http_downstream_rq_xx", plus(deg, "envoy_response_code_class", "5"), 3)
	f.expect(t, "envoy_http_downstream_rq_xx", plus(din, "envoy_response_code_class", "2"), 1)
	f.expect(t, "envoy_http_downstream_rq_total", deg, 7)
	f.expect(t, "envoy_http_downstream_rq_active", deg, 0)

	// Without the stats tags no series carries an appmesh_ label.
	for name, mf := range f {
		for _, s := range mf.GetMetric() {
			for k := range labelsOf(s) {
				if strings.HasPrefix(k, "appmesh_") {
					t.Fatalf("%s%s carries %s without EnvoyStatsTags", name, labelsOf(s), k)
				}
			}
		}
	}
	// The process and Go runtime collectors.
	for _, name := range []string{"process_cpu_seconds_total", "go_goroutines"} {
		if f[name] == nil {
			t.Errorf("%s missing: the process and Go collectors are not registered", name)
		}
	}

	// The other paths serve the same exposition.
	for _, path := range []string{"/metrics", "/stats?format=prometheus"} {
		g := scrape(t, m.srv, path)
		g.expect(t, "meshd_route_requests_total", rt("ok", "code_class", "2xx"), 3)
		g.expect(t, "envoy_cluster_upstream_rq_xx", plus(ebad, "envoy_response_code_class", "5"), 3)
	}
}

// TestPrometheusEnvoyStatsTags: with EnvoyStatsTags (ENABLE_ENVOY_STATS_TAGS=1) every
// series carries appmesh_mesh and appmesh_virtual_node, and route series
// appmesh_virtual_service (none for the node's own ingress route).
func TestPrometheusEnvoyStatsTags(t *testing.T) {
	m := startMetricsMesh(t, proxy.Options{EnvoyStatsTags: true}, "", "")
	m.knownTraffic(t)
	f := scrape(t, m.srv, "")
	tags := lbls{"appmesh_mesh": "t", "appmesh_virtual_node": "app"}
	with := func(kv ...string) lbls {
		out := lbls{}
		for k, v := range tags {
			out[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	f.expect(t, "meshd_route_requests_total", with("virtual_service", "svc.t.local", "route", "ok", "code_class", "2xx", "appmesh_virtual_service", "svc.t.local"), 3)
	f.expect(t, "meshd_route_requests_total", with("virtual_service", m.ingressRoute, "route", m.ingressRoute, "code_class", "2xx"), 1)
	f.expect(t, "meshd_cluster_requests_total", with("virtual_node", "bad", "cluster", "bad", "code_class", "5xx"), 3)
	f.expect(t, "meshd_listener_no_route_total", with("listener", "egress"), 1)
	f.expect(t, "envoy_cluster_upstream_rq_xx", with("envoy_cluster_name", "cds_egress_t_ok_http_8080", "envoy_response_code_class", "2"), 3)
	f.expect(t, "envoy_cluster_upstream_rq_retry", with("envoy_cluster_name", "cds_egress_t_bad_http_8080"), 2)
	f.expect(t, "envoy_http_downstream_rq_xx", with("envoy_http_conn_manager_prefix", "ingress", "envoy_response_code_class", "2"), 1)
	f.expect(t, "meshd_config_applies_total", with("result", "applied"), 1)
	if h := f.hist(t, "envoy_cluster_upstream_rq_time", with("envoy_cluster_name", "cds_egress_t_bad_http_8080")); h.GetSampleCount() != 3 {
		t.Errorf("tagged envoy_cluster_upstream_rq_time count %d, want 3", h.GetSampleCount())
	}
	// Every meshd_ and envoy_ series is tagged.
	for name, mf := range f {
		if !strings.HasPrefix(name, "meshd_") && !strings.HasPrefix(name, "envoy_") {
			continue
		}
		for _, s := range mf.GetMetric() {
			l := labelsOf(s)
			if l["appmesh_mesh"] != "t" || l["appmesh_virtual_node"] != "app" {
				t.Errorf("%s%s lacks the App Mesh tags", name, l)
			}
		}
	}
}

// TestPrometheusDetailedLevel: the detailed level adds per-endpoint series (with the
// endpoint address) and route and listener latency; the default level has no address
// label anywhere.
func TestPrometheusDetailedLevel(t *testing.T) {
	def := startMetricsMesh(t, proxy.Options{}, "", "")
	def.knownTraffic(t)
	for name, mf := range scrape(t, def.srv, "") {
		for _, s := range mf.GetMetric() {
			if _, ok := labelsOf(s)["address"]; ok {
				t.Fatalf("default level: %s%s has an address label", name, labelsOf(s))
			}
		}
	}

	m := startMetricsMesh(t, proxy.Options{MetricsLevel: proxy.MetricsLevelDetailed}, "", "")
	m.knownTraffic(t)
	f := scrape(t, m.srv, "")
	okEP := lbls{"virtual_node": "ok", "cluster": "ok", "address": "127.0.0.1:" + strconv.Itoa(m.okPort)}
	f.expect(t, "meshd_endpoint_requests_total", okEP, 3)
	f.expect(t, "meshd_endpoint_healthy", okEP, 1)
	f.expect(t, "meshd_endpoint_ejected", okEP, 0)
	f.expect(t, "meshd_endpoint_requests_in_flight", okEP, 0)
	if h := f.hist(t, "meshd_route_request_duration_seconds", lbls{"virtual_service": "svc.t.local", "route": "fail"}); h.GetSampleCount() != 2 {
		t.Errorf("route fail latency count %d, want 2", h.GetSampleCount())
	}
	if h := f.hist(t, "meshd_listener_request_duration_seconds", lbls{"listener": "egress"}); h.GetSampleCount() != 7 {
		t.Errorf("egress listener latency count %d, want 7", h.GetSampleCount())
	}
	f.expect(t, "meshd_listener_requests_by_code_total", lbls{"listener": "egress", "code": "404"}, 1)
	if h := f.hist(t, "envoy_http_downstream_rq_time", lbls{"envoy_http_conn_manager_prefix": "egress"}); h.GetSampleCount() != 7 {
		t.Errorf("envoy_http_downstream_rq_time count %d, want 7", h.GetSampleCount())
	}
	if f.count("meshd_") <= scrape(t, def.srv, "").count("meshd_") {
		t.Errorf("the detailed level has no more meshd_ series than the default")
	}
}

// TestPrometheusResilienceSeries: series of the mechanisms a listener enables (health
// checks, circuit breaker, outlier detection, connection pool) appear for that cluster
// only, with their values.
func TestPrometheusResilienceSeries(t *testing.T) {
	healthy := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	down := testutil.ClosedPort(t)
	listener := "healthCheck: {protocol: tcp, intervalMillis: 300000, timeoutMillis: 2000, healthyThreshold: 2, unhealthyThreshold: 2}, " +
		"circuitBreaker: {consecutiveFailures: 5, openDuration: {unit: s, value: 30}}, " +
		"outlierDetection: {maxServerErrors: 5, interval: {unit: s, value: 10}, baseEjectionDuration: {unit: s, value: 30}, maxEjectionPercent: 50}, " +
		"connectionPool: {http: {maxConnections: 4, maxPendingRequests: 4}}"
	eps := fmt.Sprintf("%q, %q", "127.0.0.1:"+strconv.Itoa(healthy.Port), "127.0.0.1:"+strconv.Itoa(down))
	m := startMetricsMesh(t, proxy.Options{}, listener, eps)
	proxy.RunHealthChecks(m.srv)
	proxy.RunHealthChecks(m.srv) // unhealthyThreshold 2: the closed port is now unhealthy

	f := scrape(t, m.srv, "")
	ok, bad := lbls{"virtual_node": "ok", "cluster": "ok"}, lbls{"virtual_node": "bad", "cluster": "bad"}
	f.expect(t, "meshd_cluster_health_check_passes_total", ok, 2)
	f.expect(t, "meshd_cluster_health_check_failures_total", ok, 2)
	f.expect(t, "meshd_cluster_endpoints", ok, 2)
	f.expect(t, "meshd_cluster_endpoints_healthy", ok, 1)
	f.expect(t, "meshd_cluster_breaker_state", ok, 0)
	f.expect(t, "meshd_cluster_ejections_active", ok, 0)
	f.expect(t, "meshd_cluster_requests_pending", ok, 0)
	f.absent(t, "meshd_cluster_breaker_state", bad)
	f.absent(t, "meshd_cluster_ejections_active", bad)
	f.absent(t, "meshd_cluster_requests_pending", bad)
	eok := lbls{"envoy_cluster_name": "cds_egress_t_ok_http_8080"}
	f.expect(t, "envoy_cluster_health_check_success", eok, 2)
	f.expect(t, "envoy_cluster_health_check_failure", eok, 2)
	f.expect(t, "envoy_cluster_membership_total", eok, 2)
	f.expect(t, "envoy_cluster_membership_healthy", eok, 1)
	f.expect(t, "envoy_cluster_outlier_detection_ejections_enforced_total", eok, 0)
	f.absent(t, "envoy_cluster_health_check_success", lbls{"envoy_cluster_name": "cds_egress_t_bad_http_8080"})
}

// TestMetricsLevelOption: an unknown Options.MetricsLevel is an error of New naming
// the field.
func TestMetricsLevelOption(t *testing.T) {
	for _, lv := range []string{"", proxy.MetricsLevelDefault, proxy.MetricsLevelDetailed} {
		srv, err := proxy.New(proxy.Options{Node: "app", MetricsLevel: lv, AdminAddr: "off"})
		if err != nil {
			t.Errorf("MetricsLevel %q: %v", lv, err)
			continue
		}
		_ = srv.Shutdown(context.Background())
	}
	_, err := proxy.New(proxy.Options{Node: "app", MetricsLevel: "verbose"})
	if err == nil || !strings.Contains(err.Error(), "MetricsLevel") || !strings.Contains(err.Error(), "verbose") {
		t.Fatalf("MetricsLevel verbose: err %v, want one naming the field and the value", err)
	}
}
