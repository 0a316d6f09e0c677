package router

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/meshd/meshd/config"
)

// headers is a HeaderGetter over name/value pairs, as a parsed request head would be.
type headers []string

func (h headers) Get(name string) (string, bool) {
	for i := 0; i+1 < len(h); i += 2 {
		if strings.EqualFold(h[i], name) {
			return h[i+1], true
		}
	}
	return "", false
}

func loadConfig(t testing.TB, path string) *config.Config {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return parseJSON(t, string(b))
}

func parseJSON(t testing.TB, s string) *config.Config {
	t.Helper()
	var cfg config.Config
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		t.Fatalf("decode config: %v", err)
	}
	return &cfg
}

// baseMesh is a mesh where node "client" has backends svc.local (router "r", port 80
// http), direct.local (virtualNode provider "multi") and single.local (provider "a");
// "other.local" exists in the mesh but is not a backend of client. Nodes a, b, c have
// one listener each; "multi" has two.
const baseMesh = `{
  "mesh": {"meshName": "m"},
  "virtualNodes": [
    {"virtualNodeName": "client", "spec": {
      "listeners": [
        {"portMapping": {"port": 8080, "protocol": "http"},
         "timeout": {"http": {"perRequest": {"unit": "s", "value": 7}, "idle": {"unit": "ms", "value": 500}}}},
        {"portMapping": {"port": 8443, "protocol": "tcp"}}
      ],
      "backends": [
        {"virtualService": {"virtualServiceName": "svc.local"}},
        {"virtualService": {"virtualServiceName": "direct.local"}},
        {"virtualService": {"virtualServiceName": "single.local"}},
        {"virtualService": {"virtualServiceName": "SVC.local"}}
      ]}},
    {"virtualNodeName": "a", "spec": {
      "listeners": [{"portMapping": {"port": 9001, "protocol": "http"},
        "timeout": {"http": {"perRequest": {"unit": "ms", "value": 250}}}}],
      "serviceDiscovery": {"dns": {"hostname": "a.internal"}},
      "loadBalancing": {"policy": "ROUND_ROBIN"}}},
    {"virtualNodeName": "b", "spec": {"listeners": [{"portMapping": {"port": 9002, "protocol": "http2"}}]}},
    {"virtualNodeName": "c", "spec": {"listeners": [{"portMapping": {"port": 9003, "protocol": "grpc"}}]}},
    {"virtualNodeName": "multi", "spec": {"listeners": [
      {"portMapping": {"port": 7001, "protocol": "http"}},
      {"portMapping": {"port": 7002, "protocol": "grpc"}}]}}
  ],
  "virtualServices": [
    {"virtualServiceName": "svc.local", "spec": {"provider": {"virtualRouter": {"virtualRouterName": "r"}}}},
    {"virtualServiceName": "direct.local", "spec": {"provider": {"virtualNode": {"virtualNodeName": "multi"}}}},
    {"virtualServiceName": "single.local", "spec": {"provider": {"virtualNode": {"virtualNodeName": "a"}}}},
    {"virtualServiceName": "other.local", "spec": {"provider": {"virtualNode": {"virtualNodeName": "b"}}}}
  ],
  "virtualRouters": [
    {"virtualRouterName": "r", "spec": {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}]}},
    {"virtualRouterName": "unused", "spec": {"listeners": [{"portMapping": {"port": 81, "protocol": "http"}}]}}
  ],
  "routes": ROUTES
}`

// meshWithRoutes returns baseMesh with the given JSON array of routes; each route's
// virtualRouterName defaults to "r".
func meshWithRoutes(t testing.TB, routes string) *config.Config {
	t.Helper()
	cfg := parseJSON(t, strings.Replace(baseMesh, "ROUTES", routes, 1))
	for i := range cfg.Routes {
		if cfg.Routes[i].VirtualRouterName == "" {
			cfg.Routes[i].VirtualRouterName = "r"
		}
	}
	return cfg
}

func mustCompile(t testing.TB, cfg *config.Config, node string) *Table {
	t.Helper()
	tb, err := Compile(cfg, node)
	if err != nil {
		t.Fatalf("Compile(%q): %v", node, err)
	}
	return tb
}

func routeName(r *Route) string {
	if r == nil {
		return ""
	}
	return r.Name
}
