package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTargetRun(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	defer srv.Close()
	dir := filepath.Join(t.TempDir(), "rep")
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"--target", srv.URL + "/x", "--rate", "100", "--connections", "2",
		"--max-connections", "2", "--duration", "200ms", "--warmup", "0s", "--rounds", "1", "--out", dir}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, f := range []string{"report.json", "report.md", "latency-fixed-100.png", "latency-max.svg", "sweep.png"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("missing %s: %v", f, err)
		}
	}
	if !strings.Contains(out.String(), "Report written to "+dir) || !strings.Contains(out.String(), "target") {
		t.Errorf("stdout:\n%s", out.String())
	}
}

func TestFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--proto", "h3"},
		{"--cpus", "0:1"},
		{"--sweep", "--sweep-rates", "x"},
		{"stray"},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, &out, &errb); code != 2 {
			t.Errorf("run(%v) = %d, want 2 (stderr %q)", args, code, errb.String())
		}
	}
}
