package proxy_test

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
	meshtls "github.com/meshd/meshd/tls"
)

// TestH2Spec proves meshd's HTTP/2 server conforms to RFC 7540/7541 as h2spec checks it:
// every h2spec case passes, normally and in strict mode (-S), against meshd's h2c
// listener and against a STRICT TLS listener (h2spec -t -k: HTTP/2 over TLS chosen by
// ALPN h2), routed to a real HTTP/2 upstream (net/http's h2c server, which reads request
// bodies and answers 200 with a small body). A failure names every failing case by its
// h2spec id (run one with `h2spec -p PORT ID`) and description, one per line, followed by
// what h2spec expected and got.
//
// h2spec comes from $H2SPEC, PATH or ~/go/bin; missing, the test skips (fails under
// CI=true). Install: go install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible
func TestH2Spec(t *testing.T) {
	bin := externalTool(t, "h2spec", "H2SPEC", "go install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible")
	up := testutil.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "hello from the upstream\n")
	}))
	// meshd's ingress listener serves the node's own app, whatever the authority: h2spec
	// sends :authority 127.0.0.1:PORT, which no egress route would match.
	srv := testutil.StartMeshd(t, "app", testutil.Render(t, `mesh:
  meshName: t
  spec: {egressFilter: {type: DROP_ALL}}
virtualNodes:
  - virtualNodeName: app
    spec:
      listeners: [{portMapping: {port: {{.}}, protocol: http2}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:{{.}}"]}}
`, up.Port))
	_, port, err := net.SplitHostPort(srv.IngressAddr())
	if err != nil {
		t.Fatal(err)
	}
	p := newPKI(t)
	p.write("app", meshtls.WorkloadRequest{DNSNames: []string{appServerName}})
	tlsSrv, _ := startTLSMeshd(t, tlsNodeYAML(up.Port, "http2", p.listenerTLS("STRICT", false), ""), proxy.Options{})
	_, tlsPort, err := net.SplitHostPort(tlsSrv.IngressAddr())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := h2Client(t, tlsSrv.IngressAddr(), p.client([]string{"h2"})).Get("https://" + appServerName + "/")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 || resp.TLS == nil {
		t.Fatalf("HTTP/2 over TLS through meshd: %s %s, want HTTP/2 200 over TLS", resp.Proto, resp.Status)
	}
	// The route works before h2spec judges it: a plain h2c GET gets the upstream's 200.
	resp, err = testutil.H2CClient(t, srv.IngressAddr()).Get("http://app.t.local/")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("h2c GET through meshd: %s %s, want HTTP/2 200", resp.Proto, resp.Status)
	}

	for _, mode := range []struct {
		name  string
		port  string
		flags []string
	}{
		{"normal", port, nil}, {"strict", port, []string{"-S"}},
		{"tls", tlsPort, []string{"-t", "-k"}}, {"tls strict", tlsPort, []string{"-t", "-k", "-S"}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			report := filepath.Join(t.TempDir(), "h2spec.xml")
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			args := append([]string{"-h", "127.0.0.1", "-p", mode.port, "-o", "5", "--junit-report", report}, mode.flags...)
			cmd := exec.CommandContext(ctx, bin, args...)
			cmd.Env = append(os.Environ(), "NO_COLOR=1", "TERM=dumb")
			out, runErr := cmd.CombinedOutput()
			cases, err := readH2SpecReport(report)
			if err != nil {
				t.Fatalf("h2spec %s: %v (exit: %v); its output:\n%s", strings.Join(args, " "), err, runErr, out)
			}
			var failed []h2specCase
			skipped := 0
			for _, c := range cases {
				if c.failed {
					failed = append(failed, c)
				}
				if c.skipped {
					skipped++
				}
			}
			switch {
			case len(cases) == 0:
				t.Fatalf("h2spec ran no case (exit: %v); its output:\n%s", runErr, out)
			case len(failed) > 0:
				var b strings.Builder
				fmt.Fprintf(&b, "h2spec %s: %d of %d cases failed against meshd:\n", mode.name, len(failed), len(cases))
				for _, c := range failed {
					fmt.Fprintf(&b, "FAIL %s  %s: %s\n", c.id, c.group, c.desc)
				}
				// h2spec's text: the frames or events it would accept, one a line, then
				// (last) what it got.
				b.WriteString("\nwhat h2spec expected (any of), then what it got (last line):\n")
				for _, c := range failed {
					fmt.Fprintf(&b, "%s %s\n    %s\n", c.id, c.desc, strings.ReplaceAll(strings.TrimSpace(c.detail), "\n", "\n    "))
				}
				t.Error(b.String())
			case runErr != nil:
				t.Fatalf("h2spec exited with %v though its report lists no failure; its output:\n%s", runErr, out)
			default:
				t.Logf("h2spec %s: all %d cases passed (%d skipped by h2spec)", mode.name, len(cases)-skipped, skipped)
			}
		})
	}
}

// h2specCase is one test case of h2spec's JUnit report.
type h2specCase struct {
	id      string // h2spec's case id: group id and 1-based position, e.g. http2/6.5.3/1
	group   string // e.g. "6.5.3. Settings Synchronization"
	desc    string
	skipped bool
	failed  bool
	detail  string // h2spec's failure or error text
}

// readH2SpecReport parses h2spec's --junit-report file. A testsuite is one group (its
// package attribute the group id, e.g. http2/5.1); its testcases come in the group's
// order (normal cases, then strict ones), and h2spec numbers a case by that position,
// which is the id it prints and accepts.
func readH2SpecReport(path string) ([]h2specCase, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("no JUnit report: %w", err)
	}
	type text struct {
		Inner string `xml:",innerxml"`
	}
	var doc struct {
		Suites []struct {
			Package string `xml:"package,attr"`
			Name    string `xml:"name,attr"`
			Cases   []struct {
				Desc    string `xml:"classname,attr"`
				Failure *text  `xml:"failure"`
				Error   *text  `xml:"error"`
				Skipped *text  `xml:"skipped"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("parse JUnit report: %w", err)
	}
	var cases []h2specCase
	for _, s := range doc.Suites {
		if s.Package == "" {
			continue
		}
		for i, tc := range s.Cases {
			c := h2specCase{id: fmt.Sprintf("%s/%d", s.Package, i+1), group: s.Name, desc: tc.Desc, skipped: tc.Skipped != nil}
			for _, f := range []*text{tc.Failure, tc.Error} {
				if f != nil {
					c.failed = true
					c.detail += unescapeXML(f.Inner)
				}
			}
			cases = append(cases, c)
		}
	}
	if len(cases) == 0 && len(doc.Suites) == 0 {
		return nil, errors.New("JUnit report holds no testsuite")
	}
	return cases, nil
}

// unescapeXML decodes the character references of innerxml text.
func unescapeXML(s string) string {
	var out strings.Builder
	d := xml.NewDecoder(strings.NewReader("<x>" + s + "</x>"))
	for {
		tok, err := d.Token()
		if err != nil {
			break
		}
		if cd, ok := tok.(xml.CharData); ok {
			out.Write(cd)
		}
	}
	if out.Len() == 0 {
		return s
	}
	return out.String()
}
