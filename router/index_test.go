package router

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/internal/meshgen"
)

// TestIndexMatchesScan: on random routers (nested and repeated prefixes, exact and
// regex paths, methods, headers, priorities, gRPC routes) the index picks the route a
// scan of every route picks, for random requests.
func TestIndexMatchesScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 3))
	segs := []string{"/", "/a", "/a/", "/a/b", "/ab", "/b", "/b/c/d", "/api/v1/", "/api/v1/users", "/api"}
	pathOf := func() string {
		s := segs[rng.IntN(len(segs))]
		if rng.IntN(2) == 0 {
			s += strconv.Itoa(rng.IntN(4))
		}
		return s
	}
	indexed := 0
	for round := range 200 {
		var rs []string
		n := 1 + rng.IntN(40)
		for i := range n {
			name := fmt.Sprintf("r%d", i)
			prio := ""
			if rng.IntN(3) > 0 {
				prio = fmt.Sprintf(`"priority": %d, `, rng.IntN(5))
			}
			var match string
			switch rng.IntN(10) {
			case 0:
				match = fmt.Sprintf(`{"path": {"exact": %q}}`, pathOf())
			case 1:
				match = `{"path": {"regex": "/a.*"}}`
			case 2:
				match = fmt.Sprintf(`{"prefix": %q, "method": "POST"}`, pathOf())
			case 3:
				match = fmt.Sprintf(`{"prefix": %q, "headers": [{"name": "x-v", "match": {"exact": "%d"}}]}`, pathOf(), rng.IntN(3))
			case 4:
				rs = append(rs, strings.Replace(grpcRoute(name, `{"serviceName": "pkg.Svc"}`), `"spec": {`, `"spec": {`+prio, 1))
				continue
			default:
				match = fmt.Sprintf(`{"prefix": %q}`, pathOf())
			}
			rs = append(rs, strings.Replace(httpRoute(name, match), `"spec": {`, `"spec": {`+prio, 1))
		}
		svc := mustCompile(t, meshWithRoutes(t, "["+strings.Join(rs, ",")+"]"), "client").Egress("svc.local", 80)
		if svc.idx != nil {
			indexed++
		}
		for range 200 {
			r := Request{Method: []string{"GET", "POST"}[rng.IntN(2)], Path: pathOf() + []string{"", "x", "/y?q=1"}[rng.IntN(3)],
				GRPC: rng.IntN(5) == 0, Header: headers{"x-v", strconv.Itoa(rng.IntN(3))}}
			if r.GRPC {
				r.Path = "/pkg.Svc/Call"
			}
			path, query := splitQuery(r.Path)
			if got, want := svc.Match(&r), matchScan(svc.Routes, &r, path, query); got != want {
				t.Fatalf("round %d, %+v: index matched %q, a scan %q\nroutes: %s", round, r, routeName(got), routeName(want), strings.Join(rs, ",\n"))
			}
		}
	}
	if indexed < 100 {
		t.Fatalf("only %d of 200 routers were indexed", indexed)
	}
}

// TestIndexManyLengths: a path that hits more prefix lengths than the merge holds on
// the stack is scanned, with the same answer.
func TestIndexManyLengths(t *testing.T) {
	var rs []string
	p := ""
	for i := range maxIndexLists + 4 {
		p += "/" + strconv.Itoa(i)
		rs = append(rs, httpRoute(fmt.Sprintf("r%d", i), fmt.Sprintf(`{"prefix": %q, "method": "PUT"}`, p)))
	}
	rs = append(rs, httpRoute("root", `{"prefix": "/0"}`))
	svc := mustCompile(t, meshWithRoutes(t, "["+strings.Join(rs, ",")+"]"), "client").Egress("svc.local", 80)
	if svc.idx == nil {
		t.Fatal("not indexed")
	}
	for _, c := range []struct{ method, path, want string }{
		{"GET", p + "/x", "root"},
		{"PUT", p + "/x", "r0"},
		{"PUT", "/0/1/2", "r0"},
		{"GET", "/1", ""},
	} {
		if got := svc.Match(&Request{Method: c.method, Path: c.path}); routeName(got) != c.want {
			t.Errorf("%s %s: matched %q, want %q", c.method, c.path, routeName(got), c.want)
		}
	}
}

// scaleTable compiles a meshgen mesh of routers × perRouter routes for its client node.
func scaleTable(t testing.TB, routers, perRouter int) *Table {
	t.Helper()
	c, err := config.Parse(meshgen.Spec{Routers: routers, RoutesPerRouter: perRouter}.JSON())
	if err != nil {
		t.Fatal(err)
	}
	return mustCompile(t, c, "front")
}

func scaleRequest(i int) Request {
	return Request{Method: "GET", Path: meshgen.Prefix(i) + "item?id=1", Header: headers{meshgen.HeaderName, meshgen.HeaderValue(i)}}
}

func TestMatchScaleAllocs(t *testing.T) {
	tb := scaleTable(t, 1, 1000)
	svc := tb.Egress(meshgen.Service(0), 80)
	for _, i := range []int{0, 500, 999} {
		req := scaleRequest(i)
		var got *Route
		if allocs := testing.AllocsPerRun(100, func() { got = svc.Match(&req) }); allocs != 0 {
			t.Fatalf("Match allocated %v times", allocs)
		}
		if routeName(got) != meshgen.RouteName(0, i) {
			t.Fatalf("route %d: matched %q", i, routeName(got))
		}
	}
	miss := Request{Method: "GET", Path: "/p1/", Header: headers{meshgen.HeaderName, "v2"}}
	if got := svc.Match(&miss); got != nil {
		t.Fatalf("matched %q, want none", got.Name)
	}
}

// BenchmarkMatchScale: a request for the first and the last route of one router of N
// routes (prefix + header each), and one that matches none: with the index, ns/op does
// not grow with N. The mesh shape of issue 17 (100 routers, N/100 routes each) is
// "mesh".
func BenchmarkMatchScale(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		one := scaleTable(b, 1, n).Egress(meshgen.Service(0), 80)
		mesh := scaleTable(b, 100, n/100)
		last := mesh.Egress(meshgen.Service(99), 80)
		for _, c := range []struct {
			name string
			svc  *Service
			req  Request
			want string
		}{
			{"first", one, scaleRequest(0), meshgen.RouteName(0, 0)},
			{"last", one, scaleRequest(n - 1), meshgen.RouteName(0, n-1)},
			{"none", one, Request{Method: "GET", Path: "/none/", Header: headers{meshgen.HeaderName, "v0"}}, ""},
			{"mesh-last", last, scaleRequest(n/100 - 1), meshgen.RouteName(99, n/100-1)},
		} {
			b.Run(fmt.Sprintf("routes=%d/%s", n, c.name), func(b *testing.B) {
				if got := routeName(c.svc.Match(&c.req)); got != c.want {
					b.Fatalf("matched %q, want %q", got, c.want)
				}
				b.ReportAllocs()
				for b.Loop() {
					c.svc.Match(&c.req)
				}
			})
		}
	}
}
