package accesslog

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestOperatorsDoc keeps OPERATORS.md in step with the code: every operator the table
// names compiles, every operator meshd knows is in the table, and the JSON example is
// what meshd writes.
func TestOperatorsDoc(t *testing.T) {
	b, err := os.ReadFile("OPERATORS.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	row := regexp.MustCompile("(?m)^\\| (`%[^|]*)\\|")
	op := regexp.MustCompile("`(%[A-Z_]+[^`]*%)`")
	documented := map[string]bool{}
	for _, cell := range row.FindAllStringSubmatch(doc, -1) {
		for _, m := range op.FindAllStringSubmatch(cell[1], -1) {
			o := strings.ReplaceAll(m[1], ":N%", ":8%")
			name := strings.TrimLeft(o, "%")
			if i := strings.IndexAny(name, "(:%"); i >= 0 {
				name = name[:i]
			}
			documented[name] = true
			if err := Validate(o, nil); err != nil {
				t.Errorf("OPERATORS.md lists %s, which does not compile: %v", m[1], err)
			}
		}
	}
	if len(documented) < 10 {
		t.Fatalf("read only %d operators from OPERATORS.md's table", len(documented))
	}
	for name := range simple {
		if !documented[name] {
			t.Errorf("%%%s%% is supported but OPERATORS.md's table does not list it", name)
		}
	}
	for _, name := range []string{"START_TIME", "REQ", "REQUEST_HEADER", "RESP", "RESPONSE_HEADER"} {
		if !documented[name] {
			t.Errorf("%%%s%% is supported but OPERATORS.md's table does not list it", name)
		}
	}

	f := mustCompile(t, "", []KV{{"start", "%START_TIME%"}, {"code", "%RESPONSE_CODE%"},
		{"ua", "%REQ(USER-AGENT)%"}, {"line", "%REQ(:METHOD)% %REQ(:PATH)%"}, {"upstream_ms", "%UPSTREAM_SERVICE_TIME%"}})
	out := strings.TrimSuffix(string(f.Append(nil, filled())), "\n")
	if !strings.Contains(doc, "\n"+out+"\n") {
		t.Errorf("OPERATORS.md's JSON example output is not what meshd writes:\n%s", out)
	}
	r := filled()
	r.Flags = "-"
	line := strings.TrimSuffix(string(mustCompile(t, "", nil).Append(nil, r)), "\n")
	if !strings.Contains(doc, "\n"+line+"\n") || !strings.Contains(doc, "\n"+strings.TrimSuffix(DefaultText, "\n")+"\n") {
		t.Errorf("OPERATORS.md's default format or its example is not meshd's:\n%s", line)
	}
}
