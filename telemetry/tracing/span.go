package tracing

import (
	"context"
	"net"
	"strconv"
	"strings"

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
// forwards the request's trace fields as they came and adds none.
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
	method, known := methodName(rec.Method)
	ctx, sp := t.tr.Start(ctx, method, trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(rec.Start))
	if !sp.IsRecording() {
		return nil
	}
	s := &span{t: t, ctx: ctx, sp: sp, rec: rec, method: method, write: t.write | rem.carried}
	attrs := make([]attribute.KeyValue, 0, 14)
	if known {
		attrs = append(attrs, semconv.HTTPRequestMethodKey.String(method))
	} else {
		attrs = append(attrs, semconv.HTTPRequestMethodKey.String("_OTHER"), semconv.HTTPRequestMethodOriginalKey.String(strings.Clone(rec.Method)))
	}
	path := urlPath(rec.Path)
	if path != "" {
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
	if rec.Listener != "" {
		attrs = append(attrs, keyListener.String(strings.Clone(rec.Listener)))
	}
	if h != nil {
		if ua, ok := h.Get("user-agent"); ok && ua != "" {
			attrs = append(attrs, semconv.UserAgentOriginalKey.String(strings.Clone(ua)))
		}
		if ct, _ := h.Get("content-type"); strings.HasPrefix(ct, "application/grpc") {
			s.grpc = true
			attrs = append(attrs, semconv.RPCSystemKey.String("grpc"))
			if svc, m, ok := grpcNames(path); ok {
				svc, m = strings.Clone(svc), strings.Clone(m)
				attrs = append(attrs, semconv.RPCServiceKey.String(svc), semconv.RPCMethodKey.String(m))
				s.rpcName = svc + "/" + m
			}
		}
	}
	sp.SetAttributes(attrs...)
	return s
}

// span is a request's server span.
type span struct {
	t       *Tracer
	ctx     context.Context // holds sp: the parent of the attempts' spans
	sp      trace.Span
	rec     *telemetry.Request // the request's record, until End
	method  string             // the span name's method ("HTTP" when unknown)
	rpcName string             // "package.Service/Method" for gRPC, else ""
	grpc    bool
	write   format // the formats written on the upstream request
	route   string // copied from the record once known
	// upstream is the last attempt's endpoint (the record has it only when observers
	// asked for it).
	upstream string
}

// name is the span name: "package.Service/Method" for gRPC, else "METHOD route" once a
// route is known, else "METHOD".
func (s *span) name() string {
	if s.rpcName != "" {
		return s.rpcName
	}
	if s.route == "" && s.rec != nil && s.rec.Route != "" {
		s.route = strings.Clone(s.rec.Route)
	}
	if s.route != "" {
		return s.method + " " + s.route
	}
	return s.method
}

// StartAttempt implements telemetry.Span: a client span under the server span, and the
// propagation fields of the upstream request set to it.
func (s *span) StartAttempt(endpoint string, n int, set func(name, value string)) telemetry.AttemptSpan {
	s.upstream = strings.Clone(endpoint)
	attrs := make([]attribute.KeyValue, 0, 5)
	attrs = append(attrs, keyAttempt.Int(n))
	if host, port := splitHostPort(s.upstream); host != "" {
		attrs = append(attrs, semconv.ServerAddressKey.String(host))
		if port > 0 {
			attrs = append(attrs, semconv.ServerPortKey.Int(port))
		}
	}
	if s.rec != nil && s.rec.Cluster != "" {
		attrs = append(attrs, keyCluster.String(strings.Clone(s.rec.Cluster)))
	}
	if s.grpc {
		attrs = append(attrs, semconv.RPCSystemKey.String("grpc"))
	}
	_, cs := s.t.tr.Start(s.ctx, s.name(), trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	if set != nil {
		inject(cs.SpanContext(), s.sp.SpanContext().SpanID(), s.write, set)
	}
	return &attempt{sp: cs}
}

// End implements telemetry.Span: the request's outcome and meshd's decision.
func (s *span) End(rec *telemetry.Request) {
	s.rec = rec
	name := s.name()
	attrs := make([]attribute.KeyValue, 0, 12)
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
	if rec.Upstream != "" {
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
	s.sp.SetName(name)
	end := rec.Start.Add(rec.Duration)
	if rec.Start.IsZero() || rec.Duration <= 0 {
		s.sp.End()
	} else {
		s.sp.End(trace.WithTimestamp(end))
	}
	s.rec = nil
}

// attempt is one upstream attempt's client span.
type attempt struct{ sp trace.Span }

// End implements telemetry.AttemptSpan.
func (a *attempt) End(status int, err error, code string) {
	if status > 0 {
		a.sp.SetAttributes(semconv.HTTPResponseStatusCodeKey.Int(status))
	}
	switch {
	case err != nil || code != "":
		et := code
		if et == "" {
			et = "_OTHER"
		} else {
			a.sp.SetAttributes(keyError.String(code))
		}
		a.sp.SetAttributes(semconv.ErrorTypeKey.String(et))
		msg := code
		if err != nil {
			msg = err.Error()
		}
		a.sp.SetStatus(codes.Error, msg)
	case status >= 500:
		a.sp.SetAttributes(semconv.ErrorTypeKey.String(strconv.Itoa(status)))
		a.sp.SetStatus(codes.Error, "")
	}
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
