package meshtls

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// DefaultDebounce is how long a FileSource waits for its directories to be quiet
// before it re-reads the files: a pair written as two renames, or the kubelet's
// symlink dance, is read once.
const DefaultDebounce = 250 * time.Millisecond

// maxPEMFile bounds what a FileSource reads from one file.
const maxPEMFile = 1 << 20

// FileOptions configure a FileSource: App Mesh's certificate.file {certificateChain,
// privateKey} and/or validation.trust.file {certificateChain}.
type FileOptions struct {
	// CertificateChain and PrivateKey are PEM files: the certificate followed by its
	// intermediates, and its key (PKCS #8, PKCS #1 or SEC 1). Both or neither.
	CertificateChain string
	PrivateKey       string
	// TrustChain is a PEM file of trusted CA certificates.
	TrustChain string

	// Debounce: see DefaultDebounce.
	Debounce time.Duration
	// ExpiryCheck is how often the certificate's expiry is checked. Default
	// DefaultExpiryCheck.
	ExpiryCheck time.Duration
	// Now is the clock for validity checks and expiry warnings. Default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// FileSource is a Source read from PEM files. It watches the files' directories with
// fsnotify (not the files: they are usually replaced, not edited), so an atomic rename
// over a path, a symlink swapped to a new target, and Kubernetes secret and ConfigMap
// volumes (paths that are symlinks through `..data`, which the kubelet swaps to a new
// timestamped directory) are all seen. After DefaultDebounce of quiet the files are
// read again; a new pair that does not load is read once more after another quiet
// period (a writer may be between its renames), then rejected (logged at error,
// counted) while the previous one keeps serving.
type FileSource struct {
	*holder
	opts   FileOptions
	paths  []string // the configured paths, absolute
	dirs   map[string]bool
	extra  map[string]bool // symlink targets' directories, watched as well
	w      *fsnotify.Watcher
	cancel context.CancelFunc
	done   chan struct{}
	loadMu sync.Mutex // serialises load and install (the watch and Reload)
}

// NewFileSource reads the files, failing if they do not load, and starts watching
// them. Close stops the watch.
func NewFileSource(opts FileOptions) (*FileSource, error) {
	if (opts.CertificateChain == "") != (opts.PrivateKey == "") {
		return nil, errors.New("file source: certificateChain and privateKey go together")
	}
	if opts.CertificateChain == "" && opts.TrustChain == "" {
		return nil, errors.New("file source: nothing to read (no certificate, no trust)")
	}
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	if opts.ExpiryCheck <= 0 {
		opts.ExpiryCheck = DefaultExpiryCheck
	}
	var names []string
	if opts.CertificateChain != "" {
		names = append(names, opts.CertificateChain)
	}
	if opts.TrustChain != "" {
		names = append(names, "trust "+opts.TrustChain)
	}
	s := &FileSource{
		holder: newHolder("file "+strings.Join(names, ", "), opts.Logger, opts.Now),
		opts:   opts,
		dirs:   map[string]bool{},
		extra:  map[string]bool{},
	}
	for _, p := range []string{opts.CertificateChain, opts.PrivateKey, opts.TrustChain} {
		if p == "" {
			continue
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, err
		}
		s.paths = append(s.paths, abs)
		s.dirs[filepath.Dir(abs)] = true
	}
	m, err := s.load()
	if err != nil {
		return nil, err
	}
	s.set(m)

	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("%s: watch: %w", s.name, err)
	}
	for d := range s.dirs {
		if err := w.Add(d); err != nil {
			w.Close()
			return nil, fmt.Errorf("%s: watch directory %s: %w", s.name, d, err)
		}
	}
	s.w = w
	s.rewatch()
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan struct{})
	go s.run(ctx)
	return s, nil
}

// Close stops watching and joins the watch goroutine.
func (s *FileSource) Close() error {
	s.cancel()
	<-s.done
	return s.w.Close()
}

// Reload reads the files now, as a change in their directories would. It returns the
// reason when the new files were rejected (the previous material keeps serving).
func (s *FileSource) Reload() error {
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	m, err := s.load()
	if err != nil {
		s.reject(err)
		return err
	}
	s.set(m)
	return nil
}

// CheckExpiry checks the certificate's expiry now (it is also checked every
// ExpiryCheck and at each reload) and logs a warning when it is close.
func (s *FileSource) CheckExpiry() { s.checkExpiry() }

func (s *FileSource) run(ctx context.Context) {
	defer close(s.done)
	debounce := time.NewTimer(s.opts.Debounce)
	debounce.Stop()
	defer debounce.Stop()
	expiry := time.NewTicker(s.opts.ExpiryCheck)
	defer expiry.Stop()
	retried := false
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-s.w.Events:
			if !ok {
				return
			}
			if s.relevant(ev) {
				debounce.Reset(s.opts.Debounce)
			}
		case err, ok := <-s.w.Errors:
			if !ok {
				return
			}
			// An overflow loses events, not files: read them again.
			s.log.Warn("tls: file watch error; re-reading the files", "source", s.name, "err", err)
			debounce.Reset(s.opts.Debounce)
		case <-debounce.C:
			s.rewatch()
			if !s.reloadQuietly(retried) {
				// Maybe mid-rotation (a key renamed, its certificate not yet): read
				// again after another quiet period before rejecting.
				retried = true
				debounce.Reset(s.opts.Debounce)
				continue
			}
			retried = false
		case <-expiry.C:
			s.checkExpiry()
		}
	}
}

// reloadQuietly reads the files and installs them. A failure is rejected only when
// final; otherwise reloadQuietly reports false and leaves everything as it was.
func (s *FileSource) reloadQuietly(final bool) bool {
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	m, err := s.load()
	if err != nil {
		if !final {
			return false
		}
		s.reject(err)
		return true
	}
	s.set(m)
	return true
}

// relevant reports whether an event may change what the paths read as: the path
// itself, the file a path's symlinks lead to, or a `..` entry beside a path (the
// kubelet's ..data, ..data_tmp and ..<timestamp>).
func (s *FileSource) relevant(ev fsnotify.Event) bool {
	for _, p := range s.paths {
		if ev.Name == p {
			return true
		}
	}
	if s.dirs[filepath.Dir(ev.Name)] && strings.HasPrefix(filepath.Base(ev.Name), "..") {
		return true
	}
	return s.extra[filepath.Dir(ev.Name)]
}

// rewatch follows the paths' symlinks and watches the directories they lead to, when
// those are not already watched (a `..timestamp` directory beside the path needs no
// watch of its own: the swap of ..data is seen in the path's directory).
func (s *FileSource) rewatch() {
	want := map[string]bool{}
	for _, p := range s.paths {
		target, err := filepath.EvalSymlinks(p)
		if err != nil || target == p {
			continue
		}
		d := filepath.Dir(target)
		if s.dirs[d] || (strings.HasPrefix(filepath.Base(d), "..") && s.dirs[filepath.Dir(d)]) {
			continue
		}
		want[d] = true
	}
	for d := range s.extra {
		if !want[d] {
			_ = s.w.Remove(d)
			delete(s.extra, d)
		}
	}
	for d := range want {
		if s.extra[d] {
			continue
		}
		if err := s.w.Add(d); err != nil {
			s.log.Warn("tls: cannot watch the directory a certificate path links to; edits there are not seen", "source", s.name, "dir", d, "err", err)
			continue
		}
		s.extra[d] = true
	}
}

// load reads and checks the files.
func (s *FileSource) load() (*material, error) {
	now := s.now()
	m := &material{}
	h := sha256.New()
	if s.opts.CertificateChain != "" {
		certPEM, err := readPEMFile(s.opts.CertificateChain)
		if err != nil {
			return nil, err
		}
		keyPEM, err := readPEMFile(s.opts.PrivateKey)
		if err != nil {
			return nil, err
		}
		cert, err := parseKeyPair(certPEM, keyPEM, now)
		if err != nil {
			return nil, fmt.Errorf("certificateChain %s, privateKey %s: %w", s.opts.CertificateChain, s.opts.PrivateKey, err)
		}
		m.cert = cert
		h.Write(certPEM)
		h.Write([]byte{0})
		h.Write(keyPEM)
	}
	h.Write([]byte{0})
	if s.opts.TrustChain != "" {
		trustPEM, err := readPEMFile(s.opts.TrustChain)
		if err != nil {
			return nil, err
		}
		pool, err := parseTrust(trustPEM, now)
		if err != nil {
			return nil, fmt.Errorf("trust certificateChain %s: %w", s.opts.TrustChain, err)
		}
		m.pool = pool
		h.Write(trustPEM)
	}
	m.key = hex.EncodeToString(h.Sum(nil))
	return m, nil
}

func readPEMFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPEMFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxPEMFile {
		return nil, fmt.Errorf("%s is larger than %d bytes; not a PEM certificate or key", path, maxPEMFile)
	}
	return data, nil
}

// parseKeyPair loads a certificate chain and key and checks them: the key matches the
// leaf, every certificate of the chain parses, the leaf is valid at now.
func parseKeyPair(certPEM, keyPEM []byte, now time.Time) (*tls.Certificate, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, err
		}
	}
	for i, der := range cert.Certificate[1:] {
		if _, err := x509.ParseCertificate(der); err != nil {
			return nil, fmt.Errorf("certificate %d of the chain: %w", i+2, err)
		}
	}
	if err := checkValidity(cert.Leaf, now); err != nil {
		return nil, err
	}
	return &cert, nil
}

// parseTrust reads CA certificates (other PEM blocks are skipped) into a pool. It
// fails when a certificate does not parse, when there is none, or when every one of
// them has expired.
func parseTrust(data []byte, now time.Time) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n, valid := 0, 0
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		n++
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", n, err)
		}
		if checkValidity(c, now) == nil {
			valid++
		}
		pool.AddCert(c)
	}
	if n == 0 {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	if valid == 0 {
		return nil, fmt.Errorf("none of its %d CA certificates is valid now (expired or not yet valid)", n)
	}
	return pool, nil
}
