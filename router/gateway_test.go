package router

import (
	"testing"

	"github.com/meshd/meshd/config"
)

func gwConfig(routes ...config.GatewayRoute) *config.Config {
	return &config.Config{
		Mesh:            config.Mesh{MeshName: "m"},
		VirtualGateways: []config.VirtualGateway{{VirtualGatewayName: "gw", Spec: config.VirtualGatewaySpec{Listeners: []config.GatewayListener{{PortMapping: config.PortMapping{Port: 80, Protocol: "http"}}}}}},
		GatewayRoutes:   routes,
	}
}

func httpGR(name string, prio *int, m config.GatewayHTTPRouteMatch, rw *config.GatewayHTTPRewrite) config.GatewayRoute {
	return config.GatewayRoute{GatewayRouteName: name, VirtualGatewayName: "gw", Spec: config.GatewayRouteSpec{Priority: prio,
		HTTPRoute: &config.GatewayHTTPRoute{Match: m, Action: config.GatewayHTTPRouteAction{
			Target: config.GatewayTarget{VirtualService: config.VirtualServiceRef{VirtualServiceName: name + ".local"}}, Rewrite: rw}}}}
}

// TestGatewayRewritePath is the rewrite table of docs/gateway.md.
func TestGatewayRewritePath(t *testing.T) {
	for _, tt := range []struct {
		m          config.GatewayHTTPRouteMatch
		rw         *config.GatewayHTTPRewrite
		in, want   string
		wantChange bool
	}{
		{config.GatewayHTTPRouteMatch{Prefix: "/red"}, nil, "/red/tell?a=1", "/tell?a=1", true},
		{config.GatewayHTTPRouteMatch{Prefix: "/red"}, nil, "/red", "/", true},
		{config.GatewayHTTPRouteMatch{Prefix: "/red/"}, nil, "/red/tell", "/tell", true},
		{config.GatewayHTTPRouteMatch{Prefix: "/"}, nil, "/x", "/x", false},
		{config.GatewayHTTPRouteMatch{}, nil, "/x", "/x", false},
		{config.GatewayHTTPRouteMatch{Prefix: "/red/"}, &config.GatewayHTTPRewrite{Prefix: &config.GatewayPrefixRewrite{DefaultPrefix: "DISABLED"}}, "/red/tell", "/red/tell", false},
		{config.GatewayHTTPRouteMatch{Prefix: "/maroon/"}, &config.GatewayHTTPRewrite{Prefix: &config.GatewayPrefixRewrite{Value: "/red/"}}, "/maroon/tell?f=nemo", "/red/tell?f=nemo", true},
		{config.GatewayHTTPRouteMatch{Prefix: "/maroon"}, &config.GatewayHTTPRewrite{Prefix: &config.GatewayPrefixRewrite{Value: "/red/"}}, "/maroon/tell", "/red/tell", true},
		{config.GatewayHTTPRouteMatch{Prefix: "/v1"}, &config.GatewayHTTPRewrite{Prefix: &config.GatewayPrefixRewrite{Value: "/v2"}}, "/v1/users", "/v2/users", true},
		{config.GatewayHTTPRouteMatch{Path: &config.PathMatch{Exact: "/a"}}, nil, "/a?q", "/a?q", false},
		{config.GatewayHTTPRouteMatch{Path: &config.PathMatch{Regex: "/a/.*"}}, &config.GatewayHTTPRewrite{Path: &config.GatewayPathRewrite{Exact: "/b"}}, "/a/x?q=1", "/b?q=1", true},
	} {
		g, err := CompileGateway(gwConfig(httpGR("r", nil, tt.m, tt.rw)), "gw")
		if err != nil {
			t.Fatal(err)
		}
		got, changed := g.Routes[0].RewritePath(tt.in)
		if got != tt.want || changed != tt.wantChange {
			t.Errorf("match %+v rewrite %+v: %s → %s (changed %v), want %s (%v)", tt.m, tt.rw, tt.in, got, changed, tt.want, tt.wantChange)
		}
	}
}

// TestGatewayRouteOrder: priority first (unset last), then the more specific match,
// then config order.
func TestGatewayRouteOrder(t *testing.T) {
	p := func(n int) *int { return &n }
	g, err := CompileGateway(gwConfig(
		httpGR("none-short", nil, config.GatewayHTTPRouteMatch{Prefix: "/a"}, nil),
		httpGR("none-long", nil, config.GatewayHTTPRouteMatch{Prefix: "/a/b"}, nil),
		httpGR("p5", p(5), config.GatewayHTTPRouteMatch{Prefix: "/"}, nil),
		httpGR("p1-prefix", p(1), config.GatewayHTTPRouteMatch{Prefix: "/x"}, nil),
		httpGR("p1-exact", p(1), config.GatewayHTTPRouteMatch{Path: &config.PathMatch{Exact: "/x"}}, nil),
		httpGR("p1-host", p(1), config.GatewayHTTPRouteMatch{Prefix: "/", Hostname: &config.HostnameMatch{Exact: "a.example"}}, nil),
		httpGR("none-first", nil, config.GatewayHTTPRouteMatch{Prefix: "/a"}, nil),
	), "gw")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range g.Routes {
		got = append(got, r.Name)
	}
	want := []string{"p1-host", "p1-exact", "p1-prefix", "p5", "none-long", "none-short", "none-first"}
	for i := range want {
		if i >= len(got) || got[i] != want[i] {
			t.Fatalf("order %v, want %v", got, want)
		}
	}
	rr := &Request{Authority: "A.example:80", Method: "GET", Path: "/x", Port: 80}
	if m := g.Match(80, rr); m == nil || m.Name != "p1-host" {
		t.Fatalf("Match: %v, want p1-host (hostname case-insensitive, port stripped)", m)
	}
	if m := g.Match(81, rr); m != nil {
		t.Fatalf("Match on a port without a listener: %v", m.Name)
	}
}
