package tracing

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshd/meshd/telemetry"
)

// newTestTracer starts a Tracer exporting to memory; it is shut down at cleanup.
func newTestTracer(t *testing.T, cfg Config) (*Tracer, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	cfg.Exporter = exp
	tr, err := New(t.Context(), cfg)
	if err != nil || tr == nil {
		t.Fatalf("New: %v, %v", tr, err)
	}
	t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	return tr, exp
}

// flushed returns the spans ended so far.
func flushed(t *testing.T, tr *Tracer, exp *tracetest.InMemoryExporter) tracetest.SpanStubs {
	t.Helper()
	if err := tr.ForceFlush(t.Context()); err != nil {
		t.Fatal(err)
	}
	return exp.GetSpans()
}

func attrs(s tracetest.SpanStub) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes {
		m[kv.Key] = kv.Value
	}
	return m
}

// checkAttrs compares the attributes named in want (string or int values).
func checkAttrs(t *testing.T, s tracetest.SpanStub, want map[string]any) {
	t.Helper()
	got := attrs(s)
	for k, w := range want {
		v, ok := got[attribute.Key(k)]
		switch w := w.(type) {
		case nil:
			if ok {
				t.Errorf("span %q: %s = %v, want none", s.Name, k, v.String())
			}
		case string:
			if !ok || v.AsString() != w {
				t.Errorf("span %q: %s = %v, want %q", s.Name, k, v.String(), w)
			}
		case int:
			if !ok || v.AsInt64() != int64(w) {
				t.Errorf("span %q: %s = %v, want %d", s.Name, k, v.String(), w)
			}
		}
	}
}

func byKind(spans tracetest.SpanStubs, kind trace.SpanKind) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range spans {
		if s.SpanKind == kind {
			out = append(out, s)
		}
	}
	return out
}

func newRec(method, path string) *telemetry.Request {
	return &telemetry.Request{Start: time.Now(), Listener: "egress", Protocol: "HTTP/1.1", Method: method,
		Authority: "svc.t.local:8080", Path: path, Remote: "10.0.0.1:5555"}
}

// TestServerAndAttemptSpans: a request retried once is a server span with two client
// spans under it, each attempt's upstream request carrying its own span.
func TestServerAndAttemptSpans(t *testing.T) {
	tr, exp := newTestTracer(t, Config{SampleRatio: 1, ServiceName: "app"})
	rec := newRec("GET", "/a/b?x=1")
	h := hdr{"traceparent": "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01", "user-agent": "curl/8"}
	sp := tr.StartRequest(h, rec)
	if sp == nil {
		t.Fatal("sampled request: no span")
	}
	rec.Service, rec.Route, rec.Cluster = "svc.t.local", "r", "svc"
	s1, s2 := setter{}, setter{}
	sp.StartAttempt("10.0.0.2:80", 1, s1.set).End(503, nil, "")
	sp.StartAttempt("10.0.0.3:80", 2, s2.set).End(200, nil, "")
	rec.Status, rec.Attempts, rec.Duration, rec.Flags, rec.BytesSent = 200, 2, 5*time.Millisecond, "-", 14
	sp.End(rec)

	spans := flushed(t, tr, exp)
	servers, clients := byKind(spans, trace.SpanKindServer), byKind(spans, trace.SpanKindClient)
	if len(spans) != 3 || len(servers) != 1 || len(clients) != 2 {
		t.Fatalf("spans %d: %d server, %d client", len(spans), len(servers), len(clients))
	}
	srv := servers[0]
	if srv.Name != "GET r" || srv.Parent.SpanID() != sid || !srv.Parent.IsRemote() || srv.SpanContext.TraceID() != tid {
		t.Fatalf("server span %q parent %v trace %v", srv.Name, srv.Parent.SpanID(), srv.SpanContext.TraceID())
	}
	if got := srv.EndTime.Sub(srv.StartTime); got != 5*time.Millisecond {
		t.Errorf("server span lasted %v, want the record's 5ms", got)
	}
	checkAttrs(t, srv, map[string]any{
		"http.request.method": "GET", "url.path": "/a/b", "server.address": "svc.t.local", "server.port": 8080,
		"network.protocol.version": "1.1", "client.address": "10.0.0.1", "user_agent.original": "curl/8",
		"http.response.status_code": 200, "meshd.route": "r", "meshd.virtual_service": "svc.t.local",
		"meshd.cluster": "svc", "meshd.upstream": "10.0.0.3:80", "meshd.attempts": 2, "meshd.listener": "egress",
		"meshd.error": nil, "error.type": nil, "meshd.response_flags": nil, "rpc.system": nil,
	})
	if srv.Status.Code != codes.Unset {
		t.Errorf("server status %v", srv.Status)
	}
	if srv.Resource.String() == "" || !strings.Contains(srv.Resource.String(), "service.name=app") {
		t.Errorf("resource %v", srv.Resource)
	}
	for i, c := range clients {
		n := i + 1
		if c.Parent.SpanID() != srv.SpanContext.SpanID() || c.SpanContext.TraceID() != tid {
			t.Errorf("attempt %d: parent %v, want the server span %v", n, c.Parent.SpanID(), srv.SpanContext.SpanID())
		}
		if c.Name != "GET r" {
			t.Errorf("attempt %d: name %q", n, c.Name)
		}
		s := []setter{s1, s2}[i]
		if want := "00-" + tid.String() + "-" + c.SpanContext.SpanID().String() + "-01"; s["traceparent"] != want {
			t.Errorf("attempt %d wrote traceparent %q, want %q", n, s["traceparent"], want)
		}
		if len(s) != 1 {
			t.Errorf("attempt %d wrote %v, want traceparent only", n, s)
		}
	}
	checkAttrs(t, clients[0], map[string]any{"meshd.attempt": 1, "server.address": "10.0.0.2", "server.port": 80,
		"http.response.status_code": 503, "error.type": "503", "meshd.cluster": "svc"})
	checkAttrs(t, clients[1], map[string]any{"meshd.attempt": 2, "server.address": "10.0.0.3", "http.response.status_code": 200, "error.type": nil})
	if clients[0].Status.Code != codes.Error || clients[1].Status.Code != codes.Unset {
		t.Errorf("attempt statuses %v, %v", clients[0].Status, clients[1].Status)
	}
}

// TestErrorSpans: meshd's own answers and failed attempts mark their spans failed with
// the error origin.
func TestErrorSpans(t *testing.T) {
	tr, exp := newTestTracer(t, Config{SampleRatio: 1})
	rec := newRec("POST", "/x")
	sp := tr.StartRequest(hdr{}, rec)
	sp.StartAttempt("10.0.0.2:80", 1, setter{}.set).End(0, errors.New("dial tcp 10.0.0.2:80: connection refused"), "upstream_connect_failure")
	rec.Status, rec.Code, rec.Flags, rec.Attempts = 503, "upstream_connect_failure", "UF", 1
	sp.End(rec)
	rec2 := newRec("BREW", "/pot")
	sp2 := tr.StartRequest(hdr{}, rec2)
	rec2.Status = 502
	sp2.End(rec2)

	spans := flushed(t, tr, exp)
	if len(spans) != 3 {
		t.Fatalf("%d spans", len(spans))
	}
	c := byKind(spans, trace.SpanKindClient)[0]
	checkAttrs(t, c, map[string]any{"meshd.error": "upstream_connect_failure", "error.type": "upstream_connect_failure", "http.response.status_code": nil})
	if c.Status.Code != codes.Error || !strings.Contains(c.Status.Description, "connection refused") {
		t.Errorf("attempt status %+v", c.Status)
	}
	servers := byKind(spans, trace.SpanKindServer)
	s := servers[0]
	checkAttrs(t, s, map[string]any{"meshd.error": "upstream_connect_failure", "meshd.response_flags": "UF", "http.response.status_code": 503, "meshd.upstream": "10.0.0.2:80"})
	if s.Status.Code != codes.Error || s.Status.Description != "upstream_connect_failure" || s.Name != "POST" {
		t.Errorf("server span %q status %+v", s.Name, s.Status)
	}
	s = servers[1]
	checkAttrs(t, s, map[string]any{"http.request.method": "_OTHER", "http.request.method_original": "BREW", "error.type": "502", "meshd.attempts": 0})
	if s.Status.Code != codes.Error || s.Name != "HTTP" {
		t.Errorf("unknown method span %q status %+v", s.Name, s.Status)
	}
}

// TestGRPCSpans: a gRPC call names its span by service and method and reads
// grpc-status from the trailers.
func TestGRPCSpans(t *testing.T) {
	tr, exp := newTestTracer(t, Config{SampleRatio: 1})
	rec := newRec("POST", "/shop.Cart/Add")
	rec.Protocol = "HTTP/2"
	sp := tr.StartRequest(hdr{"content-type": "application/grpc+proto"}, rec)
	sp.StartAttempt("10.0.0.2:80", 1, setter{}.set).End(200, nil, "")
	rec.Status, rec.Attempts = 200, 1
	rec.Resp, rec.Trailers = hdr{"content-type": "application/grpc"}, hdr{"grpc-status": "14"}
	sp.End(rec)
	spans := flushed(t, tr, exp)
	s := byKind(spans, trace.SpanKindServer)[0]
	if s.Name != "shop.Cart/Add" || s.Status.Code != codes.Error {
		t.Errorf("span %q status %v", s.Name, s.Status)
	}
	checkAttrs(t, s, map[string]any{"rpc.system": "grpc", "rpc.service": "shop.Cart", "rpc.method": "Add",
		"rpc.grpc.status_code": 14, "network.protocol.version": "2", "error.type": "14"})
	checkAttrs(t, byKind(spans, trace.SpanKindClient)[0], map[string]any{"rpc.system": "grpc"})
}

// TestSampling: the root ratio decides new traces; a caller's decision is followed
// whatever the ratio; a caller without a decision leaves it to the ratio.
func TestSampling(t *testing.T) {
	for _, c := range []struct {
		name   string
		ratio  float64
		h      hdr
		traced bool
	}{
		{"ratio 0, no parent", 0, hdr{}, false},
		{"ratio 1, no parent", 1, hdr{}, true},
		{"ratio 0, parent sampled", 0, hdr{"traceparent": "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01"}, true},
		{"ratio 1, parent not sampled", 1, hdr{"traceparent": "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-00"}, false},
		{"ratio 0, b3 sampled", 0, hdr{"b3": "5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-1"}, true},
		{"ratio 0, xray sampled", 0, hdr{"x-amzn-trace-id": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"}, true},
		{"ratio 0, b3 deferred", 0, hdr{"b3": "5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8"}, false},
		{"ratio 1, b3 deferred", 1, hdr{"b3": "5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8"}, true},
		{"ratio 1, xray Sampled=?", 1, hdr{"x-amzn-trace-id": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=?"}, true},
		{"ratio 1, xray Sampled=0", 1, hdr{"x-amzn-trace-id": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr, exp := newTestTracer(t, Config{SampleRatio: c.ratio})
			rec := newRec("GET", "/")
			sp := tr.StartRequest(c.h, rec)
			if (sp != nil) != c.traced {
				t.Fatalf("span %v, want traced %v", sp, c.traced)
			}
			if sp == nil {
				if n := len(flushed(t, tr, exp)); n != 0 {
					t.Fatalf("%d spans recorded for an unsampled request", n)
				}
				return
			}
			s := setter{}
			sp.StartAttempt("10.0.0.2:80", 1, s.set).End(200, nil, "")
			sp.End(rec)
			spans := flushed(t, tr, exp)
			if len(spans) != 2 || !strings.HasSuffix(s["traceparent"], "-01") {
				t.Fatalf("%d spans, wrote %v", len(spans), s)
			}
			if len(c.h) > 0 {
				srv := byKind(spans, trace.SpanKindServer)[0]
				if srv.SpanContext.TraceID() != tid || srv.Parent.SpanID() != sid {
					t.Fatalf("server span %v parent %v: not the caller's trace", srv.SpanContext, srv.Parent)
				}
			}
		})
	}
}

// TestWrittenFormats: the first format always, the ones the request carried, and
// X-Amzn-Trace-Id with XRay.
func TestWrittenFormats(t *testing.T) {
	b3 := hdr{"b3": "5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-1"}
	root := hdr{"x-amzn-trace-id": "Root=1-5759e988-bd862e3fe1be46a994272793"}
	for _, c := range []struct {
		name string
		cfg  Config
		h    hdr
		want []string
	}{
		{"default, nothing carried", Config{}, hdr{}, []string{"traceparent"}},
		{"default, b3 carried", Config{}, b3, []string{"traceparent", "b3"}},
		{"default, xray root carried", Config{}, root, []string{"traceparent", "x-amzn-trace-id"}},
		{"xray", Config{XRay: true}, hdr{}, []string{"traceparent", "x-amzn-trace-id"}},
		{"b3multi first", Config{Propagators: []string{"b3multi", "tracecontext"}}, hdr{}, []string{"x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled"}},
		{"b3 not read", Config{Propagators: []string{"tracecontext", "baggage"}}, b3, []string{"traceparent"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.cfg.SampleRatio = 1
			tr, exp := newTestTracer(t, c.cfg)
			rec := newRec("GET", "/")
			sp := tr.StartRequest(c.h, rec)
			s := setter{}
			sp.StartAttempt("10.0.0.2:80", 1, s.set).End(200, nil, "")
			sp.End(rec)
			if len(s) != len(c.want) {
				t.Errorf("wrote %v, want %v", s, c.want)
			}
			for _, w := range c.want {
				if s[w] == "" {
					t.Errorf("wrote %v, want %s", s, w)
				}
			}
			srv := byKind(flushed(t, tr, exp), trace.SpanKindServer)[0]
			if len(c.h) > 0 && c.name != "b3 not read" && srv.SpanContext.TraceID() != tid {
				t.Errorf("trace %v, want the caller's %v", srv.SpanContext.TraceID(), tid)
			}
			if c.name == "default, xray root carried" && (srv.Parent.IsValid() || s["x-amzn-trace-id"] != xrayHeader(tid, byKind(flushed(t, tr, exp), trace.SpanKindClient)[0].SpanContext.SpanID(), true)) {
				t.Errorf("root only: parent %v, wrote %q", srv.Parent, s["x-amzn-trace-id"])
			}
		})
	}
}

// TestRecordStringsCopied: the record's strings may alias a connection buffer that the
// next request overwrites; the exported span keeps what the request said.
func TestRecordStringsCopied(t *testing.T) {
	tr, exp := newTestTracer(t, Config{SampleRatio: 1})
	buf := []byte("GET /orig svc.t.local ua-1")
	view := func(i, j int) string { return unsafe.String(&buf[i], j-i) }
	rec := newRec(view(0, 3), view(4, 9))
	rec.Authority = view(10, 21)
	sp := tr.StartRequest(hdr{"user-agent": view(22, 26)}, rec)
	rec.Status = 200
	sp.End(rec)
	copy(buf, "PUT /over written... reuse")
	checkAttrs(t, flushed(t, tr, exp)[0], map[string]any{"url.path": "/orig", "server.address": "svc.t.local", "user_agent.original": "ua-1"})
}

// TestTraceStateCopied: the caller's tracestate, a view of a connection buffer that the
// next request overwrites, is what the exported spans carry (otel's trace state keeps
// parts of the string it parses; it was exported as the next request's bytes).
func TestTraceStateCopied(t *testing.T) {
	tr, exp := newTestTracer(t, Config{SampleRatio: 1})
	buf := []byte("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01vendor=secret1")
	view := func(i, j int) string { return unsafe.String(&buf[i], j-i) }
	rec := newRec("GET", "/")
	sp := tr.StartRequest(hdr{"traceparent": view(0, 55), "tracestate": view(55, len(buf))}, rec)
	if sp == nil {
		t.Fatal("a sampled caller's request not traced")
	}
	rec.Status = 200
	sp.End(rec)
	copy(buf[55:], "OTHER=CLIENTXY")
	for _, s := range flushed(t, tr, exp) {
		if got := s.SpanContext.TraceState().String(); got != "vendor=secret1" {
			t.Errorf("span %q exported tracestate %q, want the request's vendor=secret1", s.Name, got)
		}
	}
}

// TestConfigValidate: a bad field is an error naming it; no endpoint is tracing off.
func TestConfigValidate(t *testing.T) {
	for _, c := range []struct {
		cfg   Config
		field string
	}{
		{Config{Endpoint: "collector", SampleRatio: 1}, "Endpoint"},
		{Config{Endpoint: ":4317", SampleRatio: 1}, "Endpoint"},
		{Config{Endpoint: "collector:99999", SampleRatio: 1}, "Endpoint"},
		{Config{Endpoint: "ftp://collector:4317", SampleRatio: 1}, "Endpoint"},
		{Config{Endpoint: "http://collector:4317/v1/traces", SampleRatio: 1}, "Endpoint"}, // gRPC has no path
		{Config{Endpoint: "http://:4318", Protocol: "http", SampleRatio: 1}, "Endpoint"},
		{Config{Endpoint: "localhost:4317", Protocol: "tcp"}, "Protocol"},
		{Config{Endpoint: "localhost:4317", SampleRatio: 1.5}, "SampleRatio"},
		{Config{Endpoint: "localhost:4317", SampleRatio: -0.1}, "SampleRatio"},
		{Config{Endpoint: "localhost:4317", Propagators: []string{"tracecontext", "jaeger"}}, "Propagators[1]"},
		{Config{Endpoint: "localhost:4317", Propagators: []string{"baggage"}}, "Propagators"},
		{Config{Endpoint: "localhost:4317", Headers: map[string]string{"bad name": "x"}}, "Headers"},
		{Config{Endpoint: "localhost:4317", Headers: map[string]string{"x-key": "a\r\nb"}}, "Headers[x-key]"},
		{Config{Endpoint: "localhost:4317", MaxQueueSize: -1}, "MaxQueueSize"},
	} {
		_, err := New(t.Context(), c.cfg)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("%+v: error %v, want one naming %s", c.cfg, err, c.field)
		}
	}
	for _, ok := range []Config{
		{Endpoint: "localhost:4317"},
		{Endpoint: "http://localhost:4317"},
		{Endpoint: "https://collector.example:4318/otlp/v1/traces", Protocol: "http"},
		{Endpoint: "[::1]:4318", Protocol: "http/protobuf", Propagators: []string{"XRay", "b3"}},
	} {
		if err := ok.Validate(); err != nil {
			t.Errorf("%+v: %v", ok, err)
		}
	}
	tr, err := New(t.Context(), Config{SampleRatio: 1})
	if tr != nil || err != nil {
		t.Fatalf("no endpoint: %v, %v; want tracing off (nil, nil)", tr, err)
	}
	if err := tr.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// blockingExporter holds every export until released.
type blockingExporter struct {
	release chan struct{}
	once    sync.Once
}

func (b *blockingExporter) ExportSpans(ctx context.Context, _ []sdktrace.ReadOnlySpan) error {
	select {
	case <-b.release:
	case <-ctx.Done():
	}
	return nil
}
func (b *blockingExporter) Shutdown(context.Context) error {
	b.once.Do(func() { close(b.release) })
	return nil
}

// TestFullQueueDropsSpans: with the exporter stuck, requests go on at full speed; the
// spans beyond the bounded queue are dropped.
func TestFullQueueDropsSpans(t *testing.T) {
	exp := &blockingExporter{release: make(chan struct{})}
	tr, err := New(t.Context(), Config{SampleRatio: 1, MaxQueueSize: 8, Exporter: exp})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for range 5000 {
		rec := newRec("GET", "/")
		sp := tr.StartRequest(hdr{}, rec)
		sp.StartAttempt("10.0.0.2:80", 1, setter{}.set).End(200, nil, "")
		sp.End(rec)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("5000 requests took %v with the exporter stuck: the request path waited", d)
	}
	exp.Shutdown(t.Context()) // release the stuck export
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// failingExporter fails every export.
type failingExporter struct{}

func (failingExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error {
	return errors.New("connection refused")
}
func (failingExporter) Shutdown(context.Context) error { return nil }

// TestExportFailureLogged: a failed export is a warning on meshd's logger, not an error
// through OpenTelemetry's global handler, and repeated failures are not repeated lines.
func TestExportFailureLogged(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(&lockedWriter{w: &buf, mu: &mu}, nil))
	tr, err := New(t.Context(), Config{SampleRatio: 1, Exporter: failingExporter{}, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Shutdown(context.Background())
	for range 3 {
		rec := newRec("GET", "/")
		tr.StartRequest(hdr{}, rec).End(rec)
		if err := tr.ForceFlush(t.Context()); err != nil {
			t.Fatalf("ForceFlush: %v", err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(buf.String(), "trace export failed"); n != 1 || !strings.Contains(buf.String(), "connection refused") {
		t.Fatalf("log (%d lines about it):\n%s", n, buf.String())
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestOTLPExportersShutDownWithoutReceiver: with nothing listening at the endpoint, the
// OTLP exporters (gRPC and HTTP) still start, the request path does not wait, and
// Shutdown gives up when its context ends.
func TestOTLPExportersShutDownWithoutReceiver(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	for _, proto := range []string{"grpc", "http"} {
		t.Run(proto, func(t *testing.T) {
			tr, err := New(t.Context(), Config{Endpoint: "http://" + addr, Protocol: proto, SampleRatio: 1})
			if err != nil || tr == nil {
				t.Fatalf("New: %v, %v", tr, err)
			}
			rec := newRec("GET", "/")
			start := time.Now()
			sp := tr.StartRequest(hdr{}, rec)
			sp.StartAttempt("10.0.0.2:80", 1, setter{}.set).End(200, nil, "")
			sp.End(rec)
			if d := time.Since(start); d > time.Second {
				t.Fatalf("a traced request took %v with no receiver", d)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
			defer cancel()
			start = time.Now()
			_ = tr.Shutdown(ctx)
			if d := time.Since(start); d > 3*time.Second {
				t.Fatalf("Shutdown took %v past its 500ms context", d)
			}
		})
	}
}
