package forward

import (
	"errors"
	"strconv"
	"strings"

	"github.com/meshd/meshd/proxy/upstream"
)

// Local error codes meshd puts in the x-meshd-error header, so users can tell meshd's
// answers from their application's. docs/resilience.md lists them.
const (
	CodeNoRoute       = "no_route"
	CodeEgressDenied  = "egress_denied"
	CodeNoEndpoint    = "no_healthy_upstream"
	CodeConnect       = "upstream_connect_failure"
	CodeReset         = "upstream_reset"
	CodeTimeout       = "upstream_timeout"
	CodeProtocol      = "upstream_protocol_error"
	CodeOverflow      = "upstream_overflow"
	CodeBadRequest    = "bad_request"
	CodeLoop          = "loop_detected"
	CodeNoListener    = "no_listener"
	CodeRateLimited   = "rate_limited"
	CodeHeaderTimeout = "request_header_timeout"
	// CodeHealthCheck marks meshd's own answer to a gateway listener's health check.
	CodeHealthCheck = "health_check"
	// CodeAuthzDenied: the ingress listener's authorization policy does not allow the
	// caller (or the caller has no verified identity); 403, gRPC PERMISSION_DENIED.
	CodeAuthzDenied = "authz_denied"
	// CodeOverloaded: meshd is past its overload watermark (heap or connections) and
	// sheds new requests; 503, gRPC UNAVAILABLE.
	CodeOverloaded = "overloaded"
)

// HeaderError names the header on every response meshd generates itself.
const HeaderError = "x-meshd-error"

// HeaderLimit names the connection-pool limit that made meshd answer 503.
const HeaderLimit = "x-meshd-limit"

// Status maps a failed exchange to the status and x-meshd-error code meshd answers
// with, for every protocol front end: the one error mapping of the data plane.
func Status(err error) (status int, code string) {
	if errors.Is(err, upstream.ErrSelfLoop) {
		return 508, CodeLoop
	}
	var ue *upstream.Error
	if errors.As(err, &ue) {
		switch ue.Kind {
		case upstream.Connect:
			return 503, CodeConnect
		case upstream.Overflow:
			return 503, CodeOverflow
		case upstream.Reset:
			return 502, CodeReset
		case upstream.Timeout:
			return 504, CodeTimeout
		case upstream.Protocol:
			return 502, CodeProtocol
		case upstream.NoEndpoint:
			return 503, CodeNoEndpoint
		}
	}
	if upstream.IsTimeout(err) {
		return 504, CodeTimeout
	}
	return 502, CodeReset
}

// ClientError is a failure on the downstream side of an exchange: the client failed to
// deliver the request body (stalled, closed, reset, malformed chunking) or went away.
// It is the client's doing: never held against the endpoint, never retried.
type ClientError struct{ Err error }

func (e *ClientError) Error() string { return "reading the request body: " + e.Err.Error() }
func (e *ClientError) Unwrap() error { return e.Err }

// AsClientError finds a *ClientError in err's chain. Call it only with a non-nil error:
// errors.As's target escapes, so it costs an allocation.
func AsClientError(err error) (*ClientError, bool) {
	var ce *ClientError
	ok := errors.As(err, &ce)
	return ce, ok
}

// ClientStatus is the answer to a request whose body the client failed to deliver:
// 408 when it stalled past the idle timeout, 400 otherwise.
func ClientStatus(e *ClientError) int {
	if upstream.IsTimeout(e.Err) {
		return 408
	}
	return 400
}

// DownstreamError marks a failure writing to the client, which outlier detection and
// the breaker do not hold against the endpoint.
type DownstreamError struct{ Err error }

func (e *DownstreamError) Error() string { return "write to client: " + e.Err.Error() }
func (e *DownstreamError) Unwrap() error { return e.Err }

// gRPC status codes (google.golang.org/grpc/codes), without importing grpc into the
// data plane for a few constants.
const (
	GRPCUnknown          = 2
	GRPCDeadlineExceeded = 4
	GRPCPermissionDenied = 7
	GRPCUnimplemented    = 12
	GRPCInternal         = 13
	GRPCUnavailable      = 14
	GRPCUnauthenticated  = 16
)

// GRPCStatus maps meshd's HTTP status to a gRPC status per gRPC's "HTTP to gRPC status
// code mapping" (doc/http-grpc-status-mapping.md), except that meshd's own timeouts say
// DEADLINE_EXCEEDED, which is what happened.
func GRPCStatus(status int, code string) int {
	if code == CodeTimeout || code == CodeHeaderTimeout {
		return GRPCDeadlineExceeded
	}
	switch status {
	case 400:
		return GRPCInternal
	case 401:
		return GRPCUnauthenticated
	case 403:
		return GRPCPermissionDenied
	case 404:
		return GRPCUnimplemented
	case 429, 502, 503, 504:
		return GRPCUnavailable
	}
	return GRPCUnknown
}

// GRPCStatusString is GRPCStatus as a grpc-status field value.
func GRPCStatusString(status int, code string) string { return strconv.Itoa(GRPCStatus(status, code)) }

// GRPCMessageEncode percent-encodes a grpc-message value (gRPC over HTTP/2 spec: bytes
// outside printable ASCII, and '%', are sent as %XX).
func GRPCMessageEncode(msg string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// ResponseFlags maps meshd's x-meshd-error code to Envoy's %RESPONSE_FLAGS% ("-" when
// meshd did not answer itself), so access-log parsers and dashboards built for Envoy
// keep working.
func ResponseFlags(code string) string {
	switch code {
	case "":
		return "-"
	case CodeNoRoute, CodeEgressDenied, CodeNoListener:
		return "NR"
	case CodeNoEndpoint:
		return "UH"
	case CodeConnect:
		return "UF"
	case CodeReset:
		return "UC"
	case CodeTimeout:
		return "UT"
	case CodeOverflow:
		return "UO"
	case CodeRateLimited:
		return "RL"
	case CodeBadRequest, CodeHeaderTimeout:
		return "DPE"
	case CodeProtocol:
		return "UPE"
	case CodeOverloaded:
		return "OM" // Envoy's overload manager
	}
	return "-"
}
