package main

import (
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// TestEnvoyLogLevelsStartMeshd: every Envoy level name App Mesh task definitions put in
// ENVOY_LOG_LEVEL starts meshd (off included), and admin /logging shows the level in
// force and changes it at run time.
func TestEnvoyLogLevelsStartMeshd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the meshd binary; skipped with -short")
	}
	bin := meshdBinary(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "mesh.yaml")
	writeFile(t, cfg, reloadCfg(7000))
	for _, level := range []string{"trace", "debug", "info", "warning", "warn", "error", "critical", "off"} {
		t.Run(level, func(t *testing.T) {
			p := startMeshd(t, bin, []string{"ENVOY_LOG_LEVEL=" + level}, "-c", cfg)
			waitReady(t, p.admin+"/ready")
			body := func(resp *http.Response, err error) string {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 {
					t.Fatalf("%s: %d %s", resp.Request.URL, resp.StatusCode, b)
				}
				return string(b)
			}
			want := map[string]string{"warn": "warning"}[level]
			if want == "" {
				want = level
			}
			if got := body(http.Get(p.admin + "/logging")); !strings.Contains(got, "meshd: "+want) {
				t.Fatalf("/logging: %q, want %s", got, want)
			}
			if level == "off" {
				if got := body(http.Post(p.admin+"/logging?level=debug", "", nil)); !strings.Contains(got, "meshd: debug") {
					t.Fatalf("POST /logging?level=debug: %q", got)
				}
				if l := p.logs.String(); strings.Contains(l, "level=INFO") {
					t.Fatalf("ENVOY_LOG_LEVEL=off still logged: %s", l)
				}
			}
		})
	}
}
