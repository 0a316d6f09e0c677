package state

import (
	"context"
	"testing"

	"github.com/meshd/meshd/config"
)

const gatewayStatsDoc = `
mesh: {meshName: shop, spec: {egressFilter: {type: DROP_ALL}}}
virtualNodes:
  - virtualNodeName: red
    spec: {listeners: [{portMapping: {port: 8080, protocol: http}}], serviceDiscovery: {static: {endpoints: ["127.0.0.1:8080"]}}}
virtualServices:
  - {virtualServiceName: red.local, spec: {provider: {virtualNode: {virtualNodeName: red}}}}
virtualGateways:
  - virtualGatewayName: gw
    spec: {listeners: [{portMapping: {port: 9080, protocol: http}}]}
gatewayRoutes:
  - {gatewayRouteName: last, virtualGatewayName: gw, spec: {httpRoute: {match: {prefix: /}, action: {target: {virtualService: {virtualServiceName: red.local}}}}}}
  - {gatewayRouteName: first, virtualGatewayName: gw, spec: {priority: 0, httpRoute: {match: {prefix: /a}, action: {target: {virtualService: {virtualServiceName: red.local}}}}}}
`

// TestGatewayStatsOf: the request path's statistics of a gateway route (by its index)
// are the ones the admin reads by name, they survive a reload, and a route of an older
// snapshot does not reach the new snapshot's statistics by a stale index.
func TestGatewayStatsOf(t *testing.T) {
	cfg, err := config.Parse([]byte(gatewayStatsDoc))
	if err != nil {
		t.Fatal(err)
	}
	opts := originOptions(t)
	s1, err := CompileGateway(context.Background(), cfg, "gw", "test", nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	routes := s1.Gateway().Routes
	if len(routes) != 2 || routes[0].Name != "first" || routes[1].Name != "last" {
		t.Fatalf("gateway routes %v, want first (priority 0) then last", routes)
	}
	for i, gr := range routes {
		if gr.Index != i {
			t.Errorf("route %s: Index %d, want %d", gr.Name, gr.Index, i)
		}
		st := s1.GatewayStatsOf(gr)
		if st == nil || st != s1.GatewayRouteStats(gr.Name) {
			t.Errorf("route %s: GatewayStatsOf %p, GatewayRouteStats %p: want the same statistics", gr.Name, st, s1.GatewayRouteStats(gr.Name))
		}
	}
	if s1.GatewayStatsOf(routes[0]) == s1.GatewayStatsOf(routes[1]) {
		t.Fatal("two gateway routes share statistics")
	}
	s2, err := CompileGateway(context.Background(), cfg, "gw", "reload", s1, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, gr := range s2.Gateway().Routes {
		if got, want := s2.GatewayStatsOf(gr), s1.GatewayRouteStats(gr.Name); got != want {
			t.Errorf("route %s after a reload: statistics %p, want the previous snapshot's %p", gr.Name, got, want)
		}
	}
	if st := s2.GatewayStatsOf(routes[0]); st != nil {
		t.Errorf("a route of the previous snapshot got statistics %p from the new one, want nil", st)
	}
}
