package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"testing"

	"github.com/meshd/meshd/internal/meshgen"
	"go.yaml.in/yaml/v3"
)

// checkCanonical fails unless writeCanonical writes json.Marshal's bytes for c.
func checkCanonical(t *testing.T, name string, c *Config) {
	t.Helper()
	var got bytes.Buffer
	if err := writeCanonical(&got, c); err != nil {
		t.Fatalf("%s: writeCanonical: %v", name, err)
	}
	want, err := json.Marshal(c)
	if err != nil {
		t.Fatalf("%s: json.Marshal: %v", name, err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		i := 0
		for i < min(got.Len(), len(want)) && got.Bytes()[i] == want[i] {
			i++
		}
		lo := max(0, i-60)
		t.Fatalf("%s: canonical stream differs from json.Marshal at byte %d:\nstream:  %q\nMarshal: %q", name, i,
			got.Bytes()[lo:min(got.Len(), i+60)], want[lo:min(len(want), i+60)])
	}
}

// TestCanonicalIsMarshal: the digest's stream is json.Marshal's output byte for byte
// on every corpus spec (in meshd's layout and as describe-* output, whose metadata and
// status go through json.Marshal's own encoding of any values), the test data, the
// generated mesh, and values chosen for escaping, number formatting and omitempty.
func TestCanonicalIsMarshal(t *testing.T) {
	for _, cf := range corpusFiles(t) {
		doc := `{"mesh": {"meshName": "corpus"}, "` + cf.list + `": [` + cf.raw + `]}`
		if cf.kind == "mesh" {
			doc = `{"mesh": ` + cf.raw + `}`
		}
		for _, d := range []string{doc, describeOut(cf.kind, cf.raw)} {
			c, err := Parse([]byte(d))
			if err != nil {
				t.Fatalf("%s: %v", cf.file, err)
			}
			checkCanonical(t, cf.file, c)
		}
	}
	for _, f := range []string{"testdata/shop.yaml", "testdata/shop.json", "testdata/describe.json"} {
		checkCanonical(t, f, mustParseFile(t, f))
	}
	gen, err := Parse(meshgen.Spec{Routers: 10, RoutesPerRouter: 30}.JSON())
	if err != nil {
		t.Fatal(err)
	}
	checkCanonical(t, "meshgen", gen)
	checkCanonical(t, "zero", &Config{})
	checkCanonical(t, "nil", nil)

	odd := []string{"", "a<b>&c", `quote " and \ backslash`, "tab\tnew\nline\r\x00\x1f\x7f", "é ünïcødé ☃ 𝄞",
		"\u2028\u2029", "bad utf-8 \xff\xfe", "</script>", "plain/ascii-_.~:@!$'()*+,;="}
	floats := []float64{0, math.Copysign(0, -1), 1, -1, 2.5, 0.1, 1e-6, 9.99e-7, 1e-7, 1e20, 1e21, 123456789.125, 1.0 / 3, math.MaxFloat64, math.SmallestNonzeroFloat64}
	for i, s := range odd {
		f := floats[i%len(floats)]
		agg := floats[(i+3)%len(floats)]
		c := &Config{
			Mesh: Mesh{MeshName: s, ResourceMeta: ResourceMeta{MeshName: s, Arn: s, Metadata: map[string]any{s: []any{f, s, nil, true}}}},
			VirtualNodes: []VirtualNode{{VirtualNodeName: s, Spec: VirtualNodeSpec{
				Listeners: []Listener{{PortMapping: PortMapping{Port: i - 3, Protocol: s},
					RateLimit:      &RateLimit{RequestsPerSecond: f, Burst: int64(-i)},
					CircuitBreaker: &CircuitBreaker{FailureRatio: f}}},
				Backends:      []Backend{},
				LoadBalancing: &LoadBalancing{Policy: s, SlowStart: &LBSlowStart{Aggression: &agg}},
			}}},
			VirtualServices: []VirtualService{},
		}
		checkCanonical(t, "odd "+strconv.Quote(s), c)
	}
}

// TestDigestYAMLAndJSON: every corpus spec gives one digest whether it is read as
// JSON (the fast path) or as YAML in block style (the yaml.Node decoder), and a
// different one once a field changes.
func TestDigestYAMLAndJSON(t *testing.T) {
	n := 0
	for _, cf := range corpusFiles(t) {
		doc := `{"mesh": {"meshName": "corpus"}, "` + cf.list + `": [` + cf.raw + `]}`
		if cf.kind == "mesh" {
			doc = `{"mesh": ` + cf.raw + `}`
		}
		j, err := Parse([]byte(doc))
		if err != nil {
			t.Fatalf("%s: %v", cf.file, err)
		}
		y, err := Parse(blockYAML(t, doc))
		if err != nil {
			t.Fatalf("%s as YAML: %v", cf.file, err)
		}
		if j.Digest() != y.Digest() {
			t.Fatalf("%s: JSON digest %s, YAML digest %s", cf.file, j.Digest(), y.Digest())
		}
		if j.Digest() != oldDigest(j) {
			t.Fatalf("%s: digest %s, json.Marshal's %s", cf.file, j.Digest(), oldDigest(j))
		}
		changed := *j
		changed.Mesh.MeshName += "x"
		if changed.Digest() == j.Digest() {
			t.Fatalf("%s: a changed mesh name keeps the digest", cf.file)
		}
		n++
	}
	if n < 100 {
		t.Errorf("only %d corpus specs compared", n)
	}
}

// blockYAML rewrites a JSON document as block-style YAML.
func blockYAML(t *testing.T, doc string) []byte {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(doc), &n); err != nil {
		t.Fatal(err)
	}
	var unflow func(*yaml.Node)
	unflow = func(n *yaml.Node) {
		n.Style &^= yaml.FlowStyle
		for _, c := range n.Content {
			unflow(c)
		}
	}
	unflow(&n)
	out, err := yaml.Marshal(&n)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.HasPrefix(bytes.TrimSpace(out), []byte("{")) {
		t.Fatalf("not block style:\n%s", out)
	}
	return out
}

// oldDigest is the digest as it was computed before the stream: json.Marshal's bytes,
// hashed.
func oldDigest(c *Config) string {
	b, err := json.Marshal(c)
	if err != nil {
		b = fmt.Appendf(nil, "%#v", c)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// TestDigestChanges: any change of the generated mesh (a header value, a weight, a
// prefix, a route's order) changes the digest, and each change its own; an unchanged
// copy keeps it.
func TestDigestChanges(t *testing.T) {
	data := meshgen.Spec{Routers: 3, RoutesPerRouter: 4}.JSON()
	parse := func() *Config {
		c, err := Parse(data)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	base := parse().Digest()
	if again := parse().Digest(); again != base {
		t.Fatalf("same config, digests %s and %s", base, again)
	}
	seen := map[string]string{base: "unchanged"}
	for name, change := range map[string]func(*Config){
		"header value": func(c *Config) { c.Routes[5].Spec.HTTPRoute.Match.Headers[0].Match.Exact += "x" },
		"weight":       func(c *Config) { c.Routes[5].Spec.HTTPRoute.Action.WeightedTargets[0].Weight-- },
		"prefix":       func(c *Config) { c.Routes[11].Spec.HTTPRoute.Match.Prefix = "/" },
		"order":        func(c *Config) { c.Routes[0], c.Routes[1] = c.Routes[1], c.Routes[0] },
		"metadata":     func(c *Config) { c.Routes[0].Metadata = map[string]any{"a": 1} },
		"float":        func(c *Config) { c.Routes[0].Spec.HTTPRoute.RateLimit = &RateLimit{RequestsPerSecond: 0.5} },
	} {
		c := parse()
		change(c)
		d := c.Digest()
		if other, dup := seen[d]; dup {
			t.Errorf("%s: digest %s, the same as %s", name, d, other)
		}
		seen[d] = name
	}
}

// TestDigestFallback: a value json.Marshal refuses (NaN) gets the digest it always
// had, that of the Go representation.
func TestDigestFallback(t *testing.T) {
	c := &Config{Mesh: Mesh{MeshName: "m"}, VirtualNodes: []VirtualNode{{VirtualNodeName: "a", Spec: VirtualNodeSpec{
		Listeners: []Listener{{RateLimit: &RateLimit{RequestsPerSecond: math.NaN()}}}}}}}
	if err := writeCanonical(&bytes.Buffer{}, c); err == nil {
		t.Fatal("a NaN was written")
	}
	if got, want := c.Digest(), oldDigest(c); got != want {
		t.Fatalf("digest %s, want %s", got, want)
	}
}

// The scale mesh's digest allocates only the hash and its buffer.
func TestDigestScaleAllocs(t *testing.T) {
	c, err := Parse(scaleSpec.JSON())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Digest(), oldDigest(c); got != want {
		t.Fatalf("digest %s, json.Marshal's %s", got, want)
	}
	if n := testing.AllocsPerRun(3, func() { _ = c.Digest() }); n > 8 {
		t.Fatalf("%v allocations per digest", n)
	}
}
