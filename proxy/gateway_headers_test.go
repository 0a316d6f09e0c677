package proxy_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/internal/testutil"
)

// gatewayHeadersYAML is gateway gw (listener 9080) in front of h1.local (a router whose
// route h1-route goes to an HTTP/1.1 node) and h2.local (route h2-route, an h2c node);
// gateway routes gr-h1 (/h1) and gr-h2 (/h2) and the target routes all change headers,
// on both sides, where the two overlap too.
func gatewayHeadersYAML(h1port, h2port int) string {
	const gwRules = `headers: {request: {remove: [x-debug], set: [{name: x-gw, value: "%ROUTE_NAME% on %VIRTUAL_NODE% for %VIRTUAL_SERVICE%"}, {name: x-both, value: gw}], append: [{name: x-via, value: gw}]},
        response: {remove: [server], set: [{name: cache-control, value: gw}], append: [{name: x-served-by, value: "%ROUTE_NAME%"}]}}`
	const rtRules = `headers: {request: {set: [{name: x-both, value: route}], append: [{name: x-via, value: "%ROUTE_NAME%"}]},
        response: {set: [{name: cache-control, value: route}], append: [{name: x-served-by, value: "%ROUTE_NAME%"}]}}`
	return fmt.Sprintf(`mesh: {meshName: t}
virtualNodes:
  - {virtualNodeName: h1node, spec: {listeners: [{portMapping: {port: %[1]d, protocol: http}}], serviceDiscovery: {static: {endpoints: ["127.0.0.1:%[1]d"]}}}}
  - {virtualNodeName: h2node, spec: {listeners: [{portMapping: {port: %[2]d, protocol: http2}}], serviceDiscovery: {static: {endpoints: ["127.0.0.1:%[2]d"]}}}}
virtualServices:
  - {virtualServiceName: h1.local, spec: {provider: {virtualRouter: {virtualRouterName: r1}}}}
  - {virtualServiceName: h2.local, spec: {provider: {virtualRouter: {virtualRouterName: r2}}}}
virtualRouters:
  - {virtualRouterName: r1, spec: {listeners: [{portMapping: {port: 80, protocol: http}}]}}
  - {virtualRouterName: r2, spec: {listeners: [{portMapping: {port: 80, protocol: http2}}]}}
routes:
  - routeName: h1-route
    virtualRouterName: r1
    spec:
      httpRoute:
        match: {prefix: /}
        action: {weightedTargets: [{virtualNode: h1node, weight: 1}]}
        %[3]s
  - routeName: h2-route
    virtualRouterName: r2
    spec:
      http2Route:
        match: {prefix: /}
        action: {weightedTargets: [{virtualNode: h2node, weight: 1}]}
        %[3]s
virtualGateways:
  - virtualGatewayName: gw
    spec: {listeners: [{portMapping: {port: 9080, protocol: http}}]}
gatewayRoutes:
  - gatewayRouteName: gr-h1
    virtualGatewayName: gw
    spec:
      httpRoute:
        match: {prefix: /h1}
        action: {target: {virtualService: {virtualServiceName: h1.local}}}
        %[4]s
  - gatewayRouteName: gr-h2
    virtualGatewayName: gw
    spec:
      httpRoute:
        match: {prefix: /h2}
        action: {target: {virtualService: {virtualServiceName: h2.local}}}
        %[4]s
`, h1port, h2port, rtRules, gwRules)
}

// TestGatewayRouteHeaders: a gateway route's own header rules apply, the request's
// before the target route's (so the target route's set wins upstream) and the
// response's after them (so the gateway route's set wins at the client), on the
// HTTP/1.1 fast path, the bridge to an HTTP/2 upstream and the HTTP/2 front end;
// %ROUTE_NAME% is the gateway route's name in its rules and the route's in the route's.
func TestGatewayRouteHeaders(t *testing.T) {
	h1up := testutil.StartHTTP(t, echoFields("X-Debug", "X-Gw", "X-Both", "X-Via", "X-Keep"))
	h2up := testutil.StartH2C(t, echoFields("X-Debug", "X-Gw", "X-Both", "X-Via", "X-Keep"))
	srv := startGateway(t, "gw", gatewayHeadersYAML(h1up.Port, h2up.Port))
	addr := srv.GatewayAddrs()[9080]
	h1client := &http.Client{}
	h2client := testutil.H2CClient(t, addr)
	for _, c := range []struct {
		name, path string
		client     *http.Client
		gr, route  string
		svc        string
	}{
		{"HTTP/1.1 fast path", "/h1/x", h1client, "gr-h1", "h1-route", "h1.local"},
		{"HTTP/1.1 client, HTTP/2 upstream", "/h2/x", h1client, "gr-h2", "h2-route", "h2.local"},
		{"h2c client, HTTP/1.1 upstream", "/h1/x", h2client, "gr-h1", "h1-route", "h1.local"},
		{"h2c client, HTTP/2 upstream", "/h2/x", h2client, "gr-h2", "h2-route", "h2.local"},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, got := fieldsRequest(t, c.client, "http://"+addr+c.path, "X-Debug", "1", "X-Both", "client", "X-Via", "client", "X-Keep", "kept")
			for _, want := range []string{
				"X-Debug=\n",
				"X-Gw=" + c.gr + " on gw for " + c.svc + "\n",
				"X-Both=route\n",
				"X-Via=client|gw|" + c.route + "\n",
				"X-Keep=kept\n",
			} {
				if !strings.Contains(got, want) {
					t.Errorf("upstream saw:\n%s\nlacking %q", got, want)
				}
			}
			if s, cc := resp.Header.Get("Server"), resp.Header.Values("Cache-Control"); s != "" || len(cc) != 1 || cc[0] != "gw" {
				t.Errorf("response Server %q Cache-Control %q, want removed and [gw]", s, cc)
			}
			if v := resp.Header.Values("X-Served-By"); len(v) != 3 || v[0] != "upstream" || v[1] != c.route || v[2] != c.gr {
				t.Errorf("X-Served-By %q, want the upstream's, the route's, the gateway route's", v)
			}
		})
	}
}

// TestGatewayRouteHeadersValidation: a gateway route's rules are checked as a route's,
// errors naming the gateway route's field path.
func TestGatewayRouteHeadersValidation(t *testing.T) {
	for _, c := range []struct{ kind, headers, want string }{
		{"httpRoute", `{request: {set: [{name: host, value: x}]}}`, `gatewayRoutes[0].spec.httpRoute.headers.request.set[0].name: cannot be changed by a route`},
		{"http2Route", `{response: {append: [{name: x-a, value: "%NOPE%"}]}}`, `gatewayRoutes[0].spec.http2Route.headers.response.append[0].value: unknown variable %NOPE%`},
		{"grpcRoute", `{request: {remove: [content-length]}}`, `gatewayRoutes[0].spec.grpcRoute.headers.request.remove[0]: cannot be changed by a route: framing is meshd's`},
		{"grpcRoute", `{}`, `gatewayRoutes[0].spec.grpcRoute.headers: give request, response or both`},
	} {
		match := `{prefix: /}`
		proto := map[string]string{"httpRoute": "http", "http2Route": "http2", "grpcRoute": "grpc"}[c.kind]
		if c.kind == "grpcRoute" {
			match = `{serviceName: s}`
		}
		yaml := `mesh: {meshName: t}
virtualNodes:
  - {virtualNodeName: n, spec: {listeners: [{portMapping: {port: 8080, protocol: ` + proto + `}}], serviceDiscovery: {static: {endpoints: ["127.0.0.1:8080"]}}}}
virtualServices:
  - {virtualServiceName: s.local, spec: {provider: {virtualNode: {virtualNodeName: n}}}}
virtualGateways:
  - {virtualGatewayName: gw, spec: {listeners: [{portMapping: {port: 9080, protocol: ` + proto + `}}]}}
gatewayRoutes:
  - {gatewayRouteName: g, virtualGatewayName: gw, spec: {` + c.kind + `: {match: ` + match + `, action: {target: {virtualService: {virtualServiceName: s.local}}}, headers: ` + c.headers + `}}}
`
		cfg, err := config.Parse([]byte(yaml))
		if err == nil {
			err = cfg.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s headers %s: %v, want %q", c.kind, c.headers, err, c.want)
		}
	}
}
