package config

import (
	"math"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unsafe"
)

// The JSON fast path. Decoding through yaml.Node costs a node, a tag resolution and
// several allocations per value (0.9 s of CPU and ~100 MB of garbage for a 3 MB mesh
// of 10,000 routes), only so that an error can name its line. Most configs have no
// error, so a config that is one JSON document in meshd's layout is first decoded
// straight from its bytes into the model. The fast path accepts only what the
// yaml.Node decoder would accept and decode to the same Config; anything it is not sure
// of (an unknown or repeated field, a value of the wrong type, an escape sequence, a
// byte YAML reads differently, a number YAML might resolve differently) makes it give
// up, and Parse then runs the yaml.Node decoder, which produces the error with its file,
// document, field path and line exactly as before. fastjson_test.go checks both paths
// give the same Config on every corpus spec and the same errors on bad inputs, and
// fuzzes that whatever the fast path accepts the slow path accepts identically.

// fastParseJSON decodes data, one JSON object in meshd's layout, into a Config; ok is
// false when the yaml.Node decoder must decide.
func fastParseJSON(data []byte) (c *Config, ok bool) {
	// YAML reads leading and trailing whitespace in block context, where a tab cannot
	// start a token; spaces and line breaks only, then, around the value.
	start := 0
	for start < len(data) && (data[start] == ' ' || data[start] == '\n' || data[start] == '\r') {
		start++
	}
	if start == len(data) || data[start] != '{' {
		return nil, false
	}
	p := fastParser{
		// The parser's strings are views of data, not a copy (3 MB for 10,000 routes):
		// none outlives the parse, since strValue clones what the Config keeps and
		// keys and numbers are only looked up or converted. Parse's caller does not
		// change data while Parse runs.
		s:      unsafe.String(unsafe.SliceData(data), len(data)),
		i:      start,
		budget: min(maxNodeVisits, minNodeVisits+visitsPerByte*len(data)),
		// About one distinct string per 300 bytes in a large mesh: sized from the
		// start, the map is not rehashed a dozen times on the way.
		intern: make(map[string]string, len(data)/256),
	}
	var cfg Config
	if !p.value(reflect.ValueOf(&cfg).Elem()) {
		return nil, false
	}
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\n' || p.s[p.i] == '\r') {
		p.i++
	}
	if p.i != len(p.s) {
		return nil, false // a stream of values, or trailing bytes: the slow path's forms
	}
	return &cfg, true
}

type fastParser struct {
	s      string
	i      int
	visits int // counted as decoder.enter counts them, so a budget error is the slow path's
	budget int
	depth  int
	// intern gives equal values one string ("http", a node's name in every route that
	// targets it), copied out of s so that the Config does not keep the whole
	// document alive: a mesh of 10,000 routes holds 1 MB of distinct strings in 3 MB of
	// JSON.
	intern map[string]string
}

// strValue reads a string value, interned.
func (p *fastParser) strValue() (string, bool) {
	raw, ok := p.str()
	if !ok {
		return "", false
	}
	if v, ok := p.intern[raw]; ok {
		return v, true
	}
	v := strings.Clone(raw)
	p.intern[v] = v
	return v, true
}

// fastStruct is a struct type's fields by JSON name, shared by every parse.
type fastStruct struct {
	byName map[string]int // index into fields
	fields []fastField
}

type fastField struct {
	index []int
}

var fastStructs sync.Map // reflect.Type → *fastStruct

func fastStructOf(t reflect.Type) (*fastStruct, bool) {
	if fs, ok := fastStructs.Load(t); ok {
		return fs.(*fastStruct), true
	}
	// The same names and promotion rules as the yaml.Node decoder's structInfo.
	si := newDecoder(0).structInfo(t)
	if len(si.names) > 64 {
		return nil, false // the repeated-key bitmask holds 64 fields
	}
	fs := &fastStruct{byName: make(map[string]int, len(si.names)), fields: make([]fastField, len(si.names))}
	for i, name := range si.names {
		fs.byName[name] = i
		fs.fields[i] = fastField{index: si.byName[name].index}
	}
	fs2, _ := fastStructs.LoadOrStore(t, fs)
	return fs2.(*fastStruct), true
}

var staticEndpointType = reflect.TypeFor[StaticEndpoint]()

// colon passes a key's ':' with the blanks before it. YAML's implicit keys are one
// line: a line break between a key and its colon, valid JSON, is a YAML error, so such
// a document is the slow path's.
func (p *fastParser) colon() bool {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
	if p.i >= len(p.s) || p.s[p.i] != ':' {
		return false
	}
	p.i++
	return true
}

func (p *fastParser) ws() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// enter mirrors decoder.enter's count of visits and nesting.
func (p *fastParser) enter() bool {
	p.visits++
	p.depth++
	return p.visits <= p.budget && p.depth <= maxDepth
}

// value decodes the JSON value at p.i into v, as decoder.decode would.
func (p *fastParser) value(v reflect.Value) bool {
	// Not a deferred decrement: a defer per value was 3% of a large parse.
	ok := p.enter() && p.valueIn(v)
	p.depth--
	return ok
}

func (p *fastParser) valueIn(v reflect.Value) bool {
	p.ws()
	if p.i >= len(p.s) {
		return false
	}
	if p.s[p.i] == 'n' {
		// null leaves the zero value, whatever the type.
		return p.literal("null")
	}
	switch v.Kind() {
	case reflect.Pointer:
		elem := reflect.New(v.Type().Elem())
		if !p.value(elem.Elem()) {
			return false
		}
		v.Set(elem)
		return true
	case reflect.Interface:
		// Metadata / Status: accepted in any shape and ignored, as by the slow path.
		return p.skip()
	case reflect.Struct:
		if v.Type() == staticEndpointType && p.s[p.i] == '"' {
			s, ok := p.strValue()
			if ok {
				v.Set(reflect.ValueOf(StaticEndpoint{Address: s}))
			}
			return ok
		}
		return p.object(v)
	case reflect.Slice:
		return p.array(v)
	case reflect.String:
		s, ok := p.strValue()
		if ok {
			v.SetString(s)
		}
		return ok
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := p.integer()
		if !ok || v.OverflowInt(n) {
			return false
		}
		v.SetInt(n)
		return true
	case reflect.Float64:
		f, ok := p.float()
		if ok {
			v.SetFloat(f)
		}
		return ok
	case reflect.Bool:
		switch p.s[p.i] {
		case 't':
			if p.literal("true") {
				v.SetBool(true)
				return true
			}
		case 'f':
			return p.literal("false")
		}
		return false
	}
	return false
}

func (p *fastParser) literal(word string) bool {
	if len(p.s)-p.i < len(word) || p.s[p.i:p.i+len(word)] != word {
		return false
	}
	p.i += len(word)
	// A literal glued to a letter or digit ("nullx", "true1") is not JSON.
	if p.i < len(p.s) {
		if c := p.s[p.i]; c == '_' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// str reads a string of printable ASCII without escapes: what YAML reads as the same
// string. Escapes, other bytes (YAML folds some line breaks of other encodings, rejects
// control characters) and invalid UTF-8 are the slow path's to decide.
func (p *fastParser) str() (string, bool) {
	if p.i >= len(p.s) || p.s[p.i] != '"' {
		return "", false
	}
	start := p.i + 1
	for j := start; j < len(p.s); j++ {
		c := p.s[j]
		if c == '"' {
			p.i = j + 1
			return p.s[start:j], true
		}
		if c < 0x20 || c > 0x7e || c == '\\' {
			return "", false
		}
	}
	return "", false
}

// number returns the literal of a JSON number at p.i: -?(0|[1-9][0-9]*)(.[0-9]+)?
// (exponents left to the slow path), and whether it has a fraction.
func (p *fastParser) number() (lit string, frac bool, ok bool) {
	j := p.i
	if j < len(p.s) && p.s[j] == '-' {
		j++
	}
	digits := j
	for j < len(p.s) && '0' <= p.s[j] && p.s[j] <= '9' {
		j++
	}
	n := j - digits
	if n == 0 || (n > 1 && p.s[digits] == '0') {
		return "", false, false
	}
	if j < len(p.s) && p.s[j] == '.' {
		j++
		fd := j
		for j < len(p.s) && '0' <= p.s[j] && p.s[j] <= '9' {
			j++
		}
		if j == fd {
			return "", false, false
		}
		frac = true
		n += j - fd
	}
	if j < len(p.s) {
		if c := p.s[j]; c == 'e' || c == 'E' || c == '_' || c == '.' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') {
			return "", false, false
		}
	}
	// Up to 18 digits: no integer overflows int64 and YAML resolves the same tag.
	if n > 18 {
		return "", false, false
	}
	lit = p.s[p.i:j]
	p.i = j
	return lit, frac, true
}

func (p *fastParser) integer() (int64, bool) {
	lit, frac, ok := p.number()
	if !ok || frac {
		return 0, false
	}
	n, err := strconv.ParseInt(lit, 10, 64)
	return n, err == nil
}

func (p *fastParser) float() (float64, bool) {
	lit, _, ok := p.number()
	if !ok {
		return 0, false
	}
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, false
	}
	return f, true
}

// object decodes a JSON object into struct v, as decodeStruct would.
func (p *fastParser) object(v reflect.Value) bool {
	ok := p.enter() && p.objectIn(v)
	p.depth--
	return ok
}

func (p *fastParser) objectIn(v reflect.Value) bool {
	if p.s[p.i] != '{' {
		return false
	}
	p.i++
	fs, ok := fastStructOf(v.Type())
	if !ok {
		return false
	}
	var seen uint64
	p.ws()
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
		return true
	}
	for {
		p.ws()
		key, ok := p.str()
		if !ok {
			return false
		}
		fi, known := fs.byName[key]
		// An unknown key is an error, and so is a describe-* wrapper ({"route": {...}},
		// whose key is no field of the resource) or a merge key: the slow path's.
		if !known || seen&(1<<fi) != 0 {
			return false
		}
		seen |= 1 << fi
		if !p.colon() {
			return false
		}
		if !p.value(v.FieldByIndex(fs.fields[fi].index)) {
			return false
		}
		p.ws()
		if p.i >= len(p.s) {
			return false
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			return true
		default:
			return false
		}
	}
}

// array decodes a JSON array into slice v; an empty one leaves v nil, as the slow path.
func (p *fastParser) array(v reflect.Value) bool {
	if p.s[p.i] != '[' {
		return false
	}
	p.i++
	p.ws()
	if p.i < len(p.s) && p.s[p.i] == ']' {
		p.i++
		return true
	}
	// v is addressable (a field, or a pointer's element): it grows in place. A failure
	// leaves it half filled, which does not matter, since the whole Config is dropped.
	t := v.Type()
	v.Set(reflect.MakeSlice(t, 0, 1))
	counted := false
	for n := 0; ; n++ {
		if n == v.Cap() {
			// A long list (10,000 routes) is counted once it outgrows 16 elements and
			// grown to its length at once: doubling it cost 6.5 MB of copies that
			// were garbage at once, for a 3 MB config.
			if n >= 16 && !counted {
				// MakeSlice keeps the capacity asked for (Grow would round it up to
				// the allocation's size, and the trim below would copy it again).
				counted = true
				grown := reflect.MakeSlice(t, n, n+p.countAhead())
				reflect.Copy(grown, v)
				v.Set(grown)
			} else {
				v.Grow(n)
			}
		}
		v.SetLen(n + 1)
		if !p.value(v.Index(n)) {
			return false
		}
		p.ws()
		if p.i >= len(p.s) {
			return false
		}
		switch p.s[p.i] {
		case ',':
			p.i++
			continue
		case ']':
			p.i++
		default:
			return false
		}
		// The slow path's slices are exactly as long as the list; a long one grown by
		// doubling would hold up to twice the memory for the config's lifetime.
		if v.Cap() > n+1 && n+1 >= 16 {
			exact := reflect.MakeSlice(t, n+1, n+1)
			reflect.Copy(exact, v)
			v.Set(exact)
		}
		return true
	}
}

// countAhead counts the elements from p.i (the start of one) to the end of their
// array, without decoding them. It is a hint for the slice's capacity: on a document
// the fast path then gives up on (an escaped quote) it may be wrong, and array
// grows or trims as it would without it.
func (p *fastParser) countAhead() int {
	n, depth := 1, 0
	s := p.s
	for j := p.i; j < len(s); j++ {
		switch s[j] {
		case '"':
			// A byte loop: the strings are short, where IndexByte's set-up costs more
			// than it saves (it was 3% of a start).
			j++
			for j < len(s) && s[j] != '"' {
				j++
			}
		case '[', '{':
			depth++
		case ']', '}':
			if depth == 0 {
				return n
			}
			depth--
		case ',':
			if depth == 0 {
				n++
			}
		}
	}
	return n
}

// skip passes over any JSON value (Metadata, Status), checking that it is JSON.
func (p *fastParser) skip() bool {
	return p.skipValue(p.depth)
}

func (p *fastParser) skipValue(depth int) bool {
	p.ws()
	if p.i >= len(p.s) {
		return false
	}
	switch c := p.s[p.i]; {
	case c == '{' || c == '[':
		if depth+1 > maxDepth {
			return false
		}
		closer := byte(']')
		if c == '{' {
			closer = '}'
		}
		p.i++
		p.ws()
		if p.i < len(p.s) && p.s[p.i] == closer {
			p.i++
			return true
		}
		for {
			if c == '{' {
				p.ws()
				if _, ok := p.str(); !ok {
					return false
				}
				if !p.colon() {
					return false
				}
			}
			if !p.skipValue(depth + 1) {
				return false
			}
			p.ws()
			if p.i >= len(p.s) {
				return false
			}
			switch p.s[p.i] {
			case ',':
				p.i++
			case closer:
				p.i++
				return true
			default:
				return false
			}
		}
	case c == '"':
		_, ok := p.str()
		return ok
	case c == 't':
		return p.literal("true")
	case c == 'f':
		return p.literal("false")
	case c == 'n':
		return p.literal("null")
	case c == '-' || ('0' <= c && c <= '9'):
		_, _, ok := p.number()
		return ok
	}
	return false
}
