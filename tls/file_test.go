package meshtls_test

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	meshtls "github.com/meshd/meshd/tls"
)

// servedSerial handshakes with server and returns the serial of the certificate it
// presented.
func servedSerial(t *testing.T, server, client *tls.Config) string {
	t.Helper()
	r := handshake(t, server, client)
	if r.serverErr != nil || r.clientErr != nil {
		t.Fatalf("handshake: server %v, client %v", r.serverErr, r.clientErr)
	}
	return r.client.PeerCertificates[0].SerialNumber.String()
}

// TestFileRotation: the pair is rewritten under a running server; new handshakes get
// the new certificate with no restart, an established connection keeps working, and a
// broken new pair is rejected (logged, counted) while the last good one keeps serving.
func TestFileRotation(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	var logs logBuffer
	opts := writeNode(t, dir, "backend", issue(t, ca, "shop", "backend"))
	opts.Logger = logs.logger()
	src := fileSource(t, opts)
	trust := fileSource(t, meshtls.FileOptions{TrustChain: writeCA(t, dir, ca)})
	server := mustServer(t, meshtls.ServerOptions{Certificate: src})
	client := mustClient(t, meshtls.ClientOptions{ServerName: "backend", Trust: trust, SessionCache: noCache{}})

	first := servedSerial(t, server, client)

	// An established connection across the rotation.
	ln, conn := serveEcho(t, server)
	defer ln.Close()
	cc := tls.Client(conn, client)
	defer cc.Close()
	echo(t, cc, "before")

	changed := src.Changed()
	next := issue(t, ca, "shop", "backend")
	if _, _, err := meshtls.WriteWorkload(dir, "backend", next); err != nil {
		t.Fatal(err)
	}
	waitChanged(t, changed, "the rotated pair")
	if got := servedSerial(t, server, client); got != next.Cert.SerialNumber.String() || got == first {
		t.Fatalf("after rotation the server presents serial %s; want the new %s", got, next.Cert.SerialNumber)
	}
	echo(t, cc, "after")
	if st := src.Stats(); st.Reloads != 1 || st.Rejects != 0 || !st.NotAfter.Equal(next.Cert.NotAfter) {
		t.Errorf("stats after rotation: %+v", st)
	}

	// A broken rotation: a key that belongs to another certificate.
	other := issue(t, ca, "shop", "intruder")
	if err := meshtls.WriteFileAtomic(opts.PrivateKey, other.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the broken pair to be rejected", func() bool { return src.Stats().Rejects >= 1 })
	if got := servedSerial(t, server, client); got != next.Cert.SerialNumber.String() {
		t.Fatalf("after a broken rotation the server presents %s; want the last good %s", got, next.Cert.SerialNumber)
	}
	st := src.Stats()
	if !strings.Contains(st.LastError, "private key does not match public key") || st.Reloads != 1 {
		t.Errorf("stats after a broken rotation: %+v", st)
	}
	if !strings.Contains(logs.String(), "rejected; the previous one keeps serving") || !strings.Contains(logs.String(), `"level":"ERROR"`) {
		t.Errorf("no error logged for the rejected pair:\n%s", logs.String())
	}

	// Garbage in the certificate file: rejected too.
	if err := meshtls.WriteFileAtomic(opts.CertificateChain, []byte("not PEM"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the garbage to be rejected", func() bool { return src.Stats().Rejects >= 2 })
	if got := servedSerial(t, server, client); got != next.Cert.SerialNumber.String() {
		t.Fatalf("after garbage the server presents %s", got)
	}
	// Repaired: served again.
	changed = src.Changed()
	fixed := issue(t, ca, "shop", "backend")
	if _, _, err := meshtls.WriteWorkload(dir, "backend", fixed); err != nil {
		t.Fatal(err)
	}
	waitChanged(t, changed, "the repaired pair")
	if got := servedSerial(t, server, client); got != fixed.Cert.SerialNumber.String() {
		t.Fatalf("after repair the server presents %s", got)
	}
}

// noCache disables session resumption, so each handshake shows the served certificate.
type noCache struct{}

func (noCache) Get(string) (*tls.ClientSessionState, bool) { return nil, false }
func (noCache) Put(string, *tls.ClientSessionState)        {}

// serveEcho accepts one connection with cfg and echoes what it reads.
func serveEcho(t *testing.T, cfg *tls.Config) (net.Listener, net.Conn) {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 64)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
	}()
	t.Cleanup(wg.Wait)
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return l, c
}

func echo(t *testing.T, c *tls.Conn, msg string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := c.Read(buf); err != nil || string(buf) != msg {
		t.Fatalf("echo %q: %q, %v", msg, buf, err)
	}
}

// TestFileKubernetesSymlinkSwap: a Kubernetes secret volume (paths are symlinks through
// ..data, which the kubelet swaps to a new timestamped directory) rotates the pair.
func TestFileKubernetesSymlinkSwap(t *testing.T) {
	ca := newCA(t)
	vol := t.TempDir()
	write := func(stamp string, wc *meshtls.WorkloadCert) {
		d := filepath.Join(vol, stamp)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, data := range map[string][]byte{"tls.crt": wc.ChainPEM, "tls.key": wc.KeyPEM, "ca.crt": ca.CertPEM()} {
			if err := os.WriteFile(filepath.Join(d, name), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		// The kubelet's atomic writer: a new ..data_tmp link renamed over ..data.
		if err := os.Symlink(stamp, filepath.Join(vol, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(vol, "..data_tmp"), filepath.Join(vol, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	first := issue(t, ca, "shop", "backend")
	write("..2026_01_01_00_00_00.1", first)
	for _, name := range []string{"tls.crt", "tls.key", "ca.crt"} {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(vol, name)); err != nil {
			t.Fatal(err)
		}
	}
	src := fileSource(t, meshtls.FileOptions{
		CertificateChain: filepath.Join(vol, "tls.crt"), PrivateKey: filepath.Join(vol, "tls.key"),
		TrustChain: filepath.Join(vol, "ca.crt"), Debounce: testDebounce,
	})
	server := mustServer(t, meshtls.ServerOptions{Certificate: src, Trust: src})
	client := mustClient(t, meshtls.ClientOptions{ServerName: "backend", Trust: src, Certificate: src, SessionCache: noCache{}})
	if got := servedSerial(t, server, client); got != first.Cert.SerialNumber.String() {
		t.Fatalf("serving %s", got)
	}
	changed := src.Changed()
	second := issue(t, ca, "shop", "backend")
	write("..2026_01_02_00_00_00.2", second)
	waitChanged(t, changed, "the swapped ..data")
	if got := servedSerial(t, server, client); got != second.Cert.SerialNumber.String() {
		t.Fatalf("after the swap serving %s, want %s", got, second.Cert.SerialNumber)
	}
	// The old directory goes away, as the kubelet removes it.
	if err := os.RemoveAll(filepath.Join(vol, "..2026_01_01_00_00_00.1")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * testDebounce)
	if st := src.Stats(); st.Rejects != 0 || st.Reloads != 1 {
		t.Errorf("stats: %+v", st)
	}
}

// TestFileSymlinkTargetEdited: a path that is a symlink to a file in another directory
// sees that file replaced.
func TestFileSymlinkTargetEdited(t *testing.T) {
	ca := newCA(t)
	real, links := t.TempDir(), t.TempDir()
	wc := issue(t, ca, "shop", "backend")
	opts := writeNode(t, real, "backend", wc)
	for _, p := range []string{opts.CertificateChain, opts.PrivateKey} {
		if err := os.Symlink(p, filepath.Join(links, filepath.Base(p))); err != nil {
			t.Fatal(err)
		}
	}
	src := fileSource(t, meshtls.FileOptions{
		CertificateChain: filepath.Join(links, "backend.crt"), PrivateKey: filepath.Join(links, "backend.key"), Debounce: testDebounce,
	})
	changed := src.Changed()
	next := issue(t, ca, "shop", "backend")
	if _, _, err := meshtls.WriteWorkload(real, "backend", next); err != nil {
		t.Fatal(err)
	}
	waitChanged(t, changed, "the symlink target's rotation")
	if c, _ := src.Certificate(); !c.Leaf.Equal(next.Cert) {
		t.Fatal("the source did not follow the symlink target")
	}
}

// TestFileLoadErrors: the first load fails with errors naming the file and the fault.
func TestFileLoadErrors(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	good := writeNode(t, dir, "backend", issue(t, ca, "shop", "backend"))
	expired, err := ca.Issue(meshtls.WorkloadRequest{Mesh: "shop", Node: "old", TTL: time.Hour, Now: time.Now().Add(-3 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	exp := writeNode(t, dir, "old", expired)
	other := writeNode(t, dir, "other", issue(t, ca, "shop", "other"))
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts meshtls.FileOptions
		want []string
	}{
		{"expired", exp, []string{"old.crt", "certificate spiffe://shop/old expired at " + expired.Cert.NotAfter.UTC().Format(time.RFC3339)}},
		{"key of another certificate", meshtls.FileOptions{CertificateChain: good.CertificateChain, PrivateKey: other.PrivateKey}, []string{"backend.crt", "other.key", "private key does not match"}},
		{"missing file", meshtls.FileOptions{CertificateChain: filepath.Join(dir, "nope.crt"), PrivateKey: good.PrivateKey}, []string{"nope.crt", "no such file"}},
		{"trust garbage", meshtls.FileOptions{TrustChain: garbage}, []string{"garbage.pem", "certificate 1"}},
		{"trust without certificates", meshtls.FileOptions{TrustChain: good.PrivateKey}, []string{"no PEM CERTIFICATE block"}},
		{"half a pair", meshtls.FileOptions{CertificateChain: good.CertificateChain}, []string{"go together"}},
		{"nothing", meshtls.FileOptions{}, []string{"nothing to read"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := meshtls.NewFileSource(tc.opts)
			if err == nil {
				s.Close()
				t.Fatal("loaded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// TestExpiryWarnings: with an injected clock, a warning once less than a third of the
// lifetime is left, an error once expired, each once per certificate.
func TestExpiryWarnings(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	issued := time.Now()
	wc, err := ca.Issue(meshtls.WorkloadRequest{Mesh: "shop", Node: "backend", TTL: 24 * time.Hour, Now: issued})
	if err != nil {
		t.Fatal(err)
	}
	opts := writeNode(t, dir, "backend", wc)
	var now atomic.Pointer[time.Time]
	set := func(d time.Duration) { tm := issued.Add(d); now.Store(&tm) }
	set(0)
	var logs logBuffer
	opts.Now = func() time.Time { return *now.Load() }
	opts.Logger = logs.logger()
	src := fileSource(t, opts)
	if !src.NotAfter().Equal(wc.Cert.NotAfter) {
		t.Errorf("NotAfter %v, want %v", src.NotAfter(), wc.Cert.NotAfter)
	}
	const soon, expired = "certificate expires soon", "certificate has expired"
	set(15 * time.Hour) // 9h of 24h+1m left: more than a third
	src.CheckExpiry()
	if logs.count(soon) != 0 {
		t.Fatalf("warned with more than a third left:\n%s", logs.String())
	}
	set(17 * time.Hour) // 7h left
	src.CheckExpiry()
	src.CheckExpiry()
	if logs.count(soon) != 1 || !strings.Contains(logs.String(), `"level":"WARN"`) || !strings.Contains(logs.String(), "spiffe://shop/backend") {
		t.Fatalf("want one warning naming the certificate:\n%s", logs.String())
	}
	set(25 * time.Hour)
	src.CheckExpiry()
	src.CheckExpiry()
	if logs.count(expired) != 1 || !strings.Contains(logs.String(), `"level":"ERROR"`) {
		t.Fatalf("want one expiry error:\n%s", logs.String())
	}
	if st := src.Stats(); st.ExpiryWarnings != 2 {
		t.Errorf("ExpiryWarnings %d, want 2", st.ExpiryWarnings)
	}
	// A fresh certificate (issued at the fake now) resets the warnings.
	fresh, err := ca.Issue(meshtls.WorkloadRequest{Mesh: "shop", Node: "backend", Now: *now.Load()})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := meshtls.WriteWorkload(dir, "backend", fresh); err != nil {
		t.Fatal(err)
	}
	if err := src.Reload(); err != nil {
		t.Fatal(err)
	}
	src.CheckExpiry()
	if logs.count(soon) != 1 || logs.count(expired) != 1 {
		t.Errorf("a fresh certificate warned:\n%s", logs.String())
	}
}
