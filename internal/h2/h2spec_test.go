package h2

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// h2specPath finds h2spec: $H2SPEC, PATH, then ~/go/bin. Missing, the test skips, but
// not in CI, which installs it (.ci/run).
func h2specPath(t *testing.T) string {
	if p := os.Getenv("H2SPEC"); p != "" {
		return p
	}
	if p, err := exec.LookPath("h2spec"); err == nil {
		return p
	}
	if home, err := os.UserHomeDir(); err == nil {
		p := filepath.Join(home, "go", "bin", "h2spec")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("h2spec not found; CI installs it: go install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible")
	}
	t.Skip("h2spec not found: go install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible")
	return ""
}

type junit struct {
	Suites []struct {
		Name  string `xml:"name,attr"`
		Cases []struct {
			Name    string    `xml:"classname,attr"`
			Package string    `xml:"package,attr"`
			Failure *struct{} `xml:"failure"`
			Error   *struct{} `xml:"error"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

// RunH2Spec runs h2spec against addr and returns the failed cases and the number run.
func runH2Spec(t *testing.T, bin, addr string, strict bool) (failed []string, total int) {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	report := filepath.Join(t.TempDir(), "report.xml")
	args := []string{"-h", host, "-p", port, "-o", "5", "-j", report}
	if strict {
		args = append(args, "-S")
	}
	out, _ := exec.Command(bin, args...).CombinedOutput()
	data, err := os.ReadFile(report)
	if err != nil {
		t.Fatalf("h2spec wrote no report: %v\n%s", err, out)
	}
	// A failure's message may quote frame bytes that XML cannot carry.
	data = bytes.Map(func(r rune) rune {
		if r < 0x20 && r != '\n' && r != '\t' && r != '\r' {
			return '?'
		}
		return r
	}, data)
	var j junit
	if err := xml.Unmarshal(data, &j); err != nil {
		t.Fatalf("h2spec report: %v", err)
	}
	for _, s := range j.Suites {
		for _, c := range s.Cases {
			total++
			if c.Failure != nil || c.Error != nil {
				failed = append(failed, fmt.Sprintf("%s %s: %s", c.Package, s.Name, c.Name))
			}
		}
	}
	if total == 0 {
		t.Fatalf("h2spec ran no case:\n%s", out)
	}
	return failed, total
}

// The server passes every h2spec case, plain and strict.
func TestH2Spec(t *testing.T) {
	bin := h2specPath(t)
	// The handler reads the request before it answers, as meshd's proxy handler does
	// (it forwards the body and waits for the upstream's answer).
	_, addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = w.Write([]byte("ok"))
	}), Limits{})
	for _, strict := range []bool{false, true} {
		failed, total := runH2Spec(t, bin, addr, strict)
		for _, f := range failed {
			t.Errorf("h2spec (strict %v) failed: %s", strict, f)
		}
		t.Logf("h2spec strict=%v: %d cases, %d failed", strict, total, len(failed))
	}
}
