package meshtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// MinVersion is the lowest TLS version meshd speaks.
const MinVersion = tls.VersionTLS12

// cipherSuites are the TLS 1.2 suites meshd allows: forward secret (ECDHE) and AEAD
// (AES-GCM, ChaCha20-Poly1305) only. TLS 1.3's suites are not configurable and all AEAD.
var cipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// CipherSuites returns the TLS 1.2 cipher suites meshd allows.
func CipherSuites() []uint16 { return slices.Clone(cipherSuites) }

// DefaultNextProtos is the ALPN list when none is given: HTTP/2, then HTTP/1.1.
var DefaultNextProtos = []string{"h2", "http/1.1"}

// DefaultSessionCacheSize is the number of sessions a client config keeps for
// resumption.
const DefaultSessionCacheSize = 256

// ServerOptions describe a TLS server (a listener's tls block).
type ServerOptions struct {
	// Certificate is the listener's certificate. Required.
	Certificate Source
	// Trust, when set, makes the server ask for and require a client certificate,
	// verified against its current pool (mTLS). Nil: no client certificate is asked for.
	Trust Source
	// SubjectAltNames, when not empty, is App Mesh's subjectAlternativeNames.match.exact:
	// the client certificate must carry one of these as a URI, DNS, IP or e-mail SAN.
	// Needs Trust.
	SubjectAltNames []string
	// NextProtos is the ALPN list. Default DefaultNextProtos.
	NextProtos []string
	// Now is the clock for certificate verification. Default time.Now.
	Now func() time.Time
}

// NewServerConfig builds a server configuration: TLS 1.2 minimum, the AEAD suites,
// the certificate read from its Source at every handshake (GetCertificate, so a
// rotated certificate needs no restart), and, with Trust, client certificates required
// and verified at every handshake, resumed ones included, with extended key usage
// clientAuth, then matched against SubjectAltNames. crypto/tls servers never
// renegotiate. The handshake timeout is the caller's (see the package doc).
func NewServerConfig(o ServerOptions) (*tls.Config, error) {
	if o.Certificate == nil {
		return nil, errors.New("tls server: no certificate source")
	}
	if _, err := o.Certificate.Certificate(); err != nil {
		return nil, fmt.Errorf("tls server: %w", err)
	}
	if len(o.SubjectAltNames) > 0 && o.Trust == nil {
		return nil, errors.New("tls server: subjectAlternativeNames need a trust to verify client certificates against")
	}
	cfg := baseConfig(o.NextProtos, o.Now)
	src := o.Certificate
	cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		return src.Certificate()
	}
	if o.Trust != nil {
		if _, err := o.Trust.TrustPool(); err != nil {
			return nil, fmt.Errorf("tls server: %w", err)
		}
		v := &verifier{trust: o.Trust, sans: slices.Clone(o.SubjectAltNames), usage: x509.ExtKeyUsageClientAuth, role: "client", now: o.Now}
		// Go verifies nothing itself (RequireAnyClientCert); VerifyConnection does, at
		// every handshake, against the trust as it is now.
		cfg.ClientAuth = tls.RequireAnyClientCert
		cfg.VerifyConnection = v.verify
	}
	return cfg, nil
}

// ClientOptions describe a TLS client (a client policy's tls block, for one backend).
type ClientOptions struct {
	// ServerName is sent as SNI: the virtual service name.
	ServerName string
	// Trust verifies the server's certificate. Required.
	Trust Source
	// SubjectAltNames, when not empty, is App Mesh's subjectAlternativeNames.match.exact:
	// the server certificate must carry one of these as a URI, DNS, IP or e-mail SAN.
	// When empty, any certificate the trust verifies is accepted, as in App Mesh (the
	// server name is not checked against the certificate).
	SubjectAltNames []string
	// Certificate, when set, is presented when the server asks for one (mTLS).
	Certificate Source
	// NextProtos is the ALPN list. Default DefaultNextProtos; set it to the one protocol
	// the connection will speak when that is fixed.
	NextProtos []string
	// SessionCache keeps sessions for resumption. Default: a new LRU cache of
	// DefaultSessionCacheSize; share one between the configs of one upstream.
	SessionCache tls.ClientSessionCache
	// Now is the clock for certificate verification. Default time.Now.
	Now func() time.Time
}

// NewClientConfig builds a client configuration: TLS 1.2 minimum, the AEAD suites,
// never renegotiate, SNI ServerName, the server certificate verified at every handshake
// (resumed ones included) against the trust's current pool with extended key usage
// serverAuth, then matched against SubjectAltNames; the client certificate read from
// its Source when the server asks; session resumption. The handshake timeout is the
// caller's (see the package doc).
//
// crypto/tls's own verification is off (InsecureSkipVerify) because it would check the
// server name against the certificate and read a trust pool fixed at construction;
// VerifyConnection does the verification instead.
func NewClientConfig(o ClientOptions) (*tls.Config, error) {
	if o.Trust == nil {
		return nil, errors.New("tls client: no trust source: a client always verifies the server")
	}
	if _, err := o.Trust.TrustPool(); err != nil {
		return nil, fmt.Errorf("tls client: %w", err)
	}
	cfg := baseConfig(o.NextProtos, o.Now)
	cfg.ServerName = o.ServerName
	cfg.Renegotiation = tls.RenegotiateNever
	cfg.InsecureSkipVerify = true
	v := &verifier{trust: o.Trust, sans: slices.Clone(o.SubjectAltNames), usage: x509.ExtKeyUsageServerAuth, role: "server", now: o.Now}
	cfg.VerifyConnection = v.verify
	if o.Certificate != nil {
		if _, err := o.Certificate.Certificate(); err != nil {
			return nil, fmt.Errorf("tls client: %w", err)
		}
		src := o.Certificate
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return src.Certificate()
		}
	}
	cfg.ClientSessionCache = o.SessionCache
	if cfg.ClientSessionCache == nil {
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(DefaultSessionCacheSize)
	}
	return cfg, nil
}

func baseConfig(protos []string, now func() time.Time) *tls.Config {
	if len(protos) == 0 {
		protos = DefaultNextProtos
	}
	return &tls.Config{
		MinVersion:   MinVersion,
		CipherSuites: CipherSuites(),
		NextProtos:   slices.Clone(protos),
		Time:         now,
	}
}

// verifier checks a peer's certificate at each handshake.
type verifier struct {
	trust Source
	sans  []string
	usage x509.ExtKeyUsage
	role  string // "client" or "server": the peer's role, for messages
	now   func() time.Time
}

// domainTruster is implemented by Sources whose trust is per SPIFFE trust domain.
type domainTruster interface {
	trustFor(td string) (*x509.CertPool, error)
}

func (v *verifier) verify(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return &verifyError{HandshakeNoCertificate, fmt.Errorf("meshd tls: the %s sent no certificate", v.role)}
	}
	leaf := cs.PeerCertificates[0]
	var (
		pool *x509.CertPool
		err  error
	)
	if dt, ok := v.trust.(domainTruster); ok {
		td := ""
		if id, err := x509svid.IDFromCert(leaf); err == nil {
			td = id.TrustDomain().Name()
		}
		pool, err = dt.trustFor(td)
	} else {
		pool, err = v.trust.TrustPool()
	}
	if err != nil {
		return &verifyError{HandshakeVerifyError, fmt.Errorf("meshd tls: %s certificate %s: %w", v.role, describeCert(leaf), err)}
	}
	now := time.Now()
	if v.now != nil {
		now = v.now()
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{v.usage},
	}); err != nil {
		return &verifyError{HandshakeVerifyError, v.explain(leaf, now, err)}
	}
	if len(v.sans) > 0 && !matchSAN(leaf, v.sans) {
		return &verifyError{HandshakeVerifySAN, fmt.Errorf("meshd tls: %s certificate SANs [%s] match none of subjectAlternativeNames [%s]",
			v.role, strings.Join(certSANs(leaf), ", "), strings.Join(v.sans, ", "))}
	}
	return nil
}

// explain turns a verification failure into a message that says what to fix.
func (v *verifier) explain(leaf *x509.Certificate, now time.Time, err error) error {
	var inv x509.CertificateInvalidError
	var unk x509.UnknownAuthorityError
	switch {
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		if now.After(leaf.NotAfter) {
			return fmt.Errorf("meshd tls: %s certificate %s expired at %s (now %s): %w", v.role, describeCert(leaf),
				leaf.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), err)
		}
		if now.Before(leaf.NotBefore) {
			return fmt.Errorf("meshd tls: %s certificate %s is not valid before %s (now %s; check the clocks): %w", v.role, describeCert(leaf),
				leaf.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), err)
		}
		return fmt.Errorf("meshd tls: %s certificate %s: a certificate of its chain is outside its validity period: %w", v.role, describeCert(leaf), err)
	case errors.As(err, &unk):
		return fmt.Errorf("meshd tls: %s certificate %s (issuer %q) is not signed by a trusted CA: %w", v.role, describeCert(leaf), leaf.Issuer.String(), err)
	case errors.As(err, &inv) && inv.Reason == x509.IncompatibleUsage:
		return fmt.Errorf("meshd tls: %s certificate %s does not allow use by a %s (extended key usage): %w", v.role, describeCert(leaf), v.role, err)
	}
	return fmt.Errorf("meshd tls: %s certificate %s: %w", v.role, describeCert(leaf), err)
}

// certSANs lists a certificate's SANs as App Mesh's exact match sees them.
func certSANs(c *x509.Certificate) []string {
	var out []string
	for _, u := range c.URIs {
		out = append(out, u.String())
	}
	out = append(out, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		out = append(out, ip.String())
	}
	out = append(out, c.EmailAddresses...)
	return out
}

// matchSAN reports whether one of c's SANs equals one of names exactly.
func matchSAN(c *x509.Certificate, names []string) bool {
	for _, s := range certSANs(c) {
		if slices.Contains(names, s) {
			return true
		}
	}
	return false
}

// Identity is a peer's SPIFFE identity.
type Identity struct {
	// ID is the certificate's SPIFFE ID (its one spiffe:// URI SAN).
	ID spiffeid.ID
}

// String is the SPIFFE ID.
func (i Identity) String() string { return i.ID.String() }

// Node is the virtual node name when the ID is a mesh workload's,
// spiffe://<mesh>/<node> (what meshd ca issue writes), and false otherwise (another
// mesh, or another path shape such as SPIRE's Kubernetes /ns/N/sa/S).
func (i Identity) Node(mesh string) (string, bool) {
	if i.ID.IsZero() || i.ID.TrustDomain().Name() != mesh {
		return "", false
	}
	p := strings.TrimPrefix(i.ID.Path(), "/")
	if p == "" || strings.Contains(p, "/") {
		return "", false
	}
	return p, true
}

// ErrNoPeerCertificate: the connection's peer presented no certificate.
var ErrNoPeerCertificate = errors.New("the peer presented no certificate")

// PeerIdentity is the SPIFFE identity of a connection's peer, read from its leaf
// certificate. It is only as good as the verification of that certificate: use it on
// connections whose configuration came from NewServerConfig with a Trust, or from
// NewClientConfig, whose handshakes fail unless the peer's chain verifies (crypto/tls
// leaves cs.VerifiedChains empty there, because meshd verifies in VerifyConnection).
// A server without Trust asks for no certificate, and PeerIdentity returns
// ErrNoPeerCertificate.
func PeerIdentity(cs tls.ConnectionState) (Identity, error) {
	if !cs.HandshakeComplete {
		return Identity{}, errors.New("the TLS handshake is not complete")
	}
	if len(cs.PeerCertificates) == 0 {
		return Identity{}, ErrNoPeerCertificate
	}
	id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
	if err != nil {
		return Identity{}, fmt.Errorf("peer certificate %s has no SPIFFE ID: %w", describeCert(cs.PeerCertificates[0]), err)
	}
	return Identity{ID: id}, nil
}
