package config

import (
	"context"
	"crypto/sha256"
	"sync"
	"time"
)

// Document is one config document as a Source delivered it: the raw bytes (YAML or
// JSON, for Parse) and where they came from, e.g. "file:/etc/meshd/mesh.yaml" or
// "url:https://config.example/mesh.yaml etag W/\"7\"".
type Document struct {
	Data   []byte
	Origin string
}

// Source is where a running meshd gets its config from: a file it watches (FileSource)
// or a URL it polls (PollSource). The control endpoint (PUT /config) is not a Source: it
// pushes documents into the proxy directly.
//
// A Source neither parses nor validates: it delivers bytes, and the caller's apply
// pipeline decides whether they are good. The source remembers the settled document
// (the last one deliver accepted or Applied recorded) and skips identical ones; a
// document deliver did not accept is offered again.
type Source interface {
	// Fetch reads the current document once, now. It is called at start and on SIGHUP,
	// may block on I/O until ctx is done, and is safe to call while Watch runs. It does
	// not settle the document: a caller that applies it calls Applied.
	Fetch(ctx context.Context) (Document, error)
	// Applied records doc (typically from Fetch, once applied) as settled, so Watch does
	// not deliver it again. Safe to call while Watch runs.
	Applied(doc Document)
	// Watch delivers each new document until ctx is done, then returns nil; it returns
	// an error only when watching cannot start. deliver is called from Watch's own
	// goroutine, one document at a time, and may block (the source waits for it).
	// Watch starts no goroutine that outlives it. A document identical to the settled
	// one is not delivered.
	//
	// deliver returns nil when the document is settled: applied, or rejected for a reason
	// the same bytes cannot overcome. A non-nil error means the same bytes may succeed
	// later (say, endpoints whose DNS lookup failed): the document is not settled and the
	// source reads it again after RetryMin, then after doubling delays capped at
	// RetryMax, until a delivery is accepted (or ctx ends); the backoff restarts after
	// an accepted one. When Watch starts with no
	// settled document (the one fetched at start was never applied), it checks after
	// RetryMin too.
	Watch(ctx context.Context, deliver func(Document) error) error
}

// Backoff of a source's re-checks after a delivery was not accepted.
const (
	RetryMin = time.Second
	RetryMax = 30 * time.Second
)

// digestBytes identifies a document's bytes, to skip redelivering an unchanged one.
func digestBytes(b []byte) [32]byte { return sha256.Sum256(b) }

// settledDoc is the digest of a source's settled document. Safe for concurrent use.
type settledDoc struct {
	mu  sync.Mutex
	sum [32]byte
	set bool
}

func (f *settledDoc) record(data []byte) {
	sum := digestBytes(data)
	f.mu.Lock()
	f.sum, f.set = sum, true
	f.mu.Unlock()
}

// is reports whether data is the settled document.
func (f *settledDoc) is(data []byte) bool {
	sum := digestBytes(data)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.set && f.sum == sum
}

func (f *settledDoc) any() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.set
}

// retryTimer schedules a Watch's re-check after a delivery deliver did not accept,
// with exponential backoff from RetryMin to RetryMax. Only the Watch goroutine uses it.
type retryTimer struct {
	t    *time.Timer
	next time.Duration // the delay the next failure arms; 0 is RetryMin
}

func newRetryTimer() *retryTimer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &retryTimer{t: t}
}

// C fires when a re-check is due.
func (r *retryTimer) C() <-chan time.Time { return r.t.C }

// failed arms the re-check and returns its delay.
func (r *retryTimer) failed() time.Duration {
	d := max(r.next, RetryMin)
	r.t.Reset(d)
	r.next = min(2*d, RetryMax)
	return d
}

// settled disarms the re-check and resets the backoff.
func (r *retryTimer) settled() {
	r.t.Stop()
	r.next = 0
}

// offer delivers doc unless it is the settled document, settling it when deliver
// accepts it and arming the retry when not. It reports the delay of an armed retry (0
// when none).
func offer(doc Document, f *settledDoc, r *retryTimer, deliver func(Document) error) (time.Duration, error) {
	if f.is(doc.Data) {
		r.settled()
		return 0, nil
	}
	if err := deliver(doc); err != nil {
		return r.failed(), err
	}
	f.record(doc.Data)
	r.settled()
	return 0, nil
}
