package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
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

	// --out writes the pair and a copy of ca.crt elsewhere; the CA directory is only read.
	outDir := filepath.Join(t.TempDir(), "certs")
	if err := os.Mkdir(outDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	errb.Reset()
	code := run([]string{"ca", "issue", "--dir", dir, "--mesh", "shop", "--node", "backend", "--out", outDir}, &out, &errb)
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if code != 0 {
		t.Fatalf("ca issue --out: code %d, stderr %s", code, errb.String())
	}
	if got, _ := os.ReadFile(filepath.Join(outDir, "ca.crt")); !bytes.Equal(got, caPEM) {
		t.Error("--out did not copy ca.crt")
	}
	if _, err := tls.LoadX509KeyPair(filepath.Join(outDir, "backend.crt"), filepath.Join(outDir, "backend.key")); err != nil {
		t.Errorf("--out pair: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "backend.crt")); err == nil {
		t.Error("--out also wrote into the CA directory")
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

// lockedBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestCAIssueEvery: --every keeps issuing (a rotation loop with no shell), each time a
// new certificate, until the context ends.
func TestCAIssueEvery(t *testing.T) {
	dir := t.TempDir()
	if code := run([]string{"ca", "init", "--dir", dir}, new(bytes.Buffer), new(bytes.Buffer)); code != 0 {
		t.Fatal("ca init failed")
	}
	var errb bytes.Buffer
	if code := run([]string{"ca", "issue", "--dir", dir, "--mesh", "shop", "--node", "a", "--ttl", "1h", "--every", "1h"}, new(bytes.Buffer), &errb); code != 2 ||
		!strings.Contains(errb.String(), "not shorter than --ttl") {
		t.Errorf("--every as long as --ttl: code %d, %q", code, errb.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out lockedBuffer
	done := make(chan int)
	go func() {
		done <- caIssueCtx(ctx, []string{"--dir", dir, "--mesh", "shop", "--node", "a", "--ttl", "1h", "--every", "20ms"}, &out, io.Discard)
	}()
	serials := map[string]bool{}
	for deadline := time.Now().Add(5 * time.Second); len(serials) < 3; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("saw %d certificates in 5s; output %q", len(serials), out.String())
		}
		if pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "a.crt"), filepath.Join(dir, "a.key")); err == nil {
			serials[pair.Leaf.SerialNumber.String()] = true
		}
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit code %d", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("--every did not stop with its context")
	}
}
