package router

import (
	"strings"
	"testing"
)

func TestExplain(t *testing.T) {
	routes := []string{
		httpRoute("exact", `{"path": {"exact": "/exact"}}`),
		httpRoute("regex", `{"path": {"regex": "/items/[0-9]+"}}`),
		httpRoute("post", `{"prefix": "/", "method": "POST"}`),
		httpRoute("https", `{"prefix": "/", "scheme": "https"}`),
		httpRoute("port", `{"prefix": "/", "port": 8081}`),
		httpRoute("canary", `{"prefix": "/api", "headers": [{"name": "X-Canary", "match": {"exact": "1"}}]}`),
		httpRoute("not-blue", `{"prefix": "/api", "headers": [{"name": "x-color", "invert": true, "match": {"exact": "blue"}}]}`),
		httpRoute("query", `{"prefix": "/q", "queryParameters": [{"name": "v", "match": {"exact": "2"}}]}`),
		grpcRoute("grpc", `{"serviceName": "shop.Cart"}`),
		httpRoute("fallback", `{"prefix": "/f"}`),
	}
	tb := mustCompile(t, meshWithRoutes(t, "["+strings.Join(routes, ",")+"]"), "client")
	svc := tb.Egress("svc.local", 80)
	cases := []struct {
		name    string
		req     Request
		matched string
		reasons map[string]string // route -> substring of its reason
	}{
		{"exact", Request{Path: "/exact"}, "exact", nil},
		{"nothing", Request{Path: "/zzz", Header: headers{"x-color", "blue"}}, "", map[string]string{
			"exact":    `path "/zzz" is not exactly "/exact"`,
			"regex":    `path "/zzz" does not match regex`,
			"post":     "method GET is not POST",
			"https":    "scheme http is not https",
			"port":     "port 0 is not 8081",
			"canary":   `path "/zzz" does not start with prefix "/api"`,
			"query":    `does not start with prefix "/q"`,
			"grpc":     "request is not gRPC",
			"fallback": `prefix "/f"`,
		}},
		{"header", Request{Path: "/api/x", Header: headers{"x-canary", "2", "x-color", "blue"}}, "", map[string]string{
			"canary":   `header "x-canary": value "2", want exactly "1"`,
			"not-blue": `header "x-color": value "blue" matches exactly "blue" and the match is inverted`,
		}},
		{"header absent", Request{Path: "/api/x"}, "not-blue", map[string]string{
			"canary": `header "x-canary": absent`,
		}},
		{"query", Request{Path: "/q?v=3"}, "", map[string]string{
			"query": `query parameter "v": absent or not "2"`,
		}},
		{"grpc service", Request{Path: "/shop.Other/Get", GRPC: true, Method: "POST"}, "post", nil},
		{"grpc", Request{Path: "/shop.Cart/Add", GRPC: true, Method: "PUT"}, "grpc", nil},
		{"grpc wrong service", Request{Path: "/shop.Other/Add", GRPC: true, Method: "PUT"}, "", map[string]string{
			"grpc": `serviceName "shop.Other" is not "shop.Cart"`,
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := c.req
			if r.Method == "" {
				r.Method = "GET"
			}
			if r.Scheme == "" {
				r.Scheme = "http"
			}
			checks := svc.Explain(&r)
			if got := routeName(svc.Match(&r)); got != c.matched {
				t.Fatalf("Match = %q, want %q (test case wrong)", got, c.matched)
			}
			last := checks[len(checks)-1]
			if c.matched != "" {
				if !last.Matched || last.Route != c.matched || last.Reason != "" {
					t.Fatalf("last check %+v, want a match of %q", last, c.matched)
				}
			} else if len(checks) != len(svc.Routes) || last.Matched {
				t.Fatalf("no match expected, got %+v", checks)
			}
			for _, ch := range checks[:len(checks)-1] {
				if ch.Matched || ch.Reason == "" {
					t.Errorf("route before the match: %+v", ch)
				}
			}
			for _, ch := range checks {
				if want, ok := c.reasons[ch.Route]; ok && !strings.Contains(ch.Reason, want) {
					t.Errorf("route %s: reason %q, want it to contain %q", ch.Route, ch.Reason, want)
				}
			}
		})
	}
}

// TestExplainAgreesWithMatch checks, over many generated requests, that Explain's
// matched route is always the one Match picks.
func TestExplainAgreesWithMatch(t *testing.T) {
	tb := mustCompile(t, loadConfig(t, "../config/testdata/shop.json"), "frontend")
	paths := []string{"/", "/api", "/api/v1/items/3", "/cart", "/x?y=1", "/shop.Cart/Add"}
	methods := []string{"GET", "POST", "PUT"}
	hdrs := []headers{nil, {"x-canary", "1"}, {"x-canary", "0"}, {"x-user", "beta-7"}, {"content-type", "application/grpc"}}
	n := 0
	for _, svc := range tb.Services() {
		for _, p := range paths {
			for _, m := range methods {
				for _, h := range hdrs {
					for _, grpc := range []bool{false, true} {
						r := Request{Path: p, Method: m, Scheme: "http", Header: h, GRPC: grpc}
						want := routeName(svc.Match(&r))
						checks := svc.Explain(&r)
						got := ""
						if len(checks) > 0 && checks[len(checks)-1].Matched {
							got = checks[len(checks)-1].Route
						}
						if got != want {
							t.Fatalf("%s %+v: Explain matched %q, Match %q", svc.Name, r, got, want)
						}
						n++
					}
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("shop.json has no egress services for frontend")
	}
}
