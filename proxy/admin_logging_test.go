package proxy_test

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// TestAdminLoggingNeedsToken: POST /logging changes the level only with the admin token
// when one is set, like PUT /config; GET /logging is open like /stats.
func TestAdminLoggingNeedsToken(t *testing.T) {
	lv := new(slog.LevelVar)
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", AdminToken: "s3cret", LogLevel: lv}, resMesh([]int{1}, "", ""))
	do := func(method, path, token string) (int, string) {
		req, _ := http.NewRequest(method, "http://"+srv.AdminAddr()+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := do("GET", "/logging", ""); code != 200 || !strings.Contains(body, "meshd: info") {
		t.Fatalf("GET /logging: %d %q", code, body)
	}
	if code, _ := do("POST", "/logging?level=debug", ""); code != 401 {
		t.Fatalf("POST /logging without the token: %d, want 401", code)
	}
	if lv.Level() != slog.LevelInfo {
		t.Fatal("the level changed without the token")
	}
	if code, body := do("POST", "/logging?level=bogus", "s3cret"); code != 400 || !strings.Contains(body, "bogus") {
		t.Fatalf("POST /logging?level=bogus: %d %q, want 400 naming it", code, body)
	}
	if code, body := do("POST", "/logging?level=debug", "s3cret"); code != 200 || !strings.Contains(body, "meshd: debug") || lv.Level() != slog.LevelDebug {
		t.Fatalf("POST /logging?level=debug: %d %q, level %v", code, body, lv.Level())
	}
}

// TestStatsFormats: /stats answers Envoy's "name: value" lines by default, JSON with
// ?format=json, the Prometheus exposition with ?format=prometheus, and 400 otherwise.
func TestStatsFormats(t *testing.T) {
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	srv := testutil.StartMeshd(t, "app", resMesh([]int{up.Port}, "", ""))
	resp, err := testutil.HTTPClient(t, srv.EgressAddr()).Get("http://svc.t.local/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	eventually(t, "the request counted", func() bool {
		_, b := adminGet(t, srv, "/stats")
		return strings.Contains(string(b), "cluster.svc.rq_2xx: 1\n")
	})
	_, text := adminGet(t, srv, "/stats")
	for _, want := range []string{"cluster.svc.retries: 0\n", "listener.egress.downstream_rq_2xx: 1\n", "route.svc.t.local/provider:svc.rq_2xx: 1\n"} {
		if !strings.Contains(string(text), want) {
			t.Errorf("/stats lacks %q:\n%s", want, text)
		}
	}
	if r, b := adminGet(t, srv, "/stats?format=json"); r.StatusCode != 200 || !strings.HasPrefix(strings.TrimSpace(string(b)), "{") {
		t.Errorf("/stats?format=json: %d %.80s", r.StatusCode, b)
	}
	if r, b := adminGet(t, srv, "/stats?format=prometheus"); r.StatusCode != 200 || !strings.Contains(string(b), "# TYPE meshd_") {
		t.Errorf("/stats?format=prometheus: %d %.80s", r.StatusCode, b)
	}
	if r, _ := adminGet(t, srv, "/stats?format=xml"); r.StatusCode != 400 {
		t.Errorf("/stats?format=xml: %d, want 400", r.StatusCode)
	}
}
