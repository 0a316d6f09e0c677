package meshtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
	"sync/atomic"
)

// HandshakeResult is the outcome of one TLS handshake, as HandshakeStats counts it.
type HandshakeResult uint8

// Handshake outcomes. The failures follow Envoy's ssl.* counters.
const (
	// HandshakeOK: a full handshake succeeded.
	HandshakeOK HandshakeResult = iota
	// HandshakeResumed: a handshake resumed an earlier session (Envoy's
	// ssl.session_reused).
	HandshakeResumed
	// HandshakeError: the handshake failed for another reason than this side's
	// verification of the peer: the peer refused ours (an alert), no protocol in common,
	// a timeout, a reset (Envoy's ssl.connection_error).
	HandshakeError
	// HandshakeVerifyError: the peer's chain did not verify: another CA, expired or not
	// yet valid, a usage that does not allow the role (Envoy's ssl.fail_verify_error).
	HandshakeVerifyError
	// HandshakeVerifySAN: the peer's chain verified but none of its SANs is in
	// subjectAlternativeNames (Envoy's ssl.fail_verify_san).
	HandshakeVerifySAN
	// HandshakeNoCertificate: the peer sent no certificate where one is required
	// (Envoy's ssl.fail_verify_no_cert).
	HandshakeNoCertificate
	numHandshakeResults
)

// String is the result's label in /stats/prometheus (meshd_tls_handshakes_total's
// result).
func (r HandshakeResult) String() string {
	switch r {
	case HandshakeOK:
		return "ok"
	case HandshakeResumed:
		return "resumed"
	case HandshakeError:
		return "error"
	case HandshakeVerifyError:
		return "verify_error"
	case HandshakeVerifySAN:
		return "verify_san"
	case HandshakeNoCertificate:
		return "no_certificate"
	}
	return "unknown"
}

// EnvoyName is the result's counter in Envoy's ssl.* names (/stats). The successes
// are ssl.handshake (every success, resumed ones included) and ssl.session_reused.
func (r HandshakeResult) EnvoyName() string {
	switch r {
	case HandshakeOK:
		return "handshake"
	case HandshakeResumed:
		return "session_reused"
	case HandshakeError:
		return "connection_error"
	case HandshakeVerifyError:
		return "fail_verify_error"
	case HandshakeVerifySAN:
		return "fail_verify_san"
	case HandshakeNoCertificate:
		return "fail_verify_no_cert"
	}
	return "unknown"
}

// HandshakeResults lists every result, in order.
func HandshakeResults() []HandshakeResult {
	out := make([]HandshakeResult, numHandshakeResults)
	for i := range out {
		out[i] = HandshakeResult(i)
	}
	return out
}

// HandshakeStats count one side's TLS handshakes: a listener's (server side) or a
// cluster's (client side). The zero value is ready; every method is safe for concurrent
// use and allocates nothing. Both the listeners that terminate TLS and the clusters that
// originate it count through this one type, so /stats and /stats/prometheus name their
// outcomes alike.
type HandshakeStats struct {
	n [numHandshakeResults]atomic.Uint64
}

// Handshake counts the outcome of one handshake: err is what the handshake returned
// (tls.Conn.HandshakeContext), resumed its ConnectionState's DidResume when err is nil.
// It returns the result counted.
func (s *HandshakeStats) Handshake(resumed bool, err error) HandshakeResult {
	r := ClassifyHandshake(resumed, err)
	s.n[r].Add(1)
	return r
}

// Count is how many handshakes ended with r.
func (s *HandshakeStats) Count(r HandshakeResult) uint64 {
	if r >= numHandshakeResults {
		return 0
	}
	return s.n[r].Load()
}

// Successes is every successful handshake, resumed ones included (Envoy's
// ssl.handshake).
func (s *HandshakeStats) Successes() uint64 {
	return s.n[HandshakeOK].Load() + s.n[HandshakeResumed].Load()
}

// Failures is every failed handshake.
func (s *HandshakeStats) Failures() uint64 {
	var n uint64
	for r := HandshakeError; r < numHandshakeResults; r++ {
		n += s.n[r].Load()
	}
	return n
}

// verifyError is what meshd's verifier (VerifyConnection) returns: the message says
// what failed and what to fix, the kind says how HandshakeStats counts it.
type verifyError struct {
	kind HandshakeResult
	err  error
}

func (e *verifyError) Error() string { return e.err.Error() }
func (e *verifyError) Unwrap() error { return e.err }

// ClassifyHandshake is the result a handshake's outcome counts as (see HandshakeStats).
func ClassifyHandshake(resumed bool, err error) HandshakeResult {
	if err == nil {
		if resumed {
			return HandshakeResumed
		}
		return HandshakeOK
	}
	var ve *verifyError
	if errors.As(err, &ve) {
		return ve.kind
	}
	// Verification by crypto/tls itself (a configuration not built here).
	var (
		unk x509.UnknownAuthorityError
		inv x509.CertificateInvalidError
		hn  x509.HostnameError
		cve *tls.CertificateVerificationError
	)
	switch {
	case errors.As(err, &hn):
		return HandshakeVerifySAN
	case errors.As(err, &unk), errors.As(err, &inv), errors.As(err, &cve):
		return HandshakeVerifyError
	}
	// crypto/tls's server refusing a client without a certificate says so in words only.
	if strings.Contains(err.Error(), "client didn't provide a certificate") {
		return HandshakeNoCertificate
	}
	return HandshakeError
}
