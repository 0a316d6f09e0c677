// Command meshbench measures what a sidecar costs per hop (added latency, CPU per
// request, memory) side by side with the proxies users would pick instead, or
// measures any HTTP URL (--target).
//
//	meshbench                      # ~40 s default comparison, report in ./bench-report-<time>/
//	meshbench --target URL         # open-loop and max-throughput load on one URL
//	meshbench --target URL --label meshd --target-pid PID --baseline DIRECT_URL   # CPU, RSS and added latency of the proxy at URL
//	meshbench --target URL1,label=a,pid=P1 --target URL2,label=b,cmd='envoy -c e.yaml'   # several targets, interleaved
//	meshbench compare A/report.json B/report.json   # ratios and differences of saved runs
//	meshbench --sweep              # rates × connections for every scenario
//	meshbench --meshd new --baseline-meshd old   # adds meshd-baseline (old) after meshd (new)
//	meshbench --proto h2c --streams 10   # h2c, 10 concurrent streams per connection (h2load -m 10)
//	meshbench --proto grpc               # unary gRPC calls by a grpc-go client
//	meshbench --tls --scenarios direct,meshd-2hop,haproxy-2hop   # the cost of a mutual-TLS hop, meshd next to haproxy
//	meshbench --idle-conns 10000   # RSS of meshd (and haproxy) holding 10,000 idle keep-alive clients
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
	"maps"
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
	if len(args) > 0 && args[0] == "compare" {
		return runCompare(args[1:], stdout, stderr)
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
	if plan.Idle != nil {
		return executeIdle(ctx, plan, dir, stdout, stderr)
	}
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
	var targets multiFlag
	fs.Var(&targets, "target", "measure this http:// or https:// URL instead of the built-in scenarios (https: TLS offering ALPN http/1.1, or h2 with --proto h2c/h2 or grpc; with --proto grpc its path is the method, / for "+bench.GRPCMethod+"); "+
		"repeat for several targets in one interleaved run, each as URL[,label=NAME][,host=HOST][,pid=PID][,cmd=CMD ARGS] (cmd last, split on spaces, no shell)")
	var headers multiFlag
	fs.Var(&headers, "H", "a request header 'Name: value' sent with every request (repeatable; not with --proto grpc)")
	var (
		method    = fs.String("method", "", "request method (default GET, POST with --req-body)")
		cacert    = fs.String("cacert", "", "with an https --target: PEM file of the CAs its certificate is checked against (default: the system's)")
		insecureF = fs.Bool("insecure", false, "with an https --target: do not check its certificate")
		host      = fs.String("host", "", "with --target: the Host header to send (e.g. a virtual service name at a meshd egress port), for targets without host=")
		label     = fs.String("label", "", "with one --target: the row name (default: the URL)")
		targetPID = fs.Int("target-pid", 0, "with one --target: the process (with its children) whose CPU and RSS are the row's, e.g. the proxy the URL points at")
		targetCmd = fs.String("target-cmd", "", "with one --target: a command (split on spaces, no shell) meshbench starts before measuring, waits for until the URL's port accepts connections, and stops at the end; its CPU and RSS are the row's")
		baseURL   = fs.String("baseline", "", "with --target: the direct URL of the same upstream, measured in the same run as row "+bench.ScenarioBaseline+"; the targets' added latency (+p50, +p99) is counted from it")
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
		idleConns = fs.Int("idle-conns", 0, "instead of the load comparison: open this many HTTP/1.1 keep-alive clients through meshd (and haproxy when on PATH), one request each, leave them idle for --idle-settle, report each proxy's RSS (total and per connection) and check every client is answered again; with --scenarios meshd,haproxy, --meshd, --timeout, --out")
		settle    = fs.Duration("idle-settle", 5*time.Second, "with --idle-conns: how long the clients stay idle before the RSS is read")
		tlsHop    = fs.Bool(strings.TrimPrefix(bench.TLSFlag, "--"), false, "add after each two-hop scenario ("+bench.ScenarioMeshd2Hop+", "+bench.ScenarioHAProxy2Hop+
			") its twin with mutual TLS between the two proxies ("+bench.ScenarioMeshd2HopTLS+", "+bench.ScenarioHAProxy2HopTLS+
			"; certificates of a mesh CA made for the run), so the TLS hop's cost is measured in the same interleaved run")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: meshbench [flags]\n       meshbench compare [--out DIR] A/report.json B/report.json [...]   (saved runs side by side)\n\nWith no flags: a ~40 s comparison of %s.\n", strings.Join(bench.AllScenarios(), ", "))
		fmt.Fprintf(stderr, "Before/after of a meshd change, as ratios to haproxy in one interleaved run:\n"+
			"  meshbench --cpus 0:1:1 --meshd bin/meshd %s /tmp/meshd-before --scenarios %s,%s,%s\n\n",
			bench.BaselineMeshdFlag, bench.ScenarioMeshdBaseline, bench.ScenarioMeshd, bench.ScenarioHAProxy)
		fmt.Fprintf(stderr, "Multiplexed HTTP/2 (10 streams per connection, as h2load -m 10) and unary gRPC:\n"+
			"  meshbench --cpus 0:1:1 --proto h2c --streams 10\n  meshbench --cpus 0:1:1 --proto grpc --streams 10\n\n")
		fmt.Fprintf(stderr, "The cost of a mutual-TLS hop between two sidecars, meshd next to haproxy (each with and without TLS):\n"+
			"  meshbench --cpus 0:1:1 %s --scenarios %s,%s,%s\n\n", bench.TLSFlag, bench.ScenarioDirect, bench.ScenarioMeshd2Hop, bench.ScenarioHAProxy2Hop)
		fmt.Fprintf(stderr, "A proxy of your own, its CPU and RSS measured, its added latency over the direct path:\n"+
			"  meshbench --target http://127.0.0.1:15001/ --label my-proxy --target-pid $(pidof my-proxy) --baseline http://127.0.0.1:8080/\n"+
			"Several targets in one interleaved run (--target URL[,label=NAME][,host=HOST][,pid=PID][,cmd=CMD ARGS], cmd last):\n"+
			"  meshbench --baseline http://127.0.0.1:8080/ --target http://127.0.0.1:15001/,label=meshd,pid=123 --target 'http://127.0.0.1:10000/,label=envoy,cmd=envoy -c envoy.yaml'\n\n")
		fmt.Fprintf(stderr, "Memory of idle keep-alive clients (one request each, then idle), meshd next to haproxy:\n"+
			"  meshbench --idle-conns 10000\n\n")
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
	plan := bench.Plan{Baseline: *baseURL, Method: *method, CACert: *cacert, Insecure: *insecureF, Rounds: *rounds, Proto: proto, ReqBody: *reqBody, RespBody: *respBody,
		Timeout: *timeout, Meshd: *meshd, BaselineMeshd: *baseline}
	for _, raw := range headers {
		h, err := bench.ParseHeader(raw)
		if err != nil {
			return bench.Plan{}, "", err
		}
		plan.Headers = append(plan.Headers, h)
	}
	for _, raw := range targets {
		ts, err := bench.ParseTarget(raw)
		if err != nil {
			return bench.Plan{}, "", err
		}
		if ts.Host == "" {
			ts.Host = *host
		}
		plan.Targets = append(plan.Targets, ts)
	}
	if err := applySingleTarget(plan.Targets, *label, *targetPID, *targetCmd); err != nil {
		return bench.Plan{}, "", err
	}
	if *host != "" && len(targets) == 0 {
		return bench.Plan{}, "", fmt.Errorf("--host %s: sets the Host sent to a --target; there is none", *host)
	}
	if *baseURL != "" && len(targets) == 0 {
		return bench.Plan{}, "", fmt.Errorf("--baseline %s: the direct path for --target's added latency; there is no --target (the scenarios' is %s)", *baseURL, bench.ScenarioDirect)
	}
	if err := bench.CheckRequestOptions(plan); err != nil {
		return bench.Plan{}, "", err
	}
	explicit := false
	var err2 error
	fs.Visit(func(f *flag.Flag) {
		explicit = explicit || f.Name == "scenarios"
		// These shape the built-in scenarios, which a --target run replaces.
		if len(targets) > 0 && err2 == nil && slices.Contains([]string{"scenarios", baselineFlag, "meshd", "resp-body"}, f.Name) {
			err2 = fmt.Errorf("--%s %s: shapes the built-in scenarios, and --target replaces them: drop one of them", f.Name, f.Value)
		}
	})
	if err2 != nil {
		return bench.Plan{}, "", err2
	}
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
		if len(targets) > 0 {
			return bench.Plan{}, "", fmt.Errorf("%s adds TLS-hop scenarios, and --target %s measures one URL instead of any scenario: drop one of them", bench.TLSFlag, targets[0])
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
		if len(plan.Targets) > 0 && parts[2] != "" {
			return bench.Plan{}, "", fmt.Errorf("--cpus %q: with --target there is no built-in upstream to pin; use LOAD:PROXY: (PROXY pins the targets' cmd= processes)", *cpus)
		}
	}
	if *sweep {
		plan.Sweep = true
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
	if err := idleMode(fs, &plan, *idleConns, *settle, explicit); err != nil {
		return bench.Plan{}, "", err
	}
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
		// fortio/ and hlog/ hold one file per scenario and phase: name the directories.
		rel, err := filepath.Rel(dir, f)
		if err != nil {
			rel = f
		}
		fmt.Fprint(stdout, rel)
	}
	fmt.Fprintln(stdout, ", configs/)")
	return 0
}

// runCompare is `meshbench compare [--out DIR] A.json B.json [...]`: the table on
// stdout, compare.md and compare.svg/png in DIR.
func runCompare(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("meshbench compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "directory for compare.md and compare.svg/png (default ./bench-compare-<timestamp>)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: meshbench compare [--out DIR] A/report.json B/report.json [...]\n\n"+
			"Sets two or more saved runs side by side: per scenario and phase, req/s, p50, p99, CPU/req and RSS of each,\n"+
			"and each later run's ratio to A and difference from A; a table on stdout, compare.md and a bar chart of the ratios in DIR.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() < 2 {
		fmt.Fprintf(stderr, "meshbench compare: %d report(s) given, want two or more report.json files\n", fs.NArg())
		return 2
	}
	var reps []*bench.Report
	for _, p := range fs.Args() {
		rep, err := bench.ReadReport(p)
		if err != nil {
			fmt.Fprintf(stderr, "meshbench compare: %v\n", err)
			return 1
		}
		reps = append(reps, rep)
	}
	d, err := bench.DiffReports(fs.Args(), reps)
	if err == nil {
		err = bench.WriteDiff(stdout, d, false)
	}
	if err != nil {
		fmt.Fprintf(stderr, "meshbench compare: %v\n", err)
		return 1
	}
	dir := *out
	if dir == "" {
		dir = "bench-compare-" + time.Now().Format("20060102-150405")
	}
	files, err := bench.WriteDiffReport(dir, d)
	if err != nil {
		fmt.Fprintf(stderr, "meshbench compare: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "\nWritten: %s\n", strings.Join(files, ", "))
	return 0
}

// multiFlag collects a repeatable flag's values.
type multiFlag []string

func (m *multiFlag) String() string { return strings.Join(*m, " ") }

func (m *multiFlag) Set(v string) error {
	*m = append(*m, v)
	return nil
}

// applySingleTarget applies --label, --target-pid and --target-cmd, the one-target
// forms of label=, pid= and cmd=, to the only target; with several they would be
// ambiguous and are refused.
func applySingleTarget(ts []bench.TargetSpec, label string, pid int, cmd string) error {
	set := map[string]string{}
	if label != "" {
		set["--label"] = label
	}
	if pid != 0 {
		set["--target-pid"] = strconv.Itoa(pid)
	}
	if cmd != "" {
		set["--target-cmd"] = cmd
	}
	for _, f := range slices.Sorted(maps.Keys(set)) {
		switch {
		case len(ts) == 0:
			return fmt.Errorf("%s %s: applies to a --target; there is none", f, set[f])
		case len(ts) > 1:
			return fmt.Errorf("%s %s: with %d targets it is ambiguous; give each --target its own label=, pid= or cmd=", f, set[f], len(ts))
		}
	}
	if len(ts) != 1 {
		return nil
	}
	t := &ts[0]
	if label != "" {
		t.Label = label
	}
	if pid < 0 {
		return fmt.Errorf("--target-pid %d: want a process id", pid)
	}
	if pid > 0 {
		t.PID = pid
	}
	if cmd != "" {
		t.Cmd = strings.Fields(cmd)
	}
	if t.PID > 0 && len(t.Cmd) > 0 {
		return fmt.Errorf("--target-pid %d and --target-cmd %q both name the target's process: give one", t.PID, cmd)
	}
	return nil
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
