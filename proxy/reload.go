package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/config"
)

// HistorySize is how many apply attempts /config/history keeps.
const HistorySize = 32

// Apply stages: where an attempt was rejected.
const (
	StagePrecondition = "precondition" // If-Match named another version
	StageParse        = "parse"
	StageValidate     = "validate"
	StageCompile      = "compile" // routing table, clusters, endpoint resolution
)

// Attempt results.
const (
	ResultApplied  = "applied"
	ResultRejected = "rejected"
	ResultValid    = "valid" // a dry run (POST /config/validate) that would apply
)

// ConfigError is one problem with a config, as /config and /config/history show it:
// a config.FieldError in JSON, or just a message for errors without a field path.
type ConfigError struct {
	Path  string `json:"path,omitempty"`
	Line  int    `json:"line,omitempty"`
	Value string `json:"value,omitempty"`
	Msg   string `json:"msg"`
}

// Attempt is one apply (or dry run) of a config, whatever its outcome.
type Attempt struct {
	// Version is the config's digest; empty when it did not parse.
	Version string    `json:"version,omitempty"`
	Source  string    `json:"source"`
	Time    time.Time `json:"time"`
	Result  string    `json:"result"`
	// Stage is where a rejected attempt failed.
	Stage  string        `json:"stage,omitempty"`
	Errors []ConfigError `json:"errors,omitempty"`
	DryRun bool          `json:"dryRun,omitempty"`
}

// RejectedError is the error of an apply that was rejected: the config in force keeps
// serving. Err is the cause; for StageParse and StageValidate it is a *config.Errors.
type RejectedError struct {
	Stage string
	Err   error
}

func (e *RejectedError) Error() string { return "config rejected at " + e.Stage + ": " + e.Err.Error() }
func (e *RejectedError) Unwrap() error { return e.Err }

// ErrVersionMismatch is wrapped by the error of an apply whose If-Match precondition
// named a version that is not the one in force (HTTP 412).
var ErrVersionMismatch = errors.New("config version mismatch")

// ErrShutdown is wrapped by the error of an apply that would have swapped its config in
// after Server.Shutdown had retired the config in force (StageCompile).
var ErrShutdown = errors.New("server shut down")

// ReloadStats counts apply outcomes since the server was created.
type ReloadStats struct {
	Applied  uint64 `json:"applied"`
	Rejected uint64 `json:"rejected"`
	// PersistErrors counts applied configs that could not be written to
	// Options.PersistPath (disk full, permissions); the config still serves.
	PersistErrors uint64 `json:"persistErrors"`
}

// reloadState is the apply pipeline's bookkeeping. Attempts are recorded under
// Server.applyMu; mu only lets readers (admin handlers) copy the ring safely.
type reloadState struct {
	applied, rejected, persistErrors atomic.Uint64

	mu           sync.Mutex
	ring         [HistorySize]Attempt
	n            int // attempts recorded so far
	lastRejected *Attempt
}

func (r *reloadState) record(a Attempt) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ring[r.n%HistorySize] = a
	r.n++
	if a.Result == ResultRejected && !a.DryRun {
		r.lastRejected = &a
	}
}

// History returns the last HistorySize apply attempts, newest first. Safe for
// concurrent use.
func (s *Server) History() []Attempt {
	r := &s.reload
	r.mu.Lock()
	defer r.mu.Unlock()
	k := min(r.n, HistorySize)
	out := make([]Attempt, 0, k)
	for i := 1; i <= k; i++ {
		out = append(out, r.ring[(r.n-i)%HistorySize])
	}
	return out
}

// LastRejected returns the most recent rejected (non-dry-run) attempt, if any.
func (s *Server) LastRejected() (Attempt, bool) {
	s.reload.mu.Lock()
	defer s.reload.mu.Unlock()
	if s.reload.lastRejected == nil {
		return Attempt{}, false
	}
	return *s.reload.lastRejected, true
}

// ReloadStats returns the apply counters. Safe for concurrent use.
func (s *Server) ReloadStats() ReloadStats {
	return ReloadStats{
		Applied:       s.reload.applied.Load(),
		Rejected:      s.reload.rejected.Load(),
		PersistErrors: s.reload.persistErrors.Load(),
	}
}

// ApplyRequest is one document for ApplyDocument.
type ApplyRequest struct {
	// Data is the config, YAML or JSON, as Parse takes it.
	Data []byte
	// Source names where it came from (file:PATH, url:URL, admin:ADDR), for /config.
	Source string
	// IfMatch, when not empty, is an HTTP If-Match value: the apply proceeds only if it
	// lists the version in force (as a quoted ETag) or is "*" and a config is in force.
	// It is checked under the apply lock, so two writers holding the same version
	// cannot both succeed.
	IfMatch string
	// DryRun parses, validates and compiles without swapping anything in.
	DryRun bool
}

// ApplyDocument runs the apply pipeline: precondition, parse, validate, compile,
// swap. The new snapshot is built while the old one keeps serving; in-flight requests
// finish on the snapshot they loaded. Clusters whose definition did not change carry
// over with their connection pools, endpoint state and counters. Ingress connections
// addressed to a node listener the new config removed finish their current request
// and are then closed.
//
// Any failure rejects the whole config and the old one keeps serving: the error is a
// *RejectedError (wrapping a *config.Errors for parse and validation failures, or
// ErrVersionMismatch for a failed If-Match). Every attempt is logged, counted and
// recorded in History. Applies are serialized; ApplyDocument may block on DNS
// resolution of endpoints for as long as ctx allows. Safe for concurrent use, also
// with Shutdown: an apply that reaches the swap after Shutdown retired the config in
// force is rejected (ErrShutdown) and closes what it built.
func (s *Server) ApplyDocument(ctx context.Context, req ApplyRequest) (*Snapshot, error) {
	return s.apply(ctx, nil, req)
}

// apply is the pipeline behind Apply and ApplyDocument; cfg, when not nil, is already
// parsed and req.Data is then ignored.
func (s *Server) apply(ctx context.Context, cfg *config.Config, req ApplyRequest) (*Snapshot, error) {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	prev := s.snap.Load()
	att := Attempt{Source: req.Source, Time: time.Now(), DryRun: req.DryRun}
	reject := func(stage string, err error) (*Snapshot, error) {
		att.Result, att.Stage, att.Errors = ResultRejected, stage, configErrors(err)
		s.reload.record(att)
		if !req.DryRun {
			s.reload.rejected.Add(1)
			s.log.Warn("config rejected; the previous config keeps serving",
				"source", req.Source, "version", att.Version, "stage", stage, "err", err)
		}
		return nil, &RejectedError{Stage: stage, Err: err}
	}
	if req.IfMatch != "" && !ifMatchHolds(req.IfMatch, prev) {
		current := ""
		if prev != nil {
			current = prev.Version
		}
		return reject(StagePrecondition, fmt.Errorf("%w: If-Match %s, version in force %q", ErrVersionMismatch, req.IfMatch, current))
	}
	raw := req.Data
	if cfg == nil {
		var err error
		if cfg, err = config.Parse(raw); err != nil {
			return reject(StageParse, err)
		}
	}
	att.Version = cfg.Digest()
	next, err := compile(ctx, cfg, s.opts.Node, req.Source, prev, s.compileOptions())
	if err != nil {
		var fe *config.Errors
		if errors.As(err, &fe) {
			return reject(StageValidate, err)
		}
		return reject(StageCompile, err)
	}
	if req.DryRun {
		next.retire(prev) // close only what this compile built
		att.Result = ResultValid
		s.reload.record(att)
		return next, nil
	}
	s.swapMu.Lock()
	if s.shut { // Shutdown retired prev already: nothing would ever close next's clusters
		s.swapMu.Unlock()
		next.retire(prev)
		return reject(StageCompile, ErrShutdown)
	}
	next.commit()
	s.snap.Store(next)
	prev.retire(next)
	s.swapMu.Unlock()
	s.drainRemovedListeners(prev, next)
	s.reload.applied.Add(1)
	att.Result = ResultApplied
	s.reload.record(att)
	s.log.Info("config applied", "version", next.Version, "source", req.Source, "clusters", len(next.clusters))
	if s.opts.PersistPath != "" {
		s.persist(cfg, raw)
	}
	return next, nil
}

// configErrors lists err's problems: every FieldError of a *config.Errors, or err's
// message alone.
func configErrors(err error) []ConfigError {
	var fe *config.Errors
	if errors.As(err, &fe) {
		out := make([]ConfigError, len(fe.List))
		for i, e := range fe.List {
			out[i] = ConfigError{Path: e.Path, Line: e.Line, Value: e.Value, Msg: e.Msg}
		}
		return out
	}
	return []ConfigError{{Msg: err.Error()}}
}

// ETag is the HTTP entity tag of a config version.
func ETag(version string) string { return `"` + version + `"` }

// ifMatchHolds evaluates an If-Match field value (RFC 9110 §13.1.1) against the
// version in force: "*" holds when there is one; otherwise one of the listed entity
// tags must equal its ETag by strong comparison, so weak tags never match.
func ifMatchHolds(h string, cur *Snapshot) bool {
	h = strings.TrimSpace(h)
	if h == "*" {
		return cur != nil
	}
	if cur == nil {
		return false
	}
	want := ETag(cur.Version)
	for _, tag := range strings.Split(h, ",") {
		if strings.TrimSpace(tag) == want {
			return true
		}
	}
	return false
}

// persist writes the applied config to Options.PersistPath so a restart while the
// config source is unreachable comes up serving it. A failure is logged and counted;
// the applied config keeps serving either way.
func (s *Server) persist(cfg *config.Config, raw []byte) {
	if raw == nil {
		// Applied from a parsed config: its canonical JSON parses back to the same
		// config (and the same version).
		var err error
		if raw, err = json.Marshal(cfg); err != nil {
			s.reload.persistErrors.Add(1)
			s.log.Error("cannot persist the applied config", "path", s.opts.PersistPath, "err", err)
			return
		}
	}
	if err := WriteFileAtomic(s.opts.PersistPath, raw); err != nil {
		s.reload.persistErrors.Add(1)
		s.log.Error("cannot persist the applied config; it keeps serving", "path", s.opts.PersistPath, "err", err)
	}
}

// WriteFileAtomic replaces path with data so that a reader (or a crash) sees either
// the old file or the new one, never a mix: it writes a temporary file in the same
// directory, fsyncs it, renames it over path and fsyncs the directory.
func WriteFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("persist %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("persist %s: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("persist %s: %w", path, err)
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync() // best effort: not every file system supports syncing a directory
		_ = d.Close()
	}
	return nil
}

// nodeListenerPorts lists the node's listener ports in snap.
func nodeListenerPorts(snap *Snapshot) map[int]bool {
	ports := map[int]bool{}
	if snap == nil || snap.Config == nil {
		return ports
	}
	if vn := snap.Config.VirtualNode(snap.Node); vn != nil {
		for _, l := range vn.Spec.Listeners {
			ports[l.PortMapping.Port] = true
		}
	}
	return ports
}

// drainRemovedListeners closes, once their current request is done, the ingress
// connections addressed to a node listener that next no longer has. meshd's ingress
// is one socket for every node listener (iptables redirects each app port to it), so
// "removing a listener" cannot close a socket: instead each open connection to the
// removed port is marked draining. An idle one is woken and closed now; a busy one
// finishes its request on the snapshot it loaded and is closed when it would wait for
// the next. New connections to the port get 404 no_listener from the new snapshot.
// A connection without an original destination (no iptables) was served by the node's
// only listener and drains when that changes.
//
// HTTP/2 connections are not closed (net/http offers no per-connection GOAWAY); their
// in-flight streams finish and new streams get 404 no_listener.
func (s *Server) drainRemovedListeners(prev, next *Snapshot) {
	if prev == nil || s.ingress == nil {
		return
	}
	before, after := nodeListenerPorts(prev), nodeListenerPorts(next)
	removed := false
	for p := range before {
		if !after[p] {
			removed = true
		}
	}
	if !removed && prev.localNodePort == next.localNodePort {
		return
	}
	ia, _ := s.ingress.Addr().(*net.TCPAddr)
	if ia == nil {
		return
	}
	s.connMu.Lock()
	defer s.connMu.Unlock()
	n := 0
	for c := range s.conns {
		la, _ := c.LocalAddr().(*net.TCPAddr)
		if la == nil || la.Port != ia.Port || !(ia.IP.IsUnspecified() || ia.IP.Equal(la.IP)) {
			continue // an egress connection
		}
		port := int(c.orig.Port())
		gone := false
		if port == 0 {
			gone = prev.localNodePort != next.localNodePort
		} else {
			gone = before[port] && !after[port]
		}
		if gone {
			c.drain.Store(true)
			c.wakeIfIdle()
			n++
		}
	}
	if n > 0 {
		s.log.Info("draining connections of removed listeners", "connections", n)
	}
}
