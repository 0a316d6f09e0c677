// Package depcheck keeps the package dependency rule of docs/ARCHITECTURE.md true, the
// way the Go tree's go/build/deps_test.go does for the standard library: every import
// edge between meshd packages must be one the table allows.
package depcheck

import (
	"encoding/json"
	"io"
	"os/exec"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/meshd/meshd"

// allowed lists, for each package, the meshd packages it may import directly.
// Subpackages (e.g. proxy/internal/h1) belong to their top-level package's row.
var allowed = map[string][]string{
	"telemetry":          {},
	"config":             {"telemetry"},
	"resilience":         {"telemetry"},
	"tls":                {"telemetry"},
	"discovery":          {"config", "telemetry"},
	"router":             {"config", "telemetry"},
	"balancer":           {"discovery", "resilience", "telemetry"},
	"proxy":              {"internal/h1", "config", "discovery", "router", "balancer", "resilience", "tls", "telemetry"},
	"bench":              {"internal/h1"}, // bench shares the proxy's HTTP/1.1 codec, so both parse responses identically
	"cmd":                {"*"},
	"internal/testutil":  {"*"},
	"internal/depcheck":  {},
	"internal/netnstest": {},
	"internal/h1":        {},
}

// top maps an import path to its row in the table.
func top(path string) string {
	rel := strings.TrimPrefix(strings.TrimPrefix(path, module), "/")
	for _, two := range []string{"internal/testutil", "internal/depcheck", "internal/netnstest", "internal/h1"} {
		if rel == two || strings.HasPrefix(rel, two+"/") {
			return two
		}
	}
	if i := strings.IndexByte(rel, '/'); i >= 0 {
		return rel[:i]
	}
	return rel
}

type pkg struct {
	ImportPath string
	Imports    []string
}

func TestDependencyRule(t *testing.T) {
	out, err := exec.Command("go", "list", "-json", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var bad []string
	seen := 0
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		seen++
		from := top(p.ImportPath)
		rules, ok := allowed[from]
		if !ok {
			bad = append(bad, p.ImportPath+": package has no row in the dependency table (add one to docs/ARCHITECTURE.md and this test)")
			continue
		}
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, module+"/") {
				continue
			}
			to := top(imp)
			if to == from || contains(rules, "*") || contains(rules, to) {
				continue
			}
			bad = append(bad, p.ImportPath+" imports "+imp+" ("+from+" may import only "+strings.Join(rules, ", ")+")")
		}
	}
	if seen < 5 {
		t.Fatalf("go list reported only %d packages; the test is not looking at the module", seen)
	}
	sort.Strings(bad)
	for _, b := range bad {
		t.Error(b)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
