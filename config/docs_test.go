package config

import (
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// TestReferenceCoversModel keeps docs/config-reference.md in step with model.go: every
// field name the parser accepts appears in the reference, and every field table states
// each field's default (checkReferenceDefaults).
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
	checkReferenceDefaults(t, string(doc))
}

// checkReferenceDefaults: every markdown table whose first column is "field" has a
// "default" column, and each row fills it with a default, "required" or "none" (an
// empty cell or a bare dash leaves the reader guessing, which DESIGN.md rule 9 forbids).
func checkReferenceDefaults(t *testing.T, doc string) {
	t.Helper()
	var header []string
	rows := 0
	for i, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(line, "|") {
			header = nil
			continue
		}
		cells := splitRow(line)
		if header == nil {
			header = cells
			if header[0] == "field" && !slices.Contains(header, "default") {
				t.Errorf("docs/config-reference.md:%d: field table without a default column: %s", i+1, line)
			}
			continue
		}
		if strings.Trim(line, "|-: ") == "" || header[0] != "field" {
			continue
		}
		k := slices.Index(header, "default")
		if k < 0 || k >= len(cells) {
			continue
		}
		rows++
		if d := cells[k]; d == "" || d == "—" || d == "-" {
			t.Errorf("docs/config-reference.md:%d: %s states no default (want a value, \"required\" or \"none\")", i+1, cells[0])
		}
	}
	if rows < 100 {
		t.Errorf("checked only %d field rows", rows)
	}
}

// splitRow splits a markdown table row into trimmed cells, keeping escaped pipes (\\|)
// inside their cell.
func splitRow(line string) []string {
	line = strings.TrimSpace(line)
	line = strings.TrimSuffix(strings.TrimPrefix(line, "|"), "|")
	var cells []string
	var cur strings.Builder
	for i := 0; i < len(line); i++ {
		switch {
		case line[i] == '\\' && i+1 < len(line) && line[i+1] == '|':
			cur.WriteString("\\|")
			i++
		case line[i] == '|':
			cells = append(cells, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(line[i])
		}
	}
	return append(cells, strings.TrimSpace(cur.String()))
}
