package config

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/meshd/meshd/telemetry"
)

// Debounce defaults for FileSource: a burst of events (an editor's write-rename-chmod,
// Kubernetes' symlink dance) is read once, DefaultDebounce after it went quiet, and a
// file that keeps changing is still read at least every maxDebounceFactor debounces.
const (
	DefaultDebounce   = 250 * time.Millisecond
	maxDebounceFactor = 8
)

// FileSource watches a config file. It watches the file's directory, not the file, so
// it sees the ways files are replaced rather than edited: an atomic rename over the
// path (most deploy tools, editors), a symlink swapped to a new target (`ln -sfn`), and
// Kubernetes ConfigMap volumes, where the path is a symlink through `..data`, itself a
// symlink that the kubelet swaps to a new timestamped directory. When the path resolves
// to a file in another directory, that directory is watched too, so an in-place edit of
// the symlink's target is seen.
//
// Path may also name a directory (ReadPath: every *.json, *.yaml and *.yml file in it,
// merged). Then the directory itself is watched (and its symlink target, when it is one),
// and a change to any config file in it, or the kubelet's swap of ..data when it is a
// ConfigMap volume, reloads the whole directory. A file that is a symlink out of the
// directory (other than the ConfigMap's) is seen changing on SIGHUP only.
//
// The zero value is not usable: set Path. Fields must not change after the first call.
type FileSource struct {
	// Path is the config file or directory. Required.
	Path string
	// Debounce is how long the directory must be quiet before the file is read.
	// Default DefaultDebounce.
	Debounce time.Duration
	Logger   *slog.Logger

	settled settledDoc
}

func (s *FileSource) origin() string { return "file:" + s.Path }

// Fetch reads the file now. Errors name the path.
func (s *FileSource) Fetch(_ context.Context) (Document, error) {
	data, err := ReadPath(s.Path)
	if err != nil {
		return Document{}, err
	}
	return Document{Data: data, Origin: s.origin()}, nil
}

// Applied records doc as settled (see Source).
func (s *FileSource) Applied(doc Document) { s.settled.record(doc.Data) }

// Watch watches the file's directory with fsnotify until ctx is done. It returns an
// error only if the watch cannot be set up (no such directory, inotify limits). A
// delivery deliver does not accept is retried as Source describes; an unreadable file
// is not (the event that brings the new file is).
func (s *FileSource) Watch(ctx context.Context, deliver func(Document) error) error {
	abs, err := filepath.Abs(s.Path)
	if err != nil {
		return fmt.Errorf("watch config %s: %w", s.Path, err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch config %s: %w", s.Path, err)
	}
	// Close joins fsnotify's reader goroutine.
	defer w.Close()
	dir := filepath.Dir(abs)
	isDir := false
	if fi, err := os.Stat(abs); err == nil && fi.IsDir() {
		dir, isDir = abs, true
	}
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("watch config %s: directory %s: %w", s.Path, dir, err)
	}
	fw := &fileWatch{src: s, abs: abs, dir: dir, isDir: isDir, w: w, log: telemetry.OrDiscard(s.Logger), recheck: true}
	fw.rewatch()
	return fw.loop(ctx, w.Events, w.Errors, deliver)
}

// fileWatch is the state of one Watch call; only its goroutine touches it.
type fileWatch struct {
	src    *FileSource
	abs    string // the configured path, absolute
	dir    string // its directory (abs itself when isDir), always watched
	isDir  bool   // abs is a directory of config files
	target string // where abs resolves to (through symlinks), "" if it does not
	extra  string // the target's directory when it is not dir, watched too
	w      *fsnotify.Watcher
	log    *slog.Logger
	// recheck makes the loop read the file once before its first event: a change made
	// after the config in force was read but before the watch existed sends no event
	// (a canary's first weight change right after /ready answered 200 was lost so).
	recheck bool
}

// rewatch follows abs's symlinks and moves the extra watch to the target's directory.
func (fw *fileWatch) rewatch() {
	target, err := filepath.EvalSymlinks(fw.abs)
	if err != nil {
		fw.target = ""
		return
	}
	fw.target = target
	want := filepath.Dir(target)
	if fw.isDir {
		want = target
	}
	if want == fw.dir || (strings.HasPrefix(filepath.Base(want), "..") && filepath.Dir(want) == fw.dir) {
		// ConfigMap layout: the target lives in a ..timestamp directory under dir, and
		// every update swaps ..data in dir itself; watching dir suffices.
		want = ""
	}
	if want == fw.extra {
		return
	}
	if fw.extra != "" && fw.w != nil {
		_ = fw.w.Remove(fw.extra)
	}
	fw.extra = ""
	if want != "" && fw.w != nil {
		if err := fw.w.Add(want); err != nil {
			fw.log.Warn("cannot watch the config file's symlink target directory; edits there are seen on SIGHUP only",
				"path", fw.abs, "dir", want, "err", err)
			return
		}
		fw.extra = want
	}
}

// relevant reports whether an event may have changed what abs reads as.
func (fw *fileWatch) relevant(ev fsnotify.Event) bool {
	if fw.isDir {
		d, base := filepath.Dir(ev.Name), filepath.Base(ev.Name)
		return (d == fw.dir || d == fw.target) && (isConfigFileName(base) || strings.HasPrefix(base, ".."))
	}
	if ev.Name == fw.abs || (fw.target != "" && ev.Name == fw.target) {
		return true
	}
	// ..data, ..data_tmp, ..2024_01_01_...: the kubelet's atomic writer.
	return filepath.Dir(ev.Name) == fw.dir && strings.HasPrefix(filepath.Base(ev.Name), "..")
}

// loop debounces events and reads the file after each quiet period. It is separate
// from Watch so tests can drive it with their own event channels under testing/synctest.
func (fw *fileWatch) loop(ctx context.Context, events <-chan fsnotify.Event, errs <-chan error, deliver func(Document) error) error {
	d := fw.src.Debounce
	if d <= 0 {
		d = DefaultDebounce
	}
	timer := time.NewTimer(d)
	timer.Stop()
	defer timer.Stop()
	retry := newRetryTimer()
	defer retry.settled()
	if !fw.src.settled.any() {
		retry.failed() // the file in place at start was never applied: try it again
	} else if fw.recheck {
		fw.check(deliver, retry)
	}
	var (
		pending bool
		first   time.Time // first event of the current burst
	)
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				return nil
			}
			if !fw.relevant(ev) {
				continue
			}
			now := time.Now()
			if !pending {
				pending, first = true, now
				timer.Reset(d)
			} else if now.Sub(first) < maxDebounceFactor*d {
				timer.Reset(d)
			}
		case err, ok := <-errs:
			if !ok {
				return nil
			}
			// Overflow (too many events queued) loses events, not the file: read it.
			fw.log.Warn("config file watch error; re-reading the file", "path", fw.abs, "err", err)
			if !pending {
				pending, first = true, time.Now()
				timer.Reset(d)
			}
		case <-timer.C:
			pending = false
			fw.check(deliver, retry)
			fw.rewatch()
		case <-retry.C():
			fw.check(deliver, retry)
		}
	}
}

// check reads the file and delivers it if it differs from the settled document.
func (fw *fileWatch) check(deliver func(Document) error, retry *retryTimer) {
	data, err := ReadPath(fw.abs)
	if err != nil {
		// Between a remove and a create, or a dangling symlink mid-swap: the next event
		// brings the new file. The running config keeps serving meanwhile.
		fw.log.Warn("config file unreadable; keeping the running config", "path", fw.abs, "err", err)
		return
	}
	if after, err := offer(Document{Data: data, Origin: fw.src.origin()}, &fw.src.settled, retry, deliver); err != nil {
		fw.log.Warn("config file not applied; trying it again", "path", fw.abs, "in", after, "err", err)
	}
}
