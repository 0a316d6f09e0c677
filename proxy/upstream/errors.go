package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/meshd/meshd/internal/h2"
)

// Kind classifies a failed upstream exchange by origin (Envoy's Outlier::Result):
// local-origin failures (connect, reset, timeout) versus what the upstream answered.
type Kind uint8

const (
	Connect    Kind = iota + 1 // the TCP connect failed or timed out
	Overflow                   // a connection-pool limit or the breaker refused; nothing was sent
	Reset                      // the connection broke before a full response head
	Timeout                    // the route, listener or per-try timeout expired
	Protocol                   // the upstream sent a malformed response
	NoEndpoint                 // the cluster has no endpoint to pick
)

// Error is a failed exchange with its origin, so the caller can answer with the right
// status and decide whether a retry is safe.
type Error struct {
	Kind Kind
	Err  error
	// Limit is, for Overflow, the connectionPool field (or "circuitBreaker") that tripped.
	Limit string
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// ErrOverflow is wrapped by every Overflow error of a connection-pool limit.
var ErrOverflow = errors.New("upstream connection pool full")

// ErrSelfLoop is the dial error for a passthrough destination that resolved to one of
// meshd's own listeners.
var ErrSelfLoop = errors.New("destination is one of meshd's own listeners")

// LimitCircuitBreaker is the Limit of an Overflow the cluster breaker caused.
const LimitCircuitBreaker = "circuitBreaker"

// BreakerOpen is the error of a request the cluster's circuit breaker refused.
func BreakerOpen(cluster string, err error) error {
	return &Error{Kind: Overflow, Err: fmt.Errorf("cluster %s: %w", cluster, err), Limit: LimitCircuitBreaker}
}

// KindOf is err's origin class, 0 when err is not an *Error. It allocates (errors.As's
// target escapes): call it on failures only.
func KindOf(err error) Kind {
	var ue *Error
	if errors.As(err, &ue) {
		return ue.Kind
	}
	return 0
}

// LimitOf is the Limit of an Overflow err, "" otherwise.
func LimitOf(err error) string {
	var ue *Error
	if errors.As(err, &ue) {
		return ue.Limit
	}
	return ""
}

// Wrap classifies an exchange error that is not an *Error yet: a timeout, a malformed
// response when malformed reports it so, a reset otherwise.
func Wrap(err error, malformed func(error) bool) error {
	var ue *Error
	if errors.As(err, &ue) {
		return err
	}
	if IsTimeout(err) {
		return &Error{Kind: Timeout, Err: err}
	}
	if alert, ok := refusedCertificate(err); ok {
		// TLS 1.3: the server judges the client certificate after the client's handshake
		// is done, so its refusal arrives at the first read. The server read no request:
		// a connect failure, as the same refusal is in TLS 1.2.
		return &Error{Kind: Connect, Err: fmt.Errorf("the server refused meshd's TLS client certificate (alert %q): the client policy's certificate must chain to the server's trust and carry a SAN it allows: %w", alert, err)}
	}
	if malformed != nil && malformed(err) {
		return &Error{Kind: Protocol, Err: err}
	}
	return &Error{Kind: Reset, Err: err}
}

// IsTimeout reports whether err is a deadline: a context's, a connection's or any
// net.Error that says so.
func IsTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// IsUnprocessed reports whether an HTTP/2 upstream did not process the request: it
// refused the stream (RST_STREAM REFUSED_STREAM) or its GOAWAY's last stream id is
// below the stream's (RFC 9113 §8.7). Such a request is safe to send again, even a
// non-idempotent one.
func IsUnprocessed(err error) bool { return errors.Is(err, h2.ErrUnprocessed) }

// certificateAlerts are the texts of the TLS alerts a server sends when it refuses the
// client's certificate (RFC 8446 §6.2; crypto/tls reports a received alert as a
// *net.OpError "remote error" whose error is an unexported type, so its text is what can
// be read).
var certificateAlerts = []string{
	"tls: bad certificate", "tls: unsupported certificate", "tls: revoked certificate",
	"tls: expired certificate", "tls: unknown certificate", "tls: unknown certificate authority",
	"tls: access denied", "tls: certificate required",
}

// refusedCertificate reports whether err is a TLS alert refusing the client's
// certificate, and the alert.
func refusedCertificate(err error) (string, bool) {
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "remote error" || op.Err == nil {
		return "", false
	}
	text := op.Err.Error()
	for _, a := range certificateAlerts {
		if text == a {
			return text, true
		}
	}
	return "", false
}
