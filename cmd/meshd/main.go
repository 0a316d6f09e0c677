// Command meshd is the meshd sidecar proxy.
//
//	meshd run -c mesh.yaml --node NAME   serve a virtual node's ingress and egress
//	meshd validate -c mesh.yaml          check a config; every error on its own line
//	meshd health / meshd wait-ready      ask the local meshd whether it is LIVE / wait until it is
//	meshd canary                         shift a route's weight to a canary step by step, roll back on errors
//	meshd import INPUT...                convert CloudFormation, controller manifests, describe-* outputs
//	meshd ca init|issue --dir DIR ...    the mesh CA: a root, and workload certificates
//	meshd demo                           run an embedded two-version canary demo
//	meshd version
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/internal/h2"
	"github.com/meshd/meshd/proxy"
	"github.com/meshd/meshd/proxy/state"
	"github.com/meshd/meshd/router"
	"github.com/meshd/meshd/telemetry"
	"github.com/meshd/meshd/telemetry/tracing"
	meshtls "github.com/meshd/meshd/tls"
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
	case "health":
		return cmdHealth(args[1:], stdout, stderr)
	case "wait-ready":
		return cmdWaitReady(args[1:], stdout, stderr)
	case "canary":
		return cmdCanary(args[1:], stdout, stderr)
	case "import":
		return cmdImport(args[1:], stdout, stderr)
	case "demo":
		return cmdDemo(args[1:], stdout, stderr)
	case "iptables":
		return cmdIptables(args[1:], stdout, stderr)
	case "ca":
		return cmdCA(args[1:], stdout, stderr)
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
  meshd run -c FILE|DIR|--config-url URL --node NAME [--admin-addr ADDR] [--ingress-port N] [--egress-port N]
  meshd run -c FILE|DIR|--config-url URL --gateway NAME [--gateway-bind ADDR]
  meshd validate -c FILE|DIR [--node NAME | --gateway NAME]
  meshd health [--admin-addr ADDR] [--timeout 2s]       exit 0 when the local meshd is LIVE
  meshd wait-ready [--admin-addr ADDR] [--timeout 60s]  wait until it is (an app's entrypoint)
  meshd canary -c FILE|--put URL,... --route ROUTER/ROUTE --canary NODE --metrics URL,... [--steps 10,50,100] [--interval 1m] [--max-error-rate 0.01] [--max-p99 D] [--min-requests 20] [--timeout D] [--dry-run]
  meshd canary promote|abort -c FILE|--put URL,... --route ROUTER/ROUTE --canary NODE
  meshd import [-o FILE] [--parameter K=V ...] [--mesh NAME] [--tls-dir DIR] INPUT...
  meshd demo [--egress-port N] [--ingress-port N] [--admin-addr ADDR]
  meshd iptables print|apply|clean [--app-ports LIST] [--ignored-uid N] [...]
  meshd ca init --dir DIR [--force]
  meshd ca issue --dir DIR --mesh MESH --node NAME [--ttl 24h] [--dns NAME,...] [--out DIR] [--every 8h]
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

// envLookup is env that also names the variable the value came from.
func envLookup(names ...string) (value, name string) {
	for _, n := range names {
		if v, ok := os.LookupEnv(n); ok && v != "" {
			return v, n
		}
	}
	return "", ""
}

// envErr is an environment variable whose value did not parse.
type envErr struct{ flag, name, value, want string }

func (e envErr) String() string {
	return fmt.Sprintf("%s=%q: want %s (or set --%s)", e.name, e.value, e.want, e.flag)
}

// The env readers of the run flags: a value that does not parse is not replaced by the
// default in silence; it is recorded, and run refuses to start naming it (unless the
// command line sets the flag).
func (f *runFlags) envInt(flag string, def int, names ...string) int {
	v, name := envLookup(names...)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		f.envErrs = append(f.envErrs, envErr{flag, name, v, "a whole number"})
		return def
	}
	return n
}

func (f *runFlags) envBool(flag string, def bool, names ...string) bool {
	v, name := envLookup(names...)
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		f.envErrs = append(f.envErrs, envErr{flag, name, v, "true or false (1 or 0)"})
		return def
	}
	return b
}

func (f *runFlags) envDuration(flag string, def time.Duration, names ...string) time.Duration {
	v, name := envLookup(names...)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		// App Mesh's LISTENER_DRAIN_WAIT_TIME_S is plain seconds.
		if n, err2 := strconv.Atoi(v); err2 == nil {
			return time.Duration(n) * time.Second
		}
		f.envErrs = append(f.envErrs, envErr{flag, name, v, "a duration such as 20s (or whole seconds)"})
		return def
	}
	return d
}

type runFlags struct {
	// envErrs are environment variables whose values did not parse, by the flag they
	// set: an error at start unless the command line sets that flag.
	envErrs []envErr
	// nodeEnv is the node the environment named, with the mesh of App Mesh's forms
	// (checked against the config's at start); nodeEnvErr a value that does not parse.
	nodeEnv      nodeEnv
	nodeEnvErr   error
	configPath   string
	node         string
	gateway      string // the virtual gateway served instead of a node (docs/gateway.md)
	gatewayBind  string
	adminAddr    string
	ingressPort  int
	egressPort   int
	ingressAddr  string
	egressAddr   string
	logLevel     string
	logFormat    string
	drainTimeout time.Duration
	drainGrace   time.Duration
	connectTO    time.Duration
	firstReqTO   time.Duration
	firstReqEnv  string // MESHD_FIRST_REQUEST_TIMEOUT when it does not parse (refused by run)
	maxReplay    int
	http2Limits  string
	spiffeSocket string
	emf          string
	emfInterval  time.Duration

	// DNS service discovery (docs/config-reference.md#servicediscovery).
	dnsResolvers string
	dnsMinTTL    time.Duration
	dnsMaxTTL    time.Duration
	dnsNXGrace   time.Duration

	// Config sources and the control endpoint (docs/reload.md).
	watch          bool
	configURL      string
	pollInterval   time.Duration
	persist        string
	adminTokenFile string
	adminToken     string // from MESHD_ADMIN_TOKEN, or read from adminTokenFile
	requireIfMatch bool

	// Tracing (docs/tracing.md).
	tracingEndpoint    string
	tracingProtocol    string
	tracingSampleRatio string // parsed by tracingConfig, so a bad value is an error
	tracingPropagators string
	tracingInsecure    bool
	xray               bool
	// otlpBase is OTEL_EXPORTER_OTLP_ENDPOINT when it gave the endpoint's default: a base
	// URL, to which OTLP/HTTP adds /v1/traces.
	otlpBase string
	// Metrics (docs/metrics.md).
	metricsLevel   string
	envoyStatsTags bool

	// Connection limits and overload (README's flag table).
	maxConns         int
	maxListenerConns int
	overloadHeap     string // parsed by limits, so a bad value is an error naming it
	overloadConns    int
	// App Mesh's Envoy settings (docs/env.md).
	adminAccessLog string
	initialFetchTO time.Duration
	concurrency    int
	serviceName    string
	// --config-url credentials: headers, and a bearer token re-read at each fetch.
	urlHeaders   headerList
	urlTokenFile string
	// cpuProfile: where a CPU profile of the whole run goes (bench/scripts/pgo-profile.sh).
	cpuProfile string
}

func (f *runFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.configPath, "c", env("", "MESHD_CONFIG"), "config file (YAML or JSON; describe-* outputs too) or directory of them (env MESHD_CONFIG)")
	f.nodeEnv, f.nodeEnvErr = nodeFromEnvVars()
	envNode, envGateway := f.nodeEnv.node, env("", "MESHD_GATEWAY")
	if f.nodeEnv.gateway {
		envNode, envGateway = "", cmp.Or(envGateway, f.nodeEnv.node)
	}
	fs.StringVar(&f.node, "node", envNode, "virtual node this sidecar serves (env MESHD_NODE, or App Mesh's env APPMESH_RESOURCE_ARN, env APPMESH_VIRTUAL_NODE_NAME or env APPMESH_RESOURCE_NAME: mesh/MESH/virtualNode/NODE or its ARN, whose mesh must be the config's)")
	fs.StringVar(&f.gateway, "gateway", envGateway, "virtual gateway to serve instead of a node: its listeners on --gateway-bind, its gateway routes (docs/gateway.md) (env MESHD_GATEWAY, or App Mesh's env APPMESH_RESOURCE_ARN, APPMESH_VIRTUAL_NODE_NAME, APPMESH_RESOURCE_NAME naming mesh/MESH/virtualGateway/NAME or its ARN)")
	fs.StringVar(&f.gatewayBind, "gateway-bind", env(proxy.DefaultGatewayAddr, "MESHD_GATEWAY_BIND"), "address the gateway's listeners bind, each on its port; every address by default, since a gateway faces clients (env MESHD_GATEWAY_BIND)")
	adminDef, adminErrs := adminAddrDefault()
	f.envErrs = append(f.envErrs, adminErrs...)
	fs.StringVar(&f.adminAddr, "admin-addr", adminDef, "admin listener address, or \"off\" (env MESHD_ADMIN_ADDR; else 127.0.0.1, or [::1] with App Mesh's env ENVOY_ADMIN_ACCESS_ENABLE_IPV6=true, on App Mesh's env ENVOY_ADMIN_ACCESS_PORT or 9901)")
	fs.StringVar(&f.adminAccessLog, "admin-access-log", env("", "MESHD_ADMIN_ACCESS_LOG", "ENVOY_ADMIN_ACCESS_LOG_FILE"), "append a line per admin request to this file, /dev/stdout included (env MESHD_ADMIN_ACCESS_LOG, or App Mesh's env ENVOY_ADMIN_ACCESS_LOG_FILE)")
	fs.DurationVar(&f.initialFetchTO, "initial-fetch-timeout", f.envDuration("initial-fetch-timeout", 30*time.Second, "MESHD_INITIAL_FETCH_TIMEOUT", "ENVOY_INITIAL_FETCH_TIMEOUT"), "bound on the first fetch of --config-url at start (0: none, as App Mesh's 0); then the persisted config, else exit 1 (env MESHD_INITIAL_FETCH_TIMEOUT, or App Mesh's env ENVOY_INITIAL_FETCH_TIMEOUT in seconds)")
	fs.IntVar(&f.concurrency, "concurrency", f.envInt("concurrency", 0, "MESHD_CONCURRENCY", "ENVOY_CONCURRENCY"), "GOMAXPROCS: the CPUs meshd's goroutines run on at once; 0 (or App Mesh's -1): Go's default, the CPUs available (env MESHD_CONCURRENCY, or App Mesh's env ENVOY_CONCURRENCY)")
	fs.StringVar(&f.serviceName, "tracing-service-name", env("", "MESHD_TRACING_SERVICE_NAME", "APPMESH_RESOURCE_CLUSTER", "XRAY_SEGMENT_NAME"), "service.name of meshd's spans (the X-Ray segment name) and server_info's service_cluster; default the node's name (env MESHD_TRACING_SERVICE_NAME, or App Mesh's env APPMESH_RESOURCE_CLUSTER, env XRAY_SEGMENT_NAME)")
	f.urlHeaders = headersFromEnv("MESHD_CONFIG_URL_HEADERS")
	fs.Var(&f.urlHeaders, "config-url-header", "'Name: value' sent with every --config-url fetch, repeatable (never logged) (env MESHD_CONFIG_URL_HEADERS, one header a line)")
	fs.StringVar(&f.urlTokenFile, "config-url-token-file", env("", "MESHD_CONFIG_URL_TOKEN_FILE"), "file holding a bearer token for --config-url, read at every fetch so a rotated token is used (env MESHD_CONFIG_URL_TOKEN_FILE)")
	fs.IntVar(&f.ingressPort, "ingress-port", f.envInt("ingress-port", 15000, "MESHD_INGRESS_PORT", "APPMESH_ENVOY_INGRESS_PORT"), "ingress port (env MESHD_INGRESS_PORT)")
	fs.IntVar(&f.egressPort, "egress-port", f.envInt("egress-port", 15001, "MESHD_EGRESS_PORT", "APPMESH_ENVOY_EGRESS_PORT"), "egress port (env MESHD_EGRESS_PORT)")
	fs.StringVar(&f.ingressAddr, "ingress-bind", env("0.0.0.0", "MESHD_INGRESS_BIND"), "ingress bind address (env MESHD_INGRESS_BIND)")
	fs.StringVar(&f.egressAddr, "egress-bind", env("127.0.0.1", "MESHD_EGRESS_BIND"), "egress bind address; loopback keeps meshd from being an open proxy (env MESHD_EGRESS_BIND)")
	fs.StringVar(&f.logLevel, "log-level", env("info", "MESHD_LOG_LEVEL", "ENVOY_LOG_LEVEL"), "trace, debug, info, warning, error, critical or off (env MESHD_LOG_LEVEL, or App Mesh's ENVOY_LOG_LEVEL)")
	fs.StringVar(&f.cpuProfile, "cpu-profile", env("", "MESHD_CPU_PROFILE"), "write a Go CPU profile (pprof) of the whole run to this file, finished when meshd exits; for performance reports and default.pgo (env MESHD_CPU_PROFILE)")
	fs.StringVar(&f.logFormat, "log-format", env("text", "MESHD_LOG_FORMAT"), "text or json (env MESHD_LOG_FORMAT)")
	fs.DurationVar(&f.drainTimeout, "drain-timeout", f.envDuration("drain-timeout", 20*time.Second, "MESHD_DRAIN_TIMEOUT", "LISTENER_DRAIN_WAIT_TIME_S"), "how long SIGTERM waits for in-flight requests (env MESHD_DRAIN_TIMEOUT)")
	fs.DurationVar(&f.drainGrace, "drain-grace", f.envDuration("drain-grace", 3*time.Second, "MESHD_DRAIN_GRACE"), "after SIGTERM, how long /ready fails while the listeners keep serving, before they close and in-flight requests drain (env MESHD_DRAIN_GRACE; SIGINT skips it)")
	fs.StringVar(&f.emf, "cloudwatch-emf", env("", "MESHD_CLOUDWATCH_EMF"), "write CloudWatch Embedded Metric Format lines (per cluster and listener: requests, 4xx, 5xx, local errors, retries, latency) to stdout, stderr or a file, for CloudWatch without an agent (env MESHD_CLOUDWATCH_EMF)")
	fs.DurationVar(&f.emfInterval, "cloudwatch-emf-interval", f.envDuration("cloudwatch-emf-interval", time.Minute, "MESHD_CLOUDWATCH_EMF_INTERVAL"), "how often --cloudwatch-emf lines are written (env MESHD_CLOUDWATCH_EMF_INTERVAL)")
	fs.StringVar(&f.http2Limits, "http2-limits", env("", "MESHD_HTTP2_LIMITS"), "HTTP/2 defences of downstream connections, key=value,... over Envoy's edge defaults: "+strings.Join(h2.LimitNames(), ", ")+" (docs/http2.md) (env MESHD_HTTP2_LIMITS)")
	fs.StringVar(&f.spiffeSocket, "spiffe-socket", spiffeSocketEnv(), "SPIFFE Workload API endpoint (unix:///path or tcp://ip:port) that serves the certificates of sds sources in tls blocks, e.g. a SPIRE agent's socket (env MESHD_SPIFFE_SOCKET, or env SPIFFE_ENDPOINT_SOCKET, or App Mesh's env APPMESH_SDS_SOCKET_PATH, a socket path)")
	fs.IntVar(&f.maxReplay, "max-replay-body", f.envInt("max-replay-body", 65536, "MESHD_MAX_REPLAY_BODY"), "bytes of a request body kept so a retry can send it again, for every protocol; larger bodies are retried only when none of them was sent (env MESHD_MAX_REPLAY_BODY)")
	fs.StringVar(&f.dnsResolvers, "dns-resolver", env("", "MESHD_DNS_RESOLVER"), "DNS servers (ip or ip:port, comma-separated) for service discovery names, instead of the config's dnsResolvers and /etc/resolv.conf (env MESHD_DNS_RESOLVER)")
	fs.DurationVar(&f.dnsMinTTL, "dns-min-ttl", f.envDuration("dns-min-ttl", discovery.DefaultMinTTL, "MESHD_DNS_MIN_TTL"), "a followed name is re-resolved no more often than this, whatever its TTL (env MESHD_DNS_MIN_TTL)")
	fs.DurationVar(&f.dnsMaxTTL, "dns-max-ttl", f.envDuration("dns-max-ttl", discovery.DefaultMaxTTL, "MESHD_DNS_MAX_TTL"), "and at least this often (env MESHD_DNS_MAX_TTL)")
	fs.DurationVar(&f.dnsNXGrace, "dns-nxdomain-grace", f.envDuration("dns-nxdomain-grace", discovery.DefaultNXDomainGrace, "MESHD_DNS_NXDOMAIN_GRACE"), "a name that stops existing keeps its endpoints this long (env MESHD_DNS_NXDOMAIN_GRACE)")
	fs.DurationVar(&f.connectTO, "connect-timeout", f.envDuration("connect-timeout", 5*time.Second, "MESHD_CONNECT_TIMEOUT"), "upstream connect timeout (env MESHD_CONNECT_TIMEOUT)")
	firstReq := proxy.DefaultFirstRequestTimeout
	if v := env("", "MESHD_FIRST_REQUEST_TIMEOUT"); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			firstReq = d
		} else {
			f.firstReqEnv = v
		}
	}
	fs.DurationVar(&f.firstReqTO, "first-request-timeout", firstReq, "an HTTP connection must complete its first request head this long after accept (after the TLS handshake on a TLS listener), or it is closed (HTTP/1.1: 408 if part of a head came; HTTP/2: GOAWAY); > 0, tcp listeners and opaque egress are not bound by it (env MESHD_FIRST_REQUEST_TIMEOUT)")
	fs.IntVar(&f.maxConns, "max-connections", f.envInt("max-connections", 0, "MESHD_MAX_CONNECTIONS"), "open downstream connections of the data-plane listeners together; at the bound an idle keep-alive connection is closed to make room, else the new one is closed (counted); 0: (RLIMIT_NOFILE - 64) / 2, -1: no bound (env MESHD_MAX_CONNECTIONS)")
	fs.IntVar(&f.maxListenerConns, "max-listener-connections", f.envInt("max-listener-connections", 0, "MESHD_MAX_LISTENER_CONNECTIONS"), "open downstream connections of each listener (ingress; egress with its IPv6 twin), shed and refused the same way; 0: no bound of its own (env MESHD_MAX_LISTENER_CONNECTIONS)")
	fs.StringVar(&f.overloadHeap, "overload-heap", env("auto", "MESHD_OVERLOAD_HEAP"), "heap in use at which meshd sheds load (new connections closed, new requests 503 overloaded, keep-alive off) until it is back under 90%: bytes, or with a KiB, MiB or GiB suffix; auto: half the cgroup memory limit, off without one; 0 or off: off (env MESHD_OVERLOAD_HEAP)")
	fs.IntVar(&f.overloadConns, "overload-connections", f.envInt("overload-connections", 0, "MESHD_OVERLOAD_CONNECTIONS"), "open downstream connections at which meshd sheds load the same way, until under 90%; 0: off (env MESHD_OVERLOAD_CONNECTIONS)")
	fs.BoolVar(&f.watch, "watch", f.envBool("watch", true, "MESHD_WATCH"), "reload the -c file when it changes, renames and symlink swaps included (env MESHD_WATCH)")
	fs.StringVar(&f.configURL, "config-url", env("", "MESHD_CONFIG_URL"), "poll the config from this http(s) URL instead of -c (env MESHD_CONFIG_URL)")
	fs.DurationVar(&f.pollInterval, "poll-interval", f.envDuration("poll-interval", config.DefaultPollInterval, "MESHD_POLL_INTERVAL"), "how often --config-url is polled (env MESHD_POLL_INTERVAL)")
	fs.StringVar(&f.persist, "persist", env("", "MESHD_PERSIST"), "write each applied config here; start from it when the config source fails (env MESHD_PERSIST)")
	fs.StringVar(&f.adminTokenFile, "admin-token-file", env("", "MESHD_ADMIN_TOKEN_FILE"), "file holding the admin API bearer token; MESHD_ADMIN_TOKEN sets the token itself (env MESHD_ADMIN_TOKEN_FILE)")
	f.adminToken = env("", "MESHD_ADMIN_TOKEN")
	fs.BoolVar(&f.requireIfMatch, "require-if-match", f.envBool("require-if-match", false, "MESHD_REQUIRE_IF_MATCH"), "PUT /config must carry If-Match (env MESHD_REQUIRE_IF_MATCH)")
	fs.StringVar(&f.metricsLevel, "metrics-level", env(proxy.MetricsLevelDefault, "MESHD_METRICS_LEVEL"), "series of the admin /stats/prometheus: default, or detailed (adds per-endpoint series with their address, and latency per route and per listener) (env MESHD_METRICS_LEVEL)")
	fs.BoolVar(&f.envoyStatsTags, "envoy-stats-tags", f.envBool("envoy-stats-tags", false, "MESHD_ENVOY_STATS_TAGS", "ENABLE_ENVOY_STATS_TAGS"), "add App Mesh's stats tags (appmesh_mesh, appmesh_virtual_node, appmesh_virtual_service) to the exported series (env MESHD_ENVOY_STATS_TAGS, or App Mesh's ENABLE_ENVOY_STATS_TAGS=1)")
	fs.StringVar(&f.tracingEndpoint, "tracing-endpoint", env("", "MESHD_TRACING_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"), "OTLP receiver of traces, host:port or http(s)://host:port[/path]; empty: tracing off (env MESHD_TRACING_ENDPOINT, or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT)")
	if env("", "MESHD_TRACING_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		f.otlpBase = env("", "OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	fs.StringVar(&f.tracingProtocol, "tracing-protocol", env(tracing.ProtocolGRPC, "MESHD_TRACING_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"), "OTLP protocol: grpc or http (protobuf) (env MESHD_TRACING_PROTOCOL, or OTEL_EXPORTER_OTLP_PROTOCOL)")
	fs.StringVar(&f.tracingSampleRatio, "tracing-sample-ratio", env("1", "MESHD_TRACING_SAMPLE_RATIO", "XRAY_SAMPLING_RATE"), "share of new traces sampled, 0 to 1; a request continuing a caller's trace follows the caller's decision (env MESHD_TRACING_SAMPLE_RATIO, or App Mesh's XRAY_SAMPLING_RATE)")
	fs.StringVar(&f.tracingPropagators, "tracing-propagators", env(strings.Join(tracing.DefaultPropagators, ","), "MESHD_TRACING_PROPAGATORS"), "trace context formats read, in order of preference: tracecontext, b3, b3multi, xray, baggage; the first is written upstream, with the others the request carried (env MESHD_TRACING_PROPAGATORS)")
	fs.BoolVar(&f.tracingInsecure, "tracing-insecure", f.envBool("tracing-insecure", false, "MESHD_TRACING_INSECURE", "OTEL_EXPORTER_OTLP_INSECURE"), "send to a host:port --tracing-endpoint in plain text, not TLS (an http:// URL says so itself) (env MESHD_TRACING_INSECURE, or OTEL_EXPORTER_OTLP_INSECURE)")
	fs.BoolVar(&f.xray, "tracing-xray", f.envBool("tracing-xray", false, "MESHD_TRACING_XRAY", "ENABLE_ENVOY_XRAY_TRACING"), "X-Ray: also write X-Amzn-Trace-Id upstream, time-based trace ids; turns tracing on to "+tracing.DefaultXRayEndpoint+" (an ADOT collector's OTLP receiver) when no endpoint is given (env MESHD_TRACING_XRAY, or App Mesh's ENABLE_ENVOY_XRAY_TRACING)")
}

// tracingFlags names the flag of each tracing.Config field, for errors.
var tracingFlags = map[string]string{
	"Endpoint": "--tracing-endpoint", "Protocol": "--tracing-protocol", "SampleRatio": "--tracing-sample-ratio",
	"Propagators": "--tracing-propagators",
}

// tracingConfig is the tracing configuration the flags ask for (Endpoint "" is tracing
// off); a bad value is an error naming its flag.
func (f *runFlags) tracingConfig() (tracing.Config, error) {
	cfg := tracing.Config{
		Endpoint:    strings.TrimSpace(f.tracingEndpoint),
		Protocol:    strings.ToLower(strings.TrimSpace(f.tracingProtocol)),
		Insecure:    f.tracingInsecure,
		Propagators: splitList(f.tracingPropagators),
		ServiceName: cmp.Or(f.serviceName, f.node, f.gateway),
		XRay:        f.xray,
	}
	ratio, err := strconv.ParseFloat(strings.TrimSpace(f.tracingSampleRatio), 64)
	if err != nil || math.IsNaN(ratio) || ratio < 0 || ratio > 1 {
		return cfg, fmt.Errorf("--tracing-sample-ratio %q: want a number from 0 to 1", f.tracingSampleRatio)
	}
	cfg.SampleRatio = ratio
	if cfg.Protocol == "http/json" {
		return cfg, fmt.Errorf("--tracing-protocol %q: OTLP/HTTP with JSON is not supported; want grpc or http (protobuf)", f.tracingProtocol)
	}
	isHTTP := cfg.Protocol == tracing.ProtocolHTTP || cfg.Protocol == "http/protobuf"
	switch {
	case cfg.Endpoint == "" && f.xray:
		cfg.Endpoint = tracing.DefaultXRayEndpoint
		if isHTTP {
			cfg.Endpoint = "http://localhost:4318"
		}
	case isHTTP && cfg.Endpoint != "" && cfg.Endpoint == f.otlpBase:
		// OTEL_EXPORTER_OTLP_ENDPOINT is a base URL: the traces path goes after its own.
		if u, err := url.Parse(cfg.Endpoint); err == nil && strings.Contains(cfg.Endpoint, "://") {
			u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/traces"
			cfg.Endpoint = u.String()
		}
	}
	if err := cfg.Validate(); err != nil {
		var fe *tracing.FieldError
		if errors.As(err, &fe) {
			name, _, _ := strings.Cut(fe.Field, "[")
			if flag, ok := tracingFlags[name]; ok {
				return cfg, fmt.Errorf("%s %q: %s", flag, fe.Value, fe.Msg)
			}
		}
		return cfg, err
	}
	return cfg, nil
}

// startTracing starts the tracer the flags ask for and sets it in opts. The returned
// stop flushes it (after the drain: the last requests' spans go out); it is a no-op
// when tracing is off.
func (f *runFlags) startTracing(logger *slog.Logger, opts *proxy.Options) (stop func(), err error) {
	cfg, err := f.tracingConfig()
	if err != nil {
		return nil, err
	}
	cfg.Logger = logger
	tr, err := tracing.New(context.Background(), cfg)
	if err != nil || tr == nil {
		return func() {}, err
	}
	opts.Tracer = tr
	if cfg.Protocol == tracing.ProtocolHTTP || cfg.Protocol == "http/protobuf" {
		// meshd's own HTTP client sends OTLP/HTTP: these OTel variables do not reach it.
		for _, n := range []string{"OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_CERTIFICATE", "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE"} {
			if os.Getenv(n) != "" {
				logger.Warn("ignored over OTLP/HTTP: meshd exports with a 10s timeout and the system roots; use --tracing-protocol grpc to have it honoured", "env", n)
			}
		}
	}
	logger.Info("tracing on", "endpoint", cfg.Endpoint, "protocol", cmp.Or(cfg.Protocol, tracing.ProtocolGRPC),
		"sample_ratio", cfg.SampleRatio, "propagators", cmp.Or(f.tracingPropagators, "default"), "xray", cfg.XRay)
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tr.Shutdown(ctx); err != nil {
			logger.Warn("trace flush incomplete", "err", err)
		}
	}, nil
}

// loadToken reads --admin-token-file, which takes precedence over MESHD_ADMIN_TOKEN.
func (f *runFlags) loadToken() error {
	if f.adminTokenFile == "" {
		return nil
	}
	b, err := os.ReadFile(f.adminTokenFile)
	if err != nil {
		return fmt.Errorf("--admin-token-file: %w", err)
	}
	f.adminToken = strings.TrimSpace(string(b))
	if f.adminToken == "" {
		return fmt.Errorf("--admin-token-file %s: the file is empty", f.adminTokenFile)
	}
	return nil
}

// envMesh is the mesh the environment's node variable names, when that node (or
// gateway) is the one served (--node or --gateway on the command line wins, and then the
// variable's mesh does not bind).
func (f *runFlags) envMesh() string {
	if cmp.Or(f.node, f.gateway) != f.nodeEnv.node {
		return ""
	}
	return f.nodeEnv.mesh
}

func (f *runFlags) options(logger *slog.Logger, level *slog.LevelVar) (proxy.Options, error) {
	h2lim, err := h2.ParseLimits(f.http2Limits, h2.DefaultLimits())
	if err != nil {
		return proxy.Options{}, fmt.Errorf("--http2-limits: %w", err)
	}
	lim, err := f.limits(logger)
	if err != nil {
		return proxy.Options{}, err
	}
	return proxy.Options{
		HTTP2:                 h2lim,
		TLS:                   meshtls.LoaderOptions{WorkloadAPIAddr: f.spiffeSocket, Logger: logger},
		LogLevel:              level,
		Node:                  f.node,
		Gateway:               f.gateway,
		GatewayAddr:           f.gatewayBind,
		Mesh:                  f.envMesh(),
		MeshFrom:              f.nodeEnv.from(),
		IngressAddr:           joinHostPort(f.ingressAddr, f.ingressPort),
		EgressAddr:            joinHostPort(f.egressAddr, f.egressPort),
		AdminAddr:             f.adminAddr,
		DrainTimeout:          f.drainTimeout,
		DrainGrace:            f.drainGrace,
		MaxReplayBody:         f.maxReplay,
		ReleaseMemory:         true,
		CloudWatchEMF:         f.emf,
		CloudWatchEMFInterval: f.emfInterval,
		DNSResolvers:          splitList(f.dnsResolvers),
		DNSMinTTL:             f.dnsMinTTL,
		DNSMaxTTL:             f.dnsMaxTTL,
		DNSNXDomainGrace:      f.dnsNXGrace,
		ConnectTimeout:        f.connectTO,
		FirstRequestTimeout:   f.firstReqTO,
		Logger:                logger,
		Version:               version,
		AdminToken:            f.adminToken,
		RequireIfMatch:        f.requireIfMatch,
		PersistPath:           f.persist,
		MetricsLevel:          f.metricsLevel,
		EnvoyStatsTags:        f.envoyStatsTags,
		AdminAccessLog:        f.adminAccessLog,
		CommandLineOptions:    f.commandLineOptions(),
		Limits:                lim,
	}, nil
}

// limits checks the connection limit and overload flags and resolves their defaults;
// an explicit bound the fd limit cannot back is warned about, naming the way out.
func (f *runFlags) limits(logger *slog.Logger) (proxy.ConnLimits, error) {
	switch {
	case f.maxConns < -1:
		return proxy.ConnLimits{}, fmt.Errorf("--max-connections %d: want > 0, 0 (derived from RLIMIT_NOFILE) or -1 (no bound)", f.maxConns)
	case f.maxListenerConns < 0:
		return proxy.ConnLimits{}, fmt.Errorf("--max-listener-connections %d: want > 0, or 0 (no bound of its own)", f.maxListenerConns)
	case f.overloadConns < 0:
		return proxy.ConnLimits{}, fmt.Errorf("--overload-connections %d: want > 0, or 0 (off)", f.overloadConns)
	}
	heap, err := parseOverloadHeap(f.overloadHeap, cgroupMemoryMax)
	if err != nil {
		return proxy.ConnLimits{}, fmt.Errorf("--overload-heap %q (or MESHD_OVERLOAD_HEAP): %w", f.overloadHeap, err)
	}
	nofile := proxy.NoFileLimit()
	if def := proxy.DefaultMaxConnections(nofile); nofile > 0 && (f.maxConns > def || f.maxConns == -1) {
		logger.Warn("--max-connections is above what the fd limit can back: past RLIMIT_NOFILE meshd sheds idle connections and stops accepting until descriptors free up; raise the fd limit (ulimit -n) or lower --max-connections",
			"max_connections", f.maxConns, "rlimit_nofile", nofile, "backed", def)
	}
	return proxy.ConnLimits{MaxConnections: f.maxConns, MaxListenerConnections: f.maxListenerConns,
		OverloadHeapBytes: heap, OverloadConnections: f.overloadConns}, nil
}

// parseOverloadHeap reads --overload-heap: "auto" (half of the cgroup memory limit
// memMax reports; off without one), "0" or "off", or bytes with an optional KiB, MiB or
// GiB suffix.
func parseOverloadHeap(v string, memMax func() uint64) (uint64, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "auto":
		return memMax() / 2, nil
	case "0", "off":
		return 0, nil
	}
	num, mult := v, uint64(1)
	for _, u := range []struct {
		suffix string
		mult   uint64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if n, ok := strings.CutSuffix(v, u.suffix); ok {
			num, mult = n, u.mult
			break
		}
	}
	n, err := strconv.ParseUint(strings.TrimSpace(num), 10, 64)
	if err != nil || n == 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("want auto, off, or a size such as 512MiB (bytes, KiB, MiB or GiB)")
	}
	return n * mult, nil
}

// cgroupMemoryMax is the memory limit of the process's cgroup (v2 memory.max, else v1
// memory.limit_in_bytes); 0 when there is none or it cannot be read.
func cgroupMemoryMax() uint64 {
	for _, p := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || n >= 1<<62 { // "max", or v1's "unlimited" (a huge number)
			return 0
		}
		return n
	}
	return 0
}

// commandLineOptions are /server_info's command_line_options (Envoy's names where the
// meaning is the same). Nothing secret: a URL is shown without its query (a presigned
// URL's signature), headers and tokens not at all.
func (f *runFlags) commandLineOptions() map[string]any {
	m := map[string]any{
		"log_level":       f.logLevel,
		"concurrency":     runtime.GOMAXPROCS(0),
		"service_cluster": cmp.Or(f.serviceName, f.node, f.gateway),
		"config_path":     f.configPath,
	}
	if f.configURL != "" {
		m["config_path"] = config.RedactURL(f.configURL)
	}
	if md := platformMetadata(); len(md) > 0 {
		m["node_metadata"] = md
	}
	return m
}

// splitList splits a comma-separated flag value, dropping empty elements.
func splitList(v string) []string {
	var out []string
	for _, e := range strings.Split(v, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
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
	if code := f.checkServed(fs, stderr); code != 0 {
		return code
	}
	if (f.configPath == "") == (f.configURL == "") || (f.node == "") == (f.gateway == "") {
		fmt.Fprintln(stderr, "meshd run: one of -c FILE or --config-url URL, and one of --node NAME or --gateway NAME, are required (or MESHD_CONFIG / MESHD_CONFIG_URL and MESHD_NODE / MESHD_GATEWAY)")
		return 2
	}
	if rs := splitList(f.dnsResolvers); len(rs) > 0 {
		if _, err := discovery.ClientConfigFor(rs); err != nil {
			fmt.Fprintln(stderr, "meshd run: --dns-resolver:", err)
			return 2
		}
	}
	if f.dnsMinTTL <= 0 || f.dnsMaxTTL < f.dnsMinTTL || f.dnsNXGrace < 0 {
		fmt.Fprintf(stderr, "meshd run: --dns-min-ttl %v, --dns-max-ttl %v, --dns-nxdomain-grace %v: want 0 < min <= max and grace >= 0\n", f.dnsMinTTL, f.dnsMaxTTL, f.dnsNXGrace)
		return 2
	}
	for _, e := range f.envErrs {
		if !flagSet(fs, e.flag) {
			fmt.Fprintln(stderr, "meshd run:", e)
			return 2
		}
	}
	if f.firstReqEnv != "" && !flagSet(fs, "first-request-timeout") {
		fmt.Fprintf(stderr, "meshd run: MESHD_FIRST_REQUEST_TIMEOUT %q: want a duration such as 10s\n", f.firstReqEnv)
		return 2
	}
	if f.firstReqTO <= 0 {
		// No "off": a connection that never sends a request would be held for the
		// keep-alive idle timeout, which is what this bound exists to prevent.
		fmt.Fprintf(stderr, "meshd run: --first-request-timeout %v: want > 0 (there is no off; raise it for slow clients)\n", f.firstReqTO)
		return 2
	}
	if f.metricsLevel != proxy.MetricsLevelDefault && f.metricsLevel != proxy.MetricsLevelDetailed {
		fmt.Fprintf(stderr, "meshd run: --metrics-level %q: want %s or %s\n", f.metricsLevel, proxy.MetricsLevelDefault, proxy.MetricsLevelDetailed)
		return 2
	}
	if f.concurrency < -1 {
		fmt.Fprintf(stderr, "meshd run: --concurrency %d: want 0 (or -1) for Go's default, or a number of CPUs\n", f.concurrency)
		return 2
	}
	if f.initialFetchTO < 0 {
		fmt.Fprintf(stderr, "meshd run: --initial-fetch-timeout %v: want >= 0 (0: no bound)\n", f.initialFetchTO)
		return 2
	}
	urlHeaders, err := parseHeaders(f.urlHeaders.vals)
	if err != nil {
		fmt.Fprintln(stderr, "meshd run:", err)
		return 2
	}
	if f.configURL == "" && (len(urlHeaders) > 0 || f.urlTokenFile != "") {
		fmt.Fprintln(stderr, "meshd run: --config-url-header and --config-url-token-file (MESHD_CONFIG_URL_HEADERS, MESHD_CONFIG_URL_TOKEN_FILE) are for --config-url, which is not set")
		return 2
	}
	if f.urlTokenFile != "" {
		if b, err := os.ReadFile(f.urlTokenFile); err != nil || strings.TrimSpace(string(b)) == "" {
			fmt.Fprintf(stderr, "meshd run: --config-url-token-file %s: %v\n", f.urlTokenFile, cmp.Or(err, errors.New("the file is empty")))
			return 2
		}
	}
	logger, logLevel, err := telemetry.NewLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		fmt.Fprintln(stderr, "meshd run:", err)
		return 2
	}
	// After the flags are checked: a run refused for a bad flag leaves an earlier
	// profile at that path as it was.
	if f.cpuProfile != "" {
		stop, err := startCPUProfile(f.cpuProfile, stderr)
		if err != nil {
			fmt.Fprintln(stderr, "meshd run: --cpu-profile:", err)
			return 2
		}
		defer stop()
	}
	warnUnsupportedEnv(logger)
	f.warnGatewayEnv(logger)
	if f.concurrency > 0 {
		runtime.GOMAXPROCS(f.concurrency)
		logger.Info("GOMAXPROCS set by --concurrency", "procs", f.concurrency)
	}
	if err := f.loadToken(); err != nil {
		fmt.Fprintln(stderr, "meshd run:", err)
		return 2
	}
	var src config.Source
	watch := f.watch
	if f.configURL != "" {
		if !strings.HasPrefix(f.configURL, "http://") && !strings.HasPrefix(f.configURL, "https://") {
			fmt.Fprintf(stderr, "meshd run: --config-url %q: want an http:// or https:// URL\n", f.configURL)
			return 2
		}
		base := http.DefaultTransport.(*http.Transport).Clone()
		src = &config.PollSource{URL: f.configURL, Interval: f.pollInterval, Logger: logger,
			Client: &http.Client{Transport: &credTransport{base: base, header: urlHeaders, tokenFile: f.urlTokenFile, pollTimeout: 30 * time.Second}}}
		watch = true // polling is the point of a URL source
	} else {
		src = &config.FileSource{Path: f.configPath, Logger: logger}
	}
	opts, err := f.options(logger, logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "meshd run:", err)
		return 2
	}
	stopTracing, err := f.startTracing(logger, &opts)
	if err != nil {
		fmt.Fprintln(stderr, "meshd run:", err)
		return 2
	}
	defer stopTracing() // after serveWith's drain
	return serveWith(opts, logger, serveOpts{
		initial: func(ctx context.Context, srv *proxy.Server) error {
			return applyInitialWithin(ctx, srv, src, f.persist, logger, f.initialFetchTO)
		},
		sighup: func(ctx context.Context, srv *proxy.Server) { applyFetched(ctx, srv, src, logger) },
		source: src,
		watch:  watch,
		// Once serving: the check execs iptables-save (twice with both backends),
		// ~20 ms that are no reason to answer /ready later.
		ready: func(*proxy.Server) { warnIfNotExempt(logger, os.Geteuid(), os.Getegid()) },
	})
}

// applyInitial applies the source's document; when that fails (source unreachable, or
// a config that is rejected) and a persisted last good config exists, it starts from
// that one instead. The source's document is then not in force, so the source's
// watcher tries it again (see config.Source).
func applyInitial(ctx context.Context, srv *proxy.Server, src config.Source, persist string, logger *slog.Logger) error {
	return applyInitialWithin(ctx, srv, src, persist, logger, 30*time.Second)
}

// applyInitialWithin is applyInitial with the first fetch bounded by timeout (0: no
// bound, App Mesh's ENVOY_INITIAL_FETCH_TIMEOUT=0).
func applyInitialWithin(ctx context.Context, srv *proxy.Server, src config.Source, persist string, logger *slog.Logger, timeout time.Duration) error {
	var fctx context.Context
	var cancel context.CancelFunc
	if timeout > 0 {
		fctx, cancel = context.WithTimeout(ctx, timeout)
	} else {
		fctx, cancel = context.WithCancel(context.WithValue(ctx, unboundedFetch{}, true))
	}
	doc, err := src.Fetch(fctx)
	cancel()
	if err == nil {
		if _, err = srv.ApplyDocument(ctx, proxy.ApplyRequest{Data: doc.Data, Source: doc.Origin, DeferRelease: true}); err == nil {
			src.Applied(doc)
			return nil
		}
	}
	if persist == "" {
		return err
	}
	data, perr := os.ReadFile(persist)
	if perr != nil {
		return fmt.Errorf("%w (and no persisted config to fall back on: %w)", err, perr)
	}
	logger.Warn("config source failed; starting from the persisted last good config", "err", err, "persisted", persist)
	_, aerr := srv.ApplyDocument(ctx, proxy.ApplyRequest{Data: data, Source: "persisted:" + persist, DeferRelease: true})
	if aerr != nil {
		return fmt.Errorf("%w; the persisted config too: %w", err, aerr)
	}
	return nil
}

// applyFetched re-reads the source (SIGHUP) and applies what it returns. Rejections
// are logged and recorded by the apply pipeline; the running config keeps serving.
func applyFetched(ctx context.Context, srv *proxy.Server, src config.Source, logger *slog.Logger) {
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	doc, err := src.Fetch(fctx)
	if err != nil {
		logger.Error("reload failed; the previous config keeps serving", "err", err)
		return
	}
	if _, err := srv.ApplyDocument(ctx, proxy.ApplyRequest{Data: doc.Data, Source: doc.Origin}); err == nil {
		src.Applied(doc)
	}
}

// sourceDeliver is the deliver function of a source's watcher: it applies the document
// and returns an error (so the source tries the same bytes again later) only when the
// rejection came at the compile stage, where a transient failure such as an endpoint's
// DNS lookup rejects the config. Parse and validation errors are settled: the same
// bytes would fail the same way.
func sourceDeliver(ctx context.Context, srv *proxy.Server) func(config.Document) error {
	return func(doc config.Document) error {
		_, err := srv.ApplyDocument(ctx, proxy.ApplyRequest{Data: doc.Data, Source: doc.Origin})
		var rej *proxy.RejectedError
		if errors.As(err, &rej) && rej.Stage == proxy.StageCompile {
			return err
		}
		return nil
	}
}

// serve runs a server on cfg until SIGINT/SIGTERM, reloading on SIGHUP with reload
// (when not nil). ready, when set, is called once the listeners are bound.
func serve(cfg *config.Config, source string, opts proxy.Options, logger *slog.Logger,
	reload func() (*config.Config, error), ready func(*proxy.Server)) int {
	so := serveOpts{
		initial: func(ctx context.Context, srv *proxy.Server) error {
			_, err := srv.Apply(ctx, cfg, source)
			return err
		},
		ready: ready,
	}
	if reload != nil {
		so.sighup = func(ctx context.Context, srv *proxy.Server) {
			next, err := reload()
			if err != nil {
				logger.Error("reload rejected; the previous config keeps serving", "err", err)
				return
			}
			_, _ = srv.Apply(ctx, next, source)
		}
	}
	return serveWith(opts, logger, so)
}

// startupHeapBound is the heap at which the collector runs while startupGC has it off,
// unless a memory limit (GOMEMLIMIT) or half the cgroup's memory is lower: a mesh of
// 10,000 routes allocates ~30 MB from start to serving, so a config of that size never
// reaches it, and a far larger one is collected as it would be at that size.
const startupHeapBound = 128 << 20

// startupGC turns the collector off until the first config is compiled and served
// (the returned function turns it back on). Parsing and compiling a large config
// allocates a heap that stays mostly live to the end, so the collections a growing
// heap triggers on the way (at 4, 8, 16 MB...) would mark it again and again, for
// little garbage; the one collection after serving (Options.ReleaseMemory) does it
// once. A memory limit bounds the heap meanwhile (startupHeapBound).
func startupGC(cgroupMax func() uint64) (restore func()) {
	percent := debug.SetGCPercent(-1)
	limit := debug.SetMemoryLimit(-1) // -1 reads it
	bound := min(limit, startupHeapBound)
	if m := cgroupMax(); m > 0 {
		bound = min(bound, int64(m/2))
	}
	debug.SetMemoryLimit(bound)
	return sync.OnceFunc(func() {
		debug.SetMemoryLimit(limit)
		debug.SetGCPercent(percent)
	})
}

// serveOpts says where serveWith gets its config.
type serveOpts struct {
	initial func(context.Context, *proxy.Server) error // applies the first config
	sighup  func(context.Context, *proxy.Server)       // reloads on SIGHUP; nil ignores it
	source  config.Source                              // watched when watch is set
	watch   bool
	ready   func(*proxy.Server) // called once the listeners are bound
}

// serveWith runs a server until SIGINT/SIGTERM. The source's watcher runs in one
// goroutine owned here: it is cancelled and joined before the server drains.
func serveWith(opts proxy.Options, logger *slog.Logger, so serveOpts) int {
	srv, err := proxy.New(opts)
	if err != nil {
		logger.Error("cannot start", "err", err)
		return 1
	}
	// Signals are caught before listening, so a SIGTERM that follows /ready drains.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The admin listener comes up first: /ready answers 503 until the config is applied
	// and the data-plane listeners are bound.
	if err := srv.StartAdmin(); err != nil {
		logger.Error("cannot start", "err", err)
		return 1
	}
	restoreGC := startupGC(cgroupMemoryMax)
	if err := so.initial(ctx, srv); err != nil {
		restoreGC()
		logger.Error("config rejected", "err", err)
		_ = srv.Shutdown(ctx)
		return 1
	}
	if err := srv.Start(); err != nil {
		restoreGC()
		logger.Error("cannot start", "err", err)
		return 1
	}
	restoreGC()
	// The watch starts first: /ready already answers 200, and a change of the source
	// made from then on must not wait for the releases below.
	var watchers sync.WaitGroup
	if so.watch && so.source != nil {
		watchers.Add(1)
		go func() {
			defer watchers.Done()
			err := so.source.Watch(ctx, sourceDeliver(ctx, srv))
			if err != nil {
				logger.Error("config watch failed; SIGHUP and PUT /config still reload", "err", err)
			}
		}()
	}
	if opts.ReleaseMemory {
		// The first config's garbage, whose release applyInitial deferred (DeferRelease)
		// to here.
		debug.FreeOSMemory()
	}
	// What only start-up used need not stay mapped (idle RSS 19 -> 7 MB).
	if n, err := releaseStartupPages(); err != nil {
		logger.Warn("start-up pages of the binary stay mapped", "err", err)
	} else {
		logger.Debug("start-up pages of the binary unmapped", "bytes", n)
	}
	if so.ready != nil {
		so.ready(srv)
	}
	for {
		var sig os.Signal
		select {
		case sig = <-sigs:
		case <-srv.QuitRequested():
			sig = syscall.SIGTERM // the admin's POST /quitquitquit: as the orchestrator's stop
			logger.Info("admin /quitquitquit")
		}
		if sig == syscall.SIGHUP {
			if so.sighup != nil {
				so.sighup(ctx, srv)
			}
			continue
		}
		cancel()
		watchers.Wait()
		// SIGTERM (the orchestrator stopping the task) gets Envoy's drain sequence:
		// readiness fails first, the listeners serve on for the grace; an interactive
		// SIGINT drains at once.
		grace := opts.DrainGrace
		if sig == syscall.SIGINT {
			grace = 0
		}
		logger.Info("draining", "signal", sig.String(), "grace", grace, "timeout", opts.DrainTimeout)
		if err := srv.Drain(context.Background(), grace); err != nil {
			logger.Warn("drain incomplete", "err", err)
		}
		logger.Info("stopped")
		return 0
	}
}

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("meshd validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", env("", "MESHD_CONFIG"), "config file (YAML or JSON; describe-* outputs too) or directory of them")
	node := fs.String("node", "", "also compile the routing table of this virtual node")
	gateway := fs.String("gateway", "", "also compile what this virtual gateway serves: its gateway routes, the route tables of their targets, its tls files")
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
	if *node != "" && *gateway != "" {
		fmt.Fprintln(stderr, "meshd validate: --node and --gateway: give one")
		return 2
	}
	cfg, err := config.ParseFile(*path)
	if err == nil {
		err = cfg.Validate()
	}
	if err == nil {
		err = validateTLS(cfg, *node)
	}
	// A gateway is checked as the stand-in node meshd run compiles for it.
	vcfg, vnode, rename := cfg, *node, func(err error) error { return err }
	if err == nil && *gateway != "" {
		var sp *state.StandIn
		if sp, err = state.GatewayStandIn(cfg, *gateway); err == nil {
			vcfg, vnode, rename = sp.Config, sp.NodeName, sp.Rename
			err = validateGatewayTLS(cfg, sp)
		}
	}
	var warnings []string
	if err == nil && vnode != "" {
		// What meshd run compiles: the routing table and each cluster's discovery plan.
		// A name that does not resolve is no error for either (run follows it).
		var table *router.Table
		if table, err = router.Compile(vcfg, vnode); err == nil {
			meshPref := ""
			if sd := cfg.Mesh.Spec.ServiceDiscovery; sd != nil {
				meshPref = sd.IPPreference
			}
			for _, ref := range table.Clusters() {
				if ref.Local {
					continue
				}
				plan, perr := discovery.PlanFor(ref.Discovery, ref.Port, meshPref)
				if perr != nil {
					err = fmt.Errorf("cluster %s: %w", ref.Name, perr)
					break
				}
				for _, w := range plan.Warnings {
					warnings = append(warnings, "cluster "+ref.Name+": "+w)
				}
			}
		}
		if err != nil {
			err = rename(err)
		}
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
	for _, w := range warnings {
		fmt.Fprintf(stdout, "%s: warning: %s\n", *path, w)
	}
	fmt.Fprintf(stdout, "%s: valid (mesh %s, %d virtual nodes, %d routes, version %s)\n",
		*path, cfg.Mesh.MeshName, len(cfg.VirtualNodes), len(cfg.Routes), cfg.Digest())
	return 0
}

// flagSet reports whether the command line set the flag name.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// startCPUProfile profiles the process until the returned stop, which writes the
// profile out; a file that cannot be created is an error at start, not a run that ends
// without its profile.
func startCPUProfile(path string, stderr io.Writer) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	w := &firstErrWriter{w: f}
	if err := pprof.StartCPUProfile(w); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return func() {
		pprof.StopCPUProfile()
		// runtime/pprof drops its writes' errors: a full disk would leave a truncated
		// profile behind without a word.
		werr := w.err
		if err := f.Close(); err != nil && werr == nil {
			werr = err
		}
		if werr != nil {
			fmt.Fprintf(stderr, "meshd run: --cpu-profile: %s is incomplete: %v\n", path, werr)
		}
	}, nil
}

// firstErrWriter keeps the first error of the writes to w.
type firstErrWriter struct {
	w   io.Writer
	err error
}

func (e *firstErrWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	if err != nil {
		e.err = err
	}
	return n, err
}
