package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Phase is one load shape every scenario is measured under.
type Phase struct {
	Name        string
	Rate        float64 // req/s; 0 = closed-loop max throughput
	Connections int
	// Streams is the requests in flight per connection (LoadSpec.Streams): 0 or 1 one
	// at a time, more only with Plan.Proto h2c or grpc.
	Streams  int
	Duration time.Duration // measured, per round
	Warmup   time.Duration // per round, before each measurement
}

// Plan is one invocation of the harness.
type Plan struct {
	// Scale, when set, is the mesh-scale run (--scale, RunScale) instead of the
	// comparison; Meshd, CPUsProxy, Phases[0] (connections, duration, warm-up),
	// Timeout and WorkDir shape it.
	Scale *ScaleSpec
	// Scenarios to run side by side (see AllScenarios, KnownScenarios); ignored when
	// Target is set. The TLS-hop scenarios (IsTLSHop) get certificates of a mesh CA
	// made for the run, in WorkDir/tls.
	Scenarios []string
	// Target, when set, is a URL measured instead of the scenarios: shorthand for a
	// first Targets entry {URL: Target, Host: TargetHost}.
	Target string
	// TargetHost, when set, is sent as the Host (h2c: :authority) instead of the
	// target URL's, e.g. to reach a virtual service through a meshd egress port.
	TargetHost string
	// Targets are URLs measured, interleaved, instead of the scenarios (--target).
	Targets []TargetSpec
	// Baseline, when set with targets, is a URL measured alongside them as the row
	// ScenarioBaseline: the direct path to the same upstream, from which the targets'
	// added latency is counted (as the scenarios' from direct).
	Baseline string
	// Method overrides GET (POST with ReqBody); Headers go with every request (-H).
	// Neither with Proto grpc, whose method is the path.
	Method  string
	Headers []Header
	// CACert is a PEM file of the CAs that https targets' certificates are checked
	// against (default: the system's); Insecure skips the check. Both need an https
	// target.
	CACert   string
	Insecure bool
	Phases   []Phase
	// Rounds interleaves scenarios A B … A B … so that drift of the machine spreads
	// evenly over them; results are merged across rounds.
	Rounds int
	// Sweep marks the phases as a sweep (rates × connections), which draws
	// sweep.svg/png.
	Sweep    bool
	Proto    Proto
	ReqBody  int
	RespBody int
	Timeout  time.Duration // per request
	// Idle, when set, replaces the load comparison with the idle-connection
	// measurement (--idle-conns, RunIdle).
	Idle *IdlePlan

	// Self is the binary whose hidden `internal` subcommands (RunInternal) serve the
	// upstream and the httputil proxy; SelfEnv is added to their environment.
	Self    string
	SelfEnv []string
	// Meshd is the meshd binary ("" = look for one with FindMeshd).
	Meshd string
	// BaselineMeshd is the meshd binary of ScenarioMeshdBaseline, typically the build
	// before a change while Meshd is the build after it. Without it that scenario is
	// skipped.
	BaselineMeshd string
	// CPU lists to pin the load generator, the proxies and the upstream to ("" = none).
	CPUsLoad, CPUsProxy, CPUsUpstream string
	// WorkDir receives generated configs; a temporary directory when empty.
	WorkDir string

	// Progress receives a live progress line; TTY selects carriage-return updates.
	Progress    io.Writer
	ProgressTTY bool
	Log         *slog.Logger
}

// Compare starts the upstream and every scenario, measures them under each phase in
// interleaved rounds and returns the report. Scenarios that cannot run are listed in
// Report.Skipped. All child processes are stopped before it returns, also when ctx
// ends (Ctrl-C).
func Compare(ctx context.Context, plan Plan) (*Report, error) {
	if plan.Rounds <= 0 {
		plan.Rounds = 1
	}
	if plan.Proto == "" {
		plan.Proto = H1
	}
	if plan.Log == nil {
		plan.Log = slog.New(slog.DiscardHandler)
	}
	if len(plan.Phases) == 0 {
		return nil, errors.New("plan has no phases")
	}
	for _, ph := range plan.Phases {
		if ph.Connections <= 0 || ph.Duration <= 0 {
			return nil, fmt.Errorf("phase %q: connections %d and duration %v must be > 0", ph.Name, ph.Connections, ph.Duration)
		}
		if ph.Streams < 0 || ph.Streams > 1 && !plan.Proto.Multiplexes() {
			return nil, fmt.Errorf("phase %q: %d streams per connection: want 1 for %s (only h2c and grpc multiplex)", ph.Name, ph.Streams, plan.Proto)
		}
	}
	if err := CheckRequestOptions(plan); err != nil {
		return nil, err
	}
	rep := &Report{Harness: "meshbench", Started: time.Now().UTC(), Machine: ReadMachine(), Proto: string(plan.Proto),
		Rounds: plan.Rounds, Sweep: plan.Sweep, RespBody: plan.RespBody, ReqBody: plan.ReqBody,
		Pinning: pinningText(plan)}
	if plan.CPUsLoad != "" {
		if err := PinSelf(plan.CPUsLoad); err != nil {
			return nil, fmt.Errorf("pin load generator: %w", err)
		}
	}
	dir, cleanup, err := workDir(plan.WorkDir, "meshbench-")
	if err != nil {
		return nil, err
	}
	defer cleanup()

	var insts []*instance
	defer func() {
		for _, in := range insts {
			in.stop()
		}
	}()
	var upstream *Proc
	if targets := plan.allTargets(); len(targets) > 0 {
		if err := checkTargets(targets); err != nil {
			return nil, err
		}
		for _, ts := range targets {
			in, err := startTarget(ctx, plan, ts)
			if err != nil {
				return nil, err
			}
			insts = append(insts, in)
		}
	} else {
		if plan.Self == "" {
			return nil, errors.New("plan.Self: the harness binary is needed to run the upstream")
		}
		up, err := StartProc(ProcSpec{Name: "upstream", Argv: []string{plan.Self, "internal", "upstream", "--listen", "127.0.0.1:0",
			"--body-size", strconv.Itoa(plan.RespBody)}, Env: plan.SelfEnv, CPUs: plan.CPUsUpstream})
		if err != nil {
			return nil, err
		}
		defer func() { _ = up.Stop() }()
		upAddr, err := up.WaitListening(ctx, startTimeout)
		if err != nil {
			return nil, err
		}
		upstream = up
		e := &env{self: plan.Self, selfEnv: plan.SelfEnv, proto: plan.Proto, upstream: upAddr, dir: dir,
			cpusProxy: plan.CPUsProxy, log: plan.Log}
		if wants(plan.Scenarios, ScenarioMeshd, ScenarioMeshd2Hop, ScenarioMeshd2HopTLS) {
			if p, err := FindMeshd(plan.Meshd); err != nil {
				e.meshdWhy = err.Error()
			} else {
				e.meshd = p
				rep.MeshdBinary = p
			}
		}
		if wants(plan.Scenarios, ScenarioMeshdBaseline) {
			if p, err := CheckBaselineMeshd(plan.BaselineMeshd); err != nil {
				e.baselineWhy = err.Error()
			} else {
				e.baseline = p
				rep.BaselineMeshdBinary = p
			}
		}
		if wants(plan.Scenarios, ScenarioMeshd2HopTLS, ScenarioHAProxy2HopTLS) {
			if f, err := WriteTLSFiles(filepath.Join(dir, "tls")); err != nil {
				e.tlsWhy = err.Error()
			} else {
				e.tls = f
			}
		}
		for _, name := range plan.Scenarios {
			in, err := startScenario(ctx, name, e)
			if err == nil {
				// The middle hop is checked before anything else reaches it, so that its
				// handshake count at the end is the egress proxy's alone.
				if in.hop != nil {
					err = checkHop(ctx, in, e.tls)
				}
				if err == nil {
					err = smoke(ctx, plan, in)
				}
				if err != nil {
					in.stop()
				} else if in.hop != nil {
					rep.TLSHops = append(rep.TLSHops, in.hop.report)
				}
			}
			var skip *SkipError
			switch {
			case err == nil:
				insts = append(insts, in)
			case ctx.Err() != nil:
				return nil, ctx.Err()
			case errors.As(err, &skip):
				rep.Skipped = append(rep.Skipped, Skip{Scenario: name, Reason: skip.Reason})
				plan.Log.Info("scenario skipped", "scenario", name, "reason", skip.Reason)
			default:
				rep.Skipped = append(rep.Skipped, Skip{Scenario: name, Reason: "failed to start: " + err.Error()})
				plan.Log.Warn("scenario failed to start", "scenario", name, "err", err)
			}
		}
	}
	if len(insts) == 0 {
		return rep, errors.New("no scenario could run")
	}

	prog := newProgress(plan.Progress, plan.ProgressTTY)
	defer prog.stop()

	type key struct{ phase, inst int }
	acc := map[key]*PhaseResult{}
	total := plan.Rounds * len(plan.Phases) * len(insts)
	step := 0
	for round := range plan.Rounds {
		for pi, ph := range plan.Phases {
			for ii, in := range insts {
				step++
				k := key{pi, ii}
				pr := acc[k]
				if pr == nil {
					pr = newPhaseResult(plan, ph, in)
					acc[k] = pr
				}
				label := fmt.Sprintf("[%d/%d] round %d/%d %s %s", step, total, round+1, plan.Rounds, ph.Name, in.name)
				res, cpu, err := measure(ctx, plan, ph, in, upstream, prog, label)
				if err != nil {
					return nil, err
				}
				pr.add(res, cpu)
			}
		}
	}
	prog.stop()
	for _, in := range insts {
		if in.hop == nil {
			continue
		}
		n, err := in.hop.handshakes(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: TLS handshakes on the middle hop: %w", in.name, err)
		}
		in.hop.report.Handshakes = n - in.hop.before
	}
	for pi := range plan.Phases {
		var direct *PhaseResult
		for ii := range insts {
			if pr := acc[key{pi, ii}]; pr.Scenario == ScenarioDirect || insts[ii].baseline {
				direct = pr
			}
		}
		for ii, in := range insts {
			pr := acc[key{pi, ii}]
			for _, pid := range in.pids() {
				if st, err := ReadProcTree(pid); err == nil {
					pr.ProxyPeakRSSBytes = max(pr.ProxyPeakRSSBytes, st.HWM)
					pr.ProxyPeakRSSTotal += st.HWM
				}
			}
			pr.finish(direct)
			rep.Results = append(rep.Results, pr)
		}
	}
	return rep, nil
}

func wants(list []string, names ...string) bool {
	for _, l := range list {
		for _, n := range names {
			if l == n {
				return true
			}
		}
	}
	return false
}

func pinningText(plan Plan) string {
	if plan.CPUsLoad == "" && plan.CPUsProxy == "" && plan.CPUsUpstream == "" {
		return "none"
	}
	or := func(s string) string {
		if s == "" {
			return "any"
		}
		return s
	}
	return fmt.Sprintf("load generator cpus %s, proxies cpus %s, upstream cpus %s", or(plan.CPUsLoad), or(plan.CPUsProxy), or(plan.CPUsUpstream))
}

// smoke sends one request with each client the phases use (one at a time, and
// multiplexed when a phase has Streams > 1) so that a scenario that answers wrongly is
// reported as failed rather than measured.
func smoke(ctx context.Context, plan Plan, in *instance) error {
	t := target{addr: in.addr, host: in.host, path: pathOr(in.path), reqBody: plan.ReqBody, method: plan.Method, headers: plan.Headers, tls: in.tls}
	want := 200
	if plan.Proto == GRPC {
		want = 0 // status OK
	}
	kinds := map[bool]bool{}
	for _, ph := range plan.Phases {
		kinds[ph.Streams > 1] = true
	}
	for _, multi := range []bool{false, true} {
		if !kinds[multi] {
			continue
		}
		streams, what := 1, "first request"
		if multi {
			streams, what = 2, "first multiplexed request"
		}
		rs := connRequesters(plan.Proto, streams, t)
		status, err := rs[0].do(ctx, time.Now().Add(5*time.Second))
		for _, r := range rs {
			r.close()
		}
		if err != nil {
			return fmt.Errorf("%s: %s: %w", in.name, what, err)
		}
		if status != want {
			return fmt.Errorf("%s: %s: status %d", in.name, what, status)
		}
	}
	return nil
}

func pathOr(p string) string {
	if p == "" {
		return "/"
	}
	return p
}

// cpuWindow is CPU time spent during one measured window, and the window's length.
type cpuWindow struct {
	proxy, upstream, loadgen time.Duration
	wall                     time.Duration
}

func measure(ctx context.Context, plan Plan, ph Phase, in *instance, upstream *Proc, prog *progress, label string) (*Result, cpuWindow, error) {
	var cpu cpuWindow
	var mu sync.Mutex
	read := func() cpuWindow {
		var w cpuWindow
		for _, pid := range in.pids() {
			if st, err := ReadProcTree(pid); err == nil {
				w.proxy += st.CPU
			}
		}
		if upstream != nil {
			if st, err := ReadProcTree(upstream.PID()); err == nil {
				w.upstream = st.CPU
			}
		}
		if c, ok := readSchedstat(os.Getpid()); ok {
			w.loadgen = c
		} else if c, _, err := readStat(os.Getpid()); err == nil {
			w.loadgen = c
		}
		return w
	}
	var before cpuWindow
	var startedAt time.Time
	live := &Live{}
	prog.set(label, live, ph)
	spec := LoadSpec{Addr: in.addr, Host: in.host, Path: in.path, Proto: plan.Proto, Connections: ph.Connections, Streams: ph.Streams,
		Rate: ph.Rate, Duration: ph.Duration, Warmup: ph.Warmup, ReqBody: plan.ReqBody, Method: plan.Method, Headers: plan.Headers, TLS: in.tls, Timeout: plan.Timeout, Live: live,
		AtMeasure: func(start bool) {
			w := read()
			mu.Lock()
			defer mu.Unlock()
			if start {
				before, startedAt = w, time.Now()
				return
			}
			cpu = cpuWindow{proxy: w.proxy - before.proxy, upstream: w.upstream - before.upstream, loadgen: w.loadgen - before.loadgen,
				wall: time.Since(startedAt)}
		}}
	res, err := Run(ctx, spec)
	prog.done(label, res)
	if err != nil {
		return nil, cpu, fmt.Errorf("%s: %w", label, err)
	}
	mu.Lock()
	defer mu.Unlock()
	return res, cpu, nil
}

func newPhaseResult(plan Plan, ph Phase, in *instance) *PhaseResult {
	qps := "max"
	if ph.Rate > 0 {
		qps = strconv.FormatFloat(ph.Rate, 'f', -1, 64)
	}
	u := "http://" + in.addr + pathOr(in.path)
	if in.url != "" {
		u = in.url
	}
	return &PhaseResult{RunType: "HTTP", Labels: in.name + " " + ph.Name, StartTime: time.Now().UTC(),
		RequestedQPS: qps, RequestedDuration: (ph.Duration * time.Duration(plan.Rounds)).String(), NumThreads: ph.Connections,
		URL: u, Version: "meshbench", Scenario: in.name, Phase: ph.Name, Proto: rowProto(plan.Proto, in.tls != nil),
		Rate: ph.Rate, Connections: ph.Connections, Streams: max(ph.Streams, 1), Proxies: len(in.pids()),
		res: newResult(ph.Rate > 0), LoadgenCPUs: loadCPUs()}
}

// loadCPUs is how many CPUs the load generator can run on: its affinity mask as the
// kernel applied it (a --cpus list naming CPUs that are not online counts only those
// that are), at most GOMAXPROCS (which Go derives from a cgroup's CPU quota).
func loadCPUs() int {
	n := runtime.GOMAXPROCS(0)
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err == nil && set.Count() > 0 {
		n = min(n, set.Count())
	}
	return n
}

// rowProto names what a row's load spoke: the protocol, over TLS for https targets
// (h2c over TLS is h2).
func rowProto(p Proto, overTLS bool) string {
	switch {
	case !overTLS:
		return string(p)
	case p == H2C:
		return "h2"
	}
	return string(p) + "+tls"
}

// ReadMachine describes the machine for the report.
func ReadMachine() Machine {
	m := Machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// workDir is dir, created if need be, or a temporary directory named by prefix that
// cleanup removes (cleanup does nothing for a given dir: the caller keeps it).
func workDir(dir, prefix string) (string, func(), error) {
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", nil, fmt.Errorf("work dir %s: %w", dir, err)
		}
		return dir, func() {}, nil
	}
	d, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", nil, fmt.Errorf("work dir: %w", err)
	}
	return d, func() { os.RemoveAll(d) }, nil
}
