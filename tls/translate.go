package meshtls

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshd/meshd/config"
)

// Listener TLS modes (App Mesh's listener tls.mode).
const (
	ModeStrict     = "STRICT"
	ModePermissive = "PERMISSIVE"
	ModeDisabled   = "DISABLED"
)

// The way out of ACM, in the errors that refuse it.
const (
	acmCertMsg = "meshd cannot use an ACM certificate: ACM never hands out the private key of a " +
		"certificate it issued to Envoy, and App Mesh, which did, is gone. Export it (aws acm " +
		"export-certificate, for certificates of an ACM Private CA) to PEM files and use " +
		"certificate.file {certificateChain, privateKey}, or issue one from the mesh CA (meshd ca " +
		"issue); see docs/tls.md"
	acmTrustMsg = "meshd cannot fetch ACM Private CA certificates: write each CA's certificate " +
		"(aws acm-pca get-certificate-authority-certificate --certificate-authority-arn ARN) to a PEM " +
		"file and use trust.file {certificateChain}, or trust the mesh CA's ca.crt (meshd ca init); " +
		"see docs/tls.md"
)

// NewACMSource always fails: an ACM certificate cannot be fetched offline. The error
// (a *config.Errors) names path, the certificate object's field path (e.g.
// "virtualNodes[0].spec.listeners[0].tls.certificate"), and the way out.
func NewACMSource(path, certificateArn string) (Source, error) {
	return nil, &config.Errors{List: []config.FieldError{{Path: path + ".acm", Value: certificateArn, Msg: acmCertMsg}}}
}

// NewACMTrustSource always fails, like NewACMSource, for validation.trust.acm.
func NewACMTrustSource(path string, certificateAuthorityArns []string) (Source, error) {
	return nil, &config.Errors{List: []config.FieldError{{Path: path + ".acm", Value: strings.Join(certificateAuthorityArns, ","), Msg: acmTrustMsg}}}
}

// CertRef says where a certificate comes from: exactly one of File and SDS.
type CertRef struct {
	// Path is the certificate object's field path, for errors.
	Path string
	File *config.TLSFileCertificate
	SDS  string // the secret name
}

// TrustRef says where a trust bundle comes from: exactly one of File and SDS.
type TrustRef struct {
	// Path is the trust object's field path, for errors.
	Path string
	File string // certificateChain
	SDS  string // the secret name
}

// ListenerPlan is a listener's tls block, checked and reduced to what to load.
type ListenerPlan struct {
	Path string
	Mode string
	// Certificate is nil when Mode is DISABLED.
	Certificate *CertRef
	// Trust, when set, asks for and verifies client certificates (mTLS).
	Trust           *TrustRef
	SubjectAltNames []string
}

// ClientPlan is a client policy's tls block, checked and reduced to what to load.
type ClientPlan struct {
	Path string
	// Enforce is false when the policy says enforce: false (no TLS is originated).
	Enforce bool
	// Ports are the backend ports the policy applies to; empty means all.
	Ports []int
	// Certificate, when set, is presented to servers that ask (mTLS).
	Certificate     *CertRef
	Trust           TrustRef
	SubjectAltNames []string
}

// problems collects FieldErrors.
type problems []config.FieldError

func (p *problems) add(path string, value any, format string, args ...any) {
	v := ""
	if value != nil {
		v = fmt.Sprint(value)
	}
	*p = append(*p, config.FieldError{Path: path, Value: v, Msg: fmt.Sprintf(format, args...)})
}

func (p problems) err() error {
	if len(p) == 0 {
		return nil
	}
	return &config.Errors{List: p}
}

// PlanListener checks a listener's tls block at path (e.g.
// "virtualNodes[0].spec.listeners[0].tls") without reading any file or contacting any
// agent, and says what to load. Errors are a *config.Errors naming each field: the
// problems config.Validate also reports, and what meshd cannot honour (ACM, SDS
// secret names a SPIFFE Workload API cannot serve). A DISABLED listener needs nothing,
// whatever else its block says.
func PlanListener(path string, t *config.ListenerTLS) (*ListenerPlan, error) {
	if t == nil {
		return &ListenerPlan{Path: path, Mode: ModeDisabled}, nil
	}
	var ps problems
	plan := &ListenerPlan{Path: path, Mode: t.Mode}
	switch t.Mode {
	case ModeDisabled:
		return plan, nil
	case ModeStrict, ModePermissive:
	default:
		ps.add(path+".mode", t.Mode, "want %s, %s or %s", ModeStrict, ModePermissive, ModeDisabled)
	}
	cp := path + ".certificate"
	if c := t.Certificate; c == nil {
		ps.add(cp, nil, "is required when mode is %s", t.Mode)
	} else {
		if count(c.ACM != nil, c.File != nil, c.SDS != nil) != 1 {
			ps.add(cp, nil, "set exactly one of acm, file, sds")
		}
		if c.ACM != nil {
			ps.add(cp+".acm", c.ACM.CertificateArn, "%s", acmCertMsg)
		}
		plan.Certificate = planCert(&ps, cp, c.File, c.SDS)
	}
	if v := t.Validation; v != nil {
		if v.Trust == nil {
			ps.add(path+".validation.trust", nil, "is required")
		} else {
			plan.Trust = planTrust(&ps, path+".validation.trust", v.Trust)
		}
		plan.SubjectAltNames = planSANs(&ps, path+".validation.subjectAlternativeNames", v.SubjectAlternativeNames)
	}
	if err := ps.err(); err != nil {
		return nil, err
	}
	return plan, nil
}

// PlanClient checks a client policy's tls block at path (e.g.
// "virtualNodes[0].spec.backendDefaults.clientPolicy.tls") like PlanListener. A policy
// with enforce: false originates no TLS and needs nothing more.
func PlanClient(path string, t *config.ClientTLS) (*ClientPlan, error) {
	if t == nil {
		return &ClientPlan{Path: path}, nil
	}
	var ps problems
	plan := &ClientPlan{Path: path, Enforce: t.Enforce == nil || *t.Enforce, Ports: slices.Clone(t.Ports)}
	for i, p := range t.Ports {
		if p < 1 || p > 65535 {
			ps.add(fmt.Sprintf("%s.ports[%d]", path, i), p, "want a port in 1..65535")
		}
	}
	if !plan.Enforce {
		if err := ps.err(); err != nil {
			return nil, err
		}
		return plan, nil
	}
	if c := t.Certificate; c != nil {
		cp := path + ".certificate"
		if count(c.File != nil, c.SDS != nil) != 1 {
			ps.add(cp, nil, "set exactly one of file, sds")
		}
		plan.Certificate = planCert(&ps, cp, c.File, c.SDS)
	}
	if tr := planTrust(&ps, path+".validation.trust", &t.Validation.Trust); tr != nil {
		plan.Trust = *tr
	}
	plan.SubjectAltNames = planSANs(&ps, path+".validation.subjectAlternativeNames", t.Validation.SubjectAlternativeNames)
	if err := ps.err(); err != nil {
		return nil, err
	}
	return plan, nil
}

func planCert(ps *problems, path string, f *config.TLSFileCertificate, s *config.TLSSDS) *CertRef {
	switch {
	case f != nil:
		ok := true
		if f.CertificateChain == "" {
			ps.add(path+".file.certificateChain", nil, "is required")
			ok = false
		}
		if f.PrivateKey == "" {
			ps.add(path+".file.privateKey", nil, "is required")
			ok = false
		}
		if ok {
			return &CertRef{Path: path, File: f}
		}
	case s != nil:
		if s.SecretName == "" {
			ps.add(path+".sds.secretName", nil, "is required")
		} else if err := checkSecretName(s.SecretName, true); err != nil {
			ps.add(path+".sds.secretName", s.SecretName, "%v", err)
		} else {
			return &CertRef{Path: path, SDS: s.SecretName}
		}
	}
	return nil
}

func planTrust(ps *problems, path string, t *config.TLSValidationTrust) *TrustRef {
	if count(t.ACM != nil, t.File != nil, t.SDS != nil) != 1 {
		ps.add(path, nil, "set exactly one of acm, file, sds")
	}
	switch {
	case t.ACM != nil:
		ps.add(path+".acm", strings.Join(t.ACM.CertificateAuthorityArns, ","), "%s", acmTrustMsg)
	case t.File != nil:
		if t.File.CertificateChain == "" {
			ps.add(path+".file.certificateChain", nil, "is required")
		} else {
			return &TrustRef{Path: path, File: t.File.CertificateChain}
		}
	case t.SDS != nil:
		if t.SDS.SecretName == "" {
			ps.add(path+".sds.secretName", nil, "is required")
		} else if err := checkSecretName(t.SDS.SecretName, false); err != nil {
			ps.add(path+".sds.secretName", t.SDS.SecretName, "%v", err)
		} else {
			return &TrustRef{Path: path, SDS: t.SDS.SecretName}
		}
	}
	return nil
}

func planSANs(ps *problems, path string, s *config.SubjectAltNames) []string {
	if s == nil {
		return nil
	}
	if len(s.Match.Exact) == 0 {
		ps.add(path+".match.exact", nil, "needs at least one name")
	}
	for i, n := range s.Match.Exact {
		if n == "" {
			ps.add(fmt.Sprintf("%s.match.exact[%d]", path, i), nil, "is empty")
		}
	}
	return slices.Clone(s.Match.Exact)
}

func count(bs ...bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// Unsupported lists the TLS settings of cfg that meshd cannot honour, for meshd
// validate: every listener tls block and client policy tls block of its virtual nodes
// and virtual gateways goes through PlanListener or PlanClient, and their problems are
// returned with full field paths. On a config that passed config.Validate, what remains
// is what meshd refuses to fake: ACM certificates and trust, and SDS secret names a
// SPIFFE Workload API cannot serve.
func Unsupported(cfg *config.Config) []config.FieldError {
	var out []config.FieldError
	collect := func(err error) {
		var errs *config.Errors
		if errors.As(err, &errs) {
			out = append(out, errs.List...)
		}
	}
	client := func(path string, cp *config.ClientPolicy) {
		if cp != nil && cp.TLS != nil {
			_, err := PlanClient(path+".tls", cp.TLS)
			collect(err)
		}
	}
	for i := range cfg.VirtualNodes {
		spec := fmt.Sprintf("virtualNodes[%d].spec", i)
		n := &cfg.VirtualNodes[i].Spec
		for j := range n.Listeners {
			if t := n.Listeners[j].TLS; t != nil {
				_, err := PlanListener(fmt.Sprintf("%s.listeners[%d].tls", spec, j), t)
				collect(err)
			}
		}
		for j, b := range n.Backends {
			if b.VirtualService != nil {
				client(fmt.Sprintf("%s.backends[%d].virtualService.clientPolicy", spec, j), b.VirtualService.ClientPolicy)
			}
		}
		if n.BackendDefaults != nil {
			client(spec+".backendDefaults.clientPolicy", n.BackendDefaults.ClientPolicy)
		}
	}
	for i := range cfg.VirtualGateways {
		spec := fmt.Sprintf("virtualGateways[%d].spec", i)
		g := &cfg.VirtualGateways[i].Spec
		for j := range g.Listeners {
			if t := g.Listeners[j].TLS; t != nil {
				_, err := PlanListener(fmt.Sprintf("%s.listeners[%d].tls", spec, j), t)
				collect(err)
			}
		}
		if g.BackendDefaults != nil {
			client(spec+".backendDefaults.clientPolicy", g.BackendDefaults.ClientPolicy)
		}
	}
	return out
}

// LoaderOptions configure a Loader.
type LoaderOptions struct {
	// Mesh is the mesh name of the node (or gateway) being served; Listener.Mesh, for
	// reading callers' virtual node names from their SPIFFE IDs.
	Mesh string
	// WorkloadAPIAddr is the SPIFFE Workload API endpoint for sds sources. Default
	// $SPIFFE_ENDPOINT_SOCKET. The API is dialled at the first sds source.
	WorkloadAPIAddr string
	// Debounce and ExpiryCheck: see FileOptions.
	Debounce    time.Duration
	ExpiryCheck time.Duration
	// Now is the clock for validity checks, verification and expiry warnings.
	Now    func() time.Time
	Logger *slog.Logger
}

// Loader turns plans into TLS configurations, loading their sources once: listeners
// and client policies naming the same files or secrets share one Source (one watch).
// The loader owns the sources: Close releases every one of them. Loading is serialised;
// the first sds source dials the Workload API and waits for it within the caller's
// context, so give that context a deadline.
type Loader struct {
	opts LoaderOptions

	mu      sync.Mutex
	sources map[string]Source
	wl      *WorkloadAPI
}

// NewLoader returns a Loader; it loads nothing until asked.
func NewLoader(opts LoaderOptions) *Loader {
	return &Loader{opts: opts, sources: map[string]Source{}}
}

// Close closes every source the loader loaded, and the Workload API stream.
func (l *Loader) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	for k, s := range l.sources {
		errs = append(errs, s.Close())
		delete(l.sources, k)
	}
	if l.wl != nil {
		errs = append(errs, l.wl.Close())
		l.wl = nil
	}
	return errors.Join(errs...)
}

// Stats are the counters of every source the loader holds (reloads, rejects, the
// certificate's NotAfter, expiry warnings), sorted by name, for a metrics exporter.
func (l *Loader) Stats() []Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Stats, 0, len(l.sources))
	for _, s := range l.sources {
		out = append(out, s.Stats())
	}
	slices.SortFunc(out, func(a, b Stats) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Listener is a loaded listener tls block.
type Listener struct {
	Mode string
	// Config is the server configuration; nil when Mode is DISABLED. A PERMISSIVE
	// listener uses it for the connections that start with a TLS ClientHello.
	Config *tls.Config
	// Certificate and Trust are its sources (Trust nil without validation).
	Certificate Source
	Trust       Source
	// Mesh is LoaderOptions.Mesh: Identity.Node(Mesh) names a verified caller's virtual
	// node.
	Mesh string
}

// Listener loads a listener plan. Errors name the field whose source failed.
func (l *Loader) Listener(ctx context.Context, p *ListenerPlan) (*Listener, error) {
	out := &Listener{Mode: p.Mode, Mesh: l.opts.Mesh}
	if p.Mode == ModeDisabled {
		return out, nil
	}
	if p.Certificate == nil {
		return nil, fieldErr(p.Path+".certificate", "", errors.New("no certificate in the plan"))
	}
	var err error
	if out.Certificate, err = l.cert(ctx, p.Certificate); err != nil {
		return nil, err
	}
	if p.Trust != nil {
		if out.Trust, err = l.trust(ctx, p.Trust); err != nil {
			return nil, err
		}
	}
	out.Config, err = NewServerConfig(ServerOptions{
		Certificate: out.Certificate, Trust: out.Trust, SubjectAltNames: p.SubjectAltNames, Now: l.opts.Now,
	})
	if err != nil {
		return nil, fieldErr(p.Path, "", err)
	}
	return out, nil
}

// Client is a loaded client policy tls block. One Client serves every backend the
// policy covers; Config makes each backend's configuration, sharing the sources and
// one session cache.
type Client struct {
	Enforce bool
	Ports   []int
	// Certificate (nil without one) and Trust are its sources.
	Certificate Source
	Trust       Source

	sans  []string
	cache tls.ClientSessionCache
	now   func() time.Time
}

// Client loads a client plan. Errors name the field whose source failed.
func (l *Loader) Client(ctx context.Context, p *ClientPlan) (*Client, error) {
	out := &Client{Enforce: p.Enforce, Ports: slices.Clone(p.Ports), sans: slices.Clone(p.SubjectAltNames), now: l.opts.Now}
	if !p.Enforce {
		return out, nil
	}
	var err error
	if p.Certificate != nil {
		if out.Certificate, err = l.cert(ctx, p.Certificate); err != nil {
			return nil, err
		}
	}
	if out.Trust, err = l.trust(ctx, &p.Trust); err != nil {
		return nil, err
	}
	out.cache = tls.NewLRUClientSessionCache(DefaultSessionCacheSize)
	return out, nil
}

// AppliesTo reports whether connections to a backend port originate TLS under this
// policy.
func (c *Client) AppliesTo(port int) bool {
	return c.Enforce && (len(c.Ports) == 0 || slices.Contains(c.Ports, port))
}

// Config is the client configuration for one backend: SNI serverName (the virtual
// service name), ALPN nextProtos (default DefaultNextProtos).
func (c *Client) Config(serverName string, nextProtos ...string) (*tls.Config, error) {
	if !c.Enforce {
		return nil, errors.New("tls client policy is not enforced")
	}
	return NewClientConfig(ClientOptions{
		ServerName: serverName, Trust: c.Trust, SubjectAltNames: c.sans, Certificate: c.Certificate,
		NextProtos: nextProtos, SessionCache: c.cache, Now: c.now,
	})
}

func fieldErr(path, value string, err error) error {
	return &config.Errors{List: []config.FieldError{{Path: path, Value: value, Msg: err.Error()}}}
}

func (l *Loader) cert(ctx context.Context, r *CertRef) (Source, error) {
	if r.File != nil {
		key := "file\x00" + r.File.CertificateChain + "\x00" + r.File.PrivateKey
		return l.shared(key, func() (Source, error) {
			s, err := NewFileSource(FileOptions{
				CertificateChain: r.File.CertificateChain, PrivateKey: r.File.PrivateKey,
				Debounce: l.opts.Debounce, ExpiryCheck: l.opts.ExpiryCheck, Now: l.opts.Now, Logger: l.opts.Logger,
			})
			if err != nil {
				return nil, fieldErr(r.Path+".file", r.File.CertificateChain, err)
			}
			return s, nil
		})
	}
	return l.shared("sds-cert\x00"+r.SDS, func() (Source, error) {
		wl, err := l.workloadAPI(ctx)
		if err == nil {
			var s Source
			if s, err = wl.CertificateSource(r.SDS); err == nil {
				return s, nil
			}
		}
		return nil, fieldErr(r.Path+".sds.secretName", r.SDS, err)
	})
}

func (l *Loader) trust(ctx context.Context, r *TrustRef) (Source, error) {
	if r.File != "" {
		return l.shared("file-trust\x00"+r.File, func() (Source, error) {
			s, err := NewFileSource(FileOptions{
				TrustChain: r.File,
				Debounce:   l.opts.Debounce, ExpiryCheck: l.opts.ExpiryCheck, Now: l.opts.Now, Logger: l.opts.Logger,
			})
			if err != nil {
				return nil, fieldErr(r.Path+".file.certificateChain", r.File, err)
			}
			return s, nil
		})
	}
	return l.shared("sds-trust\x00"+r.SDS, func() (Source, error) {
		wl, err := l.workloadAPI(ctx)
		if err == nil {
			var s Source
			if s, err = wl.TrustSource(r.SDS); err == nil {
				return s, nil
			}
		}
		return nil, fieldErr(r.Path+".sds.secretName", r.SDS, err)
	})
}

// shared returns the source under key, making it with mk the first time.
func (l *Loader) shared(key string, mk func() (Source, error)) (Source, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.sources[key]; ok {
		return s, nil
	}
	s, err := mk()
	if err != nil {
		return nil, err
	}
	l.sources[key] = s
	return s, nil
}

// workloadAPI dials the Workload API once. Called with l.mu held.
func (l *Loader) workloadAPI(ctx context.Context) (*WorkloadAPI, error) {
	if l.wl != nil {
		return l.wl, nil
	}
	wl, err := DialWorkloadAPI(ctx, WorkloadAPIOptions{
		Addr: l.opts.WorkloadAPIAddr, ExpiryCheck: l.opts.ExpiryCheck, Now: l.opts.Now, Logger: l.opts.Logger,
	})
	if err != nil {
		return nil, err
	}
	l.wl = wl
	return wl, nil
}
