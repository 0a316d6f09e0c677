package forward

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/meshd/meshd/balancer"
	"github.com/meshd/meshd/proxy/state"
)

// Request mirroring (a route's action.mirror extension; docs/mirroring.md): a sampled
// request is copied to the mirror's cluster on a goroutine of its own and the copy's
// response read and discarded. The copy never touches the client's exchange: it is sent
// after the request was copied out of the connection's buffers, it is not retried, it
// takes no connection-pool slot and no retry budget, and its outcome reaches the mirror
// cluster's balancer (its in-flight count) but neither its outlier detection nor any
// breaker, so copies never eject an endpoint that also serves primaries. What it costs
// is paid only for sampled requests: a route without a mirror pays one nil check.

const (
	// DefaultMirrorMaxInFlight bounds the copies in flight to one mirror cluster; a
	// sampled request over it is not copied (skipped_overflow).
	DefaultMirrorMaxInFlight = 64
	// DefaultMirrorTimeout bounds a copy when neither its route nor the mirror's
	// listener sets a per-request timeout.
	DefaultMirrorTimeout = 10 * time.Second
)

// Mirrors sends the copies of a server's mirrored requests and owns their goroutines.
// The zero value is ready; Stop ends it.
type Mirrors struct {
	// MaxInFlight bounds the copies in flight per mirror cluster (0:
	// DefaultMirrorMaxInFlight).
	MaxInFlight int64
	// Draw is the sampling draw of a request, uniform over uint64 (nil: math/rand/v2).
	// Tests set it to sample deterministically.
	Draw func() uint64

	once    sync.Once
	ctx     context.Context
	cancel  context.CancelFunc
	mu      sync.Mutex // orders launches with Stop
	stopped bool
	wg      sync.WaitGroup
}

func (m *Mirrors) init() {
	m.once.Do(func() { m.ctx, m.cancel = context.WithCancel(context.Background()) })
}

// Stop cancels the copies in flight and waits for their goroutines; later samples are
// counted as failed. Called once the listeners have drained, before the clusters close.
func (m *Mirrors) Stop() {
	m.init()
	m.mu.Lock()
	m.stopped = true
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
}

func (m *Mirrors) maxInFlight() int64 {
	if m.MaxInFlight > 0 {
		return m.MaxInFlight
	}
	return DefaultMirrorMaxInFlight
}

// Shot is one sampled request's copy, waiting for its body.
type Shot struct {
	m       *Mirrors
	mi      *state.Mirror
	timeout time.Duration
}

// Take samples a resolved request for its route's mirror: nil when the route has none
// or the draw leaves the request out.
func (m *Mirrors) Take(d *Decision) *Shot {
	if d.Policy == nil {
		return nil
	}
	mi := d.Policy.Mirror()
	if mi == nil {
		return nil
	}
	var draw uint64
	if m.Draw != nil {
		draw = m.Draw()
	} else {
		draw = rand.Uint64()
	}
	if !mi.Sampled(draw) {
		return nil
	}
	timeout := d.Route.PerRequestTimeout
	if timeout == 0 {
		timeout, _ = mi.Cluster().Timeouts()
	}
	if timeout == 0 {
		timeout = DefaultMirrorTimeout
	}
	return &Shot{m: m, mi: mi, timeout: timeout}
}

// Skip counts a sampled request whose body was not kept whole (streamed, over the
// replay bound, an upgrade): it is not copied.
func (s *Shot) Skip() { s.mi.Stats().SkippedBody.Add(1) }

// ShadowHost is the authority of a copy: Envoy's rule, "-shadow" appended to the host
// before any port ("orders:8080" → "orders-shadow:8080"), so the mirror target (and its
// logs) can tell copies from primaries.
func ShadowHost(authority string) string {
	host, port := authority, ""
	for i := len(authority) - 1; i >= 0; i-- {
		c := authority[i]
		if c == ':' {
			if i > 0 && (authority[0] != '[' || authority[i-1] == ']') {
				host, port = authority[:i], authority[i:]
			}
			break
		}
		if c < '0' || c > '9' {
			break
		}
	}
	return host + "-shadow" + port
}

// Send copies the request: method, request target, header (the forwarding rules already
// applied), body. All of them are borrowed (the HTTP/1.1 fast path's strings alias the
// connection's buffer) and copied here. The copy is sent on a goroutine of its own
// unless the mirror cluster has its bound of copies in flight.
func (s *Shot) Send(method, pathQuery, authority string, hdr http.Header, body []byte) {
	var own []byte
	if len(body) > 0 {
		own = bytes.Clone(body)
	}
	s.launch(ownHead(method, pathQuery, authority, hdr), own)
}

// copyHead is a copy's request head, owned by the copy.
type copyHead struct {
	method, path, authority string
	hdr                     http.Header
}

// ownHead deep-copies a request head: its strings may alias a buffer that the next
// request reuses.
func ownHead(method, pathQuery, authority string, hdr http.Header) copyHead {
	h := make(http.Header, len(hdr))
	for k, vs := range hdr {
		if k == "Host" {
			continue // the copy's authority is the shadow one
		}
		c := make([]string, len(vs))
		for i, v := range vs {
			c[i] = strings.Clone(v)
		}
		h[strings.Clone(k)] = c
	}
	return copyHead{strings.Clone(method), strings.Clone(pathQuery), ShadowHost(authority), h}
}

// launch sends the copy on a goroutine of its own within the bound; head and body are
// its own.
func (s *Shot) launch(head copyHead, body []byte) {
	mi := s.mi
	if !mi.Acquire(s.m.maxInFlight()) {
		mi.Stats().SkippedOverflow.Add(1)
		return
	}
	s.m.init()
	s.m.mu.Lock()
	if s.m.stopped {
		s.m.mu.Unlock()
		mi.Release()
		mi.Stats().Failed.Add(1)
		return
	}
	s.m.wg.Add(1)
	s.m.mu.Unlock()
	go func() {
		defer s.m.wg.Done()
		defer mi.Release()
		if s.send(head, body) {
			mi.Stats().Sent.Add(1)
		} else {
			mi.Stats().Failed.Add(1)
		}
	}()
}

// SendKept copies the request of x once its body is known to be whole: at once when it
// is (or there is none); when it is still streaming, it reports false unless final, so
// the caller can try again when the exchange is over; final gives up (skipped_body).
func (s *Shot) SendKept(x *RoundTrip, head copyHead, final bool) bool {
	body, whole, pending := x.keptBody()
	switch {
	case whole:
		s.launch(head, body)
	case pending && !final:
		return false
	default:
		s.Skip()
	}
	return true
}

// send makes the copy's exchange: one attempt on an endpoint of the mirror cluster,
// bounded by the timeout, the response read to its end and dropped. It reports whether
// a response came back.
func (s *Shot) send(head copyHead, body []byte) bool {
	cl := s.mi.Cluster()
	res, err := cl.Pick(nil)
	if err != nil {
		return false
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(s.m.ctx, s.timeout)
	defer cancel()
	var rd io.ReadCloser
	if len(body) > 0 {
		rd = io.NopCloser(bytes.NewReader(body))
	}
	req := OutRequest(head.method, head.path, head.authority, head.hdr, rd, int64(len(body)), nil).WithContext(ctx)
	req.URL.Host = res.Endpoint.Address
	if len(body) > 0 {
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	resp, err := cl.RoundTripper().RoundTrip(req)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
	info := balancer.DoneInfo{Err: err, Latency: time.Since(start)}
	if resp != nil {
		info.Status = resp.StatusCode
	}
	res.Done(info)
	return err == nil
}

// keptBody is the request body when the pipeline kept it whole (a copy, the caller's
// own), whole false when it was not; pending reports a body still streaming within the
// replay bound, which may yet turn out whole.
func (r *RoundTrip) keptBody() (body []byte, whole, pending bool) {
	if r.bodyless {
		return nil, true, false
	}
	rb := r.rb
	rb.mu.Lock()
	defer rb.mu.Unlock()
	switch {
	case rb.overflow:
		return nil, false, false
	case rb.srcErr == io.EOF,
		// A transport that writes a sized body reads exactly its length, not its EOF.
		r.Out.ContentLength > 0 && int64(len(rb.buf)) == r.Out.ContentLength:
		return bytes.Clone(rb.buf), true, false
	case rb.srcErr != nil:
		return nil, false, false // the client failed to send it
	}
	return nil, false, true
}

// Pending is a sampled request that goes through a RoundTrip (the HTTP/2 front end,
// the HTTP/1.1 bridge): its head is copied before the exchange, its body taken from
// what the pipeline kept of it once that is known to be whole. Its methods do nothing
// on nil, so a front end calls them whether or not the request was sampled.
type Pending struct {
	shot *Shot
	head copyHead
	done bool
}

// TakeRoundTrip samples a resolved request as Take does; the head is copied here,
// before the exchange can change it (hdr: the upstream header, forwarding rules
// applied).
func (m *Mirrors) TakeRoundTrip(d *Decision, method, pathQuery, authority string, hdr http.Header) *Pending {
	s := m.Take(d)
	if s == nil {
		return nil
	}
	return &Pending{shot: s, head: ownHead(method, pathQuery, authority, hdr)}
}

// Try sends the copy when x's body is whole already (at the response head).
func (p *Pending) Try(x *RoundTrip) {
	if p != nil && !p.done {
		p.done = p.shot.SendKept(x, p.head, false)
	}
}

// Finish sends the copy when x's body turned out whole, else counts it skipped; at the
// end of the exchange.
func (p *Pending) Finish(x *RoundTrip) {
	if p != nil && !p.done {
		p.done = p.shot.SendKept(x, p.head, true)
	}
}

// Abandon counts the copy skipped: the client failed to deliver the body.
func (p *Pending) Abandon() {
	if p != nil && !p.done {
		p.done = true
		p.shot.Skip()
	}
}
