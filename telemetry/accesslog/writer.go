package accesslog

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/telemetry"
)

const (
	defaultQueueLines = 4096
	// batchBytes is how much the writer goroutine gathers before one write.
	batchBytes = 64 << 10
	// maxPooledLine: a line buffer grown past this (a huge header) is not reused.
	maxPooledLine = 16 << 10
	// drainTimeout bounds how long Close waits for the queue to drain.
	drainTimeout = 2 * time.Second
	// logEvery: at most one warning per interval about lost lines.
	logEvery = 10 * time.Second
)

// Options tune a Writer.
type Options struct {
	// QueueLines is how many formatted lines may wait for the writer goroutine;
	// beyond that a line is dropped and counted. 0 means 4096.
	QueueLines int
	// Log receives the warnings about lost lines (at most one per 10s). nil: none.
	Log *slog.Logger
}

// Writer writes access log lines to a file through a bounded in-memory queue drained
// by one goroutine, so a slow or full disk never stalls the request path: when the
// queue is full the line is dropped and counted. It implements telemetry.Observer.
type Writer struct {
	path   string
	format *Format
	dst    io.Writer
	closer io.Closer // nil for stdout and stderr, which are not closed
	log    *slog.Logger

	q    chan *line
	pool sync.Pool

	// mu orders Observe's send against Close: once closed is set under the write lock,
	// no line enters the queue, so the drain sees every line that did.
	mu     sync.RWMutex
	closed bool

	stop chan struct{} // closed by Close: drain and exit
	done chan struct{} // closed by the goroutine when it exits

	full    atomic.Uint64 // lines dropped because the queue was full or the writer closed
	failed  atomic.Uint64 // lines dropped because a write failed
	written atomic.Uint64

	closeOnce sync.Once
	closeErr  error

	// For tests.
	drainTimeout time.Duration
	now          func() time.Time

	// Owned by the goroutine: the warning rate limit.
	lastWarn   time.Time
	warnedFull uint64 // w.full at the last warning
}

type line struct{ b []byte }

var _ telemetry.Observer = (*Writer)(nil)

// Open opens (creating it with mode 0644 if needed) the file at path for appending and
// starts the Writer's goroutine. "/dev/stdout" and "/dev/stderr" are the process's own
// streams, which Close leaves open. A nil f is Envoy's default format. The error, if
// any, names the path.
func Open(path string, f *Format, opts Options) (*Writer, error) {
	if f == nil {
		var err error
		if f, err = Compile("", nil); err != nil {
			return nil, err
		}
	}
	switch path {
	case "/dev/stdout":
		return newWriter(path, os.Stdout, nil, f, opts), nil
	case "/dev/stderr":
		return newWriter(path, os.Stderr, nil, f, opts), nil
	case "":
		return nil, fmt.Errorf("access log: empty path")
	}
	file, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("access log: %w", err) // *os.PathError: names the path
	}
	return newWriter(path, file, file, f, opts), nil
}

// newWriter starts a Writer on dst; closer, if not nil, is closed by Close.
func newWriter(path string, dst io.Writer, closer io.Closer, f *Format, opts Options) *Writer {
	n := opts.QueueLines
	if n <= 0 {
		n = defaultQueueLines
	}
	w := &Writer{
		path:         path,
		format:       f,
		dst:          dst,
		closer:       closer,
		log:          telemetry.OrDiscard(opts.Log),
		q:            make(chan *line, n),
		stop:         make(chan struct{}),
		done:         make(chan struct{}),
		drainTimeout: drainTimeout,
		now:          time.Now,
	}
	w.pool.New = func() any { return &line{b: make([]byte, 0, 512)} }
	go w.run()
	return w
}

// Observe formats r into a pooled buffer and enqueues the line. It never blocks: when
// the queue is full, or the Writer is closed, the line is dropped and counted.
func (w *Writer) Observe(r *telemetry.Request) {
	l := w.pool.Get().(*line)
	l.b = w.format.Append(l.b[:0], r)
	w.mu.RLock()
	sent := false
	if !w.closed {
		select {
		case w.q <- l:
			sent = true
		default:
		}
	}
	w.mu.RUnlock()
	if !sent {
		w.full.Add(1)
		w.put(l)
	}
}

func (w *Writer) put(l *line) {
	if cap(l.b) <= maxPooledLine {
		w.pool.Put(l)
	}
}

// Dropped is the number of lines lost: the queue was full, the Writer was closed, or
// the write failed.
func (w *Writer) Dropped() uint64 { return w.full.Load() + w.failed.Load() }

// Path is the file the writer writes.
func (w *Writer) Path() string { return w.path }

// Written is the number of lines written.
func (w *Writer) Written() uint64 { return w.written.Load() }

// Close stops taking lines, writes what is queued (waiting at most 2s), stops the
// goroutine and closes the file (not stdout or stderr). If the queue does not drain in
// time, Close closes the file anyway, which fails the write in progress, and returns an
// error; on stdout or stderr a write that never returns keeps the goroutine. Further
// calls return the first call's result.
func (w *Writer) Close() error {
	w.closeOnce.Do(func() {
		w.mu.Lock()
		w.closed = true
		w.mu.Unlock()
		close(w.stop)
		t := time.NewTimer(w.drainTimeout)
		defer t.Stop()
		select {
		case <-w.done:
		case <-t.C:
			w.closeErr = fmt.Errorf("access log %s: %d lines still queued after %v; closing anyway", w.path, len(w.q), w.drainTimeout)
		}
		if w.closer != nil {
			if err := w.closer.Close(); err != nil && w.closeErr == nil {
				w.closeErr = fmt.Errorf("access log: close: %w", err)
			}
		}
	})
	return w.closeErr
}

// run is the writer goroutine: it gathers queued lines into batches of up to
// batchBytes and writes each batch with one call.
func (w *Writer) run() {
	defer close(w.done)
	batch := make([]byte, 0, batchBytes)
	lines := 0
	add := func(l *line) {
		batch = append(batch, l.b...)
		lines++
		w.put(l)
	}
	flush := func() {
		if lines > 0 {
			w.write(batch, lines)
		}
		if cap(batch) > 4*batchBytes {
			batch = make([]byte, 0, batchBytes)
		}
		batch, lines = batch[:0], 0
	}
	for {
		select {
		case l := <-w.q:
			add(l)
		gather:
			for len(batch) < batchBytes {
				select {
				case l := <-w.q:
					add(l)
				default:
					break gather
				}
			}
			flush()
		case <-w.stop:
			// Close set closed before closing stop: what is queued now is all there is.
			for {
				select {
				case l := <-w.q:
					add(l)
					if len(batch) >= batchBytes {
						flush()
					}
				default:
					flush()
					return
				}
			}
		}
	}
}

// write writes one batch of lines, counting them as written or, on an error, dropped.
func (w *Writer) write(batch []byte, lines int) {
	if _, err := w.dst.Write(batch); err != nil {
		w.failed.Add(uint64(lines))
		w.warn("access log write failed; its lines are dropped", err)
		return
	}
	w.written.Add(uint64(lines))
	if w.full.Load() != w.warnedFull {
		w.warn("access log queue full; lines dropped", nil)
	}
}

// warn logs at most once per logEvery, with the running totals.
func (w *Writer) warn(msg string, err error) {
	now := w.now()
	if !w.lastWarn.IsZero() && now.Sub(w.lastWarn) < logEvery {
		return
	}
	w.lastWarn = now
	w.warnedFull = w.full.Load()
	args := []any{"path", w.path, "dropped", w.Dropped(), "written", w.written.Load()}
	if err != nil {
		args = append(args, "err", err)
	}
	w.log.Warn(msg, args...)
}
