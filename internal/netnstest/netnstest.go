//go:build linux

// Package netnstest holds the prerequisites check and command helper shared by the
// root-only network-namespace tests. It imports nothing from meshd, so the tests of
// any package (proxy/intercept included, which internal/testutil cannot serve: that
// imports proxy) can use it.
package netnstest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// RequireNetns skips the test unless it runs as root with the ip and iptables tools;
// with MESHD_REQUIRE_NETNS set (CI) a missing prerequisite fails the test instead.
func RequireNetns(t testing.TB) {
	t.Helper()
	skip := func(reason string) {
		if os.Getenv("MESHD_REQUIRE_NETNS") != "" {
			t.Fatalf("MESHD_REQUIRE_NETNS is set but %s", reason)
		}
		t.Skip(reason)
	}
	if os.Geteuid() != 0 {
		skip("needs root to create network namespaces and install iptables rules")
	}
	for _, bin := range []string{"ip", "iptables-restore", "iptables-save", "ip6tables-restore", "ip6tables-save"} {
		if _, err := exec.LookPath(bin); err != nil {
			skip(bin + " is not installed (apt-get install iptables iproute2)")
		}
	}
}

// Sh runs a command and fails the test with its output when it fails.
func Sh(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// InNetns runs fn on a fresh OS thread that joined network namespace ns and, when uid
// or gid is not 0, took that (thread-only) identity. The thread is never unlocked, so
// the runtime discards it afterwards. Sockets keep the namespace and owner they were
// created with, so listeners and connections made in fn work from any goroutine.
func InNetns(ns string, uid, gid int, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		// Raw syscalls change only this thread's credentials; syscall.Setuid would
		// change every thread of the test binary.
		if gid != 0 {
			if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, ^uintptr(0), uintptr(gid), ^uintptr(0)); e != 0 {
				errc <- fmt.Errorf("setresgid %d: %w", gid, e)
				return
			}
		}
		if uid != 0 {
			if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)); e != 0 {
				errc <- fmt.Errorf("setresuid %d: %w", uid, e)
				return
			}
		}
		errc <- fn()
	}()
	return <-errc
}
