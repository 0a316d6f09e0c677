package telemetry

// Tracer starts the spans of proxied requests. The forward pipeline and the protocol
// front ends call it when one is configured (nil: tracing off, nothing on the request
// path). Implementations: telemetry/tracing (OpenTelemetry).
type Tracer interface {
	// StartRequest begins the server span of a request, continuing the trace its head
	// carries (W3C traceparent, B3, X-Amzn-Trace-Id). It returns nil when the request is
	// not sampled.
	StartRequest(req HeaderGetter, rec *Request) Span
}

// Span is a request's server span.
type Span interface {
	// StartAttempt begins the client span of upstream attempt n (1 is the first) to
	// endpoint, and sets the propagation headers the upstream request must carry through
	// set (called before the attempt's request is written).
	StartAttempt(endpoint string, n int, set func(name, value string)) AttemptSpan
	// End ends the server span with the request's outcome.
	End(rec *Request)
}

// AttemptSpan is one upstream attempt's client span.
type AttemptSpan interface {
	// End ends it: the response status (0: none) and the failure (nil: none), with
	// meshd's error origin (x-meshd-error code) when it failed.
	End(status int, err error, code string)
}
