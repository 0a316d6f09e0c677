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
