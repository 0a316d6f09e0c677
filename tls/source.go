package meshtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/telemetry"
)

// Source supplies a certificate, a trust pool, or both, and may change them over time
// (a file rewritten, an SVID rotated by the SPIRE agent). All methods are safe for
// concurrent use; Certificate and TrustPool are cheap (an atomic load) and meant to be
// called at every handshake.
type Source interface {
	// Certificate is the current certificate with its chain and key, and its parsed
	// leaf in Leaf. ErrNoCertificate when the source holds only trust.
	Certificate() (*tls.Certificate, error)
	// TrustPool is the current pool of trusted CA certificates. ErrNoTrust when the
	// source holds only a certificate.
	TrustPool() (*x509.CertPool, error)
	// NotAfter is when the current certificate expires; zero when there is none.
	NotAfter() time.Time
	// Changed returns a channel that is closed at the next change of the certificate
	// or the trust pool (take a new one after each close).
	Changed() <-chan struct{}
	// Stats are the source's counters, for metrics.
	Stats() Stats
	// Close stops watching. The last certificate and pool stay readable.
	Close() error
}

// Errors of Sources that hold only one of the two.
var (
	ErrNoCertificate = errors.New("this source holds no certificate")
	ErrNoTrust       = errors.New("this source holds no trust bundle")
)

// Stats are a Source's counters.
type Stats struct {
	// Name says what the source reads, e.g. "file /keys/a.crt" or "sds spiffe://m/n".
	Name string
	// Reloads counts new certificates or trust pools taken after the first.
	Reloads uint64
	// Rejects counts new material refused (unreadable, key not matching, expired,
	// no longer offered by the SPIFFE agent); the previous material kept serving.
	Rejects uint64
	// LastError is the reason of the last reject, empty if none.
	LastError string
	// NotAfter is the current certificate's expiry; zero when there is none.
	NotAfter time.Time
	// ExpiryWarnings counts warnings logged because the certificate was close to its
	// expiry or past it (at most one of each per certificate).
	ExpiryWarnings uint64
}

// material is one immutable version of what a Source holds.
type material struct {
	cert *tls.Certificate // nil: no certificate
	pool *x509.CertPool   // nil: no trust
	// domains, when not nil, holds the trust of a SPIFFE bundle set by trust domain
	// name: a peer's chain is verified against the bundle of its own trust domain only.
	domains map[string]*x509.CertPool
	// key identifies the content, so that re-reading unchanged files is no reload.
	key string
}

func (m *material) leaf() *x509.Certificate {
	if m == nil || m.cert == nil {
		return nil
	}
	return m.cert.Leaf
}

// holder is the state every Source shares: the current material, the change channel,
// the counters and the expiry warnings.
type holder struct {
	name string
	log  *slog.Logger
	now  func() time.Time

	cur atomic.Pointer[material]

	mu        sync.Mutex
	changed   chan struct{}
	lastError string
	warnedFor *material // the material the expiry level below was logged for
	warned    expiryLevel

	reloads, rejects, expiryWarnings atomic.Uint64
}

type expiryLevel int

const (
	expiryOK expiryLevel = iota
	expirySoon
	expiryPast
)

func newHolder(name string, log *slog.Logger, now func() time.Time) *holder {
	if now == nil {
		now = time.Now
	}
	return &holder{name: name, log: telemetry.OrDiscard(log), now: now, changed: make(chan struct{})}
}

func (h *holder) Certificate() (*tls.Certificate, error) {
	m := h.cur.Load()
	if m == nil || m.cert == nil {
		return nil, fmt.Errorf("%s: %w", h.name, ErrNoCertificate)
	}
	return m.cert, nil
}

func (h *holder) TrustPool() (*x509.CertPool, error) {
	m := h.cur.Load()
	if m == nil || m.pool == nil {
		return nil, fmt.Errorf("%s: %w", h.name, ErrNoTrust)
	}
	return m.pool, nil
}

// trustFor is the pool a peer of trust domain td (empty when the peer has no SPIFFE ID)
// is verified against: the bundle of that trust domain for SPIFFE trust, the whole pool
// otherwise.
func (h *holder) trustFor(td string) (*x509.CertPool, error) {
	m := h.cur.Load()
	if m == nil || m.pool == nil {
		return nil, fmt.Errorf("%s: %w", h.name, ErrNoTrust)
	}
	if m.domains == nil {
		return m.pool, nil
	}
	if td == "" {
		return nil, fmt.Errorf("the peer certificate has no SPIFFE ID, and %s trusts SPIFFE trust domains only", h.name)
	}
	p, ok := m.domains[td]
	if !ok {
		return nil, fmt.Errorf("the peer is in trust domain %q, which %s holds no bundle for", td, h.name)
	}
	return p, nil
}

func (h *holder) NotAfter() time.Time {
	if l := h.cur.Load().leaf(); l != nil {
		return l.NotAfter
	}
	return time.Time{}
}

func (h *holder) Changed() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.changed
}

func (h *holder) Stats() Stats {
	h.mu.Lock()
	last := h.lastError
	h.mu.Unlock()
	return Stats{
		Name:           h.name,
		Reloads:        h.reloads.Load(),
		Rejects:        h.rejects.Load(),
		LastError:      last,
		NotAfter:       h.NotAfter(),
		ExpiryWarnings: h.expiryWarnings.Load(),
	}
}

// set installs m. It reports false, doing nothing, when m's content is the current one.
func (h *holder) set(m *material) bool {
	old := h.cur.Load()
	if old != nil && old.key == m.key {
		return false
	}
	h.cur.Store(m)
	h.mu.Lock()
	close(h.changed)
	h.changed = make(chan struct{})
	h.mu.Unlock()
	if old != nil {
		h.reloads.Add(1)
		attrs := []any{"source", h.name}
		if l := m.leaf(); l != nil {
			attrs = append(attrs, "subject", describeCert(l), "not_after", l.NotAfter.UTC().Format(time.RFC3339))
		}
		h.log.Info("tls: new certificate material loaded", attrs...)
	}
	h.checkExpiry()
	return true
}

// reject records new material that was refused; the current material keeps serving.
func (h *holder) reject(err error) {
	h.rejects.Add(1)
	h.mu.Lock()
	h.lastError = err.Error()
	h.mu.Unlock()
	attrs := []any{"source", h.name, "err", err}
	if l := h.cur.Load().leaf(); l != nil {
		attrs = append(attrs, "serving", describeCert(l), "serving_not_after", l.NotAfter.UTC().Format(time.RFC3339))
	}
	h.log.Error("tls: new certificate material rejected; the previous one keeps serving", attrs...)
}

// checkExpiry logs a warning once the current certificate has less than a third of its
// lifetime left, and an error once it has expired: once per certificate and level.
func (h *holder) checkExpiry() {
	m := h.cur.Load()
	leaf := m.leaf()
	if leaf == nil {
		return
	}
	now := h.now()
	level := expiryOK
	lifetime := leaf.NotAfter.Sub(leaf.NotBefore)
	left := leaf.NotAfter.Sub(now)
	switch {
	case left <= 0:
		level = expiryPast
	case left < lifetime/3:
		level = expirySoon
	}
	h.mu.Lock()
	if h.warnedFor != m {
		h.warnedFor, h.warned = m, expiryOK
	}
	if level <= h.warned {
		h.mu.Unlock()
		return
	}
	h.warned = level
	h.mu.Unlock()
	h.expiryWarnings.Add(1)
	attrs := []any{"source", h.name, "subject", describeCert(leaf), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339)}
	if level == expiryPast {
		h.log.Error("tls: certificate has expired; peers refuse it: rotate it now", attrs...)
		return
	}
	h.log.Warn("tls: certificate expires soon (less than a third of its lifetime left); rotate it",
		append(attrs, "left", left.Round(time.Second))...)
}

// describeCert names a certificate in logs and errors: its SPIFFE ID or first SAN,
// else its subject.
func describeCert(c *x509.Certificate) string {
	switch {
	case len(c.URIs) > 0:
		return c.URIs[0].String()
	case len(c.DNSNames) > 0:
		return c.DNSNames[0]
	default:
		return c.Subject.String()
	}
}

// checkValidity refuses a certificate outside its validity period at now.
func checkValidity(c *x509.Certificate, now time.Time) error {
	if now.After(c.NotAfter) {
		return fmt.Errorf("certificate %s expired at %s (now %s)", describeCert(c),
			c.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if now.Before(c.NotBefore) {
		return fmt.Errorf("certificate %s is not valid before %s (now %s)", describeCert(c),
			c.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return nil
}

// DefaultExpiryCheck is how often a Source re-checks its certificate's expiry.
const DefaultExpiryCheck = time.Minute
