//go:build linux

// Package netnstest holds the prerequisites check and command helper shared by the
// root-only network-namespace tests. It imports nothing from meshd, so the tests of
// any package (proxy/iptables included, which internal/testutil cannot serve: that
// imports proxy) can use it.
package netnstest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
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
