package proxy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// externalTool finds the program name for a test that drives meshd with a real
// third-party client (h2spec, curl, h2load): env (when not "") names it outright, then
// PATH, then Go's install directories ($GOBIN, $GOPATH/bin, ~/go/bin). When it is
// missing the test is skipped with how to install it, except under CI=true, where a
// missing tool fails the test: CI installs every one of them (.ci/run), and a suite that
// silently skipped its conformance checks would prove nothing.
func externalTool(t *testing.T, name, env, install string) string {
	t.Helper()
	if env != "" {
		if p := os.Getenv(env); p != "" {
			if _, err := os.Stat(p); err != nil {
				t.Fatalf("$%s=%s: %v", env, p, err)
			}
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	var dirs []string
	if d := os.Getenv("GOBIN"); d != "" {
		dirs = append(dirs, d)
	}
	if d := os.Getenv("GOPATH"); d != "" {
		dirs = append(dirs, filepath.Join(filepath.SplitList(d)[0], "bin"))
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "go", "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	where := "PATH, $GOBIN, $GOPATH/bin or ~/go/bin"
	if env != "" {
		where = "$" + env + ", " + where
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not found (%s) and CI=true: install it with `%s` (.ci/run does)", name, where, install)
	}
	t.Skipf("%s not found (%s); install it with `%s`", name, where, install)
	return ""
}
