package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ProcSpec says how to start one process under test.
type ProcSpec struct {
	Name string
	Argv []string
	Env  []string // added to the harness's environment
	Dir  string
	CPUs string // CPU list ("1", "0-1,3") to pin to; empty: no pinning
}

// Proc is a running child process. Stop must be called; the harness calls it on
// every exit path, and children also get SIGKILL if the harness thread that started
// them dies (Pdeathsig).
type Proc struct {
	Name  string
	cmd   *exec.Cmd
	done  chan struct{}
	err   error
	out   *tailBuffer
	lines chan string
}

// StartProc starts spec; its combined output is kept (the last 8 KiB) for error
// messages, and lines "listening ADDR" are delivered to WaitListening.
func StartProc(spec ProcSpec) (*Proc, error) {
	argv := spec.Argv
	var set *unix.CPUSet
	if spec.CPUs != "" {
		s, err := ParseCPUList(spec.CPUs)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", spec.Name, err)
		}
		set = &s
		if ts, err := exec.LookPath("taskset"); err == nil {
			// Through taskset the process is pinned before its first instruction.
			argv = append([]string{ts, "-c", spec.CPUs}, argv...)
			set = nil
		}
	}
	p := &Proc{Name: spec.Name, done: make(chan struct{}), out: &tailBuffer{max: 8 << 10}, lines: make(chan string, 4)}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), spec.Env...)
	cmd.Dir = spec.Dir
	cmd.Stdout = &lineWatcher{p: p}
	cmd.Stderr = p.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", spec.Name, strings.Join(argv, " "), err)
	}
	p.cmd = cmd
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	if set != nil {
		if err := pinTasks(cmd.Process.Pid, *set); err != nil {
			_ = p.Stop()
			return nil, fmt.Errorf("pin %s to %s: %w", spec.Name, spec.CPUs, err)
		}
	}
	return p, nil
}

// PID is the child's process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Output returns the tail of the process's output.
func (p *Proc) Output() string { return p.out.String() }

// WaitListening returns the address from the child's first "listening ADDR" line.
func (p *Proc) WaitListening(ctx context.Context, timeout time.Duration) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case l := <-p.lines:
		return l, nil
	case <-p.done:
		return "", fmt.Errorf("%s exited before listening (%v): %s", p.Name, p.err, p.Output())
	case <-t.C:
		return "", fmt.Errorf("%s not listening after %v: %s", p.Name, timeout, p.Output())
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// WaitReady polls check every 20 ms until it succeeds, the process exits, or timeout.
func (p *Proc) WaitReady(ctx context.Context, timeout time.Duration, check func() error) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = check(); last == nil {
			return nil
		}
		select {
		case <-tick.C:
		case <-p.done:
			return fmt.Errorf("%s exited (%v): %s", p.Name, p.err, p.Output())
		case <-deadline.C:
			return fmt.Errorf("%s not ready after %v: %w; output: %s", p.Name, timeout, last, p.Output())
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Stop sends SIGTERM, then SIGKILL after 3 s, and reaps the process.
func (p *Proc) Stop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(3 * time.Second)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return nil
}

type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}

// lineWatcher receives the child's stdout (from exec's copying goroutine).
type lineWatcher struct {
	p       *Proc
	partial []byte
}

func (w *lineWatcher) Write(b []byte) (int, error) {
	_, _ = w.p.out.Write(b)
	w.partial = append(w.partial, b...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimSpace(string(w.partial[:i]))
		w.partial = w.partial[i+1:]
		if addr, ok := strings.CutPrefix(line, "listening "); ok {
			select {
			case w.p.lines <- addr:
			default:
			}
		}
	}
	return len(b), nil
}

// ProcStat is what /proc says about a process tree.
type ProcStat struct {
	// CPU is the on-CPU time of the process and its live descendants: utime+stime,
	// or the exact per-thread schedstat sum where the kernel provides it.
	CPU   time.Duration
	HWM   uint64 // sum of VmHWM (peak RSS) in bytes
	Procs int
}

// clkTck is USER_HZ, which Linux fixes at 100 for /proc/PID/stat on every
// architecture Go supports.
const clkTck = 100

// ReadProcTree reads CPU time and peak RSS of pid and all its descendants (nginx's
// workers, taskset's child) from /proc.
func ReadProcTree(pid int) (ProcStat, error) {
	pids := []int{pid}
	children := map[int][]int{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return ProcStat{}, fmt.Errorf("read /proc: %w", err)
	}
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, ppid, err := readStat(n); err == nil {
			children[ppid] = append(children[ppid], n)
		}
	}
	for i := 0; i < len(pids); i++ {
		pids = append(pids, children[pids[i]]...)
	}
	var st ProcStat
	for _, q := range pids {
		cpu, _, err := readStat(q)
		if err != nil {
			if q == pid {
				return ProcStat{}, err
			}
			continue
		}
		if precise, ok := readSchedstat(q); ok {
			cpu = precise
		}
		st.CPU += cpu
		st.HWM += readHWM(q)
		st.Procs++
	}
	return st, nil
}

func readStat(pid int) (cpu time.Duration, ppid int, err error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, 0, fmt.Errorf("read stat of pid %d: %w", pid, err)
	}
	// The command name may hold spaces and parentheses; fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("stat of pid %d: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("stat of pid %d: %d fields", pid, len(f))
	}
	ppid, _ = strconv.Atoi(f[1])
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	stt, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, fmt.Errorf("stat of pid %d: %w", pid, err)
	}
	return time.Duration(ut+stt) * time.Second / clkTck, ppid, nil
}

// readSchedstat sums the on-CPU time of pid's live threads from
// /proc/PID/task/TID/schedstat, in nanoseconds. /proc/PID/stat counts in 10 ms ticks,
// which at 1000 req/s over a one-second window is ±10 µs per request; schedstat is
// exact. It misses threads that exited, which the proxies measured here (Go runtimes,
// single-threaded haproxy and nginx workers) do not do while serving.
func readSchedstat(pid int) (time.Duration, bool) {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "task")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, false
	}
	var sum time.Duration
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "schedstat"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			return 0, false
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, false
		}
		sum += time.Duration(ns)
	}
	return sum, sum > 0
}

func readHWM(pid int) uint64 {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseUint(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// ParseCPUList parses a taskset-style CPU list such as "0", "0-1" or "0,2-3".
func ParseCPUList(s string) (unix.CPUSet, error) {
	var set unix.CPUSet
	set.Zero()
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return set, fmt.Errorf("cpu list %q: bad cpu %q", s, lo)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return set, fmt.Errorf("cpu list %q: bad range %q", s, part)
			}
		}
		for c := a; c <= b; c++ {
			set.Set(c)
		}
	}
	return set, nil
}

// pinTasks sets the affinity of every thread of pid; threads created later inherit it.
func pinTasks(pid int, set unix.CPUSet) error {
	ents, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "task"))
	if err != nil {
		return fmt.Errorf("list threads of %d: %w", pid, err)
	}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("sched_setaffinity(%d): %w", tid, err)
		}
	}
	return nil
}

// PinSelf pins every thread of the calling process (the load generator) to cpus.
func PinSelf(cpus string) error {
	set, err := ParseCPUList(cpus)
	if err != nil {
		return err
	}
	return pinTasks(os.Getpid(), set)
}

// freePort returns a loopback port that was free a moment ago, for peers that cannot
// report their own port. It is picked below the kernel's ephemeral range: a port the
// kernel handed out (Listen on :0) goes back into the pool that the load generator's
// own outgoing connections draw from, and one of them took it before the peer bound it
// once in a loaded test run ("address already in use").
//
// A port is handed out once per process: a free port picked for one peer is still free
// when the next is picked (nothing has bound it yet), and two peers of one run given the
// same port had one fail to start ("bind: address already in use").
func freePort() (int, error) {
	lo, _ := ephemeralRange()
	if lo > freePortBase+2048 {
		for i := 0; i < 64; i++ {
			p := freePortBase + rand.IntN(lo-freePortBase)
			if !claimPort(p) {
				continue
			}
			ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err != nil {
				continue
			}
			ln.Close()
			return p, nil
		}
	}
	for i := 0; ; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("find a free port: %w", err)
		}
		p := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if claimPort(p) || i == 64 {
			return p, nil
		}
	}
}

// handedOut holds the ports freePort returned (or found taken) in this process.
var handedOut struct {
	sync.Mutex
	ports map[int]bool
}

// claimPort reports whether p was not handed out before, and marks it handed out.
func claimPort(p int) bool {
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports[p] {
		return false
	}
	if handedOut.ports == nil {
		handedOut.ports = make(map[int]bool)
	}
	handedOut.ports[p] = true
	return true
}

// freePortBase keeps freePort above the ports meshd and its examples use by default
// (admin 9901, interception 15000/15001, upstreams at 8080 and so on).
const freePortBase = 16384

// ephemeralRange is the kernel's range of ports for outgoing connections (Linux's
// default when it cannot be read).
func ephemeralRange() (lo, hi int) {
	lo, hi = 32768, 60999
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return lo, hi
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return lo, hi
	}
	l, err1 := strconv.Atoi(f[0])
	h, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || l <= 0 || h < l {
		return lo, hi
	}
	return l, h
}

// dialCheck succeeds once addr accepts TCP connections.
func dialCheck(addr string) func() error {
	return func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	}
}
