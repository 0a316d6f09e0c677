package meshtls

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/meshd/meshd/telemetry"
)

// Secret names with a meaning of their own, as SPIRE's SDS server spells them.
const (
	// SecretDefault, as a certificate secret, is the agent's default SVID (the first).
	SecretDefault = "default"
	// SecretRootCA, as a trust secret, is the bundle of the default SVID's trust domain.
	SecretRootCA = "ROOTCA"
	// SecretAll, as a trust secret, is every bundle the agent offers (federation).
	SecretAll = "ALL"
)

// WorkloadAPIOptions configure DialWorkloadAPI.
type WorkloadAPIOptions struct {
	// Addr is the Workload API endpoint: unix:///path/to/agent.sock or
	// tcp://127.0.0.1:port. Default: $SPIFFE_ENDPOINT_SOCKET.
	Addr string
	// ExpiryCheck is how often the SVIDs' expiry is checked. Default DefaultExpiryCheck.
	ExpiryCheck time.Duration
	// Now is the clock for validity checks and expiry warnings. Default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// WorkloadAPI follows the X.509 SVIDs and trust bundles a SPIFFE Workload API (a SPIRE
// agent) offers this workload, on one stream, and hands out Sources for App Mesh's SDS
// secret names: CertificateSource for certificate.sds, TrustSource for
// validation.trust.sds. App Mesh served SDS from a SPIRE agent and named the secrets by
// SPIFFE ID; those names mean the same here.
type WorkloadAPI struct {
	addr   string
	log    *slog.Logger
	now    func() time.Time
	client *workloadapi.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	current *workloadapi.X509Context
	lastErr error
	first   chan struct{} // closed at the first X.509 context
	views   map[*sdsSource]bool
}

// DialWorkloadAPI connects to the Workload API and waits, until ctx is done, for the
// first X.509 context (the SVIDs and bundles). Give ctx a deadline: an agent that has
// no identity for this workload never answers. Close stops the stream.
func DialWorkloadAPI(ctx context.Context, opts WorkloadAPIOptions) (*WorkloadAPI, error) {
	addr := opts.Addr
	if addr == "" {
		addr, _ = workloadapi.GetDefaultAddress()
	}
	if addr == "" {
		return nil, fmt.Errorf("SPIFFE Workload API: no address: set the socket option or %s (e.g. unix:///run/spire/sockets/agent.sock)", workloadapi.SocketEnv)
	}
	if err := workloadapi.ValidateAddress(addr); err != nil {
		return nil, fmt.Errorf("SPIFFE Workload API address %q: %w", addr, err)
	}
	if opts.ExpiryCheck <= 0 {
		opts.ExpiryCheck = DefaultExpiryCheck
	}
	w := &WorkloadAPI{
		addr:  addr,
		log:   telemetry.OrDiscard(opts.Logger),
		now:   opts.Now,
		first: make(chan struct{}),
		views: map[*sdsSource]bool{},
	}
	if w.now == nil {
		w.now = time.Now
	}
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(addr), workloadapi.WithLogger(spiffeLogger{w.log}))
	if err != nil {
		return nil, fmt.Errorf("SPIFFE Workload API %s: %w", addr, err)
	}
	w.client = client
	wctx, cancel := context.WithCancel(context.Background())
	w.cancel, w.done = cancel, make(chan struct{})
	go w.run(wctx, opts.ExpiryCheck)
	select {
	case <-w.first:
		return w, nil
	case <-ctx.Done():
		w.mu.Lock()
		last := w.lastErr
		w.mu.Unlock()
		w.Close()
		if last != nil {
			return nil, fmt.Errorf("SPIFFE Workload API %s: no X.509 SVID received: %w (last error: %v)", addr, ctx.Err(), last)
		}
		return nil, fmt.Errorf("SPIFFE Workload API %s: no X.509 SVID received: %w (is the workload registered with the agent?)", addr, ctx.Err())
	}
}

func (w *WorkloadAPI) run(ctx context.Context, expiryEvery time.Duration) {
	defer close(w.done)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		// Returns when ctx is cancelled; the client reconnects with backoff meanwhile.
		_ = w.client.WatchX509Context(ctx, w)
	}()
	t := time.NewTicker(expiryEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			<-watchDone
			return
		case <-t.C:
			w.mu.Lock()
			views := make([]*sdsSource, 0, len(w.views))
			for v := range w.views {
				views = append(views, v)
			}
			w.mu.Unlock()
			for _, v := range views {
				v.checkExpiry()
			}
		}
	}
}

// Close stops the stream and joins its goroutines. Sources handed out keep their last
// material.
func (w *WorkloadAPI) Close() error {
	w.cancel()
	<-w.done
	return w.client.Close()
}

// OnX509ContextUpdate implements workloadapi.X509ContextWatcher.
func (w *WorkloadAPI) OnX509ContextUpdate(x *workloadapi.X509Context) {
	w.mu.Lock()
	w.current = x
	select {
	case <-w.first:
	default:
		close(w.first)
	}
	views := make([]*sdsSource, 0, len(w.views))
	for v := range w.views {
		views = append(views, v)
	}
	w.mu.Unlock()
	for _, v := range views {
		v.refresh()
	}
}

// OnX509ContextWatchError implements workloadapi.X509ContextWatcher.
func (w *WorkloadAPI) OnX509ContextWatchError(err error) {
	w.mu.Lock()
	w.lastErr = err
	w.mu.Unlock()
	if errors.Is(err, context.Canceled) {
		return
	}
	w.log.Warn("tls: SPIFFE Workload API stream error; current SVIDs keep serving, reconnecting", "addr", w.addr, "err", err)
}

// CertificateSource is the SVID named secretName: a SPIFFE ID the agent issues to this
// workload (App Mesh's convention), or "default" for the first SVID. It fails when the
// agent offers no such SVID now; later, an update without it is a reject (the last
// SVID keeps serving).
func (w *WorkloadAPI) CertificateSource(secretName string) (Source, error) {
	return w.view(secretName, true)
}

// TrustSource is the trust bundle named secretName: a trust domain (spiffe://example.org
// or example.org), "ROOTCA" for the default SVID's trust domain, or "ALL" for every
// bundle. A peer is verified against the bundle of its own trust domain only.
func (w *WorkloadAPI) TrustSource(secretName string) (Source, error) {
	return w.view(secretName, false)
}

func (w *WorkloadAPI) view(secret string, cert bool) (Source, error) {
	kind := "trust"
	if cert {
		kind = "certificate"
	}
	v := &sdsSource{
		holder: newHolder(fmt.Sprintf("sds %s %q", kind, secret), w.log, w.now),
		api:    w,
		secret: secret,
		cert:   cert,
	}
	w.mu.Lock()
	x := w.current
	w.mu.Unlock()
	m, err := v.resolve(x)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", v.name, err)
	}
	v.mu.Lock()
	v.set(m)
	v.seen = x
	v.mu.Unlock()
	w.mu.Lock()
	w.views[v] = true
	w.mu.Unlock()
	// An update may have come between resolve and registration.
	v.refresh()
	return v, nil
}

// sdsSource is one secret of a WorkloadAPI.
type sdsSource struct {
	*holder
	api    *WorkloadAPI
	secret string
	cert   bool

	mu   sync.Mutex               // serialises refresh
	seen *workloadapi.X509Context // the context last resolved
}

func (v *sdsSource) Close() error {
	v.api.mu.Lock()
	delete(v.api.views, v)
	v.api.mu.Unlock()
	return nil
}

// refresh resolves the secret in the API's latest context, once per context: a view
// never goes back to an older one, and a context is rejected at most once.
func (v *sdsSource) refresh() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.api.mu.Lock()
	x := v.api.current
	v.api.mu.Unlock()
	if x == v.seen {
		return
	}
	v.seen = x
	m, err := v.resolve(x)
	if err != nil {
		v.reject(err)
		return
	}
	v.set(m)
}

func (v *sdsSource) resolve(x *workloadapi.X509Context) (*material, error) {
	if x == nil || len(x.SVIDs) == 0 {
		return nil, errors.New("the agent offers this workload no SVID")
	}
	if v.cert {
		return v.resolveSVID(x)
	}
	return v.resolveBundles(x)
}

func (v *sdsSource) resolveSVID(x *workloadapi.X509Context) (*material, error) {
	var svid *x509svid.SVID
	if v.secret == SecretDefault {
		svid = x.DefaultSVID()
	} else {
		id, err := spiffeid.FromString(v.secret)
		if err != nil {
			return nil, fmt.Errorf("a certificate secret name is a SPIFFE ID or %q: %w", SecretDefault, err)
		}
		for _, s := range x.SVIDs {
			if s.ID == id {
				svid = s
				break
			}
		}
		if svid == nil {
			return nil, fmt.Errorf("the agent offers no SVID with this SPIFFE ID (it offers %s)", svidIDs(x))
		}
	}
	if len(svid.Certificates) == 0 {
		return nil, errors.New("the SVID has no certificate")
	}
	leaf := svid.Certificates[0]
	if err := checkValidity(leaf, v.now()); err != nil {
		return nil, err
	}
	cert := &tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: leaf}
	h := sha256.New()
	for _, c := range svid.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
		h.Write(c.Raw)
	}
	// The agent rotates the key with the certificate, so the chain identifies both.
	return &material{cert: cert, key: hex.EncodeToString(h.Sum(nil))}, nil
}

func (v *sdsSource) resolveBundles(x *workloadapi.X509Context) (*material, error) {
	var bundles []*x509bundle.Bundle
	switch v.secret {
	case SecretAll:
		bundles = x.Bundles.Bundles()
	case SecretRootCA:
		td := x.DefaultSVID().ID.TrustDomain()
		b, ok := x.Bundles.Get(td)
		if !ok {
			return nil, fmt.Errorf("the agent offers no bundle for the default SVID's trust domain %q", td)
		}
		bundles = []*x509bundle.Bundle{b}
	default:
		td, err := trustDomainOfSecret(v.secret)
		if err != nil {
			return nil, err
		}
		b, ok := x.Bundles.Get(td)
		if !ok {
			return nil, fmt.Errorf("the agent offers no bundle for trust domain %q (it offers %s)", td, bundleNames(x.Bundles))
		}
		bundles = []*x509bundle.Bundle{b}
	}
	m := &material{pool: x509.NewCertPool(), domains: map[string]*x509.CertPool{}}
	slices.SortFunc(bundles, func(a, b *x509bundle.Bundle) int { return a.TrustDomain().Compare(b.TrustDomain()) })
	h := sha256.New()
	for _, b := range bundles {
		p := x509.NewCertPool()
		h.Write([]byte(b.TrustDomain().Name()))
		for _, c := range b.X509Authorities() {
			p.AddCert(c)
			m.pool.AddCert(c)
			h.Write(c.Raw)
		}
		m.domains[b.TrustDomain().Name()] = p
	}
	if len(m.domains) == 0 {
		return nil, errors.New("the agent offers no trust bundle")
	}
	m.key = hex.EncodeToString(h.Sum(nil))
	return m, nil
}

// trustDomainOfSecret reads a trust secret name: spiffe://td, td, or a SPIFFE ID whose
// trust domain is meant.
func trustDomainOfSecret(secret string) (spiffeid.TrustDomain, error) {
	td, err := spiffeid.TrustDomainFromString(secret)
	if err != nil {
		return spiffeid.TrustDomain{}, fmt.Errorf("a trust secret name is a trust domain (spiffe://example.org or example.org), %q or %q: %w", SecretRootCA, SecretAll, err)
	}
	return td, nil
}

func svidIDs(x *workloadapi.X509Context) string {
	ids := make([]string, len(x.SVIDs))
	for i, s := range x.SVIDs {
		ids[i] = s.ID.String()
	}
	return strings.Join(ids, ", ")
}

func bundleNames(s *x509bundle.Set) string {
	var names []string
	for _, b := range s.Bundles() {
		names = append(names, b.TrustDomain().IDString())
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// spiffeLogger routes go-spiffe's log lines to slog, one level down: the client logs
// every reconnect as an error, and OnX509ContextWatchError already warns.
type spiffeLogger struct{ l *slog.Logger }

func (s spiffeLogger) Debugf(format string, args ...any) {
	s.l.Debug("spiffe: " + fmt.Sprintf(format, args...))
}
func (s spiffeLogger) Infof(format string, args ...any) {
	s.l.Debug("spiffe: " + fmt.Sprintf(format, args...))
}
func (s spiffeLogger) Warnf(format string, args ...any) {
	s.l.Info("spiffe: " + fmt.Sprintf(format, args...))
}
func (s spiffeLogger) Errorf(format string, args ...any) {
	s.l.Info("spiffe: " + fmt.Sprintf(format, args...))
}

// checkSecretName checks an SDS secret name's form without a Workload API (for
// validation): a certificate secret is a SPIFFE ID or "default"; a trust secret a trust
// domain, "ROOTCA" or "ALL".
func checkSecretName(secret string, cert bool) error {
	if cert {
		if secret == SecretDefault {
			return nil
		}
		if _, err := spiffeid.FromString(secret); err != nil {
			return fmt.Errorf("meshd reads SDS secrets from a SPIFFE Workload API (SPIRE), where a certificate secret is the workload's SPIFFE ID (spiffe://trust-domain/path) or %q: %v", SecretDefault, err)
		}
		return nil
	}
	if secret == SecretRootCA || secret == SecretAll {
		return nil
	}
	if _, err := spiffeid.TrustDomainFromString(secret); err != nil {
		return fmt.Errorf("meshd reads SDS secrets from a SPIFFE Workload API (SPIRE), where a trust secret is a trust domain (spiffe://example.org), %q or %q: %v", SecretRootCA, SecretAll, err)
	}
	return nil
}
