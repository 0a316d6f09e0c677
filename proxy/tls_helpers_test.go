package proxy_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
	meshtls "github.com/meshd/meshd/tls"
)

// tlsMesh is the mesh name of the TLS tests: SPIFFE IDs are spiffe://t/<node>.
const tlsMesh = "t"

// appServerName is the DNS SAN of node app's listener certificate, which the tests'
// crypto/tls clients verify (ServerName).
const appServerName = "app.t.local"

// pki is a mesh CA with its certificate files in a temporary directory.
type pki struct {
	t      *testing.T
	dir    string
	ca     *meshtls.CA
	caFile string
	pool   *x509.CertPool
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	ca, err := meshtls.NewCA(meshtls.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{t: t, dir: t.TempDir(), ca: ca, pool: x509.NewCertPool()}
	p.pool.AddCert(ca.Cert)
	p.caFile = filepath.Join(p.dir, meshtls.CACertFile)
	if err := os.WriteFile(p.caFile, ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// cert issues node's certificate (SPIFFE ID spiffe://t/<node>, the DNS names given) in
// memory.
func (p *pki) cert(node string, req meshtls.WorkloadRequest) *meshtls.WorkloadCert {
	p.t.Helper()
	req.Mesh, req.Node = tlsMesh, node
	wc, err := p.ca.Issue(req)
	if err != nil {
		p.t.Fatal(err)
	}
	return wc
}

// write issues node's certificate into the directory (<node>.crt, <node>.key), by
// rename as meshd ca issue does, and returns it.
func (p *pki) write(node string, req meshtls.WorkloadRequest) *meshtls.WorkloadCert {
	p.t.Helper()
	wc := p.cert(node, req)
	if _, _, err := meshtls.WriteWorkload(p.dir, node, wc); err != nil {
		p.t.Fatal(err)
	}
	return wc
}

// files are the paths of node's certificate chain and key in the directory.
func (p *pki) files(node string) (crt, key string) { return meshtls.WorkloadFiles(p.dir, node) }

// tlsCert is a client certificate for crypto/tls.
func tlsCert(t *testing.T, wc *meshtls.WorkloadCert) tls.Certificate {
	t.Helper()
	c, err := tls.X509KeyPair(wc.ChainPEM, wc.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// client is a crypto/tls client configuration that trusts the CA and verifies
// appServerName, offering ALPN protos (none: no ALPN), presenting certs.
func (p *pki) client(protos []string, certs ...tls.Certificate) *tls.Config {
	return &tls.Config{RootCAs: p.pool, ServerName: appServerName, NextProtos: protos, Certificates: certs}
}

// listenerTLS is the tls block of node app's listener: mode, its certificate files,
// and with validation the CA as trust and sans as subjectAlternativeNames.
func (p *pki) listenerTLS(mode string, validation bool, sans ...string) string {
	crt, key := p.files("app")
	s := fmt.Sprintf("{mode: %s, certificate: {file: {certificateChain: %q, privateKey: %q}}", mode, crt, key)
	if validation {
		s += fmt.Sprintf(", validation: {trust: {file: {certificateChain: %q}}", p.caFile)
		if len(sans) > 0 {
			s += fmt.Sprintf(", subjectAlternativeNames: {match: {exact: [%s]}}", strings.Join(sans, ", "))
		}
		s += "}"
	}
	return s + "}"
}

// tlsNodeYAML is a mesh whose node app has one listener (port appPort, protocol proto)
// with the tls block given ("" none), serving the local app at 127.0.0.1:appPort;
// extra is added to app's spec (YAML, indented 6 spaces, e.g. a logging block).
func tlsNodeYAML(appPort int, proto, tlsBlock, extra string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "mesh:\n  meshName: %s\n  spec: {egressFilter: {type: DROP_ALL}}\n", tlsMesh)
	b.WriteString("virtualNodes:\n  - virtualNodeName: app\n    spec:\n")
	l := fmt.Sprintf("{portMapping: {port: %d, protocol: %s}", appPort, proto)
	if tlsBlock != "" {
		l += ", tls: " + tlsBlock
	}
	fmt.Fprintf(&b, "      listeners: [%s}]\n", l)
	fmt.Fprintf(&b, "      serviceDiscovery: {static: {endpoints: [\"127.0.0.1:%d\"]}}\n", appPort)
	b.WriteString(extra)
	return b.String()
}

// logBuffer collects a meshd's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitLog waits (bounded) for a log line holding every one of parts.
func (b *logBuffer) waitLog(t *testing.T, parts ...string) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		for _, line := range strings.Split(b.String(), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(line, p)
			}
			if all {
				return line
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q; the log:\n%s", parts, b.String())
		}
	}
}

// startTLSMeshd starts meshd for node app with yaml, its log (debug level) in the
// returned buffer, and certificate files re-read 20 ms after they change.
func startTLSMeshd(t *testing.T, yaml string, opts proxy.Options) (*proxy.Server, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	opts.Node = "app"
	opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if opts.TLS.Debounce == 0 {
		opts.TLS.Debounce = 20 * time.Millisecond
	}
	return testutil.StartMeshdOpts(t, opts, yaml), logs
}
