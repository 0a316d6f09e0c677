package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func mustParseFile(t *testing.T, path string) *Config {
	t.Helper()
	c, err := ParseFile(path)
	if err != nil {
		t.Fatalf("ParseFile(%s): %v", path, err)
	}
	return c
}

func TestShopParsesAndValidates(t *testing.T) {
	y := mustParseFile(t, "testdata/shop.yaml")
	if err := y.Validate(); err != nil {
		t.Fatalf("canonical mesh must validate, got:\n%v", err)
	}
	j := mustParseFile(t, "testdata/shop.json")
	if !reflect.DeepEqual(y, j) {
		t.Fatalf("YAML and JSON forms differ:\nyaml %+v\njson %+v", y, j)
	}
	if y.Digest() != j.Digest() || len(y.Digest()) != 16 {
		t.Fatalf("digests %q and %q should be equal 16-hex strings", y.Digest(), j.Digest())
	}

	if got := y.Mesh.Spec.EgressFilter.Type; got != EgressDropAll {
		t.Errorf("egressFilter.type = %q", got)
	}
	if n := y.VirtualNode("backend-v2"); n == nil || n.Spec.Listeners[0].PortMapping.Port != 9002 {
		t.Errorf("VirtualNode(backend-v2) = %+v", n)
	}
	if y.VirtualNode("nope") != nil || y.VirtualService("nope") != nil || y.VirtualRouter("nope") != nil || y.VirtualGateway("nope") != nil {
		t.Error("lookups of undefined names must return nil")
	}
	if s := y.VirtualService("backend.shop.local"); s == nil || s.Spec.Provider.VirtualRouter.VirtualRouterName != "backend-router" {
		t.Errorf("VirtualService = %+v", s)
	}
	routes := y.RoutesFor("backend-router")
	if len(routes) != 2 || routes[0].RouteName != "canary-header" || routes[1].RouteName != "split" {
		t.Fatalf("RoutesFor in file order: %+v", routes)
	}
	if p := routes[0].Spec.Priority; p == nil || *p != 0 {
		t.Errorf("explicit priority 0 must be kept as a non-nil 0, got %v", p)
	}
	h := routes[0].Spec.HTTPRoute.Match.Headers[0]
	if h.Name != "x-canary" || h.Match.Exact != "1" {
		t.Errorf("header match = %+v", h)
	}
	wt := routes[1].Spec.HTTPRoute.Action.WeightedTargets
	if len(wt) != 2 || wt[0] != (WeightedTarget{VirtualNode: "backend-v1", Weight: 90}) {
		t.Errorf("weighted targets = %+v", wt)
	}
	if ep := y.VirtualNodes[0].Spec.ServiceDiscovery.Static.Endpoints; len(ep) != 1 || ep[0] != (StaticEndpoint{Address: "127.0.0.1:8080"}) {
		t.Errorf("static endpoints = %+v", ep)
	}

	// A changed config has a different digest.
	y.Routes[1].Spec.HTTPRoute.Action.WeightedTargets[0].Weight = 80
	if y.Digest() == j.Digest() {
		t.Error("digest did not change with the config")
	}
}

func TestParseDescribeOutput(t *testing.T) {
	c := mustParseFile(t, "testdata/describe.json")
	if c.Mesh.MeshName != "shop" || c.Mesh.Spec.EgressFilter.Type != EgressAllowAll {
		t.Errorf("mesh wrapper not unwrapped: %+v", c.Mesh)
	}
	if c.Mesh.Metadata != nil || c.Mesh.Status != nil {
		t.Errorf("metadata and status are accepted and dropped, got %v %v", c.Mesh.Metadata, c.Mesh.Status)
	}
	n := c.VirtualNode("backend")
	if n == nil || n.MeshName != "shop" || n.Spec.ServiceDiscovery.DNS.Hostname != "backend.shop.local" {
		t.Fatalf("virtualNode wrapper not unwrapped: %+v", c.VirtualNodes)
	}
	if hc := n.Spec.Listeners[0].HealthCheck; hc == nil || hc.IntervalMillis != 5000 {
		t.Errorf("healthCheck = %+v", hc)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("describe output must validate: %v", err)
	}
}

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		check func(t *testing.T, c *Config)
	}{
		{
			name: "json",
			in:   `{"mesh": {"meshName": "m", "arn": "arn:x"}, "virtualRouters": [{"virtualRouterName": "r", "meshOwner": "1", "resourceOwner": "2"}]}`,
			check: func(t *testing.T, c *Config) {
				if c.Mesh.MeshName != "m" || c.Mesh.Arn != "arn:x" || c.VirtualRouters[0].ResourceOwner != "2" {
					t.Errorf("%+v", c)
				}
			},
		},
		{
			name: "scalar and mapping endpoints",
			in: `mesh: {meshName: m}
virtualNodes:
  - virtualNodeName: n
    spec:
      serviceDiscovery:
        static:
          endpoints: ["10.0.0.1:80", {address: "10.0.0.2:80", weight: 3}, host.local]`,
			check: func(t *testing.T, c *Config) {
				want := []StaticEndpoint{{Address: "10.0.0.1:80"}, {Address: "10.0.0.2:80", Weight: 3}, {Address: "host.local"}}
				if got := c.VirtualNodes[0].Spec.ServiceDiscovery.Static.Endpoints; !reflect.DeepEqual(got, want) {
					t.Errorf("endpoints = %+v", got)
				}
			},
		},
		{
			name: "wrapped list elements of every kind",
			in: `mesh: {mesh: {meshName: m}}
virtualNodes: [{virtualNode: {virtualNodeName: n}}]
virtualServices: [{virtualService: {virtualServiceName: s}}]
virtualRouters: [{virtualRouter: {virtualRouterName: r}}]
routes: [{route: {routeName: rt, virtualRouterName: r}}]
virtualGateways: [{virtualGateway: {virtualGatewayName: g}}]
gatewayRoutes: [{gatewayRoute: {gatewayRouteName: gr, virtualGatewayName: g}}]`,
			check: func(t *testing.T, c *Config) {
				if c.Mesh.MeshName != "m" || c.VirtualNodes[0].VirtualNodeName != "n" || c.VirtualServices[0].VirtualServiceName != "s" ||
					c.VirtualRouters[0].VirtualRouterName != "r" || c.Routes[0].RouteName != "rt" ||
					c.VirtualGateways[0].VirtualGatewayName != "g" || c.GatewayRoutes[0].GatewayRouteName != "gr" {
					t.Errorf("%+v", c)
				}
			},
		},
		{
			name: "metadata and status take any shape",
			in:   "mesh: {meshName: m, metadata: [1, {a: b}], status: 7}",
			check: func(t *testing.T, c *Config) {
				if c.Mesh.MeshName != "m" {
					t.Errorf("%+v", c.Mesh)
				}
			},
		},
		{
			name: "anchors, aliases and merge keys",
			in: `mesh: {meshName: m}
virtualNodes:
  - virtualNodeName: a
    spec: &spec
      listeners: [{portMapping: {port: 80, protocol: http}}]
  - virtualNodeName: b
    spec: *spec
virtualRouters:
  - &base {virtualRouterName: r1, meshName: m}
  - <<: *base
    virtualRouterName: r2`,
			check: func(t *testing.T, c *Config) {
				if c.VirtualNodes[1].Spec.Listeners[0].PortMapping.Port != 80 {
					t.Errorf("alias not followed: %+v", c.VirtualNodes[1])
				}
				if r := c.VirtualRouters[1]; r.VirtualRouterName != "r2" || r.MeshName != "m" {
					t.Errorf("merge key: %+v", r)
				}
			},
		},
		{
			name: "null means absent",
			in:   "mesh: {meshName: m, spec: null}\nvirtualNodes: ~",
			check: func(t *testing.T, c *Config) {
				if c.VirtualNodes != nil || c.Mesh.Spec.EgressFilter != nil {
					t.Errorf("%+v", c)
				}
			},
		},
		{
			name: "integer forms and booleans",
			in: `mesh: {meshName: m}
virtualNodes:
  - virtualNodeName: n
    spec:
      listeners: [{portMapping: {port: 0x1F90, protocol: http}}]
      backends: [{virtualService: {virtualServiceName: s, clientPolicy: {tls: {enforce: false, validation: {trust: {file: {certificateChain: c}}}}}}}]`,
			check: func(t *testing.T, c *Config) {
				if p := c.VirtualNodes[0].Spec.Listeners[0].PortMapping.Port; p != 8080 {
					t.Errorf("port = %d", p)
				}
				if e := c.VirtualNodes[0].Spec.Backends[0].VirtualService.ClientPolicy.TLS.Enforce; e == nil || *e {
					t.Errorf("enforce = %v", e)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			tt.check(t, c)
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // every FieldError.Error(), in order
	}{
		{
			name: "unknown field with path, line and hint",
			in: `mesh: {meshName: m}
virtualNodes:
  - virtualNodeName: a
  - virtualNodeName: b
    spec:
      listeners:
        - portMaping: {port: 80}`,
			want: []string{"virtualNodes[1].spec.listeners[0].portMaping: unknown field; did you mean portMapping? (line 7)"},
		},
		{
			name: "unknown field without a close name",
			in:   "mesh: {meshName: m, colour: blue}",
			want: []string{"mesh.colour: unknown field (line 1)"},
		},
		{
			name: "case-only difference gets a hint",
			in:   "mesh: {MeshName: m}",
			want: []string{"mesh.MeshName: unknown field; did you mean meshName? (line 1)"},
		},
		{
			name: "unknown field in json",
			in:   "{\n  \"mesh\": {\"meshName\": \"m\"},\n  \"routes\": [{\"routeName\": \"r\", \"spec\": {\"httpRoute\": {\"match\": {\"prefx\": \"/\"}}}}]\n}",
			want: []string{"routes[0].spec.httpRoute.match.prefx: unknown field; did you mean prefix? (line 3)"},
		},
		{
			name: "wrong types name the value",
			in: `mesh: {meshName: m}
routes:
  - routeName: r
    spec:
      priority: high
  - routeName: 7
    spec: {httpRoute: {match: {prefix: [/]}}}
virtualNodes: {virtualNodeName: n}`,
			want: []string{
				`routes[0].spec.priority: cannot use "high" as an integer (line 5)`,
				`routes[1].routeName: cannot use 7 as a string; quote it (value "7", line 6)`,
				`routes[1].spec.httpRoute.match.prefix: cannot use a list as a string (line 7)`,
				`virtualNodes: cannot use a mapping as a list (line 8)`,
			},
		},
		{
			name: "float and out-of-range integers",
			in:   "mesh: {meshName: m}\nvirtualRouters: [{virtualRouterName: r, spec: {listeners: [{portMapping: {port: 80.5}}, {portMapping: {port: 99999999999999999999}}]}}]",
			want: []string{
				`virtualRouters[0].spec.listeners[0].portMapping.port: cannot use 80.5 as an integer (value "80.5", line 2)`,
				`virtualRouters[0].spec.listeners[1].portMapping.port: cannot use 99999999999999999999 as an integer (value "99999999999999999999", line 2)`,
			},
		},
		{
			name: "bad boolean",
			in:   "mesh: {meshName: m}\nvirtualNodes: [{virtualNodeName: n, spec: {backends: [{virtualService: {clientPolicy: {tls: {enforce: yes}}}}]}}]",
			want: []string{`virtualNodes[0].spec.backends[0].virtualService.clientPolicy.tls.enforce: cannot use "yes" as a boolean (true or false) (line 2)`},
		},
		{
			name: "duplicate key",
			in:   "mesh:\n  meshName: a\n  meshName: b\n",
			want: []string{"mesh.meshName: duplicate key (first at line 2) (line 3)"},
		},
		{
			name: "all errors collected",
			in: `mesh: {meshName: m, specc: {}}
virtualNodes:
  - virtualNodeName: a
    spec: {listners: []}
  - virtualNodeName: b
    spec: {listeners: [{portMapping: {port: "80"}}]}`,
			want: []string{
				"mesh.specc: unknown field; did you mean spec? (line 1)",
				"virtualNodes[0].spec.listners: unknown field; did you mean listeners? (line 4)",
				`virtualNodes[1].spec.listeners[0].portMapping.port: cannot use "80" as an integer (line 6)`,
			},
		},
		{
			name: "wrapper with another key is not a wrapper",
			in:   "mesh: {meshName: m}\nvirtualNodes: [{virtualNode: {virtualNodeName: n}, status: {}}]",
			want: []string{"virtualNodes[0].virtualNode: unknown field (line 2)"},
		},
		{
			name: "wrapper of the wrong kind",
			in:   "mesh: {meshName: m}\nvirtualNodes: [{virtualService: {virtualServiceName: s}}]",
			want: []string{"virtualNodes[0].virtualService: unknown field (line 2)"},
		},
		{
			name: "endpoint neither string nor mapping",
			in:   "mesh: {meshName: m}\nvirtualNodes: [{virtualNodeName: n, spec: {serviceDiscovery: {static: {endpoints: [[a]]}}}}]",
			want: []string{"virtualNodes[0].spec.serviceDiscovery.static.endpoints[0]: cannot use a list as a mapping (line 2)"},
		},
		{
			name: "mesh in two documents",
			in:   "mesh: {meshName: a}\n---\nmesh: {meshName: b}\n",
			want: []string{`document 2: mesh: the mesh is defined twice: here and in document 1, mesh, line 1 (value "b", line 3)`},
		},
		{
			name: "empty",
			in:   "# nothing here\n",
			want: []string{"config is empty"},
		},
		{
			name: "top level not a mapping",
			in:   "[1, 2]",
			want: []string{
				`[0]: cannot use 1 as a config document (want meshd's layout or a describe-* output such as {"virtualNode": {...}}) (value "1", line 1)`,
				`[1]: cannot use 2 as a config document (want meshd's layout or a describe-* output such as {"virtualNode": {...}}) (value "2", line 1)`,
			},
		},
		{
			name: "non-scalar key",
			in:   "mesh: {meshName: m}\n? [a]\n: b\n",
			want: []string{"mapping key must be a plain name, not a list (line 2)"},
		},
		{
			name: "syntax error",
			in:   "mesh: {meshName: m\n",
			want: []string{"yaml: line 1: did not find expected ',' or '}'"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatalf("Parse accepted it: %+v", c)
			}
			var errs *Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error is %T, want *Errors: %v", err, err)
			}
			var got []string
			for _, fe := range errs.List {
				got = append(got, fe.Error())
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("errors:\n got %q\nwant %q", got, tt.want)
			}
			if err.Error() != strings.Join(tt.want, "\n") {
				t.Errorf("Error() = %q", err.Error())
			}
		})
	}
}

func TestParseLimits(t *testing.T) {
	big := make([]byte, MaxConfigSize+1)
	if _, err := Parse(big); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("oversized input: %v", err)
	}

	// A billion-laughs style document: anchors hidden in the ignored metadata, each
	// list level repeating the alias of the level below. 100^3 listeners' names from
	// a few kilobytes must stop at the node budget instead of being built.
	rep := func(alias string) string {
		return "[" + strings.TrimSuffix(strings.Repeat(alias+", ", 100), ", ") + "]"
	}
	doc := "mesh:\n  meshName: m\n  metadata:\n" +
		"    s: &s san\n" +
		"    l: &l {portMapping: {port: 80, protocol: http}, tls: {mode: STRICT, validation: {subjectAlternativeNames: {match: {exact: " + rep("*s") + "}}}}}\n" +
		"    n: &n {virtualNodeName: n, spec: {listeners: " + rep("*l") + "}}\n" +
		"virtualNodes: " + rep("*n") + "\n"
	_, err := Parse([]byte(doc))
	if err == nil || !strings.Contains(err.Error(), "too deeply aliased") {
		t.Fatalf("alias bomb: %.300v", err)
	}

	// Errors stop at a cap.
	many := "mesh: {meshName: m}\nvirtualNodes: [" + strings.Repeat("{x: 1}, ", 500) + "]"
	_, err = Parse([]byte(many))
	var errs *Errors
	if !errors.As(err, &errs) || len(errs.List) != maxParseErrors+1 || !strings.Contains(errs.List[maxParseErrors].Msg, "too many errors") {
		t.Fatalf("error cap: %d errors", len(errs.List))
	}
}

func TestParseFile(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("mesh: {meshNme: x}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := ParseFile(bad)
	var errs *Errors
	if err == nil || !strings.Contains(err.Error(), bad) || !errors.As(err, &errs) || len(errs.List) != 1 {
		t.Fatalf("ParseFile error %v should name the file and unwrap to *Errors", err)
	}
	var fe FieldError
	if !errors.As(err, &fe) || fe.Path != "mesh.meshNme" || fe.Line != 1 {
		t.Errorf("errors.As FieldError = %+v", fe)
	}
	if _, err := ParseFile(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestFieldErrorFormat(t *testing.T) {
	tests := []struct {
		fe   FieldError
		want string
	}{
		{FieldError{Path: "a.b", Msg: "bad", Value: "x", Line: 3}, `a.b: bad (value "x", line 3)`},
		{FieldError{Path: "a.b", Msg: "bad", Value: "x"}, `a.b: bad (value "x")`},
		{FieldError{Path: "a.b", Msg: "is required"}, `a.b: is required`},
		{FieldError{Msg: "config is empty"}, `config is empty`},
		{FieldError{Path: "p", Msg: `cannot use "x" as an integer`, Value: "x", Line: 2}, `p: cannot use "x" as an integer (line 2)`},
	}
	for _, tt := range tests {
		if got := tt.fe.Error(); got != tt.want {
			t.Errorf("got %q want %q", got, tt.want)
		}
	}
}

func TestEditDistance(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{{"", "", 0}, {"abc", "", 3}, {"portmaping", "portmapping", 1}, {"kitten", "sitting", 3}, {"prefx", "prefix", 1}}
	for _, tt := range tests {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

// FuzzParse checks that Parse never panics and that whatever it accepts survives a
// round trip through encoding/json (the /config output) unchanged.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"shop.yaml", "shop.json", "describe.json"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("mesh: {meshName: m}\nvirtualNodes: [{virtualNode: {virtualNodeName: n, spec: {serviceDiscovery: {static: {endpoints: [a, {address: b, weight: 2}]}}}}}]"))
	f.Add([]byte("a: &a {meshName: m}\nmesh: {<<: *a, spec: {}}"))
	f.Add([]byte("mesh: {meshName: \"\\ud800\"}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			var errs *Errors
			if !errors.As(err, &errs) || len(errs.List) == 0 {
				t.Fatalf("error %v is not a non-empty *Errors", err)
			}
			return
		}
		_ = c.Validate() // must not panic either
		out, err := json.Marshal(c)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		c2, err := Parse(out)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", out, err)
		}
		// Where a merged input's resources were written (origins, for Validate's error
		// paths) is not part of the config, and its JSON is one document of meshd's
		// layout, which has none: a list input ("[]" found by the fuzzer) kept them.
		c.origins = nil
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip changed the config:\n%+v\n%+v", c, c2)
		}
	})
}

// largeMesh is an alias-free config with n nodes, each the target of one route.
func largeMesh(n int) []byte {
	var b strings.Builder
	b.WriteString("mesh: {meshName: big}\nvirtualRouters: [{virtualRouterName: r, spec: {listeners: [{portMapping: {port: 80, protocol: http}}]}}]\nvirtualNodes:\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  - virtualNodeName: n%d\n    spec:\n      listeners: [{portMapping: {port: 8080, protocol: http}}]\n      serviceDiscovery: {static: {endpoints: [\"10.0.%d.%d:8080\", {address: \"10.1.%d.%d:8080\", weight: 2}]}}\n", i, i/250, i%250, i/250, i%250)
	}
	b.WriteString("routes:\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  - routeName: rt%d\n    virtualRouterName: r\n    spec: {priority: %d, httpRoute: {match: {prefix: /n%d}, action: {weightedTargets: [{virtualNode: n%d, weight: 1}]}}}\n", i, i%1001, i, i)
	}
	return []byte(b.String())
}

func TestParseLargeMesh(t *testing.T) {
	c, err := Parse(largeMesh(5000))
	if err != nil {
		t.Fatalf("a large alias-free mesh must stay within the node budget: %.300v", err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("%.300v", err)
	}
	if len(c.VirtualNodes) != 5000 || len(c.RoutesFor("r")) != 5000 {
		t.Fatalf("got %d nodes, %d routes", len(c.VirtualNodes), len(c.RoutesFor("r")))
	}
}

func BenchmarkParseShop(b *testing.B) {
	data, err := os.ReadFile("testdata/shop.yaml")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseValidate1000(b *testing.B) {
	data := largeMesh(1000)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		c, err := Parse(data)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Validate(); err != nil {
			b.Fatal(err)
		}
	}
}

// TestAliasCycles: an anchor used inside itself must be an error, not a stack overflow
// (which would kill the process: Go cannot recover from one).
func TestAliasCycles(t *testing.T) {
	for name, doc := range map[string]string{
		"wrapper":      "virtualNodes:\n  - &a {virtualNode: *a}\n",
		"merge":        "mesh: &a {<<: *a}\n",
		"merge padded": "mesh: &a {<<: *a}\n" + strings.Repeat("# padding comment line to grow the visit budget\n", 12000),
		"nested":       "mesh: &a {spec: *a}\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(doc))
			if err == nil {
				t.Fatal("want an error for an alias cycle")
			}
		})
	}
}
