package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestCACommands: meshd ca init writes a root with the right modes and refuses to
// overwrite it without --force; meshd ca issue writes a node's chain and key.
func TestCACommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	var out, errb bytes.Buffer
	if code := run([]string{"ca", "init", "--dir", dir}, &out, &errb); code != 0 {
		t.Fatalf("ca init: code %d, stderr %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "ca.crt") {
		t.Errorf("ca init output: %q", out.String())
	}
	for name, want := range map[string]os.FileMode{"ca.key": 0o600, "ca.crt": 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", name, fi.Mode().Perm(), want)
		}
	}
	caPEM, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))

	out.Reset()
	errb.Reset()
	if code := run([]string{"ca", "init", "--dir", dir}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "already exists") || !strings.Contains(errb.String(), "--force") {
		t.Fatalf("second ca init: code %d, stderr %q; want 1 and a refusal naming --force", code, errb.String())
	}
	if again, _ := os.ReadFile(filepath.Join(dir, "ca.crt")); !bytes.Equal(again, caPEM) {
		t.Fatal("a refused ca init changed ca.crt")
	}

	errb.Reset()
	if code := run([]string{"ca", "issue", "--dir", dir, "--mesh", "shop", "--node", "frontend", "--ttl", "2h", "--dns", "frontend.shop.local, www.shop.local"}, &out, &errb); code != 0 {
		t.Fatalf("ca issue: code %d, stderr %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "spiffe://shop/frontend") {
		t.Errorf("ca issue output: %q", out.String())
	}
	certPath, keyPath := filepath.Join(dir, "frontend.crt"), filepath.Join(dir, "frontend.key")
	if fi, err := os.Stat(keyPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("frontend.key: %v, %v; want mode 0600", fi, err)
	}
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(pair.Certificate) != 2 {
		t.Errorf("chain of %d certificates, want leaf and CA", len(pair.Certificate))
	}
	leaf := pair.Leaf
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://shop/frontend" {
		t.Errorf("URI SANs %v", leaf.URIs)
	}
	if !slices.Equal(leaf.DNSNames, []string{"frontend.shop.local", "www.shop.local"}) {
		t.Errorf("DNS SANs %v", leaf.DNSNames)
	}
	if life := time.Until(leaf.NotAfter); life > 2*time.Hour || life < time.Hour {
		t.Errorf("lifetime left %v, want --ttl 2h", life)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("issued certificate does not verify against ca.crt: %v", err)
	}

	// --force replaces the CA.
	if code := run([]string{"ca", "init", "--dir", dir, "--force"}, &out, &errb); code != 0 {
		t.Fatalf("ca init --force: code %d, stderr %s", code, errb.String())
	}
	if again, _ := os.ReadFile(filepath.Join(dir, "ca.crt")); bytes.Equal(again, caPEM) {
		t.Fatal("ca init --force kept the old root")
	}
}

func TestCACommandErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"ca"}, 2, "usage: meshd ca init"},
		{[]string{"ca", "sign"}, 2, `unknown action "sign"`},
		{[]string{"ca", "init"}, 2, "--dir DIR is required"},
		{[]string{"ca", "issue", "--dir", dir, "--node", "a"}, 2, "--mesh and --node are required"},
		{[]string{"ca", "issue", "--dir", dir, "--mesh", "shop", "--node", "a"}, 1, "meshd ca init --dir"},
		{[]string{"ca", "issue", "--dir", dir, "--mesh", "shop", "--node", "a", "--ttl", "-1h"}, 2, "positive"},
	} {
		var out, errb bytes.Buffer
		if code := run(tc.args, &out, &errb); code != tc.code || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("meshd %s: code %d, stderr %q; want %d and %q", strings.Join(tc.args, " "), code, errb.String(), tc.code, tc.want)
		}
	}
	if code := run([]string{"ca", "init", "--dir", dir}, new(bytes.Buffer), new(bytes.Buffer)); code != 0 {
		t.Fatal("ca init failed")
	}
	var errb bytes.Buffer
	if code := run([]string{"ca", "issue", "--dir", dir, "--mesh", "Shop", "--node", "a"}, new(bytes.Buffer), &errb); code != 1 || !strings.Contains(errb.String(), "trust domain") {
		t.Errorf("bad mesh name: code %d, stderr %q", code, errb.String())
	}
	var out bytes.Buffer
	if code := run([]string{"help"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "meshd ca issue") {
		t.Errorf("help does not list meshd ca: %q", out.String())
	}
}
