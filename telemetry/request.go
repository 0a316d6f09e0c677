package telemetry

import (
	"crypto/tls"
	"time"
)

// HeaderGetter reads one field of a request or response head (name in lower case).
type HeaderGetter interface {
	Get(name string) (string, bool)
}

// Request is the record of one proxied L7 request, filled once per request by the
// protocol front end (proxy/http1, proxy/http2) from the one pipeline's outcome and
// handed to the observers (access log, metrics). Front ends reuse one Request per
// connection where they can, so recording allocates nothing; an observer must not keep
// the pointer, the header getters or the strings past Observe.
type Request struct {
	Start    time.Time     // when the request head was read
	Duration time.Duration // to the last byte of the response (or the failure)
	// UpstreamTime is from the final attempt's start to its response head (0: none).
	UpstreamTime time.Duration

	Listener  string // "ingress" | "egress"
	Protocol  string // "HTTP/1.1", "HTTP/1.0", "HTTP/2"
	Method    string
	Authority string
	Path      string // the request target as received (path and query)
	Remote    string // the downstream peer, ip:port
	// TLS is the state of the downstream connection's TLS when meshd terminated it
	// (nil: plaintext); shared by the connection's requests: read only.
	TLS *tls.ConnectionState
	// Peer is the client's verified SPIFFE ID when the listener validated client
	// certificates (mTLS) and the certificate carries one; "" otherwise.
	Peer string

	// GRPC is set for a gRPC call (content-type application/grpc): its grpc-status is
	// then read from Trailers, or from Resp for a trailers-only answer.
	GRPC bool

	Status int    // the response status sent (0: none was sent)
	Code   string // meshd's x-meshd-error code when meshd answered itself, else ""
	// Flags are Envoy's response flags (%RESPONSE_FLAGS%), e.g. "UF", "UO", "NR", "-".
	Flags string

	Service  string // virtual service (or "ingress:<port>") the request was routed in
	Route    string // route name
	Cluster  string // cluster name
	Upstream string // the final attempt's endpoint address, "" when none
	Attempts int    // attempts made (1 + retries)

	BytesReceived int64 // request body bytes read from the client
	BytesSent     int64 // response body bytes written to the client

	Req  HeaderGetter // the request head (nil: none)
	Resp HeaderGetter // the response head as sent (nil: none)
	// Trailers are the upstream response's trailers when it had some (HTTP/2 and gRPC;
	// nil: none), e.g. for a tracer's grpc-status.
	Trailers HeaderGetter
}

// Observer receives each finished request, on the request's goroutine. Observe must be
// quick and must not block: anything slow (writing a file) goes through a bounded queue
// of its own. It must not keep r (or what r's fields point to) after it returns: the
// front ends reuse a finished request's record for the next one.
type Observer interface {
	Observe(r *Request)
}
