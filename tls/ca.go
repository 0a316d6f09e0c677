package meshtls

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Defaults of the mesh CA.
const (
	// DefaultCAValidity is how long a root made by NewCA is valid.
	DefaultCAValidity = 10 * 365 * 24 * time.Hour
	// DefaultWorkloadTTL is the lifetime of a workload certificate.
	DefaultWorkloadTTL = 24 * time.Hour
	// backdate is how far before "now" a certificate starts being valid, so that a peer
	// whose clock is slightly behind accepts it at once.
	backdate = time.Minute
)

// File names in a CA directory (meshd ca init / issue).
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// CA is a mesh certificate authority: a self-signed ECDSA P-256 root that signs
// workload certificates directly (there are no intermediates).
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// CAOptions tune NewCA. The zero value is fine.
type CAOptions struct {
	// CommonName of the root. Default "meshd mesh CA".
	CommonName string
	// Validity of the root. Default DefaultCAValidity.
	Validity time.Duration
	// Now is the issue time. Default time.Now().
	Now time.Time
}

// NewCA creates a root: a fresh ECDSA P-256 key, a random 128-bit serial, CA:true with
// path length 0 (it signs leaves only), key usage certSign, cRLSign and
// digitalSignature.
func NewCA(opts CAOptions) (*CA, error) {
	if opts.CommonName == "" {
		opts.CommonName = "meshd mesh CA"
	}
	if opts.Validity <= 0 {
		opts.Validity = DefaultCAValidity
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("mesh CA: generate key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: opts.CommonName, Organization: []string{"meshd"}},
		NotBefore:             opts.Now.Add(-backdate),
		NotAfter:              opts.Now.Add(opts.Validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("mesh CA: create certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("mesh CA: parse certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

func randomSerial() (*big.Int, error) {
	// 128 random bits, positive and non-zero (RFC 5280 allows up to 20 octets).
	for {
		n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
		if err != nil {
			return nil, fmt.Errorf("mesh CA: serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// CertPEM is the root certificate, PEM encoded.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// KeyPEM is the root's private key, PKCS #8, PEM encoded.
func (ca *CA) KeyPEM() ([]byte, error) {
	return marshalKeyPEM(ca.Key)
}

func marshalKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseCA reads a root certificate and its key (PEM; the key PKCS #8, PKCS #1 or SEC 1)
// and checks that they belong together and that the certificate is a CA.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("certificate %q is not a CA (basicConstraints CA:false)", cert.Subject)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, err
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return nil, errors.New("the private key does not match the CA certificate")
	}
	return &CA{Cert: cert, Key: key}, nil
}

func parseKeyPEM(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM private key block")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key", block.Type)
	}
	if err != nil {
		return nil, err
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("private key of type %T cannot sign", key)
	}
	return s, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}

// LoadCA reads dir/ca.crt and dir/ca.key.
func LoadCA(dir string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("mesh CA: %w (create one with: meshd ca init --dir %s)", err, dir)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("mesh CA: %w", err)
	}
	ca, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("mesh CA %s, %s: %w", certPath, keyPath, err)
	}
	return ca, nil
}

// ErrCAExists is returned by InitCA when the directory already holds a CA.
var ErrCAExists = errors.New("a mesh CA already exists there")

// InitCA creates a root with NewCA and writes it to dir/ca.crt (mode 0644) and
// dir/ca.key (mode 0600), creating dir (mode 0700) if needed. It refuses to replace an
// existing ca.crt or ca.key unless force is set: every certificate the old root issued
// stops being trusted where the new ca.crt is installed.
func InitCA(dir string, force bool, opts CAOptions) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	if !force {
		for _, p := range []string{certPath, keyPath} {
			if _, err := os.Lstat(p); err == nil {
				return nil, fmt.Errorf("%s: %w (use --force to replace it; every certificate the old CA issued stops being trusted where the new ca.crt is installed)", p, ErrCAExists)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, err
			}
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ca, err := NewCA(opts)
	if err != nil {
		return nil, err
	}
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		return nil, err
	}
	// The key first: a ca.crt without its key is a half-made CA that init would then
	// refuse to replace without --force.
	if err := WriteFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := WriteFileAtomic(certPath, ca.CertPEM(), 0o644); err != nil {
		return nil, err
	}
	return ca, nil
}

// WorkloadID is the SPIFFE ID of a virtual node: spiffe://<mesh>/<node>. The mesh name
// must be a valid trust domain name (lower case letters, digits, '.', '-', '_') and the
// node a valid path segment (letters, digits, '.', '-', '_'; not "." or "..").
func WorkloadID(mesh, node string) (spiffeid.ID, error) {
	if strings.Contains(mesh, ":") || strings.Contains(mesh, "/") {
		return spiffeid.ID{}, fmt.Errorf("mesh %q: want a bare mesh name, not a URI", mesh)
	}
	td, err := spiffeid.TrustDomainFromString(mesh)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("mesh %q is not a valid SPIFFE trust domain name (lower case letters, digits, '.', '-', '_'): %w", mesh, err)
	}
	id, err := spiffeid.FromSegments(td, node)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("virtual node %q is not a valid SPIFFE ID path segment (letters, digits, '.', '-', '_'): %w", node, err)
	}
	return id, nil
}

// WorkloadRequest asks the CA for a workload certificate.
type WorkloadRequest struct {
	Mesh string // the mesh name: the SPIFFE trust domain
	Node string // the virtual node name: the SPIFFE ID's path
	// DNSNames are added as DNS SANs (e.g. the virtual service names the node serves),
	// for peers that match subjectAlternativeNames on DNS names.
	DNSNames []string
	// TTL is the lifetime. Default DefaultWorkloadTTL. It may not outlive the CA.
	TTL time.Duration
	// Now is the issue time. Default time.Now().
	Now time.Time
}

// WorkloadCert is an issued workload certificate.
type WorkloadCert struct {
	ID   spiffeid.ID
	Cert *x509.Certificate
	// ChainPEM is the leaf followed by the CA certificate.
	ChainPEM []byte
	// KeyPEM is the leaf's private key (ECDSA P-256, PKCS #8).
	KeyPEM []byte
}

// Issue signs a workload certificate: a fresh ECDSA P-256 key, the URI SAN
// spiffe://<mesh>/<node>, the DNS SANs requested, extended key usage serverAuth and
// clientAuth (the same certificate serves a node's listeners and its client policies),
// key usage digitalSignature, a random serial, valid from a minute ago for TTL.
func (ca *CA) Issue(req WorkloadRequest) (*WorkloadCert, error) {
	id, err := WorkloadID(req.Mesh, req.Node)
	if err != nil {
		return nil, err
	}
	if req.TTL <= 0 {
		req.TTL = DefaultWorkloadTTL
	}
	if req.Now.IsZero() {
		req.Now = time.Now()
	}
	for _, name := range req.DNSNames {
		if err := checkDNSName(name); err != nil {
			return nil, err
		}
	}
	notAfter := req.Now.Add(req.TTL)
	if req.Now.After(ca.Cert.NotAfter) {
		return nil, fmt.Errorf("the mesh CA expired at %s: make a new one (meshd ca init --force) and install its ca.crt everywhere", ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if notAfter.After(ca.Cert.NotAfter) {
		return nil, fmt.Errorf("ttl %s would outlive the mesh CA, which expires at %s: ask for a shorter --ttl", req.TTL, ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: req.Node, Organization: []string{req.Mesh}},
		NotBefore:             req.Now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.URL()},
		DNSNames:              req.DNSNames,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %s: %w", id, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyPEM, err := marshalKeyPEM(key)
	if err != nil {
		return nil, err
	}
	var chain bytes.Buffer
	_ = pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	chain.Write(ca.CertPEM())
	return &WorkloadCert{ID: id, Cert: cert, ChainPEM: chain.Bytes(), KeyPEM: keyPEM}, nil
}

func checkDNSName(name string) error {
	if name == "" || len(name) > 253 {
		return fmt.Errorf("DNS name %q: want 1 to 253 characters", name)
	}
	for i, label := range strings.Split(name, ".") {
		if label == "*" && i == 0 {
			continue
		}
		if label == "" || len(label) > 63 {
			return fmt.Errorf("DNS name %q: empty or over-long label", name)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("DNS name %q: character %q is not allowed", name, c)
			}
		}
	}
	return nil
}

// WorkloadFiles are the paths WriteWorkload writes.
func WorkloadFiles(dir, node string) (certPath, keyPath string) {
	return filepath.Join(dir, node+".crt"), filepath.Join(dir, node+".key")
}

// WriteWorkload writes dir/<node>.key (mode 0600) and dir/<node>.crt (the chain, mode
// 0644), each through a temporary file and a rename, so a reader (a FileSource watching
// the directory) never sees a half-written file. Both temporary files are written and
// synced before the two renames, which then follow each other at once (key first); a
// FileSource that happens to read between them sees a key not matching the old
// certificate, and reads again after its debounce before it rejects anything.
func WriteWorkload(dir, node string, wc *WorkloadCert) (certPath, keyPath string, err error) {
	certPath, keyPath = WorkloadFiles(dir, node)
	keyTmp, err := writeTemp(keyPath, wc.KeyPEM, 0o600)
	if err != nil {
		return "", "", err
	}
	certTmp, err := writeTemp(certPath, wc.ChainPEM, 0o644)
	if err != nil {
		_ = os.Remove(keyTmp)
		return "", "", err
	}
	if err := os.Rename(keyTmp, keyPath); err != nil {
		_ = os.Remove(keyTmp)
		_ = os.Remove(certTmp)
		return "", "", err
	}
	if err := os.Rename(certTmp, certPath); err != nil {
		_ = os.Remove(certTmp)
		return "", "", err
	}
	return certPath, keyPath, nil
}

// WriteFileAtomic writes data to path through a temporary file in the same directory
// (created with mode, synced) and a rename over path.
func WriteFileAtomic(path string, data []byte, mode fs.FileMode) error {
	tmp, err := writeTemp(path, data, mode)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}

// writeTemp writes data to a new temporary file beside path, with mode, synced, and
// returns its name.
func writeTemp(path string, data []byte, mode fs.FileMode) (name string, err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(mode); err != nil {
		return "", err
	}
	if _, err = f.Write(data); err != nil {
		return "", err
	}
	if err = f.Sync(); err != nil {
		return "", err
	}
	if err = f.Close(); err != nil {
		return "", err
	}
	return f.Name(), nil
}
