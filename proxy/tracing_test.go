package proxy_test

import (
	"context"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
	"github.com/meshd/meshd/telemetry/tracing"
)

// The trace a caller sends in the tests: the same ids in every format.
const (
	inTrace       = "5759e988bd862e3fe1be46a994272793"
	inSpan        = "53995c3f42cd8ad8"
	inTraceparent = "00-" + inTrace + "-" + inSpan + "-01"
	inXRay        = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=" + inSpan + ";Sampled=1"
)

// traceFields are the request fields of every propagation format.
var traceFields = []string{"Traceparent", "Tracestate", "B3", "X-B3-Traceid", "X-B3-Spanid", "X-B3-Parentspanid", "X-B3-Sampled", "X-Amzn-Trace-Id"}

// headerUpstream answers with the statuses given, in turn (200 once they run out), and
// keeps the head of every request it got.
type headerUpstream struct {
	mu       sync.Mutex
	heads    []http.Header
	statuses []int
}

func startHeaderUpstream(t *testing.T, statuses ...int) (*headerUpstream, *testutil.Upstream) {
	u := &headerUpstream{statuses: statuses}
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		n := len(u.heads)
		u.heads = append(u.heads, r.Header.Clone())
		status := 200
		if n < len(u.statuses) {
			status = u.statuses[n]
		}
		u.mu.Unlock()
		w.WriteHeader(status)
		_, _ = io.WriteString(w, "from upstream\n")
	}))
	return u, up
}

func (u *headerUpstream) got() []http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]http.Header(nil), u.heads...)
}

// memTracer is a Tracer exporting to memory, shut down at cleanup (after meshd, whose
// cleanup is registered later).
func memTracer(t *testing.T, cfg tracing.Config) (*tracing.Tracer, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	cfg.Exporter = exp
	tr, err := tracing.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	return tr, exp
}

// spansOf flushes tr and returns the spans ended so far. The front ends end the server
// span after the response is sent, so when wait is set it waits (up to 10s) for the
// server span to be there. An unsampled request never has one: its fate is decided when
// its head is read.
func spansOf(t *testing.T, tr *tracing.Tracer, exp *tracetest.InMemoryExporter, wait bool) (server *tracetest.SpanStub, clients []tracetest.SpanStub) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if err := tr.ForceFlush(context.Background()); err != nil {
			t.Fatal(err)
		}
		server, clients = nil, nil
		for _, s := range exp.GetSpans() {
			switch s.SpanKind {
			case trace.SpanKindServer:
				if server != nil {
					t.Fatalf("two server spans: %q and %q", server.Name, s.Name)
				}
				server = &s
			case trace.SpanKindClient:
				clients = append(clients, s)
			}
		}
		if !wait || server != nil || time.Now().After(deadline) {
			return server, clients
		}
	}
}

func do(t *testing.T, c *http.Client, req *http.Request) *http.Response {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp
}

// one returns the only value of a field of h, failing when it has several.
func one(t *testing.T, h http.Header, name string) string {
	t.Helper()
	v := h.Values(name)
	if len(v) > 1 {
		t.Fatalf("%s sent %d times upstream: %q", name, len(v), v)
	}
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// TestTracingPropagation: a caller's trace context in each format reaches the upstream
// as the same trace, with the attempt's client span as parent, in W3C traceparent and
// in the caller's own format (once: the caller's field is replaced, not repeated); the
// server span continues the caller's span. Over HTTP/1.1 (the fast path) and h2c.
func TestTracingPropagation(t *testing.T) {
	cases := []struct {
		name  string
		xray  bool
		in    map[string]string
		check func(t *testing.T, h http.Header, server, client trace.SpanContext)
	}{
		{"traceparent", false, map[string]string{"Traceparent": inTraceparent, "Tracestate": "vendor=v1"},
			func(t *testing.T, h http.Header, _, client trace.SpanContext) {
				if got := one(t, h, "Tracestate"); got != "vendor=v1" {
					t.Errorf("tracestate %q", got)
				}
				for _, f := range []string{"B3", "X-B3-Traceid", "X-Amzn-Trace-Id"} {
					if h.Get(f) != "" {
						t.Errorf("%s written: %q", f, h.Get(f))
					}
				}
			}},
		{"b3", false, map[string]string{"B3": inTrace + "-" + inSpan + "-1"},
			func(t *testing.T, h http.Header, _, client trace.SpanContext) {
				if got, want := one(t, h, "B3"), inTrace+"-"+client.SpanID().String()+"-1"; got != want {
					t.Errorf("b3 %q, want %q", got, want)
				}
			}},
		{"b3multi", false, map[string]string{"X-B3-Traceid": inTrace, "X-B3-Spanid": inSpan, "X-B3-Sampled": "1"},
			func(t *testing.T, h http.Header, server, client trace.SpanContext) {
				if one(t, h, "X-B3-Traceid") != inTrace || one(t, h, "X-B3-Spanid") != client.SpanID().String() ||
					one(t, h, "X-B3-Parentspanid") != server.SpanID().String() || one(t, h, "X-B3-Sampled") != "1" {
					t.Errorf("B3 fields %q %q %q %q", h.Get("X-B3-Traceid"), h.Get("X-B3-Spanid"), h.Get("X-B3-Parentspanid"), h.Get("X-B3-Sampled"))
				}
			}},
		{"x-amzn-trace-id", false, map[string]string{"X-Amzn-Trace-Id": inXRay},
			func(t *testing.T, h http.Header, _, client trace.SpanContext) {
				if got, want := one(t, h, "X-Amzn-Trace-Id"), "Root=1-5759e988-bd862e3fe1be46a994272793;Parent="+client.SpanID().String()+";Sampled=1"; got != want {
					t.Errorf("X-Amzn-Trace-Id %q, want %q", got, want)
				}
			}},
		{"traceparent with xray on", true, map[string]string{"Traceparent": inTraceparent},
			func(t *testing.T, h http.Header, _, client trace.SpanContext) {
				if got, want := one(t, h, "X-Amzn-Trace-Id"), "Root=1-5759e988-bd862e3fe1be46a994272793;Parent="+client.SpanID().String()+";Sampled=1"; got != want {
					t.Errorf("X-Amzn-Trace-Id %q, want %q", got, want)
				}
			}},
	}
	for _, proto := range []string{"HTTP/1.1", "h2c"} {
		for _, c := range cases {
			t.Run(proto+"/"+c.name, func(t *testing.T) {
				tr, exp := memTracer(t, tracing.Config{SampleRatio: 1, ServiceName: "app", XRay: c.xray})
				u, up := startHeaderUpstream(t)
				srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", Tracer: tr}, resMesh([]int{up.Port}, "", ""))
				client := testutil.HTTPClient(t, srv.EgressAddr())
				if proto == "h2c" {
					client = testutil.H2CClient(t, srv.EgressAddr())
				}
				req := newReq(t, "GET", "http://svc.t.local/orders/7?x=1", nil)
				for k, v := range c.in {
					req.Header.Set(k, v)
				}
				if resp := do(t, client, req); resp.StatusCode != 200 {
					t.Fatalf("status %d", resp.StatusCode)
				}
				server, clients := spansOf(t, tr, exp, true)
				if server == nil || len(clients) != 1 {
					t.Fatalf("server span %v, %d client spans", server, len(clients))
				}
				if server.SpanContext.TraceID().String() != inTrace || server.Parent.SpanID().String() != inSpan || !server.Parent.IsRemote() {
					t.Fatalf("server span trace %v parent %v: not the caller's", server.SpanContext.TraceID(), server.Parent.SpanID())
				}
				cl := clients[0]
				if cl.Parent.SpanID() != server.SpanContext.SpanID() {
					t.Fatalf("client span parent %v, want the server span %v", cl.Parent.SpanID(), server.SpanContext.SpanID())
				}
				heads := u.got()
				if len(heads) != 1 {
					t.Fatalf("upstream got %d requests", len(heads))
				}
				if got, want := one(t, heads[0], "Traceparent"), "00-"+inTrace+"-"+cl.SpanContext.SpanID().String()+"-01"; got != want {
					t.Fatalf("upstream traceparent %q, want %q", got, want)
				}
				c.check(t, heads[0], server.SpanContext, cl.SpanContext)
			})
		}
	}
}

// TestTracingBridge: an HTTP/1.1 request to an HTTP/2 upstream (the HTTP/1.1 front end's
// bridge over net/http's transport) carries its attempt's traceparent, once.
func TestTracingBridge(t *testing.T) {
	tr, exp := memTracer(t, tracing.Config{SampleRatio: 1})
	var mu sync.Mutex
	var got []string
	up := testutil.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = r.Header.Values("Traceparent")
		mu.Unlock()
	}))
	mesh := meshDef{services: []svcDef{{name: "h2.t.local", node: "h2svc", port: up.Port, proto: "http2"}}}
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", Tracer: tr}, mesh.yaml())
	req := newReq(t, "GET", "http://h2.t.local/", nil)
	req.Header.Set("Traceparent", inTraceparent)
	if resp := do(t, testutil.HTTPClient(t, srv.EgressAddr()), req); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	server, clients := spansOf(t, tr, exp, true)
	if server == nil || len(clients) != 1 || server.Parent.SpanID().String() != inSpan {
		t.Fatalf("server span %v, %d client spans", server, len(clients))
	}
	mu.Lock()
	defer mu.Unlock()
	if want := "00-" + inTrace + "-" + clients[0].SpanContext.SpanID().String() + "-01"; len(got) != 1 || got[0] != want {
		t.Fatalf("upstream traceparent %q, want [%s]", got, want)
	}
}

// TestTracingSampling: with the root ratio at 0 a request that starts a trace records
// nothing and reaches the upstream with no trace fields; one whose caller sampled its
// trace is recorded all the same (parent-based).
func TestTracingSampling(t *testing.T) {
	tr, exp := memTracer(t, tracing.Config{SampleRatio: 0})
	u, up := startHeaderUpstream(t)
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", Tracer: tr}, resMesh([]int{up.Port}, "", ""))
	client := testutil.HTTPClient(t, srv.EgressAddr())

	do(t, client, newReq(t, "GET", "http://svc.t.local/", nil))
	if server, clients := spansOf(t, tr, exp, false); server != nil || len(clients) != 0 {
		t.Fatalf("ratio 0 recorded a new trace: %v, %d client spans", server, len(clients))
	}
	for _, f := range traceFields {
		if v := u.got()[0].Get(f); v != "" {
			t.Errorf("unsampled request: upstream got %s: %q", f, v)
		}
	}

	req := newReq(t, "GET", "http://svc.t.local/", nil)
	req.Header.Set("Traceparent", inTraceparent)
	do(t, client, req)
	server, clients := spansOf(t, tr, exp, true)
	if server == nil || len(clients) != 1 || server.SpanContext.TraceID().String() != inTrace {
		t.Fatalf("parent-sampled request not recorded: %v, %d client spans", server, len(clients))
	}
	if got := u.got()[1].Get("Traceparent"); got != "00-"+inTrace+"-"+clients[0].SpanContext.SpanID().String()+"-01" {
		t.Fatalf("upstream traceparent %q", got)
	}

	// A caller's "not sampled" reaches the upstream as it came.
	exp.Reset()
	req = newReq(t, "GET", "http://svc.t.local/", nil)
	req.Header.Set("Traceparent", "00-"+inTrace+"-"+inSpan+"-00")
	do(t, client, req)
	if server, _ := spansOf(t, tr, exp, false); server != nil {
		t.Fatalf("unsampled parent recorded")
	}
	if got := u.got()[2].Get("Traceparent"); got != "00-"+inTrace+"-"+inSpan+"-00" {
		t.Fatalf("upstream traceparent %q, want the caller's", got)
	}
}

// TestTracingOffAddsNoHeaders: without a tracer meshd adds no trace field, and forwards
// the caller's as they came.
func TestTracingOffAddsNoHeaders(t *testing.T) {
	u, up := startHeaderUpstream(t)
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app"}, resMesh([]int{up.Port}, "", ""))
	for _, proto := range []string{"HTTP/1.1", "h2c"} {
		client := testutil.HTTPClient(t, srv.EgressAddr())
		if proto == "h2c" {
			client = testutil.H2CClient(t, srv.EgressAddr())
		}
		do(t, client, newReq(t, "GET", "http://svc.t.local/", nil))
		req := newReq(t, "GET", "http://svc.t.local/", nil)
		req.Header.Set("Traceparent", inTraceparent)
		req.Header.Set("X-Amzn-Trace-Id", inXRay)
		do(t, client, req)
	}
	heads := u.got()
	if len(heads) != 4 {
		t.Fatalf("%d upstream requests", len(heads))
	}
	for i, h := range heads {
		for _, f := range traceFields {
			got, want := h.Values(f), []string(nil)
			if i%2 == 1 && f == "Traceparent" {
				want = []string{inTraceparent}
			}
			if i%2 == 1 && f == "X-Amzn-Trace-Id" {
				want = []string{inXRay}
			}
			if strings.Join(got, "|") != strings.Join(want, "|") {
				t.Errorf("request %d: upstream got %s %q, want %q", i, f, got, want)
			}
		}
	}
}

// TestTracingGRPC: a gRPC call through meshd is a span named by its service and method,
// with the upstream's grpc-status (from the trailers).
func TestTracingGRPC(t *testing.T) {
	tr, exp := memTracer(t, tracing.Config{SampleRatio: 1})
	hs := health.NewServer()
	up := testutil.StartGRPC(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, hs) })
	t.Cleanup(hs.Shutdown)
	mesh := meshDef{services: []svcDef{{name: "grpc.t.local", node: "grpcsvc", port: up.Port, proto: "grpc"}}}
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", Tracer: tr}, mesh.yaml())
	cc := grpcDial(t, srv.EgressAddr(), "grpc.t.local")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "missing"}); err == nil {
		t.Fatal("Check of an unknown service: no error")
	}
	server, clients := spansOf(t, tr, exp, true)
	if server == nil || len(clients) != 1 {
		t.Fatalf("server span %v, %d client spans", server, len(clients))
	}
	if server.Name != "grpc.health.v1.Health/Check" {
		t.Errorf("span name %q", server.Name)
	}
	got := map[string]string{}
	for _, kv := range server.Attributes {
		got[string(kv.Key)] = kv.Value.String()
	}
	for k, v := range map[string]string{"rpc.system": "grpc", "rpc.service": "grpc.health.v1.Health", "rpc.method": "Check",
		"rpc.grpc.status_code": "5", "network.protocol.version": "2", "http.response.status_code": "200", "meshd.cluster": "grpcsvc"} {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

// otlpReceiver is an OTLP/HTTP trace receiver on 127.0.0.1: it decodes each
// ExportTraceServiceRequest (protobuf) and keeps its spans.
type otlpReceiver struct {
	*httptest.Server
	mu    sync.Mutex
	spans []*tracepb.Span
	res   []*commonpb.KeyValue // the resource attributes of the last export
	paths []string
}

func startOTLPReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		if err != nil || req.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		var ex coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &ex); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.paths = append(r.paths, req.URL.Path)
		for _, rs := range ex.GetResourceSpans() {
			r.res = rs.GetResource().GetAttributes()
			for _, ss := range rs.GetScopeSpans() {
				r.spans = append(r.spans, ss.GetSpans()...)
			}
		}
		r.mu.Unlock()
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *otlpReceiver) received() ([]*tracepb.Span, []*commonpb.KeyValue, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*tracepb.Span(nil), r.spans...), r.res, append([]string(nil), r.paths...)
}

func otlpAttrs(kvs []*commonpb.KeyValue) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		switch v := kv.GetValue().GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.GetKey()] = v.StringValue
		case *commonpb.AnyValue_IntValue:
			m[kv.GetKey()] = strconv.FormatInt(v.IntValue, 10)
		default:
			m[kv.GetKey()] = kv.GetValue().String()
		}
	}
	return m
}

// TestTracingOTLPRetry runs a real meshd exporting over OTLP/HTTP to a receiver that
// decodes the protobuf: a request whose first attempt gets 503 (retried by the default
// policy) and whose second succeeds is one server span with two client spans under it,
// attempts 1 and 2, each upstream request carrying its own attempt's span.
func TestTracingOTLPRetry(t *testing.T) {
	recv := startOTLPReceiver(t)
	tr, err := tracing.New(context.Background(), tracing.Config{Endpoint: recv.URL, Protocol: "http", SampleRatio: 1,
		ServiceName: "app", BatchTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tr.Shutdown(context.Background()); err != nil {
			t.Errorf("tracer Shutdown: %v", err)
		}
	})
	u, up := startHeaderUpstream(t, 503)
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", Tracer: tr}, resMesh([]int{up.Port}, "", ""))
	client := testutil.HTTPClient(t, srv.EgressAddr())
	req := newReq(t, "GET", "http://svc.t.local/orders/7", nil)
	req.Header.Set("Traceparent", inTraceparent)
	if resp := do(t, client, req); resp.StatusCode != 200 {
		t.Fatalf("status %d (%s)", resp.StatusCode, resp.Header.Get("X-Meshd-Error"))
	}

	var spans []*tracepb.Span
	var res []*commonpb.KeyValue
	var paths []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if spans, res, paths = recv.received(); len(spans) >= 3 {
			break
		}
	}
	if len(spans) != 3 {
		t.Fatalf("receiver got %d spans, want 3", len(spans))
	}
	if paths[0] != "/v1/traces" {
		t.Errorf("export path %q", paths[0])
	}
	if got := otlpAttrs(res)["service.name"]; got != "app" {
		t.Errorf("service.name %q", got)
	}
	var server *tracepb.Span
	var clients []*tracepb.Span
	for _, s := range spans {
		switch s.GetKind() {
		case tracepb.Span_SPAN_KIND_SERVER:
			server = s
		case tracepb.Span_SPAN_KIND_CLIENT:
			clients = append(clients, s)
		}
	}
	if server == nil || len(clients) != 2 {
		t.Fatalf("server span %v, %d client spans", server, len(clients))
	}
	if hex.EncodeToString(server.GetTraceId()) != inTrace || hex.EncodeToString(server.GetParentSpanId()) != inSpan {
		t.Errorf("server span trace %x parent %x: not the caller's", server.GetTraceId(), server.GetParentSpanId())
	}
	sa := otlpAttrs(server.GetAttributes())
	for k, v := range map[string]string{"http.request.method": "GET", "url.path": "/orders/7", "server.address": "svc.t.local",
		"network.protocol.version": "1.1", "http.response.status_code": "200", "meshd.virtual_service": "svc.t.local",
		"meshd.cluster": "svc", "meshd.attempts": "2", "meshd.upstream": up.Addr, "meshd.listener": "egress"} {
		if sa[k] != v {
			t.Errorf("server span %s = %q, want %q", k, sa[k], v)
		}
	}
	if server.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR {
		t.Errorf("server span status %v", server.GetStatus())
	}
	heads := u.got()
	if len(heads) != 2 {
		t.Fatalf("upstream got %d requests, want 2", len(heads))
	}
	for _, c := range clients {
		if string(c.GetParentSpanId()) != string(server.GetSpanId()) || string(c.GetTraceId()) != string(server.GetTraceId()) {
			t.Errorf("client span parent %x, want the server span %x", c.GetParentSpanId(), server.GetSpanId())
		}
		ca := otlpAttrs(c.GetAttributes())
		n := ca["meshd.attempt"]
		want := map[string]string{"1": "503", "2": "200"}[n]
		if want == "" || ca["http.response.status_code"] != want || ca["server.address"] != "127.0.0.1" || ca["server.port"] != strconv.Itoa(up.Port) {
			t.Errorf("client span attributes %v", ca)
		}
		if isErr := c.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR; isErr != (n == "1") {
			t.Errorf("attempt %s: status %v", n, c.GetStatus())
		}
		// The upstream request of attempt n carried attempt n's span.
		i := map[string]int{"1": 0, "2": 1}[n]
		if got, want := one(t, heads[i], "Traceparent"), "00-"+inTrace+"-"+hex.EncodeToString(c.GetSpanId())+"-01"; got != want {
			t.Errorf("attempt %s: upstream traceparent %q, want %q", n, got, want)
		}
	}
	if clients[0].GetStartTimeUnixNano() < server.GetStartTimeUnixNano() || clients[1].GetEndTimeUnixNano() > server.GetEndTimeUnixNano() {
		t.Errorf("client spans outside the server span")
	}
}
