package router

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/config"
)

func TestCanonicalShop(t *testing.T) {
	tb := mustCompile(t, loadConfig(t, "testdata/shop.json"), "frontend")
	if tb.Node() != "frontend" {
		t.Fatalf("Node() = %q", tb.Node())
	}
	svc := tb.Egress("backend.shop.local", 80)
	if svc == nil {
		t.Fatal("Egress(backend.shop.local) = nil")
	}
	if svc.Protocol != "http" || !slices.Equal(svc.Ports, []int{80}) {
		t.Fatalf("service protocol/ports = %q %v", svc.Protocol, svc.Ports)
	}
	canary := svc.Match(&Request{Authority: "backend.shop.local", Method: "GET", Path: "/cart?id=3",
		Scheme: "http", Port: 80, Header: headers{"X-Canary", "1"}})
	if canary == nil || canary.Name != "canary-header" ||
		!reflect.DeepEqual(canary.Targets, []Target{{Cluster: "backend-v2", Weight: 1}}) {
		t.Fatalf("with x-canary: %+v", canary)
	}
	for _, h := range []HeaderGetter{nil, headers{"x-canary", "0"}} {
		split := svc.Match(&Request{Method: "GET", Path: "/", Scheme: "http", Port: 80, Header: h})
		want := []Target{{Cluster: "backend-v1", Weight: 90}, {Cluster: "backend-v2", Weight: 10}}
		if split == nil || split.Name != "split" || !reflect.DeepEqual(split.Targets, want) {
			t.Fatalf("without x-canary (%v): %+v", h, split)
		}
		if split.Service != "backend.shop.local" || split.Kind != "http" || split.PerRequestTimeout != 0 ||
			split.HTTPRetry != nil {
			t.Fatalf("split route fields: %+v", split)
		}
	}
	var names []string
	for _, c := range tb.Clusters() {
		names = append(names, c.Name)
	}
	if want := []string{"backend-v1", "backend-v2", "local:8080"}; !slices.Equal(names, want) {
		t.Fatalf("Clusters() = %v, want %v", names, want)
	}
	v1 := tb.Clusters()[0]
	if v1.Node != "backend-v1" || v1.Port != 9001 || v1.Protocol != "http" || v1.Local ||
		v1.Listener == nil || v1.Listener.PortMapping.Port != 9001 || v1.Discovery == nil ||
		v1.Discovery.Static.Endpoints[0].Address != "127.0.0.1:9001" || v1.LBPolicy != "" {
		t.Fatalf("backend-v1 cluster = %+v", v1)
	}
	in := tb.Ingress(8080)
	if in == nil || in.Name != "ingress:8080" || len(in.Routes) != 1 {
		t.Fatalf("Ingress(8080) = %+v", in)
	}
	if r := in.Match(&Request{Method: "DELETE", Path: "/anything?x", Header: headers{"x-canary", "1"}}); r == nil ||
		r.Targets[0].Cluster != "local:8080" {
		t.Fatalf("ingress route = %+v", r)
	}
	local := tb.Clusters()[2]
	if !local.Local || local.Node != "frontend" || local.Port != 8080 || local.Listener == nil || local.Discovery != nil {
		t.Fatalf("local cluster = %+v", local)
	}
	if tb.Ingress(9001) != nil {
		t.Fatal("Ingress(9001) on frontend should be nil")
	}
	if !slices.Equal(tb.EgressPorts(), []int{80}) {
		t.Fatalf("EgressPorts() = %v", tb.EgressPorts())
	}
	// backend-v1 has no backends: nothing is reachable from it.
	v1tb := mustCompile(t, loadConfig(t, "testdata/shop.json"), "backend-v1")
	if v1tb.Egress("backend.shop.local", 80) != nil || len(v1tb.Services()) != 0 {
		t.Fatal("backend-v1 must not reach backend.shop.local")
	}
}

func TestEgressLookup(t *testing.T) {
	tb := mustCompile(t, meshWithRoutes(t, `[]`), "client")
	long := strings.Repeat("x", 300) + ".local"
	for _, c := range []struct {
		host string
		port int
		want string
	}{
		{"svc.local", 80, "svc.local"},
		{"SVC.Local", 80, "svc.local"},
		{"svc.local.", 0, "svc.local"},
		{"Svc.LOCAL.", 0, "svc.local"},
		{"svc.local", 9999, "svc.local"}, // App Mesh resolves by name whatever the port
		{"svc.local..", 0, ""},
		{"svc", 0, ""},
		{"other.local", 0, ""}, // in the mesh, not a backend of client
		{"", 0, ""},
		{long, 0, ""},
		{strings.ToUpper(long), 0, ""},
		{"direct.local", 7001, "direct.local"},
	} {
		got := ""
		if s := tb.Egress(c.host, c.port); s != nil {
			got = s.Name
		}
		if got != c.want {
			t.Errorf("Egress(%.20q, %d) = %q, want %q", c.host, c.port, got, c.want)
		}
	}
	var names []string
	for _, s := range tb.Services() {
		names = append(names, s.Name)
	}
	// SVC.local duplicates svc.local and is listed once.
	if want := []string{"svc.local", "direct.local", "single.local"}; !slices.Equal(names, want) {
		t.Fatalf("Services() = %v, want %v", names, want)
	}
	if want := []int{80, 7001, 7002, 9001}; !slices.Equal(tb.EgressPorts(), want) {
		t.Fatalf("EgressPorts() = %v, want %v", tb.EgressPorts(), want)
	}
}

func TestVirtualNodeProvider(t *testing.T) {
	tb := mustCompile(t, meshWithRoutes(t, `[]`), "client")

	single := tb.Egress("single.local", 0)
	if single.Protocol != "http" || !slices.Equal(single.Ports, []int{9001}) || len(single.Routes) != 1 {
		t.Fatalf("single.local = %+v", single)
	}
	r := single.Match(&Request{Method: "PUT", Path: "/x?y", Header: headers{"a", "b"}})
	if r == nil || r.Name != "provider:a" || r.Service != "single.local" ||
		!reflect.DeepEqual(r.Targets, []Target{{Cluster: "a", Weight: 1}}) {
		t.Fatalf("single.local route = %+v", r)
	}
	// The provider node's listener timeout applies to the synthetic route.
	if r.PerRequestTimeout != 250*time.Millisecond {
		t.Fatalf("PerRequestTimeout = %v, want 250ms", r.PerRequestTimeout)
	}

	multi := tb.Egress("direct.local", 0)
	if multi.Protocol != "http" || !slices.Equal(multi.Ports, []int{7001, 7002}) {
		t.Fatalf("direct.local = %+v", multi)
	}
	for _, c := range []struct {
		req            Request
		route, cluster string
	}{
		{Request{Path: "/", Port: 7001}, "provider:multi:7001", "multi:7001"},
		{Request{Path: "/p.S/M", Port: 7002, GRPC: true}, "provider:multi:7002", "multi:7002"},
		{Request{Path: "/"}, "provider:multi", "multi:7001"},
		{Request{Path: "/", Port: 80}, "provider:multi", "multi:7001"},
	} {
		r := multi.Match(&c.req)
		if r == nil || r.Name != c.route || r.Targets[0].Cluster != c.cluster {
			t.Errorf("direct.local Match(%+v) = %+v, want %s → %s", c.req, r, c.route, c.cluster)
		}
	}
	if r := multi.Match(&Request{Path: "/", Port: 7002}); r.Kind != "grpc" {
		t.Errorf("route to grpc listener has Kind %q", r.Kind)
	}
}

func TestClusterNaming(t *testing.T) {
	routes := `[
	  {"routeName": "to-multi", "spec": {"httpRoute": {"match": {"prefix": "/m"},
	    "action": {"weightedTargets": [{"virtualNode": "multi", "weight": 1, "port": 7002}]}}}},
	  {"routeName": "to-a-port", "spec": {"httpRoute": {"match": {"prefix": "/a"},
	    "action": {"weightedTargets": [{"virtualNode": "a", "weight": 1, "port": 9001}]}}}},
	  {"routeName": "to-a", "spec": {"httpRoute": {"match": {"prefix": "/"},
	    "action": {"weightedTargets": [{"virtualNode": "a", "weight": 1}, {"virtualNode": "b", "weight": 0}]}}}}
	]`
	tb := mustCompile(t, meshWithRoutes(t, routes), "client")
	svc := tb.Egress("svc.local", 80)
	for path, want := range map[string]string{"/m": "multi:7002", "/a": "a", "/": "a"} {
		if r := svc.Match(&Request{Path: path}); r == nil || r.Targets[0].Cluster != want {
			t.Errorf("path %s → %+v, want cluster %s", path, r, want)
		}
	}
	got := map[string]ClusterRef{}
	var names []string
	for _, c := range tb.Clusters() {
		got[c.Name] = c
		names = append(names, c.Name)
	}
	// "a" (both spellings), "b" (weight 0 but referenced), both multi listeners (via the
	// direct.local provider), and the client's two ingress listeners.
	want := []string{"a", "b", "local:8080", "local:8443", "multi:7001", "multi:7002"}
	if !slices.Equal(names, want) {
		t.Fatalf("Clusters() = %v, want %v", names, want)
	}
	if a := got["a"]; a.LBPolicy != config.LBRoundRobin || a.Discovery.DNS.Hostname != "a.internal" || a.Port != 9001 {
		t.Errorf("cluster a = %+v", a)
	}
	if m := got["multi:7002"]; m.Node != "multi" || m.Port != 7002 || m.Protocol != "grpc" || m.Listener.PortMapping.Port != 7002 {
		t.Errorf("cluster multi:7002 = %+v", m)
	}
	if l := got["local:8443"]; !l.Local || l.Protocol != "tcp" || l.Node != "client" {
		t.Errorf("cluster local:8443 = %+v", l)
	}
}

// TestOwnCluster: Options.OwnCluster gives a (service, target) pair a cluster of its
// own, "<cluster>@<service>" with Service set, only where it says so; the other services
// reaching the same target keep the shared cluster.
func TestOwnCluster(t *testing.T) {
	routes := `[
	  {"routeName": "to-a", "spec": {"httpRoute": {"match": {"prefix": "/"},
	    "action": {"weightedTargets": [{"virtualNode": "a", "weight": 1}]}}}}
	]`
	var asked []string
	tb, err := CompileWith(meshWithRoutes(t, routes), "client", Options{OwnCluster: func(svc string, ref ClusterRef) bool {
		asked = append(asked, svc+"->"+ref.Name)
		return svc == "single.local" || (svc == "direct.local" && ref.Port == 7002)
	}})
	if err != nil {
		t.Fatal(err)
	}
	if r := tb.Egress("svc.local", 80).Match(&Request{Path: "/"}); r == nil || r.Targets[0].Cluster != "a" {
		t.Errorf("svc.local reaches %+v, want the shared cluster a", r)
	}
	if r := tb.Egress("single.local", 0).Match(&Request{Path: "/"}); r == nil || r.Targets[0].Cluster != "a@single.local" {
		t.Errorf("single.local reaches %+v, want a@single.local", r)
	}
	direct := map[string]bool{}
	for _, r := range tb.Egress("direct.local", 0).Routes {
		direct[r.Targets[0].Cluster] = true
	}
	if !direct["multi:7001"] || !direct["multi:7002@direct.local"] || direct["multi:7002"] {
		t.Errorf("direct.local reaches %v, want multi:7001 and multi:7002@direct.local", direct)
	}
	got := map[string]ClusterRef{}
	var names []string
	for _, c := range tb.Clusters() {
		got[c.Name] = c
		names = append(names, c.Name)
	}
	want := []string{"a", "a@single.local", "local:8080", "local:8443", "multi:7001", "multi:7002@direct.local"}
	if !slices.Equal(names, want) {
		t.Fatalf("Clusters() = %v, want %v", names, want)
	}
	if c := got["a@single.local"]; c.Node != "a" || c.Port != 9001 || c.Service != "single.local" || c.LBPolicy != config.LBRoundRobin {
		t.Errorf("cluster a@single.local = %+v", c)
	}
	if c := got["a"]; c.Service != "" {
		t.Errorf("shared cluster a has Service %q", c.Service)
	}
	if !slices.Contains(asked, "svc.local->a") || !slices.Contains(asked, "single.local->a") {
		t.Errorf("OwnCluster asked %v", asked)
	}
}

func TestIngress(t *testing.T) {
	tb := mustCompile(t, meshWithRoutes(t, `[]`), "client")
	in := tb.Ingress(8080)
	if in == nil || in.Protocol != "http" || !slices.Equal(in.Ports, []int{8080}) {
		t.Fatalf("Ingress(8080) = %+v", in)
	}
	r := in.Match(&Request{Path: "/x", GRPC: true})
	if r == nil || r.Name != "ingress:8080" || r.Service != "ingress:8080" || r.Targets[0].Cluster != "local:8080" ||
		r.PerRequestTimeout != 7*time.Second || r.IdleTimeout != 500*time.Millisecond {
		t.Fatalf("ingress route = %+v", r)
	}
	tcp := tb.Ingress(8443)
	if tcp == nil || tcp.Match(&Request{Path: "/"}) != nil || routeName(tcp.TCPRoute()) != "ingress:8443" ||
		routeName(tcp.MatchTCP(8443)) != "ingress:8443" {
		t.Fatalf("Ingress(8443) = %+v", tcp)
	}
	if tb.Ingress(80) != nil || tb.Ingress(0) != nil {
		t.Fatal("Ingress of a port without listener must be nil")
	}
}

func TestRouteTimeoutsAndRetries(t *testing.T) {
	routes := `[
	  {"routeName": "h", "spec": {"httpRoute": {"match": {"prefix": "/"},
	    "timeout": {"perRequest": {"unit": "s", "value": 3}, "idle": {"unit": "ms", "value": 20}},
	    "retryPolicy": {"maxRetries": 2, "perRetryTimeout": {"unit": "ms", "value": 100}, "httpRetryEvents": ["server-error"]},
	    "action": {"weightedTargets": [{"virtualNode": "a", "weight": 1}]}}}},
	  {"routeName": "g", "spec": {"grpcRoute": {"match": {"serviceName": "s.S"},
	    "timeout": {"perRequest": {"unit": "ms", "value": 1500}},
	    "retryPolicy": {"maxRetries": 1, "perRetryTimeout": {"unit": "s", "value": 1}, "grpcRetryEvents": ["unavailable"]},
	    "action": {"weightedTargets": [{"virtualNode": "c", "weight": 1}]}}}}
	]`
	svc := mustCompile(t, meshWithRoutes(t, routes), "client").Egress("svc.local", 0)
	h := svc.Routes[0]
	if h.PerRequestTimeout != 3*time.Second || h.IdleTimeout != 20*time.Millisecond || h.HTTPRetry == nil ||
		h.HTTPRetry.MaxRetries != 2 || h.GRPCRetry != nil {
		t.Fatalf("http route = %+v", h)
	}
	g := svc.Routes[1]
	if g.Kind != "grpc" || g.PerRequestTimeout != 1500*time.Millisecond || g.IdleTimeout != 0 ||
		g.GRPCRetry == nil || g.GRPCRetry.GRPCRetryEvents[0] != "unavailable" || g.HTTPRetry != nil {
		t.Fatalf("grpc route = %+v", g)
	}
}

func TestCompileErrors(t *testing.T) {
	target := `"action": {"weightedTargets": [{"virtualNode": "a", "weight": 1}]}`
	for _, c := range []struct {
		name    string
		node    string
		routes  string
		edit    func(*config.Config)
		wantErr []string
		unknown bool
	}{
		{name: "unknown node", node: "ghost", routes: `[]`, wantErr: []string{`virtualNode "ghost"`}, unknown: true},
		{name: "dangling backend", routes: `[]`, edit: func(c *config.Config) {
			c.VirtualNodes[0].Spec.Backends = append(c.VirtualNodes[0].Spec.Backends,
				config.Backend{VirtualService: &config.VirtualServiceBackend{VirtualServiceName: "nope.local"}})
		}, wantErr: []string{`spec.backends[4]`, `"nope.local"`}, unknown: true},
		{name: "dangling router", routes: `[]`, edit: func(c *config.Config) {
			c.VirtualServices[0].Spec.Provider.VirtualRouter.VirtualRouterName = "gone"
		}, wantErr: []string{`virtualService "svc.local"`, `virtualRouter "gone"`}, unknown: true},
		{name: "dangling provider node", routes: `[]`, edit: func(c *config.Config) {
			c.VirtualServices[2].Spec.Provider.VirtualNode.VirtualNodeName = "gone"
		}, wantErr: []string{`virtualService "single.local"`, `virtualNode "gone"`}, unknown: true},
		{name: "dangling target", routes: `[{"routeName": "rt", "spec": {"httpRoute": {"match": {"prefix": "/"},
			"action": {"weightedTargets": [{"virtualNode": "a", "weight": 1}, {"virtualNode": "zz", "weight": 1}]}}}}]`,
			wantErr: []string{`routes[0] "rt"`, `weightedTargets[1]`, `virtualNode "zz"`}, unknown: true},
		{name: "target port without listener", routes: `[{"routeName": "rt", "spec": {"httpRoute": {"match": {"prefix": "/"},
			"action": {"weightedTargets": [{"virtualNode": "a", "weight": 1, "port": 1234}]}}}}]`,
			wantErr: []string{`"rt"`, `port 1234`, `virtualNode "a"`}, unknown: true},
		{name: "target without port on multi-listener node", routes: `[{"routeName": "rt", "spec": {"httpRoute": {"match": {"prefix": "/"},
			"action": {"weightedTargets": [{"virtualNode": "multi", "weight": 1}]}}}}]`,
			wantErr: []string{`"rt"`, `"multi" has 2 listeners`}},
		{name: "bad path regex", routes: `[{"routeName": "rt", "spec": {"httpRoute": {"match": {"path": {"regex": "a("}}, ` + target + `}}}]`,
			wantErr: []string{`"rt"`, `spec.httpRoute.match.path.regex "a("`}},
		{name: "bad header regex", routes: `[{"routeName": "rt", "spec": {"http2Route": {"match": {"prefix": "/",
			"headers": [{"name": "x", "match": {"regex": "[z-a]"}}]}, ` + target + `}}}]`,
			wantErr: []string{`spec.http2Route.match.headers[0].match.regex "[z-a]"`}},
		{name: "bad metadata regex", routes: `[{"routeName": "rt", "spec": {"grpcRoute": {"match": {
			"metadata": [{"name": "ok"}, {"name": "x", "match": {"regex": "*"}}]}, ` + target + `}}}]`,
			wantErr: []string{`spec.grpcRoute.match.metadata[1].match.regex`}},
		{name: "empty range", routes: `[{"routeName": "rt", "spec": {"httpRoute": {"match": {"prefix": "/",
			"headers": [{"name": "x", "match": {"range": {"start": 5, "end": 5}}}]}, ` + target + `}}}]`,
			wantErr: []string{`headers[0].match.range`}},
		{name: "two header methods", routes: `[{"routeName": "rt", "spec": {"httpRoute": {"match": {"prefix": "/",
			"headers": [{"name": "x", "match": {"exact": "a", "prefix": "b"}}]}, ` + target + `}}}]`,
			wantErr: []string{`headers[0].match: 2 of`}},
		{name: "no route kind", routes: `[{"routeName": "rt", "spec": {}}]`, wantErr: []string{`"rt"`, `0 of httpRoute`}},
		{name: "two route kinds", routes: `[{"routeName": "rt", "spec": {"httpRoute": {"match": {"prefix": "/"}, ` + target + `},
			"tcpRoute": {` + target + `}}}]`, wantErr: []string{`2 of httpRoute`}},
		{name: "no targets", routes: `[{"routeName": "rt", "spec": {"tcpRoute": {"action": {"weightedTargets": []}}}}]`,
			wantErr: []string{`spec.tcpRoute.action.weightedTargets: empty`}},
		{name: "negative weight", routes: `[{"routeName": "rt", "spec": {"httpRoute": {"match": {"prefix": "/"},
			"action": {"weightedTargets": [{"virtualNode": "a", "weight": -1}]}}}}]`, wantErr: []string{`weight -1`}},
		{name: "method without service", routes: `[{"routeName": "rt", "spec": {"grpcRoute": {"match": {"methodName": "M"}, ` + target + `}}}]`,
			wantErr: []string{`methodName "M"`}},
		{name: "prefix and path", routes: `[{"routeName": "rt", "spec": {"httpRoute": {"match": {"prefix": "/", "path": {"exact": "/x"}}, ` + target + `}}}]`,
			wantErr: []string{`prefix "/" and path`}},
		{name: "empty query name", routes: `[{"routeName": "rt", "spec": {"httpRoute": {"match": {"prefix": "/", "queryParameters": [{"name": ""}]}, ` + target + `}}}]`,
			wantErr: []string{`queryParameters[0].name`}},
		{name: "provider node without listener", routes: `[]`, edit: func(c *config.Config) {
			c.VirtualNodes[1].Spec.Listeners = nil
		}, wantErr: []string{`virtualService "single.local"`, `virtualNode "a"`, `spec.listeners`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := meshWithRoutes(t, c.routes)
			if c.edit != nil {
				c.edit(cfg)
			}
			node := c.node
			if node == "" {
				node = "client"
			}
			tb, err := Compile(cfg, node)
			if err == nil {
				t.Fatalf("Compile succeeded: %+v", tb)
			}
			t.Log(err)
			for _, w := range c.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if errors.Is(err, ErrUnknownReference) != c.unknown {
				t.Errorf("errors.Is(%v, ErrUnknownReference) = %v, want %v", err, !c.unknown, c.unknown)
			}
		})
	}
	if _, err := Compile(nil, "x"); err == nil {
		t.Fatal("Compile(nil) succeeded")
	}
}

// A node that is not the one compiled may have a broken route without failing the table:
// only routes of the node's backends are compiled.
func TestUnreachableRoutesIgnored(t *testing.T) {
	routes := `[{"routeName": "broken", "virtualRouterName": "unused", "spec": {}}]`
	mustCompile(t, meshWithRoutes(t, routes), "client")
}

func TestServiceWithoutProvider(t *testing.T) {
	cfg := meshWithRoutes(t, `[]`)
	cfg.VirtualServices[0].Spec.Provider = nil
	svc := mustCompile(t, cfg, "client").Egress("svc.local", 0)
	if svc == nil || svc.Match(&Request{Path: "/"}) != nil || svc.TCPRoute() != nil || svc.Protocol != "" {
		t.Fatalf("svc without provider = %+v", svc)
	}
}

func TestNilSafety(t *testing.T) {
	var s *Service
	if s.Match(&Request{}) != nil || s.TCPRoute() != nil || s.MatchTCP(1) != nil {
		t.Fatal("nil Service must match nothing")
	}
	tb := mustCompile(t, loadConfig(t, "testdata/shop.json"), "frontend")
	if tb.Egress("backend.shop.local", 0).Match(nil) != nil {
		t.Fatal("Match(nil) must be nil")
	}
}

func TestPickTargetDistribution(t *testing.T) {
	tb := mustCompile(t, loadConfig(t, "testdata/shop.json"), "frontend")
	split := tb.Egress("backend.shop.local", 80).Match(&Request{Path: "/"})
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 100000
	counts := map[string]int{}
	for range n {
		counts[split.PickTarget(rng.Uint64()).Cluster]++
	}
	v1 := float64(counts["backend-v1"]) / n
	if v1 < 0.89 || v1 > 0.91 || counts["backend-v1"]+counts["backend-v2"] != n {
		t.Fatalf("90/10 split gave %v", counts)
	}

	routes := `[{"routeName": "rt", "spec": {"httpRoute": {"match": {"prefix": "/"},
	  "action": {"weightedTargets": [{"virtualNode": "b", "weight": 0}, {"virtualNode": "a", "weight": 3},
	    {"virtualNode": "c", "weight": 0}, {"virtualNode": "multi", "port": 7001, "weight": 1}, {"virtualNode": "a", "port": 9001, "weight": 0}]}}}}]`
	rt := mustCompile(t, meshWithRoutes(t, routes), "client").Egress("svc.local", 0).Routes[0]
	counts = map[string]int{}
	for range n {
		counts[rt.PickTarget(rng.Uint64()).Cluster]++
	}
	// Boundary values of rnd must not reach weight-0 targets either.
	for _, x := range []uint64{0, 1, 1 << 63, ^uint64(0), ^uint64(0) / 4 * 3, ^uint64(0)/4*3 + 1} {
		counts[rt.PickTarget(x).Cluster]++
	}
	if counts["b"] != 0 || counts["c"] != 0 || len(counts) != 2 {
		t.Fatalf("weight-0 targets picked: %v", counts)
	}
	if a := float64(counts["a"]) / n; a < 0.74 || a > 0.76 {
		t.Fatalf("3:1 split gave %v", counts)
	}
	if rt.PickTarget(0).Cluster != "a" || rt.PickTarget(^uint64(0)).Cluster != "multi:7001" {
		t.Fatal("extreme rnd values should pick the first and last weighted targets")
	}

	zero := `[{"routeName": "rt", "spec": {"httpRoute": {"match": {"prefix": "/"},
	  "action": {"weightedTargets": [{"virtualNode": "a", "weight": 0}]}}}}]`
	if p := mustCompile(t, meshWithRoutes(t, zero), "client").Egress("svc.local", 0).Routes[0].PickTarget(5); p != nil {
		t.Fatalf("all-zero weights picked %+v", p)
	}
}

// TestConcurrentUse runs Match and PickTarget from several goroutines under -race to
// check that a compiled Table is read-only.
func TestConcurrentUse(t *testing.T) {
	tb := mustCompile(t, bigMesh(t), "client")
	svc := tb.Egress("svc.local", 80)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			for i := range 2000 {
				r := svc.Match(&Request{Path: fmt.Sprintf("/r%d/x", i%25), Method: "GET", Scheme: "http", Port: 80,
					Header: headers{"x-user", "7"}})
				if r != nil && r.PickTarget(rng.Uint64()) == nil {
					t.Error("PickTarget = nil on a weighted route")
					return
				}
				_ = tb.Egress("SVC.LOCAL.", 80)
			}
		})
	}
	wg.Wait()
}
