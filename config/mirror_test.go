package config

import (
	"errors"
	"strings"
	"testing"
)

// mirrorMesh is a mesh with a route of the given kind whose action carries the given
// mirror block (YAML flow mapping; empty: none).
func mirrorMesh(kind, proto, mirror string) string {
	action := "{weightedTargets: [{virtualNode: v1, weight: 1}]}"
	if mirror != "" {
		action = "{weightedTargets: [{virtualNode: v1, weight: 1}], mirror: " + mirror + "}"
	}
	match := "{prefix: /}"
	if kind == "tcpRoute" {
		match = "{port: 8080}"
	} else if kind == "grpcRoute" {
		match = "{serviceName: s.S}"
	}
	return `mesh: {meshName: m}
virtualNodes:
  - virtualNodeName: web
    spec: {backends: [{virtualService: {virtualServiceName: svc.local}}]}
  - virtualNodeName: v1
    spec:
      listeners: [{portMapping: {port: 8080, protocol: ` + proto + `}}]
      serviceDiscovery: {dns: {hostname: v1.local}}
  - virtualNodeName: v2
    spec:
      listeners: [{portMapping: {port: 8080, protocol: ` + proto + `}}]
      serviceDiscovery: {dns: {hostname: v2.local}}
  - virtualNodeName: two
    spec:
      listeners: [{portMapping: {port: 8080, protocol: ` + proto + `}}, {portMapping: {port: 9090, protocol: ` + proto + `}}]
      serviceDiscovery: {dns: {hostname: two.local}}
  - virtualNodeName: nodisc
    spec:
      listeners: [{portMapping: {port: 8080, protocol: ` + proto + `}}]
virtualRouters:
  - virtualRouterName: r
    spec: {listeners: [{portMapping: {port: 8080, protocol: ` + proto + `}}]}
virtualServices:
  - virtualServiceName: svc.local
    spec: {provider: {virtualRouter: {virtualRouterName: r}}}
routes:
  - routeName: main
    virtualRouterName: r
    spec:
      ` + kind + `:
        match: ` + match + `
        action: ` + action + "\n"
}

// TestValidateMirror: the mirror extension is parsed on http, http2 and grpc routes;
// each bad value is refused at its field path with the value; tcpRoute refuses it.
func TestValidateMirror(t *testing.T) {
	for _, k := range []struct{ kind, proto string }{{"httpRoute", "http"}, {"http2Route", "http2"}, {"grpcRoute", "grpc"}} {
		c, err := Parse([]byte(mirrorMesh(k.kind, k.proto, "{virtualNode: v2, percent: 12.5}")))
		if err != nil {
			t.Fatalf("%s: %v", k.kind, err)
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("%s: valid mirror rejected:\n%v", k.kind, err)
		}
		s := c.Routes[0].Spec
		var a *RouteAction
		switch {
		case s.HTTPRoute != nil:
			a = &s.HTTPRoute.Action
		case s.HTTP2Route != nil:
			a = &s.HTTP2Route.Action
		default:
			a = &s.GRPCRoute.Action
		}
		if a.Mirror == nil || *a.Mirror != (RouteMirror{VirtualNode: "v2", Percent: 12.5}) {
			t.Errorf("%s: parsed mirror = %+v", k.kind, a.Mirror)
		}
	}
	const hp = "routes[0].spec.httpRoute.action.mirror"
	bad := []struct {
		name, kind, proto, mirror string
		path, value, msg          string
	}{
		{"percent missing", "httpRoute", "http", "{virtualNode: v2}", hp + ".percent", "0", "above 0"},
		{"percent negative", "httpRoute", "http", "{virtualNode: v2, percent: -5}", hp + ".percent", "-5", "above 0"},
		{"percent above 100", "httpRoute", "http", "{virtualNode: v2, percent: 100.5}", hp + ".percent", "100.5", "at most 100"},
		{"node missing", "httpRoute", "http", "{percent: 10}", hp + ".virtualNode", "", "is required"},
		{"node unknown", "httpRoute", "http", "{virtualNode: ghost, percent: 10}", hp + ".virtualNode", "ghost", "not defined"},
		{"port needed", "httpRoute", "http", "{virtualNode: two, percent: 10}", hp + ".port", "", "is required"},
		{"port unknown", "httpRoute", "http", "{virtualNode: two, port: 7070, percent: 10}", hp + ".port", "7070", "no listener on port 7070"},
		{"no discovery", "httpRoute", "http", "{virtualNode: nodisc, percent: 10}", "virtualNodes[4].spec.serviceDiscovery", "", hp + ".virtualNode"},
		{"tcp route", "tcpRoute", "tcp", "{virtualNode: v2, percent: 10}", "routes[0].spec.tcpRoute.action.mirror", "", "not tcpRoute"},
		{"grpc path", "grpcRoute", "grpc", "{virtualNode: v2, percent: 101}", "routes[0].spec.grpcRoute.action.mirror.percent", "101", "at most 100"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(mirrorMesh(tt.kind, tt.proto, tt.mirror)))
			if err != nil {
				t.Fatal(err)
			}
			var errs *Errors
			if err := c.Validate(); !errors.As(err, &errs) {
				t.Fatalf("Validate = %v, want *Errors", err)
			}
			for _, fe := range errs.List {
				if fe.Path == tt.path && fe.Value == tt.value && strings.Contains(fe.Msg, tt.msg) {
					return
				}
			}
			t.Fatalf("no error at %s with value %q and %q; got:\n%v", tt.path, tt.value, tt.msg, errs)
		})
	}
	// A port naming one of two listeners is accepted.
	c, err := Parse([]byte(mirrorMesh("httpRoute", "http", "{virtualNode: two, port: 9090, percent: 100}")))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("mirror to a named port rejected:\n%v", err)
	}
}
