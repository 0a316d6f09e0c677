// Command meshbench measures what a sidecar costs per hop (added latency, CPU per
// request, memory) side by side with the proxies users would pick instead, or
// measures any HTTP URL (--target).
//
//	meshbench                      # ~40 s default comparison, report in ./bench-report-<time>/
//	meshbench --target URL         # open-loop and max-throughput load on one URL
//	meshbench --sweep              # rates × connections for every scenario
//	meshbench --meshd new --baseline-meshd old   # adds meshd-baseline (old) after meshd (new)
//	meshbench --proto h2c --streams 10   # h2c, 10 concurrent streams per connection (h2load -m 10)
//	meshbench --proto grpc               # unary gRPC calls by a grpc-go client
//	meshbench --tls --scenarios direct,meshd-2hop,haproxy-2hop   # the cost of a mutual-TLS hop, meshd next to haproxy
//
// `meshbench internal ...` is used by the harness itself to run its upstream and the
// httputil baseline as separate processes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meshd/meshd/bench"
	"golang.org/x/sys/unix"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "internal" {
		return bench.RunInternal(ctx, args[1:], stdout, stderr)
	}
	plan, dir, err := parsePlan(args, stderr)
	var fe flagError
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &fe):
		return 2 // the FlagSet has printed the error and the usage
	case err != nil:
		fmt.Fprintf(stderr, "meshbench: %v\n", err)
		return 2
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "meshbench: find own executable: %v\n", err)
		return 1
	}
	plan.Self = self
	plan.Progress = stderr
	f, isFile := stderr.(*os.File)
	plan.ProgressTTY = isFile && isTerminal(f)
	plan.Log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	return execute(ctx, plan, dir, stdout, stderr)
}

// flagError is a command-line error the FlagSet has already reported.
type flagError struct{ error }

// parsePlan turns the command line into the plan to run and the report directory
// (absolute; ./bench-report-<timestamp> by default). With no arguments it is the
// default ~40 s comparison. Self, Progress and Log are left for the caller. Errors
// are usage errors: flag.ErrHelp for -h, a flagError when the FlagSet has printed the
// problem, otherwise an error naming the flag and its value.
func parsePlan(args []string, stderr io.Writer) (bench.Plan, string, error) {
	fs := flag.NewFlagSet("meshbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	baselineFlag := strings.TrimPrefix(bench.BaselineMeshdFlag, "--")
	scenariosHelp := "comma-separated scenarios to compare; " + bench.ScenarioMeshdBaseline + " needs " + bench.BaselineMeshdFlag +
		", which also adds it to this default right after " + bench.ScenarioMeshd
	baselineHelp := "a second meshd binary (e.g. the build before a change), run as scenario " + bench.ScenarioMeshdBaseline +
		": the meshd scenario (same config and pinning) with this binary, interleaved with the others"
	var (
		target    = fs.String("target", "", "measure this http:// URL instead of the built-in scenarios (with --proto grpc its path is the method, / for "+bench.GRPCMethod+")")
		host      = fs.String("host", "", "with --target: the Host header to send (e.g. a virtual service name at a meshd egress port)")
		scenarios = fs.String("scenarios", strings.Join(bench.AllScenarios(), ","), scenariosHelp)
		protoS    = fs.String("proto", "h1", "protocol from the load generator: h1 (HTTP/1.1 keep-alive), h2c, or grpc (unary calls of "+bench.GRPCMethod+" by a grpc-go client, h2c to the upstream)")
		streams   = fs.Int("streams", 1, "requests in flight per connection, as h2load -m (h2c and grpc; 1 = one at a time, h2c then with the client of earlier runs)")
		rate      = fs.Float64("rate", 1000, "fixed-rate phase: total req/s, open loop (0 disables the phase)")
		conns     = fs.Int("connections", 8, "fixed-rate phase: connections")
		maxConns  = fs.Int("max-connections", 50, "max-throughput phase (closed loop): connections (0 disables the phase)")
		duration  = fs.Duration("duration", time.Second, "measured time per scenario, phase and round")
		warmup    = fs.Duration("warmup", 250*time.Millisecond, "unmeasured load before each measurement")
		rounds    = fs.Int("rounds", 2, "interleaved rounds (A B … A B …)")
		reqBody   = fs.Int("req-body", 0, "request body bytes (POST when > 0)")
		respBody  = fs.Int("resp-body", 63, "response body bytes of the built-in upstream")
		timeout   = fs.Duration("timeout", 5*time.Second, "per-request timeout")
		sweep     = fs.Bool("sweep", false, "sweep mode: every rate in --sweep-rates × every count in --sweep-connections, plus max throughput")
		sweepR    = fs.String("sweep-rates", "500,1000,2000,4000,8000,16000", "sweep mode: req/s list")
		sweepC    = fs.String("sweep-connections", "8,50", "sweep mode: connections list")
		cpus      = fs.String("cpus", "", "pin LOAD:PROXY:UPSTREAM to CPU lists, e.g. 0:1:1 or 0-1:2:3 (empty part = not pinned)")
		meshd     = fs.String("meshd", "", "meshd binary (default: beside meshbench, else on PATH)")
		baseline  = fs.String(baselineFlag, "", baselineHelp)
		out       = fs.String("out", "", "report directory (default ./bench-report-<timestamp>)")
		tlsHop    = fs.Bool(strings.TrimPrefix(bench.TLSFlag, "--"), false, "add after each two-hop scenario ("+bench.ScenarioMeshd2Hop+", "+bench.ScenarioHAProxy2Hop+
			") its twin with mutual TLS between the two proxies ("+bench.ScenarioMeshd2HopTLS+", "+bench.ScenarioHAProxy2HopTLS+
			"; certificates of a mesh CA made for the run), so the TLS hop's cost is measured in the same interleaved run")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: meshbench [flags]\n\nWith no flags: a ~40 s comparison of %s.\n", strings.Join(bench.AllScenarios(), ", "))
		fmt.Fprintf(stderr, "Before/after of a meshd change, as ratios to haproxy in one interleaved run:\n"+
			"  meshbench --cpus 0:1:1 --meshd bin/meshd %s /tmp/meshd-before --scenarios %s,%s,%s\n\n",
			bench.BaselineMeshdFlag, bench.ScenarioMeshdBaseline, bench.ScenarioMeshd, bench.ScenarioHAProxy)
		fmt.Fprintf(stderr, "Multiplexed HTTP/2 (10 streams per connection, as h2load -m 10) and unary gRPC:\n"+
			"  meshbench --cpus 0:1:1 --proto h2c --streams 10\n  meshbench --cpus 0:1:1 --proto grpc --streams 10\n\n")
		fmt.Fprintf(stderr, "The cost of a mutual-TLS hop between two sidecars, meshd next to haproxy (each with and without TLS):\n"+
			"  meshbench --cpus 0:1:1 %s --scenarios %s,%s,%s\n\n", bench.TLSFlag, bench.ScenarioDirect, bench.ScenarioMeshd2Hop, bench.ScenarioHAProxy2Hop)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return bench.Plan{}, "", err
		}
		return bench.Plan{}, "", flagError{err}
	}
	if fs.NArg() > 0 {
		return bench.Plan{}, "", fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	proto, err := bench.ParseProto(*protoS)
	if err != nil {
		return bench.Plan{}, "", fmt.Errorf("--proto: %w", err)
	}
	if *streams < 1 {
		return bench.Plan{}, "", fmt.Errorf("--streams %d: want ≥ 1", *streams)
	}
	if *streams > 1 && !proto.Multiplexes() {
		return bench.Plan{}, "", fmt.Errorf("--streams %d: --proto %s carries one request at a time per connection; use --proto h2c or grpc", *streams, proto)
	}
	// Sweep phase names say the streams when there are several.
	mSuffix := ""
	if *streams > 1 {
		mSuffix = fmt.Sprintf("-m%d", *streams)
	}
	plan := bench.Plan{Target: *target, TargetHost: *host, Rounds: *rounds, Proto: proto, ReqBody: *reqBody, RespBody: *respBody,
		Timeout: *timeout, Meshd: *meshd, BaselineMeshd: *baseline}
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "scenarios" })
	if explicit {
		for s := range strings.SplitSeq(*scenarios, ",") {
			if s = strings.TrimSpace(s); s != "" {
				plan.Scenarios = append(plan.Scenarios, s)
			}
		}
	} else {
		plan.Scenarios = bench.DefaultScenarios(*baseline != "")
	}
	if *tlsHop {
		if *target != "" {
			return bench.Plan{}, "", fmt.Errorf("%s adds TLS-hop scenarios, and --target %s measures one URL instead of any scenario: drop one of them", bench.TLSFlag, *target)
		}
		withTLS, err := bench.WithTLSTwins(plan.Scenarios)
		if err != nil {
			return bench.Plan{}, "", err
		}
		plan.Scenarios = withTLS
	}
	if *baseline != "" {
		if _, err := bench.CheckBaselineMeshd(*baseline); err != nil {
			return bench.Plan{}, "", err
		}
	} else if slices.Contains(plan.Scenarios, bench.ScenarioMeshdBaseline) {
		return bench.Plan{}, "", fmt.Errorf("--scenarios %s: %s needs %s PATH (the meshd binary to compare with --meshd's)",
			*scenarios, bench.ScenarioMeshdBaseline, bench.BaselineMeshdFlag)
	}
	if *cpus != "" {
		parts := strings.Split(*cpus, ":")
		if len(parts) != 3 {
			return bench.Plan{}, "", fmt.Errorf("--cpus %q: want LOAD:PROXY:UPSTREAM, e.g. 0:1:1", *cpus)
		}
		plan.CPUsLoad, plan.CPUsProxy, plan.CPUsUpstream = parts[0], parts[1], parts[2]
	}
	if *sweep {
		rates, err := floats(*sweepR)
		if err != nil {
			return bench.Plan{}, "", fmt.Errorf("--sweep-rates: %w", err)
		}
		cl, err := floats(*sweepC)
		if err != nil {
			return bench.Plan{}, "", fmt.Errorf("--sweep-connections: %w", err)
		}
		for _, c := range cl {
			for _, r := range rates {
				plan.Phases = append(plan.Phases, bench.Phase{Name: fmt.Sprintf("%g/s-c%d%s", r, int(c), mSuffix), Rate: r, Connections: int(c), Streams: *streams, Duration: *duration, Warmup: *warmup})
			}
			plan.Phases = append(plan.Phases, bench.Phase{Name: fmt.Sprintf("max-c%d%s", int(c), mSuffix), Connections: int(c), Streams: *streams, Duration: *duration, Warmup: *warmup})
		}
	} else {
		if *rate > 0 {
			plan.Phases = append(plan.Phases, bench.Phase{Name: fmt.Sprintf("fixed-%g", *rate), Rate: *rate, Connections: *conns, Streams: *streams, Duration: *duration, Warmup: *warmup})
		}
		if *maxConns > 0 {
			plan.Phases = append(plan.Phases, bench.Phase{Name: "max", Connections: *maxConns, Streams: *streams, Duration: *duration, Warmup: *warmup})
		}
	}
	dir := *out
	if dir == "" {
		dir = "bench-report-" + time.Now().Format("20060102-150405")
	}
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	plan.WorkDir = filepath.Join(dir, "configs")
	return plan, dir, nil
}

// execute runs plan, prints the table to stdout and writes the report into dir.
// It returns the exit code: 0, 1 on failure, 130 when ctx ended (Ctrl-C).
func execute(ctx context.Context, plan bench.Plan, dir string, stdout, stderr io.Writer) int {
	rep, err := bench.Compare(ctx, plan)
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(stderr, "meshbench: interrupted; all processes under test stopped")
			return 130
		}
		fmt.Fprintf(stderr, "meshbench: %v\n", err)
		if rep != nil {
			for _, s := range rep.Skipped {
				fmt.Fprintf(stderr, "  %s: %s\n", s.Scenario, s.Reason)
			}
		}
		return 1
	}
	if err := bench.WriteTable(stdout, rep, false); err != nil {
		fmt.Fprintf(stderr, "meshbench: %v\n", err)
		return 1
	}
	files, err := bench.WriteReport(dir, rep)
	if err != nil {
		fmt.Fprintf(stderr, "meshbench: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "\nReport written to %s/ (", dir)
	for i, f := range files {
		if i > 0 {
			fmt.Fprint(stdout, ", ")
		}
		fmt.Fprint(stdout, filepath.Base(f))
	}
	fmt.Fprintln(stdout, ", configs/)")
	return 0
}

func floats(s string) ([]float64, error) {
	var out []float64
	for p := range strings.SplitSeq(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("%q: want positive numbers separated by commas", s)
		}
		out = append(out, v)
	}
	return out, nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
