package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The idle-connection measurement (meshbench --idle-conns N, issue 17): N HTTP/1.1
// keep-alive clients each send one request through the proxy and then stay idle; the
// proxy's resident memory is read once they have settled, and then every client sends
// a second request, which must be answered. It costs the proxy no CPU worth measuring:
// it runs no load at all, so it does not disturb other measurements on the machine.

// IdlePlan is one idle-connection measurement.
type IdlePlan struct {
	Conns   int      // idle clients per proxy
	Self    string   // the harness binary (runs the upstream)
	SelfEnv []string // added to Self's environment
	Meshd   string   // meshd binary ("" : beside the harness, else on PATH)
	// Scenarios are the proxies measured, one after the other (meshd, haproxy); a
	// proxy that cannot run here is skipped with its reason.
	Scenarios []string
	// Settle is the wait between the last client's first answer and the RSS reading:
	// meshd's idle connections give their buffers back after a hold and park after it.
	Settle   time.Duration
	Timeout  time.Duration // per connect, request and answer
	WorkDir  string
	Log      *slog.Logger
	Progress io.Writer // nil: quiet

	nofile uint64 // the fd limit RunIdle raised
}

// IdleResult is one proxy's figures.
type IdleResult struct {
	Scenario string `json:"scenario"`
	Conns    int    `json:"conns"`
	// RSSStart is the proxy's VmRSS (bytes) after its start and one request; RSSIdle
	// with the clients idle after the settle.
	RSSStart uint64 `json:"rss_start_bytes"`
	RSSIdle  uint64 `json:"rss_idle_bytes"`
	// PerConnKiB is (RSSIdle - RSSStart) / Conns in KiB.
	PerConnKiB float64 `json:"per_conn_kib"`
	// Answered counts the second requests answered 200 after the idle; Failed the
	// others (the first error in Err).
	Answered int    `json:"answered"`
	Failed   int    `json:"failed"`
	Err      string `json:"error,omitempty"`
	Skipped  string `json:"skipped,omitempty"`
}

// IdleClients is a set of open keep-alive connections, each of which was answered once.
type IdleClients struct {
	conns []*idleConn
}

type idleConn struct {
	c  net.Conn
	br *bufio.Reader
}

// idleDialers bounds the connections being set up at once: enough to open 10,000 in
// seconds, few enough not to overrun a listen backlog.
const idleDialers = 64

// OpenIdle opens n connections to addr, sends one GET with Host host on each and
// reads its answer (which must be 200), and keeps them open. It stops at the first
// failure, closing what it opened.
func OpenIdle(ctx context.Context, addr, host string, n int, timeout time.Duration) (*IdleClients, error) {
	ic := &IdleClients{conns: make([]*idleConn, n)}
	err := ic.each(ctx, n, func(i int) error {
		d := net.Dialer{Timeout: timeout}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		// A small reader: the client's own memory is not what is measured, but 10,000
		// default-sized readers would be 40 MB of the machine's.
		cn := &idleConn{c: c, br: bufio.NewReaderSize(c, 512)}
		ic.conns[i] = cn
		return cn.get(host, timeout)
	})
	if err != nil {
		ic.Close()
		return nil, err
	}
	return ic, nil
}

// Len is the number of open connections.
func (ic *IdleClients) Len() int { return len(ic.conns) }

// Check sends a second GET on every connection and counts the 200 answers; err is the
// first failure's.
func (ic *IdleClients) Check(ctx context.Context, host string, timeout time.Duration) (ok, failed int, err error) {
	var mu sync.Mutex
	var first error
	_ = ic.each(ctx, len(ic.conns), func(i int) error {
		e := ic.conns[i].get(host, timeout)
		mu.Lock()
		defer mu.Unlock()
		if e != nil {
			failed++
			if first == nil {
				first = fmt.Errorf("connection %d: %w", i, e)
			}
		} else {
			ok++
		}
		return nil
	})
	return ok, failed, first
}

// Close closes every connection.
func (ic *IdleClients) Close() {
	for _, c := range ic.conns {
		if c != nil {
			_ = c.c.Close()
		}
	}
}

// each runs f(0..n-1) on idleDialers goroutines, stopping at the first error.
func (ic *IdleClients) each(ctx context.Context, n int, f func(i int) error) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		next int
		err  error
	)
	for range min(idleDialers, n) {
		wg.Go(func() {
			for {
				mu.Lock()
				if err != nil || ctx.Err() != nil || next == n {
					mu.Unlock()
					return
				}
				i := next
				next++
				mu.Unlock()
				if e := f(i); e != nil {
					mu.Lock()
					if err == nil {
						err = fmt.Errorf("connection %d: %w", i, e)
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if err == nil {
		err = ctx.Err()
	}
	return err
}

// get sends one GET and reads a Content-Length answer, which must be 200.
func (c *idleConn) get(host string, timeout time.Duration) error {
	_ = c.c.SetDeadline(time.Now().Add(timeout))
	defer c.c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c.c, "GET / HTTP/1.1\r\nHost: "+host+"\r\n\r\n"); err != nil {
		return err
	}
	line, err := c.br.ReadString('\n')
	if err != nil {
		return fmt.Errorf("reading the status line: %w", err)
	}
	status := strings.Fields(line)
	if len(status) < 2 || status[1] != "200" {
		return fmt.Errorf("answer %q, want 200", strings.TrimSpace(line))
	}
	length := -1
	for {
		h, err := c.br.ReadString('\n')
		if err != nil {
			return fmt.Errorf("reading the head: %w", err)
		}
		h = strings.TrimRight(h, "\r\n")
		if h == "" {
			break
		}
		if name, v, ok := strings.Cut(h, ":"); ok && strings.EqualFold(name, "content-length") {
			if length, err = strconv.Atoi(strings.TrimSpace(v)); err != nil {
				return fmt.Errorf("content-length %q: %w", v, err)
			}
		}
	}
	if length < 0 {
		return errors.New("answer without content-length")
	}
	_, err = c.br.Discard(length)
	return err
}

// RaiseNoFile raises this process's soft RLIMIT_NOFILE to its hard limit and returns
// it. The proxies it starts inherit it (a Setrlimit of the program's own stops Go from
// restoring the original soft limit in children).
func RaiseNoFile() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("getrlimit: %w", err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("setrlimit NOFILE %d: %w", lim.Max, err)
	}
	return lim.Cur, nil
}

// CheckIdleConns checks that n idle clients fit the fd limit: the harness holds n
// descriptors, and so does the proxy, plus its upstream connections and its own.
func CheckIdleConns(n int, nofile uint64) error {
	if n <= 0 {
		return fmt.Errorf("--idle-conns %d: want > 0", n)
	}
	if need := uint64(n) + 256; need > nofile {
		return fmt.Errorf("--idle-conns %d: needs about %d file descriptors per process and the hard RLIMIT_NOFILE is %d (raise it: ulimit -Hn, or prlimit)", n, need, nofile)
	}
	return nil
}

// readRSS is VmRSS of pid in bytes.
func readRSS(pid int) (uint64, error) {
	rss, _, err := readRSSHWM(pid)
	return rss, err
}

// treeRSS sums VmRSS over the instance's processes (a taskset parent execs, so each
// PID is the proxy itself).
func treeRSS(in *instance) (uint64, error) {
	var sum uint64
	for _, pid := range in.pids() {
		r, err := readRSS(pid)
		if err != nil {
			return 0, err
		}
		sum += r
	}
	return sum, nil
}

// perConnKiB is the growth from start to idle per connection, in KiB.
func perConnKiB(start, idle uint64, n int) float64 {
	if n <= 0 || idle < start {
		return 0
	}
	return float64(idle-start) / float64(n) / 1024
}

// idleHAProxyConfig is HAProxyConfig with room for n clients (its maxconn is sized for
// the load phases otherwise). HAProxy reserves two descriptors per connection (client
// and server side) and refuses to start when the fd limit is below that; with
// http-reuse the idle clients share a few server connections, so its limit is the
// process's (ulimit-n) and the check a warning (no strict-limits).
func idleHAProxyConfig(port int, upstream string, n int, nofile uint64) string {
	return strings.Replace(HAProxyConfig(port, upstream, H1), "maxconn 4096",
		"maxconn "+strconv.Itoa(n+256)+"\n    ulimit-n "+strconv.FormatUint(nofile, 10)+"\n    no strict-limits", 1)
}

// RunIdle measures plan.Scenarios one after the other against one built-in upstream.
func RunIdle(ctx context.Context, plan IdlePlan) ([]IdleResult, error) {
	if plan.Log == nil {
		plan.Log = slog.New(slog.DiscardHandler)
	}
	if plan.Timeout <= 0 {
		plan.Timeout = 10 * time.Second
	}
	nofile, err := RaiseNoFile()
	if err != nil {
		return nil, err
	}
	if err := CheckIdleConns(plan.Conns, nofile); err != nil {
		return nil, err
	}
	plan.nofile = nofile
	dir, cleanup, err := workDir(plan.WorkDir, "meshbench-idle-")
	if err != nil {
		return nil, err
	}
	defer cleanup()
	up, err := StartProc(ProcSpec{Name: "upstream", Argv: []string{plan.Self, "internal", "upstream", "--listen", "127.0.0.1:0", "--body-size", "63"}, Env: plan.SelfEnv})
	if err != nil {
		return nil, err
	}
	defer func() { _ = up.Stop() }()
	upAddr, err := up.WaitListening(ctx, startTimeout)
	if err != nil {
		return nil, err
	}
	e := &env{self: plan.Self, selfEnv: plan.SelfEnv, proto: H1, upstream: upAddr, dir: dir, log: plan.Log}
	if p, err := FindMeshd(plan.Meshd); err != nil {
		e.meshdWhy = err.Error()
	} else {
		e.meshd = p
	}
	var out []IdleResult
	for _, name := range plan.Scenarios {
		r, err := runIdleOne(ctx, plan, e, name)
		if err != nil {
			return out, fmt.Errorf("%s: %w", name, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func runIdleOne(ctx context.Context, plan IdlePlan, e *env, name string) (IdleResult, error) {
	res := IdleResult{Scenario: name, Conns: plan.Conns}
	var (
		in  *instance
		err error
	)
	switch name {
	case ScenarioMeshd:
		// The default connection bound is (RLIMIT_NOFILE-64)/2: lift it past the clients.
		in, err = startMeshdArgs(ctx, name, e, "--max-connections", strconv.Itoa(plan.Conns+64))
	case ScenarioHAProxy:
		in, err = startPeer(ctx, name, e, "haproxy", func(dir string, port int) ([]string, error) {
			cfg, err := writeFile(dir, "haproxy.cfg", idleHAProxyConfig(port, e.upstream, plan.Conns, plan.nofile))
			if err != nil {
				return nil, err
			}
			return []string{"-db", "-f", cfg}, nil
		})
	default:
		return res, fmt.Errorf("scenario %q: --idle-conns measures %s and %s", name, ScenarioMeshd, ScenarioHAProxy)
	}
	var skip *SkipError
	if errors.As(err, &skip) {
		res.Skipped = skip.Reason
		return res, nil
	}
	if err != nil {
		return res, err
	}
	defer in.stop()
	progress := func(format string, a ...any) {
		if plan.Progress != nil {
			fmt.Fprintf(plan.Progress, name+": "+format+"\n", a...)
		}
	}
	one, err := OpenIdle(ctx, in.addr, in.host, 1, plan.Timeout)
	if err != nil {
		return res, fmt.Errorf("first request: %w", err)
	}
	one.Close()
	if res.RSSStart, err = treeRSS(in); err != nil {
		return res, err
	}
	progress("opening %d idle keep-alive connections (RSS at start %.1f MiB)", plan.Conns, mib(res.RSSStart))
	ic, err := OpenIdle(ctx, in.addr, in.host, plan.Conns, plan.Timeout)
	if err != nil {
		return res, fmt.Errorf("opening %d connections: %w", plan.Conns, err)
	}
	defer ic.Close()
	progress("all answered once; idle for %v", plan.Settle)
	t := time.NewTimer(plan.Settle)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
		return res, ctx.Err()
	}
	if res.RSSIdle, err = treeRSS(in); err != nil {
		return res, err
	}
	res.PerConnKiB = perConnKiB(res.RSSStart, res.RSSIdle, plan.Conns)
	res.Answered, res.Failed, err = ic.Check(ctx, in.host, plan.Timeout)
	if err != nil {
		res.Err = err.Error()
	}
	progress("RSS idle %.1f MiB (%.1f KiB per connection); second requests: %d answered, %d failed",
		mib(res.RSSIdle), res.PerConnKiB, res.Answered, res.Failed)
	return res, nil
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// WriteIdleTable prints the results.
func WriteIdleTable(w io.Writer, rs []IdleResult) error {
	ew := &errWriter{w: w}
	ew.printf("%-10s %8s %12s %12s %14s %10s\n", "proxy", "idle", "RSS start", "RSS idle", "per conn", "2nd 200s")
	for _, r := range rs {
		if r.Skipped != "" {
			ew.printf("%-10s skipped: %s\n", r.Scenario, r.Skipped)
			continue
		}
		ew.printf("%-10s %8d %9.1f MiB %9.1f MiB %10.1f KiB %5d/%d\n", r.Scenario, r.Conns, mib(r.RSSStart), mib(r.RSSIdle), r.PerConnKiB, r.Answered, r.Conns)
		if r.Err != "" {
			ew.printf("           first failure: %s\n", r.Err)
		}
	}
	return ew.err
}
