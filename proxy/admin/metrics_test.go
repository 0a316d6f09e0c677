package admin

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/router"
	"github.com/meshd/meshd/telemetry"
)

// TestMetricsDocumented: docs/metrics.md has a row for every metric family, with its
// type and labels as exported, and every Envoy family is in the mapping table.
func TestMetricsDocumented(t *testing.T) {
	b, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	names := map[string]bool{}
	for _, d := range newMetricFamilies().all {
		if names[d.Name] {
			t.Errorf("%s is defined twice", d.Name)
		}
		names[d.Name] = true
		prefix := "| `" + d.Name + "` | " + d.Type.String() + " | "
		i := strings.Index(doc, prefix)
		if i < 0 {
			t.Errorf("docs/metrics.md has no row %q…", prefix)
			continue
		}
		row, _, _ := strings.Cut(doc[i+len(prefix):], "\n")
		cell, _, _ := strings.Cut(row, " | ")
		for _, l := range d.Labels {
			if !strings.Contains(cell, "`"+l+"`") {
				t.Errorf("docs/metrics.md: %s's labels %q do not name %s", d.Name, cell, l)
			}
		}
		if len(d.Labels) == 0 && cell != "—" {
			t.Errorf("docs/metrics.md: %s has labels %q, want —", d.Name, cell)
		}
		if d.Detailed && !strings.Contains(row, "*(detailed)*") && !strings.HasPrefix(d.Name, "meshd_endpoint_") {
			t.Errorf("docs/metrics.md: %s is detailed but its row does not say so", d.Name)
		}
		if !strings.HasPrefix(d.Name, "meshd_") && !strings.HasPrefix(d.Name, "envoy_") {
			t.Errorf("%s: want the meshd_ or envoy_ prefix", d.Name)
		}
	}
}

func TestEnvoyClusterName(t *testing.T) {
	for _, c := range []struct {
		ref  router.ClusterRef
		want string
	}{
		{router.ClusterRef{Name: "backend-v1", Node: "backend-v1", Port: 8080, Protocol: "http"}, "cds_egress_shop_backend-v1_http_8080"},
		{router.ClusterRef{Name: "db:5432", Node: "db", Port: 5432, Protocol: "tcp"}, "cds_egress_shop_db_tcp_5432"},
		{router.ClusterRef{Name: "local:9080", Node: "frontend", Port: 9080, Protocol: "grpc", Local: true}, "cds_ingress_shop_frontend_self_redirect_grpc_9080"},
	} {
		if got := envoyClusterName("shop", c.ref); got != c.want {
			t.Errorf("%+v: %s, want %s", c.ref, got, c.want)
		}
	}
}

// TestEnvoyBuckets: the Envoy histogram's cumulative counts are meshd's at the same
// bound, and the sums agree in their units.
func TestEnvoyBuckets(t *testing.T) {
	var st telemetry.HTTPStats
	for _, ms := range []float64{0.05, 0.7, 3, 3, 40, 900, 12000} {
		st.Record(200, msDuration(ms), 0, "")
	}
	v := readHTTP(&st)
	sc, ssum, sb := v.seconds()
	mc, msum, mb := v.millis()
	if sc != 7 || mc != 7 {
		t.Fatalf("counts %d %d, want 7", sc, mc)
	}
	if d := msum - ssum*1000; d > 1e-6 || d < -1e-6 {
		t.Errorf("sums %v ms, %v s", msum, ssum)
	}
	for ms, n := range mb {
		if sb[ms/1000] != n {
			t.Errorf("le %v ms: %d, meshd's le %v s: %d", ms, n, ms/1000, sb[ms/1000])
		}
	}
	if mb[1] != 2 || mb[5] != 4 || mb[10000] != 6 || len(mb) != len(envoyBucketsMS) {
		t.Errorf("Envoy buckets %v", mb)
	}
}

func msDuration(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }
