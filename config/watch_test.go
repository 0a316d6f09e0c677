package config

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/goleak"

	"github.com/meshd/meshd/telemetry"
)

// watchFile runs src.Watch until the test ends and returns the documents it delivers.
func watchFile(t *testing.T, src Source) <-chan Document {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	docs := make(chan Document, 16)
	var wg sync.WaitGroup
	started := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := src.Watch(ctx, func(d Document) error { docs <- d; return nil })
		started <- err
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		if err := <-started; err != nil {
			t.Errorf("Watch: %v", err)
		}
	})
	return docs
}

// next waits for one delivered document; the bound only turns a hang into a failure.
func next(t *testing.T, docs <-chan Document) Document {
	t.Helper()
	select {
	case d := <-docs:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("no document delivered within 10s")
		return Document{}
	}
}

// nextWith waits until a document with want in it arrives (an earlier step may still
// deliver an intermediate state first).
func nextWith(t *testing.T, docs <-chan Document, want string) Document {
	t.Helper()
	for {
		if d := next(t, docs); strings.Contains(string(d.Data), want) {
			return d
		}
	}
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFileSourceFetch(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "mesh.yaml")
	write(t, p, "a: 1\n")
	src := &FileSource{Path: p}
	doc, err := src.Fetch(context.Background())
	if err != nil || string(doc.Data) != "a: 1\n" || doc.Origin != "file:"+p {
		t.Fatalf("Fetch = %q %q %v", doc.Data, doc.Origin, err)
	}
	_, err = (&FileSource{Path: filepath.Join(dir, "missing.yaml")}).Fetch(context.Background())
	if err == nil || !strings.Contains(err.Error(), "missing.yaml") || !os.IsNotExist(unwrapAll(err)) {
		t.Fatalf("missing file: %v", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

func TestFileSourceWatch(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // runs after the other cleanups
	cases := []struct {
		name string
		// setup creates the config at path (maybe as a symlink) in dir.
		setup func(t *testing.T, dir, path string)
		// replace makes path read as content, the way a tool would.
		replace func(t *testing.T, dir, path, content string, n int)
	}{
		{
			name:  "rename over",
			setup: func(t *testing.T, dir, path string) { write(t, path, "v0") },
			replace: func(t *testing.T, dir, path, content string, n int) {
				tmp := filepath.Join(dir, ".mesh.yaml.tmp")
				write(t, tmp, content)
				if err := os.Rename(tmp, path); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name:  "in-place write",
			setup: func(t *testing.T, dir, path string) { write(t, path, "v0") },
			replace: func(t *testing.T, dir, path, content string, n int) {
				write(t, path, content)
			},
		},
		{
			name: "symlink swap",
			setup: func(t *testing.T, dir, path string) {
				write(t, filepath.Join(dir, "v0.yaml"), "v0")
				if err := os.Symlink("v0.yaml", path); err != nil {
					t.Fatal(err)
				}
			},
			replace: func(t *testing.T, dir, path, content string, n int) {
				name := fmt.Sprintf("rev%d.yaml", n)
				write(t, filepath.Join(dir, name), content)
				tmp := filepath.Join(dir, ".link.tmp")
				if err := os.Symlink(name, tmp); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(tmp, path); err != nil { // ln -sfn does the same
					t.Fatal(err)
				}
			},
		},
		{
			name: "ConfigMap ..data swap",
			setup: func(t *testing.T, dir, path string) {
				ts := filepath.Join(dir, "..2026_01_01_00_00_00.0")
				if err := os.Mkdir(ts, 0o755); err != nil {
					t.Fatal(err)
				}
				write(t, filepath.Join(ts, "mesh.yaml"), "v0")
				if err := os.Symlink(filepath.Base(ts), filepath.Join(dir, "..data")); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink("..data/mesh.yaml", path); err != nil {
					t.Fatal(err)
				}
			},
			replace: func(t *testing.T, dir, path, content string, n int) {
				// What the kubelet's AtomicWriter does: new timestamped dir, new ..data_tmp
				// link, rename over ..data, remove the old dir.
				old, _ := os.Readlink(filepath.Join(dir, "..data"))
				ts := fmt.Sprintf("..2026_01_01_00_00_%03d.0", n+1)
				if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
					t.Fatal(err)
				}
				write(t, filepath.Join(dir, ts, "mesh.yaml"), content)
				if err := os.Symlink(ts, filepath.Join(dir, "..data_tmp")); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
					t.Fatal(err)
				}
				if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "symlink to another directory, target edited",
			setup: func(t *testing.T, dir, path string) {
				other := filepath.Join(dir, "other")
				if err := os.Mkdir(other, 0o755); err != nil {
					t.Fatal(err)
				}
				write(t, filepath.Join(other, "real.yaml"), "v0")
				if err := os.Symlink(filepath.Join(other, "real.yaml"), path); err != nil {
					t.Fatal(err)
				}
			},
			replace: func(t *testing.T, dir, path, content string, n int) {
				write(t, filepath.Join(dir, "other", "real.yaml"), content)
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "mesh.yaml")
			tc.setup(t, dir, path)
			src := &FileSource{Path: path, Debounce: 20 * time.Millisecond}
			doc, err := src.Fetch(context.Background())
			if err != nil || string(doc.Data) != "v0" {
				t.Fatalf("Fetch = %q, %v", doc.Data, err)
			}
			src.Applied(doc)
			docs := watchFile(t, src)
			// The watch is in place some time after Watch starts: replace (with fresh
			// content each time) until a replacement shows.
			deadline := time.Now().Add(10 * time.Second)
			got := false
			for n := 0; !got && time.Now().Before(deadline); n++ {
				tc.replace(t, dir, path, fmt.Sprintf("v1-%d", n), n)
				select {
				case d := <-docs:
					got = strings.HasPrefix(string(d.Data), "v1-")
				case <-time.After(200 * time.Millisecond):
				}
			}
			if !got {
				t.Fatal("no replacement was ever delivered")
			}
			tc.replace(t, dir, path, "v2", 99)
			if d := nextWith(t, docs, "v2"); d.Origin != "file:"+path {
				t.Fatalf("origin %q", d.Origin)
			}
		})
	}
}

// TestFileSourceDebounce drives the watch loop with synthetic events in a synctest
// bubble: a burst is read once, after the quiet period; an unchanged file is not
// delivered again; a burst that never goes quiet is still read within the cap.
func TestFileSourceDebounce(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mesh.yaml")
	write(t, path, "v0")
	synctest.Test(t, func(t *testing.T) {
		const d = 100 * time.Millisecond
		src := &FileSource{Path: path, Debounce: d}
		doc, err := src.Fetch(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		src.Applied(doc)
		fw := &fileWatch{src: src, abs: path, dir: dir, log: telemetry.OrDiscard(nil)}
		events := make(chan fsnotify.Event)
		errs := make(chan error)
		var mu sync.Mutex
		var got []string
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() {
			done <- fw.loop(ctx, events, errs, func(doc Document) error {
				mu.Lock()
				got = append(got, string(doc.Data))
				mu.Unlock()
				return nil
			})
		}()
		delivered := func() []string {
			synctest.Wait()
			mu.Lock()
			defer mu.Unlock()
			return append([]string(nil), got...)
		}
		ev := fsnotify.Event{Name: path, Op: fsnotify.Write}

		// A burst of 10 events 10ms apart, the file changing in the middle.
		for i := 0; i < 10; i++ {
			if i == 5 {
				write(t, path, "v1")
			}
			events <- ev
			time.Sleep(10 * time.Millisecond)
		}
		if g := delivered(); len(g) != 0 {
			t.Fatalf("delivered during the burst: %q", g)
		}
		time.Sleep(d)
		if g := delivered(); len(g) != 1 || g[0] != "v1" {
			t.Fatalf("after the burst: %q, want [v1]", g)
		}

		// Events that change nothing (touch, chmod) deliver nothing.
		events <- fsnotify.Event{Name: path, Op: fsnotify.Chmod}
		time.Sleep(2 * d)
		if g := delivered(); len(g) != 1 {
			t.Fatalf("unchanged file delivered again: %q", g)
		}

		// Events for other files in the directory are ignored.
		write(t, path, "v2")
		events <- fsnotify.Event{Name: filepath.Join(dir, "unrelated.txt"), Op: fsnotify.Write}
		time.Sleep(2 * d)
		if g := delivered(); len(g) != 1 {
			t.Fatalf("an unrelated file's event triggered a read: %q", g)
		}

		// A file that changes without pause is read within maxDebounceFactor debounces.
		start := time.Now()
		for time.Since(start) < 2*maxDebounceFactor*d {
			events <- ev
			time.Sleep(d / 2)
			if g := delivered(); len(g) == 2 {
				break
			}
		}
		if g := delivered(); len(g) != 2 || g[1] != "v2" {
			t.Fatalf("continuous events: %q, want a read of v2", g)
		}
		if el := time.Since(start); el > (maxDebounceFactor+1)*d {
			t.Fatalf("continuous events delayed the read %v, cap is %v", el, maxDebounceFactor*d)
		}

		// A watcher error (queue overflow) triggers a re-read.
		write(t, path, "v3")
		errs <- fsnotify.ErrEventOverflow
		time.Sleep(d)
		if g := delivered(); len(g) != 3 || g[2] != "v3" {
			t.Fatalf("after an overflow: %q", g)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

func TestFileSourceWatchMissingDir(t *testing.T) {
	src := &FileSource{Path: filepath.Join(t.TempDir(), "nope", "mesh.yaml")}
	err := src.Watch(context.Background(), func(Document) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("Watch on a missing directory: %v", err)
	}
}

// TestFileSourceWatchSeesChangeBeforeWatch: a file changed after the config in force was
// read (Applied) but before Watch set its watch up sends no event; Watch reads the file
// once at its start and delivers the change, and delivers nothing when the file is the
// one in force.
func TestFileSourceWatchSeesChangeBeforeWatch(t *testing.T) {
	for _, changed := range []bool{true, false} {
		dir := t.TempDir()
		path := filepath.Join(dir, "mesh.yaml")
		write(t, path, "v0")
		src := &FileSource{Path: path, Debounce: 10 * time.Millisecond}
		src.Applied(Document{Data: []byte("v0")})
		if changed {
			write(t, path, "v1")
		}
		ctx, cancel := context.WithCancel(context.Background())
		got := make(chan string, 4)
		done := make(chan error, 1)
		go func() {
			done <- src.Watch(ctx, func(d Document) error { got <- string(d.Data); return nil })
		}()
		select {
		case v := <-got:
			if !changed || v != "v1" {
				t.Errorf("changed=%v: delivered %q", changed, v)
			}
		case <-time.After(500 * time.Millisecond):
			if changed {
				t.Error("the change made before the watch was not delivered")
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
