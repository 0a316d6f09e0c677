package router

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/meshd/meshd/config"
)

// bigMesh is baseMesh with a 20-route router: 17 prefix routes that also need a header,
// a regex path route, a query/range route and a catch-all.
func bigMesh(t testing.TB) *config.Config {
	t.Helper()
	var rs []string
	for i := range 17 {
		rs = append(rs, httpRoute(fmt.Sprintf("r%d", i),
			fmt.Sprintf(`{"prefix": "/r%d/", "method": "GET", "headers": [{"name": "x-user", "match": {"regex": "[0-9]+"}},
				{"name": "x-block", "invert": true}]}`, i)))
	}
	rs = append(rs,
		httpRoute("regex", `{"path": {"regex": "/items/[a-z]+/[0-9]{1,6}"}, "scheme": "http"}`),
		httpRoute("query", `{"prefix": "/q", "queryParameters": [{"name": "v", "match": {"exact": "a b"}}],
			"headers": [{"name": "x-tier", "match": {"range": {"start": 1, "end": 4}}}]}`),
		httpRoute("catch-all", `{"prefix": "/"}`),
	)
	return meshWithRoutes(t, "["+strings.Join(rs, ",")+"]")
}

func TestMatchAllocs(t *testing.T) {
	shop := mustCompile(t, loadConfig(t, "testdata/shop.json"), "frontend")
	big := mustCompile(t, bigMesh(t), "client")
	for _, c := range []struct {
		name string
		tb   *Table
		host string
		req  Request
		want string
	}{
		{"shop header", shop, "backend.shop.local", Request{Method: "GET", Path: "/cart", Header: headers{"x-canary", "1"}}, "canary-header"},
		{"shop no header", shop, "backend.shop.local", Request{Method: "GET", Path: "/cart"}, "split"},
		{"big first", big, "svc.local", Request{Method: "GET", Path: "/r0/a", Header: headers{"x-user", "12"}}, "r0"},
		{"big regex", big, "svc.local", Request{Method: "GET", Scheme: "http", Path: "/items/shoe/123?x=1", Header: headers{"x-user", "no"}}, "regex"},
		{"big query", big, "svc.local", Request{Method: "GET", Path: "/q?z=1&v=a%20b", Header: headers{"x-tier", "3"}}, "query"},
		{"big last", big, "svc.local", Request{Method: "GET", Path: "/zzz", Header: headers{"x-user", "12"}}, "catch-all"},
		{"upper-case host", big, "SVC.LOCAL.", Request{Method: "GET", Path: "/zzz"}, "catch-all"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got *Route
			allocs := testing.AllocsPerRun(200, func() {
				got = c.tb.Egress(c.host, 80).Match(&c.req)
				_ = got.PickTarget(12345)
			})
			if routeName(got) != c.want {
				t.Fatalf("matched %q, want %q", routeName(got), c.want)
			}
			if allocs != 0 {
				t.Fatalf("Egress+Match+PickTarget allocated %v times per run", allocs)
			}
		})
	}
}

func BenchmarkMatch(b *testing.B) {
	shop := mustCompile(b, loadConfig(b, "testdata/shop.json"), "frontend").Egress("backend.shop.local", 80)
	big := mustCompile(b, bigMesh(b), "client").Egress("svc.local", 80)
	for _, c := range []struct {
		name string
		svc  *Service
		req  Request
	}{
		{"shop/header", shop, Request{Method: "GET", Path: "/cart?id=1", Header: headers{"x-canary", "1"}}},
		{"shop/no-header", shop, Request{Method: "GET", Path: "/cart?id=1", Header: headers{"accept", "*/*"}}},
		{"20routes/first", big, Request{Method: "GET", Path: "/r0/a", Header: headers{"x-user", "12"}}},
		{"20routes/regex", big, Request{Method: "GET", Scheme: "http", Path: "/items/shoe/123", Header: headers{"x-user", "no"}}},
		{"20routes/query", big, Request{Method: "GET", Path: "/q?z=1&v=a%20b", Header: headers{"x-tier", "3"}}},
		{"20routes/last", big, Request{Method: "GET", Path: "/zzz", Header: headers{"x-user", "12"}}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if c.svc.Match(&c.req) == nil {
					b.Fatal("no match")
				}
			}
		})
	}
}

func BenchmarkEgress(b *testing.B) {
	tb := mustCompile(b, bigMesh(b), "client")
	for _, host := range []string{"svc.local", "SVC.Local."} {
		b.Run(host, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if tb.Egress(host, 80) == nil {
					b.Fatal("no service")
				}
			}
		})
	}
}

func BenchmarkPickTarget(b *testing.B) {
	rt := mustCompile(b, loadConfig(b, "testdata/shop.json"), "frontend").Egress("backend.shop.local", 80).
		Match(&Request{Path: "/"})
	rng := rand.New(rand.NewPCG(1, 2))
	b.ReportAllocs()
	for b.Loop() {
		if rt.PickTarget(rng.Uint64()) == nil {
			b.Fatal("no target")
		}
	}
}
