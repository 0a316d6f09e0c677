package telemetry

import (
	"math"
	"sync/atomic"
	"time"
)

// LatencyBuckets are the upper bounds of the request latency histograms, for a sidecar:
// 100 µs to 10 s (Prometheus "le" values, in seconds).
var LatencyBuckets = [...]float64{
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
}

// latencyBounds are LatencyBuckets as durations: Record compares integers, where the
// conversion of every duration to float seconds cost more than the search (issue 17).
var latencyBounds = func() (b [len(LatencyBuckets)]time.Duration) {
	for i, s := range LatencyBuckets {
		b[i] = time.Duration(math.Round(s * float64(time.Second)))
	}
	return b
}()

// HTTPStats counts the requests of one route, cluster or listener: by status class and
// by the common codes, their latency, and those in flight. Recording is a few atomic adds
// on fields bound at compile time (no label lookup, no allocation); a Prometheus
// collector reads them at scrape time. The zero value is ready. Carried across reloads
// with the route or cluster it belongs to.
type HTTPStats struct {
	InFlight atomic.Int64
	// Classes counts responses by status class: [1] 1xx ... [5] 5xx; [0] requests that
	// got no response (the connection failed first).
	Classes [6]atomic.Uint64
	// Codes counts the status codes meshd and upstreams answer most (StatusCodes order).
	Codes [len(StatusCodes)]atomic.Uint64
	// Latency is the histogram of request durations: Buckets[i] counts those ≤
	// LatencyBuckets[i] (not cumulative), Buckets[len] the rest; SumMicros their total.
	Buckets   [len(LatencyBuckets) + 1]atomic.Uint64
	SumMicros atomic.Uint64
	// Local counts answers meshd gave itself (x-meshd-error), by kind.
	Timeouts, RateLimited, Overflow, NoRoute, NoHealthy, Retries atomic.Uint64
	// ProtocolErrors counts answers meshd gave for an upstream response it refused as
	// malformed or out of bounds (x-meshd-error upstream_protocol_error: an oversized
	// head, a 1xx flood, ambiguous framing, a bad chunk).
	ProtocolErrors atomic.Uint64
	// GRPC counts gRPC calls by their grpc-status: [0] OK, [1] any other (a canary's error
	// rate: a failed call is mostly an HTTP 200).
	GRPC [2]atomic.Uint64
}

// RecordGRPC adds one finished gRPC call, ok when its grpc-status was 0.
func (s *HTTPStats) RecordGRPC(ok bool) {
	if s == nil {
		return
	}
	if ok {
		s.GRPC[0].Add(1)
	} else {
		s.GRPC[1].Add(1)
	}
}

// StatusCodes are the codes HTTPStats counts one by one; others count in their class.
var StatusCodes = [...]int{200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 408, 409, 429, 500, 502, 503, 504}

// Record adds one finished request: its status (0: none sent), its duration, how many
// retries it made and meshd's own code (x-meshd-error, "" for the upstream's answer).
func (s *HTTPStats) Record(status int, d time.Duration, retries int, code string) {
	if s == nil {
		return
	}
	x := NewSample(status, d, retries, code)
	s.Add(&x)
}

// Sample is one finished request as HTTPStats counts it: where it goes in each array,
// worked out once for the listener's, the route's and the cluster's statistics (each
// Record worked it out again: issue 17).
type Sample struct {
	class, code, bucket int // code: index in StatusCodes + 1, 0 for none
	micros, retries     uint64
	local               localKind
}

type localKind uint8

const (
	localNone localKind = iota
	localTimeout
	localRateLimited
	localOverflow
	localNoRoute
	localNoHealthy
	localProtocol
)

// codeIndex maps a status in 100-599 to its index in StatusCodes + 1 (0: not counted
// one by one).
var codeIndex = func() (t [600]uint8) {
	for i, c := range StatusCodes {
		t[c] = uint8(i + 1)
	}
	return t
}()

// NewSample works out where a finished request goes: its status (0: none sent), its
// duration, its retries and meshd's own code (x-meshd-error, "" for the upstream's
// answer).
func NewSample(status int, d time.Duration, retries int, code string) Sample {
	x := Sample{micros: uint64(d.Microseconds())}
	if status >= 100 && status < 600 {
		x.class = status / 100
		x.code = int(codeIndex[status])
	}
	for x.bucket < len(latencyBounds) && d > latencyBounds[x.bucket] {
		x.bucket++
	}
	if retries > 0 {
		x.retries = uint64(retries)
	}
	switch code {
	case "":
	case "upstream_timeout":
		x.local = localTimeout
	case "rate_limited":
		x.local = localRateLimited
	case "upstream_overflow":
		x.local = localOverflow
	case "no_route", "egress_denied", "no_listener":
		x.local = localNoRoute
	case "no_healthy_upstream":
		x.local = localNoHealthy
	case "upstream_protocol_error":
		x.local = localProtocol
	}
	return x
}

// WithoutRetries is x with no retries: a listener's statistics do not count them.
func (x Sample) WithoutRetries() Sample {
	x.retries = 0
	return x
}

// Add counts the finished request x.
func (s *HTTPStats) Add(x *Sample) {
	if s == nil {
		return
	}
	s.Classes[x.class].Add(1)
	if x.code > 0 {
		s.Codes[x.code-1].Add(1)
	}
	s.Buckets[x.bucket].Add(1)
	s.SumMicros.Add(x.micros)
	if x.retries > 0 {
		s.Retries.Add(x.retries)
	}
	switch x.local {
	case localNone:
	case localTimeout:
		s.Timeouts.Add(1)
	case localRateLimited:
		s.RateLimited.Add(1)
	case localOverflow:
		s.Overflow.Add(1)
	case localNoRoute:
		s.NoRoute.Add(1)
	case localNoHealthy:
		s.NoHealthy.Add(1)
	case localProtocol:
		s.ProtocolErrors.Add(1)
	}
}
