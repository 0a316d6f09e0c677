package intercept

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
)

// Runner runs one command and returns its standard output. It is the seam between rule
// logic and the host: Exec runs binaries directly or inside another network namespace.
// Implementations must be safe for sequential use; Apply and Clean never call Run
// concurrently.
type Runner interface {
	// Run runs name with args, feeding stdin to it when stdin is not nil. A non-zero exit
	// is an error that carries the command's standard error.
	Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error)
}

// Exec is a Runner that executes binaries with os/exec. Prefix, when set, is prepended
// to every command, e.g. {"ip", "netns", "exec", "app"} or {"nsenter", "--net=/proc/1/ns/net"}
// to act on another network namespace.
type Exec struct {
	Prefix []string
}

// Run implements Runner.
func (e Exec) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	argv := append(append(append([]string(nil), e.Prefix...), name), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			return stdout.Bytes(), fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
		}
		return stdout.Bytes(), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, msg)
	}
	return stdout.Bytes(), nil
}

// Backend is the kernel interface the iptables binaries speak. Rules installed through
// one backend are invisible to the other's binaries, so meshd must use the one the
// host already uses.
type Backend string

const (
	// BackendAuto picks the backend that holds meshd's chains, else the one holding more
	// rules (as Kubernetes' iptables-wrapper and Istio do), else nf_tables.
	BackendAuto   Backend = ""
	BackendNFT    Backend = "nft"
	BackendLegacy Backend = "legacy"
)

// ParseBackend accepts "auto", "", "nft" and "legacy".
func ParseBackend(s string) (Backend, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto":
		return BackendAuto, nil
	case "nft", "nf_tables":
		return BackendNFT, nil
	case "legacy":
		return BackendLegacy, nil
	}
	return "", fmt.Errorf("backend %q: want auto, nft or legacy", s)
}

// Tool names the save and restore binaries of one family and backend.
type Tool struct {
	Family  Family
	Backend Backend
	Save    string // e.g. "iptables-nft-save"
	Restore string // e.g. "iptables-nft-restore"
}

func (t Tool) String() string { return fmt.Sprintf("%s/%s (%s)", t.Family, t.Backend, t.Restore) }

// ErrNoTool means no iptables binary for the requested family and backend works here.
var ErrNoTool = errors.New("no usable iptables binaries")

// findTool returns the binaries of family and backend: the suffixed names
// (iptables-nft-save) when they exist, else the plain names when their version line
// names that backend (distributions that ship only one variant).
func findTool(ctx context.Context, r Runner, family Family, backend Backend) (Tool, error) {
	base := "iptables"
	if family == IPv6 {
		base = "ip6tables"
	}
	t := Tool{Family: family, Backend: backend,
		Save: base + "-" + string(backend) + "-save", Restore: base + "-" + string(backend) + "-restore"}
	if _, err := r.Run(ctx, nil, t.Save, "--version"); err == nil {
		return t, nil
	}
	out, err := r.Run(ctx, nil, base+"-save", "--version")
	if err != nil {
		return Tool{}, fmt.Errorf("%s %s backend: %w: %w", family, backend, ErrNoTool, err)
	}
	word := "legacy"
	if backend == BackendNFT {
		word = "nf_tables"
	}
	if !strings.Contains(string(out), word) {
		return Tool{}, fmt.Errorf("%s %s backend: %w: %s reports %q", family, backend, ErrNoTool,
			base+"-save", strings.TrimSpace(string(out)))
	}
	return Tool{Family: family, Backend: backend, Save: base + "-save", Restore: base + "-restore"}, nil
}

// Save returns the nat table as iptables-save prints it.
func (t Tool) save(ctx context.Context, r Runner) (string, error) {
	out, err := r.Run(ctx, nil, t.Save, "-t", "nat")
	if err != nil {
		return "", fmt.Errorf("read %s nat table: %w", t.Family, err)
	}
	return string(out), nil
}

// restore feeds script to iptables-restore without flushing other chains. -w waits for
// the xtables lock that a concurrent kube-proxy or docker may hold (legacy backend).
func (t Tool) restore(ctx context.Context, r Runner, script string) error {
	if _, err := r.Run(ctx, []byte(script), t.Restore, "--noflush", "-w", "5"); err != nil {
		return fmt.Errorf("%s iptables-restore: %w", t.Family, err)
	}
	return nil
}

// countRules counts rules of every table in a full iptables-save dump.
func countRules(dump string) int {
	n := 0
	for line := range strings.Lines(dump) {
		if strings.HasPrefix(line, "-A ") {
			n++
		}
	}
	return n
}

// Tools returns the tools to act on for family. A fixed backend yields that one tool. Auto
// yields, for Apply (all=false), the single backend chosen as documented on BackendAuto;
// for Clean (all=true), every available backend that holds meshd chains, so stale rules
// in the other backend go too.
func Tools(ctx context.Context, r Runner, family Family, backend Backend, all bool) ([]Tool, error) {
	if backend != BackendAuto {
		t, err := findTool(ctx, r, family, backend)
		if err != nil {
			return nil, err
		}
		return []Tool{t}, nil
	}
	type cand struct {
		t     Tool
		rules int
		ours  bool
	}
	var cands []cand
	var errs []error
	for _, b := range []Backend{BackendNFT, BackendLegacy} {
		t, err := findTool(ctx, r, family, b)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		dump, err := r.Run(ctx, nil, t.Save)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", t, err))
			continue
		}
		s := parseSave(string(dump))
		cands = append(cands, cand{t: t, rules: countRules(string(dump)), ours: s.chains[IngressChain] || s.chains[EgressChain]})
	}
	if len(cands) == 0 {
		return nil, errors.Join(errs...)
	}
	var owning []Tool
	for _, c := range cands {
		if c.ours {
			owning = append(owning, c.t)
		}
	}
	if all {
		return owning, nil
	}
	if len(owning) > 0 {
		return owning[:1], nil
	}
	best := cands[0] // nft first: the default when neither holds rules
	for _, c := range cands[1:] {
		if c.rules > best.rules {
			best = c
		}
	}
	return []Tool{best.t}, nil
}

// IPv6Mode says whether IPv6 rules are managed.
type IPv6Mode string

const (
	// IPv6Auto manages IPv6 when ip6tables works here (the kernel has IPv6 and the nat
	// table), and skips it with a warning otherwise.
	IPv6Auto IPv6Mode = ""
	IPv6On   IPv6Mode = "on"
	IPv6Off  IPv6Mode = "off"
)

// ParseIPv6Mode accepts auto (or ""), on/true and off/false.
func ParseIPv6Mode(s string) (IPv6Mode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto":
		return IPv6Auto, nil
	case "on", "true", "1", "yes":
		return IPv6On, nil
	case "off", "false", "0", "no":
		return IPv6Off, nil
	}
	return "", fmt.Errorf("ipv6 mode %q: want auto, on or off", s)
}

// Options choose where and how rules are installed.
type Options struct {
	Backend Backend
	IPv6    IPv6Mode
	// Logger receives what was done and what was skipped; nil discards.
	Logger *slog.Logger
}

func (o Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

// families runs fn for IPv4 and, per the IPv6 mode, IPv6; in auto mode an IPv6 failure
// to find working tools is logged and skipped.
func (o Options) families(fn func(Family) error, probe func(Family) error) error {
	if err := fn(IPv4); err != nil {
		return err
	}
	switch o.IPv6 {
	case IPv6Off:
		return nil
	case IPv6Auto:
		if err := probe(IPv6); err != nil {
			o.logger().Warn("IPv6 interception skipped: ip6tables does not work here", "err", err)
			return nil
		}
	}
	return fn(IPv6)
}

// probe checks that family's nat table can be read with some backend.
func (o Options) probe(ctx context.Context, r Runner) func(Family) error {
	return func(f Family) error {
		ts, err := Tools(ctx, r, f, o.Backend, false)
		if err != nil {
			return err
		}
		_, err = ts[0].save(ctx, r)
		return err
	}
}

// Apply installs cfg's rules for IPv4 and (per opts.IPv6) IPv6, each family in one
// iptables-restore transaction. Applying the same cfg again changes nothing; applying a
// different cfg replaces meshd's rules. Rules that are not meshd's are never touched.
// Needs CAP_NET_ADMIN in the target network namespace.
func Apply(ctx context.Context, r Runner, cfg Config, opts Options) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("iptables config: %w", err)
	}
	log := opts.logger()
	return opts.families(func(f Family) error {
		ts, err := Tools(ctx, r, f, opts.Backend, false)
		if err != nil {
			return fmt.Errorf("apply %s rules: %w", f, err)
		}
		t := ts[0]
		saved, err := t.save(ctx, r)
		if err != nil {
			return fmt.Errorf("apply %s rules: %w", f, err)
		}
		if err := t.restore(ctx, r, applyScript(cfg, f, parseSave(saved))); err != nil {
			return fmt.Errorf("apply %s rules: %w", f, err)
		}
		log.Info("interception rules applied", "family", f.String(), "backend", string(t.Backend))
		return nil
	}, opts.probe(ctx, r))
}

// Clean removes meshd's jump rules and chains, for both families and (with BackendAuto)
// every backend that holds them, and nothing else. Cleaning a system without meshd rules
// succeeds without running iptables-restore.
func Clean(ctx context.Context, r Runner, opts Options) error {
	log := opts.logger()
	return opts.families(func(f Family) error {
		ts, err := Tools(ctx, r, f, opts.Backend, true)
		if err != nil {
			return fmt.Errorf("clean %s rules: %w", f, err)
		}
		for _, t := range ts {
			saved, err := t.save(ctx, r)
			if err != nil {
				return fmt.Errorf("clean %s rules: %w", f, err)
			}
			script := cleanScript(parseSave(saved))
			if script == "" {
				continue
			}
			if err := t.restore(ctx, r, script); err != nil {
				return fmt.Errorf("clean %s rules: %w", f, err)
			}
			log.Info("interception rules removed", "family", f.String(), "backend", string(t.Backend))
		}
		return nil
	}, opts.probe(ctx, r))
}
