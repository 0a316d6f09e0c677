//go:build linux

package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// releaseStartupPages drops meshd's mappings of its own binary's read-only pages (code
// and read-only data) once it serves: start-up (the init of every linked package,
// config parsing and compiling, the first TLS and discovery set-up) maps about 16 MB
// of the binary's 20, of which the serving paths use about 10 (the kernel maps 64 KiB
// around each page a fault needs). MADV_DONTNEED on a private file mapping only unmaps:
// the pages stay in the page cache, shared with every other process of the binary, and
// whatever runs next maps them back with a minor fault, never a read from disk.
// Writable mappings (the binary's data) are left alone: dropping them would lose their
// contents. It returns the bytes of the mappings it dropped.
func releaseStartupPages() (int, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, fmt.Errorf("own binary: %w", err)
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, fmt.Errorf("own mappings: %w", err)
	}
	defer f.Close()
	released := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 00400000-00d09000 r-xp 00000000 fe:00 9978032   /usr/local/bin/meshd
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[5] != exe || len(fields[1]) < 4 || fields[1][1] != '-' || fields[1][3] != 'p' {
			continue // another file, writable, or shared
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		// Raw addresses from /proc, not Go memory: the syscall, not syscall.Madvise's slice.
		if _, _, e := syscall.Syscall(syscall.SYS_MADVISE, uintptr(start), uintptr(end-start), syscall.MADV_DONTNEED); e != 0 {
			return released, fmt.Errorf("madvise %s: %w", fields[0], e)
		}
		released += int(end - start)
	}
	return released, sc.Err()
}
