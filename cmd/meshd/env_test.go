package main

import (
	"flag"
	"io"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/config"
)

// runFlagEnv lists every environment variable runFlags.register reads; each case
// clears them all so that the machine's environment cannot leak in.
var runFlagEnv = []string{
	"MESHD_CONFIG", "MESHD_NODE", "APPMESH_VIRTUAL_NODE_NAME", "APPMESH_RESOURCE_ARN",
	"MESHD_ADMIN_ADDR", "MESHD_INGRESS_PORT", "APPMESH_ENVOY_INGRESS_PORT",
	"MESHD_EGRESS_PORT", "APPMESH_ENVOY_EGRESS_PORT", "MESHD_INGRESS_BIND", "MESHD_EGRESS_BIND",
	"MESHD_LOG_LEVEL", "ENVOY_LOG_LEVEL", "MESHD_LOG_FORMAT", "MESHD_CPU_PROFILE",
	"MESHD_DRAIN_TIMEOUT", "LISTENER_DRAIN_WAIT_TIME_S", "MESHD_DRAIN_GRACE", "MESHD_MAX_REPLAY_BODY", "MESHD_HTTP2_LIMITS", "MESHD_CONNECT_TIMEOUT", "MESHD_FIRST_REQUEST_TIMEOUT",
	"MESHD_SPIFFE_SOCKET", "SPIFFE_ENDPOINT_SOCKET",
	"MESHD_CLOUDWATCH_EMF", "MESHD_CLOUDWATCH_EMF_INTERVAL", "MESHD_DNS_RESOLVER", "MESHD_DNS_MIN_TTL", "MESHD_DNS_MAX_TTL", "MESHD_DNS_NXDOMAIN_GRACE",
	"MESHD_WATCH", "MESHD_CONFIG_URL", "MESHD_POLL_INTERVAL", "MESHD_PERSIST",
	"MESHD_ADMIN_TOKEN_FILE", "MESHD_ADMIN_TOKEN", "MESHD_REQUIRE_IF_MATCH",
	"MESHD_TRACING_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT",
	"MESHD_TRACING_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL", "MESHD_TRACING_SAMPLE_RATIO", "XRAY_SAMPLING_RATE",
	"MESHD_TRACING_PROPAGATORS", "MESHD_TRACING_INSECURE", "OTEL_EXPORTER_OTLP_INSECURE",
	"MESHD_TRACING_XRAY", "ENABLE_ENVOY_XRAY_TRACING",
	"MESHD_METRICS_LEVEL", "MESHD_ENVOY_STATS_TAGS", "ENABLE_ENVOY_STATS_TAGS",
	"MESHD_MAX_CONNECTIONS", "MESHD_MAX_LISTENER_CONNECTIONS", "MESHD_OVERLOAD_HEAP", "MESHD_OVERLOAD_CONNECTIONS",
	"APPMESH_RESOURCE_NAME", "ENVOY_ADMIN_ACCESS_PORT", "ENVOY_ADMIN_ACCESS_ENABLE_IPV6",
	"MESHD_ADMIN_ACCESS_LOG", "ENVOY_ADMIN_ACCESS_LOG_FILE", "MESHD_INITIAL_FETCH_TIMEOUT", "ENVOY_INITIAL_FETCH_TIMEOUT",
	"MESHD_CONCURRENCY", "ENVOY_CONCURRENCY", "MESHD_TRACING_SERVICE_NAME", "APPMESH_RESOURCE_CLUSTER", "XRAY_SEGMENT_NAME",
	"MESHD_CONFIG_URL_HEADERS", "MESHD_CONFIG_URL_TOKEN_FILE", "APPMESH_SDS_SOCKET_PATH",
	"MESHD_GATEWAY", "MESHD_GATEWAY_BIND",
}

// parseRunFlags registers runFlags on a fresh FlagSet, as `meshd run` and `meshd
// demo` do, and parses args.
func parseRunFlags(t *testing.T, args ...string) runFlags {
	t.Helper()
	fs := flag.NewFlagSet("meshd run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var f runFlags
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %v: %v", args, err)
	}
	return f
}

func TestRunFlagDefaults(t *testing.T) {
	for _, n := range runFlagEnv {
		t.Setenv(n, "")
	}
	got := parseRunFlags(t)
	want := runFlags{
		adminAddr: "127.0.0.1:9901", ingressPort: 15000, egressPort: 15001, gatewayBind: "0.0.0.0",
		ingressAddr: "0.0.0.0", egressAddr: "127.0.0.1", logLevel: "info", logFormat: "text",
		drainTimeout: 20 * time.Second, drainGrace: 3 * time.Second, connectTO: 5 * time.Second, firstReqTO: 10 * time.Second, maxReplay: 65536,
		emfInterval: time.Minute, dnsMinTTL: 5 * time.Second, dnsMaxTTL: time.Minute, dnsNXGrace: 30 * time.Second,
		watch: true, pollInterval: config.DefaultPollInterval, metricsLevel: "default", initialFetchTO: 30 * time.Second,
		tracingProtocol: "grpc", tracingSampleRatio: "1", tracingPropagators: "tracecontext,b3,b3multi,xray",
		overloadHeap: "auto",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("defaults:\n got %+v\nwant %+v", got, want)
	}
}

// TestRunFlagEnv checks that each environment variable sets its flag's default, that
// App Mesh's names are accepted where meshd's are unset, that meshd's win over App
// Mesh's, that an unparseable value keeps the default, and that a flag on the command
// line overrides the environment.
func TestRunFlagEnv(t *testing.T) {
	for _, c := range runFlagEnvCases() {
		t.Run(c.name, func(t *testing.T) {
			for _, n := range runFlagEnv {
				t.Setenv(n, "")
			}
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			if got := c.get(parseRunFlags(t, c.args...)); got != c.want {
				t.Errorf("env %v, args %v: got %v, want %v", c.env, c.args, got, c.want)
			}
		})
	}
}

type runFlagEnvCase struct {
	name string
	env  map[string]string
	args []string
	get  func(runFlags) any
	want any
}

func runFlagEnvCases() []runFlagEnvCase {
	return []runFlagEnvCase{
		{"MESHD_CONFIG", map[string]string{"MESHD_CONFIG": "/etc/mesh.yaml"}, nil,
			func(f runFlags) any { return f.configPath }, "/etc/mesh.yaml"},
		{"-c over MESHD_CONFIG", map[string]string{"MESHD_CONFIG": "/etc/mesh.yaml"}, []string{"-c", "/tmp/x.yaml"},
			func(f runFlags) any { return f.configPath }, "/tmp/x.yaml"},
		{"MESHD_NODE", map[string]string{"MESHD_NODE": "frontend"}, nil,
			func(f runFlags) any { return f.node }, "frontend"},
		{"APPMESH_VIRTUAL_NODE_NAME", map[string]string{"APPMESH_VIRTUAL_NODE_NAME": "mesh/shop/virtualNode/backend-v1"}, nil,
			func(f runFlags) any { return f.node }, "backend-v1"},
		{"APPMESH_RESOURCE_ARN", map[string]string{"APPMESH_RESOURCE_ARN": "arn:aws:appmesh:eu-west-1:111122223333:mesh/shop/virtualNode/cart"}, nil,
			func(f runFlags) any { return f.node }, "cart"},
		{"MESHD_NODE over APPMESH_VIRTUAL_NODE_NAME", map[string]string{"MESHD_NODE": "a", "APPMESH_VIRTUAL_NODE_NAME": "mesh/shop/virtualNode/b"}, nil,
			func(f runFlags) any { return f.node }, "a"},
		{"--node over MESHD_NODE", map[string]string{"MESHD_NODE": "a"}, []string{"--node", "c"},
			func(f runFlags) any { return f.node }, "c"},
		{"MESHD_ADMIN_ADDR", map[string]string{"MESHD_ADMIN_ADDR": "off"}, nil,
			func(f runFlags) any { return f.adminAddr }, "off"},
		{"--admin-addr over MESHD_ADMIN_ADDR", map[string]string{"MESHD_ADMIN_ADDR": "off"}, []string{"--admin-addr", "127.0.0.1:1"},
			func(f runFlags) any { return f.adminAddr }, "127.0.0.1:1"},
		{"MESHD_INGRESS_PORT", map[string]string{"MESHD_INGRESS_PORT": "16000"}, nil,
			func(f runFlags) any { return f.ingressPort }, 16000},
		{"APPMESH_ENVOY_INGRESS_PORT", map[string]string{"APPMESH_ENVOY_INGRESS_PORT": "16001"}, nil,
			func(f runFlags) any { return f.ingressPort }, 16001},
		{"MESHD_INGRESS_PORT over APPMESH_ENVOY_INGRESS_PORT", map[string]string{"MESHD_INGRESS_PORT": "16000", "APPMESH_ENVOY_INGRESS_PORT": "16001"}, nil,
			func(f runFlags) any { return f.ingressPort }, 16000},
		{"unparseable MESHD_INGRESS_PORT keeps the default", map[string]string{"MESHD_INGRESS_PORT": "http"}, nil,
			func(f runFlags) any { return f.ingressPort }, 15000},
		{"--ingress-port over MESHD_INGRESS_PORT", map[string]string{"MESHD_INGRESS_PORT": "16000"}, []string{"--ingress-port", "17000"},
			func(f runFlags) any { return f.ingressPort }, 17000},
		{"MESHD_EGRESS_PORT", map[string]string{"MESHD_EGRESS_PORT": "16002"}, nil,
			func(f runFlags) any { return f.egressPort }, 16002},
		{"APPMESH_ENVOY_EGRESS_PORT", map[string]string{"APPMESH_ENVOY_EGRESS_PORT": "16003"}, nil,
			func(f runFlags) any { return f.egressPort }, 16003},
		{"--egress-port over APPMESH_ENVOY_EGRESS_PORT", map[string]string{"APPMESH_ENVOY_EGRESS_PORT": "16003"}, []string{"--egress-port", "17001"},
			func(f runFlags) any { return f.egressPort }, 17001},
		{"MESHD_INGRESS_BIND", map[string]string{"MESHD_INGRESS_BIND": "::1"}, nil,
			func(f runFlags) any { return f.ingressAddr }, "::1"},
		{"MESHD_EGRESS_BIND", map[string]string{"MESHD_EGRESS_BIND": "0.0.0.0"}, nil,
			func(f runFlags) any { return f.egressAddr }, "0.0.0.0"},
		{"MESHD_DRAIN_TIMEOUT", map[string]string{"MESHD_DRAIN_TIMEOUT": "3s"}, nil,
			func(f runFlags) any { return f.drainTimeout }, 3 * time.Second},
		{"LISTENER_DRAIN_WAIT_TIME_S is plain seconds", map[string]string{"LISTENER_DRAIN_WAIT_TIME_S": "7"}, nil,
			func(f runFlags) any { return f.drainTimeout }, 7 * time.Second},
		{"MESHD_DRAIN_TIMEOUT over LISTENER_DRAIN_WAIT_TIME_S", map[string]string{"MESHD_DRAIN_TIMEOUT": "3s", "LISTENER_DRAIN_WAIT_TIME_S": "7"}, nil,
			func(f runFlags) any { return f.drainTimeout }, 3 * time.Second},
		{"unparseable MESHD_DRAIN_TIMEOUT keeps the default", map[string]string{"MESHD_DRAIN_TIMEOUT": "soon"}, nil,
			func(f runFlags) any { return f.drainTimeout }, 20 * time.Second},
		{"--drain-timeout over MESHD_DRAIN_TIMEOUT", map[string]string{"MESHD_DRAIN_TIMEOUT": "3s"}, []string{"--drain-timeout", "1m"},
			func(f runFlags) any { return f.drainTimeout }, time.Minute},
		{"MESHD_CLOUDWATCH_EMF", map[string]string{"MESHD_CLOUDWATCH_EMF": "stdout"}, nil,
			func(f runFlags) any { return f.emf }, "stdout"},
		{"MESHD_CLOUDWATCH_EMF_INTERVAL", map[string]string{"MESHD_CLOUDWATCH_EMF_INTERVAL": "10s"}, nil,
			func(f runFlags) any { return f.emfInterval }, 10 * time.Second},
		{"MESHD_DNS_RESOLVER", map[string]string{"MESHD_DNS_RESOLVER": "10.0.0.2,10.0.0.3:5353"}, nil,
			func(f runFlags) any { return f.dnsResolvers }, "10.0.0.2,10.0.0.3:5353"},
		{"--dns-resolver over MESHD_DNS_RESOLVER", map[string]string{"MESHD_DNS_RESOLVER": "10.0.0.2"}, []string{"--dns-resolver", "127.0.0.1:53"},
			func(f runFlags) any { return f.dnsResolvers }, "127.0.0.1:53"},
		{"MESHD_DNS_MIN_TTL", map[string]string{"MESHD_DNS_MIN_TTL": "1s"}, nil,
			func(f runFlags) any { return f.dnsMinTTL }, time.Second},
		{"MESHD_DNS_MAX_TTL", map[string]string{"MESHD_DNS_MAX_TTL": "5m"}, nil,
			func(f runFlags) any { return f.dnsMaxTTL }, 5 * time.Minute},
		{"MESHD_DNS_NXDOMAIN_GRACE", map[string]string{"MESHD_DNS_NXDOMAIN_GRACE": "10s"}, nil,
			func(f runFlags) any { return f.dnsNXGrace }, 10 * time.Second},
		{"MESHD_HTTP2_LIMITS", map[string]string{"MESHD_HTTP2_LIMITS": "max-concurrent-streams=50"}, nil,
			func(f runFlags) any { return f.http2Limits }, "max-concurrent-streams=50"},
		{"--http2-limits over MESHD_HTTP2_LIMITS", map[string]string{"MESHD_HTTP2_LIMITS": "max-concurrent-streams=50"}, []string{"--http2-limits", ""},
			func(f runFlags) any { return f.http2Limits }, ""},
		{"MESHD_SPIFFE_SOCKET", map[string]string{"MESHD_SPIFFE_SOCKET": "unix:///a.sock", "SPIFFE_ENDPOINT_SOCKET": "unix:///b.sock"}, nil,
			func(f runFlags) any { return f.spiffeSocket }, "unix:///a.sock"},
		{"SPIFFE_ENDPOINT_SOCKET", map[string]string{"SPIFFE_ENDPOINT_SOCKET": "unix:///b.sock"}, nil,
			func(f runFlags) any { return f.spiffeSocket }, "unix:///b.sock"},
		{"MESHD_MAX_REPLAY_BODY", map[string]string{"MESHD_MAX_REPLAY_BODY": "1024"}, nil,
			func(f runFlags) any { return f.maxReplay }, 1024},
		{"--max-replay-body over MESHD_MAX_REPLAY_BODY", map[string]string{"MESHD_MAX_REPLAY_BODY": "1024"}, []string{"--max-replay-body", "0"},
			func(f runFlags) any { return f.maxReplay }, 0},
		{"MESHD_DRAIN_GRACE", map[string]string{"MESHD_DRAIN_GRACE": "500ms"}, nil,
			func(f runFlags) any { return f.drainGrace }, 500 * time.Millisecond},
		{"--drain-grace over MESHD_DRAIN_GRACE", map[string]string{"MESHD_DRAIN_GRACE": "500ms"}, []string{"--drain-grace", "0"},
			func(f runFlags) any { return f.drainGrace }, time.Duration(0)},
		{"MESHD_CONNECT_TIMEOUT", map[string]string{"MESHD_CONNECT_TIMEOUT": "250ms"}, nil,
			func(f runFlags) any { return f.connectTO }, 250 * time.Millisecond},
		{"--connect-timeout over MESHD_CONNECT_TIMEOUT", map[string]string{"MESHD_CONNECT_TIMEOUT": "250ms"}, []string{"--connect-timeout", "2s"},
			func(f runFlags) any { return f.connectTO }, 2 * time.Second},
		{"MESHD_FIRST_REQUEST_TIMEOUT", map[string]string{"MESHD_FIRST_REQUEST_TIMEOUT": "3s"}, nil,
			func(f runFlags) any { return f.firstReqTO }, 3 * time.Second},
		{"--first-request-timeout over MESHD_FIRST_REQUEST_TIMEOUT", map[string]string{"MESHD_FIRST_REQUEST_TIMEOUT": "3s"}, []string{"--first-request-timeout", "500ms"},
			func(f runFlags) any { return f.firstReqTO }, 500 * time.Millisecond},
		{"unparseable MESHD_FIRST_REQUEST_TIMEOUT is kept for run to refuse", map[string]string{"MESHD_FIRST_REQUEST_TIMEOUT": "soon"}, nil,
			func(f runFlags) any { return f.firstReqEnv }, "soon"},
		{"MESHD_LOG_LEVEL", map[string]string{"MESHD_LOG_LEVEL": "debug"}, nil,
			func(f runFlags) any { return f.logLevel }, "debug"},
		{"ENVOY_LOG_LEVEL", map[string]string{"ENVOY_LOG_LEVEL": "warn"}, nil,
			func(f runFlags) any { return f.logLevel }, "warn"},
		{"MESHD_LOG_LEVEL over ENVOY_LOG_LEVEL", map[string]string{"MESHD_LOG_LEVEL": "debug", "ENVOY_LOG_LEVEL": "warn"}, nil,
			func(f runFlags) any { return f.logLevel }, "debug"},
		{"--log-level over MESHD_LOG_LEVEL", map[string]string{"MESHD_LOG_LEVEL": "debug"}, []string{"--log-level", "error"},
			func(f runFlags) any { return f.logLevel }, "error"},
		{"MESHD_CPU_PROFILE", map[string]string{"MESHD_CPU_PROFILE": "/tmp/meshd.pprof"}, nil,
			func(f runFlags) any { return f.cpuProfile }, "/tmp/meshd.pprof"},
		{"MESHD_LOG_FORMAT", map[string]string{"MESHD_LOG_FORMAT": "json"}, nil,
			func(f runFlags) any { return f.logFormat }, "json"},
		{"MESHD_WATCH", map[string]string{"MESHD_WATCH": "false"}, nil,
			func(f runFlags) any { return f.watch }, false},
		{"unparseable MESHD_WATCH keeps the default", map[string]string{"MESHD_WATCH": "sometimes"}, nil,
			func(f runFlags) any { return f.watch }, true},
		{"--watch over MESHD_WATCH", map[string]string{"MESHD_WATCH": "false"}, []string{"--watch=true"},
			func(f runFlags) any { return f.watch }, true},
		{"MESHD_CONFIG_URL", map[string]string{"MESHD_CONFIG_URL": "http://cfg.local/mesh.yaml"}, nil,
			func(f runFlags) any { return f.configURL }, "http://cfg.local/mesh.yaml"},
		{"--config-url over MESHD_CONFIG_URL", map[string]string{"MESHD_CONFIG_URL": "http://cfg.local/mesh.yaml"}, []string{"--config-url", "https://other/x"},
			func(f runFlags) any { return f.configURL }, "https://other/x"},
		{"MESHD_POLL_INTERVAL", map[string]string{"MESHD_POLL_INTERVAL": "45s"}, nil,
			func(f runFlags) any { return f.pollInterval }, 45 * time.Second},
		{"--poll-interval over MESHD_POLL_INTERVAL", map[string]string{"MESHD_POLL_INTERVAL": "45s"}, []string{"--poll-interval", "5s"},
			func(f runFlags) any { return f.pollInterval }, 5 * time.Second},
		{"MESHD_PERSIST", map[string]string{"MESHD_PERSIST": "/var/lib/meshd/last.yaml"}, nil,
			func(f runFlags) any { return f.persist }, "/var/lib/meshd/last.yaml"},
		{"--persist over MESHD_PERSIST", map[string]string{"MESHD_PERSIST": "/var/lib/meshd/last.yaml"}, []string{"--persist", "/tmp/p.yaml"},
			func(f runFlags) any { return f.persist }, "/tmp/p.yaml"},
		{"MESHD_ADMIN_TOKEN_FILE", map[string]string{"MESHD_ADMIN_TOKEN_FILE": "/run/secrets/token"}, nil,
			func(f runFlags) any { return f.adminTokenFile }, "/run/secrets/token"},
		{"--admin-token-file over MESHD_ADMIN_TOKEN_FILE", map[string]string{"MESHD_ADMIN_TOKEN_FILE": "/run/secrets/token"}, []string{"--admin-token-file", "/tmp/t"},
			func(f runFlags) any { return f.adminTokenFile }, "/tmp/t"},
		{"MESHD_ADMIN_TOKEN", map[string]string{"MESHD_ADMIN_TOKEN": "s3cret"}, nil,
			func(f runFlags) any { return f.adminToken }, "s3cret"},
		{"MESHD_REQUIRE_IF_MATCH", map[string]string{"MESHD_REQUIRE_IF_MATCH": "true"}, nil,
			func(f runFlags) any { return f.requireIfMatch }, true},
		{"--require-if-match over MESHD_REQUIRE_IF_MATCH", map[string]string{"MESHD_REQUIRE_IF_MATCH": "true"}, []string{"--require-if-match=false"},
			func(f runFlags) any { return f.requireIfMatch }, false},
		{"MESHD_TRACING_ENDPOINT", map[string]string{"MESHD_TRACING_ENDPOINT": "collector:4317"}, nil,
			func(f runFlags) any { return f.tracingEndpoint }, "collector:4317"},
		{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, nil,
			func(f runFlags) any { return f.tracingEndpoint }, "http://c:4318/v1/traces"},
		{"OTEL_EXPORTER_OTLP_ENDPOINT", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, nil,
			func(f runFlags) any { return f.tracingEndpoint }, "http://c:4317"},
		{"MESHD_TRACING_ENDPOINT over the OTEL ones", map[string]string{"MESHD_TRACING_ENDPOINT": "a:1", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:2", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:3"}, nil,
			func(f runFlags) any { return f.tracingEndpoint }, "a:1"},
		{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT over OTEL_EXPORTER_OTLP_ENDPOINT", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:2", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:3"}, nil,
			func(f runFlags) any { return f.tracingEndpoint }, "http://b:2"},
		{"--tracing-endpoint over MESHD_TRACING_ENDPOINT", map[string]string{"MESHD_TRACING_ENDPOINT": "a:1"}, []string{"--tracing-endpoint", "b:2"},
			func(f runFlags) any { return f.tracingEndpoint }, "b:2"},
		{"MESHD_TRACING_PROTOCOL", map[string]string{"MESHD_TRACING_PROTOCOL": "http"}, nil,
			func(f runFlags) any { return f.tracingProtocol }, "http"},
		{"OTEL_EXPORTER_OTLP_PROTOCOL", map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, nil,
			func(f runFlags) any { return f.tracingProtocol }, "http/protobuf"},
		{"MESHD_TRACING_PROTOCOL over OTEL_EXPORTER_OTLP_PROTOCOL", map[string]string{"MESHD_TRACING_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, nil,
			func(f runFlags) any { return f.tracingProtocol }, "grpc"},
		{"--tracing-protocol over MESHD_TRACING_PROTOCOL", map[string]string{"MESHD_TRACING_PROTOCOL": "http"}, []string{"--tracing-protocol", "grpc"},
			func(f runFlags) any { return f.tracingProtocol }, "grpc"},
		{"MESHD_TRACING_SAMPLE_RATIO", map[string]string{"MESHD_TRACING_SAMPLE_RATIO": "0.25"}, nil,
			func(f runFlags) any { return f.tracingSampleRatio }, "0.25"},
		{"XRAY_SAMPLING_RATE", map[string]string{"XRAY_SAMPLING_RATE": "0.05"}, nil,
			func(f runFlags) any { return f.tracingSampleRatio }, "0.05"},
		{"MESHD_TRACING_SAMPLE_RATIO over XRAY_SAMPLING_RATE", map[string]string{"MESHD_TRACING_SAMPLE_RATIO": "0.5", "XRAY_SAMPLING_RATE": "0.05"}, nil,
			func(f runFlags) any { return f.tracingSampleRatio }, "0.5"},
		{"--tracing-sample-ratio over MESHD_TRACING_SAMPLE_RATIO", map[string]string{"MESHD_TRACING_SAMPLE_RATIO": "0.5"}, []string{"--tracing-sample-ratio", "0"},
			func(f runFlags) any { return f.tracingSampleRatio }, "0"},
		{"MESHD_TRACING_PROPAGATORS", map[string]string{"MESHD_TRACING_PROPAGATORS": "xray,tracecontext"}, nil,
			func(f runFlags) any { return f.tracingPropagators }, "xray,tracecontext"},
		{"--tracing-propagators over MESHD_TRACING_PROPAGATORS", map[string]string{"MESHD_TRACING_PROPAGATORS": "xray"}, []string{"--tracing-propagators", "b3"},
			func(f runFlags) any { return f.tracingPropagators }, "b3"},
		{"MESHD_TRACING_INSECURE", map[string]string{"MESHD_TRACING_INSECURE": "true"}, nil,
			func(f runFlags) any { return f.tracingInsecure }, true},
		{"OTEL_EXPORTER_OTLP_INSECURE", map[string]string{"OTEL_EXPORTER_OTLP_INSECURE": "true"}, nil,
			func(f runFlags) any { return f.tracingInsecure }, true},
		{"--tracing-insecure over MESHD_TRACING_INSECURE", map[string]string{"MESHD_TRACING_INSECURE": "true"}, []string{"--tracing-insecure=false"},
			func(f runFlags) any { return f.tracingInsecure }, false},
		{"MESHD_TRACING_XRAY", map[string]string{"MESHD_TRACING_XRAY": "true"}, nil,
			func(f runFlags) any { return f.xray }, true},
		{"ENABLE_ENVOY_XRAY_TRACING", map[string]string{"ENABLE_ENVOY_XRAY_TRACING": "1"}, nil,
			func(f runFlags) any { return f.xray }, true},
		{"ENABLE_ENVOY_XRAY_TRACING=0", map[string]string{"ENABLE_ENVOY_XRAY_TRACING": "0"}, nil,
			func(f runFlags) any { return f.xray }, false},
		{"--tracing-xray over ENABLE_ENVOY_XRAY_TRACING", map[string]string{"ENABLE_ENVOY_XRAY_TRACING": "1"}, []string{"--tracing-xray=false"},
			func(f runFlags) any { return f.xray }, false},
		{"MESHD_METRICS_LEVEL", map[string]string{"MESHD_METRICS_LEVEL": "detailed"}, nil,
			func(f runFlags) any { return f.metricsLevel }, "detailed"},
		{"--metrics-level over MESHD_METRICS_LEVEL", map[string]string{"MESHD_METRICS_LEVEL": "detailed"}, []string{"--metrics-level", "default"},
			func(f runFlags) any { return f.metricsLevel }, "default"},
		{"MESHD_ENVOY_STATS_TAGS", map[string]string{"MESHD_ENVOY_STATS_TAGS": "true"}, nil,
			func(f runFlags) any { return f.envoyStatsTags }, true},
		{"ENABLE_ENVOY_STATS_TAGS=1", map[string]string{"ENABLE_ENVOY_STATS_TAGS": "1"}, nil,
			func(f runFlags) any { return f.envoyStatsTags }, true},
		{"ENABLE_ENVOY_STATS_TAGS=0", map[string]string{"ENABLE_ENVOY_STATS_TAGS": "0"}, nil,
			func(f runFlags) any { return f.envoyStatsTags }, false},
		{"MESHD_ENVOY_STATS_TAGS over ENABLE_ENVOY_STATS_TAGS", map[string]string{"MESHD_ENVOY_STATS_TAGS": "false", "ENABLE_ENVOY_STATS_TAGS": "1"}, nil,
			func(f runFlags) any { return f.envoyStatsTags }, false},
		{"--envoy-stats-tags over ENABLE_ENVOY_STATS_TAGS", map[string]string{"ENABLE_ENVOY_STATS_TAGS": "1"}, []string{"--envoy-stats-tags=false"},
			func(f runFlags) any { return f.envoyStatsTags }, false},
		{"MESHD_MAX_CONNECTIONS", map[string]string{"MESHD_MAX_CONNECTIONS": "5000"}, nil,
			func(f runFlags) any { return f.maxConns }, 5000},
		{"--max-connections over MESHD_MAX_CONNECTIONS", map[string]string{"MESHD_MAX_CONNECTIONS": "5000"}, []string{"--max-connections", "-1"},
			func(f runFlags) any { return f.maxConns }, -1},
		{"MESHD_MAX_LISTENER_CONNECTIONS", map[string]string{"MESHD_MAX_LISTENER_CONNECTIONS": "3000"}, nil,
			func(f runFlags) any { return f.maxListenerConns }, 3000},
		{"--max-listener-connections over MESHD_MAX_LISTENER_CONNECTIONS", map[string]string{"MESHD_MAX_LISTENER_CONNECTIONS": "3000"}, []string{"--max-listener-connections", "10"},
			func(f runFlags) any { return f.maxListenerConns }, 10},
		{"MESHD_OVERLOAD_HEAP", map[string]string{"MESHD_OVERLOAD_HEAP": "512MiB"}, nil,
			func(f runFlags) any { return f.overloadHeap }, "512MiB"},
		{"--overload-heap over MESHD_OVERLOAD_HEAP", map[string]string{"MESHD_OVERLOAD_HEAP": "512MiB"}, []string{"--overload-heap", "off"},
			func(f runFlags) any { return f.overloadHeap }, "off"},
		{"MESHD_OVERLOAD_CONNECTIONS", map[string]string{"MESHD_OVERLOAD_CONNECTIONS": "8000"}, nil,
			func(f runFlags) any { return f.overloadConns }, 8000},
		{"--overload-connections over MESHD_OVERLOAD_CONNECTIONS", map[string]string{"MESHD_OVERLOAD_CONNECTIONS": "8000"}, []string{"--overload-connections", "0"},
			func(f runFlags) any { return f.overloadConns }, 0},

		// App Mesh's Envoy variables (docs/env.md).
		{"APPMESH_RESOURCE_ARN's mesh", map[string]string{"APPMESH_RESOURCE_ARN": "arn:aws:appmesh:eu-west-1:111122223333:mesh/shop/virtualNode/cart"}, nil,
			func(f runFlags) any { return f.nodeEnv.mesh + "/" + f.nodeEnv.name }, "shop/APPMESH_RESOURCE_ARN"},
		{"APPMESH_RESOURCE_ARN of the preview channel", map[string]string{"APPMESH_RESOURCE_ARN": "arn:aws:appmesh-preview:us-west-2:111122223333:mesh/shop/virtualNode/cart"}, nil,
			func(f runFlags) any { return f.node }, "cart"},
		{"APPMESH_RESOURCE_ARN over APPMESH_VIRTUAL_NODE_NAME", map[string]string{"APPMESH_RESOURCE_ARN": "arn:aws:appmesh:eu-west-1:1:mesh/shop/virtualNode/a", "APPMESH_VIRTUAL_NODE_NAME": "mesh/shop/virtualNode/b"}, nil,
			func(f runFlags) any { return f.node }, "a"},
		{"APPMESH_RESOURCE_NAME", map[string]string{"APPMESH_RESOURCE_NAME": "mesh/shop/virtualNode/c"}, nil,
			func(f runFlags) any { return f.node }, "c"},
		{"APPMESH_RESOURCE_ARN naming a gateway serves it", map[string]string{"APPMESH_RESOURCE_ARN": "arn:aws:appmesh:eu-west-1:1:mesh/shop/virtualGateway/gw"}, nil,
			func(f runFlags) any { return f.node + "|" + f.gateway + "|" + f.nodeEnv.mesh }, "|gw|shop"},
		{"APPMESH_VIRTUAL_NODE_NAME naming a gateway (the controller's form)", map[string]string{"APPMESH_VIRTUAL_NODE_NAME": "mesh/shop/virtualGateway/ingress-gw_edge"}, nil,
			func(f runFlags) any { return f.node + "|" + f.gateway }, "|ingress-gw_edge"},
		{"MESHD_GATEWAY", map[string]string{"MESHD_GATEWAY": "edge"}, nil,
			func(f runFlags) any { return f.gateway }, "edge"},
		{"--gateway over MESHD_GATEWAY", map[string]string{"MESHD_GATEWAY": "edge"}, []string{"--gateway", "other"},
			func(f runFlags) any { return f.gateway }, "other"},
		{"MESHD_GATEWAY_BIND", map[string]string{"MESHD_GATEWAY_BIND": "10.0.0.5"}, nil,
			func(f runFlags) any { return f.gatewayBind }, "10.0.0.5"},
		{"ENVOY_ADMIN_ACCESS_PORT", map[string]string{"ENVOY_ADMIN_ACCESS_PORT": "9902"}, nil,
			func(f runFlags) any { return f.adminAddr }, "127.0.0.1:9902"},
		{"ENVOY_ADMIN_ACCESS_ENABLE_IPV6=true", map[string]string{"ENVOY_ADMIN_ACCESS_ENABLE_IPV6": "true", "ENVOY_ADMIN_ACCESS_PORT": "9903"}, nil,
			func(f runFlags) any { return f.adminAddr }, "[::1]:9903"},
		{"ENVOY_ADMIN_ACCESS_ENABLE_IPV6=false", map[string]string{"ENVOY_ADMIN_ACCESS_ENABLE_IPV6": "false"}, nil,
			func(f runFlags) any { return f.adminAddr }, "127.0.0.1:9901"},
		{"MESHD_ADMIN_ADDR over ENVOY_ADMIN_ACCESS_PORT", map[string]string{"MESHD_ADMIN_ADDR": "127.0.0.1:1", "ENVOY_ADMIN_ACCESS_PORT": "9902"}, nil,
			func(f runFlags) any { return f.adminAddr }, "127.0.0.1:1"},
		{"--admin-addr over ENVOY_ADMIN_ACCESS_PORT", map[string]string{"ENVOY_ADMIN_ACCESS_PORT": "9902"}, []string{"--admin-addr", "127.0.0.1:2"},
			func(f runFlags) any { return f.adminAddr }, "127.0.0.1:2"},
		{"MESHD_ADMIN_ACCESS_LOG", map[string]string{"MESHD_ADMIN_ACCESS_LOG": "/dev/stdout", "ENVOY_ADMIN_ACCESS_LOG_FILE": "/tmp/x"}, nil,
			func(f runFlags) any { return f.adminAccessLog }, "/dev/stdout"},
		{"ENVOY_ADMIN_ACCESS_LOG_FILE", map[string]string{"ENVOY_ADMIN_ACCESS_LOG_FILE": "/tmp/envoy_admin_access.log"}, nil,
			func(f runFlags) any { return f.adminAccessLog }, "/tmp/envoy_admin_access.log"},
		{"MESHD_INITIAL_FETCH_TIMEOUT", map[string]string{"MESHD_INITIAL_FETCH_TIMEOUT": "5s"}, nil,
			func(f runFlags) any { return f.initialFetchTO }, 5 * time.Second},
		{"ENVOY_INITIAL_FETCH_TIMEOUT is seconds", map[string]string{"ENVOY_INITIAL_FETCH_TIMEOUT": "15"}, nil,
			func(f runFlags) any { return f.initialFetchTO }, 15 * time.Second},
		{"ENVOY_INITIAL_FETCH_TIMEOUT=0 is no bound", map[string]string{"ENVOY_INITIAL_FETCH_TIMEOUT": "0"}, nil,
			func(f runFlags) any { return f.initialFetchTO }, time.Duration(0)},
		{"MESHD_CONCURRENCY", map[string]string{"MESHD_CONCURRENCY": "2", "ENVOY_CONCURRENCY": "4"}, nil,
			func(f runFlags) any { return f.concurrency }, 2},
		{"ENVOY_CONCURRENCY", map[string]string{"ENVOY_CONCURRENCY": "4"}, nil,
			func(f runFlags) any { return f.concurrency }, 4},
		{"--concurrency over ENVOY_CONCURRENCY", map[string]string{"ENVOY_CONCURRENCY": "4"}, []string{"--concurrency", "1"},
			func(f runFlags) any { return f.concurrency }, 1},
		{"MESHD_TRACING_SERVICE_NAME", map[string]string{"MESHD_TRACING_SERVICE_NAME": "a", "APPMESH_RESOURCE_CLUSTER": "b", "XRAY_SEGMENT_NAME": "c"}, nil,
			func(f runFlags) any { return f.serviceName }, "a"},
		{"APPMESH_RESOURCE_CLUSTER", map[string]string{"APPMESH_RESOURCE_CLUSTER": "shop/cart", "XRAY_SEGMENT_NAME": "c"}, nil,
			func(f runFlags) any { return f.serviceName }, "shop/cart"},
		{"XRAY_SEGMENT_NAME", map[string]string{"XRAY_SEGMENT_NAME": "shop/cart"}, nil,
			func(f runFlags) any { return f.serviceName }, "shop/cart"},
		{"MESHD_CONFIG_URL_HEADERS", map[string]string{"MESHD_CONFIG_URL_HEADERS": "X-A: 1\nX-B: 2\n"}, nil,
			func(f runFlags) any { return strings.Join(f.urlHeaders.vals, "|") }, "X-A: 1|X-B: 2"},
		{"--config-url-header over MESHD_CONFIG_URL_HEADERS", map[string]string{"MESHD_CONFIG_URL_HEADERS": "X-A: 1"}, []string{"--config-url-header", "X-C: 3", "--config-url-header", "X-D: 4"},
			func(f runFlags) any { return strings.Join(f.urlHeaders.vals, "|") }, "X-C: 3|X-D: 4"},
		{"MESHD_CONFIG_URL_TOKEN_FILE", map[string]string{"MESHD_CONFIG_URL_TOKEN_FILE": "/run/secrets/cfg-token"}, nil,
			func(f runFlags) any { return f.urlTokenFile }, "/run/secrets/cfg-token"},
		{"APPMESH_SDS_SOCKET_PATH is a socket path", map[string]string{"APPMESH_SDS_SOCKET_PATH": "/run/spire/sockets/agent.sock"}, nil,
			func(f runFlags) any { return f.spiffeSocket }, "unix:///run/spire/sockets/agent.sock"},
		{"SPIFFE_ENDPOINT_SOCKET over APPMESH_SDS_SOCKET_PATH", map[string]string{"SPIFFE_ENDPOINT_SOCKET": "unix:///b.sock", "APPMESH_SDS_SOCKET_PATH": "/c.sock"}, nil,
			func(f runFlags) any { return f.spiffeSocket }, "unix:///b.sock"},
	}
}

// TestRunFlagEnvCoverage keeps the table honest as flags are added: every "env X"
// a flag's usage names is in runFlagEnv, and every variable there has a case.
func TestRunFlagEnvCoverage(t *testing.T) {
	fs := flag.NewFlagSet("meshd run", flag.ContinueOnError)
	var f runFlags
	f.register(fs)
	listed := map[string]bool{}
	for _, n := range runFlagEnv {
		listed[n] = true
	}
	envName := regexp.MustCompile(`\benv ([A-Z][A-Z0-9_]+)`)
	fs.VisitAll(func(fl *flag.Flag) {
		m := envName.FindAllStringSubmatch(fl.Usage, -1)
		if len(m) == 0 {
			t.Errorf("flag -%s names no environment variable in its usage %q", fl.Name, fl.Usage)
		}
		for _, sm := range m {
			if !listed[sm[1]] {
				t.Errorf("flag -%s reads %s, which runFlagEnv does not list", fl.Name, sm[1])
			}
		}
	})
	tested := map[string]bool{}
	for _, c := range runFlagEnvCases() {
		for k := range c.env {
			tested[k] = true
		}
	}
	for _, n := range runFlagEnv {
		if !tested[n] {
			t.Errorf("%s has no case in TestRunFlagEnv", n)
		}
	}
}

// TestRunFlagTokenFile checks that --admin-token-file wins over MESHD_ADMIN_TOKEN
// once loadToken reads it, as cmdRun does after parsing.
func TestRunFlagTokenFile(t *testing.T) {
	for _, n := range runFlagEnv {
		t.Setenv(n, "")
	}
	path := t.TempDir() + "/token"
	writeFile(t, path, "from-file\n")
	t.Setenv("MESHD_ADMIN_TOKEN", "from-env")
	f := parseRunFlags(t, "--admin-token-file", path)
	if err := f.loadToken(); err != nil {
		t.Fatal(err)
	}
	if f.adminToken != "from-file" {
		t.Fatalf("token %q, want the file's", f.adminToken)
	}
}

// TestRunFirstRequestTimeoutEnvRefused: a MESHD_FIRST_REQUEST_TIMEOUT that does not
// parse stops `meshd run` with its value named, instead of the default applying silently.
func TestRunFirstRequestTimeoutEnvRefused(t *testing.T) {
	for _, n := range runFlagEnv {
		t.Setenv(n, "")
	}
	t.Setenv("MESHD_FIRST_REQUEST_TIMEOUT", "soon")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "mesh.yaml")
	writeFile(t, cfg, reloadCfg(7000))
	var stderr strings.Builder
	code := run([]string{"run", "-c", cfg, "--node", "client"}, io.Discard, &stderr)
	if want := `MESHD_FIRST_REQUEST_TIMEOUT "soon": want a duration`; code != 2 || !strings.Contains(stderr.String(), want) {
		t.Fatalf("run = %d, %q; want 2 and %q", code, stderr.String(), want)
	}
}

// TestRunEnvValuesRefused: an environment variable of a run flag whose value does not
// parse stops `meshd run`, naming the variable, its value and the flag that overrides it
// (it used to fall back to the default in silence: LISTENER_DRAIN_WAIT_TIME_S=abc became
// 20s); the flag on the command line wins over the bad value.
func TestRunEnvValuesRefused(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "mesh.yaml")
	writeFile(t, cfg, reloadCfg(7000))
	for _, c := range []struct{ name, value, want string }{
		{"LISTENER_DRAIN_WAIT_TIME_S", "abc", `LISTENER_DRAIN_WAIT_TIME_S="abc": want a duration such as 20s (or whole seconds) (or set --drain-timeout)`},
		{"MESHD_CONNECT_TIMEOUT", "5 seconds", `MESHD_CONNECT_TIMEOUT="5 seconds": want a duration`},
		{"APPMESH_ENVOY_INGRESS_PORT", "15000x", `APPMESH_ENVOY_INGRESS_PORT="15000x": want a whole number (or set --ingress-port)`},
		{"ENABLE_ENVOY_STATS_TAGS", "yes", `ENABLE_ENVOY_STATS_TAGS="yes": want true or false (1 or 0) (or set --envoy-stats-tags)`},
		{"MESHD_MAX_CONNECTIONS", "lots", `MESHD_MAX_CONNECTIONS="lots": want a whole number (or set --max-connections)`},
		{"MESHD_MAX_LISTENER_CONNECTIONS", "-3", `--max-listener-connections -3: want > 0, or 0`},
		{"MESHD_OVERLOAD_HEAP", "1TB", `--overload-heap "1TB" (or MESHD_OVERLOAD_HEAP): want auto, off, or a size such as 512MiB`},
		{"MESHD_OVERLOAD_CONNECTIONS", "-1", `--overload-connections -1: want > 0, or 0 (off)`},
		{"MESHD_MAX_CONNECTIONS", "-2", `--max-connections -2: want > 0, 0 (derived from RLIMIT_NOFILE) or -1 (no bound)`},
		{"ENVOY_ADMIN_ACCESS_PORT", "admin", `ENVOY_ADMIN_ACCESS_PORT="admin": want a port number from 1 to 65535 (or set --admin-addr)`},
		{"ENVOY_ADMIN_ACCESS_PORT", "70000", `ENVOY_ADMIN_ACCESS_PORT="70000": want a port number`},
		{"ENVOY_ADMIN_ACCESS_ENABLE_IPV6", "maybe", `ENVOY_ADMIN_ACCESS_ENABLE_IPV6="maybe": want true or false (or set --admin-addr)`},
		{"ENVOY_CONCURRENCY", "two", `ENVOY_CONCURRENCY="two": want a whole number (or set --concurrency)`},
		{"ENVOY_INITIAL_FETCH_TIMEOUT", "soon", `ENVOY_INITIAL_FETCH_TIMEOUT="soon": want a duration`},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, n := range runFlagEnv {
				t.Setenv(n, "")
			}
			t.Setenv(c.name, c.value)
			var stderr strings.Builder
			code := run([]string{"run", "-c", cfg, "--node", "client"}, io.Discard, &stderr)
			if code != 2 || !strings.Contains(stderr.String(), c.want) {
				t.Fatalf("run = %d, %q; want 2 and %q", code, stderr.String(), c.want)
			}
		})
	}
	// The command line overrides a bad environment value: the value is the flag's, and
	// the recorded error names the flag run checks (run skips it when the flag is set).
	for _, n := range runFlagEnv {
		t.Setenv(n, "")
	}
	t.Setenv("MESHD_DRAIN_TIMEOUT", "abc")
	f := parseRunFlags(t, "--drain-timeout", "7s")
	if f.drainTimeout != 7*time.Second || len(f.envErrs) != 1 || f.envErrs[0].flag != "drain-timeout" {
		t.Fatalf("drain timeout %v, env errors %v; want the flag's 7s and one error for drain-timeout", f.drainTimeout, f.envErrs)
	}
}

// TestParseOverloadHeap: --overload-heap's sizes, auto (half the cgroup memory limit,
// off without one) and off; anything else is refused.
func TestParseOverloadHeap(t *testing.T) {
	limit := func(n uint64) func() uint64 { return func() uint64 { return n } }
	for _, c := range []struct {
		v    string
		mem  uint64
		want uint64
	}{
		{"auto", 1 << 30, 512 << 20}, {"auto", 0, 0}, {"off", 1 << 30, 0}, {"0", 0, 0},
		{"1048576", 0, 1 << 20}, {"64KiB", 0, 64 << 10}, {"512MiB", 0, 512 << 20}, {"2GiB", 0, 2 << 30},
	} {
		got, err := parseOverloadHeap(c.v, limit(c.mem))
		if err != nil || got != c.want {
			t.Errorf("parseOverloadHeap(%q, memory %d) = %d, %v; want %d", c.v, c.mem, got, err, c.want)
		}
	}
	for _, v := range []string{"", "lots", "-1", "1TB", "1.5GiB", "MiB"} {
		if got, err := parseOverloadHeap(v, limit(1<<30)); err == nil {
			t.Errorf("parseOverloadHeap(%q) = %d, want an error", v, got)
		}
	}
}
