package config

import (
	"reflect"
	"strings"
	"testing"

	"github.com/meshd/meshd/internal/meshgen"
)

// sameAsSlow parses doc with Parse and with the yaml.Node decoder alone and fails
// unless both give the same Config, or the same error text. It reports whether the fast
// path took the document.
func sameAsSlow(t *testing.T, doc string) (fast bool) {
	t.Helper()
	_, fast = fastParseJSON([]byte(doc))
	got, gerr := Parse([]byte(doc))
	want, werr := parseSlow([]byte(doc))
	switch {
	case (gerr == nil) != (werr == nil):
		t.Fatalf("Parse error %v, slow path error %v (fast path took it: %v)", gerr, werr, fast)
	case gerr != nil:
		if gerr.Error() != werr.Error() {
			t.Fatalf("Parse error:\n%v\nslow path error:\n%v", gerr, werr)
		}
		if fast {
			t.Fatalf("the fast path took a document the slow path rejects:\n%v", werr)
		}
	case !reflect.DeepEqual(got, want):
		t.Fatalf("fast path Config differs from the slow path's (fast path took it: %v):\nfast: %+v\nslow: %+v", fast, got, want)
	}
	return fast
}

// TestFastPathCorpus: every corpus spec, in meshd's layout, takes the fast path and
// decodes to the slow path's Config; as describe-* output it takes the slow path.
func TestFastPathCorpus(t *testing.T) {
	n := 0
	for _, cf := range corpusFiles(t) {
		t.Run(cf.file, func(t *testing.T) {
			doc := `{"mesh": {"meshName": "corpus"}, "` + cf.list + `": [` + cf.raw + `]}`
			if cf.kind == "mesh" {
				doc = `{"mesh": ` + cf.raw + `}`
			}
			if !sameAsSlow(t, doc) {
				// A spec with an escape or a non-ASCII string is the slow path's by
				// design; say which, so a fast path that gives up too often shows.
				t.Logf("slow path: %s", cf.file)
			} else {
				n++
			}
			// describe-mesh's output {"mesh": {...}} is meshd's layout too.
			if sameAsSlow(t, describeOut(cf.kind, cf.raw)) && cf.kind != "mesh" {
				t.Fatal("the fast path took a describe-* output; only meshd's layout is its")
			}
		})
	}
	if n < 100 {
		t.Errorf("only %d corpus specs took the fast path", n)
	}
}

func TestFastPathScale(t *testing.T) {
	doc := meshgen.Spec{Routers: 10, RoutesPerRouter: 30}.JSON()
	if !sameAsSlow(t, string(doc)) {
		t.Fatal("the generated mesh did not take the fast path")
	}
	c, err := Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(c.Routes) != 300 || cap(c.Routes) != 300 {
		t.Fatalf("routes: len %d cap %d, want 300 and 300", len(c.Routes), cap(c.Routes))
	}
}

// fastPathCases: documents at the edge of what the fast path takes. Each must parse
// (or fail) exactly as on the slow path; fast says whether the fast path takes it.
var fastPathCases = []struct {
	name string
	doc  string
	fast bool
}{
	{"minimal", `{"mesh": {"meshName": "m"}}`, true},
	{"no spaces", `{"mesh":{"meshName":"m","spec":{"egressFilter":{"type":"ALLOW_ALL"}}}}`, true},
	{"tab indented", "{\n\t\"mesh\": {\n\t\t\"meshName\": \"m\"\n\t}\n}\n", true},
	{"crlf", "{\r\n  \"mesh\": {\"meshName\": \"m\"}\r\n}\r\n", true},
	{"leading tab", "\t{\"mesh\": {\"meshName\": \"m\"}}", false},
	{"blank before colon", "{\"mesh\" \t: {\"meshName\" : \"m\", \"metadata\": {\"a\"\t:1}}}", true},
	// YAML's implicit keys are one line: valid JSON, a YAML error.
	{"line break before colon", "{\"mesh\"\n:{}}", false},
	{"line break before colon in metadata", "{\"mesh\": {\"meshName\": \"m\", \"metadata\": {\"a\" \r\n :1}}}", false},
	{"bom", "\ufeff{\"mesh\": {\"meshName\": \"m\"}}", false},
	// Lists past 16 elements are counted ahead (countAhead); the count is only a hint.
	{"long list", `{"mesh": {"meshName": "m"}, "virtualNodes": [` + strings.TrimSuffix(strings.Repeat(`{"virtualNodeName": "a,]}", "spec": {"backends": [{"virtualService": {"virtualServiceName": "[s]"}}]}}, `, 40), ", ") + `]}`, true},
	{"long list of strings", `{"mesh": {"meshName": "m", "spec": {"serviceDiscovery": {"dnsResolvers": [` + strings.TrimSuffix(strings.Repeat(`"10.0.0.1", `, 17), ", ") + `]}}}}`, true},
	{"long list, escaped quote after 16", `{"mesh": {"meshName": "m"}, "virtualNodes": [` + strings.Repeat(`{"virtualNodeName": "a"}, `, 17) + `{"virtualNodeName": "a\",]"}]}`, false},
	{"nulls", `{"mesh": {"meshName": "m", "spec": null}, "virtualNodes": null, "routes": []}`, true},
	{"empty lists", `{"mesh": {"meshName": "m"}, "virtualNodes": [{"virtualNodeName": "a", "spec": {"listeners": [], "backends": []}}]}`, true},
	{"static endpoints both forms", `{"mesh": {"meshName": "m"}, "virtualNodes": [{"virtualNodeName": "a", "spec": {"serviceDiscovery": {"static": {"endpoints": ["10.0.0.1:80", {"address": "10.0.0.2", "weight": 3}]}}}}]}`, true},
	{"metadata any shape", `{"mesh": {"meshName": "m", "metadata": {"a": [1, -2.5, true, false, null, {"b": "c", "b": []}], "d": {}}, "status": "ACTIVE"}}`, true},
	{"float fields", `{"mesh": {"meshName": "m"}, "virtualNodes": [{"virtualNodeName": "a", "spec": {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}, "rateLimit": {"requestsPerSecond": 2.5, "burst": 3}, "circuitBreaker": {"failureRatio": 1}}]}}]}`, true},
	{"negative zero", `{"mesh": {"meshName": "m"}, "virtualNodes": [{"virtualNodeName": "a", "spec": {"listeners": [{"portMapping": {"port": -0, "protocol": "http"}}]}}]}`, true},
	{"pointer to int", `{"mesh": {"meshName": "m"}, "virtualNodes": [{"virtualNodeName": "a", "spec": {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}, "healthCheck": {"protocol": "http", "intervalMillis": 5000, "timeoutMillis": 2000, "healthyThreshold": 2, "unhealthyThreshold": 2, "panicThresholdPercent": 0}}]}}]}`, true},
	// The slow path's: escapes, bytes YAML reads its own way, numbers YAML may resolve
	// otherwise.
	{"escape", `{"mesh": {"meshName": "m\u0041"}}`, false},
	{"escaped slash", `{"mesh": {"meshName": "a\/b"}}`, false},
	{"non-ascii", `{"mesh": {"meshName": "mé"}}`, false},
	{"line separator", "{\"mesh\": {\"meshName\": \"a\u2028b\"}}", false},
	{"del", "{\"mesh\": {\"meshName\": \"a\x7fb\"}}", false},
	{"exponent", `{"mesh": {"meshName": "m"}, "virtualNodes": [{"virtualNodeName": "a", "spec": {"listeners": [{"portMapping": {"port": 8e1, "protocol": "http"}}]}}]}`, false},
	{"fraction for int", `{"mesh": {"meshName": "m"}, "virtualNodes": [{"virtualNodeName": "a", "spec": {"listeners": [{"portMapping": {"port": 80.0, "protocol": "http"}}]}}]}`, false},
	{"huge int", `{"mesh": {"meshName": "m"}, "virtualNodes": [{"virtualNodeName": "a", "spec": {"listeners": [{"portMapping": {"port": 123456789012345678901, "protocol": "http"}}]}}]}`, false},
	{"leading zero", `{"mesh": {"meshName": "m"}, "virtualNodes": [{"virtualNodeName": "a", "spec": {"listeners": [{"portMapping": {"port": 080, "protocol": "http"}}]}}]}`, false},
	// Errors: the slow path reports them, with their lines.
	{"unknown field", `{"mesh": {"meshName": "m", "nmae": 1}}`, false},
	{"duplicate key", "{\"mesh\": {\"meshName\": \"m\",\n \"meshName\": \"n\"}}", false},
	{"string for int", `{"mesh": {"meshName": "m"}, "virtualNodes": [{"virtualNodeName": "a", "spec": {"listeners": [{"portMapping": {"port": "80", "protocol": "http"}}]}}]}`, false},
	{"int for string", `{"mesh": {"meshName": 5}}`, false},
	{"bool for string", `{"mesh": {"meshName": true}}`, false},
	{"list for struct", `{"mesh": []}`, false},
	{"struct for list", `{"mesh": {"meshName": "m"}, "routes": {}}`, false},
	{"describe wrapper in layout", `{"mesh": {"meshName": "m"}, "routes": [{"route": {"routeName": "r"}}]}`, false},
	{"merge key", `{"mesh": {"<<": {"meshName": "m"}}}`, false},
	{"truncated", `{"mesh": {"meshName": "m"}`, false},
	{"trailing garbage", `{"mesh": {"meshName": "m"}} x`, false},
	{"two documents", `{"mesh": {"meshName": "m"}} {"virtualNode": {"virtualNodeName": "a", "meshName": "m", "spec": {}}}`, false},
	{"top-level list", `[{"mesh": {"meshName": "m"}}]`, false},
	{"yaml", "mesh:\n  meshName: m\n", false},
	{"describe output", `{"virtualNode": {"virtualNodeName": "a", "meshName": "m", "spec": {}}}`, false},
	{"metadata bad json", `{"mesh": {"meshName": "m", "metadata": {"a": [1}}}`, false},
	{"metadata key in list", `{"mesh": {"meshName": "m", "metadata": ["a": 1]}}`, false},
	{"metadata value where key", `{"mesh": {"meshName": "m", "metadata": {"a": 1, 2}}}`, false},
	{"glued literal", `{"mesh": {"meshName": "m", "metadata": nullx}}`, false},
	{"comment", "{\"mesh\": {\"meshName\": \"m\"}} # note\n", false},
	{"empty", "", false},
	{"null document", "null", false},
}

func TestFastPathSameAsSlow(t *testing.T) {
	for _, c := range fastPathCases {
		t.Run(c.name, func(t *testing.T) {
			if fast := sameAsSlow(t, c.doc); fast != c.fast {
				t.Fatalf("fast path took it: %v, want %v", fast, c.fast)
			}
		})
	}
}

// TestFastPathBudget: a document past the slow path's visit budget is the slow path's,
// so the error is its.
func TestFastPathBudget(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"mesh": {"meshName": "m"}, "virtualNodes": [`)
	for i := range 1 << 12 {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`{"spec":{}}`)
	}
	b.WriteString("]}")
	doc := b.String()
	p := fastParser{s: doc, budget: 100, intern: map[string]string{}}
	var c Config
	if p.value(reflect.ValueOf(&c).Elem()) {
		t.Fatal("the fast path decoded past its budget")
	}
	sameAsSlow(t, doc)
}

// FuzzFastPath: whatever the fast path takes, the slow path takes and decodes alike.
func FuzzFastPath(f *testing.F) {
	for _, c := range fastPathCases {
		f.Add(c.doc)
	}
	f.Add(string(meshgen.Spec{Routers: 2, RoutesPerRouter: 2}.JSON()))
	f.Fuzz(func(t *testing.T, doc string) {
		if len(doc) > 1<<16 {
			return
		}
		fc, ok := fastParseJSON([]byte(doc))
		if !ok {
			return
		}
		sc, err := parseSlow([]byte(doc))
		if err != nil {
			t.Fatalf("the fast path took %q, the slow path rejects it: %v", doc, err)
		}
		if !reflect.DeepEqual(fc, sc) {
			t.Fatalf("%q: fast %+v, slow %+v", doc, fc, sc)
		}
	})
}
