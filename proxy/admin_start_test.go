package proxy_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// TestReadyBeforeConfig: with the admin listener started first (as meshd run does),
// /ready answers 503 before a config is applied and before the data-plane listeners are
// bound, 200 once they are; a server that never started shuts down cleanly.
func TestReadyBeforeConfig(t *testing.T) {
	srv, err := proxy.New(proxy.Options{Node: "client", IngressAddr: "127.0.0.1:0", EgressAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.StartAdmin(); err != nil {
		t.Fatal(err)
	}
	admin := "http://" + srv.AdminAddr()
	state := func() (int, string) {
		t.Helper()
		resp, err := http.Get(admin + "/ready")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		info, err := http.Get(admin + "/server_info")
		if err != nil {
			t.Fatal(err)
		}
		defer info.Body.Close()
		b, _ := io.ReadAll(info.Body)
		var si struct{ State string }
		if err := json.Unmarshal(b, &si); err != nil {
			t.Fatalf("/server_info: %v: %s", err, b)
		}
		return resp.StatusCode, si.State
	}
	if code, st := state(); code != 503 || st != "PRE_INITIALIZING" {
		t.Fatalf("before config: /ready %d, state %q; want 503 PRE_INITIALIZING", code, st)
	}
	cfg := testutil.ParseConfig(t, `mesh: {meshName: m}
virtualNodes:
  - virtualNodeName: client
    spec:
      listeners: [{portMapping: {port: 8080, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:8080"]}}
`)
	if _, err := srv.Apply(context.Background(), cfg, "test"); err != nil {
		t.Fatal(err)
	}
	if code, st := state(); code != 503 || st != "INITIALIZING" {
		t.Fatalf("config applied, not listening: /ready %d, state %q; want 503 INITIALIZING", code, st)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if code, st := state(); code != 200 || st != "LIVE" {
		t.Fatalf("started: /ready %d, state %q; want 200 LIVE", code, st)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	// A server whose config never loaded still shuts its admin listener down.
	idle, err := proxy.New(proxy.Options{Node: "x", AdminAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := idle.StartAdmin(); err != nil {
		t.Fatal(err)
	}
	addr := idle.AdminAddr()
	if err := idle.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get("http://" + addr + "/ready"); err == nil {
		t.Fatal("admin listener still answers after Shutdown")
	}
}
