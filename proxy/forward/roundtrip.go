package forward

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/internal/reqctx"

	"github.com/meshd/meshd/balancer"
	"github.com/meshd/meshd/proxy/upstream"
)

// RoundTrip is the Exchanger over a cluster's http.RoundTripper: meshd's HTTP/2
// transport for HTTP/2 upstreams (h2c prior knowledge), and its HTTP/1.1 transport over
// the endpoints' pooled connections for HTTP/1.1 upstreams reached from an HTTP/2
// client. The HTTP/2 front end uses it, and so does the HTTP/1.1 front end when the
// upstream speaks HTTP/2.
//
// A request body is kept for a retry up to MaxReplay bytes as it streams (replayBody),
// and the request's GetBody gives it again while it is kept whole (the HTTP/1.1
// transport replays a request a stale keep-alive connection lost);
// the idle timeout bounds the wait for the response head (headWatch) and, after it, the
// gaps in the response body (idleBody). After Do succeeded, Response is the response to
// relay and Close must be called when the relay is done.
type RoundTrip struct {
	// Out is the upstream request, its header already through HTTPForwarding. Its
	// context is the client's: when it ends, the attempt fails as a *ClientError.
	Out       *http.Request
	Cluster   *upstream.Cluster
	Idle      time.Duration
	MaxReplay int
	// Ctx, when set, is the client's context instead of Out's (saves a request copy).
	Ctx context.Context

	rb       *replayBody
	watch    *idleWatch                    // the idle timeout's timer, shared by the attempts and the body
	gen      uint64                        // the current attempt's generation of watch
	getBody  func() (io.ReadCloser, error) // the upstream request's GetBody (nil: no body)
	bodyless bool
	resp     *http.Response
	actx     context.Context // the final attempt's
	attempts int
	// Storage for what every request needs once, allocated with the RoundTrip (one
	// allocation instead of four): the idle watch, the final response's idle body, and
	// (InitOut) the upstream request and its URL, which the first attempt sends.
	watch0   idleWatch
	ibody    idleBody
	out0     http.Request
	outURL   url.URL
	cancel   *reqctx.Ctx // the current attempt's, until cancelled
	idleBody *idleBody
	// actx0 is the first attempt's context; a retry's is new, as an abandoned attempt's
	// transport may still hold it.
	actx0 reqctx.Ctx
	// closes counts Close calls; quiet: the first one found nothing but the owner able
	// to reach the RoundTrip any more (Recycle).
	closes uint8
	quiet  bool
	// direct: the final attempt went through meshd's own transport (ContextRoundTripper).
	direct bool
}

// deadlineSlack is how close to an attempt's deadline a failure counts as the deadline.
const deadlineSlack = 20 * time.Millisecond

// NewRoundTrip prepares out for the pipeline.
func NewRoundTrip(out *http.Request, cl *upstream.Cluster, idle time.Duration, maxReplay int) *RoundTrip {
	rt := &RoundTrip{}
	rt.init(out, cl, idle, maxReplay)
	return rt
}

// NewOutRoundTrip is OutRequest and NewRoundTrip in one allocation.
func NewOutRoundTrip(method, pathQuery, host string, hdr http.Header, body io.ReadCloser,
	contentLength int64, trailer http.Header, cl *upstream.Cluster, idle time.Duration, maxReplay int) *RoundTrip {
	rt := &RoundTrip{}
	rt.InitOut(method, pathQuery, host, hdr, body, contentLength, trailer, cl, idle, maxReplay)
	return rt
}

// InitOut is NewOutRoundTrip for a zero RoundTrip embedded in a larger per-request
// object (one allocation less); it must be called once, before the RoundTrip is used.
func (rt *RoundTrip) InitOut(method, pathQuery, host string, hdr http.Header, body io.ReadCloser,
	contentLength int64, trailer http.Header, cl *upstream.Cluster, idle time.Duration, maxReplay int) {
	initOutRequest(&rt.out0, &rt.outURL, method, pathQuery, host, hdr, body, contentLength, trailer)
	rt.init(&rt.out0, cl, idle, maxReplay)
}

func (rt *RoundTrip) init(out *http.Request, cl *upstream.Cluster, idle time.Duration, maxReplay int) {
	rt.Out, rt.Cluster, rt.Idle, rt.MaxReplay = out, cl, idle, maxReplay
	rt.bodyless = out.Body == nil || out.Body == http.NoBody
	if !rt.bodyless {
		if maxReplay <= 0 {
			maxReplay = DefaultMaxReplayBody
		}
		rt.rb = &replayBody{src: out.Body, limit: maxReplay}
		rt.getBody = rt.againBody
	}
}

var errNotReplayable = errors.New("request body: not kept whole for a replay")

// againBody is the upstream request's GetBody: the body from its start, for another
// try within the current attempt, while it is kept whole (a newer reader makes the
// older ones fail).
func (r *RoundTrip) againBody() (io.ReadCloser, error) {
	if !r.rb.replayable() {
		return nil, errNotReplayable
	}
	var b io.ReadCloser = r.rb.attempt()
	if r.watch != nil {
		b = &activityBody{ReadCloser: b, w: r.watch, gen: r.gen}
	}
	return b, nil
}

// Exchange implements Exchanger.
func (r *RoundTrip) Exchange(res balancer.Result, deadline time.Time) (int, error) {
	parent := r.parent()
	// reqctx: below a stream's reqctx.Ctx an attempt's context links in without a map
	// or a lock shared with other streams, and the transports watch it without
	// allocating (reqctx's doc has the profile).
	var actx *reqctx.Ctx
	if r.attempts == 0 {
		actx = &r.actx0
		actx.Init(parent)
	} else {
		actx = reqctx.New(parent)
	}
	if !deadline.IsZero() {
		actx.SetDeadline(deadline)
	}
	// The idle timeout also bounds the wait for the response head (and, after it, the
	// gaps in the body): an upstream that accepts the request and then says nothing must
	// not hold it for ever. One timer per request serves every attempt and the body.
	var gen uint64
	if r.Idle > 0 {
		if r.watch == nil {
			r.watch = &r.watch0
			r.watch.idle = r.Idle
		}
		gen = r.watch.arm(watchHead, actx)
	}
	// The first attempt sends the RoundTrip's own request (InitOut's), its URL's host and
	// its body set in place: nothing reads them as they were after this point, and a
	// retry copies the request and its URL (as it copies a caller's Out), since an
	// abandoned attempt's transport may still read its own. meshd's transports take the
	// attempt's context beside the request; another RoundTripper gets it in a copy of
	// the request.
	rt := r.Cluster.RoundTripper()
	crt, direct := rt.(upstream.ContextRoundTripper)
	own := r.attempts == 0 && r.Out == &r.out0
	var req *http.Request
	switch {
	case !direct:
		req = r.Out.WithContext(actx)
	case own:
		req = &r.out0
	default:
		req = new(http.Request)
		*req = *r.Out
	}
	u := &r.outURL
	if !own {
		u = new(url.URL)
		*u = *r.Out.URL
	}
	r.attempts++
	r.direct = direct
	u.Host = res.Endpoint.Address
	req.URL = u
	if r.rb != nil {
		req.Body = r.rb.attempt()
		req.GetBody = r.getBody
	}
	r.gen = gen
	if r.watch != nil && req.Body != nil && req.Body != http.NoBody {
		req.Body = &activityBody{ReadCloser: req.Body, w: r.watch, gen: gen}
	}
	var resp *http.Response
	var err error
	if ert, ok := rt.(upstream.EndpointRoundTripper); ok && direct && res.Endpoint != nil {
		resp, err = ert.RoundTripEndpoint(actx, req, res.Endpoint)
	} else if direct {
		resp, err = crt.RoundTripContext(actx, req)
	} else {
		resp, err = rt.RoundTrip(req)
	}
	stalled := r.watch.endHead(gen)
	if err != nil {
		if r.watch != nil {
			// A failed attempt may be the last: its timer must not keep the request
			// alive for the idle timeout (a retry arms it again).
			r.watch.stop()
		}
		deadlineHit := errors.Is(actx.Err(), context.DeadlineExceeded)
		actx.Cancel()
		var ce *ClientError
		var be *upstream.RequestBodyError
		switch {
		case errors.As(err, &ce):
			return 0, err
		case parent.Err() != nil:
			return 0, &ClientError{Err: fmt.Errorf("client went away: %w", parent.Err())}
		case errors.As(err, &be):
			// The HTTP/1.1 transport could not read the body: the client's failure.
			return 0, &ClientError{Err: be.Err}
		case stalled:
			return 0, &upstream.Error{Kind: upstream.Timeout, Err: fmt.Errorf("no response head within the idle timeout %v: %w", r.Idle, context.DeadlineExceeded)}
		case deadlineHit || (!deadline.IsZero() && time.Until(deadline) <= deadlineSlack):
			// An upstream given the same deadline (a gRPC call's grpc-timeout travels with
			// it) may give up a moment before meshd's own timer fires, resetting the
			// stream; that is the deadline too, not an upstream failure.
			return 0, &upstream.Error{Kind: upstream.Timeout, Err: err}
		}
		return 0, err
	}
	// The idle timeout cancels the exchange when the response body makes no progress.
	if r.watch != nil {
		bgen := r.watch.arm(watchBody, actx)
		// A response discarded for a retry was read and closed before this attempt, so
		// its idle body can be reused.
		r.ibody = idleBody{ReadCloser: resp.Body, w: r.watch, gen: bgen}
		r.idleBody = &r.ibody
		resp.Body = r.idleBody
	}
	r.resp, r.actx, r.cancel = resp, actx, actx
	return resp.StatusCode, nil
}

// SetHeader implements Exchanger: the field goes on the upstream request of the coming
// attempts.
func (r *RoundTrip) SetHeader(name, value string) { r.Out.Header.Set(name, value) }

// Replayable implements Exchanger.
func (r *RoundTrip) Replayable() bool { return r.bodyless || r.rb.replayable() }

// Header implements Exchanger.
func (r *RoundTrip) Header(name string) (string, bool) {
	v := r.resp.Header[canonicalName(name)]
	if len(v) == 0 {
		return "", false
	}
	return v[0], true
}

// Discard implements Exchanger: up to MaxDrainBody of the body is read so the
// connection (HTTP/1.1) goes back to its pool; with more left, Close closes it.
func (r *RoundTrip) Discard() {
	_, _ = io.Copy(io.Discard, io.LimitReader(r.resp.Body, MaxDrainBody))
	r.Close()
}

// Wait implements Exchanger: the wait ends early when the client goes away.
func (r *RoundTrip) Wait(d time.Duration) bool { return Sleep(r.parent(), d) }

func (r *RoundTrip) parent() context.Context {
	if r.Ctx != nil {
		return r.Ctx
	}
	return r.Out.Context()
}

// TimeoutCause reports which of meshd's own timeouts ended the final attempt, nil when
// none did: the request's deadline (or the per-try one) passed, or the response body
// idled past the idle timeout. A relay that failed then failed because of meshd's
// timeout, not the upstream. The cause is named here because the error the body's Read
// returned does not say it: the idle timeout cuts the body by cancelling the attempt's
// context, so that Read fails with a bare "context canceled", like a client going away.
func (r *RoundTrip) TimeoutCause() error {
	// actx.Err() records whichever ended the attempt first: DeadlineExceeded for the
	// deadline, Canceled for the idle timer (or the client), so the deadline is checked
	// first and the idle timer's flag only decides between the Canceled ones.
	if r.actx != nil && errors.Is(r.actx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("the request timeout passed mid-response: %w", context.DeadlineExceeded)
	}
	if r.watch != nil && r.watch.bodyFired() {
		return fmt.Errorf("no response data within the idle timeout %v: %w", r.Idle, context.DeadlineExceeded)
	}
	return nil
}

// Response is the final response head and its body, after Do succeeded.
func (r *RoundTrip) Response() *http.Response { return r.resp }

// TransportBody is the final attempt's response body as its transport returned it, under
// the idle timeout's wrapper (upstream.ReleaseResponse); nil before a response.
func (r *RoundTrip) TransportBody() io.ReadCloser {
	if r.resp == nil {
		return nil
	}
	if r.idleBody != nil && r.resp.Body == io.ReadCloser(r.idleBody) {
		return r.idleBody.ReadCloser
	}
	return r.resp.Body
}

// Close releases the final attempt (its body and context). Safe to call twice.
func (r *RoundTrip) Close() {
	if r.resp != nil {
		_ = r.resp.Body.Close()
		r.resp = nil
	}
	ctxQuiet := false
	if r.cancel != nil {
		r.cancel.Cancel()
		ctxQuiet = r.cancel == &r.actx0 && r.actx0.Reusable()
		r.cancel = nil
	}
	watchQuiet := true
	if r.watch != nil {
		watchQuiet = r.watch.release()
	}
	r.closes++
	r.quiet = r.closes == 1 && ctxQuiet && watchQuiet
}

// Settled reports, after Close, whether nothing r started can still reach its parent
// context (Ctx): no attempt was made, or the one attempt went through meshd's own
// transport and Close found its context and idle watch quiet. An owner whose context
// object is recycled (internal/h2's stream, KeepStream) must not reuse it otherwise: an
// attempt's deadline timer, its idle watch or a transport still finishing on another
// goroutine may yet detach the attempt's context from it, or ask it for a value.
func (r *RoundTrip) Settled() bool {
	return r.attempts == 0 || (r.quiet && r.attempts == 1 && r.direct)
}

// Recycle zeroes r for another request when nothing but its owner can reach it any more,
// and reports whether it did; the owner then puts r's memory (or the object holding it)
// back in its pool. That holds after Close on the clean path only: one attempt, on r's
// own request (InitOut), through meshd's own transport; an attempt context that Close
// found quiet (reqctx.Ctx.Reusable: the transports remove their hook when they are done
// with the exchange, the HTTP/1.1 one when the body ends, the HTTP/2 one when its
// reader removes the stream, and read the request's head fields only before the
// response head); a request body, if any, whose every attempt body the transport
// closed (its body writer's last use of the request: a writer still running may
// outlive the exchange); and an idle watch whose timer never fired. Anything else is
// left to the collector.
func (r *RoundTrip) Recycle() bool {
	if r.attempts == 0 || !r.Settled() || r.Out != &r.out0 ||
		(r.rb != nil && r.rb.opened.Load() != r.rb.closed.Load()) {
		return false
	}
	seq := r.actx0.HookSeq()
	*r = RoundTrip{}
	r.actx0.ContinueHookSeq(seq)
	return true
}

// OutRequest builds the upstream request of a net/http path: pathQuery split into the
// URL, an empty body as http.NoBody. hdr is the forwarded header (HTTPForwarding). Its
// context is the background one: the client's goes in RoundTrip.Ctx (a request copy
// less).
func OutRequest(method, pathQuery, host string, hdr http.Header, body io.ReadCloser,
	contentLength int64, trailer http.Header) *http.Request {
	req, u := new(http.Request), new(url.URL)
	initOutRequest(req, u, method, pathQuery, host, hdr, body, contentLength, trailer)
	return req
}

func initOutRequest(req *http.Request, u *url.URL, method, pathQuery, host string, hdr http.Header, body io.ReadCloser,
	contentLength int64, trailer http.Header) {
	*u = url.URL{Scheme: "http"}
	if i := strings.IndexByte(pathQuery, '?'); i >= 0 {
		u.RawQuery = pathQuery[i+1:]
		pathQuery = pathQuery[:i]
	}
	if p, err := url.PathUnescape(pathQuery); err == nil {
		u.Path = p
		u.RawPath = pathQuery
	} else {
		u.Path = pathQuery
	}
	if body == nil || contentLength == 0 {
		body = http.NoBody
	}
	*req = http.Request{
		Method:        method,
		URL:           u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        hdr,
		Body:          body,
		ContentLength: contentLength,
		Host:          host,
		Trailer:       trailer,
	}
}

// replayBody keeps the first limit bytes of a request body so that a retry can send it
// again (net/http's GetBody idea, bounded). Each attempt reads through its own
// attemptBody; a newer attempt makes older ones fail, because net/http may still read
// an abandoned attempt's body from its write goroutine after RoundTrip returned. Every
// byte taken from src is recorded (until overflow), whichever attempt read it.
type replayBody struct {
	// srcMu serializes reads of src (an abandoned attempt may still be inside one);
	// mu guards the rest and is never held across a read, so replayable never waits
	// for the client to send more of a stream.
	srcMu    sync.Mutex
	mu       sync.Mutex
	src      io.ReadCloser
	buf      []byte
	limit    int
	overflow bool  // more than limit bytes were read: no replay
	srcErr   error // src's sticky end (io.EOF) or failure
	// taken counts the bytes read from src by any attempt. Once the buffer overflowed,
	// only an attempt that has passed on every one of them (its off equals taken) may
	// go on reading src: a stale attempt's read that overflowed the buffer took bytes
	// the current attempt never saw, and reading on would send the body with a hole.
	taken int
	gen   int
	// opened and closed count the attempt bodies handed out and closed: when they are
	// equal, no transport is reading one any more (RoundTrip.Recycle).
	opened, closed atomic.Int32
}

var errStaleAttempt = errors.New("request body: superseded by a retry")

// replayable reports whether a new attempt can send the whole body again. A nil rb (no
// body kept) is not replayable.
func (rb *replayBody) replayable() bool {
	if rb == nil {
		return false
	}
	rb.mu.Lock()
	defer rb.mu.Unlock()
	return !rb.overflow
}

func (rb *replayBody) attempt() io.ReadCloser {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	rb.gen++
	rb.opened.Add(1)
	return &attemptBody{rb: rb, gen: rb.gen}
}

type attemptBody struct {
	rb     *replayBody
	gen    int
	off    int
	closed atomic.Bool
}

// fromBuf serves what the buffer holds beyond a's offset; mu is held.
func (a *attemptBody) fromBuf(p []byte) (int, bool) {
	rb := a.rb
	if rb.overflow || a.off >= len(rb.buf) {
		return 0, false
	}
	n := copy(p, rb.buf[a.off:])
	a.off += n
	return n, true
}

func (a *attemptBody) Read(p []byte) (int, error) {
	rb := a.rb
	rb.mu.Lock()
	if a.gen != rb.gen {
		rb.mu.Unlock()
		return 0, errStaleAttempt
	}
	if n, ok := a.fromBuf(p); ok {
		rb.mu.Unlock()
		return n, nil
	}
	rb.mu.Unlock()

	rb.srcMu.Lock()
	defer rb.srcMu.Unlock()
	rb.mu.Lock()
	// Another reader may have appended while this one waited for srcMu.
	if n, ok := a.fromBuf(p); ok {
		rb.mu.Unlock()
		return n, nil
	}
	if err := rb.srcErr; err != nil {
		rb.mu.Unlock()
		return 0, err
	}
	if rb.overflow && a.off != rb.taken {
		rb.mu.Unlock()
		return 0, errNotReplayable
	}
	rb.mu.Unlock()
	n, err := rb.src.Read(p)
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if n > 0 {
		rb.taken += n
		a.off += n
		if !rb.overflow {
			if len(rb.buf)+n <= rb.limit {
				rb.buf = append(rb.buf, p[:n]...)
			} else {
				rb.overflow, rb.buf = true, nil
			}
		}
	}
	if err != nil {
		rb.srcErr = err
	}
	if a.gen != rb.gen {
		return 0, errStaleAttempt // the bytes are kept for the current attempt
	}
	return n, err
}

// Close leaves src open: the downstream request owns it. It counts the body closed:
// meshd's transports close the request body as their last use of the request (the
// HTTP/2 client's body writer when it ends, the HTTP/1.1 one likewise).
func (a *attemptBody) Close() error {
	if a.closed.CompareAndSwap(false, true) {
		a.rb.closed.Add(1)
	}
	return nil
}

// idleWatch is a request's idle timeout: one timer, armed for each attempt's wait
// for the response head and then for the gaps in the final response's body. Each arm
// starts a generation; activity and stops of an older one (a body writer of an
// abandoned attempt may still be reading) are ignored.
//
// The timer is lazy: activity only records its time (an atomic store, no lock and no
// timer operation per read), ending the head's wait leaves the timer running, and when
// it fires it looks at the last activity and sleeps again for what is left. So a
// request costs one timer start and one stop, not one timer operation per phase and
// per read.
type idleWatch struct {
	idle time.Duration

	last  atomic.Int64  // the time of the last activity or arm, in ns since watchEpoch
	agen  atomic.Uint64 // gen, for touch without the lock
	mu    sync.Mutex
	timer *watchTimer // nil until the first arm, and after release
	// running: the timer is scheduled (it may fire with nothing armed; it then stops).
	running bool
	cancel  *reqctx.Ctx
	gen     uint64
	phase   uint8
	stalled bool // fired while waiting for a head (of generation gen)
	fired   bool // fired during the body
	// calls: the timer called fire at least once (such a call may still be under way
	// when the watch is released, so its memory is not reused: RoundTrip.Recycle).
	calls bool
}

const (
	watchOff uint8 = iota
	watchHead
	watchBody
)

// watchEpoch is the origin of idleWatch.last: a monotonic time base.
var watchEpoch = time.Now()

func watchNow() int64 { return int64(time.Since(watchEpoch)) }

// arm starts a phase; cancel ends the attempt when the timer fires.
func (w *idleWatch) arm(phase uint8, cancel *reqctx.Ctx) uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.gen++
	w.agen.Store(w.gen)
	w.last.Store(watchNow())
	w.phase, w.cancel, w.stalled = phase, cancel, false
	switch {
	case w.timer == nil:
		w.timer = startWatchTimer(w)
	case !w.running:
		w.timer.t.Reset(w.idle)
	}
	w.running = true
	return w.gen
}

func (w *idleWatch) fire() {
	w.mu.Lock()
	w.calls = true
	if w.phase == watchOff {
		w.running = false
		w.mu.Unlock()
		return
	}
	if left := w.idle - time.Duration(watchNow()-w.last.Load()); left > 0 {
		w.timer.t.Reset(left)
		w.mu.Unlock()
		return
	}
	w.running = false
	switch w.phase {
	case watchHead:
		w.stalled = true
	case watchBody:
		w.fired = true
	}
	cancel := w.cancel
	w.phase = watchOff
	w.mu.Unlock()
	cancel.Cancel()
}

// touch records activity of generation gen.
func (w *idleWatch) touch(gen uint64) {
	if w.agen.Load() == gen {
		w.last.Store(watchNow())
	}
}

// endHead ends generation gen's wait for a head and reports whether the timer cut it.
// A nil watch did not.
func (w *idleWatch) endHead(gen uint64) bool {
	if w == nil {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.gen != gen {
		return false
	}
	if w.phase == watchHead {
		w.phase = watchOff // the timer, left running, stops when it next fires
	}
	return w.stalled
}

func (w *idleWatch) bodyFired() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.fired
}

func (w *idleWatch) stop() {
	w.mu.Lock()
	w.phase = watchOff
	if w.running {
		w.timer.stop()
		w.running = false
	}
	w.mu.Unlock()
}

// release stops the watch for good and gives its timer back to the pool (RoundTrip.Close:
// nothing arms it again). quiet reports that this call stopped a timer that never
// called fire, so no call of it can be under way: the watch's memory may be reused.
func (w *idleWatch) release() (quiet bool) {
	w.mu.Lock()
	b, quiet := w.releaseLocked()
	w.mu.Unlock()
	if b != nil && !b.pending {
		watchTimers.Put(b)
	}
	return quiet
}

// releaseLocked is release's part under w.mu: it takes the timer off the watch and
// stops it. A timer whose call may still be pending (pending) stays out of the pool:
// that call would reach the timer's next holder, whose watch may be recycled memory by
// the time it runs.
func (w *idleWatch) releaseLocked() (b *watchTimer, quiet bool) {
	w.phase = watchOff
	b = w.timer
	w.timer = nil
	if w.running {
		quiet = b.stop() && !w.calls
		w.running = false
	}
	return b, quiet
}

// watchTimer is an idle watch's timer, pooled: a time.AfterFunc per request (the timer
// and its bound func) was two allocations per request. The timer calls the fire of the
// watch it serves now. A timer goes back to the pool only when it was stopped before
// it fired (or its call already ran): a call still pending would reach the timer's next
// holder, whose watch may be recycled memory by then (RoundTrip.Recycle; found in
// review). A call under way in fire itself holds the watch it loaded, which a watch
// whose timer ever called fire keeps from being recycled (calls).
type watchTimer struct {
	t *time.Timer
	w atomic.Pointer[idleWatch]
	// pending: a Stop found the timer fired, so a call of its func may not have run
	// yet (time.AfterFunc runs it on a goroutine of its own); such a timer is never
	// pooled (releaseLocked). Written under the holding watch's mu; release reads it
	// after taking the timer off the watch, when nothing else writes it.
	pending bool
}

// stop stops the timer and reports whether it stopped it before it fired; when it had
// fired, a call of its func may be pending, and the timer is marked so.
func (b *watchTimer) stop() bool {
	if b.t.Stop() && !b.pending {
		return true
	}
	b.pending = true
	return false
}

var watchTimers sync.Pool // of *watchTimer

func (b *watchTimer) fire() {
	if w := b.w.Load(); w != nil {
		w.fire()
	}
}

// startWatchTimer takes a timer from the pool for w and starts it for w.idle.
func startWatchTimer(w *idleWatch) *watchTimer {
	b, _ := watchTimers.Get().(*watchTimer)
	if b == nil {
		b = &watchTimer{}
		b.w.Store(w)
		b.t = time.AfterFunc(w.idle, b.fire)
		return b
	}
	b.w.Store(w)
	b.t.Reset(w.idle)
	return b
}

// activityBody is a request body whose reads count as activity for the idle watch.
type activityBody struct {
	io.ReadCloser
	w   *idleWatch
	gen uint64
}

func (a *activityBody) Read(p []byte) (int, error) {
	n, err := a.ReadCloser.Read(p)
	if n > 0 {
		a.w.touch(a.gen)
	}
	return n, err
}

// idleBody is a response body whose reads restart the idle watch.
type idleBody struct {
	io.ReadCloser
	w   *idleWatch
	gen uint64
}

func (b *idleBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.w.touch(b.gen)
	}
	return n, err
}

// canonicalName is http.CanonicalHeaderKey for the names the pipeline asks a response
// for on every request (retriableHead, the retry wait), without building the canonical
// string each time (for a lower-case name that is an allocation and a map lookup).
func canonicalName(name string) string {
	switch name {
	case "grpc-status":
		return "Grpc-Status"
	case "retry-after":
		return "Retry-After"
	}
	return http.CanonicalHeaderKey(name)
}
