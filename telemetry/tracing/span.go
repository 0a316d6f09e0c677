package tracing

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshd/meshd/telemetry"
)

// The request record's strings may alias a connection's buffers (telemetry.Request), and
// spans are exported later, on another goroutine: every string a span keeps is copied
// (strings.Clone) unless it is a constant.

// StartRequest implements telemetry.Tracer: the server span of a request, continuing the
// trace its head carries. It returns nil when the request is not sampled; meshd then
// forwards the request's trace fields as they came and adds none. The span's attributes
// are set once, at End, from the record (one copy into the SDK's span, not one per call).
func (t *Tracer) StartRequest(h telemetry.HeaderGetter, rec *telemetry.Request) telemetry.Span {
	ctx := context.Background()
	var rem remote
	if h != nil {
		rem = extract(h, t.read)
	}
	switch {
	case rem.sc.IsValid():
		ctx = trace.ContextWithRemoteSpanContext(ctx, rem.sc)
		if rem.deferred {
			ctx = context.WithValue(ctx, deferredKey{}, true)
		}
	case rem.hint.IsValid():
		ctx = context.WithValue(ctx, hintKey{}, rem.hint)
	}
	method, _ := methodName(rec.Method)
	ctx, sp := t.tr.Start(ctx, method, trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(rec.Start))
	if !sp.IsRecording() {
		return nil
	}
	s := &span{t: t, ctx: ctx, sp: sp, rec: rec, req: h, method: method, write: t.write | rem.carried}
	if h != nil {
		if ct, _ := h.Get("content-type"); strings.HasPrefix(ct, "application/grpc") {
			s.grpc = true
			if svc, m, ok := grpcNames(urlPath(rec.Path)); ok {
				s.rpcService, s.rpcMethod = strings.Clone(svc), strings.Clone(m)
				s.name = s.rpcService + "/" + s.rpcMethod
			}
		}
	}
	return s
}

// span is a request's server span.
type span struct {
	t      *Tracer
	ctx    context.Context // holds sp: the parent of the attempts' spans
	sp     trace.Span
	rec    *telemetry.Request     // the request's record, until End
	req    telemetry.HeaderGetter // the request head, until End
	method string                 // the span name's method ("HTTP" when unknown)
	grpc   bool
	// rpcService and rpcMethod name a gRPC call ("" when the request is not one).
	rpcService, rpcMethod string
	write                 format // the formats written on the upstream request
	name                  string // the span name, once known ("" until then)
	route                 string // copied from the record once known
	// upstream is the last attempt's endpoint (the record has it only when observers
	// asked for it).
	upstream string
}

// attrPool holds the buffers the attributes of a span are built in at End: the SDK copies
// them into the span, so the buffer is reused rather than allocated per span.
var attrPool = sync.Pool{New: func() any { b := make([]attribute.KeyValue, 0, 32); return &b }}

func getAttrs() *[]attribute.KeyValue { return attrPool.Get().(*[]attribute.KeyValue) }

func putAttrs(b *[]attribute.KeyValue, used []attribute.KeyValue) {
	clear(used) // drop the strings for the GC
	*b = used[:0]
	attrPool.Put(b)
}

// spanName is the span name: "package.Service/Method" for gRPC, else "METHOD route"
// once a route is known, else "METHOD".
func (s *span) spanName() string {
	if s.name != "" {
		return s.name
	}
	if s.rec != nil && s.rec.Route != "" {
		s.route = strings.Clone(s.rec.Route)
		s.name = s.method + " " + s.route
		return s.name
	}
	return s.method
}

// StartAttempt implements telemetry.Span: a client span under the server span, and the
// propagation fields of the upstream request set to it.
func (s *span) StartAttempt(endpoint string, n int, set func(name, value string)) telemetry.AttemptSpan {
	s.upstream = strings.Clone(endpoint)
	a := &attempt{n: n, grpc: s.grpc}
	a.host, a.port = splitHostPort(s.upstream)
	if s.rec != nil && s.rec.Cluster != "" {
		a.cluster = strings.Clone(s.rec.Cluster)
	}
	_, a.sp = s.t.tr.Start(s.ctx, s.spanName(), trace.WithSpanKind(trace.SpanKindClient))
	if set != nil {
		inject(a.sp.SpanContext(), s.sp.SpanContext().SpanID(), s.write, set)
	}
	return a
}

// End implements telemetry.Span: the request, its outcome and meshd's decision.
func (s *span) End(rec *telemetry.Request) {
	s.rec = rec
	name := s.spanName()
	buf := getAttrs()
	attrs := *buf
	if method, known := methodName(rec.Method); known {
		attrs = append(attrs, semconv.HTTPRequestMethodKey.String(method))
	} else {
		attrs = append(attrs, semconv.HTTPRequestMethodKey.String("_OTHER"), semconv.HTTPRequestMethodOriginalKey.String(strings.Clone(rec.Method)))
	}
	if path := urlPath(rec.Path); path != "" {
		attrs = append(attrs, semconv.URLPathKey.String(strings.Clone(path)))
	}
	if host, port := splitHostPort(rec.Authority); host != "" {
		attrs = append(attrs, semconv.ServerAddressKey.String(strings.Clone(host)))
		if port > 0 {
			attrs = append(attrs, semconv.ServerPortKey.Int(port))
		}
	}
	if v := protocolVersion(rec.Protocol); v != "" {
		attrs = append(attrs, semconv.NetworkProtocolNameKey.String("http"), semconv.NetworkProtocolVersionKey.String(v))
	}
	if host, port := splitHostPort(rec.Remote); host != "" {
		attrs = append(attrs, semconv.ClientAddressKey.String(strings.Clone(host)))
		if port > 0 {
			attrs = append(attrs, semconv.ClientPortKey.Int(port))
		}
	}
	req := rec.Req
	if req == nil {
		req = s.req
	}
	if req != nil {
		if ua, ok := req.Get("user-agent"); ok && ua != "" {
			attrs = append(attrs, semconv.UserAgentOriginalKey.String(strings.Clone(ua)))
		}
	}
	if rec.Listener != "" {
		attrs = append(attrs, keyListener.String(strings.Clone(rec.Listener)))
	}
	if rec.Status > 0 {
		attrs = append(attrs, semconv.HTTPResponseStatusCodeKey.Int(rec.Status))
	}
	if s.route != "" {
		attrs = append(attrs, keyRoute.String(s.route))
	}
	if rec.Service != "" {
		attrs = append(attrs, keyService.String(strings.Clone(rec.Service)))
	}
	if rec.Cluster != "" {
		attrs = append(attrs, keyCluster.String(strings.Clone(rec.Cluster)))
	}
	up := s.upstream
	if rec.Upstream != "" && rec.Upstream != up {
		up = strings.Clone(rec.Upstream)
	}
	if up != "" {
		attrs = append(attrs, keyUpstream.String(up))
	}
	attrs = append(attrs, keyAttempts.Int(rec.Attempts))
	if rec.BytesReceived > 0 {
		attrs = append(attrs, semconv.HTTPRequestBodySizeKey.Int64(rec.BytesReceived))
	}
	if rec.Status > 0 {
		attrs = append(attrs, semconv.HTTPResponseBodySizeKey.Int64(rec.BytesSent))
	}
	if rec.Flags != "" && rec.Flags != "-" {
		attrs = append(attrs, keyResponseFlags.String(strings.Clone(rec.Flags)))
	}
	grpcCode := -1
	if s.grpc {
		attrs = append(attrs, semconv.RPCSystemKey.String("grpc"))
		if s.rpcService != "" {
			attrs = append(attrs, semconv.RPCServiceKey.String(s.rpcService), semconv.RPCMethodKey.String(s.rpcMethod))
		}
		grpcCode = grpcStatus(rec.Resp)
		if grpcCode < 0 {
			grpcCode = grpcStatus(rec.Trailers)
		}
		if grpcCode >= 0 {
			attrs = append(attrs, semconv.RPCGRPCStatusCodeKey.Int(grpcCode))
		}
	}
	switch {
	case rec.Code != "":
		code := strings.Clone(rec.Code)
		attrs = append(attrs, keyError.String(code), semconv.ErrorTypeKey.String(code))
		s.sp.SetStatus(codes.Error, code)
	case rec.Status >= 500:
		attrs = append(attrs, semconv.ErrorTypeKey.String(strconv.Itoa(rec.Status)))
		s.sp.SetStatus(codes.Error, "")
	case grpcServerError(grpcCode):
		attrs = append(attrs, semconv.ErrorTypeKey.String(strconv.Itoa(grpcCode)))
		s.sp.SetStatus(codes.Error, "")
	}
	s.sp.SetAttributes(attrs...)
	putAttrs(buf, attrs)
	if name != s.method {
		s.sp.SetName(name)
	}
	if rec.Start.IsZero() || rec.Duration <= 0 {
		s.sp.End()
	} else {
		s.sp.End(trace.WithTimestamp(rec.Start.Add(rec.Duration)))
	}
	s.rec, s.req = nil, nil
}

// attempt is one upstream attempt's client span.
type attempt struct {
	sp      trace.Span
	n       int    // 1 for the first attempt
	host    string // the endpoint's
	port    int
	cluster string
	grpc    bool
}

// End implements telemetry.AttemptSpan: the attempt and its outcome, with meshd's error
// origin when it failed.
func (a *attempt) End(status int, err error, code string) {
	buf := getAttrs()
	attrs := append(*buf, keyAttempt.Int(a.n))
	if a.host != "" {
		attrs = append(attrs, semconv.ServerAddressKey.String(a.host))
		if a.port > 0 {
			attrs = append(attrs, semconv.ServerPortKey.Int(a.port))
		}
	}
	if a.cluster != "" {
		attrs = append(attrs, keyCluster.String(a.cluster))
	}
	if a.grpc {
		attrs = append(attrs, semconv.RPCSystemKey.String("grpc"))
	}
	if status > 0 {
		attrs = append(attrs, semconv.HTTPResponseStatusCodeKey.Int(status))
	}
	switch {
	case err != nil || code != "":
		et := code
		if et == "" {
			et = "_OTHER"
		} else {
			attrs = append(attrs, keyError.String(code))
		}
		attrs = append(attrs, semconv.ErrorTypeKey.String(et))
		msg := code
		if err != nil {
			msg = err.Error()
		}
		a.sp.SetStatus(codes.Error, msg)
	case status >= 500:
		attrs = append(attrs, semconv.ErrorTypeKey.String(strconv.Itoa(status)))
		a.sp.SetStatus(codes.Error, "")
	}
	a.sp.SetAttributes(attrs...)
	putAttrs(buf, attrs)
	a.sp.End()
}

// methodName returns the method for the span name and whether it is a known one
// (semantic conventions: an unknown method is "_OTHER" and names the span "HTTP"). The
// returned string is a constant.
func methodName(m string) (string, bool) {
	for _, k := range [...]string{"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE"} {
		if m == k {
			return k, true
		}
	}
	return "HTTP", false
}

// urlPath is the path of a request target: without its query, and without the scheme
// and authority of an absolute-form target (a request sent to meshd as a proxy).
func urlPath(target string) string {
	if target != "" && target[0] != '/' {
		if i := strings.Index(target, "://"); i >= 0 {
			rest := target[i+3:]
			j := strings.IndexAny(rest, "/?")
			if j < 0 || rest[j] == '?' {
				return "/"
			}
			target = rest[j:]
		}
	}
	if i := strings.IndexByte(target, '?'); i >= 0 {
		target = target[:i]
	}
	return target
}

// splitHostPort splits "host[:port]" (IPv6 in brackets); port is 0 when absent or bad.
func splitHostPort(hp string) (string, int) {
	if hp == "" {
		return "", 0
	}
	host, p, err := net.SplitHostPort(hp)
	if err != nil {
		return strings.TrimSuffix(strings.TrimPrefix(hp, "["), "]"), 0
	}
	port, _ := strconv.Atoi(p)
	return host, port
}

// protocolVersion is network.protocol.version of a record's protocol.
func protocolVersion(p string) string {
	switch p {
	case "HTTP/1.1":
		return "1.1"
	case "HTTP/1.0":
		return "1.0"
	case "HTTP/2":
		return "2"
	}
	return ""
}

// grpcNames splits a gRPC path "/package.Service/Method".
func grpcNames(path string) (service, method string, ok bool) {
	if len(path) < 4 || path[0] != '/' {
		return "", "", false
	}
	service, method, ok = strings.Cut(path[1:], "/")
	if !ok || service == "" || method == "" || strings.IndexByte(method, '/') >= 0 {
		return "", "", false
	}
	return service, method, true
}

// grpcStatus reads grpc-status from a head (-1: absent or not a number).
func grpcStatus(h telemetry.HeaderGetter) int {
	if h == nil {
		return -1
	}
	v, ok := h.Get("grpc-status")
	if !ok {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// grpcServerError reports the gRPC status codes that mark a server span as failed
// (semantic conventions): UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
// UNAVAILABLE, DATA_LOSS.
func grpcServerError(c int) bool {
	switch c {
	case 2, 4, 12, 13, 14, 15:
		return true
	}
	return false
}
