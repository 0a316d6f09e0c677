package bench

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"testing"

	"go.uber.org/goleak"
)

// internalEnv makes the test binary act as `meshbench internal ...` so that Compare
// can start the upstream and the httputil proxy as separate processes in tests.
const internalEnv = "MESHBENCH_TEST_INTERNAL"

func TestMain(m *testing.M) {
	if os.Getenv(internalEnv) == "1" && len(os.Args) > 2 && os.Args[1] == "internal" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		code := RunInternal(ctx, os.Args[2:], os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	goleak.VerifyTestMain(m)
}

func selfPlan(t *testing.T) Plan {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	selfEnv := []string{internalEnv + "=1"}
	if _, set := os.LookupEnv("GORACE"); !set {
		// Under -race each child would sleep 1 s at exit, and Compare stops them one by one.
		selfEnv = append(selfEnv, "GORACE=atexit_sleep_ms=0")
	}
	return Plan{Self: exe, SelfEnv: selfEnv, RespBody: 63, Rounds: 1}
}
