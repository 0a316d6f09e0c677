package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meshd/meshd/proxy/intercept"
	"github.com/meshd/meshd/telemetry"
)

// iptablesEnv lists, per flag, the environment variables it falls back to, first match
// wins. The APPMESH_ names are the ones the ECS proxyConfiguration, the App Mesh
// route-manager init image and the Envoy image used, so existing task definitions and
// manifests keep working.
var iptablesEnv = map[string][]string{
	"app-ports":            {"APPMESH_APP_PORTS"},
	"proxy-ingress-port":   {"MESHD_INGRESS_PORT", "APPMESH_ENVOY_INGRESS_PORT"},
	"proxy-egress-port":    {"MESHD_EGRESS_PORT", "APPMESH_ENVOY_EGRESS_PORT"},
	"ignored-uid":          {"APPMESH_IGNORE_UID"},
	"ignored-gid":          {"APPMESH_IGNORE_GID"},
	"egress-ignored-ips":   {"APPMESH_EGRESS_IGNORED_IP"},
	"egress-ignored-ports": {"APPMESH_EGRESS_IGNORED_PORTS"},
	"ignore-ssh":           {"MESHD_IGNORE_SSH"},
	"ignore-metadata":      {"MESHD_IGNORE_METADATA"},
	"ipv6":                 {"MESHD_IPTABLES_IPV6"},
	"backend":              {"MESHD_IPTABLES_BACKEND"},
	"netns":                {"MESHD_NETNS"},
}

// iptablesFlag is one string-valued setting with where its value came from, so that
// errors name what the user actually set.
type iptablesFlag struct {
	name  string
	value string
	from  string // "--name" or "env NAME"; "default" when neither was set
}

func (f iptablesFlag) errorf(format string, args ...any) error {
	return fmt.Errorf("%s=%q (%s): %s", "--"+f.name, f.value, f.from, fmt.Sprintf(format, args...))
}

func cmdIptables(args []string, stdout, stderr io.Writer) int {
	return iptablesMain(args, stdout, stderr, os.LookupEnv)
}

// iptablesMain is cmdIptables with the environment injected, for tests.
func iptablesMain(args []string, stdout, stderr io.Writer, lookup func(string) (string, bool)) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stderr, "usage: meshd iptables print|apply|clean [flags]; meshd iptables print -h lists the flags")
		return 2
	}
	verb := args[0]
	switch verb {
	case "print", "apply", "clean":
	default:
		fmt.Fprintf(stderr, "meshd iptables: unknown action %q (want print, apply or clean)\n", verb)
		return 2
	}
	fs := flag.NewFlagSet("meshd iptables "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	defaults := map[string]string{
		"proxy-ingress-port": strconv.Itoa(intercept.DefaultIngressPort),
		"proxy-egress-port":  strconv.Itoa(intercept.DefaultEgressPort),
		"ignored-uid":        strconv.Itoa(intercept.DefaultIgnoredUID),
		"ignore-ssh":         "true",
		"ignore-metadata":    "true",
		"ipv6":               "auto",
		"backend":            "auto",
	}
	help := map[string]string{
		"app-ports":            "comma-separated app ports (a-b ranges allowed); inbound TCP to them goes to the ingress port",
		"proxy-ingress-port":   "meshd's ingress listener port",
		"proxy-egress-port":    "meshd's egress listener port",
		"ignored-uid":          "comma-separated UIDs whose traffic is never redirected; meshd must run as one",
		"ignored-gid":          "comma-separated GIDs whose traffic is never redirected",
		"egress-ignored-ips":   "comma-separated IPs/CIDRs (IPv4 and IPv6) reached directly",
		"egress-ignored-ports": "comma-separated destination ports reached directly",
		"ignore-ssh":           "also reach port 22 directly, as the App Mesh EC2 route manager did",
		"ignore-metadata":      "also reach 169.254.169.254, 169.254.170.2 and fd00:ec2::254 directly, as ECS does",
		"ipv6":                 "auto (when ip6tables works), on, or off",
		"backend":              "auto (the backend holding the host's rules), nft or legacy",
		"netns":                "run iptables inside this named network namespace (ip netns exec)",
	}
	order := []string{"app-ports", "proxy-ingress-port", "proxy-egress-port", "ignored-uid", "ignored-gid",
		"egress-ignored-ips", "egress-ignored-ports", "ignore-ssh", "ignore-metadata", "ipv6", "backend", "netns"}
	vals := map[string]*string{}
	for _, name := range order {
		envs := iptablesEnv[name]
		vals[name] = fs.String(name, defaults[name], help[name]+" (env "+strings.Join(envs, ", ")+")")
	}
	family := fs.String("family", "", "print only: 4 or 6 prints one family's iptables-restore input (default both, each headed by a comment)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "meshd iptables %s: unexpected argument %q\n", verb, fs.Arg(0))
		return 2
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	get := func(name string) iptablesFlag {
		if set[name] {
			return iptablesFlag{name: name, value: *vals[name], from: "flag"}
		}
		for _, e := range iptablesEnv[name] {
			if v, ok := lookup(e); ok && strings.TrimSpace(v) != "" {
				return iptablesFlag{name: name, value: v, from: "env " + e}
			}
		}
		return iptablesFlag{name: name, value: *vals[name], from: "default"}
	}

	cfg, opts, err := iptablesConfig(get)
	if err != nil {
		fmt.Fprintf(stderr, "meshd iptables %s: %v\n", verb, err)
		return 2
	}
	if verb == "print" {
		return iptablesPrint(cfg, opts, *family, stdout, stderr)
	}

	logger, _, err := telemetry.NewLogger(stderr, "info", "text")
	if err != nil {
		fmt.Fprintln(stderr, "meshd iptables:", err)
		return 2
	}
	opts.Logger = logger
	var runner intercept.Exec
	if ns := get("netns").value; ns != "" {
		runner.Prefix = []string{"ip", "netns", "exec", ns}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if verb == "apply" {
		err = intercept.Apply(ctx, runner, cfg, opts)
	} else {
		err = intercept.Clean(ctx, runner, opts)
	}
	if err != nil {
		logger.Error("iptables "+verb+" failed", "err", err)
		return 1
	}
	return 0
}

// iptablesConfig turns the settings into a validated config, naming the flag, its
// environment variable and the value in every error.
func iptablesConfig(get func(string) iptablesFlag) (intercept.Config, intercept.Options, error) {
	var (
		cfg  intercept.Config
		opts intercept.Options
		errs []error
	)
	ports := func(name string) []int {
		f := get(name)
		ps, err := intercept.ParsePorts(f.value)
		if err != nil {
			errs = append(errs, f.errorf("%v", err))
		}
		return ps
	}
	port := func(name string) int {
		f := get(name)
		n, err := strconv.Atoi(strings.TrimSpace(f.value))
		if err != nil || n < 1 || n > 65535 {
			errs = append(errs, f.errorf("want a port number 1-65535"))
		}
		return n
	}
	ids := func(name string) []int {
		f := get(name)
		v, err := intercept.ParseIDs(f.value)
		if err != nil {
			errs = append(errs, f.errorf("%v", err))
		}
		return v
	}
	boolean := func(name string) bool {
		f := get(name)
		b, err := strconv.ParseBool(strings.TrimSpace(f.value))
		if err != nil {
			errs = append(errs, f.errorf("want true or false"))
		}
		return b
	}
	cfg.AppPorts = ports("app-ports")
	cfg.IngressPort = port("proxy-ingress-port")
	cfg.EgressPort = port("proxy-egress-port")
	cfg.IgnoredUIDs = ids("ignored-uid")
	cfg.IgnoredGIDs = ids("ignored-gid")
	cfg.EgressIgnoredPorts = ports("egress-ignored-ports")
	ipsFlag := get("egress-ignored-ips")
	ips, err := intercept.ParsePrefixes(ipsFlag.value)
	if err != nil {
		errs = append(errs, ipsFlag.errorf("%v", err))
	}
	cfg.EgressIgnoredIPs = ips
	if boolean("ignore-ssh") {
		cfg.EgressIgnoredPorts = append(cfg.EgressIgnoredPorts, intercept.SSHPort)
	}
	if boolean("ignore-metadata") {
		cfg.EgressIgnoredIPs = append(cfg.EgressIgnoredIPs, intercept.MetadataIPs()...)
	}
	v6Flag := get("ipv6")
	if opts.IPv6, err = intercept.ParseIPv6Mode(v6Flag.value); err != nil {
		errs = append(errs, v6Flag.errorf("want auto, on or off"))
	}
	backendFlag := get("backend")
	if opts.Backend, err = intercept.ParseBackend(backendFlag.value); err != nil {
		errs = append(errs, backendFlag.errorf("want auto, nft or legacy"))
	}
	if len(errs) == 0 {
		errs = append(errs, flagNames(cfg.Validate())...)
	}
	return cfg, opts, errors.Join(errs...)
}

// configFieldFlag maps intercept.Config field names, which Validate's errors start with,
// to the flags users set.
var configFieldFlag = map[string]string{
	"AppPorts":           "app-ports",
	"IngressPort":        "proxy-ingress-port",
	"EgressPort":         "proxy-egress-port",
	"IgnoredUIDs":        "ignored-uid",
	"IgnoredGIDs":        "ignored-gid",
	"EgressIgnoredIPs":   "egress-ignored-ips",
	"EgressIgnoredPorts": "egress-ignored-ports",
}

// flagNames splits Validate's joined error and prefixes each with the flag and
// environment variable behind the field it names.
func flagNames(err error) []error {
	if err == nil {
		return nil
	}
	list := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	}
	out := make([]error, 0, len(list))
	for _, e := range list {
		field := e.Error()
		if i := strings.IndexAny(field, "[:"); i >= 0 {
			field = field[:i]
		}
		if name, ok := configFieldFlag[field]; ok {
			e = fmt.Errorf("--%s (env %s): %w", name, strings.Join(iptablesEnv[name], ", "), e)
		}
		out = append(out, e)
	}
	return out
}

func iptablesPrint(cfg intercept.Config, opts intercept.Options, family string, stdout, stderr io.Writer) int {
	switch family {
	case "4", "ipv4":
		fmt.Fprint(stdout, intercept.Rules(cfg, intercept.IPv4))
	case "6", "ipv6":
		fmt.Fprint(stdout, intercept.Rules(cfg, intercept.IPv6))
	case "":
		fmt.Fprintln(stdout, "# IPv4: iptables-restore --noflush")
		fmt.Fprint(stdout, intercept.Rules(cfg, intercept.IPv4))
		if opts.IPv6 != intercept.IPv6Off {
			fmt.Fprintln(stdout, "# IPv6: ip6tables-restore --noflush")
			fmt.Fprint(stdout, intercept.Rules(cfg, intercept.IPv6))
		}
	default:
		fmt.Fprintf(stderr, "meshd iptables print: --family=%q: want 4 or 6\n", family)
		return 2
	}
	return 0
}
