package config

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// describe wraps a resource the way `aws appmesh describe-*` prints it, with the
// metadata and status Parse accepts and ignores.
func describeOut(kind, inner string) string {
	inner = strings.TrimSpace(inner)
	inner = strings.TrimSuffix(inner, "}")
	return `{"` + kind + `": ` + inner + `,
  "metadata": {"arn": "arn:aws:appmesh:eu-west-1:111122223333:mesh/shop/` + kind + `/x", "createdAt": "2023-01-01T00:00:00+00:00",
    "lastUpdatedAt": "2023-01-01T00:00:00+00:00", "meshOwner": "111122223333", "resourceOwner": "111122223333", "uid": "u", "version": 1},
  "status": {"status": "ACTIVE"}}}
`
}

const (
	inMesh    = `{"meshName": "shop", "spec": {"egressFilter": {"type": "ALLOW_ALL"}}}`
	inNode    = `{"meshName": "shop", "virtualNodeName": "cart", "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}], "serviceDiscovery": {"dns": {"hostname": "cart.local"}}}}`
	inService = `{"meshName": "shop", "virtualServiceName": "cart.local", "spec": {"provider": {"virtualRouter": {"virtualRouterName": "cart"}}}}`
	inRouter  = `{"meshName": "shop", "virtualRouterName": "cart", "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}}`
	inRoute   = `{"meshName": "shop", "virtualRouterName": "cart", "routeName": "all", "spec": {"httpRoute": {"match": {"prefix": "/"}, "action": {"weightedTargets": [{"virtualNode": "cart", "weight": 1}]}}}}`
)

// describeAll is a whole mesh as describe-* outputs, in the order given.
func describeAll() []string {
	return []string{
		describeOut("mesh", inMesh),
		describeOut("virtualNode", inNode),
		describeOut("virtualService", inService),
		describeOut("virtualRouter", inRouter),
		describeOut("route", inRoute),
	}
}

func mustParseValid(t *testing.T, in string) *Config {
	t.Helper()
	c, err := Parse([]byte(in))
	if err != nil {
		t.Fatalf("Parse:\n%v\ninput:\n%s", err, in)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate:\n%v", err)
	}
	return c
}

func checkShop(t *testing.T, c *Config) {
	t.Helper()
	if c.Mesh.MeshName != "shop" || len(c.VirtualNodes) != 1 || len(c.VirtualServices) != 1 ||
		len(c.VirtualRouters) != 1 || len(c.Routes) != 1 || c.Routes[0].RouteName != "all" {
		t.Fatalf("merged config = %+v", c)
	}
}

func TestParseInputForms(t *testing.T) {
	outs := describeAll()
	t.Run("one describe output", func(t *testing.T) {
		c := mustParseValid(t, describeOut("virtualNode", inNode))
		// The mesh the node names, with App Mesh's defaults.
		if c.Mesh.MeshName != "shop" || c.Mesh.Spec.EgressFilter != nil || len(c.VirtualNodes) != 1 {
			t.Fatalf("config = %+v", c)
		}
	})
	t.Run("describe-mesh", func(t *testing.T) {
		c := mustParseValid(t, describeOut("mesh", inMesh))
		if c.Mesh.Spec.EgressFilter == nil || c.Mesh.Spec.EgressFilter.Type != EgressAllowAll {
			t.Fatalf("mesh = %+v", c.Mesh)
		}
	})
	t.Run("JSON list", func(t *testing.T) {
		checkShop(t, mustParseValid(t, "["+strings.Join(outs, ",\n")+"]"))
	})
	t.Run("appended with >>", func(t *testing.T) {
		// The CLI's outputs end in a newline; the last one here does not, and two share
		// a line, which a stream of JSON values allows.
		in := strings.Join(outs[:3], "") + strings.TrimSpace(outs[3]) + strings.TrimSpace(outs[4])
		checkShop(t, mustParseValid(t, in))
	})
	t.Run("YAML multi-document", func(t *testing.T) {
		in := "---\n" + strings.Join(outs, "---\n") + "---\n"
		checkShop(t, mustParseValid(t, in))
	})
	t.Run("layout fragments", func(t *testing.T) {
		in := "mesh: " + inMesh + "\n---\nvirtualNodes: [" + inNode + "]\nvirtualServices: [" + inService + "]\n---\n" +
			"virtualRouters: [" + inRouter + "]\n---\n" + describeOut("route", inRoute)
		checkShop(t, mustParseValid(t, in))
	})
	t.Run("list-* style", func(t *testing.T) {
		in := "{\"virtualNodes\": [" + inNode + "]}\n{\"virtualRouters\": [" + inRouter + "]}"
		c, err := Parse([]byte(in))
		if err != nil || len(c.VirtualNodes) != 1 || len(c.VirtualRouters) != 1 || c.Mesh.MeshName != "shop" {
			t.Fatalf("Parse = %+v, %v", c, err)
		}
	})
}

func TestParseInputErrors(t *testing.T) {
	outs := describeAll()
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{
			name: "a resource twice in a stream",
			in:   outs[1] + outs[1],
			want: []string{`document 2: virtualNode.virtualNodeName: virtual node "cart" is defined twice: here and in document 1, virtualNode, line 1 (line 5)`},
		},
		{
			name: "two meshes",
			in:   outs[1] + strings.Replace(outs[2], `"meshName": "shop"`, `"meshName": "books"`, 1),
			want: []string{`document 2: virtualService.meshName: mesh "books" differs from mesh "shop" named by document 1, virtualNode, line 1; one input describes one mesh (line 5)`},
		},
		{
			name: "error in the third document names it and its path",
			in:   outs[0] + outs[1] + strings.Replace(outs[2], `"provider"`, `"providr"`, 1),
			want: []string{`document 3: virtualService.spec.providr: unknown field; did you mean provider? (line 9)`},
		},
		{
			name: "error in a list item",
			in:   "[" + outs[1] + "," + strings.Replace(outs[4], `"prefix"`, `"prefx"`, 1) + "]",
			want: []string{`[1].route.spec.httpRoute.match.prefx: unknown field; did you mean prefix? (line 5)`},
		},
		{
			name: "a describe output with something beside it",
			in:   `{"virtualNode": ` + inNode + `, "virtualService": ` + inService + `}`,
			want: []string{`virtualNode: a describe-* output holds one resource and nothing beside it; put each resource in its own document or list item (in meshd's layout, the list is virtualNodes) (line 1)`},
		},
		{
			name: "list-* output",
			in:   `{"virtualNodes": [{"meshName": "shop", "virtualNodeName": "cart", "createdAt": "2023-01-01", "version": 1}]}`,
			want: []string{
				`virtualNodes[0].createdAt: unknown field; list-* output names resources without their spec: use describe-* output (line 1)`,
				`virtualNodes[0].version: unknown field; list-* output names resources without their spec: use describe-* output (line 1)`,
			},
		},
		{
			name: "bad JSON in a stream",
			in:   outs[1] + "{\"virtualNode\": }\n",
			want: []string{`document 2: not valid JSON: invalid character '}' looking for beginning of value (line 5)`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			var errs *Errors
			if !errors.As(err, &errs) {
				t.Fatalf("Parse error = %v, want *Errors", err)
			}
			var got []string
			for _, fe := range errs.List {
				got = append(got, fe.Error())
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Fatalf("errors:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

// TestValidateNamesWhereWritten: Validate's errors on a merged input name the document
// and path the user wrote, not the merged list's index.
func TestValidateNamesWhereWritten(t *testing.T) {
	outs := describeAll()
	outs[4] = strings.Replace(outs[4], `"virtualNode": "cart"`, `"virtualNode": "kart"`, 1)
	c, err := Parse([]byte(strings.Join(outs, "")))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	if err == nil || !strings.Contains(err.Error(), "document 5: route.spec.httpRoute.action.weightedTargets[0].virtualNode") {
		t.Fatalf("Validate = %v, want the error at document 5's route", err)
	}
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, s := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestParseDirectory(t *testing.T) {
	outs := describeAll()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"00-mesh.json":  outs[0],
		"cart-vn.json":  outs[1] + outs[2], // a >> stream
		"router.yaml":   "virtualRouters: [" + inRouter + "]\n---\n" + describeOut("route", inRoute),
		"README.md":     "not config",
		".hidden.yaml":  "not: config",
		"notes.yml.bak": "neither",
	})
	if err := os.Mkdir(filepath.Join(dir, "sub.yaml"), 0o755); err != nil {
		t.Fatal(err)
	}
	c, err := ParseFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	checkShop(t, c)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}

	t.Run("duplicate names both files", func(t *testing.T) {
		writeFiles(t, dir, map[string]string{"zz-again.yaml": describeOut("virtualNode", inNode)})
		defer os.Remove(filepath.Join(dir, "zz-again.yaml"))
		_, err := ParseFile(dir)
		want := dir + `: zz-again.yaml: virtualNode.virtualNodeName: virtual node "cart" is defined twice: here and in cart-vn.json, document 1, virtualNode, line 1`
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("ParseFile = %v\nwant %s", err, want)
		}
	})
	t.Run("validation error names the file", func(t *testing.T) {
		writeFiles(t, dir, map[string]string{"zz-bad.json": describeOut("virtualNode",
			strings.Replace(strings.Replace(inNode, `"cart"`, `"bad"`, 1), `"http"`, `"htp"`, 1))})
		defer os.Remove(filepath.Join(dir, "zz-bad.json"))
		c, err := ParseFile(dir)
		if err != nil {
			t.Fatal(err)
		}
		err = c.Validate()
		if err == nil || !strings.Contains(err.Error(), "zz-bad.json: virtualNode.spec.listeners[0].portMapping.protocol: must be one of") {
			t.Fatalf("Validate = %v", err)
		}
	})
	t.Run("a directory of one file names it", func(t *testing.T) {
		one := t.TempDir()
		writeFiles(t, one, map[string]string{"mesh.yaml": "mesh: {meshName: m}\nvirtualNodes: [{virtualNodeName: n, spec: {listeners: [{portMapping: {port: 80, protocol: htp}}]}}]\n"})
		c, err := ParseFile(one)
		if err != nil {
			t.Fatal(err)
		}
		err = c.Validate()
		if err == nil || !strings.Contains(err.Error(), "mesh.yaml: virtualNodes[0].spec.listeners[0].portMapping.protocol: must be one of") {
			t.Fatalf("Validate = %v", err)
		}
	})
	t.Run("syntax error names the file", func(t *testing.T) {
		writeFiles(t, dir, map[string]string{"zz-broken.yaml": "mesh: {meshName: m\n"})
		defer os.Remove(filepath.Join(dir, "zz-broken.yaml"))
		_, err := ParseFile(dir)
		if err == nil || !strings.Contains(err.Error(), "zz-broken.yaml: yaml: line 1") {
			t.Fatalf("ParseFile = %v", err)
		}
	})
	t.Run("empty directory", func(t *testing.T) {
		empty := t.TempDir()
		_, err := ParseFile(empty)
		if err == nil || !strings.Contains(err.Error(), "holds no *.json, *.yaml or *.yml file") {
			t.Fatalf("ParseFile = %v", err)
		}
	})
}

// TestBundleRoundTrip: the directory document ReadPath builds is what the apply
// pipeline persists and PUT /config may carry; Parse reads it back alone.
func TestBundleRoundTrip(t *testing.T) {
	dir := t.TempDir()
	outs := describeAll()
	writeFiles(t, dir, map[string]string{"a.json": strings.Join(outs[:2], ""), "b name.yaml": strings.Join(outs[2:], "---\n")})
	data, err := ReadPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	checkShop(t, mustParseValid(t, string(data)))
	bad := strings.Replace(string(data), `# file "a.json" `, `# file "a.json" 9`, 1)
	if _, err := Parse([]byte(bad)); err == nil || !strings.Contains(err.Error(), "bad file header") {
		t.Fatalf("Parse of a corrupted directory document = %v", err)
	}
}

// TestFileSourceWatchDirectory: a directory config reloads when any file in it
// changes, is added or removed.
func TestFileSourceWatchDirectory(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	dir := t.TempDir()
	outs := describeAll()
	writeFiles(t, dir, map[string]string{"a.json": outs[0] + outs[1]})
	src := &FileSource{Path: dir, Debounce: 20 * time.Millisecond}
	doc, err := src.Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	src.Applied(doc)
	docs := watchFile(t, src)
	time.Sleep(50 * time.Millisecond) // the watch is set up; not a timing assertion

	writeFiles(t, dir, map[string]string{"b.yaml": strings.Join(outs[2:], "---\n")})
	d := nextWith(t, docs, `"b.yaml"`)
	checkShop(t, mustParseValid(t, string(d.Data)))

	writeFiles(t, dir, map[string]string{"b.yaml": strings.Join(outs[2:], "---\n") + "# edited\n"})
	nextWith(t, docs, "# edited")

	writeFiles(t, dir, map[string]string{"notes.txt": "ignored"})
	if err := os.Remove(filepath.Join(dir, "b.yaml")); err != nil {
		t.Fatal(err)
	}
	d = next(t, docs)
	if strings.Contains(string(d.Data), `"b.yaml"`) || strings.Contains(string(d.Data), "ignored") {
		t.Fatalf("after removing b.yaml delivered:\n%s", d.Data)
	}
	if _, err := Parse(d.Data); err != nil {
		t.Fatal(err)
	}
}

// TestFileSourceWatchConfigMapDirectory: a ConfigMap of several keys mounted as a
// directory (each key a symlink through ..data, which the kubelet swaps) reloads on the
// swap.
func TestFileSourceWatchConfigMapDirectory(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	dir := t.TempDir()
	outs := describeAll()
	revision := func(n int, files map[string]string) {
		ts := filepath.Join(dir, "..2026_01_01_00_00_0"+string(rune('0'+n)))
		if err := os.Mkdir(ts, 0o755); err != nil {
			t.Fatal(err)
		}
		writeFiles(t, ts, files)
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	revision(0, map[string]string{"mesh.json": outs[0], "nodes.json": outs[1]})
	for _, name := range []string{"mesh.json", "nodes.json"} {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	src := &FileSource{Path: dir, Debounce: 20 * time.Millisecond}
	doc, err := src.Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if c, err := Parse(doc.Data); err != nil || len(c.VirtualNodes) != 1 {
		t.Fatalf("Parse of the ConfigMap directory = %+v, %v", c, err)
	}
	src.Applied(doc)
	docs := watchFile(t, src)
	time.Sleep(50 * time.Millisecond) // the watch is set up; not a timing assertion

	revision(1, map[string]string{"mesh.json": outs[0], "nodes.json": outs[1] + strings.Join(outs[2:], "")})
	d := nextWith(t, docs, `"routeName"`)
	checkShop(t, mustParseValid(t, string(d.Data)))
}

// TestParseStreamBudget: the node-visit budget is the input's, shared by its documents:
// aliases that stay under it in each document of a stream but not in all of them stop
// the decode instead of being built.
func TestParseStreamBudget(t *testing.T) {
	rep := func(alias string, n int) string {
		return "[" + strings.TrimSuffix(strings.Repeat(alias+", ", n), ", ") + "]"
	}
	var b strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&b, "---\nvirtualNodes: [{virtualNodeName: n%d, metadata: {s: &s san, "+
			"l: &l {portMapping: {port: 80, protocol: http}, tls: {mode: STRICT, validation: {subjectAlternativeNames: {match: {exact: %s}}}}}}, "+
			"spec: {listeners: %s}}]\n", i, rep("*s", 30), rep("*l", 100))
	}
	_, err := Parse([]byte(b.String()))
	var errs *Errors
	if !errors.As(err, &errs) || len(errs.List) != 1 || !strings.Contains(err.Error(), "too deeply aliased") {
		t.Fatalf("alias bombs over a stream, want one error: %.300v", err)
	}
	// One of those documents alone is within its budget.
	one := b.String()[:strings.Index(b.String()[4:], "---")+4]
	if _, err := Parse([]byte(one)); err != nil {
		t.Fatalf("one document: %.300v", err)
	}
}

// TestParseStreamErrorCap: errors over a stream stop at the same cap as in one document.
func TestParseStreamErrorCap(t *testing.T) {
	in := strings.Repeat(`{"virtualNode": {"virtualNodeName": "n", "bogus": 1}}`+"\n", 500)
	_, err := Parse([]byte(in))
	var errs *Errors
	if !errors.As(err, &errs) || len(errs.List) != maxParseErrors+1 || !strings.Contains(errs.List[maxParseErrors].Msg, "too many errors") {
		t.Fatalf("error cap over a stream: %v", err)
	}
	_, err = Parse([]byte("[" + strings.ReplaceAll(strings.TrimSpace(in), "\n", ",") + "]"))
	if !errors.As(err, &errs) || len(errs.List) != maxParseErrors+1 || !strings.Contains(errs.List[maxParseErrors].Msg, "too many errors") {
		t.Fatalf("error cap over a list: %v", err)
	}
}

// TestReadLimited: a file is read whole at its exact size and at sizes around the
// buffer's first capacity, and one past MaxConfigSize is read to MaxConfigSize+1 bytes
// (for Parse to reject), never truncated to the limit.
func TestReadLimited(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []int{0, 1, 511, 512, 513, 4096, 3 << 20, MaxConfigSize, MaxConfigSize + 1, MaxConfigSize + 4096} {
		data := bytes.Repeat([]byte("x"), n)
		path := filepath.Join(dir, "f")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := readLimited(path)
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		want := min(n, MaxConfigSize+1)
		if len(got) != want || !bytes.Equal(got, data[:want]) {
			t.Fatalf("%d bytes: read %d, want %d", n, len(got), want)
		}
	}
}
