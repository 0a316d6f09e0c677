package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The forms of config input (docs/config-reference.md#input-forms). Besides meshd's own
// layout (one document with `mesh` and the resource lists), a config may be what App
// Mesh users kept: describe-* outputs ({"virtualNode": {...}}), a JSON list of them,
// several of them concatenated (`aws appmesh describe-... >> mesh.json`), YAML
// multi-documents, or a directory of such files. All of them merge into one Config.

// bundleMagic starts the document a directory is read into (ReadPath): each file's bytes
// behind a header naming the file and its length. It is a YAML comment line, so no
// config a user wrote can start with it by accident unless it means to be a bundle.
const bundleMagic = "# meshd config directory v1\n"

// configExts are the file names a directory's config is read from.
var configExts = []string{".json", ".yaml", ".yml"}

// maxDirFiles bounds how many files a directory config may hold.
const maxDirFiles = 1000

// ReadPath reads a config from path: a file's bytes, or for a directory every *.json,
// *.yaml and *.yml file directly in it (names starting with "." skipped; symlinks
// followed, as in a Kubernetes ConfigMap volume), in name order, as one document Parse
// reads back file by file, so its errors name the file. The result is at most
// MaxConfigSize+1 bytes: an oversized input is passed on for Parse to reject.
func ReadPath(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if !fi.IsDir() {
		return readLimited(path)
	}
	names, err := dirConfigFiles(path)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString(bundleMagic)
	for _, name := range names {
		data, err := readLimited(filepath.Join(path, name))
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "# file %s %d\n", strconv.Quote(name), len(data))
		b.Write(data)
		b.WriteByte('\n')
		if b.Len() > MaxConfigSize {
			break // Parse reports the size
		}
	}
	return b.Bytes(), nil
}

// dirConfigFiles lists the config files of directory dir, sorted.
func dirConfigFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", dir, err)
	}
	var names []string
	for _, e := range entries {
		name := e.Name()
		if !isConfigFileName(name) {
			continue
		}
		fi, err := os.Stat(filepath.Join(dir, name)) // follows symlinks
		if err != nil {
			return nil, fmt.Errorf("config %s: %w", filepath.Join(dir, name), err)
		}
		if fi.IsDir() {
			continue
		}
		names = append(names, name)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("config %s: directory holds no *.json, *.yaml or *.yml file", dir)
	}
	if len(names) > maxDirFiles {
		return nil, fmt.Errorf("config %s: directory holds %d config files, more than %d", dir, len(names), maxDirFiles)
	}
	slices.Sort(names)
	return names, nil
}

// isConfigFileName reports whether a directory entry is read as config.
func isConfigFileName(name string) bool {
	return !strings.HasPrefix(name, ".") && slices.Contains(configExts, strings.ToLower(filepath.Ext(name)))
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	defer f.Close()
	// One byte past the limit so an oversized file is reported as such instead of
	// being silently truncated. The buffer starts at the file's size plus one (io.ReadAll
	// would grow it from 512 bytes, copying a 3 MB mesh a dozen times), so the read that
	// sees EOF needs no room of its own; a file that grows meanwhile is read whole all
	// the same. Not a bytes.Buffer: its Grow clears the memory the read then overwrites.
	size := 512
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
		size = int(min(fi.Size(), MaxConfigSize)) + 1
	}
	b := make([]byte, 0, size)
	r := io.LimitReader(f, MaxConfigSize+1)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
	}
}

// inputFile is one file of the input: its name ("" for a lone document) and bytes.
type inputFile struct {
	name string
	data []byte
}

// splitBundle reads back ReadPath's directory document.
func splitBundle(data []byte) ([]inputFile, error) {
	rest := data[len(bundleMagic):]
	var files []inputFile
	for len(rest) > 0 {
		line, after, ok := bytes.Cut(rest, []byte("\n"))
		if !ok || !bytes.HasPrefix(line, []byte("# file ")) {
			return nil, errors.New(`directory document: want a "# file NAME LENGTH" line`)
		}
		hdr := string(line[len("# file "):])
		sp := strings.LastIndexByte(hdr, ' ')
		if sp < 0 {
			return nil, fmt.Errorf("directory document: bad file header %q", line)
		}
		name, err := strconv.Unquote(hdr[:sp])
		n, err2 := strconv.Atoi(hdr[sp+1:])
		if err != nil || err2 != nil || n < 0 || n+1 > len(after) || after[n] != '\n' {
			return nil, fmt.Errorf("directory document: bad file header %q", line)
		}
		files = append(files, inputFile{name: name, data: after[:n]})
		rest = after[n+1:]
	}
	if len(files) == 0 {
		return nil, errors.New("directory document holds no file")
	}
	return files, nil
}

// inputDoc is one document of the input.
type inputDoc struct {
	file string
	idx  int // 1-based position in its file's stream
	root *yaml.Node
}

// splitDocs splits a file into its documents: a YAML stream (one document, or several
// separated by ---), or, when that does not parse and the file is JSON, concatenated
// JSON values (describe-* outputs appended with >>).
func splitDocs(f inputFile) ([]inputDoc, *FieldError) {
	var docs []inputDoc
	dec := yaml.NewDecoder(bytes.NewReader(f.data))
	var yerr error
	for i := 1; ; i++ {
		var n yaml.Node
		if err := dec.Decode(&n); err != nil {
			if !errors.Is(err, io.EOF) {
				yerr = err
			}
			break
		}
		docs = append(docs, inputDoc{file: f.name, idx: i, root: &n})
	}
	if yerr == nil {
		return docs, nil
	}
	trimmed := bytes.TrimLeft(f.data, " \t\r\n")
	if len(trimmed) == 0 || (trimmed[0] != '{' && trimmed[0] != '[') {
		return nil, &FieldError{File: f.name, Msg: yerr.Error()}
	}
	return splitJSON(f)
}

// splitJSON splits concatenated JSON values, parsing each as YAML (JSON is YAML) so the
// decoder sees the same nodes, with lines counted from the start of the file.
func splitJSON(f inputFile) ([]inputDoc, *FieldError) {
	var docs []inputDoc
	dec := json.NewDecoder(bytes.NewReader(f.data))
	end := 0
	for i := 1; ; i++ {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			off := int(dec.InputOffset())
			var se *json.SyntaxError
			if errors.As(err, &se) {
				off = int(se.Offset)
			}
			off = min(off, len(f.data))
			return nil, &FieldError{File: f.name, Doc: i, Line: 1 + bytes.Count(f.data[:off], []byte("\n")),
				Msg: "not valid JSON: " + err.Error()}
		}
		start := end
		end = int(dec.InputOffset())
		// The value starts at its first non-space byte after the previous one.
		for start < end && strings.IndexByte(" \t\r\n", f.data[start]) >= 0 {
			start++
		}
		var n yaml.Node
		if err := yaml.Unmarshal(f.data[start:end], &n); err != nil {
			return nil, &FieldError{File: f.name, Doc: i, Line: 1 + bytes.Count(f.data[:start], []byte("\n")), Msg: err.Error()}
		}
		shiftLines(&n, bytes.Count(f.data[:start], []byte("\n")), 0)
		docs = append(docs, inputDoc{file: f.name, idx: i, root: &n})
	}
	return docs, nil
}

func shiftLines(n *yaml.Node, by, depth int) {
	if depth > maxDepth {
		return
	}
	n.Line += by
	for _, c := range n.Content {
		shiftLines(c, by, depth+1)
	}
}

// resourceKinds are the describe-* wrapper keys, in Config's list order.
var resourceKinds = []string{"virtualNode", "virtualService", "virtualRouter", "route", "virtualGateway", "gatewayRoute"}

// origin is where a merged resource was defined.
type origin struct {
	file string
	doc  int    // 0 when the input was one document
	path string // the resource's path inside its document: "virtualNode", "[2].route", "virtualNodes[0]"
	line int
	name string // the resource's key (see resKey), to check an index still means it
}

func (o origin) String() string {
	var parts []string
	if o.file != "" {
		parts = append(parts, o.file)
	}
	if o.doc > 0 {
		parts = append(parts, "document "+strconv.Itoa(o.doc))
	}
	if o.path != "" {
		parts = append(parts, o.path)
	}
	if o.line > 0 {
		parts = append(parts, "line "+strconv.Itoa(o.line))
	}
	return strings.Join(parts, ", ")
}

// origins maps merged resources back to where they were written, so Validate's errors
// name the file, document and path the user wrote rather than the merged list index.
type origins struct {
	mesh  *origin
	lists map[string][]origin // by Config list name: "virtualNodes", ...
}

// parseInput decodes every document of files and merges them into one Config.
func parseInput(files []inputFile) (*Config, error) {
	var docs []inputDoc
	var errs []FieldError
	for _, f := range files {
		ds, fe := splitDocs(f)
		if fe != nil {
			errs = append(errs, *fe)
			continue
		}
		docs = append(docs, ds...)
	}
	if len(errs) > 0 {
		return nil, &Errors{List: errs}
	}
	// Empty documents (a trailing ---, a file of comments) hold nothing.
	docs = slices.DeleteFunc(docs, func(d inputDoc) bool {
		r := d.root
		if r.Kind == yaml.DocumentNode {
			if len(r.Content) == 0 {
				return true
			}
			r = r.Content[0]
		}
		return r.ShortTag() == "!!null"
	})
	if len(docs) == 0 {
		return nil, &Errors{List: []FieldError{{Msg: "config is empty"}}}
	}
	perFile := map[string]int{}
	for _, d := range docs {
		perFile[d.file]++
	}
	if len(files) == 1 && files[0].name == "" && len(docs) == 1 {
		d := docs[0]
		if root := docRoot(d.root); root.Kind == yaml.MappingNode && !hasResourceKindKey(root) {
			// meshd's own layout, as one document: decoded as it always was.
			c, derrs := decodeLayout(root, newDecoder(visitBudget(files)), "")
			if len(derrs) > 0 {
				return nil, &Errors{List: derrs}
			}
			return c, nil
		}
	}
	m := &merger{c: &Config{}, orig: &origins{lists: map[string][]origin{}}, seen: map[string]origin{}, perFile: perFile,
		budget: visitBudget(files)}
	for _, d := range docs {
		// A spent budget was reported once, by the decoder that spent it.
		if len(m.errs) >= maxParseErrors || m.budget <= 0 {
			m.cut = m.cut || len(m.errs) >= maxParseErrors
			break
		}
		m.doc(d)
	}
	if m.cut || len(m.errs) > maxParseErrors {
		m.errs = append(m.errs[:maxParseErrors], FieldError{Msg: fmt.Sprintf("too many errors (more than %d); stopping", maxParseErrors)})
	}
	if len(m.errs) > 0 {
		return nil, &Errors{List: m.errs}
	}
	if m.c.Mesh.MeshName == "" && m.meshDef == nil && len(m.meshNames) > 0 {
		// describe-* outputs of a mesh's resources without describe-mesh: the mesh they
		// name, with App Mesh's defaults.
		m.c.Mesh.MeshName = m.meshNames[0].name
	}
	m.c.origins = m.orig
	return m.c, nil
}

func docRoot(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		return n.Content[0]
	}
	return n
}

func hasResourceKindKey(n *yaml.Node) bool {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if slices.Contains(resourceKinds, n.Content[i].Value) {
			return true
		}
	}
	return false
}

func decodeLayout(root *yaml.Node, d *decoder, path string) (*Config, []FieldError) {
	var c Config
	d.decode(root, reflect.ValueOf(&c).Elem(), path)
	return &c, d.errs
}

// newDecoder decodes with a budget of node visits (see visitsPerByte).
func newDecoder(budget int) *decoder {
	return &decoder{fields: map[reflect.Type]*structInfo{}, budget: budget}
}

// visitBudget is the node visits the whole input may cost, shared by its documents so
// that aliases spread over many documents cost no more than in one.
func visitBudget(files []inputFile) int {
	size := 0
	for _, f := range files {
		size += len(f.data)
	}
	return min(maxNodeVisits, minNodeVisits+visitsPerByte*size)
}

type meshNameUse struct {
	name string
	at   origin
}

// merger folds documents into one Config, recording where each resource came from.
type merger struct {
	c       *Config
	orig    *origins
	errs    []FieldError
	seen    map[string]origin // resource key → first definition
	meshDef *origin
	perFile map[string]int // documents per file: their index is named when a file has several
	budget  int            // node visits left for the documents still to decode
	cut     bool           // documents or list items were left undecoded at the error cap
	// meshNames: each distinct mesh name the input uses, with its first use.
	meshNames []meshNameUse
}

func (m *merger) at(d inputDoc, path string, line int) origin {
	o := origin{file: d.file, path: path, line: line}
	if m.perFile[d.file] > 1 {
		o.doc = d.idx
	}
	return o
}

func (m *merger) fail(o origin, path, value, format string, args ...any) {
	m.errs = append(m.errs, FieldError{File: o.file, Doc: o.doc, Line: o.line, Path: path, Value: value, Msg: fmt.Sprintf(format, args...)})
}

func (m *merger) doc(d inputDoc) {
	root := docRoot(d.root)
	switch root.Kind {
	case yaml.SequenceNode:
		// A JSON list of describe-* outputs (or of layout fragments).
		for i, item := range root.Content {
			if len(m.errs) >= maxParseErrors || m.budget <= 0 {
				m.cut = len(m.errs) >= maxParseErrors
				return
			}
			m.item(d, item, "["+strconv.Itoa(i)+"]")
		}
	default:
		m.item(d, root, "")
	}
}

// item merges one describe-* output or layout fragment found at path in d.
func (m *merger) item(d inputDoc, n *yaml.Node, path string) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind != yaml.MappingNode {
		m.fail(m.at(d, "", n.Line), path, scalarValue(n),
			`cannot use %s as a config document (want meshd's layout or a describe-* output such as {"virtualNode": {...}})`, describe(n))
		return
	}
	if hasResourceKindKey(n) {
		if len(n.Content) != 2 {
			k := n.Content[0].Value
			for i := 0; i+1 < len(n.Content); i += 2 {
				if slices.Contains(resourceKinds, n.Content[i].Value) {
					k = n.Content[i].Value
					break
				}
			}
			m.fail(m.at(d, "", n.Line), joinPath(path, k), "",
				"a describe-* output holds one resource and nothing beside it; put each resource in its own document or list item "+
					"(in meshd's layout, the list is %ss)", k)
			return
		}
		kind := n.Content[0].Value
		var frag Config
		v := reflect.ValueOf(&frag).Elem().FieldByIndex(listField(kind + "s").Index)
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		dec := m.decoder()
		dec.decode(n.Content[1], v.Index(0), joinPath(path, kind))
		m.spent(dec)
		if m.decodeErrs(d, dec.errs) {
			return
		}
		line := n.Content[1].Line
		m.add(d, &frag, func(list string, i int) string { return joinPath(path, kind) }, func(string, int) int { return line })
		return
	}
	dec := m.decoder()
	frag, errs := decodeLayout(n, dec, path)
	m.spent(dec)
	if m.decodeErrs(d, errs) {
		return
	}
	m.add(d, frag, func(list string, i int) string {
		return joinPath(path, list+"["+strconv.Itoa(i)+"]")
	}, func(list string, i int) int { return layoutLine(n, list, i) })
}

// layoutLine is the line of a layout fragment's list[i] (or of its mesh), 0 if unknown.
func layoutLine(n *yaml.Node, list string, i int) int {
	for k := 0; k+1 < len(n.Content); k += 2 {
		if n.Content[k].Value != list {
			continue
		}
		v := n.Content[k+1]
		if list == "mesh" {
			return v.Line
		}
		if v.Kind == yaml.SequenceNode && i < len(v.Content) {
			return v.Content[i].Line
		}
	}
	return 0
}

// decoder returns a decoder with what is left of the input's visit budget; spent
// charges what it used. The fields cache is per decoder: it is cheap to rebuild.
func (m *merger) decoder() *decoder { return newDecoder(max(m.budget, 1)) }

func (m *merger) spent(d *decoder) { m.budget -= d.visits }

func (m *merger) decodeErrs(d inputDoc, errs []FieldError) bool {
	for _, fe := range errs {
		fe.File = d.file
		if m.perFile[d.file] > 1 {
			fe.Doc = d.idx
		}
		m.errs = append(m.errs, fe)
	}
	return len(errs) > 0
}

// listField returns Config's field for a list name.
func listField(list string) reflect.StructField {
	t := reflect.TypeFor[Config]()
	for i := 0; i < t.NumField(); i++ {
		if jsonName(t.Field(i)) == list {
			return t.Field(i)
		}
	}
	panic("config: no list " + list)
}

// add merges frag into the Config; pathOf names each resource's path in its document.
func (m *merger) add(d inputDoc, frag *Config, pathOf func(list string, i int) string, lineOf func(list string, i int) int) {
	if frag.Mesh.MeshName != "" || frag.Mesh.Spec != (MeshSpec{}) {
		o := m.at(d, meshPath(pathOf), lineOf("mesh", 0))
		if m.meshDef != nil {
			m.fail(o, o.path, frag.Mesh.MeshName, "the mesh is defined twice: here and in %s", m.meshDef)
		} else {
			m.meshDef = &o
			m.c.Mesh = frag.Mesh
			dropBookkeeping(reflect.ValueOf(&m.c.Mesh).Elem())
			m.orig.mesh = &o
			m.useMesh(frag.Mesh.MeshName, o, ".meshName")
		}
	}
	addList(m, d, "virtualNodes", frag.VirtualNodes, &m.c.VirtualNodes, pathOf, lineOf, func(r VirtualNode) (string, string, ResourceMeta) {
		return r.VirtualNodeName, r.VirtualNodeName, r.ResourceMeta
	})
	addList(m, d, "virtualServices", frag.VirtualServices, &m.c.VirtualServices, pathOf, lineOf, func(r VirtualService) (string, string, ResourceMeta) {
		return r.VirtualServiceName, r.VirtualServiceName, r.ResourceMeta
	})
	addList(m, d, "virtualRouters", frag.VirtualRouters, &m.c.VirtualRouters, pathOf, lineOf, func(r VirtualRouter) (string, string, ResourceMeta) {
		return r.VirtualRouterName, r.VirtualRouterName, r.ResourceMeta
	})
	addList(m, d, "routes", frag.Routes, &m.c.Routes, pathOf, lineOf, func(r Route) (string, string, ResourceMeta) {
		return r.VirtualRouterName + "/" + r.RouteName, r.RouteName, r.ResourceMeta
	})
	addList(m, d, "virtualGateways", frag.VirtualGateways, &m.c.VirtualGateways, pathOf, lineOf, func(r VirtualGateway) (string, string, ResourceMeta) {
		return r.VirtualGatewayName, r.VirtualGatewayName, r.ResourceMeta
	})
	addList(m, d, "gatewayRoutes", frag.GatewayRoutes, &m.c.GatewayRoutes, pathOf, lineOf, func(r GatewayRoute) (string, string, ResourceMeta) {
		return r.VirtualGatewayName + "/" + r.GatewayRouteName, r.GatewayRouteName, r.ResourceMeta
	})
}

// meshPath is the path of a fragment's mesh: "mesh" under the fragment's own path.
func meshPath(pathOf func(list string, i int) string) string {
	p := pathOf("mesh", 0)
	return strings.TrimSuffix(p, "[0]")
}

var kindNames = map[string]string{
	"virtualNodes":    "virtual node",
	"virtualServices": "virtual service",
	"virtualRouters":  "virtual router",
	"routes":          "route",
	"virtualGateways": "virtual gateway",
	"gatewayRoutes":   "gateway route",
}

// nameFields are the name fields of each list's resources, for error paths.
var nameFields = map[string]string{
	"virtualNodes":    "virtualNodeName",
	"virtualServices": "virtualServiceName",
	"virtualRouters":  "virtualRouterName",
	"routes":          "routeName",
	"virtualGateways": "virtualGatewayName",
	"gatewayRoutes":   "gatewayRouteName",
}

func addList[T any](m *merger, d inputDoc, list string, from []T, to *[]T, pathOf func(string, int) string, lineOf func(string, int) int, key func(T) (string, string, ResourceMeta)) {
	for i, r := range from {
		k, name, meta := key(r)
		o := m.at(d, pathOf(list, i), lineOf(list, i))
		o.name = k
		m.useMesh(meta.MeshName, o, ".meshName")
		// An empty name is Validate's to report ("name is required").
		if first, dup := m.seen[list+"\x00"+k]; dup && name != "" {
			m.fail(o, joinPath(o.path, nameFields[list]), name,
				"%s %q is defined twice: here and in %s", kindNames[list], k, first)
			continue
		}
		k = list + "\x00" + k
		m.seen[k] = o
		dropBookkeeping(reflect.ValueOf(&r).Elem())
		*to = append(*to, r)
		m.orig.lists[list] = append(m.orig.lists[list], o)
	}
}

// useMesh records a mesh name the input uses; the first use of a second name is an
// error naming both.
func (m *merger) useMesh(name string, o origin, field string) {
	if name == "" {
		return
	}
	for _, u := range m.meshNames {
		if u.name == name {
			return
		}
	}
	if len(m.meshNames) > 0 {
		first := m.meshNames[0]
		m.fail(o, o.path+field, name, "mesh %q differs from mesh %q named by %s; one input describes one mesh",
			name, first.name, first.at)
	}
	m.meshNames = append(m.meshNames, meshNameUse{name: name, at: o})
}

// locate rewrites the paths of Validate's errors on a merged Config to where each
// resource was written: file, document and its path there.
func (c *Config) locate(errs []FieldError) {
	o := c.origins
	if o == nil {
		return
	}
	for i := range errs {
		fe := &errs[i]
		if rest, ok := strings.CutPrefix(fe.Path, "mesh"); ok && o.mesh != nil && (rest == "" || rest[0] == '.') {
			fe.File, fe.Doc, fe.Path = o.mesh.file, o.mesh.doc, o.mesh.path+rest
			continue
		}
		list, after, ok := strings.Cut(fe.Path, "[")
		if !ok {
			continue
		}
		idxs, rest, ok := strings.Cut(after, "]")
		idx, err := strconv.Atoi(idxs)
		if !ok || err != nil {
			continue
		}
		origs := o.lists[list]
		if idx < 0 || idx >= len(origs) || origs[idx].name != c.resKey(list, idx) {
			continue
		}
		at := origs[idx]
		fe.File, fe.Doc, fe.Path = at.file, at.doc, at.path+rest
	}
}

// resKey is the merge key of the resource at list[idx].
func (c *Config) resKey(list string, idx int) string {
	switch list {
	case "virtualNodes":
		if idx < len(c.VirtualNodes) {
			return c.VirtualNodes[idx].VirtualNodeName
		}
	case "virtualServices":
		if idx < len(c.VirtualServices) {
			return c.VirtualServices[idx].VirtualServiceName
		}
	case "virtualRouters":
		if idx < len(c.VirtualRouters) {
			return c.VirtualRouters[idx].VirtualRouterName
		}
	case "routes":
		if idx < len(c.Routes) {
			return c.Routes[idx].VirtualRouterName + "/" + c.Routes[idx].RouteName
		}
	case "virtualGateways":
		if idx < len(c.VirtualGateways) {
			return c.VirtualGateways[idx].VirtualGatewayName
		}
	case "gatewayRoutes":
		if idx < len(c.GatewayRoutes) {
			return c.GatewayRoutes[idx].VirtualGatewayName + "/" + c.GatewayRoutes[idx].GatewayRouteName
		}
	}
	return "\x00"
}

// dropBookkeeping clears a merged resource's metadata and status: describe-* outputs
// carry them (a version, timestamps) and they mean nothing to meshd, so saving the same
// resource again later must not make a new config version.
func dropBookkeeping(v reflect.Value) {
	meta := v.FieldByName("ResourceMeta")
	if !meta.IsValid() {
		return
	}
	m := meta.Addr().Interface().(*ResourceMeta)
	m.Metadata, m.Status = nil, nil
}
