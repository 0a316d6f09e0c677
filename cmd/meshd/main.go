// Command meshd is the meshd sidecar proxy.
//
//	meshd run -c mesh.yaml --node NAME   serve a virtual node's ingress and egress
//	meshd validate -c mesh.yaml          check a config; every error on its own line
//	meshd demo                           run an embedded two-version canary demo
//	meshd version
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
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/proxy"
	"github.com/meshd/meshd/router"
	"github.com/meshd/meshd/telemetry"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stdout, stderr)
	case "validate":
		return cmdValidate(args[1:], stdout, stderr)
	case "demo":
		return cmdDemo(args[1:], stdout, stderr)
	case "iptables":
		return cmdIptables(args[1:], stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "meshd", version)
		return 0
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "meshd: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `meshd: an App Mesh-compatible sidecar proxy

Usage:
  meshd run -c FILE --node NAME [--admin-addr ADDR] [--ingress-port N] [--egress-port N]
  meshd validate -c FILE [--node NAME]
  meshd demo [--egress-port N] [--ingress-port N] [--admin-addr ADDR]
  meshd iptables print|apply|clean [--app-ports LIST] [--ignored-uid N] [...]
  meshd version

Run 'meshd COMMAND -h' for a command's flags and their environment variables.
`)
}

// env returns the first set environment variable of names, or def.
func env(def string, names ...string) string {
	for _, n := range names {
		if v, ok := os.LookupEnv(n); ok && v != "" {
			return v
		}
	}
	return def
}

func envInt(def int, names ...string) int {
	v := env("", names...)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return def
	}
	return n
}

func envDuration(def time.Duration, names ...string) time.Duration {
	v := env("", names...)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		// App Mesh's LISTENER_DRAIN_WAIT_TIME_S is plain seconds.
		if n, err2 := strconv.Atoi(v); err2 == nil {
			return time.Duration(n) * time.Second
		}
		return def
	}
	return d
}

// nodeFromEnv accepts App Mesh's APPMESH_VIRTUAL_NODE_NAME / APPMESH_RESOURCE_ARN forms
// ("mesh/M/virtualNode/N" or an ARN ending in it) as well as a plain name.
func nodeFromEnv() string {
	v := env("", "MESHD_NODE", "APPMESH_VIRTUAL_NODE_NAME", "APPMESH_RESOURCE_ARN")
	if i := strings.LastIndex(v, "/virtualNode/"); i >= 0 {
		return v[i+len("/virtualNode/"):]
	}
	return v
}

type runFlags struct {
	configPath   string
	node         string
	adminAddr    string
	ingressPort  int
	egressPort   int
	ingressAddr  string
	egressAddr   string
	logLevel     string
	logFormat    string
	drainTimeout time.Duration
	connectTO    time.Duration
}

func (f *runFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.configPath, "c", env("", "MESHD_CONFIG"), "config file, YAML or JSON (env MESHD_CONFIG)")
	fs.StringVar(&f.node, "node", nodeFromEnv(), "virtual node this sidecar serves (env MESHD_NODE, or App Mesh's APPMESH_VIRTUAL_NODE_NAME)")
	fs.StringVar(&f.adminAddr, "admin-addr", env("127.0.0.1:9901", "MESHD_ADMIN_ADDR"), "admin listener address, or \"off\" (env MESHD_ADMIN_ADDR)")
	fs.IntVar(&f.ingressPort, "ingress-port", envInt(15000, "MESHD_INGRESS_PORT", "APPMESH_ENVOY_INGRESS_PORT"), "ingress port (env MESHD_INGRESS_PORT)")
	fs.IntVar(&f.egressPort, "egress-port", envInt(15001, "MESHD_EGRESS_PORT", "APPMESH_ENVOY_EGRESS_PORT"), "egress port (env MESHD_EGRESS_PORT)")
	fs.StringVar(&f.ingressAddr, "ingress-bind", env("0.0.0.0", "MESHD_INGRESS_BIND"), "ingress bind address (env MESHD_INGRESS_BIND)")
	fs.StringVar(&f.egressAddr, "egress-bind", env("127.0.0.1", "MESHD_EGRESS_BIND"), "egress bind address; loopback keeps meshd from being an open proxy (env MESHD_EGRESS_BIND)")
	fs.StringVar(&f.logLevel, "log-level", env("info", "MESHD_LOG_LEVEL", "ENVOY_LOG_LEVEL"), "debug, info, warn or error (env MESHD_LOG_LEVEL)")
	fs.StringVar(&f.logFormat, "log-format", env("text", "MESHD_LOG_FORMAT"), "text or json (env MESHD_LOG_FORMAT)")
	fs.DurationVar(&f.drainTimeout, "drain-timeout", envDuration(20*time.Second, "MESHD_DRAIN_TIMEOUT", "LISTENER_DRAIN_WAIT_TIME_S"), "how long SIGTERM waits for in-flight requests (env MESHD_DRAIN_TIMEOUT)")
	fs.DurationVar(&f.connectTO, "connect-timeout", envDuration(5*time.Second, "MESHD_CONNECT_TIMEOUT"), "upstream connect timeout (env MESHD_CONNECT_TIMEOUT)")
}

func (f *runFlags) options(logger *slog.Logger) proxy.Options {
	return proxy.Options{
		Node:           f.node,
		IngressAddr:    joinHostPort(f.ingressAddr, f.ingressPort),
		EgressAddr:     joinHostPort(f.egressAddr, f.egressPort),
		AdminAddr:      f.adminAddr,
		DrainTimeout:   f.drainTimeout,
		ConnectTimeout: f.connectTO,
		Logger:         logger,
		Version:        version,
	}
}

func joinHostPort(host string, port int) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + strconv.Itoa(port)
	}
	return host + ":" + strconv.Itoa(port)
}

func cmdRun(args []string, _, stderr io.Writer) int {
	fs := flag.NewFlagSet("meshd run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f runFlags
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if f.configPath == "" || f.node == "" {
		fmt.Fprintln(stderr, "meshd run: -c FILE and --node NAME are required (or MESHD_CONFIG and MESHD_NODE)")
		return 2
	}
	logger, err := telemetry.NewLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		fmt.Fprintln(stderr, "meshd run:", err)
		return 2
	}
	cfg, err := config.ParseFile(f.configPath)
	if err != nil {
		fmt.Fprintf(stderr, "meshd run: %v\n", err)
		return 1
	}
	return serve(cfg, "file:"+f.configPath, f.options(logger), logger, func() (*config.Config, error) {
		return config.ParseFile(f.configPath)
	}, nil)
}

// serve runs a server until SIGINT/SIGTERM, reloading on SIGHUP with reload (when not
// nil). ready, when set, is called once the listeners are bound.
func serve(cfg *config.Config, source string, opts proxy.Options, logger *slog.Logger,
	reload func() (*config.Config, error), ready func(*proxy.Server)) int {
	srv, err := proxy.New(opts)
	if err != nil {
		logger.Error("cannot start", "err", err)
		return 1
	}
	// Signals are caught before listening, so a SIGTERM that follows /ready drains.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	ctx := context.Background()
	if _, err := srv.Apply(ctx, cfg, source); err != nil {
		logger.Error("config rejected", "err", err)
		return 1
	}
	if err := srv.Start(); err != nil {
		logger.Error("cannot start", "err", err)
		return 1
	}
	if ready != nil {
		ready(srv)
	}
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			if reload == nil {
				continue
			}
			next, err := reload()
			if err == nil {
				_, err = srv.Apply(ctx, next, source)
			}
			if err != nil {
				logger.Error("reload rejected; the previous config keeps serving", "err", err)
			}
			continue
		}
		logger.Info("draining", "signal", sig.String(), "timeout", opts.DrainTimeout)
		if err := srv.Shutdown(ctx); err != nil {
			logger.Warn("drain incomplete", "err", err)
		}
		logger.Info("stopped")
		return 0
	}
	return 0
}

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("meshd validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", env("", "MESHD_CONFIG"), "config file, YAML or JSON")
	node := fs.String("node", "", "also compile the routing table of this virtual node")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" && fs.NArg() == 1 {
		*path = fs.Arg(0)
	}
	if *path == "" {
		fmt.Fprintln(stderr, "meshd validate: -c FILE is required")
		return 2
	}
	cfg, err := config.ParseFile(*path)
	if err == nil {
		err = cfg.Validate()
	}
	if err == nil && *node != "" {
		_, err = router.Compile(cfg, *node)
	}
	if err != nil {
		var errs *config.Errors
		if errors.As(err, &errs) {
			for _, fe := range errs.List {
				fmt.Fprintf(stdout, "%s: %v\n", *path, fe)
			}
		} else {
			fmt.Fprintf(stdout, "%s: %v\n", *path, err)
		}
		return 1
	}
	fmt.Fprintf(stdout, "%s: valid (mesh %s, %d virtual nodes, %d routes, version %s)\n",
		*path, cfg.Mesh.MeshName, len(cfg.VirtualNodes), len(cfg.Routes), cfg.Digest())
	return 0
}
