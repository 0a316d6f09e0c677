package config

import (
	"bytes"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// MaxConfigSize is the largest config document Parse accepts. A whole mesh of a few
// thousand resources is well under 1 MiB; the limit only stops a runaway input from
// exhausting memory in the YAML parser.
const MaxConfigSize = 16 << 20

// YAML aliases let a small file describe an exponentially large tree ("billion
// laughs"). The decoder counts the nodes it visits and stops at a budget that grows
// with the input: every node costs at least one byte of source, so an alias-free
// document never gets near it, while reusing anchors a handful of times still fits.
const (
	visitsPerByte = 8
	// maxDepth bounds decode nesting: the model is under 20 levels deep, so anything
	// past this is an alias cycle or a hostile document.
	maxDepth      = 128
	minNodeVisits = 10_000
	maxNodeVisits = 1 << 22
)

// maxParseErrors stops decoding once this many problems are known: a file that is
// wrong in more places than that is the wrong file, and listing every one of, say,
// a million aliased copies helps no one.
const maxParseErrors = 200

// FieldError is one problem found by Parse or Validate.
type FieldError struct {
	// File is the file of a directory config the problem is in; empty otherwise.
	File string
	// Doc is the 1-based document of a multi-document input (a YAML stream, concatenated
	// JSON values) the problem is in; 0 when the input is one document.
	Doc int
	// Path is the field path in the model's JSON names, e.g.
	// "routes[0].spec.httpRoute.match.prefix". Empty for document-level errors.
	Path string
	// Line is the 1-based line in the parsed document; 0 when unknown (Validate
	// works on the model, which does not keep lines).
	Line int
	// Value is the offending value as written, empty when there is none.
	Value string
	// Msg says what is wrong.
	Msg string
}

// Error formats the problem as `path: msg (value "x", line N)`, leaving out the parts
// that are empty and the value when Msg already quotes it.
func (e FieldError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(": ")
	}
	if e.Doc > 0 {
		b.WriteString("document ")
		b.WriteString(strconv.Itoa(e.Doc))
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	var extra []string
	if e.Value != "" && !strings.Contains(e.Msg, strconv.Quote(e.Value)) {
		extra = append(extra, "value "+strconv.Quote(e.Value))
	}
	if e.Line > 0 {
		extra = append(extra, "line "+strconv.Itoa(e.Line))
	}
	if len(extra) > 0 {
		b.WriteString(" (")
		b.WriteString(strings.Join(extra, ", "))
		b.WriteString(")")
	}
	return b.String()
}

// Errors is every problem Parse or Validate found, in document order. Parse and
// Validate return it as *Errors; callers that print one problem per line range over
// List, and errors.As finds a FieldError through Unwrap.
type Errors struct {
	List []FieldError
}

// Error joins the problems one per line.
func (e *Errors) Error() string {
	lines := make([]string, len(e.List))
	for i, fe := range e.List {
		lines[i] = fe.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap exposes each FieldError to errors.Is / errors.As.
func (e *Errors) Unwrap() []error {
	errs := make([]error, len(e.List))
	for i, fe := range e.List {
		errs[i] = fe
	}
	return errs
}

// ParseFile reads and parses the config at path: a file, or a directory of files
// (ReadPath). Errors are wrapped with the path; a parse failure still unwraps to *Errors.
func ParseFile(path string) (*Config, error) {
	data, err := ReadPath(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes a config strictly: unknown fields, duplicate keys and values of the
// wrong type are errors. The input is meshd's layout (one document), or App Mesh's
// describe-* outputs in any of the forms of docs/config-reference.md#input-forms (one,
// a JSON list, a stream of JSON values or YAML documents, a directory read by
// ReadPath), merged into one Config; a resource defined twice and resources naming
// different meshes are errors naming both places. It collects every problem and
// returns them as *Errors. Parse does not run Validate. It is safe for concurrent use.
func Parse(data []byte) (*Config, error) {
	if len(data) > MaxConfigSize {
		return nil, &Errors{List: []FieldError{{
			Msg: fmt.Sprintf("config is %d bytes, larger than the %d byte limit", len(data), MaxConfigSize),
		}}}
	}
	if c, ok := fastParseJSON(data); ok {
		return c, nil
	}
	return parseSlow(data)
}

// parseSlow is Parse through the yaml.Node decoder alone: every input form, and the
// errors with their lines. Parse's JSON fast path hands it what it does not accept.
func parseSlow(data []byte) (*Config, error) {
	files := []inputFile{{data: data}}
	if bytes.HasPrefix(data, []byte(bundleMagic)) {
		var err error
		if files, err = splitBundle(data); err != nil {
			return nil, &Errors{List: []FieldError{{Msg: err.Error()}}}
		}
	}
	return parseInput(files)
}

// decoder turns a yaml.Node tree into model values by reflection, keyed by the
// structs' json tags so one set of names serves YAML, JSON and /config output.
type decoder struct {
	errs   []FieldError
	visits int
	budget int // visits allowed for this document
	depth  int // current nesting of decode calls
	fields map[reflect.Type]*structInfo
	// aborted is set once the visit budget is spent, so the error is reported once.
	aborted bool
}

type fieldInfo struct {
	name  string
	index []int
}

type structInfo struct {
	byName map[string]fieldInfo
	names  []string // in declaration order, for "did you mean"
}

// wrapperKey names the key under which `aws appmesh describe-*` nests a resource of
// type t, e.g. {"virtualNode": {...}}.
func wrapperKey(t reflect.Type) (string, bool) {
	switch t {
	case reflect.TypeFor[Mesh]():
		return "mesh", true
	case reflect.TypeFor[VirtualNode]():
		return "virtualNode", true
	case reflect.TypeFor[VirtualService]():
		return "virtualService", true
	case reflect.TypeFor[VirtualRouter]():
		return "virtualRouter", true
	case reflect.TypeFor[Route]():
		return "route", true
	case reflect.TypeFor[VirtualGateway]():
		return "virtualGateway", true
	case reflect.TypeFor[GatewayRoute]():
		return "gatewayRoute", true
	}
	return "", false
}

func (d *decoder) fail(n *yaml.Node, path, value, format string, args ...any) {
	if d.aborted {
		return
	}
	if len(d.errs) == maxParseErrors {
		d.aborted = true
		d.errs = append(d.errs, FieldError{Msg: fmt.Sprintf("too many errors (more than %d); stopping", maxParseErrors)})
		return
	}
	fe := FieldError{Path: path, Value: value, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		fe.Line = n.Line
	}
	d.errs = append(d.errs, fe)
}

func joinPath(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

// describe renders a node for a type error: scalars by value, collections by kind.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.ShortTag() == "!!str" {
			return strconv.Quote(n.Value)
		}
		return n.Value
	}
	return "this value"
}

func scalarValue(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode {
		return n.Value
	}
	return ""
}

// enter counts a visit and a nesting level; it reports false (and aborts the decode)
// when the budget is spent or the nesting is deeper than any real config goes, which is
// how an alias cycle (an anchor used inside itself) shows up. Without the depth bound a
// 38-byte file would overflow the goroutine stack, which Go cannot recover from.
func (d *decoder) enter(n *yaml.Node, path string) bool {
	if d.aborted {
		return false
	}
	d.visits++
	d.depth++
	if d.visits > d.budget {
		d.fail(n, path, "", "document too large or too deeply aliased (more than %d nodes)", d.budget)
		d.aborted = true
		return false
	}
	if d.depth > maxDepth {
		d.fail(n, path, "", "nesting deeper than %d levels (an alias that refers to itself?)", maxDepth)
		d.aborted = true
		return false
	}
	return true
}

func (d *decoder) leave() { d.depth-- }

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	defer d.leave()
	if !d.enter(n, path) {
		return
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			d.fail(n, path, "", "unresolved alias")
			return
		}
		d.decode(n.Alias, v, path)
		return
	}
	if n.Kind == yaml.DocumentNode {
		d.fail(n, path, "", "unexpected nested document")
		return
	}
	// null leaves the zero value for every type: an absent field and an explicit
	// null mean the same thing, as in encoding/json.
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return
	}

	switch v.Kind() {
	case reflect.Pointer:
		elem := reflect.New(v.Type().Elem())
		d.decode(n, elem.Elem(), path)
		v.Set(elem)
	case reflect.Interface:
		// Metadata / Status: App Mesh's bookkeeping, accepted in any shape and ignored.
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[StaticEndpoint]() && n.Kind == yaml.ScalarNode {
			var s string
			if d.decodeString(n, &s, path) {
				v.Set(reflect.ValueOf(StaticEndpoint{Address: s}))
			}
			return
		}
		d.decodeStruct(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.fail(n, path, scalarValue(n), "cannot use %s as a list", describe(n))
			return
		}
		if len(n.Content) == 0 {
			// Empty and absent lists are the same; keeping nil makes a config
			// survive a JSON round trip (omitempty drops empty lists) unchanged.
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.decode(item, s.Index(i), path+"["+strconv.Itoa(i)+"]")
		}
		v.Set(s)
	case reflect.String:
		var s string
		if d.decodeString(n, &s, path) {
			v.SetString(s)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
			d.fail(n, path, scalarValue(n), "cannot use %s as an integer", describe(n))
			return
		}
		var i int64
		if err := n.Decode(&i); err != nil || v.OverflowInt(i) {
			d.fail(n, path, n.Value, "integer %s out of range", n.Value)
			return
		}
		v.SetInt(i)
	case reflect.Float64:
		// Extension fields (rateLimit.requestsPerSecond, circuitBreaker.failureRatio)
		// take fractions; an integer literal is a number too.
		if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!float" && n.ShortTag() != "!!int") {
			d.fail(n, path, scalarValue(n), "cannot use %s as a number", describe(n))
			return
		}
		var f float64
		if err := n.Decode(&f); err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			d.fail(n, path, n.Value, "number %s is not finite", n.Value)
			return
		}
		v.SetFloat(f)
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
			d.fail(n, path, scalarValue(n), "cannot use %s as a boolean (true or false)", describe(n))
			return
		}
		var b bool
		if err := n.Decode(&b); err != nil {
			d.fail(n, path, n.Value, "cannot use %s as a boolean (true or false)", describe(n))
			return
		}
		v.SetBool(b)
	default:
		// The model has no other kinds; reaching here means model.go grew a field
		// type this decoder does not know, which is a programming error worth a
		// clear message rather than a panic.
		d.fail(n, path, "", "field of Go type %s is not supported by the config decoder", v.Type())
	}
}

func (d *decoder) decodeString(n *yaml.Node, s *string, path string) bool {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		if n.Kind == yaml.ScalarNode {
			d.fail(n, path, n.Value, "cannot use %s as a string; quote it", describe(n))
		} else {
			d.fail(n, path, "", "cannot use %s as a string", describe(n))
		}
		return false
	}
	if !utf8.ValidString(n.Value) {
		d.fail(n, path, "", "string is not valid UTF-8")
		return false
	}
	*s = n.Value
	return true
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	defer d.leave()
	if !d.enter(n, path) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, scalarValue(n), "cannot use %s as a mapping", describe(n))
		return
	}
	// describe-* output nests the resource under its kind's name; a mapping whose
	// only key is that name is the wrapper, not the resource.
	if key, ok := wrapperKey(v.Type()); ok && len(n.Content) == 2 && n.Content[0].Value == key {
		inner := n.Content[1]
		for inner.Kind == yaml.AliasNode && inner.Alias != nil {
			inner = inner.Alias
		}
		if inner.Kind == yaml.MappingNode {
			d.decodeStruct(inner, v, path)
			return
		}
	}
	info := d.structInfo(v.Type())
	seen := map[string]int{}
	d.decodeMapping(n, v, path, info, seen, false)
}

// decodeMapping applies the keys of n to v. Merge keys ("<<") are applied first so
// explicit keys override them, as YAML specifies; a key repeated explicitly in one
// mapping is an error.
func (d *decoder) decodeMapping(n *yaml.Node, v reflect.Value, path string, info *structInfo, seen map[string]int, merged bool) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			d.decodeMerge(n.Content[i+1], v, path, info, seen)
		}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			continue
		}
		if k.Kind != yaml.ScalarNode {
			d.fail(k, path, "", "mapping key must be a plain name, not %s", describe(k))
			continue
		}
		name := k.Value
		fpath := joinPath(path, name)
		if !merged {
			if first, dup := seen[name]; dup && first > 0 {
				d.fail(k, fpath, "", "duplicate key (first at line %d)", first)
				continue
			}
			seen[name] = k.Line
		}
		f, ok := info.byName[name]
		if !ok {
			msg := "unknown field"
			if _, res := wrapperKey(v.Type()); res && slices.Contains(listOnlyFields, name) {
				msg += "; list-* output names resources without their spec: use describe-* output"
			} else if s := suggest(name, info.names); s != "" {
				msg += "; did you mean " + s + "?"
			}
			d.fail(k, fpath, "", "%s", msg)
			continue
		}
		fv := v.FieldByIndex(f.index)
		fv.SetZero()
		d.decode(val, fv, fpath)
	}
}

func (d *decoder) decodeMerge(src *yaml.Node, v reflect.Value, path string, info *structInfo, seen map[string]int) {
	defer d.leave()
	if !d.enter(src, path) {
		return
	}
	for src.Kind == yaml.AliasNode && src.Alias != nil {
		src = src.Alias
	}
	switch src.Kind {
	case yaml.MappingNode:
		d.decodeMapping(src, v, path, info, seen, true)
	case yaml.SequenceNode:
		// Earlier mappings in a merge list take precedence, so apply them last.
		for i := len(src.Content) - 1; i >= 0; i-- {
			d.decodeMerge(src.Content[i], v, path, info, seen)
		}
	default:
		d.fail(src, path, scalarValue(src), "merge key (<<) needs a mapping or a list of mappings")
	}
}

// listOnlyFields are the fields `aws appmesh list-*` prints beside a resource's name
// (describe-* puts them under metadata), so meeting one says which output was pasted.
var listOnlyFields = []string{"createdAt", "lastUpdatedAt", "version"}

// structInfo lists the json names of t's fields, promoting the fields of embedded
// structs (ResourceMeta) unless an outer field has the same name, as encoding/json
// does.
func (d *decoder) structInfo(t reflect.Type) *structInfo {
	if si, ok := d.fields[t]; ok {
		return si
	}
	si := &structInfo{byName: map[string]fieldInfo{}}
	var embedded []reflect.StructField
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			embedded = append(embedded, f)
			continue
		}
		if !f.IsExported() {
			continue
		}
		name := jsonName(f)
		if name == "-" {
			continue
		}
		si.byName[name] = fieldInfo{name: name, index: f.Index}
		si.names = append(si.names, name)
	}
	for _, e := range embedded {
		inner := d.structInfo(e.Type)
		for _, name := range inner.names {
			if _, taken := si.byName[name]; taken {
				continue
			}
			si.byName[name] = fieldInfo{name: name, index: append(append([]int{}, e.Index...), inner.byName[name].index...)}
			si.names = append(si.names, name)
		}
	}
	d.fields[t] = si
	return si
}

func jsonName(f reflect.StructField) string {
	tag := f.Tag.Get("json")
	name, _, _ := strings.Cut(tag, ",")
	if name == "" {
		return f.Name
	}
	return name
}

// suggest returns the known name closest to name when it is within edit distance 2
// (compared case-insensitively), or "".
func suggest(name string, known []string) string {
	best, bestDist := "", 3
	lname := strings.ToLower(name)
	for _, k := range known {
		if dist := editDistance(lname, strings.ToLower(k)); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in runes.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
