package accesslog

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshd/meshd/telemetry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestWriterFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	if err := os.WriteFile(path, []byte("earlier line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := mustCompile(t, "%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE%", nil)
	w, err := Open(path, f, Options{})
	if err != nil {
		t.Fatal(err)
	}
	const n = 1000
	r := filled()
	for range n {
		w.Observe(r)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if w.Written() != n || w.Dropped() != 0 {
		t.Errorf("written %d, dropped %d; want %d, 0", w.Written(), w.Dropped(), n)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "earlier line\n" + strings.Repeat("POST /api/v1?x=1 201\n", n)
	if string(b) != want {
		t.Errorf("file holds %d bytes, want %d (appended lines after the earlier one)", len(b), len(want))
	}
	w.Observe(r) // after Close: dropped, not written
	if w.Written() != n || w.Dropped() != 1 {
		t.Errorf("after Close: written %d, dropped %d; want %d, 1", w.Written(), w.Dropped(), n)
	}
}

func TestOpenCreates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new.log")
	w, err := Open(path, nil, Options{}) // nil: the default format
	if err != nil {
		t.Fatal(err)
	}
	w.Observe(&telemetry.Request{})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := `[-] "- - -" 0 - 0 0 0 - "-" "-" "-" "-" "-"` + "\n"; string(b) != want {
		t.Errorf("got %q, want the default format's %q", b, want)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm()&^0o644 != 0 {
		t.Errorf("mode %v (%v), want at most 0644", st.Mode(), err)
	}
}

func TestOpenErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "no", "such", "dir", "access.log")
	if _, err := Open(bad, nil, Options{}); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("Open(%s) = %v, want an error naming the path", bad, err)
	}
	if _, err := Open("", nil, Options{}); err == nil {
		t.Error("Open(\"\"): want an error")
	}
}

func TestStdStreamsNotClosed(t *testing.T) {
	for _, p := range []string{"/dev/stdout", "/dev/stderr"} {
		w, err := Open(p, nil, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if w.closer != nil {
			t.Errorf("%s: Close would close the process's stream", p)
		}
		if w.dst != os.Stdout && w.dst != os.Stderr {
			t.Errorf("%s: writes to %v, want the process's stream", p, w.dst)
		}
		if err := w.Close(); err != nil {
			t.Error(err)
		}
	}
	if _, err := os.Stdout.Stat(); err != nil {
		t.Errorf("stdout after Close: %v", err)
	}
}

// gate is a destination whose Write reports that it started and then waits until
// released: a disk that stalls.
type gate struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
	mu      sync.Mutex
	buf     bytes.Buffer
}

func newGate() *gate {
	return &gate{entered: make(chan struct{}, 1), release: make(chan struct{})}
}

func (g *gate) Write(p []byte) (int, error) {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	<-g.release
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.buf.Write(p)
}

func (g *gate) open() { g.once.Do(func() { close(g.release) }) }

func (g *gate) lines() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return strings.Count(g.buf.String(), "\n")
}

// wait fails the test if ch does not fire: a bound for a hang, not a timing.
func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// TestWriterStalledDestination: while the destination blocks, Observe returns at once,
// fills the queue and then counts drops; Close drains what was queued.
func TestWriterStalledDestination(t *testing.T) {
	const queue = 8
	g := newGate()
	w := newWriter("stalled", g, nil, mustCompile(t, "%RESPONSE_CODE%", nil), Options{QueueLines: queue})
	t.Cleanup(g.open)
	r := filled()

	w.Observe(r)
	wait(t, g.entered, "the writer to start its first write") // it holds that line now

	observed := make(chan struct{})
	go func() {
		defer close(observed)
		for range queue + 5 {
			w.Observe(r)
		}
	}()
	wait(t, observed, "Observe to return while the destination is stalled")
	if w.Dropped() != 5 || w.Written() != 0 {
		t.Fatalf("dropped %d, written %d; want 5 (the queue of %d was full), 0", w.Dropped(), w.Written(), queue)
	}

	g.open()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if w.Written() != 1+queue || w.Dropped() != 5 || g.lines() != 1+queue {
		t.Errorf("after Close: written %d, dropped %d, lines %d; want %d, 5, %d", w.Written(), w.Dropped(), g.lines(), 1+queue, 1+queue)
	}
}

// TestCloseBounded: a destination that never returns does not hold Close past its
// drain timeout; the file is closed anyway.
func TestCloseBounded(t *testing.T) {
	g := newGate()
	c := &closeRecorder{}
	w := newWriter("stuck", g, c, mustCompile(t, "", nil), Options{QueueLines: 4})
	w.drainTimeout = 10 * time.Millisecond
	w.Observe(filled())
	wait(t, g.entered, "the writer to start its write")
	w.Observe(filled())

	err := w.Close()
	if err == nil || !strings.Contains(err.Error(), "still queued") {
		t.Errorf("Close = %v, want the drain timeout error", err)
	}
	if !c.closed() {
		t.Error("Close did not close the destination after the timeout")
	}
	g.open() // let the goroutine finish, for goleak
	wait(t, w.done, "the writer goroutine to exit")
}

type closeRecorder struct {
	mu sync.Mutex
	n  int
}

func (c *closeRecorder) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	return nil
}

func (c *closeRecorder) closed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n > 0
}

// failing is a destination whose writes fail (a full disk), reporting each attempt.
type failing struct{ wrote chan struct{} }

func (f *failing) Write(p []byte) (int, error) {
	f.wrote <- struct{}{}
	return 0, errors.New("no space left on device")
}

// records counts log records.
type records struct {
	mu   sync.Mutex
	msgs []string
}

func (h *records) Enabled(context.Context, slog.Level) bool { return true }
func (h *records) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, r.Message)
	return nil
}
func (h *records) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *records) WithGroup(string) slog.Handler      { return h }

func (h *records) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.msgs)
}

// TestWriteErrors: a failing write drops its lines and the writer keeps going; the
// warning is logged at most once per 10s.
func TestWriteErrors(t *testing.T) {
	dst := &failing{wrote: make(chan struct{})}
	logs := &records{}
	w := newWriter("full", dst, nil, mustCompile(t, "", nil), Options{Log: slog.New(logs)})
	now := time.Unix(1000, 0)
	var mu sync.Mutex
	w.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	for range 3 { // three separate failed writes within 10s
		w.Observe(filled())
		wait(t, dst.wrote, "a write")
		advance(time.Second)
	}
	advance(10 * time.Second)
	w.Observe(filled())
	wait(t, dst.wrote, "a write after 10s")

	if err := w.Close(); err != nil { // the queue is empty: no write to wait for
		t.Fatal(err)
	}
	if w.Dropped() != 4 || w.Written() != 0 {
		t.Errorf("dropped %d, written %d; want 4, 0", w.Dropped(), w.Written())
	}
	if n := logs.count(); n != 2 {
		t.Errorf("%d warnings (%q), want 2: one per 10s", n, logs.msgs)
	}
}

// TestObserveCloseRace: every observed line is either written or counted as dropped,
// also when Close runs concurrently with Observe.
func TestObserveCloseRace(t *testing.T) {
	w := newWriter("race", io.Discard, nil, mustCompile(t, "", nil), Options{QueueLines: 16})
	const goroutines, each = 8, 500
	var wg sync.WaitGroup
	startLine := make(chan struct{})
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := filled()
			<-startLine
			for range each {
				w.Observe(r)
			}
		}()
	}
	close(startLine)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if got := w.Written() + w.Dropped(); got != goroutines*each {
		t.Errorf("written %d + dropped %d = %d, want %d", w.Written(), w.Dropped(), got, goroutines*each)
	}
}

func BenchmarkObserve(b *testing.B) {
	w := newWriter("bench", io.Discard, nil, mustCompile(b, "", nil), Options{})
	r := filled()
	b.ReportAllocs()
	for b.Loop() {
		w.Observe(r)
	}
	b.StopTimer()
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(w.Dropped())/float64(b.N), "dropped/op")
}
