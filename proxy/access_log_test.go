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
)

// withAccessLog adds logging.accessLog.file to node app of a resMesh config.
func withAccessLog(y, path, format string) string {
	return strings.Replace(y, "  - virtualNodeName: app\n    spec:\n",
		"  - virtualNodeName: app\n    spec:\n      logging: {accessLog: {file: {path: "+path+format+"}}}\n", 1)
}

// readLines waits (bounded) until path holds n lines and returns them.
func readLines(t *testing.T, path string, n int) []string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		b, _ := os.ReadFile(path)
		lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		if len(b) > 0 && len(lines) >= n {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %q, want %d lines", path, b, n)
		}
	}
}

// TestAccessLog: a virtual node's logging.accessLog.file is written, one line per
// request, in Envoy's default format, an Envoy format string, or JSON; meshd's own
// answers carry their response flags; a reload to another format switches the file.
func TestAccessLog(t *testing.T) {
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "hello") }))
	dir := t.TempDir()
	get := func(c *http.Client, host string) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+host+"/p?q=1", nil)
		req.Header.Set("User-Agent", "meshd-test")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}

	t.Run("default format", func(t *testing.T) {
		path := filepath.Join(dir, "default.log")
		srv := testutil.StartMeshd(t, "app", withAccessLog(resMesh([]int{up.Port}, "", ""), path, ""))
		c := testutil.HTTPClient(t, srv.EgressAddr())
		get(c, "svc.t.local")
		get(c, "nowhere.t.local")
		// A request is logged once its response is out: two lines, in either order.
		lines := strings.Join(readLines(t, path, 2), "\n")
		if !strings.Contains(lines, `"GET /p?q=1 HTTP/1.1" 200 - 0 5 `) || !strings.Contains(lines, `"meshd-test"`) || !strings.Contains(lines, `"svc.t.local"`) {
			t.Errorf("no line for the routed request in %q", lines)
		}
		if _, m := adminGet(t, srv, "/metrics"); !strings.Contains(string(m), `meshd_access_log_lines_total{path="`+path+`",result="written"}`) {
			t.Errorf("/metrics has no written-lines count for %s", path)
		}
		if !strings.Contains(lines, `" 404 NR `) {
			t.Errorf("no line for the unrouted request (404, response flag NR) in %q", lines)
		}
		// The request id meshd generated for the forwarded request is the one logged.
		for _, l := range strings.Split(lines, "\n") {
			if strings.Contains(l, `" 200 `) && strings.Contains(l, `"meshd-test" "-"`) {
				t.Errorf("the generated x-request-id was not logged: %q", l)
			}
		}
	})

	t.Run("text and json formats, switched by a reload", func(t *testing.T) {
		textPath, jsonPath := filepath.Join(dir, "text.log"), filepath.Join(dir, "json.log")
		text := `, format: {text: "%RESPONSE_CODE% %UPSTREAM_CLUSTER% %REQ(:AUTHORITY)% %ROUTE_NAME%\n"}`
		srv := testutil.StartMeshd(t, "app", withAccessLog(resMesh([]int{up.Port}, "", ""), textPath, text))
		c := testutil.HTTPClient(t, srv.EgressAddr())
		get(c, "svc.t.local")
		if lines := readLines(t, textPath, 1); lines[0] != "200 svc svc.t.local provider:svc" {
			t.Fatalf("text line %q", lines[0])
		}
		js := `, format: {json: [{key: code, value: "%RESPONSE_CODE%"}, {key: path, value: "%REQ(:PATH)%"}, {key: attempts, value: "%UPSTREAM_REQUEST_ATTEMPT_COUNT%"}]}`
		if _, err := srv.Apply(context.Background(), testutil.ParseConfig(t, withAccessLog(resMesh([]int{up.Port}, "", ""), jsonPath, js)), "t"); err != nil {
			t.Fatal(err)
		}
		get(c, "svc.t.local")
		var rec map[string]any
		if err := json.Unmarshal([]byte(readLines(t, jsonPath, 1)[0]), &rec); err != nil {
			t.Fatal(err)
		}
		if rec["code"] != float64(200) || rec["path"] != "/p?q=1" || rec["attempts"] != float64(1) {
			t.Fatalf("json line %v", rec)
		}
	})

	t.Run("an unwritable path rejects the config", func(t *testing.T) {
		srv := testutil.StartMeshd(t, "app", resMesh([]int{up.Port}, "", ""))
		_, err := srv.Apply(context.Background(), testutil.ParseConfig(t, withAccessLog(resMesh([]int{up.Port}, "", ""), filepath.Join(dir, "no", "such", "dir", "a.log"), "")), "t")
		if err == nil || !strings.Contains(err.Error(), "logging.accessLog.file.path") {
			t.Fatalf("apply: %v, want a rejection naming logging.accessLog.file.path", err)
		}
	})
}
