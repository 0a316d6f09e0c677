package router

import (
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

// httpRoute renders one httpRoute with the given match JSON and a single target "a".
func httpRoute(name, match string) string {
	return fmt.Sprintf(`{"routeName": %q, "spec": {"httpRoute": {"match": %s,
		"action": {"weightedTargets": [{"virtualNode": "a", "weight": 1}]}}}}`, name, match)
}

func grpcRoute(name, match string) string {
	return fmt.Sprintf(`{"routeName": %q, "spec": {"grpcRoute": {"match": %s,
		"action": {"weightedTargets": [{"virtualNode": "c", "weight": 1}]}}}}`, name, match)
}

type matchCase struct {
	name string
	req  Request
	want string // route name, "" = no match
}

func runMatch(t *testing.T, routes []string, cases []matchCase) {
	t.Helper()
	tb := mustCompile(t, meshWithRoutes(t, "["+strings.Join(routes, ",")+"]"), "client")
	svc := tb.Egress("svc.local", 80)
	if svc == nil {
		t.Fatal("Egress(svc.local) = nil")
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
			if got := routeName(svc.Match(&r)); got != c.want {
				t.Errorf("Match(%+v) = %q, want %q", c.req, got, c.want)
			}
		})
	}
}

func TestMatchPath(t *testing.T) {
	runMatch(t, []string{
		httpRoute("exact", `{"path": {"exact": "/exact"}}`),
		httpRoute("regex", `{"path": {"regex": "/items/[0-9]+"}}`),
		httpRoute("prefix-api", `{"prefix": "/api"}`),
	}, []matchCase{
		{"exact", Request{Path: "/exact"}, "exact"},
		{"exact ignores query", Request{Path: "/exact?x=1"}, "exact"},
		{"exact is not prefix", Request{Path: "/exact/more"}, ""},
		{"regex full match", Request{Path: "/items/42"}, "regex"},
		{"regex ignores query", Request{Path: "/items/42?q=/items/x"}, "regex"},
		{"regex anchored at end", Request{Path: "/items/42/x"}, ""},
		{"regex anchored at start", Request{Path: "/x/items/42"}, ""},
		{"prefix is a plain string prefix", Request{Path: "/apiary"}, "prefix-api"},
		{"prefix with subpath", Request{Path: "/api/v1"}, "prefix-api"},
		{"prefix not in query", Request{Path: "/x?/api"}, ""},
		{"no match", Request{Path: "/"}, ""},
	})
}

func TestMatchMethodSchemePort(t *testing.T) {
	runMatch(t, []string{
		httpRoute("post", `{"prefix": "/", "method": "POST"}`),
		httpRoute("https", `{"prefix": "/", "scheme": "https"}`),
		httpRoute("port-8081", `{"prefix": "/", "port": 8081}`),
		httpRoute("fallback", `{"prefix": "/"}`),
	}, []matchCase{
		{"method", Request{Path: "/", Method: "POST"}, "post"},
		{"method is case-sensitive", Request{Path: "/", Method: "post"}, "fallback"},
		{"scheme", Request{Path: "/", Scheme: "https"}, "https"},
		{"scheme http", Request{Path: "/", Scheme: "http"}, "fallback"},
		{"port", Request{Path: "/", Port: 8081}, "port-8081"},
		{"other port", Request{Path: "/", Port: 80}, "fallback"},
		{"unknown port", Request{Path: "/"}, "fallback"},
	})
}

func TestMatchHeaders(t *testing.T) {
	h := func(kv ...string) Request { return Request{Path: "/", Header: headers(kv)} }
	runMatch(t, []string{
		httpRoute("exact", `{"prefix": "/", "headers": [{"name": "X-Exact", "match": {"exact": "v"}}]}`),
		httpRoute("prefix", `{"prefix": "/", "headers": [{"name": "x-prefix", "match": {"prefix": "ab"}}]}`),
		httpRoute("suffix", `{"prefix": "/", "headers": [{"name": "x-suffix", "match": {"suffix": "yz"}}]}`),
		httpRoute("regex", `{"prefix": "/", "headers": [{"name": "x-regex", "match": {"regex": "v[0-9]"}}]}`),
		httpRoute("range", `{"prefix": "/", "headers": [{"name": "x-range", "match": {"range": {"start": -5, "end": 10}}}]}`),
		httpRoute("present", `{"prefix": "/", "headers": [{"name": "x-present"}]}`),
		httpRoute("not-blue", `{"prefix": "/", "headers": [{"name": "x-color", "invert": true, "match": {"exact": "blue"}}]}`),
		httpRoute("fallback", `{"prefix": "/"}`),
	}, []matchCase{
		{"exact", h("x-exact", "v", "x-color", "blue"), "exact"},
		{"exact mismatch", h("x-exact", "vv", "x-color", "blue"), "fallback"},
		{"prefix", h("x-prefix", "abc", "x-color", "blue"), "prefix"},
		{"prefix mismatch", h("x-prefix", "xab", "x-color", "blue"), "fallback"},
		{"suffix", h("x-suffix", "xyz", "x-color", "blue"), "suffix"},
		{"suffix mismatch", h("x-suffix", "yzx", "x-color", "blue"), "fallback"},
		{"regex full", h("x-regex", "v1", "x-color", "blue"), "regex"},
		{"regex not anchored-away", h("x-regex", "v12", "x-color", "blue"), "fallback"},
		{"regex not substring", h("x-regex", "av1", "x-color", "blue"), "fallback"},
		{"range start inclusive", h("x-range", "-5", "x-color", "blue"), "range"},
		{"range inside", h("x-range", "0", "x-color", "blue"), "range"},
		{"range plus sign", h("x-range", "+9", "x-color", "blue"), "range"},
		{"range end exclusive", h("x-range", "10", "x-color", "blue"), "fallback"},
		{"range below", h("x-range", "-6", "x-color", "blue"), "fallback"},
		{"range non-numeric", h("x-range", "abc", "x-color", "blue"), "fallback"},
		{"range float", h("x-range", "1.5", "x-color", "blue"), "fallback"},
		{"range empty", h("x-range", "", "x-color", "blue"), "fallback"},
		{"range space", h("x-range", " 1", "x-color", "blue"), "fallback"},
		{"range overflow", h("x-range", "99999999999999999999", "x-color", "blue"), "fallback"},
		{"present", h("x-present", "", "x-color", "blue"), "present"},
		{"invert matches other value", h("x-color", "red"), "not-blue"},
		{"invert matches absent header", h(), "not-blue"},
		{"invert with nil getter", Request{Path: "/"}, "not-blue"},
		{"invert excludes value", h("x-color", "blue"), "fallback"},
	})
}

func TestMatchHeaderInvertKinds(t *testing.T) {
	h := func(kv ...string) Request { return Request{Path: "/", Header: headers(kv)} }
	runMatch(t, []string{
		httpRoute("not-in-range", `{"prefix": "/", "headers": [{"name": "x-n", "invert": true, "match": {"range": {"start": 0, "end": 100}}}]}`),
		httpRoute("absent", `{"prefix": "/", "headers": [{"name": "x-n", "invert": true}]}`),
		httpRoute("fallback", `{"prefix": "/"}`),
	}, []matchCase{
		{"inverted range outside", h("x-n", "100"), "not-in-range"},
		{"inverted range non-numeric", h("x-n", "abc"), "not-in-range"},
		{"inverted range inside", h("x-n", "99"), "fallback"},
		{"inverted range absent", h(), "not-in-range"},
	})
	// A route requiring a header to be absent.
	runMatch(t, []string{
		httpRoute("absent", `{"prefix": "/", "headers": [{"name": "x-debug", "invert": true}]}`),
		httpRoute("fallback", `{"prefix": "/"}`),
	}, []matchCase{
		{"absent", h("x-other", "1"), "absent"},
		{"present", h("X-Debug", "1"), "fallback"},
	})
}

func TestMatchHeadersAllMustHold(t *testing.T) {
	h := func(kv ...string) Request { return Request{Path: "/", Header: headers(kv)} }
	runMatch(t, []string{
		httpRoute("both", `{"prefix": "/", "headers": [
			{"name": "a", "match": {"exact": "1"}}, {"name": "b", "match": {"exact": "2"}}]}`),
	}, []matchCase{
		{"both", h("a", "1", "b", "2"), "both"},
		{"only a", h("a", "1"), ""},
		{"only b", h("b", "2"), ""},
		{"first value of repeated header", h("a", "1", "a", "9", "b", "2"), "both"},
	})
}

func TestMatchQueryParameters(t *testing.T) {
	runMatch(t, []string{
		httpRoute("exact", `{"prefix": "/", "queryParameters": [{"name": "v", "match": {"exact": "a b"}}]}`),
		httpRoute("present", `{"prefix": "/", "queryParameters": [{"name": "debug"}]}`),
		httpRoute("encoded-name", `{"prefix": "/", "queryParameters": [{"name": "k/1", "match": {"exact": "x"}}]}`),
		httpRoute("empty-value", `{"prefix": "/", "queryParameters": [{"name": "e", "match": {"exact": ""}}]}`),
		httpRoute("fallback", `{"prefix": "/"}`),
	}, []matchCase{
		{"raw exact", Request{Path: "/p?v=a b"}, "exact"},
		{"percent-encoded value", Request{Path: "/p?x=1&v=a%20b"}, "exact"},
		{"plus as space", Request{Path: "/p?v=a+b"}, "exact"},
		{"lower-case hex in name", Request{Path: "/p?k%2f1=x"}, "encoded-name"},
		{"value mismatch", Request{Path: "/p?v=ab"}, "fallback"},
		{"decoded longer", Request{Path: "/p?v=a%20bc"}, "fallback"},
		{"malformed escape", Request{Path: "/p?v=a%2"}, "fallback"},
		{"first occurrence wins", Request{Path: "/p?v=zz&v=a+b"}, "fallback"},
		{"present without value", Request{Path: "/p?debug"}, "present"},
		{"present with value", Request{Path: "/p?a=1&&debug=0"}, "present"},
		{"name is not a value", Request{Path: "/p?x=debug"}, "fallback"},
		{"name prefix is not the name", Request{Path: "/p?debugger=1"}, "fallback"},
		{"encoded name", Request{Path: "/p?k%2F1=x"}, "encoded-name"},
		{"empty value exact", Request{Path: "/p?e="}, "empty-value"},
		{"empty value no equals", Request{Path: "/p?e"}, "empty-value"},
		{"empty value mismatch", Request{Path: "/p?e=1"}, "fallback"},
		{"no query", Request{Path: "/p"}, "fallback"},
		{"empty query", Request{Path: "/p?"}, "fallback"},
	})
}

func TestMatchGRPC(t *testing.T) {
	g := func(path string, kv ...string) Request {
		return Request{Path: path, GRPC: true, Method: "POST", Header: headers(kv)}
	}
	runMatch(t, []string{
		grpcRoute("method", `{"serviceName": "shop.Cart", "methodName": "Add"}`),
		grpcRoute("meta", `{"serviceName": "shop.Cart", "metadata": [{"name": "x-tenant", "match": {"prefix": "gold-"}}]}`),
		grpcRoute("service", `{"serviceName": "shop.Cart"}`),
		grpcRoute("port", `{"port": 50051}`),
		grpcRoute("any-grpc", `{"metadata": [{"name": "x-any"}]}`),
		httpRoute("http", `{"prefix": "/"}`),
	}, []matchCase{
		{"service and method", g("/shop.Cart/Add"), "method"},
		{"metadata", g("/shop.Cart/Remove", "x-tenant", "gold-7"), "meta"},
		{"metadata mismatch", g("/shop.Cart/Remove", "x-tenant", "silver"), "service"},
		{"method mismatch", g("/shop.Cart/Remove"), "service"},
		{"service is exact", g("/shop.CartX/Add"), "http"},
		{"service prefix of path is not enough", g("/shop.Cart"), "http"},
		{"port", g("/other.S/M"), "http"},
		{"port match", Request{Path: "/other.S/M", GRPC: true, Port: 50051}, "port"},
		{"any grpc with metadata", g("/x.Y/Z", "x-any", "1"), "any-grpc"},
		{"grpc routes need GRPC", Request{Path: "/shop.Cart/Add", Method: "POST"}, "http"},
	})
}

func TestPriorityOrder(t *testing.T) {
	prio := func(name string, p int) string {
		ps := ""
		if p >= 0 {
			ps = fmt.Sprintf(`"priority": %d,`, p)
		}
		return fmt.Sprintf(`{"routeName": %q, "spec": {%s "httpRoute": {"match": {"prefix": "/"},
			"action": {"weightedTargets": [{"virtualNode": "a", "weight": 1}]}}}}`, name, ps)
	}
	routes := []string{
		prio("none-1", -1),
		prio("p5-first", 5),
		prio("p1000", 1000),
		prio("none-2", -1),
		prio("p5-second", 5),
		prio("p0", 0),
		// A route of another router must not appear.
		`{"routeName": "elsewhere", "virtualRouterName": "unused", "spec": {"priority": 0, "httpRoute": {"match": {"prefix": "/"},
			"action": {"weightedTargets": [{"virtualNode": "a", "weight": 1}]}}}}`,
	}
	tb := mustCompile(t, meshWithRoutes(t, "["+strings.Join(routes, ",")+"]"), "client")
	var got []string
	for _, r := range tb.Egress("svc.local", 0).Routes {
		got = append(got, r.Name)
	}
	want := "p0 p5-first p5-second p1000 none-1 none-2"
	if strings.Join(got, " ") != want {
		t.Fatalf("route order = %v, want %s", got, want)
	}
	if r := tb.Egress("svc.local", 0).Match(&Request{Path: "/"}); routeName(r) != "p0" {
		t.Fatalf("Match = %q, want p0", routeName(r))
	}
}

func TestTCPRoutes(t *testing.T) {
	routes := `[
	  {"routeName": "tcp-5432", "spec": {"tcpRoute": {"match": {"port": 5432},
	    "timeout": {"idle": {"unit": "s", "value": 30}},
	    "action": {"weightedTargets": [{"virtualNode": "b", "weight": 1}]}}}},
	  {"routeName": "tcp-any", "spec": {"tcpRoute": {
	    "action": {"weightedTargets": [{"virtualNode": "a", "weight": 1}]}}}}
	]`
	svc := mustCompile(t, meshWithRoutes(t, routes), "client").Egress("svc.local", 0)
	if r := svc.Match(&Request{Path: "/"}); r != nil {
		t.Fatalf("Match returned tcp route %q", r.Name)
	}
	if r := svc.TCPRoute(); routeName(r) != "tcp-5432" || r.Kind != "tcp" || r.IdleTimeout.Seconds() != 30 {
		t.Fatalf("TCPRoute = %+v", r)
	}
	for port, want := range map[int]string{5432: "tcp-5432", 6379: "tcp-any", 0: "tcp-any"} {
		if got := routeName(svc.MatchTCP(port)); got != want {
			t.Errorf("MatchTCP(%d) = %q, want %q", port, got, want)
		}
	}
}

func TestParseInt64(t *testing.T) {
	for _, c := range []struct {
		in string
		n  int64
		ok bool
	}{
		{"0", 0, true}, {"-0", 0, true}, {"+7", 7, true}, {"123", 123, true}, {"-123", -123, true},
		{"9223372036854775807", math.MaxInt64, true}, {"9223372036854775808", 0, false},
		{"-9223372036854775808", math.MinInt64, true}, {"-9223372036854775809", 0, false},
		{"", 0, false}, {"-", 0, false}, {"+", 0, false}, {"1a", 0, false}, {" 1", 0, false},
		{"1 ", 0, false}, {"0x10", 0, false}, {"1e3", 0, false}, {"--1", 0, false},
	} {
		n, ok := parseInt64(c.in)
		if n != c.n || ok != c.ok {
			t.Errorf("parseInt64(%q) = %d, %v; want %d, %v", c.in, n, ok, c.n, c.ok)
		}
	}
}

// FuzzParseInt64 checks the allocation-free parser against strconv, whose base-10
// grammar (optional sign, digits, no spaces) is the one range matching documents.
func FuzzParseInt64(f *testing.F) {
	for _, s := range []string{"0", "-1", "+5", "9223372036854775807", "-9223372036854775808", "x", "1_0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, ok := parseInt64(s)
		ref, err := strconv.ParseInt(s, 10, 64)
		if ok != (err == nil) || (ok && n != ref) {
			t.Fatalf("parseInt64(%q) = %d, %v; strconv: %d, %v", s, n, ok, ref, err)
		}
	})
}

// FuzzQueryEqual checks the allocation-free comparison against net/url's decoding.
func FuzzQueryEqual(f *testing.F) {
	for _, s := range [][2]string{{"a%20b", "a b"}, {"a+b", "a b"}, {"%zz", "%zz"}, {"%4", ""}, {"x", "x"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, raw, want string) {
		dec, err := url.QueryUnescape(raw)
		expect := raw == want || (err == nil && dec == want)
		if got := queryEqual(raw, want); got != expect {
			t.Fatalf("queryEqual(%q, %q) = %v; want %v (QueryUnescape: %q, %v)", raw, want, got, expect, dec, err)
		}
	})
}
