package forward

import (
	"context"
	"errors"
	"time"

	"github.com/meshd/meshd/balancer"
	"github.com/meshd/meshd/internal/h1"
	"github.com/meshd/meshd/proxy/upstream"
	"github.com/meshd/meshd/resilience"
	"github.com/meshd/meshd/telemetry"
)

// DefaultMaxReplayBody is the default bound on the request body kept so a retry can send
// it again, for every protocol: a larger body is retried only when none of it was sent.
const DefaultMaxReplayBody = 64 << 10

// MaxDrainBody bounds a retriable response body that is read and dropped so its
// connection can be reused; a larger one closes the connection instead.
const MaxDrainBody = 64 << 10

// retryAfterNoDeadline bounds how long a Retry-After is waited for when the request has
// no deadline: a longer wait would hold the client for a time it did not choose, so the
// response (with its Retry-After) goes back to it instead.
const retryAfterNoDeadline = time.Second

// Exchanger is a protocol front end's side of one request: the pipeline decides where
// and whether to send it, the exchanger knows how. Implementations: the HTTP/1.1 fast
// path (proxy/http1), and RoundTrip over a cluster's http.RoundTripper for HTTP/2
// upstreams and HTTP/2 clients (proxy/http2, also used by proxy/http1 when the upstream
// speaks HTTP/2). All methods
// run on the request's goroutine.
type Exchanger interface {
	// Exchange sends the request to the endpoint res picked and reads the response
	// head. deadline bounds this attempt (zero: none). A failure of the client (its
	// body, or it went away) must be a *ClientError; anything else is the upstream's and
	// is classified by the pipeline (upstream.Wrap) unless it is an *upstream.Error.
	Exchange(res balancer.Result, deadline time.Time) (status int, err error)
	// Replayable reports whether the request can be sent again now: it has no body,
	// its body was kept whole (within the replay bound), or none of it was sent.
	Replayable() bool
	// Header returns a field (name in lower case) of the response head Exchange just read.
	Header(name string) (string, bool)
	// Discard disposes of the response head Exchange read, which is about to be retried.
	Discard()
	// Wait waits d before the next attempt. It returns false early when the client went
	// away (the request is then abandoned).
	Wait(d time.Duration) bool
	// SetHeader sets a field of the upstream request for the coming attempts (trace
	// propagation: each attempt's span sets its own); called before Exchange.
	SetHeader(name, value string)
}

// Call is one request through the pipeline. It lives on the front end's stack.
type Call struct {
	// Ctx is the client's context for the net/http paths, nil for the HTTP/1.1 fast path.
	// It bounds a wait for a connection-pool slot.
	Ctx context.Context
	// Decision is held by value: a pointer would make the caller's Decision escape
	// to the heap through the pipeline's interface calls.
	Decision Decision
	// Deadline is the request's deadline (route or listener perRequest, lowered by a
	// gRPC client's grpc-timeout); zero: none.
	Deadline time.Time
	// NoRetry makes a single attempt (protocol upgrades).
	NoRetry bool
	// Hash is the request's key for a hash policy (RING_HASH, MAGLEV) when Hashed
	// (Affinity.Apply); retries keep it, avoiding the endpoint that failed.
	Hash   uint64
	Hashed bool
	// Attempts is set by Do: how many attempts were made (1 + retries), for the record.
	Attempts int
	// Span is the request's server span when it is traced (nil: not traced); each
	// attempt gets a client span under it.
	Span telemetry.Span
	// Start, when set, is the first attempt's start: a clock reading the front end took
	// as the request began, a few microseconds earlier, which saves reading the clock
	// again (issue 17). Only for a request with nothing slow between that reading and
	// Do (no request body read from the client meanwhile); Do drops it when it waited
	// for a connection-pool slot. Zero: the attempt reads it.
	Start time.Time
}

// Flight is the final attempt of a call that got a response head. The front end relays
// the response and then calls End exactly once.
type Flight struct {
	Res     balancer.Result
	Status  int
	Start   time.Time // when the final attempt started (latency is measured from it)
	cluster *upstream.Cluster
	slot    bool // holds a connectionPool slot or stream
}

// End reports the final attempt's end (balancer counts, outlier detection; blame false
// when the client caused the failure) and frees the connection-pool slot.
func (f *Flight) End(info balancer.DoneInfo, blame bool) {
	f.cluster.AttemptEnd(f.Res, info, blame)
	if f.slot {
		f.slot = false
		releaseSlot(f.cluster)
	}
}

// Do runs a resolved request through the pipeline: the cluster's connection-pool
// limit (HTTP/1.1 connections or HTTP/2 streams), its circuit breaker, and the retry
// loop (the route's policy, the cluster's retry budget, backoff or Retry-After,
// per-try timeout, another endpoint each time). It returns the final attempt, whose
// response head the exchanger holds, or the error to answer with (Status maps it).
//
// The breaker judges the final response head: a 5xx or an upstream failure counts
// against it; refusals by limits, and failures of the client, do not. It allocates
// nothing unless the cluster has a breaker (one closure) or a retry sleeps (a timer).
func Do(c *Call, x Exchanger) (Flight, error) {
	cl := c.Decision.Cluster
	waited, err := acquireSlot(cl, c.Ctx)
	if err != nil {
		return Flight{}, err
	}
	if waited {
		// The front end's reading predates the wait: the first attempt's per-try
		// timeout and latency count from when it starts, so it reads the clock.
		c.Start = time.Time{}
	}
	br := cl.Breaker()
	var f Flight
	if br == nil {
		f, err = attempts(c, x)
	} else {
		berr := br.Do(func() resilience.Outcome {
			f, err = attempts(c, x)
			return outcome(f.Status, err)
		})
		if berr != nil {
			err = upstream.BreakerOpen(cl.Name(), berr)
		}
	}
	if err != nil {
		releaseSlot(cl)
		return Flight{}, err
	}
	f.cluster, f.slot = cl, true
	return f, nil
}

// outcome is what the breaker counts for a call's result.
func outcome(status int, err error) resilience.Outcome {
	if err != nil {
		if _, client := AsClientError(err); client {
			return resilience.Ignored
		}
		if k := upstream.KindOf(err); k == upstream.Overflow || k == upstream.NoEndpoint {
			return resilience.Ignored
		}
		return resilience.Failure
	}
	if status >= 500 {
		return resilience.Failure
	}
	return resilience.Success
}

// acquireSlot takes a connectionPool slot (a stream for HTTP/2 clusters); waited
// reports that it had to wait for one.
func acquireSlot(cl *upstream.Cluster, ctx context.Context) (waited bool, err error) {
	if cl.HTTP2() {
		return false, cl.AcquireStream()
	}
	if ctx == nil {
		ctx = context.Background()
	}
	return cl.AcquireSlot(ctx)
}

func releaseSlot(cl *upstream.Cluster) {
	if cl.HTTP2() {
		cl.ReleaseStream()
	} else {
		cl.ReleaseSlot()
	}
}

// attempts is the retry loop. A retry is decided on a retriable outcome: the policy's
// maxRetries, then the wait (backoff, or the response's Retry-After) must end before
// the request's deadline, then the cluster's retry budget must admit it. The budget slot
// is taken after the wait and held only while the retry's attempt runs (until its
// response head or failure), so requests waiting out a backoff do not use up the budget
// of those that are trying. A retriable response is kept until the retry is sure, so a
// retry the budget refuses still relays the upstream's own answer.
func attempts(c *Call, x Exchanger) (Flight, error) {
	d := &c.Decision
	cl := d.Cluster
	var policy *resilience.RetryPolicy
	var route *resilience.Counters
	if d.Policy != nil && !c.NoRetry && d.Policy.Retry().MaxRetries() > 0 {
		policy, route = d.Policy.Retry(), d.Policy.Counters()
	}
	var (
		avoid   *balancer.Endpoint
		retries int
		held    bool // a budget slot is held for the current attempt
		backoff resilience.Backoff
	)
	release := func() {
		if held {
			cl.Budget().ReleaseRetry()
			held = false
		}
	}
	for {
		res, err := cl.PickFor(balancer.PickInfo{Avoid: avoid, Hash: c.Hash, Hashed: c.Hashed})
		if err != nil {
			release()
			return Flight{}, err
		}
		start := c.Start
		if start.IsZero() {
			start = time.Now()
		}
		c.Start = time.Time{} // a retry reads the clock
		hard, perTry := c.Deadline, false
		if policy != nil {
			if pt := policy.PerRetryTimeout(); pt > 0 {
				if t := start.Add(pt); hard.IsZero() || t.Before(hard) {
					hard, perTry = t, true
				}
			}
		}
		c.Attempts++
		var span telemetry.AttemptSpan
		if c.Span != nil {
			span = c.Span.StartAttempt(res.Endpoint.Address, c.Attempts, x.SetHeader)
		}
		status, err := x.Exchange(res, hard)
		if span != nil {
			endAttemptSpan(span, status, err)
		}
		release()
		if err != nil {
			latency := time.Since(start)
			if _, client := AsClientError(err); client {
				cl.AttemptEnd(res, balancer.DoneInfo{Latency: latency}, false)
				return Flight{}, err
			}
			err = upstream.Wrap(err, isMalformed)
			cl.AttemptEnd(res, balancer.DoneInfo{Err: err, Latency: latency}, true)
			perTryExpired := perTry && upstream.KindOf(err) == upstream.Timeout && (c.Deadline.IsZero() || time.Now().Before(c.Deadline))
			if policy == nil || !policy.MayRetry(retries+1) || !retriableErr(policy, err, x.Replayable(), perTryExpired) {
				return Flight{}, err
			}
			if upstream.IsUnprocessed(err) {
				// The upstream never processed it (REFUSED_STREAM, above its GOAWAY): the
				// retry adds no load, so it neither waits out a backoff nor needs the
				// retry budget, which a burst of streams crossing a GOAWAY would exhaust.
				cl.Budget().CountRetry(route)
				retries++
				avoid = res.Endpoint
				continue
			}
			wait, ok := plan(&backoff, retries, -1, c.Deadline)
			if !ok || !x.Wait(wait) || !cl.Budget().TryAcquireRetryFor(cl.Balancer().InFlight(), route) {
				return Flight{}, err
			}
			retries++
			held = true
			avoid = res.Endpoint
			continue
		}
		if policy == nil || !policy.MayRetry(retries+1) || !retriableHead(policy, status, x) || !x.Replayable() {
			// The attempt's latency is the front end's to measure, at the response's
			// end: a clock reading here would go unused (issue 17).
			return Flight{Res: res, Status: status, Start: start}, nil
		}
		latency := time.Since(start) // before a wait for the retry, which it must not count
		ra := time.Duration(-1)
		if status == 429 || status == 503 {
			if v, ok := x.Header("retry-after"); ok {
				if d, ok := resilience.ParseRetryAfter(v, time.Now()); ok {
					ra = d
				}
			}
		}
		wait, ok := plan(&backoff, retries, ra, c.Deadline)
		if !ok || !x.Wait(wait) || !cl.Budget().TryAcquireRetryFor(cl.Balancer().InFlight(), route) {
			// Relay this response: no time to wait for a retry, or no budget for one.
			return Flight{Res: res, Status: status, Start: start}, nil
		}
		x.Discard()
		cl.AttemptEnd(res, balancer.DoneInfo{Status: status, Latency: latency}, true)
		retries++
		held = true
		avoid = res.Endpoint
	}
}

// retriableHead reports whether a response head may be retried under p: its HTTP
// status, or for gRPC a grpc-status in the head (a trailers-only response, how servers
// answer calls they reject at once). A grpc-status that arrives in trailers, after the
// body started to flow to the client, cannot be retried.
func retriableHead(p *resilience.RetryPolicy, status int, x Exchanger) bool {
	if p.RetryOnStatus(status) {
		return true
	}
	if v, ok := x.Header("grpc-status"); ok {
		if code, ok := atoiStatus(v); ok {
			return p.RetryOnGRPC(code)
		}
	}
	return false
}

func atoiStatus(s string) (int, bool) {
	if s == "" || len(s) > 3 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}

// plan computes the wait before retry number retries+1: the backoff, or ra when the
// response asked for it (ra ≥ 0). ok is false when the wait would pass the deadline
// (zero: none) or, without one, a Retry-After is longer than retryAfterNoDeadline.
func plan(b *resilience.Backoff, retries int, ra time.Duration, deadline time.Time) (wait time.Duration, ok bool) {
	wait = b.Delay(retries + 1)
	if ra >= 0 {
		if deadline.IsZero() && ra > retryAfterNoDeadline {
			return 0, false
		}
		wait = ra
	}
	if !deadline.IsZero() && !time.Now().Add(wait).Before(deadline) {
		return 0, false
	}
	return wait, true
}

// retriableErr reports whether a failed attempt may be retried under p: a connect
// failure (nothing was sent) under connection-error; a reset or a per-try timeout
// (before the response head) under the reset events when the body can be replayed; a
// request an HTTP/2 upstream did not process (REFUSED_STREAM, above its GOAWAY) under
// any policy, whatever its events, when the body can be replayed (so the
// refused-stream event is implied). An expired request deadline, a limit's refusal or
// a malformed response is never retried.
func retriableErr(p *resilience.RetryPolicy, err error, replayable, perTryExpired bool) bool {
	switch upstream.KindOf(err) {
	case upstream.Connect:
		return p.RetryOnConnectFailure()
	case upstream.Overflow, upstream.NoEndpoint, upstream.Protocol:
		return false
	case upstream.Timeout:
		if !perTryExpired {
			return false
		}
	}
	if upstream.IsUnprocessed(err) {
		// Refused, or above the upstream's GOAWAY: never processed, so safe to send again
		// whatever the method or the events, when the body can be sent again.
		return replayable
	}
	return replayable && p.RetryOnReset()
}

// UpstreamStatus is Status for a failure that was not classified yet (a response body
// that failed after the pipeline returned): a message the HTTP/1.1 codec refused is a
// protocol error, a deadline a timeout, anything else a reset.
func UpstreamStatus(err error) (status int, code string) {
	return Status(upstream.Wrap(err, isMalformed))
}

// isMalformed reports a response the HTTP/1.1 codec refused.
func isMalformed(err error) bool {
	var he *h1.Error
	return errors.As(err, &he)
}

// Sleep waits d, or until ctx is done (false).
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// NewCall starts a call for d now: its deadline is the route's (else the target
// listener's) perRequest timeout, lowered, never raised, by a gRPC client's
// grpc-timeout (0: none). idle is the exchange's idle timeout.
func NewCall(d *Decision, streamIdle, grpcTimeout time.Duration) (c Call, idle time.Duration) {
	idle = c.Init(d, streamIdle, grpcTimeout)
	return c, idle
}

// Init is NewCall on a zero Call the caller holds: the HTTP/1.1 fast path's, where
// returning the Call by value cost two copies of it per request (issue 17).
func (c *Call) Init(d *Decision, streamIdle, grpcTimeout time.Duration) (idle time.Duration) {
	timeout, idle := d.Timeouts(streamIdle)
	if grpcTimeout > 0 && (timeout == 0 || grpcTimeout < timeout) {
		timeout = grpcTimeout
	}
	c.Decision = *d
	if timeout > 0 {
		c.Deadline = time.Now().Add(timeout)
	}
	return idle
}

// GRPCTimeout is the deadline a gRPC client asked for in grpc-timeout; 0 when absent,
// malformed (ignored, as grpc-go does) or not a gRPC request.
func GRPCTimeout(isGRPC bool, v string) time.Duration {
	if !isGRPC || v == "" {
		return 0
	}
	d, ok := resilience.ParseGRPCTimeout(v)
	if !ok {
		return 0
	}
	return d
}

// endAttemptSpan ends an attempt's client span with its outcome and error origin.
func endAttemptSpan(span telemetry.AttemptSpan, status int, err error) {
	code := ""
	if err != nil {
		if _, client := AsClientError(err); client {
			code = CodeBadRequest
		} else {
			_, code = Status(upstream.Wrap(err, isMalformed))
		}
	}
	span.End(status, err, code)
}
