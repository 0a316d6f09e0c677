// Package tracing is meshd's telemetry.Tracer on OpenTelemetry: a server span for every
// proxied request and a client span for every upstream attempt (retries show as sibling
// client spans), the trace context read on the request in W3C, B3 and AWS X-Ray formats
// and written on each attempt's upstream request, and the spans exported over OTLP (gRPC
// or HTTP) by the SDK's batch span processor, whose bounded queue drops spans rather
// than block a request. docs/tracing.md describes the spans, their attributes, the
// formats and the configuration.
//
// Nothing here is global: New builds its own TracerProvider (no otel.SetTracerProvider,
// no global propagator), and export failures are logged on Config.Logger rather than
// through OpenTelemetry's global error handler.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshd/meshd/telemetry"
)

// Protocols of the OTLP exporter.
const (
	ProtocolGRPC = "grpc"
	ProtocolHTTP = "http" // OTLP/HTTP with protobuf bodies ("http/protobuf" is accepted too)
)

// Defaults.
const (
	DefaultSampleRatio  = 1.0
	DefaultMaxQueueSize = 2048
	DefaultServiceName  = "meshd"
	// DefaultXRayEndpoint is where App Mesh's ENABLE_ENVOY_XRAY_TRACING sends spans when
	// no endpoint is given: an ADOT collector sidecar's OTLP/gRPC receiver.
	DefaultXRayEndpoint = "http://localhost:4317"
	// tracerName is the instrumentation scope of meshd's spans.
	tracerName = "github.com/meshd/meshd/telemetry/tracing"
)

// Config configures a Tracer. Its zero value is tracing off.
type Config struct {
	// Endpoint is the OTLP receiver: "host:port", or a URL "http://host:port" (plain
	// text) or "https://host:port" (TLS). An OTLP/HTTP URL's path is used as given; with
	// no path (or "/"), or with a bare host:port, spans go to /v1/traces. "" turns
	// tracing off (New returns nil) unless Exporter is set.
	Endpoint string
	// Protocol is "grpc" (the default) or "http".
	Protocol string
	// Insecure sends to a bare host:port Endpoint in plain text rather than TLS. (A URL
	// says it with its scheme.)
	Insecure bool
	// SampleRatio is the share of new traces sampled, from 0 to 1: a request that
	// continues a caller's trace follows the caller's decision (parent-based), one that
	// starts a trace is sampled by its trace id at this ratio. The zero value samples no
	// new traces; DefaultSampleRatio (1) is what meshd run uses unless told otherwise.
	SampleRatio float64
	// Propagators are the formats read on requests, in order of preference (the first
	// valid one is continued): "tracecontext", "b3", "b3multi", "xray", and "baggage"
	// (accepted; the field is forwarded as it came). The first trace-context format is
	// written on every upstream request, with every other one the request carried.
	// Default: DefaultPropagators.
	Propagators []string
	// ServiceName is the service.name of the spans' resource: meshd run uses the virtual
	// node's name. Default "meshd".
	ServiceName string
	// Headers are sent with every export (e.g. an API key of a hosted collector). When
	// none is set, the exporter honours OTEL_EXPORTER_OTLP_HEADERS.
	Headers map[string]string
	// XRay also writes X-Amzn-Trace-Id on every upstream request, and makes new trace ids
	// start with the time, as X-Ray requires (App Mesh's ENABLE_ENVOY_XRAY_TRACING).
	XRay bool
	// MaxQueueSize bounds the spans waiting for export; when it is full, new spans are
	// dropped (the request path never waits). Default DefaultMaxQueueSize.
	MaxQueueSize int
	// BatchTimeout is the longest a span waits in the queue before it is exported.
	// Default 5s (the SDK's).
	BatchTimeout time.Duration
	// Logger gets export failures (at most one line every 30s). Default: discarded.
	Logger *slog.Logger
	// Exporter, when set, replaces the OTLP exporter (tests, embedding); Endpoint,
	// Protocol, Insecure and Headers are then unused.
	Exporter sdktrace.SpanExporter
}

// FieldError is a Config field with a value New cannot use.
type FieldError struct {
	Field string // e.g. "SampleRatio", "Propagators[1]"
	Value string // the value, as given
	Msg   string // what is wanted
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("tracing: Config.%s %q: %s", e.Field, e.Value, e.Msg)
}

// Validate checks the fields; the error is a *FieldError naming the first bad one.
func (c *Config) Validate() error {
	switch strings.ToLower(c.Protocol) {
	case "", ProtocolGRPC, ProtocolHTTP, "http/protobuf":
	default:
		return &FieldError{"Protocol", c.Protocol, "want grpc or http (OTLP/HTTP with protobuf)"}
	}
	if c.Endpoint != "" {
		if _, _, _, err := parseEndpoint(c.Endpoint, c.protocol()); err != nil {
			return &FieldError{"Endpoint", c.Endpoint, err.Error()}
		}
	}
	if math.IsNaN(c.SampleRatio) || c.SampleRatio < 0 || c.SampleRatio > 1 {
		return &FieldError{"SampleRatio", strconv.FormatFloat(c.SampleRatio, 'g', -1, 64), "want a number from 0 to 1"}
	}
	if _, _, err := formats(c.Propagators); err != nil {
		return err
	}
	for k, v := range c.Headers {
		if !isToken(k) {
			return &FieldError{"Headers", k, "want a header field name (an HTTP token)"}
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			return &FieldError{"Headers[" + k + "]", v, "a value cannot hold CR, LF or NUL"}
		}
	}
	if c.MaxQueueSize < 0 {
		return &FieldError{"MaxQueueSize", strconv.Itoa(c.MaxQueueSize), "want >= 0 (0: the default)"}
	}
	if c.BatchTimeout < 0 {
		return &FieldError{"BatchTimeout", c.BatchTimeout.String(), "want >= 0 (0: the default)"}
	}
	return nil
}

func (c *Config) protocol() string {
	if p := strings.ToLower(c.Protocol); p == ProtocolHTTP || p == "http/protobuf" {
		return ProtocolHTTP
	}
	return ProtocolGRPC
}

// formats turns the names of Propagators into the formats read (in order) and the one
// always written.
func formats(names []string) (read []format, first format, err error) {
	if len(names) == 0 {
		names = DefaultPropagators
	}
	var seen format
	for i, n := range names {
		f, ok := formatNames[strings.ToLower(strings.TrimSpace(n))]
		if !ok {
			return nil, 0, &FieldError{fmt.Sprintf("Propagators[%d]", i), n, "want tracecontext, b3, b3multi, xray or baggage"}
		}
		if f == 0 || seen&f != 0 {
			continue
		}
		seen |= f
		read = append(read, f)
		if first == 0 {
			first = f
		}
	}
	if first == 0 {
		return nil, 0, &FieldError{"Propagators", strings.Join(names, ","), "name no trace-context format (want one of tracecontext, b3, b3multi, xray)"}
	}
	return read, first, nil
}

// parseEndpoint splits an Endpoint into its host:port, whether it is plain text (for a
// URL; insecure is false for a bare host:port) and the URL path ("" for a bare one).
func parseEndpoint(ep, protocol string) (hostport string, isURL, insecure bool, err error) {
	if strings.Contains(ep, "://") {
		u, err := url.Parse(ep)
		if err != nil {
			return "", false, false, errors.New("want host:port or an http:// or https:// URL")
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return "", false, false, fmt.Errorf("scheme %q: want http or https", u.Scheme)
		}
		if u.Host == "" || u.Hostname() == "" {
			return "", false, false, errors.New("the URL names no host")
		}
		if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return "", false, false, errors.New("want scheme://host[:port][/path], no user, query or fragment")
		}
		if protocol == ProtocolGRPC && u.Path != "" && u.Path != "/" {
			return "", false, false, errors.New("an OTLP/gRPC endpoint has no path")
		}
		if p := u.Port(); p != "" {
			if err := checkPort(p); err != nil {
				return "", false, false, err
			}
		}
		return u.Host, true, u.Scheme == "http", nil
	}
	host, port, err := net.SplitHostPort(ep)
	if err != nil || host == "" {
		return "", false, false, errors.New("want host:port or an http:// or https:// URL")
	}
	if err := checkPort(port); err != nil {
		return "", false, false, err
	}
	return ep, false, false, nil
}

func checkPort(p string) error {
	if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q: want 1 to 65535", p)
	}
	return nil
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// Tracer is the OpenTelemetry telemetry.Tracer. Create it with New; Shutdown flushes it.
type Tracer struct {
	tp    *sdktrace.TracerProvider
	tr    trace.Tracer
	read  []format // the formats read, in order of preference
	write format   // the formats written on every upstream request
	// client is the OTLP/HTTP exporter's own client (nil for gRPC): its idle connections
	// are closed at Shutdown.
	client *http.Client
}

var _ telemetry.Tracer = (*Tracer)(nil)

// New validates cfg and starts a Tracer: the exporter, the batch span processor and its
// goroutine. It returns nil, nil when cfg turns tracing off (no Endpoint and no
// Exporter): leave proxy.Options.Tracer nil then (a nil *Tracer stored in the interface
// would not be a nil interface). Connecting to the receiver is lazy: New does not wait
// for it, and spans exported while it is away are dropped (and logged).
func New(ctx context.Context, cfg Config) (*Tracer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Endpoint == "" && cfg.Exporter == nil {
		return nil, nil
	}
	read, first, _ := formats(cfg.Propagators)
	t := &Tracer{read: read, write: first}
	if cfg.XRay {
		t.write |= fXRay
	}
	exp := cfg.Exporter
	if exp == nil {
		var err error
		if exp, t.client, err = newExporter(ctx, &cfg); err != nil {
			return nil, err
		}
	}
	log := telemetry.OrDiscard(cfg.Logger)
	queue := cfg.MaxQueueSize
	if queue == 0 {
		queue = DefaultMaxQueueSize
	}
	bopts := []sdktrace.BatchSpanProcessorOption{
		sdktrace.WithMaxQueueSize(queue),
		sdktrace.WithMaxExportBatchSize(min(512, queue)),
	}
	if cfg.BatchTimeout > 0 {
		bopts = append(bopts, sdktrace.WithBatchTimeout(cfg.BatchTimeout))
	}
	bsp := sdktrace.NewBatchSpanProcessor(&loggingExporter{SpanExporter: exp, log: log}, bopts...)
	name := cfg.ServiceName
	if name == "" {
		name = DefaultServiceName
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(name)))
	if err != nil {
		res = resource.NewSchemaless(semconv.ServiceName(name))
	}
	root := sdktrace.TraceIDRatioBased(cfg.SampleRatio)
	t.tp = sdktrace.NewTracerProvider(
		sdktrace.WithSpanProcessor(bsp),
		sdktrace.WithResource(res),
		sdktrace.WithIDGenerator(idGenerator{xray: cfg.XRay}),
		sdktrace.WithSampler(sdktrace.ParentBased(root, sdktrace.WithRemoteParentNotSampled(deferredSampler{root}))),
	)
	t.tr = t.tp.Tracer(tracerName, trace.WithSchemaURL(semconv.SchemaURL))
	return t, nil
}

// newExporter builds the OTLP exporter cfg names.
func newExporter(ctx context.Context, cfg *Config) (sdktrace.SpanExporter, *http.Client, error) {
	proto := cfg.protocol()
	hostport, isURL, insecure, _ := parseEndpoint(cfg.Endpoint, proto)
	if !isURL {
		insecure = cfg.Insecure
	}
	if proto == ProtocolGRPC {
		opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(hostport)}
		if insecure {
			opts = append(opts, otlptracegrpc.WithInsecure())
		}
		if len(cfg.Headers) > 0 {
			opts = append(opts, otlptracegrpc.WithHeaders(cfg.Headers))
		}
		exp, err := otlptracegrpc.New(ctx, opts...)
		if err != nil {
			return nil, nil, fmt.Errorf("tracing: OTLP/gRPC exporter: %w", err)
		}
		return exp, nil, nil
	}
	// Its own client: no proxy from the environment (HTTP_PROXY may point at meshd's
	// own egress listener), and idle connections closed at Shutdown.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	opts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(hostport), otlptracehttp.WithHTTPClient(client)}
	if insecure {
		opts = append(opts, otlptracehttp.WithInsecure())
	}
	if isURL {
		if u, _ := url.Parse(cfg.Endpoint); u.Path != "" && u.Path != "/" {
			opts = append(opts, otlptracehttp.WithURLPath(u.Path))
		}
	}
	if len(cfg.Headers) > 0 {
		opts = append(opts, otlptracehttp.WithHeaders(cfg.Headers))
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("tracing: OTLP/HTTP exporter: %w", err)
	}
	return exp, client, nil
}

// ForceFlush exports every span ended so far.
func (t *Tracer) ForceFlush(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.tp.ForceFlush(ctx)
}

// Shutdown exports the spans still queued (within ctx) and stops the exporter. Spans
// started afterwards are not recorded. A nil Tracer's Shutdown does nothing.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	err := t.tp.Shutdown(ctx)
	if t.client != nil {
		t.client.CloseIdleConnections()
	}
	return err
}

// loggingExporter logs export failures on meshd's logger, at most once every 30s, and
// keeps them from OpenTelemetry's global error handler.
type loggingExporter struct {
	sdktrace.SpanExporter
	log *slog.Logger

	mu      sync.Mutex
	last    time.Time
	dropped int // spans of failed exports since the last line
}

func (e *loggingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := e.SpanExporter.ExportSpans(ctx, spans)
	if err == nil {
		return nil
	}
	e.mu.Lock()
	e.dropped += len(spans)
	now := time.Now()
	if now.Sub(e.last) < 30*time.Second {
		e.mu.Unlock()
		return nil
	}
	e.last = now
	dropped := e.dropped
	e.dropped = 0
	e.mu.Unlock()
	e.log.Warn("trace export failed; spans dropped", "spans", dropped, "err", err)
	return nil
}

// attribute keys of meshd's own attributes.
const (
	keyListener      = attribute.Key("meshd.listener")
	keyRoute         = attribute.Key("meshd.route")
	keyService       = attribute.Key("meshd.virtual_service")
	keyCluster       = attribute.Key("meshd.cluster")
	keyUpstream      = attribute.Key("meshd.upstream")
	keyAttempts      = attribute.Key("meshd.attempts")
	keyAttempt       = attribute.Key("meshd.attempt")
	keyError         = attribute.Key("meshd.error")
	keyResponseFlags = attribute.Key("meshd.response_flags")
)
