package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// App Mesh's Envoy image read its settings from environment variables; task
// definitions and the App Mesh controller still set them. Each is honoured, or named at
// start in one warning line with the way out (docs/env.md has the whole table).

// nodeEnv is the virtual node (and, from App Mesh's forms, its mesh) named by the
// environment.
type nodeEnv struct {
	node, mesh string
	gateway    bool   // node names a virtual gateway (App Mesh's .../virtualGateway/NAME)
	name       string // the variable it came from
	value      string
}

// appMeshResource matches App Mesh's resource forms: an ARN
// (arn:aws:appmesh:REGION:ACCOUNT:mesh/M/virtualNode/N, appmesh-preview included) or the
// bare path mesh/M/virtualNode/N.
var appMeshResource = regexp.MustCompile(`^(?:arn:[a-z0-9-]+:appmesh(?:-preview)?:[a-z0-9-]*:[0-9]*:)?mesh/([^/]+)/(virtualNode|virtualGateway)/([^/]+)$`)

// nodeFromEnvVars reads MESHD_NODE (a plain name), then App Mesh's
// APPMESH_RESOURCE_ARN, APPMESH_VIRTUAL_NODE_NAME and APPMESH_RESOURCE_NAME (either
// form, or a plain name). A virtual gateway's form names the gateway to serve (as
// --gateway); a value of neither form is an error naming the variable.
func nodeFromEnvVars() (nodeEnv, error) {
	if v := env("", "MESHD_NODE"); v != "" {
		return nodeEnv{node: v, name: "MESHD_NODE", value: v}, nil
	}
	v, name := envLookup("APPMESH_RESOURCE_ARN", "APPMESH_VIRTUAL_NODE_NAME", "APPMESH_RESOURCE_NAME")
	if v == "" {
		return nodeEnv{}, nil
	}
	m := appMeshResource.FindStringSubmatch(v)
	switch {
	case m == nil && !strings.ContainsAny(v, "/:"):
		return nodeEnv{node: v, name: name, value: v}, nil
	case m == nil:
		return nodeEnv{}, fmt.Errorf("%s=%q: want a virtual node ARN (arn:aws:appmesh:REGION:ACCOUNT:mesh/MESH/virtualNode/NODE), mesh/MESH/virtualNode/NODE, or a node name (or set --node)", name, v)
	case m[2] == "virtualGateway":
		return nodeEnv{node: m[3], mesh: m[1], gateway: true, name: name, value: v}, nil
	}
	return nodeEnv{node: m[3], mesh: m[1], name: name, value: v}, nil
}

// nodeFromEnv is the node name the environment gives, "" when none or when it is in
// error (run reports that through runFlags.nodeEnvErr).
func nodeFromEnv() string {
	ne, err := nodeFromEnvVars()
	if err != nil {
		return ""
	}
	return ne.node
}

// from names the variable and value the mesh came from, for the refusal of a config of
// another mesh (proxy.Options.MeshFrom).
func (ne nodeEnv) from() string {
	if ne.mesh == "" {
		return ""
	}
	return fmt.Sprintf("%s=%q; correct the variable, or give the node with --node / MESHD_NODE (a gateway with --gateway / MESHD_GATEWAY)", ne.name, ne.value)
}

// adminAddrDefault is the admin address when --admin-addr is not given: MESHD_ADMIN_ADDR,
// else 127.0.0.1 (App Mesh's ENVOY_ADMIN_ACCESS_ENABLE_IPV6=true: [::1]) on
// ENVOY_ADMIN_ACCESS_PORT (default 9901). meshd's admin stays on loopback where Envoy's
// listened on every interface: a non-loopback admin needs a token (--admin-token-file).
func adminAddrDefault() (string, []envErr) {
	if v := env("", "MESHD_ADMIN_ADDR"); v != "" {
		return v, nil
	}
	var errs []envErr
	port := 9901
	if v, name := envLookup("ENVOY_ADMIN_ACCESS_PORT"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 65535 {
			errs = append(errs, envErr{"admin-addr", name, v, "a port number from 1 to 65535"})
		} else {
			port = n
		}
	}
	host := "127.0.0.1"
	if v, name := envLookup("ENVOY_ADMIN_ACCESS_ENABLE_IPV6"); v != "" {
		b, err := strconv.ParseBool(v)
		switch {
		case err != nil:
			errs = append(errs, envErr{"admin-addr", name, v, "true or false"})
		case b:
			host = "::1"
		}
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), errs
}

// spiffeSocketEnv is the Workload API address from the environment: meshd's, the SPIFFE
// standard's, or App Mesh's APPMESH_SDS_SOCKET_PATH (a socket path: the SPIRE agent's).
func spiffeSocketEnv() string {
	if v := env("", "MESHD_SPIFFE_SOCKET", "SPIFFE_ENDPOINT_SOCKET"); v != "" {
		return v
	}
	if p := env("", "APPMESH_SDS_SOCKET_PATH"); p != "" {
		if strings.Contains(p, "://") {
			return p
		}
		return "unix://" + p
	}
	return ""
}

// unsupportedEnv are App Mesh's variables meshd does not honour, with what to use
// instead. onlyIfOn: a value of 0 or false asks for nothing meshd does not do, so it is
// not warned about (the App Mesh controller sets several to 0 on every pod).
var unsupportedEnv = []struct {
	name, instead string
	onlyIfOn      bool
}{
	{"APPMESH_PREVIEW", "meshd has no control plane endpoint: the config comes from -c or --config-url", true},
	{"APPMESH_DUALSTACK_ENDPOINT", "meshd has no control plane endpoint: the config comes from -c or --config-url", true},
	{"APPMESH_FIPS_ENDPOINT", "meshd has no control plane endpoint: the config comes from -c or --config-url", true},
	{"APPMESH_XDS_ENDPOINT", "meshd has no xDS: the config comes from -c or --config-url", false},
	{"APPMESH_SIGNING_NAME", "meshd signs no AWS request: the config comes from -c or --config-url", false},
	{"APPMESH_METRIC_EXTENSION_VERSION", "scrape /stats/prometheus (with --envoy-stats-tags for App Mesh's tags) or use --cloudwatch-emf", true},
	{"APPMESH_SET_TRACING_DECISION", "meshd never rewrites x-request-id; sampling follows the caller's trace context and --tracing-sample-ratio", true},
	{"APPMESH_SLEEP_DURATION", "meshd starts at once; order containers with dependsOn and have the app wait with meshd wait-ready", false},
	{"ENVOY_CONFIG_FILE", "meshd takes no Envoy config: give the mesh with -c or --config-url", false},
	{"ENVOY_RESOURCES_CONFIG_FILE", "meshd takes no Envoy config: give the mesh with -c or --config-url", false},
	{"ENVOY_ADMIN_MODE", "meshd's admin listens on TCP: --admin-addr", false},
	{"ENVOY_TRACING_CFG_FILE", "set --tracing-endpoint (OTLP; docs/tracing.md)", false},
	{"ENVOY_STATS_CONFIG_FILE", "scrape /stats/prometheus (--metrics-level, --envoy-stats-tags) or use --cloudwatch-emf", false},
	{"ENVOY_STATS_SINKS_CFG_FILE", "scrape /stats/prometheus or use --cloudwatch-emf", false},
	{"ENVOY_STATS_FLUSH_INTERVAL", "/stats/prometheus is read at scrape time; --cloudwatch-emf-interval for EMF", false},
	{"ENABLE_ENVOY_DOG_STATSD", "have the Datadog agent scrape /stats/prometheus (OpenMetrics), or use --cloudwatch-emf", true},
	{"STATSD_PORT", "have the Datadog agent scrape /stats/prometheus (OpenMetrics)", false},
	{"STATSD_ADDRESS", "have the Datadog agent scrape /stats/prometheus (OpenMetrics)", false},
	{"STATSD_SOCKET_PATH", "have the Datadog agent scrape /stats/prometheus (OpenMetrics)", false},
	{"XRAY_DAEMON_PORT", "meshd exports OTLP: run an ADOT collector and set --tracing-endpoint (ENABLE_ENVOY_XRAY_TRACING defaults it to localhost:4317)", false},
	{"AWS_XRAY_DAEMON_ADDRESS", "meshd exports OTLP: run an ADOT collector and set --tracing-endpoint", false},
	{"XRAY_SAMPLING_RULE_MANIFEST", "set --tracing-sample-ratio (XRAY_SAMPLING_RATE); sampling rules belong to the collector", false},
	{"ENABLE_ENVOY_DATADOG_TRACING", "send OTLP to the Datadog agent's OTLP receiver: --tracing-endpoint http://AGENT:4317", true},
	{"DATADOG_TRACER_PORT", "--tracing-endpoint http://AGENT:4317 (the Datadog agent's OTLP receiver)", false},
	{"DATADOG_TRACER_ADDRESS", "--tracing-endpoint http://AGENT:4317 (the Datadog agent's OTLP receiver)", false},
	{"DD_SERVICE", "--tracing-service-name", false},
	{"ENABLE_ENVOY_JAEGER_TRACING", "Jaeger takes OTLP: --tracing-endpoint http://JAEGER:4317", true},
	{"JAEGER_TRACER_PORT", "--tracing-endpoint http://JAEGER:4317 (Jaeger's OTLP receiver)", false},
	{"JAEGER_TRACER_ADDRESS", "--tracing-endpoint http://JAEGER:4317 (Jaeger's OTLP receiver)", false},
	{"JAEGER_TRACER_VERSION", "--tracing-endpoint (OTLP)", false},
	{"ENVOY_NO_EXTENSION_LOOKUP_BY_NAME", "an Envoy internal with no meshd equivalent: remove it", false},
	{"ENVOY_ENABLE_TCP_POOL_IDLE_TIMEOUT", "meshd closes idle upstream connections itself: remove it", false},
	{"ENVOY_USE_HTTP_CLIENT_TO_FETCH_AWS_CREDENTIALS", "meshd fetches no AWS credentials: remove it", false},
	{"MAX_REQUESTS_PER_IO_CYCLE", "--http2-limits bounds abusive HTTP/2 connections", false},
	{"APPNET_ENVOY_RESTART_COUNT", "meshd runs without an agent: restart it with the orchestrator's policy", true},
	{"PID_POLL_INTERVAL_MS", "meshd runs without an agent: remove it", false},
	{"APPNET_AGENT_ADMIN_MODE", "meshd runs without an agent; its admin is --admin-addr", false},
	{"APPNET_AGENT_ADMIN_UDS_PATH", "meshd runs without an agent; its admin is --admin-addr", false},
	{"APPNET_AGENT_HTTP_PORT", "meshd runs without an agent; its admin is --admin-addr", false},
	{"APPNET_AGENT_HTTP_BIND_ADDRESS", "meshd runs without an agent; its admin is --admin-addr", false},
	{"APPNET_AGENT_LOGGING_RESET_TIMEOUT", "meshd runs without an agent: POST /logging?level= sets the level until changed", false},
	{"APPNET_AGENT_POLL_ENVOY_READINESS_INTERVAL_S", "meshd runs without an agent: probe with meshd health", false},
	{"APPNET_AGENT_POLL_ENVOY_READINESS_TIMEOUT_S", "meshd runs without an agent: probe with meshd health, wait with meshd wait-ready", false},
	{"HC_POLL_INTERVAL_MS", "meshd runs without an agent: probe with meshd health", false},
	{"HC_DISCONNECTED_TIMEOUT_S", "meshd has no control plane connection to lose: remove it", false},
	{"ENABLE_STATS_SNAPSHOT", "meshd runs without an agent: scrape /stats/prometheus", true},
}

// platformEnv are the App Mesh controller's platform variables: information about the
// pod, which Envoy sent to its control plane as node metadata; meshd shows them in
// /server_info (command_line_options.node_metadata).
var platformEnv = []string{"APPMESH_PLATFORM_K8S_VERSION", "APPMESH_PLATFORM_APP_MESH_CONTROLLER_VERSION", "APPMESH_PLATFORM_K8S_POD_UID"}

func platformMetadata() map[string]string {
	m := map[string]string{}
	for _, n := range platformEnv {
		if v := env("", n); v != "" {
			m[n] = v
		}
	}
	return m
}

// isOff reports whether an App Mesh feature flag's value turns the feature off.
func isOff(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "0", "false":
		return true
	}
	return false
}

// warnUnsupportedEnv names, in one warning line, every App Mesh variable set that meshd
// does not honour, each with what to use instead. It returns the names, sorted.
func warnUnsupportedEnv(logger *slog.Logger) []string {
	var names []string
	var attrs []any
	for _, u := range unsupportedEnv {
		v := env("", u.name)
		if v == "" || (u.onlyIfOn && isOff(v)) {
			continue
		}
		names = append(names, u.name)
		attrs = append(attrs, slog.String(u.name, "not supported; "+u.instead))
	}
	if len(names) > 0 {
		logger.Warn("App Mesh environment variables meshd does not support are set and ignored (docs/env.md)", attrs...)
	}
	slices.Sort(names)
	return names
}

// parseHeaders parses --config-url-header values ("Name: value"); the error names the
// header, never its value (it may be a credential).
func parseHeaders(vals []string) (http.Header, error) {
	h := http.Header{}
	for _, v := range vals {
		name, value, ok := strings.Cut(v, ":")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.ContainsAny(name, " \t\r\n") {
			return nil, fmt.Errorf("--config-url-header %q: want 'Name: value'", strings.TrimSpace(name))
		}
		h.Add(name, strings.TrimSpace(value))
	}
	return h, nil
}

// credTransport adds the config URL's credentials to every fetch: fixed headers, and a
// bearer token read from its file at each fetch, so a rotated token is used without a
// restart. A fetch with no deadline of its own (the polls) is bounded by pollTimeout.
type credTransport struct {
	base        http.RoundTripper
	header      http.Header
	tokenFile   string
	pollTimeout time.Duration
}

// errTokenFile is the token file's failure; the fetch fails and the running config keeps
// serving.
var errTokenFile = errors.New("--config-url-token-file")

// unboundedFetch marks a context whose fetch takes no poll bound (an initial fetch
// timeout of 0: wait as long as the source takes, as Envoy's 0).
type unboundedFetch struct{}

func (c *credTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, vs := range c.header {
		r.Header[k] = vs
	}
	if c.tokenFile != "" {
		b, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errTokenFile, err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return nil, fmt.Errorf("%w %s: the file is empty", errTokenFile, c.tokenFile)
		}
		r.Header.Set("Authorization", "Bearer "+tok)
	}
	_, hasDeadline := r.Context().Deadline()
	if hasDeadline || c.pollTimeout <= 0 || r.Context().Value(unboundedFetch{}) != nil {
		return c.base.RoundTrip(r)
	}
	ctx, cancel := context.WithTimeout(r.Context(), c.pollTimeout)
	resp, err := c.base.RoundTrip(r.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// cancelBody releases the poll bound's timer when the body is closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// headerList is a repeatable flag whose default comes from the environment (one
// header a line); the command line's values replace the environment's.
type headerList struct {
	vals []string
	set  bool
}

// String never shows the values: they may be credentials.
func (h *headerList) String() string {
	if h == nil || len(h.vals) == 0 {
		return ""
	}
	return fmt.Sprintf("%d headers", len(h.vals))
}

func (h *headerList) Set(v string) error {
	if !h.set {
		h.vals, h.set = nil, true
	}
	h.vals = append(h.vals, v)
	return nil
}

func headersFromEnv(names ...string) headerList {
	var h headerList
	for line := range strings.Lines(env("", names...)) {
		if line = strings.TrimSpace(line); line != "" {
			h.vals = append(h.vals, line)
		}
	}
	return h
}
