package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// TargetSpec is one URL measured instead of the built-in scenarios (--target).
type TargetSpec struct {
	URL string
	// Label is the row's name; the URL when empty.
	Label string
	// Host, when set, is sent as the Host (h2c: :authority) instead of the URL's.
	Host string
	// PID is a running process whose tree's CPU and peak RSS are the row's CPU and
	// RSS columns (e.g. the proxy the URL points at); 0 = none.
	PID int
	// Cmd, when set, is started by the harness before measuring (argv, no shell),
	// waited for until the URL's port accepts connections, stopped at the end, and
	// its tree's CPU and RSS are the row's.
	Cmd []string
}

// name is the row name: Label, else the URL.
func (t TargetSpec) name() string {
	if t.Label != "" {
		return t.Label
	}
	return t.URL
}

// targetKeys are the options ParseTarget knows after the URL; cmd takes the rest.
var targetKeys = []string{"label", "host", "pid", "cmd"}

// ParseTarget parses one --target value: URL[,label=NAME][,host=HOST][,pid=PID][,cmd=CMD ARGS...].
// cmd comes last and takes the rest of the value, commas included; its words are
// split on spaces (no shell quoting).
func ParseTarget(s string) (TargetSpec, error) {
	cut := len(s)
	for _, k := range targetKeys {
		if i := strings.Index(s, ","+k+"="); i >= 0 && i < cut {
			cut = i
		}
	}
	ts := TargetSpec{URL: s[:cut]}
	if ts.URL == "" {
		return ts, fmt.Errorf("--target %q: no URL before the options", s)
	}
	rest := s[cut:]
	for rest != "" {
		rest = rest[1:] // the comma
		k, v, _ := strings.Cut(rest, "=")
		if k == "cmd" {
			ts.Cmd = strings.Fields(v)
			if len(ts.Cmd) == 0 {
				return ts, fmt.Errorf("--target %q: cmd= is empty", s)
			}
			break
		}
		v, rest, _ = strings.Cut(v, ",")
		if rest != "" {
			rest = "," + rest
		}
		switch k {
		case "label":
			ts.Label = v
		case "host":
			ts.Host = v
		case "pid":
			pid, err := strconv.Atoi(v)
			if err != nil || pid <= 0 {
				return ts, fmt.Errorf("--target %q: pid=%q: want a process id", s, v)
			}
			ts.PID = pid
		default:
			return ts, fmt.Errorf("--target %q: unknown option %q (know %s)", s, k, strings.Join(targetKeys, ", "))
		}
		if v == "" {
			return ts, fmt.Errorf("--target %q: %s= is empty", s, k)
		}
	}
	if ts.PID > 0 && len(ts.Cmd) > 0 {
		return ts, fmt.Errorf("--target %q: pid= and cmd= both name the target's process: give one", s)
	}
	return ts, nil
}

// allTargets is Target (with TargetHost) then Targets, with Baseline first as
// ScenarioBaseline when there are targets.
func (p Plan) allTargets() []TargetSpec {
	var out []TargetSpec
	if p.Target != "" {
		out = append(out, TargetSpec{URL: p.Target, Host: p.TargetHost})
	}
	out = append(out, p.Targets...)
	if len(out) > 0 && p.Baseline != "" {
		out = append([]TargetSpec{{URL: p.Baseline, Label: ScenarioBaseline}}, out...)
	}
	return out
}

// checkTargets refuses two rows of one name (their results would merge).
func checkTargets(ts []TargetSpec) error {
	seen := map[string]bool{}
	for _, t := range ts {
		if seen[t.name()] {
			return fmt.Errorf("--target %s: two rows named %q: give each its own label=", t.URL, t.name())
		}
		seen[t.name()] = true
	}
	return nil
}

// parseTargetURL checks raw and returns the address to dial, the Host and the path.
func parseTargetURL(raw string) (addr, host, path string, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", "", fmt.Errorf("--target %q: %w", raw, err)
	}
	port := map[string]string{"http": "80", "https": "443"}[u.Scheme]
	if port == "" {
		return "", "", "", fmt.Errorf("--target %q: scheme %q not supported (http or https; h2c via --proto h2c, HTTP/2 over TLS via --proto h2 with https)", raw, u.Scheme)
	}
	if u.Host == "" {
		return "", "", "", fmt.Errorf("--target %q: no host", raw)
	}
	addr = u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), port)
	}
	return addr, u.Host, u.RequestURI(), nil
}

// startTarget makes the instance of one target, starting its Cmd if it has one.
func startTarget(ctx context.Context, plan Plan, ts TargetSpec) (*instance, error) {
	addr, host, path, err := parseTargetURL(ts.URL)
	if err != nil {
		return nil, err
	}
	var tcfg *tls.Config
	if strings.HasPrefix(ts.URL, "https:") {
		if tcfg, err = targetTLS(plan, ts); err != nil {
			return nil, err
		}
	}
	in := &instance{tls: tcfg, name: ts.name(), addr: addr, host: host, path: path, url: ts.URL, baseline: ts.Label == ScenarioBaseline && ts.URL == plan.Baseline}
	if ts.Host != "" {
		in.host = ts.Host
	}
	if ts.PID > 0 {
		if _, err := ReadProcTree(ts.PID); err != nil {
			return nil, fmt.Errorf("--target %s: pid=%d: %w", ts.URL, ts.PID, err)
		}
		in.extPID = ts.PID
	}
	if len(ts.Cmd) > 0 {
		p, err := startListening(ctx, ProcSpec{Name: in.name, Argv: ts.Cmd, CPUs: plan.CPUsProxy}, addr)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("--target %s: cmd=%s: %w", ts.URL, strings.Join(ts.Cmd, " "), err)
		}
		in.proxies = []*Proc{p}
	}
	return in, nil
}

// targetTLS is the TLS client config of an https target: its CAs from
// Plan.CACert (else the system's), server name from the URL's host (or host=).
func targetTLS(plan Plan, ts TargetSpec) (*tls.Config, error) {
	u, _ := url.Parse(ts.URL)
	cfg := &tls.Config{ServerName: u.Hostname(), InsecureSkipVerify: plan.Insecure, MinVersion: tls.VersionTLS12}
	if ts.Host != "" {
		h, _, err := net.SplitHostPort(ts.Host)
		if err != nil {
			h = ts.Host
		}
		cfg.ServerName = h
	}
	if plan.CACert != "" {
		pem, err := os.ReadFile(plan.CACert)
		if err != nil {
			return nil, fmt.Errorf("--cacert %s: %w", plan.CACert, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--cacert %s: no PEM certificate in it", plan.CACert)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// CheckRequestOptions refuses request options that would not be honoured: headers
// that are not well-formed or that the harness sets itself, a method that is not a
// token, options gRPC load does not carry, and TLS options without an https target.
func CheckRequestOptions(plan Plan) error {
	if plan.Method != "" {
		if !isToken(plan.Method) {
			return fmt.Errorf("--method %q: not an HTTP method token", plan.Method)
		}
	}
	for _, h := range plan.Headers {
		if err := CheckHeader(h); err != nil {
			return err
		}
	}
	if plan.Proto == GRPC && (plan.Method != "" || len(plan.Headers) > 0) {
		return fmt.Errorf("--method/-H with --proto grpc: gRPC load calls the method named by the path and sends no extra metadata")
	}
	if plan.CACert != "" || plan.Insecure {
		https := false
		for _, t := range plan.allTargets() {
			https = https || strings.HasPrefix(t.URL, "https:")
		}
		if !https {
			what := "--cacert " + plan.CACert
			if plan.CACert == "" {
				what = "--insecure"
			}
			return fmt.Errorf("%s: applies to https targets; there is none (--target https://...)", what)
		}
	}
	return nil
}

// ParseHeader parses one -H value, "Name: value".
func ParseHeader(s string) (Header, error) {
	name, value, ok := strings.Cut(s, ":")
	if !ok {
		return Header{}, fmt.Errorf("-H %q: want 'Name: value'", s)
	}
	h := Header{Name: strings.TrimSpace(name), Value: strings.TrimSpace(value)}
	return h, CheckHeader(h)
}

// CheckHeader refuses a header that is not well-formed, or one the harness sets
// itself (Host has --host/host=; the body framing is the harness's).
func CheckHeader(h Header) error {
	if !isToken(h.Name) {
		return fmt.Errorf("-H %q: header name is not a token", h.Name+": "+h.Value)
	}
	if strings.ContainsAny(h.Value, "\r\n\x00") {
		return fmt.Errorf("-H %q: header value has a line break or NUL", h.Name)
	}
	switch strings.ToLower(h.Name) {
	case "host":
		return fmt.Errorf("-H %q: set the Host with --host (or host= in --target)", h.Name+": "+h.Value)
	case "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "proxy-connection":
		return fmt.Errorf("-H %q: the harness frames requests itself (--req-body); this header would contradict it", h.Name+": "+h.Value)
	}
	return nil
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}
