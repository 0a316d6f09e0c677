package config

import (
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unsafe"
)

// Digest is a short stable hash of c's canonical JSON (the form /config prints),
// used as the config version: equal configs have equal digests, whatever form (YAML,
// JSON, describe-* output) they were read from.
//
// The canonical JSON is json.Marshal's output, byte for byte, but it is streamed into
// the hash instead of built: for a mesh of 10,000 routes json.Marshal spent ~20 ms
// and grew a 3 MB buffer (7 MB of fresh pages with its doublings) on meshd's path to
// serving. digest_test.go checks the stream equals json.Marshal's bytes on every corpus
// spec, the generated meshes and values chosen for escaping and number formatting.
func (c *Config) Digest() string {
	h := sha256.New()
	if err := writeCanonical(h, c); err != nil {
		// Only a value json.Marshal would refuse gets here (a NaN in a float field
		// set by hand, a channel in Metadata): the hash then covers whatever the old
		// path wrote, json.Marshal's bytes or, when it fails, the Go representation.
		h.Reset()
		b, err := json.Marshal(c)
		if err != nil {
			b = fmt.Appendf(nil, "%#v", c)
		}
		h.Write(b)
	}
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0])[:8])
}

// writeCanonical writes json.Marshal(c)'s bytes to w, through a small buffer; an error
// means json.Marshal would have failed, or c holds a shape the plan does not know (then
// nothing useful was written).
func writeCanonical(w io.Writer, c *Config) error {
	enc, err := configEncoder()
	if err != nil {
		return err
	}
	e := canonWriter{w: w, buf: make([]byte, 0, canonBufSize)}
	if c == nil {
		e.buf = append(e.buf, "null"...)
	} else {
		enc(&e, unsafe.Pointer(c))
	}
	e.flush()
	return e.err
}

// canonBufSize is what the writer gathers before a Write: large enough that the hash
// sees few calls, small enough to stay in cache.
const canonBufSize = 8 << 10

type canonWriter struct {
	w   io.Writer
	buf []byte
	err error
}

func (e *canonWriter) flush() {
	if len(e.buf) > 0 && e.err == nil {
		_, e.err = e.w.Write(e.buf)
	}
	e.buf = e.buf[:0]
}

// maybeFlush hands the buffer on once it is mostly full; called between values, so a
// value never straddles the check.
func (e *canonWriter) maybeFlush() {
	if len(e.buf) >= canonBufSize-512 {
		e.flush()
	}
}

func (e *canonWriter) fail(err error) {
	if e.err == nil {
		e.err = err
	}
}

// encFn writes the value of its type at p.
type encFn func(e *canonWriter, p unsafe.Pointer)

var (
	configEncOnce sync.Once
	configEnc     encFn
	configEncErr  error
)

// configEncoder is the plan for *Config, built once from the model's types.
func configEncoder() (encFn, error) {
	configEncOnce.Do(func() {
		b := &planBuilder{done: map[reflect.Type]*encFn{}}
		configEnc, configEncErr = b.build(reflect.TypeFor[Config]())
	})
	return configEnc, configEncErr
}

var errShape = errors.New("config digest: a model type the canonical encoder does not know")

type planBuilder struct {
	done map[reflect.Type]*encFn
}

var (
	marshalerType     = reflect.TypeFor[json.Marshaler]()
	textMarshalerType = reflect.TypeFor[encoding.TextMarshaler]()
)

// build returns the encoder of t. Types json.Marshal treats specially (Marshaler and
// TextMarshaler implementations, maps, arrays, []byte) and interface values are
// written by json.Marshal itself, which costs an allocation or two but keeps their
// bytes exactly its own; the model has them only in describe-* metadata.
func (b *planBuilder) build(t reflect.Type) (encFn, error) {
	if f, ok := b.done[t]; ok {
		// A recursive type: the cell is filled once its plan is built.
		return func(e *canonWriter, p unsafe.Pointer) { (*f)(e, p) }, nil
	}
	cell := new(encFn)
	b.done[t] = cell
	f, err := b.buildNew(t)
	if err != nil {
		return nil, err
	}
	*cell = f
	return f, nil
}

func (b *planBuilder) buildNew(t reflect.Type) (encFn, error) {
	if t.Implements(marshalerType) || t.Implements(textMarshalerType) ||
		reflect.PointerTo(t).Implements(marshalerType) || reflect.PointerTo(t).Implements(textMarshalerType) {
		return marshalFallback(t), nil
	}
	switch t.Kind() {
	case reflect.String:
		return func(e *canonWriter, p unsafe.Pointer) { e.string(*(*string)(p)) }, nil
	case reflect.Bool:
		return func(e *canonWriter, p unsafe.Pointer) { e.buf = strconv.AppendBool(e.buf, *(*bool)(p)) }, nil
	case reflect.Int:
		return func(e *canonWriter, p unsafe.Pointer) { e.buf = strconv.AppendInt(e.buf, int64(*(*int)(p)), 10) }, nil
	case reflect.Int8:
		return func(e *canonWriter, p unsafe.Pointer) { e.buf = strconv.AppendInt(e.buf, int64(*(*int8)(p)), 10) }, nil
	case reflect.Int16:
		return func(e *canonWriter, p unsafe.Pointer) { e.buf = strconv.AppendInt(e.buf, int64(*(*int16)(p)), 10) }, nil
	case reflect.Int32:
		return func(e *canonWriter, p unsafe.Pointer) { e.buf = strconv.AppendInt(e.buf, int64(*(*int32)(p)), 10) }, nil
	case reflect.Int64:
		return func(e *canonWriter, p unsafe.Pointer) { e.buf = strconv.AppendInt(e.buf, *(*int64)(p), 10) }, nil
	case reflect.Uint:
		return func(e *canonWriter, p unsafe.Pointer) { e.buf = strconv.AppendUint(e.buf, uint64(*(*uint)(p)), 10) }, nil
	case reflect.Uint8:
		return func(e *canonWriter, p unsafe.Pointer) { e.buf = strconv.AppendUint(e.buf, uint64(*(*uint8)(p)), 10) }, nil
	case reflect.Uint16:
		return func(e *canonWriter, p unsafe.Pointer) { e.buf = strconv.AppendUint(e.buf, uint64(*(*uint16)(p)), 10) }, nil
	case reflect.Uint32:
		return func(e *canonWriter, p unsafe.Pointer) { e.buf = strconv.AppendUint(e.buf, uint64(*(*uint32)(p)), 10) }, nil
	case reflect.Uint64:
		return func(e *canonWriter, p unsafe.Pointer) { e.buf = strconv.AppendUint(e.buf, *(*uint64)(p), 10) }, nil
	case reflect.Float64:
		return func(e *canonWriter, p unsafe.Pointer) { e.float(*(*float64)(p), 64) }, nil
	case reflect.Float32:
		return func(e *canonWriter, p unsafe.Pointer) { e.float(float64(*(*float32)(p)), 32) }, nil
	case reflect.Pointer:
		elem, err := b.build(t.Elem())
		if err != nil {
			return nil, err
		}
		return func(e *canonWriter, p unsafe.Pointer) {
			q := *(*unsafe.Pointer)(p)
			if q == nil {
				e.buf = append(e.buf, "null"...)
				return
			}
			elem(e, q)
		}, nil
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return marshalFallback(t), nil // base64, or a named byte type's own encoding
		}
		elem, err := b.build(t.Elem())
		if err != nil {
			return nil, err
		}
		size := t.Elem().Size()
		return func(e *canonWriter, p unsafe.Pointer) {
			s := (*sliceHeader)(p)
			if s.data == nil {
				e.buf = append(e.buf, "null"...)
				return
			}
			e.buf = append(e.buf, '[')
			for i := range s.len {
				if i > 0 {
					e.buf = append(e.buf, ',')
				}
				elem(e, unsafe.Add(s.data, uintptr(i)*size))
				e.maybeFlush()
			}
			e.buf = append(e.buf, ']')
		}, nil
	case reflect.Struct:
		return b.structEnc(t)
	case reflect.Interface, reflect.Map, reflect.Array:
		return marshalFallback(t), nil
	}
	return nil, fmt.Errorf("%w: %v", errShape, t)
}

type sliceHeader struct {
	data     unsafe.Pointer
	len, cap int
}

// marshalFallback writes json.Marshal's encoding of the value at p (as a pointer, so a
// pointer-receiver MarshalJSON runs, as it does for json.Marshal's addressable fields).
func marshalFallback(t reflect.Type) encFn {
	return func(e *canonWriter, p unsafe.Pointer) {
		b, err := json.Marshal(reflect.NewAt(t, p).Interface())
		if err != nil {
			e.fail(err)
			return
		}
		e.buf = append(e.buf, b...)
	}
}

type fieldEnc struct {
	key       string // `"name":`, escaped as json.Marshal escapes it
	offset    uintptr
	omitEmpty bool
	empty     func(p unsafe.Pointer) bool
	enc       encFn
}

func (b *planBuilder) structEnc(t reflect.Type) (encFn, error) {
	fields, err := jsonFields(t)
	if err != nil {
		return nil, err
	}
	encs := make([]fieldEnc, len(fields))
	for i, f := range fields {
		enc, err := b.build(f.typ)
		if err != nil {
			return nil, err
		}
		key, _ := json.Marshal(f.name)
		encs[i] = fieldEnc{key: string(key) + ":", offset: f.offset, omitEmpty: f.omitEmpty, empty: emptyFn(f.typ), enc: enc}
	}
	return func(e *canonWriter, p unsafe.Pointer) {
		e.buf = append(e.buf, '{')
		first := true
		for i := range encs {
			f := &encs[i]
			fp := unsafe.Add(p, f.offset)
			if f.omitEmpty && f.empty(fp) {
				continue
			}
			if !first {
				e.buf = append(e.buf, ',')
			}
			first = false
			e.buf = append(e.buf, f.key...)
			f.enc(e, fp)
		}
		e.buf = append(e.buf, '}')
	}, nil
}

// emptyFn is encoding/json's isEmptyValue for omitempty, over the value at p.
func emptyFn(t reflect.Type) func(p unsafe.Pointer) bool {
	switch t.Kind() {
	case reflect.String:
		return func(p unsafe.Pointer) bool { return len(*(*string)(p)) == 0 }
	case reflect.Bool:
		return func(p unsafe.Pointer) bool { return !*(*bool)(p) }
	case reflect.Pointer:
		return func(p unsafe.Pointer) bool { return *(*unsafe.Pointer)(p) == nil }
	case reflect.Slice:
		return func(p unsafe.Pointer) bool { return (*sliceHeader)(p).len == 0 }
	case reflect.Struct:
		return func(unsafe.Pointer) bool { return false }
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		// Zero in every bit, whatever the width.
		size := t.Size()
		return func(p unsafe.Pointer) bool {
			for _, b := range unsafe.Slice((*byte)(p), size) {
				if b != 0 {
					return false
				}
			}
			return true
		}
	case reflect.Float32, reflect.Float64:
		return func(p unsafe.Pointer) bool { return reflect.NewAt(t, p).Elem().Float() == 0 } // -0 is empty too
	case reflect.Interface:
		return func(p unsafe.Pointer) bool { return reflect.NewAt(t, p).Elem().IsNil() }
	case reflect.Map, reflect.Array:
		return func(p unsafe.Pointer) bool { return reflect.NewAt(t, p).Elem().Len() == 0 }
	}
	return func(unsafe.Pointer) bool { return false }
}

type jsonField struct {
	name      string
	index     []int
	typ       reflect.Type
	offset    uintptr
	tagged    bool
	omitEmpty bool
}

// jsonFields lists t's fields as encoding/json's typeFields does for the shapes the
// model uses (embedded structs by value, names from the json tag, Go's rule that the
// shallowest field of a name wins and a tie hides them all unless one is tagged), in
// json's order. Embedding by pointer and the ",string" and ",omitzero" options are
// refused: the caller then falls back to json.Marshal.
func jsonFields(t reflect.Type) ([]jsonField, error) {
	type level struct {
		typ    reflect.Type
		index  []int
		offset uintptr
	}
	var all []jsonField
	current := []level{{typ: t}}
	visited := map[reflect.Type]bool{}
	for len(current) > 0 {
		var next []level
		var found []jsonField
		for _, lv := range current {
			if visited[lv.typ] {
				// json annihilates or hides a struct embedded twice by rules the
				// model has no use for.
				return nil, fmt.Errorf("%w: %v embedded twice", errShape, lv.typ)
			}
			visited[lv.typ] = true
			for i := range lv.typ.NumField() {
				sf := lv.typ.Field(i)
				if sf.Anonymous {
					ft := sf.Type
					if ft.Kind() == reflect.Pointer {
						return nil, fmt.Errorf("%w: embedded pointer %v.%s", errShape, lv.typ, sf.Name)
					}
					if !sf.IsExported() && ft.Kind() != reflect.Struct {
						continue
					}
				} else if !sf.IsExported() {
					continue
				}
				tag := sf.Tag.Get("json")
				if tag == "-" {
					continue
				}
				name, opts, _ := strings.Cut(tag, ",")
				omitEmpty := false
				for o := range strings.SplitSeq(opts, ",") {
					switch o {
					case "omitempty":
						omitEmpty = true
					case "":
					default:
						return nil, fmt.Errorf("%w: option %q on %v.%s", errShape, o, lv.typ, sf.Name)
					}
				}
				if name != "" && !validTagName(name) {
					name = ""
				}
				index := append(append([]int(nil), lv.index...), i)
				if sf.Anonymous && name == "" && sf.Type.Kind() == reflect.Struct {
					next = append(next, level{typ: sf.Type, index: index, offset: lv.offset + sf.Offset})
					continue
				}
				f := jsonField{name: name, index: index, typ: sf.Type, offset: lv.offset + sf.Offset, tagged: name != "", omitEmpty: omitEmpty}
				if f.name == "" {
					f.name = sf.Name
				}
				found = append(found, f)
			}
		}
		// Fields of this depth hide deeper ones of the same name; among themselves the
		// tagged one wins, and a tie leaves none.
		seen := map[string]bool{}
		for _, f := range all {
			seen[f.name] = true
		}
		byName := map[string][]jsonField{}
		var order []string
		for _, f := range found {
			if seen[f.name] {
				continue
			}
			if _, ok := byName[f.name]; !ok {
				order = append(order, f.name)
			}
			byName[f.name] = append(byName[f.name], f)
		}
		for _, n := range order {
			fs := byName[n]
			var tagged []jsonField
			for _, f := range fs {
				if f.tagged {
					tagged = append(tagged, f)
				}
			}
			switch {
			case len(fs) == 1:
				all = append(all, fs[0])
			case len(tagged) == 1:
				all = append(all, tagged[0])
			default:
				all = append(all, jsonField{name: n}) // hidden: a placeholder that keeps the name taken
			}
		}
		current = next
	}
	out := all[:0]
	for _, f := range all {
		if f.typ != nil {
			out = append(out, f)
		}
	}
	// json orders fields by their index sequence: an embedded struct's fields where it
	// is embedded.
	sortByIndex(out)
	return out, nil
}

func sortByIndex(fs []jsonField) {
	less := func(a, b []int) bool {
		for k := range min(len(a), len(b)) {
			if a[k] != b[k] {
				return a[k] < b[k]
			}
		}
		return len(a) < len(b)
	}
	for i := 1; i < len(fs); i++ {
		for j := i; j > 0 && less(fs[j].index, fs[j-1].index); j-- {
			fs[j], fs[j-1] = fs[j-1], fs[j]
		}
	}
}

// validTagName is encoding/json's isValidTag.
func validTagName(s string) bool {
	for _, c := range s {
		switch {
		case strings.ContainsRune("!#$%&()*+-./:;<=>?@[]^_{|}~ ", c):
		case !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c > 127):
			return false
		}
	}
	return true
}

// string writes s as json.Marshal does. A string of printable ASCII without a
// character json.Marshal escapes (the quote, the backslash, and <, > and & for HTML)
// is written as it is; any other goes through json.Marshal, whose escaping is the
// canonical one.
func (e *canonWriter) string(s string) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, err := json.Marshal(s)
			if err != nil {
				e.fail(err)
				return
			}
			e.buf = append(e.buf, b...)
			return
		}
	}
	e.buf = append(e.buf, '"')
	e.buf = append(e.buf, s...)
	e.buf = append(e.buf, '"')
}

// float is encoding/json's floatEncoder: ES6 number formatting, and an error for a
// value JSON cannot hold.
func (e *canonWriter) float(f float64, bits int) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		e.fail(fmt.Errorf("config digest: unsupported float value %v", f))
		return
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 {
		if bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	e.buf = strconv.AppendFloat(e.buf, f, format, -1, bits)
	if format == 'e' {
		// clean up e-09 to e-9
		n := len(e.buf)
		if n >= 4 && e.buf[n-4] == 'e' && e.buf[n-3] == '-' && e.buf[n-2] == '0' {
			e.buf[n-2] = e.buf[n-1]
			e.buf = e.buf[:n-1]
		}
	}
}
