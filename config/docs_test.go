package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// TestReferenceCoversModel keeps docs/config-reference.md in step with model.go: every
// field name the parser accepts appears in the reference.
func TestReferenceCoversModel(t *testing.T) {
	doc, err := os.ReadFile("../docs/config-reference.md")
	if err != nil {
		t.Fatal(err)
	}
	d := &decoder{fields: map[reflect.Type]*structInfo{}}
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type)
	walk = func(typ reflect.Type) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || seen[typ] {
			return
		}
		seen[typ] = true
		si := d.structInfo(typ)
		for _, name := range si.names {
			if !strings.Contains(string(doc), name) {
				t.Errorf("docs/config-reference.md does not mention %s.%s", typ.Name(), name)
			}
			walk(typ.FieldByIndex(si.byName[name].index).Type)
		}
	}
	walk(reflect.TypeFor[Config]())
	if len(seen) < 50 {
		t.Errorf("walked only %d model types", len(seen))
	}
}
