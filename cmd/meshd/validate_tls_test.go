package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/proxy/state"
	meshtls "github.com/meshd/meshd/tls"
)

// TestValidateTLS: meshd validate fails, naming the field, on what meshd cannot honour
// in any tls block (an ACM certificate or trust, an SDS secret name no Workload API
// serves), with or without --node; a listener tls block meshd terminates is valid, and
// with --node its certificate and trust files are read as meshd run reads them: missing
// or expired files fail, naming the field and the file, files of the mesh CA pass.
func TestValidateTLS(t *testing.T) {
	caFile, issue := validatePKI(t)
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

// TestValidateClientPolicyTLS: with --node, the certificate and trust files of the
// client policies that originate TLS to the node's backends are read as meshd run reads
// them (a missing trust file, an expired client certificate: an error naming the field
// and the file); what run does not load is not read either (enforce: false, defaults
// every backend replaces); without --node files are not read, but ACM still fails. For
// every file-sourced case, validate --node and meshd run's compile (state.Compile with a
// loader) agree: validate passes exactly what run serves.
func TestValidateClientPolicyTLS(t *testing.T) {
	caFile, issue := validatePKI(t)
	goodCrt, goodKey := issue("a", time.Time{}, 0)
	oldCrt, oldKey := issue("old", time.Now().Add(-48*time.Hour), time.Hour)
	trust := func(f string) string { return fmt.Sprintf("validation: {trust: {file: {certificateChain: %q}}}", f) }
	mtls := func(crt, key, ca string) string {
		return fmt.Sprintf("{certificate: {file: {certificateChain: %q, privateKey: %q}}, %s}", crt, key, trust(ca))
	}
	mesh := func(defaults, own string) string {
		y := `mesh: {meshName: shop}
virtualNodes:
  - virtualNodeName: a
    spec:
      listeners: [{portMapping: {port: 8080, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:8080"]}}
`
		if defaults != "" {
			y += "      backendDefaults: {clientPolicy: {tls: " + defaults + "}}\n"
		}
		y += "      backends:\n        - virtualService: {virtualServiceName: b.local"
		if own != "" {
			y += ", clientPolicy: {tls: " + own + "}"
		}
		return y + `}
  - virtualNodeName: b
    spec:
      listeners: [{portMapping: {port: 9090, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:9090"]}}
virtualServices:
  - {virtualServiceName: b.local, spec: {provider: {virtualNode: {virtualNodeName: b}}}}
`
	}
	for _, c := range []struct {
		name           string
		defaults, own  string
		node, checkRun bool
		code           int
		contains       []string
	}{
		{"mesh CA files", mtls(goodCrt, goodKey, caFile), "", true, true, 0, []string{"valid"}},
		{"missing trust file in the defaults", "{" + trust("/nonexistent/ca.crt") + "}", "", true, true, 1,
			[]string{"virtualNodes[0].spec.backendDefaults.clientPolicy.tls.validation.trust.file", "/nonexistent/ca.crt"}},
		{"missing trust file, without --node", "{" + trust("/nonexistent/ca.crt") + "}", "", false, false, 0, []string{"valid"}},
		{"expired client certificate in the backend's policy", "", mtls(oldCrt, oldKey, caFile), true, true, 1,
			[]string{"virtualNodes[0].spec.backends[0].virtualService.clientPolicy.tls.certificate.file", oldCrt, "expired at"}},
		{"enforce: false is not loaded", "", "{enforce: false, " + trust("/nonexistent/ca.crt") + "}", true, true, 0, []string{"valid"}},
		{"defaults the backend replaces are not loaded", "{" + trust("/nonexistent/ca.crt") + "}", "{" + trust(caFile) + "}", true, true, 0, []string{"valid"}},
		{"ACM trust, without --node", "", `{validation: {trust: {acm: {certificateAuthorityArns: ["arn:ca"]}}}}`, false, true, 1,
			[]string{"virtualNodes[0].spec.backends[0].virtualService.clientPolicy.tls.validation.trust.acm", "arn:ca", "docs/tls.md"}},
		{"SDS, not dialled", "", `{validation: {trust: {sds: {secretName: "spiffe://shop"}}}}`, true, false, 0, []string{"valid"}},
	} {
		path := filepath.Join(t.TempDir(), "mesh.yaml")
		writeFile(t, path, mesh(c.defaults, c.own))
		args := []string{"validate", "-c", path}
		if c.node {
			args = append(args, "--node", "a")
		}
		var out, errb bytes.Buffer
		code := run(args, &out, &errb)
		if code != c.code {
			t.Errorf("%s: exit %d, want %d; out %q, stderr %q", c.name, code, c.code, out.String(), errb.String())
			continue
		}
		for _, want := range c.contains {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%s: output %q does not name %q", c.name, out.String(), want)
			}
		}
		if !c.checkRun {
			continue
		}
		cfg, err := config.ParseFile(path)
		if err != nil {
			t.Fatal(err)
		}
		ld := meshtls.NewLoader(meshtls.LoaderOptions{Mesh: "shop"})
		s, err := state.Compile(context.Background(), cfg, "a", "test", nil, state.Options{
			Registry: func([]string) *discovery.Registry { return nil }, TLS: ld,
		})
		if (err == nil) != (c.code == 0) {
			t.Errorf("%s: validate exit %d, but meshd run's compile says %v", c.name, code, err)
		}
		if s != nil {
			s.Retire(nil)
		}
		_ = ld.Close()
	}
}

// validatePKI makes a mesh CA (mesh "shop") in a temporary directory: the CA
// certificate's file, and a function that issues a node's certificate valid from now
// for ttl (zero values: from now, for a day) and returns its certificate and key files.
func validatePKI(t *testing.T) (caFile string, issue func(node string, now time.Time, ttl time.Duration) (crt, key string)) {
	t.Helper()
	dir := t.TempDir()
	ca, err := meshtls.NewCA(meshtls.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	caFile = filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	issue = func(node string, now time.Time, ttl time.Duration) (string, string) {
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
	return caFile, issue
}
