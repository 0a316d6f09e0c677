package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// binDir holds the meshd binary the process tests share; TestMain removes it.
var binDir struct {
	sync.Once
	dir string
	bin string
	err error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir.dir != "" {
		_ = os.RemoveAll(binDir.dir)
	}
	os.Exit(code)
}

// meshdBinary builds meshd once per test binary run; the binary lives until TestMain
// removes it after every test has run, so any test (and -count=N) may use it.
func meshdBinary(t *testing.T) string {
	t.Helper()
	binDir.Do(func() {
		binDir.dir, binDir.err = os.MkdirTemp("", "meshd-test-bin-")
		if binDir.err != nil {
			return
		}
		binDir.bin = filepath.Join(binDir.dir, "meshd")
		if out, err := exec.Command("go", "build", "-o", binDir.bin, ".").CombinedOutput(); err != nil {
			binDir.err = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if binDir.err != nil {
		t.Fatal(binDir.err)
	}
	return binDir.bin
}
