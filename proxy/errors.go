package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
)

// errKind classifies a failed upstream exchange by origin (Envoy's Outlier::Result):
// local-origin failures (connect, reset, timeout) versus what the upstream answered.
type errKind uint8

const (
	errConnect      errKind = iota + 1 // the TCP connect failed or timed out
	errOverflowKind                    // a connection-pool limit tripped; nothing was sent
	errReset                           // the connection broke before a full response head
	errTimeout                         // the route or listener timeout expired
	errProtocol                        // the upstream sent a malformed response
	errNoEndpoint                      // the cluster has no endpoint to pick
)

// upstreamError is a failed exchange with its origin, so the caller can answer with
// the right status and decide whether a retry is safe.
type upstreamError struct {
	kind  errKind
	err   error
	limit string // for errOverflowKind: the connectionPool field that tripped
}

func (e *upstreamError) Error() string { return e.err.Error() }
func (e *upstreamError) Unwrap() error { return e.err }

// Local error codes meshd puts in the x-meshd-error header, so users can tell meshd's
// answers from their application's.
const (
	codeNoRoute       = "no_route"
	codeEgressDenied  = "egress_denied"
	codeNoEndpoint    = "no_healthy_upstream"
	codeConnect       = "upstream_connect_failure"
	codeReset         = "upstream_reset"
	codeTimeout       = "upstream_timeout"
	codeProtocol      = "upstream_protocol_error"
	codeOverflow      = "upstream_overflow"
	codeBadRequest    = "bad_request"
	codeLoop          = "loop_detected"
	codeNoListener    = "no_listener"
	codeUnknownStatus = "internal"
)

// HeaderError names the header on every response meshd generates itself.
const HeaderError = "x-meshd-error"

// HeaderLimit names the connection-pool limit that made meshd answer 503.
const HeaderLimit = "x-meshd-limit"

// classify maps an upstream failure to the status and code meshd answers with.
func classify(err error) (status int, code string) {
	var ue *upstreamError
	if errors.As(err, &ue) {
		switch ue.kind {
		case errConnect:
			return 503, codeConnect
		case errOverflowKind:
			return 503, codeOverflow
		case errReset:
			return 502, codeReset
		case errTimeout:
			return 504, codeTimeout
		case errProtocol:
			return 502, codeProtocol
		case errNoEndpoint:
			return 503, codeNoEndpoint
		}
	}
	if isTimeout(err) {
		return 504, codeTimeout
	}
	return 502, codeReset
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func overflowLimit(err error) string {
	var ue *upstreamError
	if errors.As(err, &ue) {
		return ue.limit
	}
	return ""
}

// errorKind is err's origin class, 0 when err is not an upstreamError.
func errorKind(err error) errKind {
	var ue *upstreamError
	if errors.As(err, &ue) {
		return ue.kind
	}
	return 0
}

// isRefusedStream reports whether an HTTP/2 upstream refused the stream (RST_STREAM
// REFUSED_STREAM, RFC 9113 §8.7: the request was not processed). net/http's HTTP/2
// client keeps its stream error type unexported, so the code is matched by name.
func isRefusedStream(err error) bool {
	return err != nil && strings.Contains(err.Error(), "REFUSED_STREAM")
}

// errBreakerOpen answers a request the cluster's circuit breaker refused.
func errBreakerOpen(cluster string, err error) error {
	return &upstreamError{kind: errOverflowKind, err: fmt.Errorf("cluster %s: %w", cluster, err), limit: limitCircuitBreaker}
}
