package proxy_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// adminCall sends method path to the admin listener with the token (when not empty)
// and returns the status, the Allow header and the body.
func adminCall(t *testing.T, srv *proxy.Server, method, path, token string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+srv.AdminAddr()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Allow"), string(b)
}

// TestAdminEnvoyCalls: the Envoy admin calls runbooks make, over a real admin
// listener. /healthcheck/fail fails /ready and server_info (DRAINING, as Envoy) while the
// data plane keeps serving, /healthcheck/ok restores them; mutations are POST only (GET:
// 405 with Allow) and need the admin token when one is set; /listeners, /config_dump
// (effective defaults, routes with their timeouts and retry policy), /help and
// /server_info's Envoy fields answer; the admin access log gets a line per call
// without the token.
func TestAdminEnvoyCalls(t *testing.T) {
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	logPath := filepath.Join(t.TempDir(), "admin_access.log")
	const token = "s3cret-token"
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", AdminToken: token, AdminAccessLog: logPath,
		CommandLineOptions: map[string]any{"log_level": "info"}}, resMesh([]int{up.Port}, "", ""))
	client := testutil.HTTPClient(t, srv.EgressAddr())
	through := func() int {
		t.Helper()
		resp, err := client.Get("http://svc.t.local/")
		if err != nil {
			t.Fatalf("through meshd: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	serverInfo := func() map[string]any {
		t.Helper()
		code, _, body := adminCall(t, srv, "GET", "/server_info", "")
		var m map[string]any
		if err := json.Unmarshal([]byte(body), &m); code != 200 || err != nil {
			t.Fatalf("/server_info: %d %v %s", code, err, body)
		}
		return m
	}

	// /help lists every endpoint, the Envoy ones included.
	code, _, help := adminCall(t, srv, "GET", "/help", "")
	for _, p := range []string{"POST /healthcheck/fail", "POST /healthcheck/ok", "POST /quitquitquit", "POST /drain_listeners",
		"GET /config_dump", "GET /listeners", "GET /server_info", "GET /ready", "GET /help"} {
		if code != 200 || !strings.Contains(help, "  "+p+": ") {
			t.Errorf("/help (%d) lacks %q:\n%s", code, p, help)
		}
	}

	// Mutations: GET is 405 with Allow: POST; POST without the token is 401.
	for _, p := range []string{"/healthcheck/fail", "/healthcheck/ok", "/quitquitquit", "/drain_listeners"} {
		if code, allow, _ := adminCall(t, srv, "GET", p, token); code != http.StatusMethodNotAllowed || !strings.Contains(allow, "POST") {
			t.Errorf("GET %s: %d Allow %q; want 405 Allow POST", p, code, allow)
		}
		if code, _, _ := adminCall(t, srv, "POST", p, ""); code != http.StatusUnauthorized {
			t.Errorf("POST %s without the token: %d, want 401", p, code)
		}
	}
	if code, _, _ := adminCall(t, srv, "GET", "/config_dump", ""); code != http.StatusUnauthorized {
		t.Errorf("GET /config_dump without the token: %d, want 401", code)
	}

	// server_info: Envoy's fields.
	si := serverInfo()
	if si["state"] != "LIVE" || !regexp.MustCompile(`^[0-9]+s$`).MatchString(si["uptime_current_epoch"].(string)) ||
		si["uptime_all_epochs"] != si["uptime_current_epoch"] || si["hot_restart_version"] != "disabled" {
		t.Errorf("/server_info: %v", si)
	}
	if opts, _ := si["command_line_options"].(map[string]any); opts["service_node"] != "app" || opts["log_level"] != "info" || opts["drain_time"] != "10s" {
		t.Errorf("/server_info command_line_options: %v", si["command_line_options"])
	}

	// /healthcheck/fail: readiness and state fail, the data plane serves on.
	if code, _, body := adminCall(t, srv, "POST", "/healthcheck/fail", token); code != 200 || body != "OK\n" {
		t.Fatalf("POST /healthcheck/fail: %d %q", code, body)
	}
	if code, _, body := adminCall(t, srv, "GET", "/ready", ""); code != 503 || body != "DRAINING\n" {
		t.Errorf("/ready after /healthcheck/fail: %d %q; want 503 DRAINING", code, body)
	}
	if si := serverInfo(); si["state"] != "DRAINING" || si["health_check_failed"] != true {
		t.Errorf("/server_info after /healthcheck/fail: state %v, health_check_failed %v", si["state"], si["health_check_failed"])
	}
	if c := through(); c != 200 {
		t.Errorf("a request while health checks fail: %d, want 200 (the listeners keep serving)", c)
	}
	if code, _, _ := adminCall(t, srv, "POST", "/healthcheck/ok", token); code != 200 {
		t.Fatalf("POST /healthcheck/ok: %d", code)
	}
	if code, _, body := adminCall(t, srv, "GET", "/ready", ""); code != 200 || body != "LIVE\n" {
		t.Errorf("/ready after /healthcheck/ok: %d %q", code, body)
	}

	// /listeners, text and JSON.
	_, _, text := adminCall(t, srv, "GET", "/listeners", "")
	if want := "ingress::" + srv.IngressAddr() + "\negress::" + srv.EgressAddr() + "\n"; !strings.HasPrefix(text, want) {
		t.Errorf("/listeners: %q, want it to start with %q", text, want)
	}
	_, _, js := adminCall(t, srv, "GET", "/listeners?format=json", "")
	var ls struct {
		ListenerStatuses []struct {
			Name         string `json:"name"`
			LocalAddress struct {
				SocketAddress struct {
					Address   string `json:"address"`
					PortValue int    `json:"port_value"`
				} `json:"socket_address"`
			} `json:"local_address"`
		} `json:"listener_statuses"`
	}
	if err := json.Unmarshal([]byte(js), &ls); err != nil || len(ls.ListenerStatuses) < 2 || ls.ListenerStatuses[1].Name != "egress" ||
		ls.ListenerStatuses[1].LocalAddress.SocketAddress.Address != "127.0.0.1" || ls.ListenerStatuses[1].LocalAddress.SocketAddress.PortValue == 0 {
		t.Errorf("/listeners?format=json: %v %s", err, js)
	}

	// /config_dump: the config with the effective defaults and routes.
	code, _, dump := adminCall(t, srv, "GET", "/config_dump", token)
	var cd struct {
		Version  string         `json:"version"`
		Node     string         `json:"node"`
		Config   map[string]any `json:"config"`
		Defaults map[string]any `json:"defaults"`
		Routes   []struct {
			Service           string `json:"service"`
			PerRequestTimeout string `json:"perRequestTimeout"`
			RetryPolicy       *struct {
				Default bool `json:"default"`
			} `json:"retryPolicy"`
		} `json:"routes"`
		Clusters []struct {
			Name, LBPolicy string
		} `json:"clusters"`
	}
	if err := json.Unmarshal([]byte(dump), &cd); code != 200 || err != nil {
		t.Fatalf("/config_dump: %d %v %s", code, err, dump)
	}
	if cd.Version != srv.Snapshot().Version() || cd.Node != "app" || cd.Config == nil || cd.Defaults["connectTimeout"] != "5s" || len(cd.Clusters) == 0 || cd.Clusters[0].LBPolicy == "" {
		t.Errorf("/config_dump: %s", dump)
	}
	found := false
	for _, r := range cd.Routes {
		if r.Service == "svc.t.local" {
			found = true
			if r.PerRequestTimeout != "0s" || r.RetryPolicy == nil || !r.RetryPolicy.Default {
				t.Errorf("/config_dump route of svc.t.local: timeout %q retry %+v; want 0s and App Mesh's default policy", r.PerRequestTimeout, r.RetryPolicy)
			}
		}
	}
	if !found {
		t.Errorf("/config_dump has no route of svc.t.local: %s", dump)
	}

	// The admin access log has the calls, never the token.
	logged, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"POST /healthcheck/fail HTTP/1.1" 200`, `"GET /healthcheck/ok HTTP/1.1" 405`, `"GET /ready HTTP/1.1" 503`} {
		if !strings.Contains(string(logged), want) {
			t.Errorf("admin access log lacks %q:\n%s", want, logged)
		}
	}
	if strings.Contains(string(logged), token) {
		t.Error("the admin access log holds the token")
	}
}

// TestAdminDrainListeners: POST /drain_listeners closes the data-plane listeners and
// drains them while the admin listener stays up (state DRAINING); a later Shutdown
// completes the drain; POST /quitquitquit closes QuitRequested.
func TestAdminDrainListeners(t *testing.T) {
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	srv := testutil.StartMeshd(t, "app", resMesh([]int{up.Port}, "", ""))
	if code, _, body := adminCall(t, srv, "POST", "/drain_listeners?inboundonly", ""); code != 400 || !strings.Contains(body, "inboundonly") {
		t.Errorf("/drain_listeners?inboundonly: %d %s; want 400 naming it", code, body)
	}
	if code, _, body := adminCall(t, srv, "POST", "/drain_listeners", ""); code != 200 || body != "OK\n" {
		t.Fatalf("POST /drain_listeners: %d %q", code, body)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	for deadline := time.Now().Add(10 * time.Second); ; {
		_, err := client.Get("http://" + srv.EgressAddr() + "/")
		if err != nil {
			break // refused: the listener is closed
		}
		if time.Now().After(deadline) {
			t.Fatal("the egress listener still accepts 10s after /drain_listeners")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code, _, body := adminCall(t, srv, "GET", "/ready", ""); code != 503 || body != "DRAINING\n" {
		t.Errorf("/ready after /drain_listeners: %d %q", code, body)
	}
	select {
	case <-srv.QuitRequested():
		t.Fatal("QuitRequested closed before /quitquitquit")
	default:
	}
	if code, _, _ := adminCall(t, srv, "POST", "/quitquitquit", ""); code != 200 {
		t.Fatalf("POST /quitquitquit: %d", code)
	}
	select {
	case <-srv.QuitRequested():
	case <-time.After(5 * time.Second):
		t.Fatal("QuitRequested not closed 5s after /quitquitquit")
	}
	// A second call is harmless.
	if code, _, _ := adminCall(t, srv, "POST", "/quitquitquit", ""); code != 200 {
		t.Fatalf("second POST /quitquitquit: %d", code)
	}
}
