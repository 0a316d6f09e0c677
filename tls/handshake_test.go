package meshtls_test

import (
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	meshtls "github.com/meshd/meshd/tls"
)

// TestMTLSLoopback: two mesh nodes with certificates of the mesh CA complete mTLS
// over 127.0.0.1 with the safe defaults, and each side reads the other's identity.
func TestMTLSLoopback(t *testing.T) {
	ca := newCA(t)
	front := newNode(t, ca, "shop", "frontend")
	back := newNode(t, ca, "shop", "backend", "backend.shop.local")

	server := mustServer(t, meshtls.ServerOptions{
		Certificate: back.cert, Trust: back.trust,
		SubjectAltNames: []string{"spiffe://shop/frontend", "spiffe://shop/gateway"},
	})
	client := mustClient(t, meshtls.ClientOptions{
		ServerName: "backend.shop.local", Trust: front.trust, Certificate: front.cert,
		SubjectAltNames: []string{"spiffe://shop/backend"},
	})
	r := handshake(t, server, client)
	if r.serverErr != nil || r.clientErr != nil {
		t.Fatalf("handshake: server %v, client %v", r.serverErr, r.clientErr)
	}
	if r.client.Version != tls.VersionTLS13 || r.client.NegotiatedProtocol != "h2" || r.server.ServerName != "backend.shop.local" {
		t.Errorf("version %x, ALPN %q, SNI %q; want TLS 1.3, h2, backend.shop.local", r.client.Version, r.client.NegotiatedProtocol, r.server.ServerName)
	}
	id, err := meshtls.PeerIdentity(r.server)
	if err != nil {
		t.Fatal(err)
	}
	if id.String() != "spiffe://shop/frontend" {
		t.Errorf("server sees caller %s", id)
	}
	if n, ok := id.Node("shop"); !ok || n != "frontend" {
		t.Errorf("Node(shop) = %q, %v", n, ok)
	}
	if _, ok := id.Node("other"); ok {
		t.Error("Node of another mesh answered")
	}
	if id, err := meshtls.PeerIdentity(r.client); err != nil || id.String() != "spiffe://shop/backend" {
		t.Errorf("client sees server %v, %v", id, err)
	}

	// DNS SANs match too (App Mesh's exact match over every SAN type).
	client = mustClient(t, meshtls.ClientOptions{ServerName: "backend.shop.local", Trust: front.trust, Certificate: front.cert,
		SubjectAltNames: []string{"backend.shop.local"}, NextProtos: []string{"http/1.1"}})
	if r := handshake(t, server, client); r.serverErr != nil || r.clientErr != nil || r.client.NegotiatedProtocol != "http/1.1" {
		t.Fatalf("DNS SAN match with http/1.1: server %v, client %v, ALPN %q", r.serverErr, r.clientErr, r.client.NegotiatedProtocol)
	}

	// A resumed session is verified again.
	cache := tls.NewLRUClientSessionCache(8)
	client = mustClient(t, meshtls.ClientOptions{ServerName: "backend.shop.local", Trust: front.trust, Certificate: front.cert, SessionCache: cache})
	if r := handshake(t, server, client); r.serverErr != nil || r.clientErr != nil {
		t.Fatalf("first: %v %v", r.serverErr, r.clientErr)
	}
	r = handshake(t, server, client)
	if r.serverErr != nil || r.clientErr != nil || !r.client.DidResume {
		t.Fatalf("resumption: server %v, client %v, resumed %v", r.serverErr, r.clientErr, r.client.DidResume)
	}
	if id, err := meshtls.PeerIdentity(r.server); err != nil || id.String() != "spiffe://shop/frontend" {
		t.Errorf("identity after resumption: %v %v", id, err)
	}
}

// TestSafeDefaults: TLS 1.2 only with AEAD suites, nothing older.
func TestSafeDefaults(t *testing.T) {
	ca := newCA(t)
	back := newNode(t, ca, "shop", "backend")
	server := mustServer(t, meshtls.ServerOptions{Certificate: back.cert})
	if server.MinVersion != tls.VersionTLS12 || server.ClientAuth != tls.NoClientCert {
		t.Errorf("server: min version %x, client auth %v", server.MinVersion, server.ClientAuth)
	}
	if !slices.Equal(server.NextProtos, []string{"h2", "http/1.1"}) {
		t.Errorf("server ALPN %v", server.NextProtos)
	}
	client := mustClient(t, meshtls.ClientOptions{ServerName: "backend", Trust: back.trust})
	if client.Renegotiation != tls.RenegotiateNever || client.ClientSessionCache == nil || client.MinVersion != tls.VersionTLS12 {
		t.Errorf("client: renegotiation %v, session cache %v, min version %x", client.Renegotiation, client.ClientSessionCache, client.MinVersion)
	}

	// A TLS 1.2 client negotiates an AEAD suite.
	c12 := client.Clone()
	c12.MaxVersion = tls.VersionTLS12
	r := handshake(t, server, c12)
	if r.clientErr != nil || r.client.Version != tls.VersionTLS12 || !slices.Contains(meshtls.CipherSuites(), r.client.CipherSuite) {
		t.Fatalf("TLS 1.2: %v, version %x, suite %s", r.clientErr, r.client.Version, tls.CipherSuiteName(r.client.CipherSuite))
	}
	if !strings.Contains(tls.CipherSuiteName(r.client.CipherSuite), "GCM") && !strings.Contains(tls.CipherSuiteName(r.client.CipherSuite), "CHACHA20") {
		t.Errorf("suite %s is not AEAD", tls.CipherSuiteName(r.client.CipherSuite))
	}
	// A client offering only CBC suites, or only TLS 1.1, is refused.
	cbc := c12.Clone()
	cbc.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}
	if r := handshake(t, server, cbc); r.serverErr == nil {
		t.Error("a CBC-only TLS 1.2 client was served")
	}
	old := client.Clone()
	old.MinVersion, old.MaxVersion = tls.VersionTLS11, tls.VersionTLS11
	if r := handshake(t, server, old); r.serverErr == nil {
		t.Error("a TLS 1.1 client was served")
	}
}

// TestForeignCARefused: a certificate from another CA is refused, both ways.
func TestForeignCARefused(t *testing.T) {
	ca, other := newCA(t), newCA(t)
	back := newNode(t, ca, "shop", "backend")
	intruder := newNode(t, other, "shop", "frontend") // right name, wrong CA
	server := mustServer(t, meshtls.ServerOptions{Certificate: back.cert, Trust: back.trust})

	// The intruder trusts the mesh CA, so it accepts the server; the server refuses it.
	client := mustClient(t, meshtls.ClientOptions{ServerName: "backend", Trust: back.trust, Certificate: intruder.cert})
	r := handshake(t, server, client)
	if r.serverErr == nil || !strings.Contains(r.serverErr.Error(), "not signed by a trusted CA") {
		t.Fatalf("server accepted a client of another CA: %v", r.serverErr)
	}
	if r.clientErr == nil {
		t.Error("client saw no failure")
	}
	// A client without a certificate is refused too.
	client = mustClient(t, meshtls.ClientOptions{ServerName: "backend", Trust: back.trust})
	if r := handshake(t, server, client); r.serverErr == nil || !strings.Contains(r.serverErr.Error(), "sent no certificate") &&
		!strings.Contains(r.serverErr.Error(), "didn't provide a certificate") {
		t.Fatalf("certificate-less client: %v", r.serverErr)
	}

	// A client that trusts only the other CA refuses the mesh's server.
	client = mustClient(t, meshtls.ClientOptions{ServerName: "backend", Trust: intruder.trust, Certificate: intruder.cert})
	if r := handshake(t, server, client); r.clientErr == nil || !strings.Contains(r.clientErr.Error(), "not signed by a trusted CA") {
		t.Fatalf("client accepted a server of another CA: %v", r.clientErr)
	}
}

// TestSANOutsideListRefused: a certificate the trust verifies but whose SANs are not
// in the subjectAlternativeNames list is refused, both ways.
func TestSANOutsideListRefused(t *testing.T) {
	ca := newCA(t)
	back := newNode(t, ca, "shop", "backend", "backend.shop.local")
	front := newNode(t, ca, "shop", "frontend")
	server := mustServer(t, meshtls.ServerOptions{Certificate: back.cert, Trust: back.trust, SubjectAltNames: []string{"spiffe://shop/gateway"}})
	client := mustClient(t, meshtls.ClientOptions{ServerName: "backend", Trust: front.trust, Certificate: front.cert})
	r := handshake(t, server, client)
	if r.serverErr == nil || !strings.Contains(r.serverErr.Error(), "match none of subjectAlternativeNames [spiffe://shop/gateway]") ||
		!strings.Contains(r.serverErr.Error(), "spiffe://shop/frontend") {
		t.Fatalf("server: %v", r.serverErr)
	}

	server = mustServer(t, meshtls.ServerOptions{Certificate: back.cert, Trust: back.trust})
	client = mustClient(t, meshtls.ClientOptions{ServerName: "backend", Trust: front.trust, Certificate: front.cert,
		SubjectAltNames: []string{"spiffe://shop/backend-v2", "backend-v2.shop.local"}})
	if r := handshake(t, server, client); r.clientErr == nil || !strings.Contains(r.clientErr.Error(), "match none of subjectAlternativeNames") {
		t.Fatalf("client: %v", r.clientErr)
	}
}

// TestExpiredPeerRefused: a peer whose certificate has expired is refused with an
// error that says so and when.
func TestExpiredPeerRefused(t *testing.T) {
	ca := newCA(t)
	back := newNode(t, ca, "shop", "backend")
	front := newNode(t, ca, "shop", "frontend")
	// The client's source was loaded while the certificate was valid; the server's
	// clock is two days later.
	later := func() time.Time { return time.Now().Add(48 * time.Hour) }
	server := mustServer(t, meshtls.ServerOptions{Certificate: back.cert, Trust: back.trust, Now: later})
	client := mustClient(t, meshtls.ClientOptions{ServerName: "backend", Trust: front.trust, Certificate: front.cert})
	r := handshake(t, server, client)
	if r.serverErr == nil || !strings.Contains(r.serverErr.Error(), "client certificate spiffe://shop/frontend expired at "+front.wc.Cert.NotAfter.UTC().Format(time.RFC3339)) {
		t.Fatalf("server: %v", r.serverErr)
	}
	// And a client two days late refuses the server.
	server = mustServer(t, meshtls.ServerOptions{Certificate: back.cert})
	client = mustClient(t, meshtls.ClientOptions{ServerName: "backend", Trust: front.trust, Now: later})
	if r := handshake(t, server, client); r.clientErr == nil || !strings.Contains(r.clientErr.Error(), "server certificate spiffe://shop/backend expired at") {
		t.Fatalf("client: %v", r.clientErr)
	}
}

func TestConfigErrors(t *testing.T) {
	ca := newCA(t)
	back := newNode(t, ca, "shop", "backend")
	if _, err := meshtls.NewServerConfig(meshtls.ServerOptions{}); err == nil {
		t.Error("server without a certificate")
	}
	if _, err := meshtls.NewServerConfig(meshtls.ServerOptions{Certificate: back.cert, SubjectAltNames: []string{"x"}}); err == nil {
		t.Error("SANs without trust")
	}
	if _, err := meshtls.NewServerConfig(meshtls.ServerOptions{Certificate: back.trust}); !errors.Is(err, meshtls.ErrNoCertificate) {
		t.Errorf("a trust-only source as certificate: %v", err)
	}
	if _, err := meshtls.NewClientConfig(meshtls.ClientOptions{ServerName: "x"}); err == nil {
		t.Error("client without trust")
	}
	if _, err := meshtls.NewClientConfig(meshtls.ClientOptions{Trust: back.cert}); !errors.Is(err, meshtls.ErrNoTrust) {
		t.Errorf("a certificate-only source as trust: %v", err)
	}
}

func TestPeerIdentityErrors(t *testing.T) {
	if _, err := meshtls.PeerIdentity(tls.ConnectionState{}); err == nil {
		t.Error("incomplete handshake")
	}
	if _, err := meshtls.PeerIdentity(tls.ConnectionState{HandshakeComplete: true}); !errors.Is(err, meshtls.ErrNoPeerCertificate) {
		t.Errorf("no certificate: %v", err)
	}
	ca := newCA(t)
	back := newNode(t, ca, "shop", "backend")
	// A server without trust asks for no certificate: no identity.
	server := mustServer(t, meshtls.ServerOptions{Certificate: back.cert})
	client := mustClient(t, meshtls.ClientOptions{ServerName: "backend", Trust: back.trust, Certificate: back.cert})
	r := handshake(t, server, client)
	if _, err := meshtls.PeerIdentity(r.server); !errors.Is(err, meshtls.ErrNoPeerCertificate) {
		t.Errorf("server without trust: %v", err)
	}
}

// TestResumedSessionReverified: a session resumed after the server's trust changed is
// verified against the new trust, and refused when the client's CA left it.
func TestResumedSessionReverified(t *testing.T) {
	ca, next := newCA(t), newCA(t)
	dir := t.TempDir()
	back := fileSource(t, writeNode(t, dir, "backend", issue(t, ca, "shop", "backend")))
	trustPath := filepath.Join(dir, "trust.pem")
	if err := os.WriteFile(trustPath, ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	serverTrust := fileSource(t, meshtls.FileOptions{TrustChain: trustPath, Debounce: testDebounce})
	front := newNode(t, ca, "shop", "frontend")
	server := mustServer(t, meshtls.ServerOptions{Certificate: back, Trust: serverTrust})
	verify, resumed := server.VerifyConnection, false
	server.VerifyConnection = func(cs tls.ConnectionState) error {
		resumed = cs.DidResume
		return verify(cs)
	}
	client := mustClient(t, meshtls.ClientOptions{ServerName: "backend", Trust: front.trust, Certificate: front.cert,
		SessionCache: tls.NewLRUClientSessionCache(8)})
	if r := handshake(t, server, client); r.serverErr != nil || r.clientErr != nil {
		t.Fatalf("first: %v %v", r.serverErr, r.clientErr)
	}
	changed := serverTrust.Changed()
	if err := meshtls.WriteFileAtomic(trustPath, next.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	waitChanged(t, changed, "the new trust")
	r := handshake(t, server, client)
	if !resumed || r.serverErr == nil || !strings.Contains(r.serverErr.Error(), "not signed by a trusted CA") {
		t.Fatalf("a resumed session of a client the server no longer trusts: server %v, resumed %v", r.serverErr, resumed)
	}
}
