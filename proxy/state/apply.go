package state

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
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
	// File and Doc place the problem in a directory config or a multi-document input
	// (config.FieldError's).
	File  string `json:"file,omitempty"`
	Doc   int    `json:"doc,omitempty"`
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
// after Holder.Shutdown had retired the config in force (StageCompile).
var ErrShutdown = errors.New("server shut down")

// ReloadStats counts apply outcomes since the server was created.
type ReloadStats struct {
	Applied  uint64 `json:"applied"`
	Rejected uint64 `json:"rejected"`
	// PersistErrors counts applied configs that could not be written to
	// Options.PersistPath (disk full, permissions); the config still serves.
	PersistErrors uint64 `json:"persistErrors"`
}

// Holder holds the snapshot in force and runs the apply pipeline that replaces it.
// Set the exported fields before first use; all methods are safe for concurrent use.
type Holder struct {
	// Node is the virtual node the snapshots are compiled for, or the virtual gateway
	// when Gateway is set.
	Node    string
	Gateway bool
	// Mesh, when set, is the only mesh a config may name (mesh.meshName): the mesh the
	// deployment says this sidecar belongs to (APPMESH_RESOURCE_ARN). Another is refused
	// like any invalid config, so it is neither applied nor persisted.
	Mesh string
	// MeshFrom says where Mesh came from, for the refusal (e.g. the variable and value).
	MeshFrom string
	Options  Options
	Log      *slog.Logger
	// PersistPath, when set, is where each applied config is written (atomically).
	PersistPath string
	// ReleaseMemory, when set, makes each applied config end with debug.FreeOSMemory: a
	// full collection, then the freed pages handed back to the OS. Parsing and compiling
	// a mesh of 10,000 routes leaves about 100 MB of garbage (and a reload the config it
	// replaced), which the runtime would otherwise return only slowly, so a sidecar's RSS
	// would stay at that peak. It costs one collection per apply, at its end, when
	// nothing of the apply is reachable but the new snapshot.
	ReleaseMemory bool
	// OnSwap, when set, runs after each swap (under no lock), e.g. to drain connections
	// of listeners the new config removed.
	OnSwap func(prev, next *Snapshot)

	snap    atomic.Pointer[Snapshot]
	applyMu sync.Mutex
	// swapMu orders an apply's swap against Shutdown's final retire: shut is set and the
	// snapshot in force retired under it, and an apply stores its snapshot under it only
	// while shut is false, so no snapshot is stored after Shutdown retired the last one.
	// It is not applyMu so that Shutdown does not wait for an apply's compile (DNS).
	swapMu sync.Mutex
	shut   bool
	hist   history
}

// Load returns the snapshot in force, nil before the first apply. One atomic load:
// the request path calls it once per request (or connection).
func (s *Holder) Load() *Snapshot { return s.snap.Load() }

// Shutdown retires the snapshot in force (its clusters close) and makes every later
// apply fail with ErrShutdown.
func (s *Holder) Shutdown() {
	s.swapMu.Lock()
	defer s.swapMu.Unlock()
	s.shut = true
	s.snap.Load().Retire(nil)
}

// history is the apply pipeline's bookkeeping. Attempts are recorded under
// Holder.applyMu; mu only lets readers (admin handlers) copy the ring safely.
type history struct {
	applied, rejected, persistErrors atomic.Uint64

	mu           sync.Mutex
	ring         [HistorySize]Attempt
	n            int // attempts recorded so far
	lastRejected *Attempt
}

func (r *history) record(a Attempt) {
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
func (s *Holder) History() []Attempt {
	r := &s.hist
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
func (s *Holder) LastRejected() (Attempt, bool) {
	s.hist.mu.Lock()
	defer s.hist.mu.Unlock()
	if s.hist.lastRejected == nil {
		return Attempt{}, false
	}
	return *s.hist.lastRejected, true
}

// ReloadStats returns the apply counters. Safe for concurrent use.
func (s *Holder) ReloadStats() ReloadStats {
	return ReloadStats{
		Applied:       s.hist.applied.Load(),
		Rejected:      s.hist.rejected.Load(),
		PersistErrors: s.hist.persistErrors.Load(),
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
	// DeferRelease skips Holder.ReleaseMemory's release after this apply: the caller
	// releases the memory itself, later (meshd run's first config, once it serves, so
	// that neither the collection nor the pages handed back are on the way to /ready).
	DeferRelease bool
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
func (s *Holder) ApplyDocument(ctx context.Context, req ApplyRequest) (*Snapshot, error) {
	return s.Apply(ctx, nil, req)
}

// apply is the pipeline behind Apply and ApplyDocument; cfg, when not nil, is already
// parsed and req.Data is then ignored.
func (s *Holder) Apply(ctx context.Context, cfg *config.Config, req ApplyRequest) (*Snapshot, error) {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	prev := s.snap.Load()
	att := Attempt{Source: req.Source, Time: time.Now(), DryRun: req.DryRun}
	version := func() string { return "" } // the config's digest, once parsed
	reject := func(stage string, err error) (*Snapshot, error) {
		att.Version = version()
		att.Result, att.Stage, att.Errors = ResultRejected, stage, ConfigErrors(err)
		s.hist.record(att)
		if !req.DryRun {
			s.hist.rejected.Add(1)
			msg := "config rejected; the previous config keeps serving"
			if prev == nil {
				msg = "config rejected; no config is in force yet, so nothing is served"
			}
			s.Log.Warn(msg, "source", req.Source, "version", att.Version, "stage", stage, "err", err)
		}
		return nil, &RejectedError{Stage: stage, Err: err}
	}
	if req.IfMatch != "" && !ifMatchHolds(req.IfMatch, prev) {
		current := ""
		if prev != nil {
			current = prev.version
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
	// The digest hashes the whole config (~6 ms for 10,000 routes); it runs beside
	// validation and compile, which need it only at the end. Every path from here
	// waits for it (reject, compile), so the goroutine ends with Apply.
	digest := make(chan string, 1)
	go func(cfg *config.Config) { digest <- cfg.Digest() }(cfg)
	version = sync.OnceValue(func() string { return <-digest })
	if s.Mesh != "" && cfg.Mesh.MeshName != s.Mesh {
		return reject(StageValidate, &config.Errors{List: []config.FieldError{{Path: "mesh.meshName", Value: cfg.Mesh.MeshName,
			Msg: fmt.Sprintf("this sidecar serves mesh %q (%s); a config of another mesh is refused", s.Mesh, cmp.Or(s.MeshFrom, "Options.Mesh"))}}})
	}
	compileFor := func(ctx context.Context, cfg *config.Config, node, source string, prev *Snapshot, opts Options) (*Snapshot, error) {
		return compile(ctx, cfg, version, node, source, prev, opts)
	}
	if s.Gateway {
		compileFor = CompileGateway
	}
	next, err := compileFor(ctx, cfg, s.Node, req.Source, prev, s.Options)
	if err != nil {
		var fe *config.Errors
		if errors.As(err, &fe) {
			return reject(StageValidate, err)
		}
		return reject(StageCompile, err)
	}
	att.Version = version()
	if req.DryRun {
		next.Retire(prev) // close only what this compile built
		att.Result = ResultValid
		s.hist.record(att)
		return next, nil
	}
	s.swapMu.Lock()
	if s.shut { // Shutdown retired prev already: nothing would ever close next's clusters
		s.swapMu.Unlock()
		next.Retire(prev)
		return reject(StageCompile, ErrShutdown)
	}
	s.snap.Store(next)
	prev.Retire(next)
	s.swapMu.Unlock()
	if s.OnSwap != nil {
		s.OnSwap(prev, next)
	}
	s.hist.applied.Add(1)
	att.Result = ResultApplied
	s.hist.record(att)
	s.Log.Info("config applied", "version", next.version, "source", req.Source, "clusters", len(next.clusters))
	if s.PersistPath != "" {
		s.persist(cfg, raw)
	}
	if s.ReleaseMemory && !req.DeferRelease {
		debug.FreeOSMemory()
	}
	return next, nil
}

// ConfigErrors lists err's problems: every FieldError of a *config.Errors, or err's
// message alone.
func ConfigErrors(err error) []ConfigError {
	var fe *config.Errors
	if errors.As(err, &fe) {
		out := make([]ConfigError, len(fe.List))
		for i, e := range fe.List {
			out[i] = ConfigError{File: e.File, Doc: e.Doc, Path: e.Path, Line: e.Line, Value: e.Value, Msg: e.Msg}
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
	want := ETag(cur.version)
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
func (s *Holder) persist(cfg *config.Config, raw []byte) {
	if raw == nil {
		// Applied from a parsed config: its canonical JSON parses back to the same
		// config (and the same version).
		var err error
		if raw, err = json.Marshal(cfg); err != nil {
			s.hist.persistErrors.Add(1)
			s.Log.Error("cannot persist the applied config", "path", s.PersistPath, "err", err)
			return
		}
	}
	if err := WriteFileAtomic(s.PersistPath, raw); err != nil {
		s.hist.persistErrors.Add(1)
		s.Log.Error("cannot persist the applied config; it keeps serving", "path", s.PersistPath, "err", err)
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
