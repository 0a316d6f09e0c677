package proxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
	meshtls "github.com/meshd/meshd/tls"
)

// corpusDir is ../shared/appmesh-corpus beside the repository (skip when it is missing,
// fail when CI is set).
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

// TestCorpusListenerTLS: every virtual node of the App Mesh corpus whose listener tls
// block takes its certificates from files is served by meshd as App Mesh served it: its
// files (certificates of the mesh CA carrying the SANs the corpus names, written to a
// temporary directory its paths are rewritten to) load, the config applies, and a TLS
// client (with a client certificate the listener's validation accepts, when it has
// one) gets the local app's answer through the listener.
func TestCorpusListenerTLS(t *testing.T) {
	dir := corpusDir(t)
	f, err := os.Open(filepath.Join(dir, "MANIFEST.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	up := testutil.StartHTTP(t, echoHandler("corpus-app"))
	served := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		cols := strings.Split(sc.Text(), "\t")
		if len(cols) < 2 || cols[1] != "virtualNode" {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(dir, cols[0]))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(raw), `"tls"`) || !strings.Contains(string(raw), `"file"`) {
			continue // no tls, or ACM only (refused: TestCorpusTLS in package tls)
		}
		served++
		t.Run(cols[0], func(t *testing.T) { serveCorpusNode(t, raw, up.Port) })
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if served < 2 {
		t.Errorf("%d corpus virtual nodes with file tls sources; the corpus has 2 (howto-mutual-tls-file-provided)", served)
	}
}

func x509Pool(ca *meshtls.CA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

func serveCorpusNode(t *testing.T, raw []byte, appPort int) {
	cfg, err := config.Parse([]byte(`{"mesh": {"meshName": "corpus"}, "virtualNodes": [` + string(raw) + `]}`))
	if err != nil {
		t.Fatal(err)
	}
	vn := &cfg.VirtualNodes[0]
	if vn.VirtualNodeName == "" {
		vn.VirtualNodeName = "colorteller"
	}
	if len(vn.Spec.Listeners) != 1 {
		t.Fatalf("%d listeners; the test serves one", len(vn.Spec.Listeners))
	}
	l := &vn.Spec.Listeners[0]
	l.PortMapping.Port = appPort
	lt := l.TLS
	if lt.Certificate == nil || lt.Certificate.File == nil {
		t.Fatalf("tls block without a file certificate: %+v", lt)
	}

	// The files: the listener's certificate (DNS SAN appServerName, which the client
	// verifies) and, with validation, the CA as trust and a client certificate carrying
	// the first SAN the listener accepts.
	ca, err := meshtls.NewCA(meshtls.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	keys := t.TempDir()
	rebase := func(p string) string { return filepath.Join(keys, filepath.Base(p)) }
	write := func(path string, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	srvCert, err := ca.Issue(meshtls.WorkloadRequest{Mesh: "corpus", Node: vn.VirtualNodeName, DNSNames: []string{appServerName}})
	if err != nil {
		t.Fatal(err)
	}
	fc := lt.Certificate.File
	fc.CertificateChain, fc.PrivateKey = rebase(fc.CertificateChain), rebase(fc.PrivateKey)
	write(fc.CertificateChain, srvCert.ChainPEM)
	write(fc.PrivateKey, srvCert.KeyPEM)
	client := &tls.Config{RootCAs: x509Pool(ca), ServerName: appServerName, NextProtos: []string{"http/1.1"}}
	if v := lt.Validation; v != nil {
		if v.Trust == nil || v.Trust.File == nil {
			t.Fatalf("validation without a file trust: %+v", v)
		}
		v.Trust.File.CertificateChain = rebase(v.Trust.File.CertificateChain)
		write(v.Trust.File.CertificateChain, ca.CertPEM())
		req := meshtls.WorkloadRequest{Mesh: "corpus", Node: "caller"}
		if s := v.SubjectAlternativeNames; s != nil && len(s.Match.Exact) > 0 {
			req.DNSNames = s.Match.Exact[:1]
		}
		cc, err := ca.Issue(req)
		if err != nil {
			t.Fatal(err)
		}
		client.Certificates = []tls.Certificate{tlsCert(t, cc)}
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the corpus node with its files rewritten does not validate: %v", err)
	}

	srv, err := proxy.New(proxy.Options{Node: vn.VirtualNodeName, IngressAddr: "127.0.0.1:0", EgressAddr: "127.0.0.1:0", AdminAddr: "off", DrainTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	if _, err := srv.Apply(context.Background(), cfg, "corpus"); err != nil {
		t.Fatalf("apply: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	resp, err := httpsClient(t, srv.IngressAddr(), client).Get("https://" + appServerName + "/color")
	if err != nil {
		t.Fatal(err)
	}
	if info := decodeEcho(t, resp); info.Path != "/color" || resp.TLS == nil {
		t.Errorf("got %s over TLS %v", info.Path, resp.TLS != nil)
	}
	if lt.Validation != nil {
		client.Certificates = nil
		if resp, err := httpsClient(t, srv.IngressAddr(), client).Get("https://" + appServerName + "/"); err == nil {
			resp.Body.Close()
			t.Error("served a caller without a client certificate on a listener with validation")
		}
	}
}
