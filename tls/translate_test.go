package meshtls_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"

	"github.com/meshd/meshd/config"
	meshtls "github.com/meshd/meshd/tls"
)

func fieldErrors(t *testing.T, err error) []config.FieldError {
	t.Helper()
	var errs *config.Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error %v (%T) is not a *config.Errors", err, err)
	}
	return errs.List
}

func paths(list []config.FieldError) []string {
	var out []string
	for _, fe := range list {
		out = append(out, fe.Path)
	}
	return out
}

func ptr[T any](v T) *T { return &v }

// TestACMRefused: an ACM certificate or trust cannot be fetched offline: refused with
// the field path, the ARN and the way out.
func TestACMRefused(t *testing.T) {
	_, err := meshtls.PlanListener("spec.listeners[0].tls", &config.ListenerTLS{
		Mode:        "STRICT",
		Certificate: &config.ListenerTLSCert{ACM: &config.TLSACMCertificate{CertificateArn: "arn:aws:acm:eu-west-1:1:certificate/x"}},
		Validation:  &config.ListenerTLSValidation{Trust: &config.TLSValidationTrust{ACM: &config.TLSACMTrust{CertificateAuthorityArns: []string{"arn:ca1", "arn:ca2"}}}},
	})
	list := fieldErrors(t, err)
	if got := paths(list); !slices.Equal(got, []string{"spec.listeners[0].tls.certificate.acm", "spec.listeners[0].tls.validation.trust.acm"}) {
		t.Fatalf("paths %v", got)
	}
	msg := list[0].Error()
	for _, want := range []string{"spec.listeners[0].tls.certificate.acm: meshd cannot use an ACM certificate", "certificate.file", "meshd ca issue", `"arn:aws:acm:eu-west-1:1:certificate/x"`} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q lacks %q", msg, want)
		}
	}
	if msg := list[1].Error(); !strings.Contains(msg, "trust.file") || !strings.Contains(msg, "arn:ca1,arn:ca2") || !strings.Contains(msg, "get-certificate-authority-certificate") {
		t.Errorf("trust error %q", msg)
	}

	// The constructors say the same.
	if s, err := meshtls.NewACMSource("spec.listeners[0].tls.certificate", "arn:x"); s != nil || err == nil ||
		!strings.HasPrefix(err.Error(), "spec.listeners[0].tls.certificate.acm: meshd cannot use an ACM certificate") {
		t.Errorf("NewACMSource: %v, %v", s, err)
	}
	if s, err := meshtls.NewACMTrustSource("spec.backendDefaults.clientPolicy.tls.validation.trust", []string{"arn:ca"}); s != nil || err == nil ||
		!strings.HasPrefix(err.Error(), "spec.backendDefaults.clientPolicy.tls.validation.trust.acm: meshd cannot fetch ACM Private CA certificates") {
		t.Errorf("NewACMTrustSource: %v, %v", s, err)
	}
}

func TestPlanListener(t *testing.T) {
	file := &config.TLSFileCertificate{CertificateChain: "/k/c.pem", PrivateKey: "/k/k.pem"}
	for _, tc := range []struct {
		name string
		tls  *config.ListenerTLS
		want []string // error paths; nil: valid
	}{
		{"absent", nil, nil},
		{"disabled ignores the rest", &config.ListenerTLS{Mode: "DISABLED", Certificate: &config.ListenerTLSCert{ACM: &config.TLSACMCertificate{CertificateArn: "a"}}}, nil},
		{"strict file", &config.ListenerTLS{Mode: "STRICT", Certificate: &config.ListenerTLSCert{File: file}}, nil},
		{"permissive sds", &config.ListenerTLS{Mode: "PERMISSIVE", Certificate: &config.ListenerTLSCert{SDS: &config.TLSSDS{SecretName: "spiffe://td/front"}}}, nil},
		{"sds default", &config.ListenerTLS{Mode: "STRICT", Certificate: &config.ListenerTLSCert{SDS: &config.TLSSDS{SecretName: "default"}}}, nil},
		{"bad mode", &config.ListenerTLS{Mode: "ON", Certificate: &config.ListenerTLSCert{File: file}}, []string{"l.mode"}},
		{"no certificate", &config.ListenerTLS{Mode: "STRICT"}, []string{"l.certificate"}},
		{"two sources", &config.ListenerTLS{Mode: "STRICT", Certificate: &config.ListenerTLSCert{File: file, SDS: &config.TLSSDS{SecretName: "default"}}}, []string{"l.certificate"}},
		{"half a file pair", &config.ListenerTLS{Mode: "STRICT", Certificate: &config.ListenerTLSCert{File: &config.TLSFileCertificate{CertificateChain: "/c"}}}, []string{"l.certificate.file.privateKey"}},
		{"sds name not a SPIFFE ID", &config.ListenerTLS{Mode: "STRICT", Certificate: &config.ListenerTLSCert{SDS: &config.TLSSDS{SecretName: "colorteller-cert"}}}, []string{"l.certificate.sds.secretName"}},
		{"validation without trust", &config.ListenerTLS{Mode: "STRICT", Certificate: &config.ListenerTLSCert{File: file}, Validation: &config.ListenerTLSValidation{}}, []string{"l.validation.trust"}},
		{"trust sds ROOTCA, SANs", &config.ListenerTLS{Mode: "STRICT", Certificate: &config.ListenerTLSCert{File: file}, Validation: &config.ListenerTLSValidation{
			Trust: &config.TLSValidationTrust{SDS: &config.TLSSDS{SecretName: "ROOTCA"}}, SubjectAlternativeNames: &config.SubjectAltNames{Match: config.SubjectAltNamesMatch{Exact: []string{"spiffe://td/a"}}}}}, nil},
		{"trust sds bad name", &config.ListenerTLS{Mode: "STRICT", Certificate: &config.ListenerTLSCert{File: file}, Validation: &config.ListenerTLSValidation{
			Trust: &config.TLSValidationTrust{SDS: &config.TLSSDS{SecretName: "my bundle"}}}}, []string{"l.validation.trust.sds.secretName"}},
		{"empty SAN list and entry", &config.ListenerTLS{Mode: "STRICT", Certificate: &config.ListenerTLSCert{File: file}, Validation: &config.ListenerTLSValidation{
			Trust: &config.TLSValidationTrust{File: &config.TLSFileTrust{CertificateChain: "/ca"}}, SubjectAlternativeNames: &config.SubjectAltNames{Match: config.SubjectAltNamesMatch{Exact: []string{""}}}}},
			[]string{"l.validation.subjectAlternativeNames.match.exact[0]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan, err := meshtls.PlanListener("l", tc.tls)
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if plan.Mode != meshtls.ModeDisabled && plan.Certificate == nil {
					t.Error("a plan without a certificate")
				}
				return
			}
			if got := paths(fieldErrors(t, err)); !slices.Equal(got, tc.want) {
				t.Errorf("error paths %v, want %v (%v)", got, tc.want, err)
			}
		})
	}
}

func TestPlanClient(t *testing.T) {
	trustFile := config.TLSValidationTrust{File: &config.TLSFileTrust{CertificateChain: "/ca"}}
	plan, err := meshtls.PlanClient("c", &config.ClientTLS{Ports: []int{8080}, Validation: config.ClientTLSValidation{Trust: trustFile},
		Certificate: &config.ClientTLSCert{SDS: &config.TLSSDS{SecretName: "spiffe://td/front"}}})
	if err != nil {
		t.Fatal(err)
	}
	if !plan.Enforce || plan.Trust.File != "/ca" || plan.Certificate.SDS != "spiffe://td/front" || !slices.Equal(plan.Ports, []int{8080}) {
		t.Errorf("plan %+v", plan)
	}
	// enforce: false originates no TLS; what it names is never loaded.
	plan, err = meshtls.PlanClient("c", &config.ClientTLS{Enforce: ptr(false), Validation: config.ClientTLSValidation{
		Trust: config.TLSValidationTrust{ACM: &config.TLSACMTrust{CertificateAuthorityArns: []string{"a"}}}}})
	if err != nil || plan.Enforce {
		t.Errorf("enforce false: %+v, %v", plan, err)
	}
	_, err = meshtls.PlanClient("c", &config.ClientTLS{Ports: []int{0}, Certificate: &config.ClientTLSCert{}})
	if got := paths(fieldErrors(t, err)); !slices.Equal(got, []string{"c.ports[0]", "c.certificate", "c.validation.trust"}) {
		t.Errorf("paths %v", got)
	}
}

// TestUnsupported lists, with full paths, what meshd validate will refuse.
func TestUnsupported(t *testing.T) {
	cfg, err := config.Parse([]byte(`
mesh: {meshName: shop}
virtualNodes:
  - virtualNodeName: a
    spec:
      listeners:
        - portMapping: {port: 8080, protocol: http}
        - portMapping: {port: 8443, protocol: http}
          tls: {mode: STRICT, certificate: {acm: {certificateArn: "arn:cert"}}}
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:8080"]}}
      backends:
        - virtualService:
            virtualServiceName: b.shop.local
            clientPolicy: {tls: {validation: {trust: {sds: {secretName: "not a domain"}}}}}
      backendDefaults:
        clientPolicy: {tls: {validation: {trust: {file: {certificateChain: /ca.pem}}}}}
virtualGateways:
  - virtualGatewayName: gw
    spec:
      listeners:
        - portMapping: {port: 9080, protocol: http}
          tls: {mode: STRICT, certificate: {file: {certificateChain: /c, privateKey: /k}}}
      backendDefaults:
        clientPolicy: {tls: {validation: {trust: {acm: {certificateAuthorityArns: ["arn:ca"]}}}}}
`))
	if err != nil {
		t.Fatal(err)
	}
	got := paths(meshtls.Unsupported(cfg))
	want := []string{
		"virtualNodes[0].spec.listeners[1].tls.certificate.acm",
		"virtualNodes[0].spec.backends[0].virtualService.clientPolicy.tls.validation.trust.sds.secretName",
		"virtualGateways[0].spec.backendDefaults.clientPolicy.tls.validation.trust.acm",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Unsupported:\n got %q\nwant %q", got, want)
	}
}

// TestLoaderFiles: plans from the config model loaded from files, a server and a
// client doing mTLS, sources shared between them.
func TestLoaderFiles(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	caPath := writeCA(t, dir, ca)
	back := writeNode(t, dir, "backend", issue(t, ca, "shop", "backend", "backend.shop.local"))
	front := writeNode(t, dir, "frontend", issue(t, ca, "shop", "frontend"))
	trust := config.TLSValidationTrust{File: &config.TLSFileTrust{CertificateChain: caPath}}

	lp, err := meshtls.PlanListener("virtualNodes[1].spec.listeners[0].tls", &config.ListenerTLS{
		Mode:        "STRICT",
		Certificate: &config.ListenerTLSCert{File: &config.TLSFileCertificate{CertificateChain: back.CertificateChain, PrivateKey: back.PrivateKey}},
		Validation: &config.ListenerTLSValidation{Trust: &trust,
			SubjectAlternativeNames: &config.SubjectAltNames{Match: config.SubjectAltNamesMatch{Exact: []string{"spiffe://shop/frontend"}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	cp, err := meshtls.PlanClient("virtualNodes[0].spec.backendDefaults.clientPolicy.tls", &config.ClientTLS{
		Ports:       []int{8080},
		Certificate: &config.ClientTLSCert{File: &config.TLSFileCertificate{CertificateChain: front.CertificateChain, PrivateKey: front.PrivateKey}},
		Validation: config.ClientTLSValidation{Trust: trust,
			SubjectAlternativeNames: &config.SubjectAltNames{Match: config.SubjectAltNamesMatch{Exact: []string{"backend.shop.local"}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ld := meshtls.NewLoader(meshtls.LoaderOptions{Mesh: "shop", Debounce: testDebounce})
	defer ld.Close()
	ctx := context.Background()
	lis, err := ld.Listener(ctx, lp)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := ld.Client(ctx, cp)
	if err != nil {
		t.Fatal(err)
	}
	if lis.Trust != cl.Trust {
		t.Error("the listener and the client policy naming the same trust file do not share its source")
	}
	if st := ld.Stats(); len(st) != 3 || !strings.Contains(st[0].Name, "backend.crt") || st[0].NotAfter.IsZero() {
		t.Errorf("loader stats: %+v", st)
	}
	if !cl.AppliesTo(8080) || cl.AppliesTo(9090) {
		t.Error("AppliesTo ignores ports")
	}
	cc, err := cl.Config("backend.shop.local")
	if err != nil {
		t.Fatal(err)
	}
	r := handshake(t, lis.Config, cc)
	if r.serverErr != nil || r.clientErr != nil {
		t.Fatalf("server %v, client %v", r.serverErr, r.clientErr)
	}
	id, err := meshtls.PeerIdentity(r.server)
	if node, ok := id.Node(lis.Mesh); err != nil || !ok || node != "frontend" {
		t.Errorf("caller node %q %v %v", node, ok, err)
	}

	// DISABLED needs nothing; a policy not enforced makes no config.
	if l, err := ld.Listener(ctx, &meshtls.ListenerPlan{Mode: meshtls.ModeDisabled}); err != nil || l.Config != nil {
		t.Errorf("disabled: %+v %v", l, err)
	}
	if c, err := ld.Client(ctx, &meshtls.ClientPlan{}); err != nil || c.AppliesTo(80) {
		t.Errorf("not enforced: %+v %v", c, err)
	} else if _, err := c.Config("x"); err == nil {
		t.Error("a config from a policy not enforced")
	}

	// A file that does not exist: the error names the field and the path.
	lp.Certificate.File = &config.TLSFileCertificate{CertificateChain: filepath.Join(dir, "gone.crt"), PrivateKey: back.PrivateKey}
	_, err = ld.Listener(ctx, lp)
	list := fieldErrors(t, err)
	if len(list) != 1 || list[0].Path != "virtualNodes[1].spec.listeners[0].tls.certificate.file" || !strings.Contains(list[0].Error(), "gone.crt") {
		t.Errorf("missing file: %v", err)
	}
}

// TestLoaderSDS: sds secrets through the Loader's Workload API.
func TestLoaderSDS(t *testing.T) {
	ca := newCA(t)
	front := issue(t, ca, "example.org", "frontend")
	back := issue(t, ca, "example.org", "backend")
	agent := startAgent(t, &workload.X509SVIDResponse{Svids: []*workload.X509SVID{svid(t, ca, front), svid(t, ca, back)}})
	trust := &config.TLSValidationTrust{SDS: &config.TLSSDS{SecretName: "spiffe://example.org"}}
	lp, err := meshtls.PlanListener("l", &config.ListenerTLS{Mode: "STRICT",
		Certificate: &config.ListenerTLSCert{SDS: &config.TLSSDS{SecretName: "spiffe://example.org/backend"}},
		Validation:  &config.ListenerTLSValidation{Trust: trust}})
	if err != nil {
		t.Fatal(err)
	}
	cp, err := meshtls.PlanClient("c", &config.ClientTLS{
		Certificate: &config.ClientTLSCert{SDS: &config.TLSSDS{SecretName: "spiffe://example.org/frontend"}},
		Validation: config.ClientTLSValidation{Trust: *trust,
			SubjectAlternativeNames: &config.SubjectAltNames{Match: config.SubjectAltNamesMatch{Exact: []string{"spiffe://example.org/backend"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	ld := meshtls.NewLoader(meshtls.LoaderOptions{Mesh: "example.org", WorkloadAPIAddr: agent.addr})
	defer ld.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lis, err := ld.Listener(ctx, lp)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := ld.Client(ctx, cp)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cl.Config("backend.example.org")
	if err != nil {
		t.Fatal(err)
	}
	if r := handshake(t, lis.Config, cc); r.serverErr != nil || r.clientErr != nil {
		t.Fatalf("server %v, client %v", r.serverErr, r.clientErr)
	}
	if n := agent.fetchCalls.Load(); n != 1 {
		t.Errorf("%d Workload API streams, want one shared", n)
	}
	// A secret the agent does not offer: the field and the name.
	_, err = ld.Client(ctx, &meshtls.ClientPlan{Path: "c2", Enforce: true, Trust: meshtls.TrustRef{Path: "c2.validation.trust", SDS: "spiffe://nope.org"}})
	if list := fieldErrors(t, err); len(list) != 1 || list[0].Path != "c2.validation.trust.sds.secretName" || list[0].Value != "spiffe://nope.org" {
		t.Errorf("unknown secret: %v", err)
	}
}

// corpusDir is ../shared/appmesh-corpus beside the repository.
func corpusDir(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test file")
	}
	dir := filepath.Join(filepath.Dir(file), "..", "..", "shared", "appmesh-corpus")
	if _, err := os.Stat(dir); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("App Mesh corpus not found at %s, and CI is set", dir)
		}
		t.Skipf("App Mesh corpus not found at %s", dir)
	}
	return dir
}

// tlsBlock is one listener or client policy tls block of a parsed config.
type tlsBlock struct {
	path     string
	listener *config.ListenerTLS
	client   *config.ClientTLS
}

func tlsBlocks(c *config.Config) []tlsBlock {
	var out []tlsBlock
	client := func(path string, cp *config.ClientPolicy) {
		if cp != nil && cp.TLS != nil {
			out = append(out, tlsBlock{path: path + ".tls", client: cp.TLS})
		}
	}
	for i, n := range c.VirtualNodes {
		for j, l := range n.Spec.Listeners {
			if l.TLS != nil {
				out = append(out, tlsBlock{path: pathf("virtualNodes[%d].spec.listeners[%d].tls", i, j), listener: l.TLS})
			}
		}
		for j, b := range n.Spec.Backends {
			if b.VirtualService != nil {
				client(pathf("virtualNodes[%d].spec.backends[%d].virtualService.clientPolicy", i, j), b.VirtualService.ClientPolicy)
			}
		}
		if n.Spec.BackendDefaults != nil {
			client(pathf("virtualNodes[%d].spec.backendDefaults.clientPolicy", i), n.Spec.BackendDefaults.ClientPolicy)
		}
	}
	for i, g := range c.VirtualGateways {
		for j, l := range g.Spec.Listeners {
			if l.TLS != nil {
				out = append(out, tlsBlock{path: pathf("virtualGateways[%d].spec.listeners[%d].tls", i, j), listener: l.TLS})
			}
		}
		if g.Spec.BackendDefaults != nil {
			client(pathf("virtualGateways[%d].spec.backendDefaults.clientPolicy", i), g.Spec.BackendDefaults.ClientPolicy)
		}
	}
	return out
}

func usesACM(b tlsBlock) bool {
	if l := b.listener; l != nil {
		return l.Mode != "DISABLED" && ((l.Certificate != nil && l.Certificate.ACM != nil) ||
			(l.Validation != nil && l.Validation.Trust != nil && l.Validation.Trust.ACM != nil))
	}
	return b.client.Validation.Trust.ACM != nil && (b.client.Enforce == nil || *b.client.Enforce)
}

// TestCorpusTLS: every TLS spec of the App Mesh corpus parses and translates: ACM
// blocks are refused naming the field and the way out, file and SDS blocks plan
// without reading anything; then the mutual-TLS walkthrough's file specs run, with
// its /keys files issued by the mesh CA into a temporary directory.
func TestCorpusTLS(t *testing.T) {
	dir := corpusDir(t)
	kinds := map[string]string{"virtualNode": "virtualNodes", "virtualGateway": "virtualGateways"}
	f, err := os.Open(filepath.Join(dir, "MANIFEST.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	plans := map[string]any{} // file name -> *ListenerPlan or *ClientPlan (one TLS block each)
	files, blocks, refused := 0, 0, 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		cols := strings.Split(sc.Text(), "\t")
		if len(cols) < 2 || kinds[cols[1]] == "" {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(dir, cols[0]))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(raw), `"tls"`) {
			continue
		}
		files++
		t.Run(cols[0], func(t *testing.T) {
			cfg, err := config.Parse([]byte(`{"mesh": {"meshName": "corpus"}, "` + kinds[cols[1]] + `": [` + string(raw) + `]}`))
			if err != nil {
				t.Fatalf("does not parse: %v", err)
			}
			bs := tlsBlocks(cfg)
			if len(bs) == 0 {
				t.Fatal("mentions tls but has no TLS block")
			}
			unsupported := meshtls.Unsupported(cfg)
			for _, b := range bs {
				blocks++
				var plan any
				if b.listener != nil {
					plan, err = meshtls.PlanListener(b.path, b.listener)
				} else {
					plan, err = meshtls.PlanClient(b.path, b.client)
				}
				if !usesACM(b) {
					if err != nil {
						t.Errorf("%s: %v", b.path, err)
					}
					plans[cols[0]] = plan
					continue
				}
				refused++
				list := fieldErrors(t, err)
				for _, fe := range list {
					if !strings.HasPrefix(fe.Path, b.path) || !strings.HasSuffix(fe.Path, ".acm") || !strings.Contains(fe.Msg, "docs/tls.md") {
						t.Errorf("ACM refusal %v", fe)
					}
					if !slices.ContainsFunc(unsupported, func(u config.FieldError) bool { return u.Path == fe.Path }) {
						t.Errorf("Unsupported misses %s", fe.Path)
					}
				}
			}
		})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if files < 10 || refused < 6 {
		t.Errorf("only %d TLS specs (%d blocks, %d refused for ACM); the corpus has 10 with 11 blocks, 7 of them ACM", files, blocks, refused)
	}
	t.Logf("%d TLS specs, %d blocks, %d refused for ACM", files, blocks, refused)

	// The mutual-TLS walkthrough, run: its files under a temporary /keys.
	const walk = "walkthroughs__howto-mutual-tls-file-provided__mesh__updates__"
	get := func(name string) any {
		p, ok := plans[walk+name+".json"]
		if !ok {
			t.Fatalf("corpus spec %s not planned", name)
		}
		return p
	}
	strictTLS := get("colorteller-vn-strict-tls").(*meshtls.ListenerPlan)
	strictValidation := get("colorteller-vn-strict-validation").(*meshtls.ListenerPlan)
	clientCert := get("gateway-vgw-client-cert").(*meshtls.ClientPlan)
	clientPolicy := get("gateway-vgw-client-policy").(*meshtls.ClientPlan)

	keys := t.TempDir()
	ca := newCA(t)
	if err := os.WriteFile(filepath.Join(keys, "ca_cert.pem"), ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, n := range []struct{ name, san string }{{"colorteller", "color-teller-san"}, {"gateway", "gateway-san"}} {
		wc := issue(t, ca, "corpus", n.name, n.san)
		if err := os.WriteFile(filepath.Join(keys, n.name+"_cert_chain.pem"), wc.ChainPEM, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(keys, n.name+"_key.pem"), wc.KeyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rebase := func(p string) string {
		if !strings.HasPrefix(p, "/keys/") {
			t.Fatalf("corpus path %s is not under /keys", p)
		}
		return filepath.Join(keys, strings.TrimPrefix(p, "/keys/"))
	}
	rebaseCert := func(c *meshtls.CertRef) {
		if c != nil && c.File != nil {
			c.File = &config.TLSFileCertificate{CertificateChain: rebase(c.File.CertificateChain), PrivateKey: rebase(c.File.PrivateKey)}
		}
	}
	for _, lp := range []*meshtls.ListenerPlan{strictTLS, strictValidation} {
		rebaseCert(lp.Certificate)
		if lp.Trust != nil {
			lp.Trust.File = rebase(lp.Trust.File)
		}
	}
	for _, cp := range []*meshtls.ClientPlan{clientCert, clientPolicy} {
		rebaseCert(cp.Certificate)
		cp.Trust.File = rebase(cp.Trust.File)
	}
	ld := meshtls.NewLoader(meshtls.LoaderOptions{Mesh: "corpus"})
	defer ld.Close()
	ctx := context.Background()
	listener := func(p *meshtls.ListenerPlan) *meshtls.Listener {
		l, err := ld.Listener(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	client := func(p *meshtls.ClientPlan) *meshtls.Client {
		c, err := ld.Client(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	cfg := func(c *meshtls.Client) *tls.Config {
		cc, err := c.Config("colorteller.services-domain")
		if err != nil {
			t.Fatal(err)
		}
		return cc
	}
	// The walkthrough's steps: TLS, then mTLS with SAN checks both ways.
	if r := handshake(t, listener(strictTLS).Config, cfg(client(clientPolicy))); r.serverErr != nil || r.clientErr != nil {
		t.Errorf("strict TLS, gateway client policy: %v %v", r.serverErr, r.clientErr)
	}
	if r := handshake(t, listener(strictValidation).Config, cfg(client(clientCert))); r.serverErr != nil || r.clientErr != nil {
		t.Errorf("strict validation, gateway client certificate: %v %v", r.serverErr, r.clientErr)
	}
	if r := handshake(t, listener(strictValidation).Config, cfg(client(clientPolicy))); r.serverErr == nil {
		t.Error("strict validation served a gateway without a client certificate")
	}
}

func pathf(format string, args ...any) string { return fmt.Sprintf(format, args...) }
