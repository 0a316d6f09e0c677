package proxy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// gatewayListen binds every gateway listener on 127.0.0.1:0, whatever port the config
// names (the connections still count as arriving on the config's port).
func gatewayListen(port int) (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

// startGateway serves virtual gateway name of yaml with meshd.
func startGateway(t *testing.T, name, yaml string) *proxy.Server {
	t.Helper()
	return testutil.StartMeshdOpts(t, proxy.Options{Gateway: name, GatewayListen: gatewayListen}, yaml)
}

// gatewayMeshYAML is a mesh with echo upstreams red, blue and white (virtual nodes of
// the same names, each the provider of <name>.local), a virtual router in front of
// color.local (route /tell → red), and gateway gw with listeners 9080 (health check
// /ping) and 9081 whose gateway routes are routes (YAML list items).
func gatewayMeshYAML(red, blue, white int, routes string) string {
	var b strings.Builder
	b.WriteString("mesh: {meshName: t, spec: {egressFilter: {type: DROP_ALL}}}\nvirtualNodes:\n")
	for name, port := range map[string]int{"red": red, "blue": blue, "white": white} {
		fmt.Fprintf(&b, "  - virtualNodeName: %s\n    spec: {listeners: [{portMapping: {port: %d, protocol: http}}], serviceDiscovery: {static: {endpoints: [\"127.0.0.1:%d\"]}}}\n", name, port, port)
	}
	b.WriteString(`virtualServices:
  - {virtualServiceName: red.local, spec: {provider: {virtualNode: {virtualNodeName: red}}}}
  - {virtualServiceName: blue.local, spec: {provider: {virtualNode: {virtualNodeName: blue}}}}
  - {virtualServiceName: white.local, spec: {provider: {virtualNode: {virtualNodeName: white}}}}
  - {virtualServiceName: color.local, spec: {provider: {virtualRouter: {virtualRouterName: color}}}}
virtualRouters:
  - {virtualRouterName: color, spec: {listeners: [{portMapping: {port: 80, protocol: http}}]}}
routes:
  - {routeName: tell, virtualRouterName: color, spec: {httpRoute: {match: {prefix: /tell}, action: {weightedTargets: [{virtualNode: red, weight: 1}]}}}}
virtualGateways:
  - virtualGatewayName: gw
    spec:
      listeners:
        - {portMapping: {port: 9080, protocol: http}, healthCheck: {protocol: http, path: /ping, intervalMillis: 5000, timeoutMillis: 2000, healthyThreshold: 2, unhealthyThreshold: 2}}
        - {portMapping: {port: 9081, protocol: http}}
gatewayRoutes:
`)
	b.WriteString(routes)
	return b.String()
}

// gwRoute is one gateway route of gw in YAML.
func gwRoute(name, spec string) string {
	return fmt.Sprintf("  - {gatewayRouteName: %s, virtualGatewayName: gw, spec: %s}\n", name, spec)
}

// gatewayEcho sends method target with host to addr and returns the status, the
// x-meshd-error code and the echo of the upstream that answered (zero when none did).
func gatewayEcho(t *testing.T, addr, method, target, host string, hdr map[string]string) (int, string, echoInfo) {
	t.Helper()
	c := dialRaw(t, addr)
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, target, host)
	for k, v := range hdr {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	b.WriteString("Content-Length: 0\r\nConnection: close\r\n\r\n")
	c.send(t, b.String())
	resp, body := c.read(t, method)
	var info echoInfo
	if resp.StatusCode == 200 && resp.Header.Get("X-Upstream") != "" {
		info = decodeEchoBody(t, body)
	}
	return resp.StatusCode, resp.Header.Get("X-Meshd-Error"), info
}

// TestGatewayRoutes drives gateway routes of every match and rewrite kind through a
// real gateway to real upstreams and checks what each upstream saw.
func TestGatewayRoutes(t *testing.T) {
	red := testutil.StartHTTP(t, echoHandler("red"))
	blue := testutil.StartHTTP(t, echoHandler("blue"))
	white := testutil.StartHTTP(t, echoHandler("white"))
	target := func(svc string) string { return "{target: {virtualService: {virtualServiceName: " + svc + "}}" }
	routes := gwRoute("red-default", "{httpRoute: {match: {prefix: /red}, action: "+target("red.local")+"}}}") +
		gwRoute("blue-disabled", "{httpRoute: {match: {prefix: /blue/}, action: {target: {virtualService: {virtualServiceName: blue.local}}, rewrite: {prefix: {defaultPrefix: DISABLED}}}}}") +
		gwRoute("maroon-value", "{httpRoute: {match: {prefix: /maroon/, queryParameters: [{name: fishes, match: {exact: nemo}}]}, action: {target: {virtualService: {virtualServiceName: color.local}}, rewrite: {prefix: {value: /tell/}}}}}") +
		gwRoute("exact", "{httpRoute: {match: {path: {exact: /exact}}, action: {target: {virtualService: {virtualServiceName: white.local}}, rewrite: {path: {exact: /rewritten}}}}}") +
		gwRoute("regex", "{httpRoute: {match: {path: {regex: '/re/[0-9]+'}}, action: "+target("white.local")+"}}}") +
		gwRoute("header", "{priority: 1, httpRoute: {match: {prefix: /, headers: [{name: x-color, match: {exact: blue}}]}, action: {target: {virtualService: {virtualServiceName: blue.local}}, rewrite: {prefix: {defaultPrefix: DISABLED}}}}}") +
		gwRoute("method", "{httpRoute: {match: {prefix: /post, method: POST}, action: "+target("white.local")+"}}}") +
		gwRoute("host-exact", "{httpRoute: {match: {prefix: /host, hostname: {exact: www.example.com}}, action: {target: {virtualService: {virtualServiceName: white.local}}, rewrite: {hostname: {defaultTargetHostname: DISABLED}}}}}") +
		gwRoute("host-suffix", "{httpRoute: {match: {prefix: /host, hostname: {suffix: .example.org}}, action: "+target("blue.local")+"}}}") +
		gwRoute("prio-low", "{priority: 9, httpRoute: {match: {prefix: /prio}, action: "+target("red.local")+"}}}") +
		gwRoute("prio-high", "{priority: 2, httpRoute: {match: {prefix: /prio}, action: "+target("blue.local")+"}}}") +
		gwRoute("port-9081", "{httpRoute: {match: {prefix: /, port: 9081}, action: "+target("white.local")+"}}}")
	srv := startGateway(t, "gw", gatewayMeshYAML(red.Port, blue.Port, white.Port, routes))
	addr, addr2 := srv.GatewayAddrs()[9080], srv.GatewayAddrs()[9081]
	if addr == "" || addr2 == "" {
		t.Fatalf("gateway listeners %v, want 9080 and 9081", srv.GatewayAddrs())
	}
	for _, tc := range []struct {
		name, method, target, host string
		hdr                        map[string]string
		addr                       string
		upstream, path, seenHost   string
	}{
		{"prefix, default rewrite", "GET", "/red/tell?x=1", "gw.example.com", nil, addr, "red", "/tell?x=1", "red.local"},
		{"prefix alone, default rewrite", "GET", "/red", "gw.example.com", nil, addr, "red", "/", "red.local"},
		{"prefix, rewrite disabled", "GET", "/blue/tell", "gw.example.com", nil, addr, "blue", "/blue/tell", "blue.local"},
		{"prefix value, through a router", "GET", "/maroon/x?fishes=nemo", "gw.example.com", nil, addr, "red", "/tell/x?fishes=nemo", "color.local"},
		{"path exact, rewritten", "GET", "/exact", "gw", nil, addr, "white", "/rewritten", "white.local"},
		{"path regex", "GET", "/re/42", "gw", nil, addr, "white", "/re/42", "white.local"},
		{"header", "GET", "/anything", "gw", map[string]string{"X-Color": "blue"}, addr, "blue", "/anything", "blue.local"},
		{"method", "POST", "/post", "gw", nil, addr, "white", "/", "white.local"},
		{"hostname exact, host kept", "GET", "/host/a", "WWW.example.com:9080", nil, addr, "white", "/a", "WWW.example.com:9080"},
		{"hostname suffix, host rewritten", "GET", "/host/b", "api.example.org", nil, addr, "blue", "/b", "blue.local"},
		{"priority", "GET", "/prio", "gw", nil, addr, "blue", "/", "blue.local"},
		{"listener port", "GET", "/whatever", "gw", nil, addr2, "white", "/whatever", "white.local"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, code, info := gatewayEcho(t, tc.addr, tc.method, tc.target, tc.host, tc.hdr)
			if status != 200 {
				t.Fatalf("status %d (%s), want 200 from %s", status, code, tc.upstream)
			}
			if info.Name != tc.upstream || info.Path != tc.path || info.Host != tc.seenHost {
				t.Fatalf("upstream %q saw %s Host %q, want %q to see %s Host %q", info.Name, info.Path, info.Host, tc.upstream, tc.path, tc.seenHost)
			}
		})
	}
	t.Run("no match", func(t *testing.T) {
		for _, c := range []struct{ method, target, host string }{
			{"GET", "/maroon/x?fishes=dory", "gw"}, // the query does not match
			{"GET", "/post", "gw"},                 // the method does not match
			{"GET", "/host/c", "www.example.net"},  // neither hostname matches
			{"GET", "/nowhere", "gw"},
		} {
			status, code, _ := gatewayEcho(t, addr, c.method, c.target, c.host, nil)
			if status != 404 || code != "no_route" {
				t.Errorf("%s %s Host %s: %d %q, want 404 no_route", c.method, c.target, c.host, status, code)
			}
		}
	})
	t.Run("health check", func(t *testing.T) {
		status, code, _ := gatewayEcho(t, addr, "GET", "/ping", "gw", nil)
		if status != 200 || code != "health_check" {
			t.Fatalf("GET /ping: %d %q, want meshd's 200 health_check", status, code)
		}
		// The second listener has no health check: /ping is routed (port-9081).
		if status, _, info := gatewayEcho(t, addr2, "GET", "/ping", "gw", nil); status != 200 || info.Name != "white" {
			t.Fatalf("GET /ping on 9081: %d from %q, want white", status, info.Name)
		}
	})
	t.Run("edge forwarding headers", func(t *testing.T) {
		_, _, info := gatewayEcho(t, addr, "GET", "/red/h", "gw", map[string]string{"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"})
		if got := info.Header.Get("X-Forwarded-For"); got != "203.0.113.9, 127.0.0.1" {
			t.Errorf("X-Forwarded-For %q, want the client's address appended", got)
		}
		if got := info.Header.Get("X-Forwarded-Proto"); got != "http" {
			t.Errorf("X-Forwarded-Proto %q, want what the gateway saw (http), not the client's claim", got)
		}
	})
	t.Run("http2 client", func(t *testing.T) {
		c := testutil.H2CClient(t, addr)
		info := getEcho(t, c, newReq(t, "GET", "http://gw.example.com/red/h2?q=1", nil))
		if info.Name != "red" || info.Path != "/h2?q=1" || info.Host != "red.local" {
			t.Fatalf("h2c through the gateway: %q saw %s Host %q, want red /h2?q=1 red.local", info.Name, info.Path, info.Host)
		}
	})
}

// TestGatewayReload: gateway routes added by a reload serve without a restart, a
// listener added by a reload is bound and one removed is closed; a config without the
// gateway is refused and the old one keeps serving.
func TestGatewayReload(t *testing.T) {
	red := testutil.StartHTTP(t, echoHandler("red"))
	blue := testutil.StartHTTP(t, echoHandler("blue"))
	first := gatewayMeshYAML(red.Port, blue.Port, blue.Port,
		gwRoute("red", "{httpRoute: {match: {prefix: /red}, action: {target: {virtualService: {virtualServiceName: red.local}}}}}"))
	srv := startGateway(t, "gw", first)
	addr := srv.GatewayAddrs()[9080]
	if status, code, _ := gatewayEcho(t, addr, "GET", "/blue/x", "gw", nil); status != 404 || code != "no_route" {
		t.Fatalf("before the reload: %d %q, want 404 no_route", status, code)
	}
	second := first + gwRoute("blue", "{httpRoute: {match: {prefix: /blue}, action: {target: {virtualService: {virtualServiceName: blue.local}}}}}")
	second = strings.Replace(second, "        - {portMapping: {port: 9081, protocol: http}}\n",
		"        - {portMapping: {port: 9081, protocol: http}}\n        - {portMapping: {port: 9082, protocol: http}}\n", 1)
	if _, err := srv.Apply(context.Background(), testutil.ParseConfig(t, second), "test"); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if status, code, info := gatewayEcho(t, addr, "GET", "/blue/x", "gw", nil); status != 200 || info.Name != "blue" || info.Path != "/x" {
		t.Fatalf("after the reload: %d %q from %q %s, want blue /x", status, code, info.Name, info.Path)
	}
	addr3 := srv.GatewayAddrs()[9082]
	if addr3 == "" {
		t.Fatalf("listener 9082 added by the reload is not bound: %v", srv.GatewayAddrs())
	}
	if status, _, info := gatewayEcho(t, addr3, "GET", "/red/y", "gw", nil); status != 200 || info.Name != "red" {
		t.Fatalf("on the new listener: %d from %q, want red", status, info.Name)
	}
	// A reload that removes listener 9081 closes it.
	addr2 := srv.GatewayAddrs()[9081]
	third := strings.Replace(second, "        - {portMapping: {port: 9081, protocol: http}}\n", "", 1)
	if _, err := srv.Apply(context.Background(), testutil.ParseConfig(t, third), "test"); err != nil {
		t.Fatalf("reload without 9081: %v", err)
	}
	if _, ok := srv.GatewayAddrs()[9081]; ok {
		t.Fatalf("listener 9081 still bound after its removal: %v", srv.GatewayAddrs())
	}
	if c, err := net.DialTimeout("tcp", addr2, 5*time.Second); err == nil {
		_ = c.Close()
		t.Fatalf("%s (the removed listener 9081) still accepts connections", addr2)
	}
	noGateway := strings.Replace(second, "virtualGatewayName: gw\n", "virtualGatewayName: other\n", 1)
	noGateway = strings.ReplaceAll(noGateway, "virtualGatewayName: gw,", "virtualGatewayName: other,")
	if _, err := srv.Apply(context.Background(), testutil.ParseConfig(t, noGateway), "test"); err == nil || !strings.Contains(err.Error(), `gateway "gw"`) {
		t.Fatalf("a config without gateway gw: %v, want it refused naming the gateway", err)
	}
	if status, _, info := gatewayEcho(t, addr, "GET", "/blue/z", "gw", nil); status != 200 || info.Name != "blue" {
		t.Fatalf("after the refused reload: %d from %q, want blue (the old config serving)", status, info.Name)
	}
}

// TestGatewayOptions: a server serves a node or a gateway, never both.
func TestGatewayOptions(t *testing.T) {
	if _, err := proxy.New(proxy.Options{Node: "a", Gateway: "b"}); err == nil || !strings.Contains(err.Error(), "both set") {
		t.Fatalf("Node and Gateway: %v, want refused", err)
	}
}

// decodeEchoBody decodes an echoInfo body.
func decodeEchoBody(t *testing.T, body string) echoInfo {
	t.Helper()
	var info echoInfo
	if err := json.Unmarshal([]byte(body), &info); err != nil {
		t.Fatalf("decode echo: %v: %q", err, body)
	}
	return info
}

// TestGatewayAccessLogAndStats: the gateway's logging.accessLog.file gets a line per
// request with the path the client sent, and the metrics count the gateway's requests
// by the target service's route and cluster, App Mesh's stats tags naming the gateway.
func TestGatewayAccessLogAndStats(t *testing.T) {
	red := testutil.StartHTTP(t, echoHandler("red"))
	logPath := filepath.Join(t.TempDir(), "gw.log")
	routes := gwRoute("red", "{httpRoute: {match: {prefix: /red}, action: {target: {virtualService: {virtualServiceName: red.local}}}}}") +
		gwRoute("color", "{httpRoute: {match: {prefix: /color}, action: {target: {virtualService: {virtualServiceName: color.local}}}}}")
	yaml := gatewayMeshYAML(red.Port, red.Port, red.Port, routes)
	yaml = strings.Replace(yaml, "  - virtualGatewayName: gw\n    spec:\n",
		"  - virtualGatewayName: gw\n    spec:\n      logging: {accessLog: {file: {path: "+logPath+"}}}\n", 1)
	srv := testutil.StartMeshdOpts(t, proxy.Options{Gateway: "gw", GatewayListen: gatewayListen, EnvoyStatsTags: true}, yaml)
	for i := 0; i < 3; i++ {
		if status, code, _ := gatewayEcho(t, srv.GatewayAddrs()[9080], "GET", "/red/log", "gw", nil); status != 200 {
			t.Fatalf("request %d: %d %s", i, status, code)
		}
	}
	// Matched by gateway route color, then no route of color.local matches /nowhere.
	if status, code, _ := gatewayEcho(t, srv.GatewayAddrs()[9080], "GET", "/color/nowhere", "gw", nil); status != 404 || code != "no_route" {
		t.Fatalf("GET /color/nowhere: %d %s, want 404 no_route", status, code)
	}
	// Matched by no gateway route: counted on the listener only.
	if status, code, _ := gatewayEcho(t, srv.GatewayAddrs()[9080], "GET", "/elsewhere", "gw", nil); status != 404 || code != "no_route" {
		t.Fatalf("GET /elsewhere: %d %s, want 404 no_route", status, code)
	}
	// The statistics are recorded before the access log line is written: once the
	// lines are there, so are the counts.
	readLines(t, logPath, 5)
	tags := lbls{"appmesh_mesh": "t", "appmesh_virtual_node": "gw"}
	gwSeries := func(route, class string) lbls {
		l := lbls{"virtual_gateway": "gw", "gateway_route": route, "code_class": class}
		for k, v := range tags {
			l[k] = v
		}
		return l
	}
	m := scrape(t, srv, "")
	m.expect(t, "meshd_gateway_route_requests_total", gwSeries("red", "2xx"), 3)
	m.expect(t, "meshd_gateway_route_requests_total", gwSeries("color", "4xx"), 1)
	// A reload keeps a gateway route's counters (by its name).
	if _, err := srv.Apply(context.Background(), testutil.ParseConfig(t, strings.Replace(yaml, "prefix: /color}", "prefix: /colour}", 1)), "test"); err != nil {
		t.Fatal(err)
	}
	if status, code, _ := gatewayEcho(t, srv.GatewayAddrs()[9080], "GET", "/red/again", "gw", nil); status != 200 {
		t.Fatalf("after the reload: %d %s", status, code)
	}
	lines := readLines(t, logPath, 6)
	m = scrape(t, srv, "")
	m.expect(t, "meshd_gateway_route_requests_total", gwSeries("red", "2xx"), 4)
	m.expect(t, "meshd_gateway_route_requests_total", gwSeries("color", "4xx"), 1)
	// Each request is on its own connection and a line is written after its answer has
	// left, so the lines of consecutive requests need not be in their order.
	n := 0
	for _, l := range lines {
		if strings.Contains(l, `"GET /red/log HTTP/1.1" 200`) {
			n++
		}
	}
	if n != 3 {
		t.Errorf("%d access log lines with the client's request line and 200, want 3: %q", n, lines)
	}
	f := scrape(t, srv, "")
	f.expect(t, "envoy_cluster_upstream_rq_total", lbls{"envoy_cluster_name": fmt.Sprintf("cds_egress_t_red_http_%d", red.Port),
		"appmesh_mesh": "t", "appmesh_virtual_node": "gw"}, 4)
}

// TestGatewayHTTP2Listener: an http2Route serves the gateway's http2 listener (h2c
// clients, and HTTP/1.1 clients too), an httpRoute does not.
func TestGatewayHTTP2Listener(t *testing.T) {
	red := testutil.StartHTTP(t, echoHandler("red"))
	yaml := gatewayMeshYAML(red.Port, red.Port, red.Port,
		gwRoute("h2", "{http2Route: {match: {prefix: /h2}, action: {target: {virtualService: {virtualServiceName: red.local}}}}}")+
			gwRoute("h1", "{httpRoute: {match: {prefix: /h1}, action: {target: {virtualService: {virtualServiceName: red.local}}}}}"))
	yaml = strings.Replace(yaml, "        - {portMapping: {port: 9081, protocol: http}}\n", "        - {portMapping: {port: 9081, protocol: http2}}\n", 1)
	srv := startGateway(t, "gw", yaml)
	addr := srv.GatewayAddrs()[9081]
	info := getEcho(t, testutil.H2CClient(t, addr), newReq(t, "GET", "http://gw/h2/x", nil))
	if info.Name != "red" || info.Path != "/x" || info.Host != "red.local" {
		t.Fatalf("h2c on the http2 listener: %q saw %s Host %q, want red /x red.local", info.Name, info.Path, info.Host)
	}
	if status, _, info := gatewayEcho(t, addr, "GET", "/h2/y", "gw", nil); status != 200 || info.Path != "/y" {
		t.Fatalf("HTTP/1.1 on the http2 listener: %d %s, want 200 /y", status, info.Path)
	}
	if status, code, _ := gatewayEcho(t, addr, "GET", "/h1/z", "gw", nil); status != 404 || code != "no_route" {
		t.Fatalf("an httpRoute's path on the http2 listener: %d %q, want 404 no_route", status, code)
	}
	if status, _, info := gatewayEcho(t, srv.GatewayAddrs()[9080], "GET", "/h1/z", "gw", nil); status != 200 || info.Path != "/z" {
		t.Fatalf("the httpRoute on the http listener: %d %s, want 200 /z", status, info.Path)
	}
}
