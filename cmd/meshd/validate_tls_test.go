package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	meshtls "github.com/meshd/meshd/tls"
)

// TestValidateTLS: meshd validate fails, naming the field, on what meshd cannot honour
// in any tls block (an ACM certificate or trust, an SDS secret name no Workload API
// serves), with or without --node; a listener tls block meshd terminates is valid, and
// with --node its certificate and trust files are read as meshd run reads them: missing
// or expired files fail, naming the field and the file, files of the mesh CA pass.
func TestValidateTLS(t *testing.T) {
	dir := t.TempDir()
	ca, err := meshtls.NewCA(meshtls.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	issue := func(node string, now time.Time, ttl time.Duration) (string, string) {
		wc, err := ca.Issue(meshtls.WorkloadRequest{Mesh: "shop", Node: node, Now: now, TTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		crt, key, err := meshtls.WriteWorkload(dir, node, wc)
		if err != nil {
			t.Fatal(err)
		}
		return crt, key
	}
	goodCrt, goodKey := issue("a", time.Time{}, 0)
	oldCrt, oldKey := issue("old", time.Now().Add(-48*time.Hour), time.Hour)
	node := func(tls string) string {
		return fmt.Sprintf(`mesh: {meshName: shop}
virtualNodes:
  - virtualNodeName: a
    spec:
      listeners:
        - portMapping: {port: 8080, protocol: http}
          tls: %s
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:8080"]}}
`, tls)
	}
	file := func(mode, crt, key string) string {
		return fmt.Sprintf("{mode: %s, certificate: {file: {certificateChain: %q, privateKey: %q}}, validation: {trust: {file: {certificateChain: %q}}}}", mode, crt, key, caFile)
	}
	for _, c := range []struct {
		name     string
		tls      string
		node     bool
		code     int
		contains []string
	}{
		{"mesh CA files", file("STRICT", goodCrt, goodKey), true, 0, []string{"valid"}},
		{"mesh CA files, PERMISSIVE, without --node", file("PERMISSIVE", goodCrt, goodKey), false, 0, []string{"valid"}},
		{"missing files, without --node", file("STRICT", "/nonexistent/a.crt", "/nonexistent/a.key"), false, 0, []string{"valid"}},
		{"missing files", file("STRICT", "/nonexistent/a.crt", "/nonexistent/a.key"), true, 1,
			[]string{"virtualNodes[0].spec.listeners[0].tls.certificate.file", "/nonexistent/a.crt"}},
		{"expired certificate", file("STRICT", oldCrt, oldKey), true, 1,
			[]string{"virtualNodes[0].spec.listeners[0].tls.certificate.file", oldCrt, "expired at"}},
		{"ACM certificate", `{mode: STRICT, certificate: {acm: {certificateArn: "arn:aws:acm:eu-west-1:1:certificate/x"}}}`, false, 1,
			[]string{"virtualNodes[0].spec.listeners[0].tls.certificate.acm", "arn:aws:acm:eu-west-1:1:certificate/x", "docs/tls.md"}},
		{"ACM trust", fmt.Sprintf(`{mode: STRICT, certificate: {file: {certificateChain: %q, privateKey: %q}}, validation: {trust: {acm: {certificateAuthorityArns: ["arn:ca"]}}}}`, goodCrt, goodKey), true, 1,
			[]string{"virtualNodes[0].spec.listeners[0].tls.validation.trust.acm", "arn:ca"}},
		{"SDS secret no agent serves", `{mode: STRICT, certificate: {sds: {secretName: my-cert}}}`, false, 1,
			[]string{"virtualNodes[0].spec.listeners[0].tls.certificate.sds.secretName", "my-cert"}},
		{"SDS, not dialled", `{mode: STRICT, certificate: {sds: {secretName: "spiffe://shop/a"}}}`, true, 0, []string{"valid"}},
		{"DISABLED", `{mode: DISABLED, certificate: {acm: {certificateArn: arn}}}`, true, 0, []string{"valid"}},
	} {
		path := filepath.Join(t.TempDir(), "mesh.yaml")
		writeFile(t, path, node(c.tls))
		args := []string{"validate", "-c", path}
		if c.node {
			args = append(args, "--node", "a")
		}
		var out, errb bytes.Buffer
		code := run(args, &out, &errb)
		if code != c.code {
			t.Errorf("%s: exit %d, want %d; out %q", c.name, code, c.code, out.String())
			continue
		}
		for _, want := range c.contains {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%s: output %q does not name %q", c.name, out.String(), want)
			}
		}
		if strings.Contains(out.String(), "warning") {
			t.Errorf("%s: warned: %q", c.name, out.String())
		}
	}
}
