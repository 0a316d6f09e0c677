package config

import (
	"strings"
	"testing"
)

// TestValidateGatewayRewrite: a gateway route's rewrite must fit its match, with the
// field and value named.
func TestValidateGatewayRewrite(t *testing.T) {
	for _, tt := range []struct {
		name      string
		mut       func(h *GatewayHTTPRoute)
		path, msg string
	}{
		{"prefix rewrite on a path match", func(h *GatewayHTTPRoute) {
			h.Match = GatewayHTTPRouteMatch{Path: &PathMatch{Exact: "/a"}}
			h.Action.Rewrite = &GatewayHTTPRewrite{Prefix: &GatewayPrefixRewrite{Value: "/b/"}}
		}, "gatewayRoutes[0].spec.httpRoute.action.rewrite.prefix", "needs match.prefix"},
		{"path rewrite on a prefix match", func(h *GatewayHTTPRoute) {
			h.Action.Rewrite = &GatewayHTTPRewrite{Path: &GatewayPathRewrite{Exact: "/b"}}
		}, "gatewayRoutes[0].spec.httpRoute.action.rewrite.path.exact", `a path rewrite needs match.path (value "/b")`},
		{"value and DISABLED", func(h *GatewayHTTPRoute) {
			h.Action.Rewrite = &GatewayHTTPRewrite{Prefix: &GatewayPrefixRewrite{Value: "/b/", DefaultPrefix: "DISABLED"}}
		}, "gatewayRoutes[0].spec.httpRoute.action.rewrite.prefix", "set one of value and defaultPrefix DISABLED"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := shop(t)
			addGateway(c)
			tt.mut(c.GatewayRoutes[0].Spec.HTTPRoute)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.path) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("Validate: %v, want an error at %s saying %q", err, tt.path, tt.msg)
			}
		})
	}
	c := shop(t)
	addGateway(c)
	c.GatewayRoutes[0].Spec.HTTPRoute.Action.Rewrite = &GatewayHTTPRewrite{Prefix: &GatewayPrefixRewrite{Value: "/v2/"},
		Hostname: &GatewayHostnameRewrite{DefaultTargetHostname: "DISABLED"}}
	if err := c.Validate(); err != nil {
		t.Fatalf("a prefix value on a prefix match: %v", err)
	}
}
