package resilience

import (
	"errors"
	"fmt"
	"time"
)

// gRPC status codes that App Mesh's grpcRetryEvents name (google.golang.org/grpc/codes
// values; the numbers are fixed by the gRPC spec, so they are not imported).
const (
	GRPCCancelled         = 1
	GRPCDeadlineExceeded  = 4
	GRPCResourceExhausted = 8
	GRPCInternal          = 13
	GRPCUnavailable       = 14
)

// ErrUnknownRetryEvent is wrapped by CompileRetryPolicy when an event name is not one
// App Mesh defines.
var ErrUnknownRetryEvent = errors.New("unknown retry event")

// ErrInvalidRetryPolicy is wrapped by CompileRetryPolicy for out-of-range numbers.
var ErrInvalidRetryPolicy = errors.New("invalid retry policy")

// RetryInput is a retryPolicy as the config gives it (httpRoute, http2Route and grpcRoute
// share it; HTTP routes leave GRPCEvents empty). The proxy converts config durations with
// config.Duration.D before calling CompileRetryPolicy, so this package needs no config
// import.
type RetryInput struct {
	// MaxRetries is the number of retries after the first attempt; ≥ 0.
	MaxRetries int64
	// PerRetryTimeout bounds each attempt, the first included (Envoy's per_try_timeout);
	// 0 means each attempt is bounded only by the request's own deadline.
	PerRetryTimeout time.Duration
	// HTTPEvents: server-error, gateway-error, client-error, stream-error.
	HTTPEvents []string
	// GRPCEvents: cancelled, deadline-exceeded, internal, resource-exhausted, unavailable.
	GRPCEvents []string
	// TCPEvents: connection-error.
	TCPEvents []string
}

// RetryPolicy is a compiled retryPolicy: which outcomes of an attempt may be retried and
// how often. It is immutable after compilation, so one value is shared by every request
// on the route from any goroutine. Its methods allocate nothing.
type RetryPolicy struct {
	maxRetries      int
	perRetryTimeout time.Duration
	// status has bit (code-100) set for each retriable HTTP status in 100..599.
	status         [8]uint64
	grpc           uint32 // bit code for each retriable gRPC status 0..16
	connectFailure bool
	reset          bool
	refusedStream  bool
}

// DefaultMaxRetries is App Mesh's hidden default: 2 retries.
const DefaultMaxRetries = 2

// maxRetriesCap bounds MaxRetries: beyond it retries only multiply an outage, and the
// budget would refuse them anyway. It keeps the int conversion safe on every platform.
const maxRetriesCap = 1 << 20

// DefaultRetryPolicy is the policy meshd applies to HTTP, HTTP/2 and gRPC routes that set
// no retryPolicy. It is the one App Mesh applies without showing it (its Envoy defaults
// page): 2 retries on HTTP 503, gRPC UNAVAILABLE, connect failure, refused stream and
// reset, with no per-retry timeout of its own.
func DefaultRetryPolicy() *RetryPolicy {
	p := &RetryPolicy{
		maxRetries:     DefaultMaxRetries,
		connectFailure: true,
		reset:          true,
		refusedStream:  true,
	}
	p.setStatus(503)
	p.grpc |= 1 << GRPCUnavailable
	return p
}

// NoRetryPolicy is a policy that never retries, for a route that sets
// maxRetries: 0 or for callers that want retries off.
func NoRetryPolicy() *RetryPolicy { return &RetryPolicy{} }

// CompileRetryPolicy validates in and compiles it. Errors wrap ErrUnknownRetryEvent or
// ErrInvalidRetryPolicy and name the field (relative to the retryPolicy object) and value,
// e.g. `httpRetryEvents[1] "teapot": ...`; the caller prefixes the path of the policy.
// Duplicated events are accepted (they mean the same thing twice).
func CompileRetryPolicy(in RetryInput) (*RetryPolicy, error) {
	if in.MaxRetries < 0 || in.MaxRetries > maxRetriesCap {
		return nil, fmt.Errorf("maxRetries %d: want 0..%d: %w", in.MaxRetries, maxRetriesCap, ErrInvalidRetryPolicy)
	}
	if in.PerRetryTimeout < 0 {
		return nil, fmt.Errorf("perRetryTimeout %v: want ≥ 0: %w", in.PerRetryTimeout, ErrInvalidRetryPolicy)
	}
	p := &RetryPolicy{maxRetries: int(in.MaxRetries), perRetryTimeout: in.PerRetryTimeout}
	for i, ev := range in.HTTPEvents {
		switch ev {
		case "server-error":
			// App Mesh: "Both server-error and gateway-error include the Envoy reset policy."
			for c := 500; c <= 511; c++ {
				if c != 509 {
					p.setStatus(c)
				}
			}
			p.reset = true
		case "gateway-error":
			p.setStatus(502)
			p.setStatus(503)
			p.setStatus(504)
			p.reset = true
		case "client-error":
			p.setStatus(409)
		case "stream-error":
			p.refusedStream = true
		default:
			return nil, fmt.Errorf("httpRetryEvents[%d] %q: want server-error, gateway-error, client-error or stream-error: %w", i, ev, ErrUnknownRetryEvent)
		}
	}
	for i, ev := range in.GRPCEvents {
		code, ok := grpcEventCode(ev)
		if !ok {
			return nil, fmt.Errorf("grpcRetryEvents[%d] %q: want cancelled, deadline-exceeded, internal, resource-exhausted or unavailable: %w", i, ev, ErrUnknownRetryEvent)
		}
		p.grpc |= 1 << code
	}
	for i, ev := range in.TCPEvents {
		if ev != "connection-error" {
			return nil, fmt.Errorf("tcpRetryEvents[%d] %q: want connection-error: %w", i, ev, ErrUnknownRetryEvent)
		}
		// App Mesh: the event "occurs before any processing of a request has started",
		// which is Envoy's connect-failure and nothing later.
		p.connectFailure = true
	}
	return p, nil
}

func grpcEventCode(ev string) (int, bool) {
	switch ev {
	case "cancelled":
		return GRPCCancelled, true
	case "deadline-exceeded":
		return GRPCDeadlineExceeded, true
	case "internal":
		return GRPCInternal, true
	case "resource-exhausted":
		return GRPCResourceExhausted, true
	case "unavailable":
		return GRPCUnavailable, true
	}
	return 0, false
}

var grpcCodeNames = [...]string{
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
	"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
	"UNAUTHENTICATED",
}

func (p *RetryPolicy) setStatus(code int) {
	i := code - 100
	p.status[i>>6] |= 1 << (i & 63)
}

// MaxRetries is how many retries may follow the first attempt.
func (p *RetryPolicy) MaxRetries() int { return p.maxRetries }

// PerRetryTimeout bounds each attempt; 0 means only the request deadline applies.
func (p *RetryPolicy) PerRetryTimeout() time.Duration { return p.perRetryTimeout }

// RetryOnStatus reports whether an HTTP response with this status may be retried.
// Statuses outside 100..599 never are.
func (p *RetryPolicy) RetryOnStatus(status int) bool {
	i := uint(status - 100)
	if i >= 500 {
		return false
	}
	return p.status[i>>6]&(1<<(i&63)) != 0
}

// RetryOnGRPC reports whether a gRPC response with this grpc-status code may be retried.
func (p *RetryPolicy) RetryOnGRPC(code int) bool {
	if uint(code) >= 32 {
		return false
	}
	return p.grpc&(1<<uint(code)) != 0
}

// RetryOnConnectFailure reports whether a failed connect (nothing reached the upstream)
// may be retried.
func (p *RetryPolicy) RetryOnConnectFailure() bool { return p.connectFailure }

// RetryOnReset reports whether an attempt whose upstream connection or stream was reset,
// or which timed out, before response headers arrived may be retried (Envoy's reset).
func (p *RetryPolicy) RetryOnReset() bool { return p.reset }

// RetryOnRefusedStream reports whether an HTTP/2 stream refused by the upstream
// (RST_STREAM REFUSED_STREAM, RFC 9113 §8.7: not processed) may be retried.
func (p *RetryPolicy) RetryOnRefusedStream() bool { return p.refusedStream }

// RetryView is a RetryPolicy spelled out for the admin /config page, so the effective
// policy (including the hidden default) is visible. It is built off the request path.
type RetryView struct {
	MaxRetries      int      `json:"maxRetries"`
	PerRetryTimeout string   `json:"perRetryTimeout,omitempty"`
	HTTPStatuses    []int    `json:"retryOnHttpStatuses,omitempty"`
	GRPCCodes       []string `json:"retryOnGrpcCodes,omitempty"`
	ConnectFailure  bool     `json:"retryOnConnectFailure"`
	Reset           bool     `json:"retryOnReset"`
	RefusedStream   bool     `json:"retryOnRefusedStream"`
}

// View spells the policy out; see RetryView.
func (p *RetryPolicy) View() RetryView {
	v := RetryView{
		MaxRetries:     p.maxRetries,
		ConnectFailure: p.connectFailure,
		Reset:          p.reset,
		RefusedStream:  p.refusedStream,
	}
	if p.perRetryTimeout > 0 {
		v.PerRetryTimeout = p.perRetryTimeout.String()
	}
	for c := 100; c <= 599; c++ {
		if p.RetryOnStatus(c) {
			v.HTTPStatuses = append(v.HTTPStatuses, c)
		}
	}
	for c, name := range grpcCodeNames {
		if p.RetryOnGRPC(c) {
			v.GRPCCodes = append(v.GRPCCodes, name)
		}
	}
	return v
}

// MayRetry reports whether retry number attempt (1 for the first retry) is within
// MaxRetries. The caller still needs a retriable outcome and RetryBudget.TryAcquireRetry.
func (p *RetryPolicy) MayRetry(attempt int) bool { return attempt >= 1 && attempt <= p.maxRetries }
