//go:build linux

package main

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// rssFileKB is this process's resident file-backed memory (RssFile, KiB).
func rssFileKB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			n, err := strconv.Atoi(strings.Fields(v)[0])
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Skip("no RssFile in /proc/self/status")
	return 0
}

// TestReleaseStartupPages: the binary's read-only mappings are dropped (the resident
// file-backed memory falls) and the process runs on, mapping back what it uses.
func TestReleaseStartupPages(t *testing.T) {
	before := rssFileKB(t)
	n, err := releaseStartupPages()
	if err != nil {
		t.Fatal(err)
	}
	after := rssFileKB(t)
	if n == 0 || after >= before {
		t.Fatalf("released %d bytes of mappings; RssFile %d KiB -> %d KiB, want it lower", n, before, after)
	}
	// Code the test has not run since, run now.
	if _, err := releaseStartupPages(); err != nil {
		t.Fatalf("second release: %v", err)
	}
}
