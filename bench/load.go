package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// LoadSpec describes one load run against one target.
type LoadSpec struct {
	Addr  string // host:port to connect to
	Host  string // Host header / :authority; Addr when empty
	Path  string // request path; "/" when empty
	Proto Proto  // H1 (default), H2C or GRPC

	// Connections is the number of TCP connections, each with Streams requests in
	// flight.
	Connections int
	// Streams is the number of requests in flight on each connection, as h2load -m:
	// that many worker slots share each connection, each sending its next request
	// when its last one is done (closed loop) or due (open loop). 0 or 1 is one at a
	// time; more needs a protocol that multiplexes (H2C, GRPC). An h2c phase with
	// Streams > 1 uses the multiplexed client (h2Mux), with 1 the one-at-a-time client
	// of earlier runs.
	Streams int
	// Rate is the total request rate in req/s for an open-loop run, spread evenly over
	// the Connections × Streams slots; 0 runs closed-loop at maximum throughput.
	Rate     float64
	Duration time.Duration // measured part
	Warmup   time.Duration // unmeasured part before it, same load
	ReqBody  int           // request body bytes (POST when > 0)
	// Method overrides GET (POST with a body); Headers go with every request (not
	// with GRPC).
	Method  string
	Headers []Header
	// TLS, when set, makes every connection TLS (an https target), offering ALPN
	// http/1.1 for H1 and h2 for H2C and GRPC.
	TLS     *tls.Config
	Timeout time.Duration // per request; default 5 s
	// Drain bounds how long after Duration an open-loop run still sends requests that
	// were scheduled inside it (its backlog); those never sent count as not_sent.
	// Default Timeout.
	Drain time.Duration

	Clock Clock // default RealClock
	// AtMeasure, when set, is called from Run's goroutine when the measured part
	// starts (true) and ends (false), e.g. to read processes' CPU time.
	AtMeasure func(start bool)
	// Live, when set, is updated while the run goes (for progress lines).
	Live *Live

	newRequester func() requester // tests substitute the transport
}

// Result is what one load run measured. For an open-loop run Latency counts from each
// request's scheduled send time (coordinated omission corrected) and Service from
// its actual send time; for a closed-loop run both are service times.
type Result struct {
	Open    bool
	Latency *Histogram
	Service *Histogram
	// ErrLatency is the latency (counted as Latency is) of complete responses with an
	// error status (≥ 400), kept apart so that fast error pages do not pass for fast
	// service, and an all-error run still shows how long its errors took.
	ErrLatency *Histogram
	OK         uint64            // responses with status < 400
	Errors     map[string]uint64 // by kind, e.g. "timeout", "http_502"
	RetCodes   map[int]uint64
	// Elapsed is the measured span: Duration, or longer if responses to requests
	// scheduled inside it came later.
	Elapsed time.Duration
	// PeakStreams is the most requests the client had in flight on one connection at
	// once (1 for one-at-a-time clients), over the whole run, warm-up included.
	PeakStreams int
}

// Responses is the number of complete responses of any status.
func (r *Result) Responses() uint64 {
	var n uint64
	for _, c := range r.RetCodes {
		n += c
	}
	return n
}

// ErrorCount sums Errors.
func (r *Result) ErrorCount() uint64 {
	var n uint64
	for _, c := range r.Errors {
		n += c
	}
	return n
}

// Rate is the achieved rate of complete responses per second.
func (r *Result) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Responses()) / r.Elapsed.Seconds()
}

// Merge adds o to r (e.g. rounds of the same scenario).
func (r *Result) Merge(o *Result) {
	r.Latency.Merge(o.Latency)
	r.Service.Merge(o.Service)
	r.ErrLatency.Merge(o.ErrLatency)
	r.OK += o.OK
	for k, v := range o.Errors {
		r.Errors[k] += v
	}
	for k, v := range o.RetCodes {
		r.RetCodes[k] += v
	}
	r.Elapsed += o.Elapsed
	r.PeakStreams = max(r.PeakStreams, o.PeakStreams)
}

func newResult(open bool) *Result {
	return &Result{Open: open, Latency: NewHistogram(), Service: NewHistogram(), ErrLatency: NewHistogram(),
		Errors: map[string]uint64{}, RetCodes: map[int]uint64{}}
}

// Live exposes running counters of the current run; safe for concurrent use.
type Live struct {
	mu      sync.Mutex
	workers []*worker
	start   time.Time
}

// Snapshot returns responses and errors so far and the time the run started.
func (l *Live) Snapshot() (done, errs uint64, start time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, w := range l.workers {
		done += w.done.Load()
		errs += w.errs.Load()
	}
	return done, errs, l.start
}

func (l *Live) reset(ws []*worker, start time.Time) {
	l.mu.Lock()
	l.workers, l.start = ws, start
	l.mu.Unlock()
}

type worker struct {
	req  requester
	res  *Result
	done atomic.Uint64
	errs atomic.Uint64
	last time.Time // completion of the last measured request

	lastErrConnect bool
}

// Run generates load as spec says and returns what it measured. It returns early with
// ctx's error when ctx ends. Each slot (connection × stream) is one goroutine owned
// by Run and joined before it returns.
func Run(ctx context.Context, spec LoadSpec) (*Result, error) {
	if spec.Connections <= 0 {
		return nil, fmt.Errorf("connections %d: must be > 0", spec.Connections)
	}
	if spec.Streams < 0 {
		return nil, fmt.Errorf("streams %d: must be ≥ 0", spec.Streams)
	}
	streams := max(spec.Streams, 1)
	if spec.Duration <= 0 {
		return nil, fmt.Errorf("duration %v: must be > 0", spec.Duration)
	}
	if spec.Rate < 0 {
		return nil, fmt.Errorf("rate %v: must be ≥ 0", spec.Rate)
	}
	if spec.Proto == "" {
		spec.Proto = H1
	}
	if streams > 1 && !spec.Proto.Multiplexes() && spec.newRequester == nil {
		return nil, fmt.Errorf("streams %d: %s carries one request at a time per connection (h2c and grpc multiplex)", streams, spec.Proto)
	}
	if spec.Host == "" {
		spec.Host = spec.Addr
	}
	if spec.Path == "" {
		spec.Path = "/"
	}
	if spec.Timeout <= 0 {
		spec.Timeout = 5 * time.Second
	}
	if spec.Drain <= 0 {
		spec.Drain = spec.Timeout
	}
	if spec.Clock == nil {
		spec.Clock = RealClock{}
	}
	conn := func() []requester {
		out := make([]requester, streams)
		for i := range out {
			out[i] = spec.newRequester()
		}
		return out
	}
	if spec.newRequester == nil {
		t := target{addr: spec.Addr, host: spec.Host, path: spec.Path, reqBody: spec.ReqBody, method: spec.Method, headers: spec.Headers, tls: spec.TLS}
		conn = func() []requester { return connRequesters(spec.Proto, streams, t) }
	}
	open := spec.Rate > 0
	// Slot s of connection c is worker s·Connections + c, so that consecutive slots
	// of the open-loop schedule go to different connections.
	slots := spec.Connections * streams
	ws := make([]*worker, slots)
	for c := range spec.Connections {
		for s, r := range conn() {
			ws[s*spec.Connections+c] = &worker{req: r, res: newResult(open)}
		}
	}
	// The connections come up before the clock starts, as with wrk and h2load: a phase
	// measures requests, not dials and handshakes (in a loaded run those took most of a
	// short phase, and a row could end with no request at all).
	connectAll(ctx, ws, spec.Clock.Now().Add(spec.Timeout))
	t0 := spec.Clock.Now()
	mStart := t0.Add(spec.Warmup)
	mEnd := mStart.Add(spec.Duration)
	if spec.Live != nil {
		spec.Live.reset(ws, mStart)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer w.req.close()
			if open {
				runOpen(ctx, &spec, w, i, slots, t0, mStart, mEnd)
			} else {
				runClosed(ctx, &spec, w, mStart, mEnd)
			}
		}()
	}
	if spec.AtMeasure != nil {
		s := spec.Clock.NewSleeper()
		if s.SleepUntil(ctx, mStart) == nil {
			spec.AtMeasure(true)
			if s.SleepUntil(ctx, mEnd) == nil {
				spec.AtMeasure(false)
			}
		}
		s.Stop()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("load on %s: %w", spec.Addr, err)
	}
	res := newResult(open)
	res.PeakStreams = 1
	last := mEnd
	for _, w := range ws {
		res.Merge(w.res)
		if w.last.After(last) {
			last = w.last
		}
		if p, ok := w.req.(streamPeaker); ok {
			res.PeakStreams = max(res.PeakStreams, p.peakStreams())
		}
	}
	res.Elapsed = last.Sub(mStart)
	return res, nil
}

// connectAll opens the workers' connections at once (those whose requester can),
// waiting for all of them or the deadline. A failure is the first request's to record.
func connectAll(ctx context.Context, ws []*worker, deadline time.Time) {
	var wg sync.WaitGroup
	for _, w := range ws {
		if c, ok := w.req.(connector); ok {
			wg.Go(func() { _ = c.connect(ctx, deadline) })
		}
	}
	wg.Wait()
}

// schedTime is the open-loop schedule: request k of slot i (of n slots, at total rate
// r from t0) goes at t0 + (k·n + i)/r. Computing each slot from t0, not from the
// previous slot, keeps rounding from drifting the rate.
func schedTime(t0 time.Time, rate float64, n, i, k int) time.Time {
	return t0.Add(time.Duration(float64(k*n+i) * 1e9 / rate))
}

func runOpen(ctx context.Context, spec *LoadSpec, w *worker, i, slots int, t0, mStart, mEnd time.Time) {
	s := spec.Clock.NewSleeper()
	defer s.Stop()
	stopAt := mEnd.Add(spec.Drain)
	for k := 0; ; k++ {
		sched := schedTime(t0, spec.Rate, slots, i, k)
		if !sched.Before(mEnd) {
			return
		}
		now := spec.Clock.Now()
		if now.After(stopAt) {
			// Backlog that could not be sent in time: count what was measured.
			for ; sched.Before(mEnd); k++ {
				if !sched.Before(mStart) {
					w.res.Errors[ErrNotSent]++
					w.errs.Add(1)
				}
				sched = schedTime(t0, spec.Rate, slots, i, k+1)
			}
			return
		}
		if sched.After(now) {
			if s.SleepUntil(ctx, sched) != nil {
				return
			}
		}
		sent := spec.Clock.Now()
		measured := !sched.Before(mStart)
		if !w.send(ctx, spec, sched, sent, measured) {
			return
		}
	}
}

func runClosed(ctx context.Context, spec *LoadSpec, w *worker, mStart, mEnd time.Time) {
	s := spec.Clock.NewSleeper()
	defer s.Stop()
	for {
		sent := spec.Clock.Now()
		if !sent.Before(mEnd) {
			return
		}
		measured := !sent.Before(mStart)
		errsBefore := w.errs.Load()
		if !w.send(ctx, spec, sent, sent, measured) {
			return
		}
		if w.errs.Load() != errsBefore && w.lastErrConnect {
			// A refused connection fails in microseconds; pause so a dead target
			// does not turn the run into a busy loop.
			if s.SleepUntil(ctx, spec.Clock.Now().Add(10*time.Millisecond)) != nil {
				return
			}
		}
	}
}

// send performs one request and records it; false means ctx ended.
func (w *worker) send(ctx context.Context, spec *LoadSpec, sched, sent time.Time, measured bool) bool {
	status, err := w.req.do(ctx, sent.Add(spec.Timeout))
	done := spec.Clock.Now()
	if ctx.Err() != nil {
		return false
	}
	w.lastErrConnect = false
	if err != nil {
		kind := errorKind(err)
		w.lastErrConnect = kind == ErrConnect || kind == grpcUnavailable
		if measured {
			w.res.Errors[kind]++
			w.last = done
		}
		w.errs.Add(1)
		return true
	}
	w.done.Add(1)
	if !measured {
		return true
	}
	w.last = done
	w.res.RetCodes[status]++
	if status >= 400 {
		w.res.Errors[httpKind(status)]++
		w.res.ErrLatency.Record(done.Sub(sched))
		w.errs.Add(1)
		return true
	}
	w.res.OK++
	w.res.Latency.Record(done.Sub(sched))
	w.res.Service.Record(done.Sub(sent))
	return true
}

// httpKind names an error status; it allocates, which only failing requests pay.
func httpKind(status int) string { return "http_" + strconv.Itoa(status) }
