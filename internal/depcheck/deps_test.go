// Package depcheck keeps the package dependency rule of docs/ARCHITECTURE.md true, the
// way the Go tree's go/build/deps_test.go does for the standard library. It runs
// `go list` over the module and checks every import of every meshd package against
// that package's row in the rules table below:
//
//   - Every package `go list ./...` reports has a row of its own, keyed by its import
//     path relative to the module (proxy/forward is not proxy), and every row names a
//     package that exists.
//   - Non-test code (.Imports) may import the standard library (a path whose first
//     element has no dot), the meshd packages in its row's deps, and the third-party
//     modules in its row's mods. A third-party import belongs to the module from
//     `go list -m all` whose path is its longest prefix.
//   - Test code (.TestImports and .XTestImports) may import all of that, the package
//     itself (external tests), the row's test extras, and, in every package, the test
//     helpers internal/testutil and internal/netnstest and the test-only modules in
//     testModules (goleak, gRPC, x/net).
//   - The rows are in layered order: a row's deps and test extras name only rows above
//     it, so lower rows never import higher rows. cmd/meshd and cmd/meshbench are
//     composition roots and may import any meshd package ("*").
//
// TestArchitectureRules additionally asserts, by name, the rules the docs state in
// prose, against both the table and the meshd-to-meshd imports go list reports (code
// and tests): router and balancer never import each other; no front end (proxy/http1,
// proxy/http2, proxy/l4) imports another; nothing under proxy/ but package proxy
// imports proxy/admin; no package imports a meshd package with "_test" in its path or
// one under cmd/.
//
// When a test here fails because an import is new and intended, add it to the
// package's row here and to the table in docs/ARCHITECTURE.md, in the same commit.
package depcheck

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
)

const module = "github.com/meshd/meshd"

// A rule is one row of the dependency table. deps, mods and test are space-separated
// lists: meshd packages (relative to the module; "*" for any), third-party module
// paths, and extra meshd packages or modules that only the package's _test.go files may
// import. A name whose first element has a dot is a module, any other a meshd package.
type rule struct {
	pkg, deps, mods, test string
}

// rules is the dependency table, in layered order: a row may only depend on rows above
// it. It allows exactly the imports in use, so a new edge is a decision made here and in
// docs/ARCHITECTURE.md, not an accident.
var rules = []rule{
	// internal/meshgen: mesh configs of a chosen size (issue 17's scale shape), for the
	// tests and benchmarks of config, router and proxy/state, and for meshbench --scale.
	{pkg: "internal/meshgen"},
	{pkg: "telemetry"},
	// telemetry/accesslog: App Mesh access log formats and the file writer.
	{pkg: "telemetry/accesslog", deps: "telemetry"},
	// telemetry/tracing: the telemetry.Tracer on OpenTelemetry (SDK, OTLP exporters over
	// gRPC and HTTP). Only cmd/meshd constructs it; the data plane sees telemetry.Tracer.
	{pkg: "telemetry/tracing", deps: "telemetry", mods: "go.opentelemetry.io/otel go.opentelemetry.io/otel/sdk go.opentelemetry.io/otel/trace " +
		"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"},
	{pkg: "config", deps: "telemetry telemetry/accesslog", mods: "github.com/fsnotify/fsnotify go.yaml.in/yaml/v3", test: "internal/meshgen"},
	{pkg: "resilience", deps: "telemetry", mods: "github.com/sony/gobreaker/v2"},
	// tls (package meshtls): the mesh CA, certificate sources (files watched with
	// fsnotify; SDS from a SPIFFE Workload API with go-spiffe) and the crypto/tls configs
	// built from the config model. Its tests serve the Workload API with grpc and
	// go-spiffe's generated protos.
	{pkg: "tls", deps: "config telemetry", mods: "github.com/fsnotify/fsnotify github.com/spiffe/go-spiffe/v2"},
	// discovery/dnstest (test-only): the in-process DNS server for the tests of discovery
	// (and of any package whose row lists it among its test extras).
	{pkg: "discovery/dnstest", mods: "github.com/miekg/dns"},
	// discovery: the DNS client (Client) speaks DNS with miekg/dns; its tests run dnstest.
	{pkg: "discovery", deps: "config", mods: "github.com/miekg/dns", test: "discovery/dnstest"},
	{pkg: "router", deps: "config", test: "internal/meshgen"},
	{pkg: "balancer", deps: "discovery resilience"},
	{pkg: "internal/h1"},
	// internal/reqctx: the request path's context (stream and attempt cancellation
	// without maps, shared locks or allocations).
	{pkg: "internal/reqctx"},
	// internal/canary: `meshd canary`'s logic (weights edited in the YAML node tree,
	// the sidecars' Prometheus expositions read, each step judged).
	{pkg: "internal/canary", deps: "config", mods: "go.yaml.in/yaml/v3 github.com/prometheus/common github.com/prometheus/client_model"},
	// internal/h2: meshd's HTTP/2 on x/net/http2's Framer and hpack (and httpguts).
	// internal/rawio: socket reads and writes without entersyscall (no sysmon wake-ups).
	{pkg: "internal/rawio"},
	{pkg: "internal/h2", deps: "internal/rawio internal/reqctx", mods: "golang.org/x/net", test: "internal/h1"},
	{pkg: "proxy/internal/deadline"},
	{pkg: "proxy/intercept", mods: "golang.org/x/sys"},
	// proxy/upstream: gRPC for active health checks; tls for the handshake counters of
	// the clusters that originate TLS (meshtls.HandshakeStats).
	{pkg: "proxy/upstream", deps: "balancer config discovery internal/h1 internal/h2 internal/rawio internal/reqctx proxy/internal/deadline resilience router telemetry tls", mods: "google.golang.org/grpc"},
	{pkg: "proxy/state", deps: "config discovery proxy/upstream resilience router telemetry tls", test: "internal/meshgen"},
	{pkg: "proxy/forward", deps: "balancer config discovery internal/h1 internal/reqctx proxy/state proxy/upstream resilience router telemetry", mods: "golang.org/x/net"},
	{pkg: "proxy/listen", deps: "internal/rawio proxy/intercept proxy/internal/deadline", mods: "golang.org/x/sys"},
	// The front ends (frontEnds): they share forward, listen, state and upstream but never import each other.
	{pkg: "proxy/http1", deps: "balancer internal/h1 proxy/forward proxy/internal/deadline proxy/listen proxy/state proxy/upstream router telemetry", mods: "golang.org/x/net"},
	{pkg: "proxy/http2", deps: "balancer internal/h2 proxy/forward proxy/listen proxy/upstream router telemetry"},
	{pkg: "proxy/l4", deps: "balancer config proxy/forward proxy/listen proxy/state proxy/upstream router", mods: "golang.org/x/sys"},
	// proxy/admin: client_golang for the Prometheus exposition (/stats/prometheus); tls for
	// the handshake counters and the certificate sources' stats.
	{pkg: "proxy/admin", deps: "balancer config discovery internal/h2 proxy/forward proxy/l4 proxy/state proxy/upstream resilience router telemetry tls", mods: "github.com/prometheus/client_golang"},
	// proxy: the netns tests install the interception rules; the metrics tests parse the
	// Prometheus text format (prometheus/common's expfmt into client_model's types); the
	// tracing tests run meshd with a telemetry/tracing Tracer exporting to memory (the SDK's
	// tracetest) or to an OTLP/HTTP receiver that decodes the protobuf.
	{pkg: "proxy", deps: "config discovery internal/h2 internal/rawio proxy/admin proxy/forward proxy/http1 proxy/http2 proxy/l4 proxy/listen proxy/state proxy/upstream resilience telemetry telemetry/accesslog tls", test: "discovery/dnstest proxy/intercept telemetry/tracing github.com/miekg/dns github.com/prometheus/client_model github.com/prometheus/common " +
		"go.opentelemetry.io/otel/sdk go.opentelemetry.io/otel/trace go.opentelemetry.io/proto/otlp google.golang.org/protobuf"},
	// bench: the proxy's HTTP/1.1 codec, so both parse responses alike; x/net's http2
	// Framer and hpack for the multiplexed h2c load generator; a grpc-go client (with
	// protobuf's BytesValue as the message) for gRPC load; the tls package's mesh CA
	// for the certificates of the TLS-hop scenarios.
	{pkg: "bench", deps: "internal/h1 internal/meshgen tls", mods: "golang.org/x/net golang.org/x/sys gonum.org/v1/plot google.golang.org/grpc google.golang.org/protobuf"},
	// Test-only packages: only test code imports them (and internal/testutil imports netnstest).
	{pkg: "internal/netnstest", mods: "golang.org/x/sys"},
	{pkg: "internal/testutil", deps: "config internal/netnstest proxy", mods: "google.golang.org/grpc"},
	{pkg: "internal/depcheck"},
	// Composition roots.
	{pkg: "cmd/meshbench", deps: "*", mods: "golang.org/x/sys"},
	// cmd/meshd: meshd import reads CloudFormation templates with their YAML tags (!Ref,
	// !Sub, ...) and writes the mesh file with yaml/v3; the deploy tests parse the
	// Kubernetes manifests.
	{pkg: "cmd/meshd", deps: "*", mods: "go.yaml.in/yaml/v3", test: "sigs.k8s.io/yaml"},
}

// Test code in every package may also import these.
var (
	testPackages = []string{"internal/testutil", "internal/netnstest"}
	testModules  = []string{"go.uber.org/goleak", "google.golang.org/grpc", "golang.org/x/net"}
)

// frontEnds serve downstream connections; each is a peer of the others, never a user.
var frontEnds = []string{"proxy/http1", "proxy/http2", "proxy/l4"}

type pkg struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

// rel is path relative to the module, and whether path is in the module at all.
func rel(path string) (string, bool) {
	if path == module {
		return ".", true
	}
	if r, ok := strings.CutPrefix(path, module+"/"); ok {
		return r, true
	}
	return "", false
}

// isStd reports whether path is a standard library import: no dot in its first element.
func isStd(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".")
}

// isPackageName reports whether a name in a row's lists is a meshd package (relative to
// the module) rather than "*" or a module path.
func isPackageName(name string) bool {
	return name != "*" && isStd(name)
}

type graph struct {
	pkgs    []pkg
	modules []string // from go list -m all, longest first
}

// moduleOf returns the module of a third-party import path: the longest module path
// that is the import path or a prefix of it ending at a path element.
func (g *graph) moduleOf(path string) (string, bool) {
	for _, m := range g.modules {
		if path == m || strings.HasPrefix(path, m+"/") {
			return m, true
		}
	}
	return "", false
}

var load = sync.OnceValues(func() (*graph, error) {
	// -pgo=off: with cmd/meshd/default.pgo, go list reports the packages built for the
	// profile as variants ("bufio [github.com/meshd/meshd/cmd/meshd]"); the rule is about
	// the source's imports, which the profile does not change.
	out, err := goCmd("list", "-pgo=off", "-json=ImportPath,Imports,TestImports,XTestImports", module+"/...")
	if err != nil {
		return nil, err
	}
	g := new(graph)
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("decode go list output: %v", err)
		}
		g.pkgs = append(g.pkgs, p)
	}
	if len(g.pkgs) < 5 {
		return nil, fmt.Errorf("go list reported only %d packages; the test is not looking at the module", len(g.pkgs))
	}
	mods, err := goCmd("list", "-m", "-f", "{{.Path}}", "all")
	if err != nil {
		return nil, err
	}
	for _, m := range strings.Fields(string(mods)) {
		if m != module {
			g.modules = append(g.modules, m)
		}
	}
	sort.Slice(g.modules, func(i, j int) bool { return len(g.modules[i]) > len(g.modules[j]) })
	return g, nil
})

func goCmd(args ...string) ([]byte, error) {
	out, err := exec.Command("go", args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, ee.Stderr)
		}
		return nil, fmt.Errorf("go %s: %v", strings.Join(args, " "), err)
	}
	return out, nil
}

func loadGraph(t *testing.T) *graph {
	t.Helper()
	g, err := load()
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// table indexes rules by package, checking that the table is well formed: one row per
// package, rows in layered order, known modules.
func table(t *testing.T, g *graph) map[string]rule {
	t.Helper()
	rows := make(map[string]rule)
	for _, r := range rules {
		if _, dup := rows[r.pkg]; dup {
			t.Errorf("rules: %s has two rows", r.pkg)
		}
		for _, d := range append(strings.Fields(r.deps), strings.Fields(r.test)...) {
			if !isPackageName(d) {
				continue // "*", or a module (checked below)
			}
			if _, above := rows[d]; !above {
				t.Errorf("rules: %s lists %s, which has no row above it (rows are in layered order: lower rows never import higher rows)", r.pkg, d)
			}
		}
		for _, m := range strings.Fields(r.mods) {
			if isPackageName(m) || m == "*" {
				t.Errorf("rules: %s lists %s among its modules, which is not a module path", r.pkg, m)
			}
		}
		for _, m := range append(strings.Fields(r.mods), strings.Fields(r.test)...) {
			if isPackageName(m) || m == "*" {
				continue
			}
			if got, ok := g.moduleOf(m); !ok || got != m {
				t.Errorf("rules: %s lists %s, which is not a module in go list -m all", r.pkg, m)
			}
		}
		rows[r.pkg] = r
	}
	return rows
}

// allows reports whether code in row r may import path; test selects the test rule.
func (g *graph) allows(r rule, path string, test bool) bool {
	if isStd(path) {
		return true
	}
	if to, ok := rel(path); ok {
		if to == r.pkg && test {
			return true // an external test imports the package it tests
		}
		deps := strings.Fields(r.deps)
		if slices.Contains(deps, "*") || slices.Contains(deps, to) {
			return true
		}
		return test && (slices.Contains(strings.Fields(r.test), to) || slices.Contains(testPackages, to))
	}
	m, ok := g.moduleOf(path)
	if !ok {
		return false
	}
	if slices.Contains(strings.Fields(r.mods), m) {
		return true
	}
	return test && (slices.Contains(strings.Fields(r.test), m) || slices.Contains(testModules, m))
}

func TestDependencyRule(t *testing.T) {
	g := loadGraph(t)
	rows := table(t, g)
	const fix = "if the import is intended, add it to the row in internal/depcheck/deps_test.go and in docs/ARCHITECTURE.md"
	var bad []string
	listed := make(map[string]bool)
	for _, p := range g.pkgs {
		from, ok := rel(p.ImportPath)
		if !ok {
			t.Fatalf("go list reported %s, outside module %s", p.ImportPath, module)
		}
		listed[from] = true
		r, ok := rows[from]
		if !ok {
			bad = append(bad, fmt.Sprintf("%s: package has no row in the dependency table; add a row for %q (its meshd imports and third-party modules) to rules in internal/depcheck/deps_test.go and to the table in docs/ARCHITECTURE.md", p.ImportPath, from))
			continue
		}
		for _, imp := range p.Imports {
			if !g.allows(r, imp, false) {
				bad = append(bad, fmt.Sprintf("%s imports %s, which its row does not allow (%s); %s", from, display(g, imp), describe(r), fix))
			}
		}
		for _, imp := range slices.Concat(p.TestImports, p.XTestImports) {
			if !g.allows(r, imp, true) {
				bad = append(bad, fmt.Sprintf("%s's tests import %s, which its row does not allow (%s; tests may also import %s and modules %s); %s", from, display(g, imp), describe(r), strings.Join(testPackages, ", "), strings.Join(testModules, ", "), fix))
			}
		}
		logUnused(t, g, r, p)
	}
	for _, r := range rules {
		if !listed[r.pkg] {
			bad = append(bad, fmt.Sprintf("rules: %s has a row but go list reports no such package; remove the row here and in docs/ARCHITECTURE.md", r.pkg))
		}
	}
	slices.Sort(bad)
	for _, b := range slices.Compact(bad) {
		t.Error(b)
	}
}

// display names an import for a message: meshd packages relative to the module,
// third-party ones with their module.
func display(g *graph, path string) string {
	if r, ok := rel(path); ok {
		return r
	}
	if m, ok := g.moduleOf(path); ok && m != path {
		return path + " (module " + m + ")"
	}
	return path
}

func describe(r rule) string {
	s := func(list string) string {
		if list == "" {
			return "none"
		}
		return strings.Join(strings.Fields(list), ", ")
	}
	d := fmt.Sprintf("%s may import meshd packages: %s; third-party modules: %s", r.pkg, s(r.deps), s(r.mods))
	if r.test != "" {
		d += "; in tests also: " + s(r.test)
	}
	return d
}

// logUnused notes, in -v output, allowances no import uses any more, so the table can
// be tightened; they are not errors, so that removing an import never breaks the build.
func logUnused(t *testing.T, g *graph, r rule, p pkg) {
	used := make(map[string]bool)
	note := func(imports []string) {
		for _, imp := range imports {
			if to, ok := rel(imp); ok {
				used[to] = true
			} else if m, ok := g.moduleOf(imp); ok {
				used[m] = true
			}
		}
	}
	note(p.Imports)
	for _, d := range append(strings.Fields(r.deps), strings.Fields(r.mods)...) {
		if d != "*" && !used[d] {
			t.Logf("%s: row allows %s, which its code does not import", r.pkg, d)
		}
	}
	note(p.TestImports)
	note(p.XTestImports)
	for _, d := range strings.Fields(r.test) {
		if !used[d] {
			t.Logf("%s: row allows %s in tests, which its tests do not import", r.pkg, d)
		}
	}
}

// TestArchitectureRules checks, by name, the rules docs/ARCHITECTURE.md states in prose,
// both in the table (so no one widens a row past them) and in what go list reports
// (non-test and test imports alike).
func TestArchitectureRules(t *testing.T) {
	g := loadGraph(t)

	// Every direct edge between meshd packages: those go list reports (code and tests)
	// and those the table allows.
	type edge struct{ from, to, where string }
	var edges []edge
	for _, p := range g.pkgs {
		from, _ := rel(p.ImportPath)
		seen := make(map[string]bool)
		for _, imp := range slices.Concat(p.Imports, p.TestImports, p.XTestImports) {
			if to, ok := rel(imp); ok && to != from && !seen[to] {
				seen[to] = true
				edges = append(edges, edge{from, to, "go list"})
			}
		}
	}
	for _, r := range rules {
		for _, d := range append(strings.Fields(r.deps), strings.Fields(r.test)...) {
			if isPackageName(d) {
				edges = append(edges, edge{r.pkg, d, "the rules table"})
			}
		}
	}

	check := func(name string, forbidden func(from, to string) bool) {
		t.Run(name, func(t *testing.T) {
			for _, e := range edges {
				if forbidden(e.from, e.to) {
					t.Errorf("%s imports %s (per %s), breaking the rule %q of docs/ARCHITECTURE.md", e.from, e.to, e.where, name)
				}
			}
		})
	}

	check("router and balancer never import each other", func(from, to string) bool {
		return (from == "router" && to == "balancer") || (from == "balancer" && to == "router")
	})
	check("no front end imports another", func(from, to string) bool {
		return slices.Contains(frontEnds, from) && slices.Contains(frontEnds, to)
	})
	check("only package proxy imports proxy/admin", func(from, to string) bool {
		return to == "proxy/admin" && strings.HasPrefix(from, "proxy/")
	})
	check("no package imports a _test package", func(from, to string) bool {
		return strings.Contains(to, "_test")
	})
	check("no package imports cmd/", func(from, to string) bool {
		return to == "cmd" || strings.HasPrefix(to, "cmd/")
	})

	// The packages named above must exist for the rules to mean anything.
	for _, name := range append(slices.Clone(frontEnds), "router", "balancer", "proxy/admin") {
		if !slices.ContainsFunc(rules, func(r rule) bool { return r.pkg == name }) {
			t.Errorf("rules: no row for %s, which TestArchitectureRules names", name)
		}
	}
}
