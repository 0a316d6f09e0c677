package h2

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/internal/reqctx"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Transport is an http.RoundTripper speaking HTTP/2 with prior knowledge (h2c) to the
// address in each request's URL. Streams to one address share connections, up to the
// peer's SETTINGS_MAX_CONCURRENT_STREAMS each; when every connection is full another is
// dialled. It never retries by itself: a request the upstream did not process fails
// with an error wrapping ErrUnprocessed, for the caller's retry policy to decide.
type Transport struct {
	// Dial opens a connection to addr (required).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Limits of meshd's side of each connection; IdleTimeout closes idle connections.
	Limits   Limits
	Counters *Counters

	once  sync.Once
	lim   Limits
	mu    sync.Mutex
	pools map[string]*addrPool
	down  bool
	work  *workers
}

type addrPool struct {
	conns   []*clientConn
	dialing *dialCall
}

type dialCall struct {
	done chan struct{}
	err  error
}

// errNotUsable: the connection could not take the stream; nothing was sent.
var errNotUsable = errors.New("http2: connection not usable for a new stream")

func (t *Transport) setup() {
	t.once.Do(func() {
		t.lim = t.Limits.withDefaults()
		if t.Counters == nil {
			t.Counters = &Counters{}
		}
		t.pools = make(map[string]*addrPool)
		t.work = newWorkers()
	})
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.RoundTripContext(req.Context(), req)
}

// RoundTripContext is RoundTrip under ctx instead of req's context: a caller that
// sends the same request under a new context per attempt saves the request copy
// WithContext would make.
func (t *Transport) RoundTripContext(ctx context.Context, req *http.Request) (*http.Response, error) {
	t.setup()
	addr := req.URL.Host
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, "80")
	}
	for tries := 0; ; tries++ {
		cc, err := t.conn(ctx, addr)
		if err != nil {
			closeBody(req)
			return nil, err
		}
		resp, err := cc.roundTrip(ctx, req)
		if errors.Is(err, errNotUsable) && tries < 3 {
			continue
		}
		return resp, err
	}
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// conn returns a connection with a stream reserved for the caller.
func (t *Transport) conn(ctx context.Context, addr string) (*clientConn, error) {
	t.mu.Lock()
	if t.down {
		t.mu.Unlock()
		return nil, errors.New("http2: transport closed")
	}
	p := t.pools[addr]
	if p == nil {
		p = &addrPool{}
		t.pools[addr] = p
	}
	for {
		for _, cc := range p.conns {
			if cc.takeSlot() {
				t.mu.Unlock()
				return cc, nil
			}
		}
		if d := p.dialing; d != nil {
			t.mu.Unlock()
			select {
			case <-d.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if d.err != nil && ctx.Err() == nil && !errors.Is(d.err, context.Canceled) {
				return nil, d.err
			}
			t.mu.Lock()
			continue
		}
		d := &dialCall{done: make(chan struct{})}
		p.dialing = d
		t.mu.Unlock()
		cc, err := t.dial(ctx, addr)
		t.mu.Lock()
		p.dialing = nil
		d.err = err
		close(d.done)
		if err != nil {
			t.mu.Unlock()
			return nil, err
		}
		if t.down {
			t.mu.Unlock()
			cc.closeConn(ErrConnClosed, true, 0, http2.ErrCodeNo, "")
			return nil, errors.New("http2: transport closed")
		}
		p.conns = append(p.conns, cc)
	}
}

func (t *Transport) dial(ctx context.Context, addr string) (*clientConn, error) {
	nc, err := t.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	cc := &clientConn{t: t, addr: addr, nextID: 1}
	cc.init(nc, nil, t.lim, t.Counters)
	cc.side = cc
	cc.removeHook = cc.unreserveLocked
	lim := &cc.lim
	err = cc.write(func() error {
		cc.pend.b = append(cc.pend.b, clientPreface...)
		if err := cc.fr.WriteSettings(
			http2.Setting{ID: http2.SettingEnablePush, Val: 0},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(lim.StreamWindow)},
			http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: lim.MaxHeaderListSize},
		); err != nil {
			return err
		}
		return cc.fr.WriteWindowUpdate(0, uint32(lim.ConnWindow-initialWindow))
	})
	if err != nil {
		cc.closeConn(err, false, 0, 0, "")
		return nil, fmt.Errorf("http2: start of connection to %s: %w", addr, err)
	}
	cc.mu.Lock()
	cc.recvWin = lim.ConnWindow
	cc.mu.Unlock()
	if lim.IdleTimeout > 0 {
		cc.idle = time.AfterFunc(lim.IdleTimeout, cc.idleFired)
	}
	t.Counters.Conns.Add(1)
	go cc.readLoop()
	return cc, nil
}

// forget drops cc from its pool.
func (t *Transport) forget(cc *clientConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.pools[cc.addr]
	if p == nil {
		return
	}
	for i, c := range p.conns {
		if c == cc {
			p.conns = append(p.conns[:i], p.conns[i+1:]...)
			break
		}
	}
	if len(p.conns) == 0 && p.dialing == nil {
		delete(t.pools, cc.addr)
	}
}

// CloseIdleConnections closes the connections with no open stream, and marks the
// others to close when their streams are done.
func (t *Transport) CloseIdleConnections() {
	t.setup()
	t.mu.Lock()
	var all []*clientConn
	for _, p := range t.pools {
		all = append(all, p.conns...)
	}
	t.mu.Unlock()
	for _, cc := range all {
		cc.retire()
	}
}

// Close closes every connection and refuses new requests.
func (t *Transport) Close() {
	t.setup()
	t.mu.Lock()
	t.down = true
	t.mu.Unlock()
	t.CloseIdleConnections()
	t.work.stop()
}

// Conns is the number of open connections (all addresses).
func (t *Transport) Conns() int {
	t.setup()
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, p := range t.pools {
		n += len(p.conns)
	}
	return n
}

type clientConn struct {
	core
	t    *Transport
	addr string
	idle *time.Timer

	lastRead atomic.Int64 // when a frame last arrived (Unix nanoseconds)
	probing  atomic.Bool  // a liveness PING is out

	// (mu)
	nextID   uint32
	reserved int  // streams reserved or open
	goAway   bool // GOAWAY received, or retired: no new streams
	lastOK   uint32
}

// takeSlot takes a stream slot if the connection can carry one more.
func (cc *clientConn) takeSlot() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.closeErr != nil || cc.goAway || cc.nextID > maxStreamID-2 || uint32(cc.reserved) >= cc.peerMaxStreams {
		return false
	}
	cc.reserved++
	if cc.idle != nil {
		cc.idle.Stop()
	}
	return true
}

// unreserveLocked gives a slot back; mu is held.
func (cc *clientConn) unreserveLocked() {
	cc.reserved--
	if cc.reserved == 0 {
		if cc.goAway {
			go cc.closeConn(ErrConnClosed, false, 0, 0, "")
		} else if cc.idle != nil && cc.closeErr == nil {
			cc.idle.Reset(cc.lim.IdleTimeout)
		}
	}
}

// retire stops new streams; the connection closes when it has none.
func (cc *clientConn) retire() {
	cc.mu.Lock()
	cc.goAway = true
	idle := cc.reserved == 0
	cc.mu.Unlock()
	if idle {
		cc.closeConn(ErrConnClosed, true, 0, http2.ErrCodeNo, "")
	}
}

func (cc *clientConn) idleFired() {
	cc.mu.Lock()
	idle := cc.reserved == 0 && !cc.goAway
	if idle {
		cc.goAway = true
	}
	cc.mu.Unlock()
	if idle {
		cc.closeConn(ErrConnClosed, true, 0, http2.ErrCodeNo, "idle")
	}
}

// Liveness: a request given up (its deadline, or the client gone) on a connection that
// has been silent for probeSilence sends a PING; no frame within probeWait closes the
// connection, so a dead upstream (no RST, no FIN: a partition, a frozen host) stops
// taking new streams instead of failing each of them by its timeout.
const (
	probeSilence = time.Second
	probeWait    = 5 * time.Second
)

func (cc *clientConn) probe() {
	sent := time.Now()
	if sent.UnixNano()-cc.lastRead.Load() < int64(probeSilence) || !cc.probing.CompareAndSwap(false, true) {
		return
	}
	_ = cc.write(func() error { return cc.fr.WritePing(false, [8]byte{'m', 'e', 's', 'h', 'd'}) })
	time.AfterFunc(probeWait, func() {
		defer cc.probing.Store(false)
		if cc.lastRead.Load() < sent.UnixNano() {
			cc.closeConn(fmt.Errorf("%w: no frame from the upstream within %v of a PING", ErrConnClosed, probeWait), true, 0, http2.ErrCodeNo, "ping timeout")
		}
	})
}

// clientStream is one request and its response, allocated once.
type clientStream struct {
	stream
	cc      *clientConn
	req     *http.Request
	ctx     context.Context // the request's (RoundTripContext's)
	resp    http.Response
	body    responseBody
	gotHead bool // (mu)
	interim int  // interim (1xx) heads received; the reader goroutine's alone
}

// maxInterim bounds the interim (1xx) heads a stream takes before its final head, as
// internal/h1.MaxInterim does for HTTP/1.1 upstreams: they are dropped, but an upstream
// that sends them without end would hold the stream until its deadline.
const maxInterim = 16

func (cc *clientConn) roundTrip(ctx context.Context, req *http.Request) (*http.Response, error) {
	cs := &clientStream{cc: cc, req: req, ctx: ctx}
	st := &cs.stream
	hasBody := req.Body != nil && req.Body != http.NoBody
	ran := false
	err := cc.write(func() error {
		ran = true
		cc.mu.Lock()
		if cc.closeErr != nil || cc.goAway {
			cc.unreserveLocked()
			cc.mu.Unlock()
			return errNotUsable
		}
		id := cc.nextID
		cc.nextID += 2
		st.init(&cc.core, id)
		st.owner = cs
		st.onRemove = cc.removeHook
		st.localDone = !hasBody
		cc.streams[id] = st
		cc.live.Add(1)
		cc.streamsOpen.Add(1)
		cc.mu.Unlock()
		// With a body, the HEADERS wait for the flusher: the body's first DATA,
		// written by a goroutine started below, usually joins them in one write.
		cc.deferFlush = hasBody
		return cc.writeHeadersLocked(id, !hasBody, cs.encodeRequest)
	})
	if err != nil {
		if errors.Is(err, errNotUsable) {
			return nil, err
		}
		closeBody(req)
		if ran {
			cc.closeConn(err, false, 0, 0, "")
		} else {
			// The connection was already going down (closing, or a write found the peer
			// gone) and nothing of this request was sent: the connection's own close
			// error says why (a GOAWAY, the TLS alert that closed it), not this write.
			// It was never sent, so it is unprocessed: safe to send again elsewhere.
			cc.closeAfterReader(err)
			cc.mu.Lock()
			err = cc.closeErr
			cc.mu.Unlock()
			return nil, fmt.Errorf("http2: %w: the connection closed before the request was written: %w", ErrUnprocessed, err)
		}
		return nil, fmt.Errorf("http2: write request head: %w", err)
	}
	cc.cnt.Streams.Add(1)
	if rc, ok := ctx.(*reqctx.Ctx); ok {
		// The request path's own context: a hook in an inline slot, removed with the
		// stream (removeLocked), instead of context.AfterFunc's three allocations.
		cc.mu.Lock()
		if !st.removed {
			st.watch, st.watchID = rc, rc.Hook(cs.cancelled)
		}
		cc.mu.Unlock()
	} else if ctx.Done() != nil {
		cc.mu.Lock()
		if !st.removed {
			stop := context.AfterFunc(ctx, func() {
				cc.resetStream(st, http2.ErrCodeCancel, ctx.Err())
				cc.probe()
			})
			st.abort = func() { stop() }
		}
		cc.mu.Unlock()
	}
	if hasBody {
		cc.t.work.spawn(cs)
	}
	cc.mu.Lock()
	for !cs.gotHead && st.readErr == nil {
		st.cond.Wait()
	}
	if !cs.gotHead {
		err := st.readErr
		cc.mu.Unlock()
		return nil, err
	}
	cc.mu.Unlock()
	return &cs.resp, nil
}

// cancelled runs when the request's context ends: the stream is reset (CANCEL) and the
// connection probed. On a goroutine of its own, as context.AfterFunc would: the context
// may end under a lock of the caller's (a server stream's removal, say).
func (cs *clientStream) cancelled() {
	go func() {
		cs.cc.resetStream(&cs.stream, http2.ErrCodeCancel, cs.ctx.Err())
		cs.cc.probe()
	}()
}

// encodeRequest writes the request head (wmu held).
func (cs *clientStream) encodeRequest(e *hpackEncoder) {
	r := cs.req
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	scheme := r.URL.Scheme
	if scheme == "" {
		scheme = "http"
	}
	path := r.URL.RequestURI()
	_ = e.WriteField(hpack.HeaderField{Name: ":method", Value: r.Method})
	_ = e.WriteField(hpack.HeaderField{Name: ":scheme", Value: scheme})
	_ = e.WriteField(hpack.HeaderField{Name: ":authority", Value: host})
	_ = e.WriteField(hpack.HeaderField{Name: ":path", Value: path})
	encodeHeader(e, r.Header, nil)
	if _, ok := r.Header["Trailer"]; !ok && len(r.Trailer) > 0 {
		// Only the keys are read here: their values are filled when the body ends.
		// Announce the trailers: servers (net/http's among them) keep only announced ones.
		names := make([]byte, 0, 32)
		for k := range r.Trailer {
			lk := lower(k)
			if !validFieldName(lk) {
				continue // never sent either (encodeField)
			}
			if len(names) > 0 {
				names = append(names, ", "...)
			}
			names = append(names, lk...)
		}
		if len(names) > 0 {
			_ = e.WriteField(hpack.HeaderField{Name: "trailer", Value: string(names)})
		}
	}
	if _, ok := r.Header["Content-Length"]; !ok {
		switch {
		case r.ContentLength > 0:
			_ = e.WriteField(hpack.HeaderField{Name: "content-length", Value: strconv.FormatInt(r.ContentLength, 10)})
		case r.ContentLength == 0 && (r.Body == nil || r.Body == http.NoBody) &&
			(r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch):
			// A zero ContentLength with a body is an unknown length (net/http's rule for
			// client requests), not an empty body.
			_ = e.WriteField(hpack.HeaderField{Name: "content-length", Value: "0"})
		}
	}
}

func (cs *clientStream) run() { cs.writeBody() }

// writeBody streams the request body on a worker goroutine (the response may come
// first: gRPC bidirectional streams), within the windows; its trailers end it.
func (cs *clientStream) writeBody() {
	cc, st, req := cs.cc, &cs.stream, cs.req
	defer closeBody(req)
	bp := dataBufPool.Get().(*[]byte)
	defer dataBufPool.Put(bp)
	buf := *bp
	var sent int64
	for {
		n, rerr := req.Body.Read(buf)
		sent += int64(n)
		end := rerr == io.EOF || (req.ContentLength > 0 && sent == req.ContentLength && rerr == nil && len(req.Trailer) == 0)
		if rerr != nil && rerr != io.EOF {
			cc.resetStream(st, http2.ErrCodeCancel, rerr)
			return
		}
		trailers := end && hasTrailerValues(req.Trailer)
		if err := cs.sendData(buf[:n], end && !trailers); err != nil {
			return
		}
		if end {
			if trailers {
				if st.sendable() != nil {
					return // reset meanwhile: no HEADERS after the RST_STREAM
				}
				t := req.Trailer
				if err := cc.write(func() error {
					return cc.writeHeadersLocked(st.id, true, func(e *hpackEncoder) { encodeHeader(e, t, notTrailerField) })
				}); err != nil {
					return
				}
			}
			cc.mu.Lock()
			st.localDone = true
			if st.remoteDone {
				cc.removeLocked(st)
			}
			cc.mu.Unlock()
			return
		}
	}
}

func hasTrailerValues(h http.Header) bool {
	for _, v := range h {
		if len(v) > 0 {
			return true
		}
	}
	return false
}

// sendData writes p (and END_STREAM when end) within the windows.
func (cs *clientStream) sendData(p []byte, end bool) error {
	cc, st := cs.cc, &cs.stream
	if len(p) == 0 {
		if !end {
			return nil
		}
		if err := st.sendable(); err != nil {
			return err
		}
		return cc.write(func() error { return cc.fr.WriteData(st.id, true, nil) })
	}
	for len(p) > 0 {
		n, err := cc.reserve(st, len(p))
		if err != nil {
			return err
		}
		last := n == len(p)
		chunk := p[:n]
		if err := cc.write(func() error { return cc.writeDataLocked(st.id, chunk, end && last) }); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// responseBody is a response's body: the stream's received data.
type responseBody struct{ cs *clientStream }

func (b *responseBody) Read(p []byte) (int, error) {
	n, err := b.cs.stream.read(p)
	if err == io.EOF {
		st := &b.cs.stream
		st.c.mu.Lock()
		t := st.trailer
		st.trailer = nil
		st.c.mu.Unlock()
		if t != nil {
			r := &b.cs.resp
			if r.Trailer == nil {
				// The decoder made t for this block alone (only request blocks reuse a
				// map): it is the response's now, without a copy.
				r.Trailer = t
			} else {
				for k, v := range t {
					r.Trailer[k] = v
				}
			}
		}
	}
	return n, err
}

// Close abandons what is left of the response (RST_STREAM CANCEL).
func (b *responseBody) Close() error {
	st := &b.cs.stream
	cc := b.cs.cc
	cc.mu.Lock()
	done := st.remoteDone && st.localDone
	cc.mu.Unlock()
	if !done {
		cc.resetStream(st, http2.ErrCodeCancel, errors.New("http2: response body closed"))
	}
	return nil
}

func (cc *clientConn) readLoop() {
	defer cc.t.forget(cc)
	defer func() {
		if cc.idle != nil {
			cc.idle.Stop()
		}
	}()
	for {
		f, err := cc.fr.ReadFrame()
		cc.lastRead.Store(time.Now().UnixNano())
		if err == nil {
			err = cc.handle(f)
		}
		if err != nil && !cc.handleErr(err) {
			return
		}
	}
}

func (cc *clientConn) handleErr(err error) bool {
	var se http2.StreamError
	var ce http2.ConnectionError
	var mine *connError
	switch {
	case errors.As(err, &se):
		cc.cnt.StreamErrors.Add(1)
		cc.mu.Lock()
		st := cc.streams[se.StreamID]
		cc.mu.Unlock()
		if st != nil {
			cc.resetStream(st, se.Code, fmt.Errorf("http2: malformed response: %w", se))
		}
		return true
	case errors.As(err, &mine):
		if mine.isFl {
			cc.cnt.flood[mine.flood].Add(1)
		} else {
			cc.cnt.ProtocolErrors.Add(1)
		}
		cc.closeConn(fmt.Errorf("%w: %w", ErrConnClosed, mine), true, 0, mine.code, mine.why)
		return false
	case errors.As(err, &ce):
		cc.cnt.ProtocolErrors.Add(1)
		cc.closeConn(fmt.Errorf("%w: %w", ErrConnClosed, err), true, 0, http2.ErrCode(ce), "")
		return false
	case errors.Is(err, http2.ErrFrameTooLarge):
		cc.cnt.ProtocolErrors.Add(1)
		cc.closeConn(fmt.Errorf("%w: %w", ErrConnClosed, err), true, 0, http2.ErrCodeFrameSize, "")
		return false
	}
	cc.closeConn(fmt.Errorf("%w: %w", ErrConnClosed, err), false, 0, 0, "")
	return false
}

func (cc *clientConn) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.HeadersFrame:
		return cc.onHeaders(f)
	case *http2.DataFrame:
		return cc.onData(f)
	case *http2.SettingsFrame:
		return cc.handleSettings(f)
	case *http2.PingFrame:
		return cc.handlePing(f)
	case *http2.WindowUpdateFrame:
		st, err := cc.handleWindowUpdate(f)
		if st != nil && err != nil {
			cc.resetStream(st, http2.ErrCodeFlowControl, err)
			return nil
		}
		return err
	case *http2.RSTStreamFrame:
		cc.mu.Lock()
		st := cc.streams[f.StreamID]
		if st == nil {
			cc.mu.Unlock()
			return nil
		}
		var err error = &StreamError{Code: f.ErrCode, Remote: true}
		if f.ErrCode == http2.ErrCodeRefusedStream {
			err = fmt.Errorf("%w: stream refused (REFUSED_STREAM)", ErrUnprocessed)
		}
		st.failLocked(err)
		cc.removeLocked(st)
		cc.mu.Unlock()
		cc.consumed(nil, 0) // the stream's unread data, dropped
		return nil
	case *http2.PriorityFrame:
		return cc.handlePriority()
	case *http2.GoAwayFrame:
		return cc.onGoAway(f)
	case *http2.PushPromiseFrame:
		return protocolError("PUSH_PROMISE while push is disabled")
	}
	return nil
}

// onGoAway stops new streams on the connection and fails, as not processed, the
// streams above the last one the server took.
func (cc *clientConn) onGoAway(f *http2.GoAwayFrame) error {
	cc.cnt.GoAwayReceived.Add(1)
	cc.mu.Lock()
	cc.goAway = true
	cc.lastOK = f.LastStreamID
	for id, st := range cc.streams {
		if id > f.LastStreamID {
			st.failLocked(fmt.Errorf("%w: above the last stream id %d of the upstream's GOAWAY (%s)", ErrUnprocessed, f.LastStreamID, f.ErrCode))
			cc.removeLocked(st)
		}
	}
	idle := cc.reserved == 0
	cc.mu.Unlock()
	if idle {
		cc.closeConn(ErrConnClosed, false, 0, 0, "")
		return io.EOF
	}
	return nil
}

func (cc *clientConn) onHeaders(f *http2.HeadersFrame) error {
	cc.mu.Lock()
	st := cc.streams[f.StreamID]
	var cs *clientStream
	trailers := false
	if st != nil {
		cs = st.owner.(*clientStream)
		trailers = cs.gotHead
	}
	idle := f.StreamID%2 == 0 || f.StreamID >= cc.nextID
	cc.mu.Unlock()
	if err := cc.readHeaderBlock(f, true, trailers); err != nil {
		return err
	}
	if st == nil {
		if idle {
			return protocolError("HEADERS on idle stream %d", f.StreamID)
		}
		return nil
	}
	hb := &cc.hblock
	if hb.tooLarge {
		cc.cnt.HeaderTooLarge.Add(1)
		cc.resetStream(st, http2.ErrCodeProtocol, fmt.Errorf("http2: malformed response: header list over %d bytes or %d fields", cc.lim.MaxHeaderListSize, cc.lim.MaxHeaderFields))
		return nil
	}
	if trailers {
		if !f.StreamEnded() || hb.err != "" {
			cc.resetStream(st, http2.ErrCodeProtocol, errors.New("http2: malformed response trailers"))
			return nil
		}
		cc.mu.Lock()
		// Kept on the stream: the body's reader fills resp.Trailer when it reaches the
		// end (responseBody.Read), where readers of the map expect it.
		if len(hb.header) > 0 {
			st.trailer = hb.header
		}
		cc.endRemoteLocked(st)
		cc.mu.Unlock()
		return nil
	}
	status, ok := hb.checkResponse()
	if !ok {
		cc.resetStream(st, http2.ErrCodeProtocol, fmt.Errorf("http2: malformed response: %s", hb.err))
		return nil
	}
	if status < 200 {
		if status == http.StatusSwitchingProtocols || f.StreamEnded() {
			cc.resetStream(st, http2.ErrCodeProtocol, errors.New("http2: malformed response: 101 or a final 1xx"))
			return nil
		}
		if cs.interim++; cs.interim > maxInterim {
			cc.resetStream(st, http2.ErrCodeProtocol, fmt.Errorf("http2: more than %d interim (1xx) responses", maxInterim))
		}
		return nil // interim responses are not relayed on this path
	}
	r := &cs.resp
	r.Status = statusLine(status)
	r.StatusCode = status
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/2.0", 2, 0
	r.Header = hb.header
	if r.Header == nil {
		r.Header = make(http.Header)
	}
	r.Request = cs.req
	r.ContentLength = hb.contentLength
	if decl := r.Header["Trailer"]; len(decl) > 0 {
		r.Trailer = make(http.Header, 2)
		for _, d := range decl {
			for name := range splitComma(d) {
				r.Trailer[http.CanonicalHeaderKey(name)] = nil
			}
		}
		delete(r.Header, "Trailer")
	}
	cs.body.cs = cs
	r.Body = &cs.body
	cc.mu.Lock()
	st.declLen = hb.contentLength
	cs.gotHead = true
	if f.StreamEnded() {
		if st.declLen > 0 && cs.req.Method != http.MethodHead {
			cc.mu.Unlock()
			cc.resetStream(st, http2.ErrCodeProtocol, errors.New("http2: malformed response: content-length without DATA"))
			return nil
		}
		if r.ContentLength < 0 {
			r.ContentLength = 0
		}
		cc.endRemoteLocked(st)
	}
	st.cond.Broadcast()
	cc.mu.Unlock()
	return nil
}

// endRemoteLocked marks the response complete; mu is held. A request body still
// being sent is abandoned (RST_STREAM CANCEL): the response no longer needs it.
func (cc *clientConn) endRemoteLocked(st *stream) {
	st.remoteDone = true
	if st.readErr == nil {
		st.readErr = io.EOF
	}
	st.cond.Broadcast()
	if st.localDone {
		cc.removeLocked(st)
		return
	}
	st.sendErr = errors.New("http2: response complete before the request body")
	cc.rememberReset(st.id)
	cc.removeLocked(st)
	id := st.id
	go func() { _ = cc.write(func() error { return cc.fr.WriteRSTStream(id, http2.ErrCodeCancel) }) }()
}

func (cc *clientConn) onData(f *http2.DataFrame) error {
	data := f.Data()
	if !cc.noteEmpty(len(data) == 0 && !f.StreamEnded() && f.Length == 0) {
		return flood(FloodEmptyFrames, "empty DATA frames")
	}
	cc.mu.Lock()
	st := cc.streams[f.StreamID]
	var cs *clientStream
	if st != nil {
		cs = st.owner.(*clientStream)
	}
	if st == nil || st.remoteDone || !cs.gotHead {
		idle := f.StreamID >= cc.nextID
		if _, err := cc.acceptData(nil, f); err != nil {
			cc.mu.Unlock()
			return err
		}
		cc.recvUnacked += int32(f.Length)
		cc.mu.Unlock()
		cc.consumed(nil, 0)
		if idle {
			return protocolError("DATA on idle stream %d", f.StreamID)
		}
		if st != nil {
			cc.resetStream(st, http2.ErrCodeProtocol, errors.New("http2: malformed response: DATA before the head or after the end"))
		}
		return nil
	}
	pad, bad, err := cc.deliverData(st, f)
	if err != nil {
		return err
	}
	if bad {
		cc.resetStream(st, http2.ErrCodeProtocol, errors.New("http2: malformed response: body length differs from content-length"))
		return nil
	}
	if pad > 0 {
		cc.consumed(st, int(pad))
	}
	return nil
}

// splitComma yields the trimmed, non-empty elements of a comma-separated list.
func splitComma(s string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for len(s) > 0 {
			var part string
			if i := indexByte(s, ','); i >= 0 {
				part, s = s[:i], s[i+1:]
			} else {
				part, s = s, ""
			}
			part = trimSpace(part)
			if part != "" && !yield(part) {
				return
			}
		}
	}
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

func trimSpace(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// statusLines are the http.Response Status strings of the common codes, built once.
var statusLines = func() map[int]string {
	m := make(map[int]string)
	for _, c := range []int{200, 201, 202, 204, 206, 301, 302, 304, 307, 308, 400, 401, 403, 404,
		405, 408, 409, 410, 412, 413, 415, 422, 425, 429, 431, 500, 501, 502, 503, 504} {
		m[c] = strconv.Itoa(c) + " " + http.StatusText(c)
	}
	return m
}()

// statusLine is net/http's Status of a response with code c: "200 OK".
func statusLine(c int) string {
	if s, ok := statusLines[c]; ok {
		return s
	}
	return strconv.Itoa(c) + " " + http.StatusText(c)
}
