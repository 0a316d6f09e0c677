package meshtls_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	meshtls "github.com/meshd/meshd/tls"
)

func newCA(t *testing.T) *meshtls.CA {
	t.Helper()
	ca, err := meshtls.NewCA(meshtls.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t *testing.T, ca *meshtls.CA, mesh, node string, dns ...string) *meshtls.WorkloadCert {
	t.Helper()
	wc, err := ca.Issue(meshtls.WorkloadRequest{Mesh: mesh, Node: node, DNSNames: dns})
	if err != nil {
		t.Fatal(err)
	}
	return wc
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func parseChain(t *testing.T, data []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

// TestCAInitIssueRoundTrip: a root written with the right modes, refused over an
// existing one unless forced, read back, issuing a workload certificate that verifies
// against it and says what the design says.
func TestCAInitIssueRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := meshtls.InitCA(dir, false, meshtls.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if m := mode(t, dir); m != 0o700 {
		t.Errorf("CA directory mode %v, want 0700", m)
	}
	if m := mode(t, filepath.Join(dir, "ca.key")); m != 0o600 {
		t.Errorf("ca.key mode %v, want 0600", m)
	}
	if m := mode(t, filepath.Join(dir, "ca.crt")); m != 0o644 {
		t.Errorf("ca.crt mode %v, want 0644", m)
	}
	root := ca.Cert
	if !root.IsCA || !root.BasicConstraintsValid || root.MaxPathLen != 0 || !root.MaxPathLenZero {
		t.Errorf("root basic constraints: CA %v, valid %v, maxPathLen %d", root.IsCA, root.BasicConstraintsValid, root.MaxPathLen)
	}
	if pub, ok := root.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("root key %T, want ECDSA P-256", root.PublicKey)
	}
	if err := root.CheckSignatureFrom(root); err != nil {
		t.Errorf("root is not self-signed: %v", err)
	}
	if v := root.NotAfter.Sub(root.NotBefore); v < 9*365*24*time.Hour {
		t.Errorf("root validity %v, want about 10 years", v)
	}
	if root.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Error("root lacks keyCertSign")
	}

	// A second init is refused, and leaves the CA alone.
	if _, err := meshtls.InitCA(dir, false, meshtls.CAOptions{}); !errors.Is(err, meshtls.ErrCAExists) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("second init: %v, want ErrCAExists mentioning --force", err)
	}
	loaded, err := meshtls.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(root) {
		t.Fatal("LoadCA read a different root")
	}

	wc, err := loaded.Issue(meshtls.WorkloadRequest{Mesh: "shop", Node: "frontend", DNSNames: []string{"frontend.shop.local"}})
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath, err := meshtls.WriteWorkload(dir, "frontend", wc)
	if err != nil {
		t.Fatal(err)
	}
	if certPath != filepath.Join(dir, "frontend.crt") || keyPath != filepath.Join(dir, "frontend.key") {
		t.Errorf("paths %s, %s", certPath, keyPath)
	}
	if m := mode(t, keyPath); m != 0o600 {
		t.Errorf("frontend.key mode %v, want 0600", m)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
	data, _ := os.ReadFile(certPath)
	chain := parseChain(t, data)
	if len(chain) != 2 || !chain[1].Equal(root) {
		t.Fatalf("chain has %d certificates; want the leaf and the root", len(chain))
	}
	leaf := chain[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://shop/frontend" || wc.ID.String() != "spiffe://shop/frontend" {
		t.Errorf("URI SANs %v, ID %s; want spiffe://shop/frontend", leaf.URIs, wc.ID)
	}
	if !slices.Equal(leaf.DNSNames, []string{"frontend.shop.local"}) {
		t.Errorf("DNS SANs %v", leaf.DNSNames)
	}
	if leaf.IsCA {
		t.Error("leaf is a CA")
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		t.Errorf("leaf extended key usage %v, want serverAuth and clientAuth", leaf.ExtKeyUsage)
	}
	if ttl := time.Until(leaf.NotAfter); ttl < 23*time.Hour || ttl > 24*time.Hour {
		t.Errorf("leaf lifetime left %v, want the 24h default", ttl)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("leaf does not verify against the root for %v: %v", usage, err)
		}
	}
	// Random serials.
	wc2 := issue(t, loaded, "shop", "frontend")
	if wc2.Cert.SerialNumber.Cmp(leaf.SerialNumber) == 0 || wc2.Cert.SerialNumber.Cmp(root.SerialNumber) == 0 {
		t.Error("serial numbers repeat")
	}
	if wc2.Cert.SerialNumber.BitLen() < 64 {
		t.Errorf("serial %v is not random enough", wc2.Cert.SerialNumber)
	}

	// --force replaces the root; the old leaf no longer verifies against it.
	forced, err := meshtls.InitCA(dir, true, meshtls.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if forced.Cert.Equal(root) {
		t.Fatal("forced init kept the old root")
	}
	newPool := x509.NewCertPool()
	newPool.AddCert(forced.Cert)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: newPool}); err == nil {
		t.Error("a leaf of the old root verifies against the new one")
	}
}

func TestIssueRefusals(t *testing.T) {
	ca := newCA(t)
	for _, tc := range []struct {
		req  meshtls.WorkloadRequest
		want string
	}{
		{meshtls.WorkloadRequest{Mesh: "Shop", Node: "a"}, "not a valid SPIFFE trust domain"},
		{meshtls.WorkloadRequest{Mesh: "spiffe://shop", Node: "a"}, "bare mesh name"},
		{meshtls.WorkloadRequest{Mesh: "", Node: "a"}, "not a valid SPIFFE trust domain"},
		{meshtls.WorkloadRequest{Mesh: "shop", Node: "a/b"}, "not a valid SPIFFE ID path segment"},
		{meshtls.WorkloadRequest{Mesh: "shop", Node: ".."}, "not a valid SPIFFE ID path segment"},
		{meshtls.WorkloadRequest{Mesh: "shop", Node: ""}, "not a valid SPIFFE ID path segment"},
		{meshtls.WorkloadRequest{Mesh: "shop", Node: "a", DNSNames: []string{"bad name"}}, "DNS name"},
		{meshtls.WorkloadRequest{Mesh: "shop", Node: "a", TTL: 11 * 365 * 24 * time.Hour}, "outlive the mesh CA"},
		{meshtls.WorkloadRequest{Mesh: "shop", Node: "a", Now: time.Now().Add(11 * 365 * 24 * time.Hour)}, "the mesh CA expired"},
	} {
		if _, err := ca.Issue(tc.req); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Issue(%+v): %v, want an error containing %q", tc.req, err, tc.want)
		}
	}
	// Node names App Mesh allows are valid path segments.
	if _, err := ca.Issue(meshtls.WorkloadRequest{Mesh: "my-mesh.example_1", Node: "colorteller-Black_1"}); err != nil {
		t.Error(err)
	}
}

func TestLoadCAErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := meshtls.LoadCA(dir); err == nil || !strings.Contains(err.Error(), "meshd ca init") {
		t.Errorf("missing CA: %v, want a hint at meshd ca init", err)
	}
	a, b := newCA(t), newCA(t)
	keyB, _ := b.KeyPEM()
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), a.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.key"), keyB, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := meshtls.LoadCA(dir); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("mismatched CA key: %v", err)
	}
}
