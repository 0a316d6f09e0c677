package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/meshd/meshd/bench"
)

// idleFlags are the flags that apply to --idle-conns; every other one shapes the load
// comparison, which --idle-conns replaces, and is refused rather than ignored.
var idleFlags = []string{"idle-conns", "idle-settle", "scenarios", "meshd", "timeout", "out"}

// idleMode turns the plan into the idle-connection measurement when --idle-conns is
// set (n > 0), refusing the flags that do not apply to it.
func idleMode(fs *flag.FlagSet, plan *bench.Plan, n int, settle time.Duration, explicitScenarios bool) error {
	var err error
	fs.Visit(func(f *flag.Flag) {
		if err == nil && f.Name == "idle-settle" && n <= 0 {
			err = fmt.Errorf("--idle-settle %s: applies to --idle-conns, which is not set", f.Value)
		}
		if err == nil && n > 0 && !slices.Contains(idleFlags, f.Name) {
			err = fmt.Errorf("--%s %s: shapes the load comparison, which --idle-conns replaces (it takes only --%s)", f.Name, f.Value, joinFlags(idleFlags[1:]))
		}
	})
	if err != nil || n == 0 {
		return err
	}
	if n < 0 {
		return fmt.Errorf("--idle-conns %d: want > 0", n)
	}
	if settle < 0 {
		return fmt.Errorf("--idle-settle %v: want ≥ 0", settle)
	}
	scen := []string{bench.ScenarioMeshd, bench.ScenarioHAProxy}
	if explicitScenarios {
		scen = plan.Scenarios
		for _, s := range scen {
			if s != bench.ScenarioMeshd && s != bench.ScenarioHAProxy {
				return fmt.Errorf("--scenarios %s: --idle-conns measures %s and %s only", s, bench.ScenarioMeshd, bench.ScenarioHAProxy)
			}
		}
	}
	plan.Idle = &bench.IdlePlan{Conns: n, Settle: settle, Scenarios: scen, Meshd: plan.Meshd, Timeout: plan.Timeout, WorkDir: plan.WorkDir}
	return nil
}

func joinFlags(fs []string) string {
	s := ""
	for i, f := range fs {
		if i > 0 {
			s += ", --"
		}
		s += f
	}
	return s
}

// executeIdle runs the idle-connection measurement: the table on stdout, idle.json in
// dir.
func executeIdle(ctx context.Context, plan bench.Plan, dir string, stdout, stderr io.Writer) int {
	ip := *plan.Idle
	ip.Self, ip.SelfEnv, ip.Log, ip.Progress = plan.Self, plan.SelfEnv, plan.Log, stderr
	rs, err := bench.RunIdle(ctx, ip)
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(stderr, "meshbench: interrupted; all processes under test stopped")
			return 130
		}
		fmt.Fprintf(stderr, "meshbench: %v\n", err)
		return 1
	}
	if err := bench.WriteIdleTable(stdout, rs); err != nil {
		fmt.Fprintf(stderr, "meshbench: %v\n", err)
		return 1
	}
	b, err := json.MarshalIndent(struct {
		Started string             `json:"started"`
		Machine bench.Machine      `json:"machine"`
		Results []bench.IdleResult `json:"idle"`
	}{time.Now().UTC().Format(time.RFC3339), bench.ReadMachine(), rs}, "", "  ")
	if err == nil {
		if err = os.MkdirAll(dir, 0o755); err == nil {
			err = os.WriteFile(filepath.Join(dir, "idle.json"), append(b, '\n'), 0o644)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "meshbench: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "\nReport written to %s/idle.json\n", dir)
	for _, r := range rs {
		if r.Failed > 0 {
			return 1
		}
	}
	return 0
}
