package meshtls_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	meshtls "github.com/meshd/meshd/tls"
)

// testDebounce keeps file rotation tests fast.
const testDebounce = 20 * time.Millisecond

// writeNode writes a node's pair under dir and returns the file options for it.
func writeNode(t *testing.T, dir, node string, wc *meshtls.WorkloadCert) meshtls.FileOptions {
	t.Helper()
	certPath, keyPath, err := meshtls.WriteWorkload(dir, node, wc)
	if err != nil {
		t.Fatal(err)
	}
	return meshtls.FileOptions{CertificateChain: certPath, PrivateKey: keyPath, Debounce: testDebounce}
}

func writeCA(t *testing.T, dir string, ca *meshtls.CA) string {
	t.Helper()
	p := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(p, ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func fileSource(t *testing.T, opts meshtls.FileOptions) *meshtls.FileSource {
	t.Helper()
	s, err := meshtls.NewFileSource(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// node is a mesh node's certificate and trust, from files in a temporary directory.
type node struct {
	cert  *meshtls.FileSource
	trust *meshtls.FileSource
	wc    *meshtls.WorkloadCert
}

func newNode(t *testing.T, ca *meshtls.CA, mesh, name string, dns ...string) node {
	t.Helper()
	dir := t.TempDir()
	wc := issue(t, ca, mesh, name, dns...)
	return node{
		cert:  fileSource(t, writeNode(t, dir, name, wc)),
		trust: fileSource(t, meshtls.FileOptions{TrustChain: writeCA(t, dir, ca), Debounce: testDebounce}),
		wc:    wc,
	}
}

// result is what each side of a loopback handshake saw.
type result struct {
	server, client       tls.ConnectionState
	serverErr, clientErr error
}

// handshake connects a client to a server over 127.0.0.1 and completes a handshake
// and one read on the client (in TLS 1.3 the server's verdict on the client's
// certificate arrives after the client's handshake is done).
func handshake(t *testing.T, server, client *tls.Config) result {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var (
		r  result
		wg sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			r.serverErr = err
			return
		}
		defer c.Close()
		sc := tls.Server(c, server)
		if r.serverErr = sc.HandshakeContext(ctx); r.serverErr != nil {
			return
		}
		r.server = sc.ConnectionState()
		_, r.serverErr = sc.Write([]byte("ok"))
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cc := tls.Client(c, client)
	if r.clientErr = cc.HandshakeContext(ctx); r.clientErr == nil {
		r.client = cc.ConnectionState()
		_ = cc.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 2)
		if _, err := io.ReadFull(cc, buf); err != nil {
			r.clientErr = err
		}
	}
	if r.clientErr != nil {
		c.Close() // unblock the server
	}
	wg.Wait()
	return r
}

func mustServer(t *testing.T, o meshtls.ServerOptions) *tls.Config {
	t.Helper()
	cfg, err := meshtls.NewServerConfig(o)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func mustClient(t *testing.T, o meshtls.ClientOptions) *tls.Config {
	t.Helper()
	cfg, err := meshtls.NewClientConfig(o)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// logBuffer is a slog logger writing JSON lines to a buffer, safe for concurrent use.
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

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (b *logBuffer) count(substr string) int {
	return strings.Count(b.String(), substr)
}

// waitFor polls cond until it holds or 5s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitChanged waits for a Source's change notification.
func waitChanged(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// TestMain checks that every goroutine a source or a Workload API stream starts is
// joined by its Close.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
