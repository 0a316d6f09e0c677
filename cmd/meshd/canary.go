package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meshd/meshd/internal/canary"
)

// canaryFlags are `meshd canary`'s.
type canaryFlags struct {
	config, route, canary, steps, metrics, put, prometheus, tokenFile string
	promSelector                                                      string
	interval, maxP99                                                  time.Duration
	maxErrorRate, minRequests                                         float64
	dryRun                                                            bool

	router, routeName string
	stepList          []int
	token             string
}

func (f *canaryFlags) register(fs *flag.FlagSet, full bool) {
	fs.StringVar(&f.config, "c", "", "the config file the sidecars follow (written by atomic replace)")
	fs.StringVar(&f.put, "put", "", "instead of -c: admin /config URLs to write through (PUT with If-Match), comma-separated")
	fs.StringVar(&f.tokenFile, "admin-token-file", "", "bearer token for --put (the sidecars' --admin-token-file)")
	fs.StringVar(&f.route, "route", "", "the route to shift: ROUTER/ROUTE (virtualRouterName/routeName)")
	fs.StringVar(&f.canary, "canary", "", "the virtual node that takes the traffic")
	if !full {
		return
	}
	fs.StringVar(&f.steps, "steps", "10,50,100", "the canary's share at each step, percent, increasing, ending at 100")
	fs.DurationVar(&f.interval, "interval", time.Minute, "how long each step runs before it is judged")
	fs.Float64Var(&f.maxErrorRate, "max-error-rate", 0.01, "the canary's highest error rate (5xx and failed gRPC calls / requests) in an interval; above it: rollback")
	fs.DurationVar(&f.maxP99, "max-p99", 0, "the canary's highest p99 latency in an interval (0: not judged); above it: rollback")
	fs.Float64Var(&f.minRequests, "min-requests", 20, "requests the canary must serve in an interval before it is judged (fewer: hold)")
	fs.StringVar(&f.metrics, "metrics", "", "the callers' sidecars' /stats/prometheus URLs, comma-separated (summed)")
	fs.StringVar(&f.prometheus, "prometheus", "", "a Prometheus server's URL to ask (its query API) instead of the sidecars (--metrics)")
	fs.StringVar(&f.promSelector, "prometheus-selector", "", `label matchers narrowing the --prometheus queries to the callers' sidecars, e.g. 'job="meshd",virtual_node="frontend"'`)
	fs.BoolVar(&f.dryRun, "dry-run", false, "print the plan and exit")
}

func (f *canaryFlags) check(full bool) error {
	if (f.config == "") == (f.put == "") {
		return errors.New("give exactly one of -c FILE and --put URL[,URL...]")
	}
	router, route, ok := strings.Cut(f.route, "/")
	if !ok || router == "" || route == "" || strings.Contains(route, "/") {
		return fmt.Errorf("--route %q: want ROUTER/ROUTE", f.route)
	}
	f.router, f.routeName = router, route
	if f.canary == "" {
		return errors.New("--canary NODE is required")
	}
	if f.tokenFile != "" {
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return fmt.Errorf("--admin-token-file: %w", err)
		}
		f.token = strings.TrimSpace(string(b))
	}
	if !full {
		return nil
	}
	if f.prometheus != "" && f.metrics != "" {
		return errors.New("give one of --metrics (the sidecars) and --prometheus (a Prometheus server), not both")
	}
	if f.metrics == "" && f.prometheus == "" && !f.dryRun {
		return errors.New("--metrics URL[,URL...] (the callers' sidecars' /stats/prometheus) or --prometheus URL is required")
	}
	if f.promSelector != "" && f.prometheus == "" {
		return errors.New("--prometheus-selector needs --prometheus")
	}
	prev := 0
	for _, s := range strings.Split(f.steps, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= prev || n > 100 {
			return fmt.Errorf("--steps %q: want increasing percentages in 1..100 ending at 100", f.steps)
		}
		f.stepList = append(f.stepList, n)
		prev = n
	}
	if prev != 100 {
		return fmt.Errorf("--steps %q: the last step must be 100", f.steps)
	}
	if f.interval <= 0 {
		return fmt.Errorf("--interval %v: want a positive duration", f.interval)
	}
	if f.maxErrorRate < 0 || f.maxErrorRate > 1 {
		return fmt.Errorf("--max-error-rate %v: want a fraction in 0..1", f.maxErrorRate)
	}
	if f.maxP99 < 0 {
		return fmt.Errorf("--max-p99 %v: want 0 (off) or a positive duration", f.maxP99)
	}
	return nil
}

// cmdCanary runs `meshd canary` (and its promote and abort).
func cmdCanary(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && (args[0] == "promote" || args[0] == "abort") {
		return cmdCanarySet(args[0], args[1:], stdout, stderr)
	}
	var f canaryFlags
	fs := flag.NewFlagSet("meshd canary", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f.register(fs, true)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := f.check(true); err != nil {
		fmt.Fprintln(stderr, "meshd canary:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runCanary(ctx, &f, stdout, stderr, time.Sleep)
}

// cmdCanarySet is `meshd canary promote|abort`: the canary's share set to 100 or 0 at
// once.
func cmdCanarySet(verb string, args []string, stdout, stderr io.Writer) int {
	var f canaryFlags
	fs := flag.NewFlagSet("meshd canary "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	f.register(fs, false)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := f.check(false); err != nil {
		fmt.Fprintf(stderr, "meshd canary %s: %v\n", verb, err)
		return 2
	}
	pct := 100
	if verb == "abort" {
		pct = 0
	}
	st := newStore(&f)
	ts, err := st.write(context.Background(), &f, pct)
	if err != nil {
		fmt.Fprintf(stderr, "meshd canary %s: %v\n", verb, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: %s\n", verb, weightsText(ts))
	return 0
}

// runCanary is the loop: set each step, let it run an interval, judge it. sleep is
// time.Sleep, or a test's.
func runCanary(ctx context.Context, f *canaryFlags, stdout, stderr io.Writer, sleep func(time.Duration)) int {
	st := newStore(f)
	doc, err := st.read(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "meshd canary:", err)
		return 1
	}
	ts, err := doc.Targets(f.router, f.routeName)
	if err != nil {
		fmt.Fprintln(stderr, "meshd canary:", err)
		return 1
	}
	cur, _ := canary.CanaryPercent(ts, f.canary)
	var primaries []string
	for _, t := range ts {
		if t.Node != f.canary {
			primaries = append(primaries, t.Node)
		}
	}
	if len(primaries) == 0 {
		fmt.Fprintf(stderr, "meshd canary: route %s: %s is its only target; nothing to shift from\n", f.route, f.canary)
		return 1
	}
	start := canary.StartStep(f.stepList, cur)
	if f.dryRun {
		fmt.Fprintf(stdout, "plan: route %s, canary %s now at %d%% (%s)\n", f.route, f.canary, cur, weightsText(ts))
		for _, s := range f.stepList[start:] {
			fmt.Fprintf(stdout, "  step %d%%: %s, then %v judged on error rate ≤ %.2f%%%s, at least %.0f requests\n",
				s, weightsText(canary.Split(ts, f.canary, s)), f.interval, 100*f.maxErrorRate, p99Text(f.maxP99), f.minRequests)
		}
		fmt.Fprintln(stdout, "  on failure: 0% at once, exit 1")
		return 0
	}
	if start == len(f.stepList) {
		fmt.Fprintf(stdout, "promoted: %s already takes 100%% of %s\n", f.canary, f.route)
		return 0
	}
	if start > 0 || cur > 0 {
		fmt.Fprintf(stdout, "resuming: %s at %d%% of %s\n", f.canary, cur, f.route)
	}
	th := canary.Thresholds{MaxErrorRate: f.maxErrorRate, MaxP99: f.maxP99, MinRequests: f.minRequests}
	urls := splitList(f.metrics)
	client := &http.Client{Timeout: 10 * time.Second}
	scrape := func() (canary.Sides, error) { return canary.Scrape(ctx, client, urls, f.canary, primaries) }
	if f.prometheus != "" {
		scrape = func() (canary.Sides, error) {
			return canary.QueryPrometheus(ctx, client, f.prometheus, f.promSelector, f.canary, primaries)
		}
	}
	rollback := func(why string) int {
		ts, err := st.write(ctx, f, 0)
		if err != nil {
			fmt.Fprintf(stderr, "meshd canary: rollback of %s failed: %v (%s)\n", f.canary, err, why)
			return 1
		}
		fmt.Fprintf(stdout, "rolled back: %s (%s)\n", why, weightsText(ts))
		return 1
	}
	for _, step := range f.stepList[start:] {
		ts, err := st.write(ctx, f, step)
		if err != nil {
			fmt.Fprintln(stderr, "meshd canary: aborted:", err)
			return 1
		}
		fmt.Fprintf(stdout, "step %d%%: %s\n", step, weightsText(ts))
		before, err := scrape()
		if err != nil {
			return rollback("metrics: " + err.Error())
		}
		for {
			sleep(f.interval)
			if ctx.Err() != nil {
				fmt.Fprintf(stderr, "meshd canary: interrupted at %d%%; the config keeps that share (re-run to resume, or meshd canary abort)\n", step)
				return 1
			}
			now, err := scrape()
			if err != nil {
				return rollback("metrics: " + err.Error())
			}
			v, why := canary.Decide(now.Sub(before), th)
			switch v {
			case canary.Rollback:
				return rollback(why)
			case canary.Hold:
				fmt.Fprintf(stdout, "hold at %d%%: %s\n", step, why)
				continue // the interval's requests count toward the next judgement
			}
			fmt.Fprintf(stdout, "step %d%% passed: %s\n", step, why)
			break
		}
	}
	fmt.Fprintf(stdout, "promoted: %s takes 100%% of %s\n", f.canary, f.route)
	return 0
}

func p99Text(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return ", p99 ≤ " + d.String()
}

func weightsText(ts []canary.Target) string {
	parts := make([]string, len(ts))
	for i, t := range ts {
		parts[i] = t.Node + "=" + strconv.Itoa(t.Weight)
	}
	return strings.Join(parts, " ")
}

// store is where the weights are written: the config file, or the sidecars' admin
// /config. It remembers what it last saw or wrote, so that a change made by someone else
// meanwhile aborts the run instead of being overwritten.
type store struct {
	f    *canaryFlags
	seen []byte            // file: the content last read or written
	tags map[string]string // --put: each URL's ETag last read or written
}

func newStore(f *canaryFlags) *store { return &store{f: f, tags: map[string]string{}} }

var errChanged = errors.New("the config changed under the canary (someone else wrote it); nothing written: re-run to resume from its weights")

// read loads the document (the first --put URL's config in force).
func (s *store) read(ctx context.Context) (*canary.Doc, error) {
	if s.f.config != "" {
		b, err := os.ReadFile(s.f.config)
		if err != nil {
			return nil, err
		}
		s.seen = b
		return canary.ParseDoc(b)
	}
	var first []byte
	for i, u := range splitList(s.f.put) {
		data, tag, err := s.get(ctx, u)
		if err != nil {
			return nil, err
		}
		s.tags[u] = tag
		if i == 0 {
			first = data
		}
	}
	return canary.ParseDoc(first)
}

// write sets the canary's share to pct and returns the targets written.
func (s *store) write(ctx context.Context, f *canaryFlags, pct int) ([]canary.Target, error) {
	if f.config != "" {
		b, err := os.ReadFile(f.config)
		if err != nil {
			return nil, err
		}
		if s.seen != nil && !bytes.Equal(b, s.seen) {
			return nil, fmt.Errorf("%s: %w", f.config, errChanged)
		}
		doc, err := canary.ParseDoc(b)
		if err != nil {
			return nil, err
		}
		ts, err := doc.SetCanary(f.router, f.routeName, f.canary, pct)
		if err != nil {
			return nil, err
		}
		out, err := doc.Bytes()
		if err != nil {
			return nil, err
		}
		if err := replaceFile(f.config, out); err != nil {
			return nil, err
		}
		s.seen = out
		return ts, nil
	}
	var ts []canary.Target
	for _, u := range splitList(f.put) {
		data, tag, err := s.get(ctx, u)
		if err != nil {
			return nil, err
		}
		if old, ok := s.tags[u]; ok && old != tag {
			return nil, fmt.Errorf("%s: %w", u, errChanged)
		}
		doc, err := canary.ParseDoc(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", u, err)
		}
		if ts, err = doc.SetCanary(f.router, f.routeName, f.canary, pct); err != nil {
			return nil, fmt.Errorf("%s: %w", u, err)
		}
		out, err := doc.Bytes()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", u, err)
		}
		ntag, err := s.putConfig(ctx, u, out, tag)
		if err != nil {
			return nil, err
		}
		s.tags[u] = ntag
	}
	return ts, nil
}

// get reads an admin /config: the config in force (JSON) and its ETag.
func (s *store) get(ctx context.Context, u string) ([]byte, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, "", fmt.Errorf("--put %s: %w", u, err)
	}
	s.auth(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("--put %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("--put %s: GET: status %s", u, resp.Status)
	}
	var view struct {
		Config json.RawMessage `json:"config"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&view); err != nil || len(view.Config) == 0 {
		return nil, "", fmt.Errorf("--put %s: GET: not an admin /config answer: %v", u, err)
	}
	return view.Config, resp.Header.Get("ETag"), nil
}

// putConfig writes data with If-Match tag; a 412 is someone else's change.
func (s *store) putConfig(ctx context.Context, u string, data []byte, tag string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, bytes.NewReader(data))
	if err != nil {
		return "", fmt.Errorf("--put %s: %w", u, err)
	}
	req.Header.Set("If-Match", tag)
	req.Header.Set("Content-Type", "application/json")
	s.auth(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("--put %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<10))
	switch resp.StatusCode {
	case http.StatusOK:
		return resp.Header.Get("ETag"), nil
	case http.StatusPreconditionFailed:
		return "", fmt.Errorf("--put %s: %w", u, errChanged)
	}
	return "", fmt.Errorf("--put %s: PUT: status %s: %s", u, resp.Status, strings.TrimSpace(string(body)))
}

func (s *store) auth(req *http.Request) {
	if s.f.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.f.token)
	}
}

// replaceFile writes data to path atomically (a temporary file in the same directory,
// renamed over it), keeping path's mode, so a watching sidecar never reads half of it.
func replaceFile(path string, data []byte) error {
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".canary-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
