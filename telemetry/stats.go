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
	class := 0
	if status >= 100 && status < 600 {
		class = status / 100
	}
	s.Classes[class].Add(1)
	for i, c := range StatusCodes {
		if c == status {
			s.Codes[i].Add(1)
			break
		}
	}
	i := 0
	for i < len(latencyBounds) && d > latencyBounds[i] {
		i++
	}
	s.Buckets[i].Add(1)
	s.SumMicros.Add(uint64(d.Microseconds()))
	if retries > 0 {
		s.Retries.Add(uint64(retries))
	}
	switch code {
	case "":
	case "upstream_timeout":
		s.Timeouts.Add(1)
	case "rate_limited":
		s.RateLimited.Add(1)
	case "upstream_overflow":
		s.Overflow.Add(1)
	case "no_route", "egress_denied", "no_listener":
		s.NoRoute.Add(1)
	case "no_healthy_upstream":
		s.NoHealthy.Add(1)
	case "upstream_protocol_error":
		s.ProtocolErrors.Add(1)
	}
}
