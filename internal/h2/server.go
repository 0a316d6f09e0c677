package h2

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/internal/reqctx"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Server serves HTTP/2 connections, each request through Handler on its own goroutine
// (ServeHTTPContext when Handler is a ContextHandler).
type Server struct {
	Handler  http.Handler
	Limits   Limits
	Counters *Counters
	Log      *slog.Logger
	// LocalReply answers a request the server refuses itself (431: header list past
	// the limits; 400: unparsable :path); nil: a plain-text answer.
	LocalReply func(w http.ResponseWriter, r *http.Request, status int)

	once  sync.Once
	lim   Limits
	mu    sync.Mutex
	conns map[*serverConn]struct{}
	down  bool
	work  *workers
	empty chan struct{} // closed when the last connection ends during Shutdown
}

// ContextHandler is a Handler that takes the request's context beside the request: the
// server hands it the stream's own request, whose Context is then the background one,
// instead of the copy WithContext would make per request.
type ContextHandler interface {
	ServeHTTPContext(ctx context.Context, w http.ResponseWriter, r *http.Request)
}

// ConnInfo describes the downstream connection for the requests' fields.
type ConnInfo struct {
	RemoteAddr string
	TLS        *tls.ConnectionState
	// FirstRequestBy is when the client must have sent its preface, its SETTINGS and a
	// first complete HEADERS block (HAProxy's timeout http-request, counted from accept
	// by the caller); zero: DefaultFirstRequestTimeout from now. A connection past it is
	// sent GOAWAY and closed, and FirstRequestTimeouts (when set) counts it.
	FirstRequestBy       time.Time
	FirstRequestTimeouts *atomic.Uint64
}

// DefaultFirstRequestTimeout bounds the wait for a connection's first request when the
// caller sets no FirstRequestBy: a client that sends nothing must not hold a connection.
const DefaultFirstRequestTimeout = 10 * time.Second

func (s *Server) setup() {
	s.once.Do(func() {
		s.lim = s.Limits.withDefaults()
		if s.Counters == nil {
			s.Counters = &Counters{}
		}
		if s.Log == nil {
			s.Log = slog.New(slog.DiscardHandler)
		}
		s.conns = make(map[*serverConn]struct{})
		s.work = newWorkers()
	})
}

// ServeConn serves nc until it closes; br holds bytes already read from it (the
// client preface, at least in part), or is nil. ctx is the base of every request's
// context; it ending closes the connection.
func (s *Server) ServeConn(ctx context.Context, nc net.Conn, br *bufio.Reader, info ConnInfo) {
	s.setup()
	sc := &serverConn{srv: s, info: info}
	sc.init(nc, br, s.lim, s.Counters)
	sc.linger = true
	sc.side = sc
	sc.removeHook = sc.onRemove
	sc.ctx.Init(ctx)
	defer sc.ctx.Cancel()
	s.mu.Lock()
	if s.down {
		s.mu.Unlock()
		sc.hardClose.Store(true) // no reader runs to end a linger
		sc.closeConn(ErrConnClosed, false, 0, 0, "")
		return
	}
	s.conns[sc] = struct{}{}
	s.mu.Unlock()
	s.Counters.Conns.Add(1)
	sc.serve()
	s.mu.Lock()
	delete(s.conns, sc)
	if s.down && len(s.conns) == 0 && s.empty != nil {
		close(s.empty)
		s.empty = nil
	}
	s.mu.Unlock()
}

// Shutdown sends GOAWAY on every connection, lets open streams finish, and waits for
// the connections to close until ctx ends, then closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.setup()
	s.mu.Lock()
	s.down = true
	var done chan struct{}
	if len(s.conns) > 0 {
		done = make(chan struct{})
		s.empty = done
	}
	conns := s.snapshot()
	s.mu.Unlock()
	for _, sc := range conns {
		sc.goAway(http2.ErrCodeNo, "shutdown")
	}
	if done == nil {
		s.work.stop()
		return nil
	}
	select {
	case <-done:
		s.work.stop()
		return nil
	case <-ctx.Done():
		_ = s.Close()
		return ctx.Err()
	}
}

// Close closes every connection at once.
func (s *Server) Close() error {
	s.setup()
	s.mu.Lock()
	s.down = true
	conns := s.snapshot()
	s.mu.Unlock()
	for _, sc := range conns {
		sc.hardClose.Store(true)
		sc.closeConn(ErrConnClosed, true, sc.lastID(), http2.ErrCodeNo, "closed")
		// A connection closed before (lingering, or flushing) ends now too.
		_ = sc.nc.Close()
	}
	s.work.stop()
	return nil
}

// GoAway sends GOAWAY to the connections whose base context match accepts: their open
// streams finish, new ones are not taken, and each closes when it has none.
func (s *Server) GoAway(match func(ctx context.Context) bool) int {
	s.setup()
	s.mu.Lock()
	conns := s.snapshot()
	s.mu.Unlock()
	n := 0
	for _, sc := range conns {
		if match(&sc.ctx) {
			sc.goAway(http2.ErrCodeNo, "listener removed")
			n++
		}
	}
	return n
}

// Conns is the number of open connections.
func (s *Server) Conns() int {
	s.setup()
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *Server) snapshot() []*serverConn {
	out := make([]*serverConn, 0, len(s.conns))
	for sc := range s.conns {
		out = append(out, sc)
	}
	return out
}

// peerGoAwayLinger is how long an idle connection whose client sent GOAWAY stays open.
const peerGoAwayLinger = time.Second

type serverConn struct {
	core
	srv  *Server
	info ConnInfo
	ctx  reqctx.Ctx // the base of every stream's; ends when the connection does

	maxClientID uint32 // reader; read under mu by goAway
	goingAway   bool   // (mu) GOAWAY sent: no new streams
	// opening (mu) is set while the reader has taken a stream id (maxClientID) and not
	// yet registered its stream or refused it: a GOAWAY sent meanwhile announces the
	// stream as taken, so the connection must not close as idle under it.
	opening    bool
	goAwayID   uint32 // (mu)
	peerGoAway bool   // (mu)
	idle       *time.Timer
	handlers   sync.WaitGroup
	// free (mu) holds finished streams for the reader's next ones: a stream is a 1 KiB
	// allocation per request, and what the collector spends grows with the bytes
	// allocated (issue 12). Only this connection's reader takes them, between frames,
	// so no reader still holds a stream it looked up when it is reused.
	free []*serverStream
	// hdrFree (mu) holds request header maps their handlers gave back (ReleaseHeader),
	// emptied, for the reader's next request blocks (headerBlock.spare).
	hdrFree []http.Header
}

// maxFreeStreams bounds a connection's free streams (its concurrency limit's default).
const maxFreeStreams = 100

func (sc *serverConn) lastID() uint32 {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.maxClientID
}

// goAway starts a graceful close: GOAWAY with the last stream meshd took, then close
// once the open streams are done.
func (sc *serverConn) goAway(code http2.ErrCode, debug string) {
	sc.mu.Lock()
	if sc.goingAway || sc.closeErr != nil {
		sc.mu.Unlock()
		return
	}
	sc.goingAway = true
	sc.goAwayID = sc.maxClientID
	last := sc.goAwayID
	idle := len(sc.streams) == 0 && !sc.opening
	sc.mu.Unlock()
	sc.cnt.GoAwaySent.Add(1)
	_ = sc.writeNow(func() error { return sc.fr.WriteGoAway(last, code, []byte(debug)) })
	if idle {
		sc.closeConn(ErrConnClosed, false, 0, 0, "")
	}
}

func (sc *serverConn) serve() {
	defer func() {
		// The reader is done: a lingering close ends here (closeConn only half-closed),
		// and any other close too, before the wait for handlers that may not watch
		// their context.
		_ = sc.nc.Close()
		sc.handlers.Wait()
		if sc.idle != nil {
			sc.idle.Stop()
		}
	}()
	stop := context.AfterFunc(&sc.ctx, func() {
		sc.closeConn(ErrConnClosed, true, sc.lastID(), http2.ErrCodeNo, "closed")
	})
	defer stop()
	// The preface, then our SETTINGS and the connection window.
	// Until the first request's header block is complete, the read deadline is the
	// first-request deadline: a client that sends half a preface or half a HEADERS block
	// (or only SETTINGS and PINGs) must not hold the connection for the idle timeout.
	firstBy := sc.info.FirstRequestBy
	if firstBy.IsZero() {
		firstBy = time.Now().Add(DefaultFirstRequestTimeout)
	}
	_ = sc.nc.SetReadDeadline(firstBy)
	if sc.isClosed() {
		// closeConn ran already (a drain): its linger deadline, not the first request's.
		_ = sc.nc.SetReadDeadline(time.Now().Add(lingerTimeout))
	}
	var pre [len(clientPreface)]byte
	if _, err := io.ReadFull(sc.br, pre[:]); err != nil || string(pre[:]) != clientPreface {
		if sc.isClosed() {
			return // the linger's end, or a preface read after the close: not the client's fault
		}
		if isTimeout(err) {
			sc.firstRequestTimeout(err)
			return
		}
		sc.closeConn(errors.New("http2: bad client preface"), true, 0, http2.ErrCodeProtocol, "bad client preface")
		return
	}
	lim := &sc.lim
	sc.writeLazy(func() error {
		if err := sc.fr.WriteSettings(
			http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: lim.MaxConcurrentStreams},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(lim.StreamWindow)},
			http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: lim.MaxHeaderListSize},
		); err != nil {
			return err
		}
		return sc.fr.WriteWindowUpdate(0, uint32(lim.ConnWindow-initialWindow))
	})
	sc.mu.Lock()
	sc.recvWin = lim.ConnWindow
	sc.mu.Unlock()
	if lim.IdleTimeout > 0 {
		sc.idle = time.AfterFunc(lim.IdleTimeout, sc.idleFired)
	}
	first, waiting, lingering := true, true, false
	for {
		if !lingering && sc.isClosed() {
			// closeConn ran (and half-closed: core.linger). Its read deadline may have
			// been cleared since by this reader's handling of a frame read before.
			lingering = true
			_ = sc.nc.SetReadDeadline(time.Now().Add(lingerTimeout))
		}
		f, err := sc.fr.ReadFrame()
		if lingering || sc.isClosed() {
			// What the peer sends after the close is discarded, unanswered, until it
			// closes too or the deadline passes.
			if err != nil {
				return
			}
			continue
		}
		if first && err == nil {
			if _, ok := f.(*http2.SettingsFrame); !ok {
				err = protocolError("first frame is not SETTINGS")
			}
			first = false
		}
		if err == nil {
			err = sc.handle(f)
			// handle read the whole header block (CONTINUATIONs included): the first
			// request is in, and the idle timeout governs the connection from now on.
			if _, ok := f.(*http2.HeadersFrame); ok && waiting && err == nil {
				waiting = false
				_ = sc.nc.SetReadDeadline(time.Time{})
			}
		}
		if err != nil && waiting && isTimeout(err) {
			sc.firstRequestTimeout(err)
			return
		}
		if err != nil && !sc.handleErr(err) {
			return
		}
	}
}

// firstRequestTimeout ends a connection whose first request did not arrive in time:
// GOAWAY (no stream was accepted, so last stream 0) and close.
func (sc *serverConn) firstRequestTimeout(err error) {
	if c := sc.info.FirstRequestTimeouts; c != nil {
		c.Add(1)
	}
	sc.srv.Log.Debug("http2: first request timeout", "remote", sc.info.RemoteAddr)
	sc.closeConn(fmt.Errorf("%w: first request timeout: %w", ErrConnClosed, err), true, 0, http2.ErrCodeNo, "first request timeout")
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// handleErr deals with a read or handling error; false ends the connection.
func (sc *serverConn) handleErr(err error) bool {
	var se http2.StreamError
	var ce http2.ConnectionError
	var mine *connError
	switch {
	case errors.As(err, &se):
		sc.cnt.StreamErrors.Add(1)
		sc.resetID(se.StreamID, se.Code, &StreamError{Code: se.Code, Cause: se})
		return true
	case errors.As(err, &mine):
		if mine.isFl {
			sc.cnt.flood[mine.flood].Add(1)
			sc.srv.Log.Warn("http2: connection closed by a flood defence", "defence", mine.flood.String(), "remote", sc.info.RemoteAddr, "why", mine.why)
		} else {
			sc.cnt.ProtocolErrors.Add(1)
			sc.srv.Log.Debug("http2: connection error", "remote", sc.info.RemoteAddr, "err", mine)
		}
		sc.closeConn(mine, true, sc.lastID(), mine.code, mine.why)
		return false
	case errors.As(err, &ce):
		sc.cnt.ProtocolErrors.Add(1)
		sc.closeConn(err, true, sc.lastID(), http2.ErrCode(ce), "")
		return false
	case errors.Is(err, http2.ErrFrameTooLarge):
		sc.cnt.ProtocolErrors.Add(1)
		sc.closeConn(err, true, sc.lastID(), http2.ErrCodeFrameSize, "frame too large")
		return false
	}
	sc.closeConn(fmt.Errorf("%w: %w", ErrConnClosed, err), false, 0, 0, "")
	return false
}

// resetID resets stream id (RST_STREAM), ending its handler's request if it runs.
func (sc *serverConn) resetID(id uint32, code http2.ErrCode, err error) {
	sc.mu.Lock()
	st := sc.streams[id]
	sc.mu.Unlock()
	if st != nil {
		sc.resetStream(st, code, err)
		return
	}
	sc.mu.Lock()
	sc.rememberReset(id)
	sc.mu.Unlock()
	_ = sc.write(func() error { return sc.fr.WriteRSTStream(id, code) })
}

func (sc *serverConn) idleFired() {
	sc.mu.Lock()
	idle := len(sc.streams) == 0 && !sc.opening
	sc.mu.Unlock()
	if idle {
		sc.goAway(http2.ErrCodeNo, "idle timeout")
	} else {
		sc.idle.Reset(sc.lim.IdleTimeout)
	}
}

func (sc *serverConn) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.HeadersFrame:
		return sc.onHeaders(f)
	case *http2.DataFrame:
		return sc.onData(f)
	case *http2.SettingsFrame:
		return sc.handleSettings(f)
	case *http2.PingFrame:
		return sc.handlePing(f)
	case *http2.WindowUpdateFrame:
		if f.StreamID > sc.maxClientID {
			return protocolError("WINDOW_UPDATE on idle stream %d", f.StreamID)
		}
		st, err := sc.handleWindowUpdate(f)
		if st != nil && err != nil {
			sc.resetStream(st, http2.ErrCodeFlowControl, err)
			return nil
		}
		return err
	case *http2.RSTStreamFrame:
		return sc.onReset(f)
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			sc.cnt.StreamErrors.Add(1)
			sc.resetID(f.StreamID, http2.ErrCodeProtocol, errors.New("stream depends on itself"))
			return nil
		}
		return sc.handlePriority()
	case *http2.GoAwayFrame:
		sc.cnt.GoAwayReceived.Add(1)
		sc.mu.Lock()
		sc.peerGoAway = true
		sc.mu.Unlock()
		// The client opens no more streams; the open ones finish (onRemove closes the
		// connection after the last). An idle connection stays a moment for frames in
		// flight (a PING the client sent after its GOAWAY is still answered).
		time.AfterFunc(peerGoAwayLinger, func() {
			sc.mu.Lock()
			idle := len(sc.streams) == 0 && !sc.opening
			sc.mu.Unlock()
			if idle {
				sc.closeConn(ErrConnClosed, false, 0, 0, "")
			}
		})
		return nil
	case *http2.PushPromiseFrame:
		return protocolError("PUSH_PROMISE from a client")
	case *http2.ContinuationFrame:
		return protocolError("CONTINUATION out of a header block")
	}
	return nil // unknown frame types are ignored (RFC 9113 §5.5)
}

func (sc *serverConn) onHeaders(f *http2.HeadersFrame) error {
	id := f.StreamID
	if id%2 == 0 {
		// Decode anyway: an error must not lose the shared HPACK state... but an even
		// stream id from a client is a connection error (RFC 9113 §5.1.1).
		return protocolError("client stream id %d is even", id)
	}
	sc.mu.Lock()
	st := sc.streams[id]
	if n := len(sc.hdrFree); n > 0 && sc.hblock.spare == nil {
		sc.hblock.spare = sc.hdrFree[n-1]
		sc.hdrFree[n-1] = nil
		sc.hdrFree = sc.hdrFree[:n-1]
	}
	sc.mu.Unlock()
	if st != nil || id <= sc.maxClientID {
		if err := sc.readHeaderBlock(f, false, true); err != nil {
			return err
		}
		if st == nil {
			sc.mu.Lock()
			late := sc.wasReset(id)
			sc.mu.Unlock()
			if late {
				return nil // a frame in flight when meshd reset the stream
			}
			return &connError{code: http2.ErrCodeStreamClosed, why: fmt.Sprintf("HEADERS on closed stream %d", id)}
		}
		return sc.onTrailers(st, f)
	}
	if err := sc.readHeaderBlock(f, false, false); err != nil {
		return err
	}
	hb := &sc.hblock
	// The id is taken and the GOAWAY state read under one lock: a concurrent GOAWAY
	// (shutdown, idle timeout, removed listener) either comes first and leaves this
	// stream above its last stream id, or announces the stream as taken, and then
	// opening keeps the connection open until the stream is registered (or refused).
	sc.mu.Lock()
	sc.maxClientID = id
	going := sc.goingAway || sc.closeErr != nil
	n := sc.active
	sc.opening = !going
	sc.mu.Unlock()
	if going {
		return nil // above the GOAWAY's last stream id: ignored, the client retries it
	}
	reject := func(code http2.ErrCode, err error) error {
		sc.resetID(id, code, err)
		sc.opened()
		return nil
	}
	if f.HasPriority() && f.Priority.StreamDep == id {
		sc.cnt.StreamErrors.Add(1)
		return reject(http2.ErrCodeProtocol, errors.New("stream depends on itself"))
	}
	hb.checkRequest()
	if hb.err != "" {
		sc.cnt.StreamErrors.Add(1)
		return reject(http2.ErrCodeProtocol, errors.New(hb.err))
	}
	if uint32(n) >= sc.lim.MaxConcurrentStreams {
		sc.cnt.RefusedStreams.Add(1)
		return reject(http2.ErrCodeRefusedStream, errors.New("concurrent stream limit"))
	}
	if f.StreamEnded() && hb.contentLength > 0 {
		sc.cnt.StreamErrors.Add(1)
		return reject(http2.ErrCodeProtocol, errors.New("content-length without DATA"))
	}
	ss := sc.newStream(id, f.StreamEnded()) // ends opening
	if ss == nil {
		return nil // the connection closed meanwhile
	}
	sc.streamsOpen.Add(1)
	sc.cnt.Streams.Add(1)
	sc.handlers.Add(1)
	sc.srv.work.spawn(ss)
	if sc.br.Buffered() == 0 {
		// The next read most likely finds the socket empty (EAGAIN) and parks this
		// goroutine: yielding first lets the handler send the request upstream before
		// that syscall instead of after it (at low load, where a request is alone on
		// its connection, it was on every request's path).
		runtime.Gosched()
	}
	return nil
}

// onTrailers ends st's request with a trailer block.
func (sc *serverConn) onTrailers(st *stream, f *http2.HeadersFrame) error {
	hb := &sc.hblock
	sc.mu.Lock()
	remoteDone := st.remoteDone
	sc.mu.Unlock()
	switch {
	case remoteDone:
		// Half-closed (remote) or, when the response is just out, closed: either way a
		// connection error is what RFC 9113 §5.1 allows for both.
		return &connError{code: http2.ErrCodeStreamClosed, why: fmt.Sprintf("HEADERS after END_STREAM on stream %d", st.id)}
	case !f.StreamEnded():
		sc.cnt.StreamErrors.Add(1)
		sc.resetStream(st, http2.ErrCodeProtocol, &StreamError{Code: http2.ErrCodeProtocol, Cause: errors.New("trailers without END_STREAM")})
		return nil
	case hb.err != "" || hb.tooLarge:
		sc.cnt.StreamErrors.Add(1)
		sc.resetStream(st, http2.ErrCodeProtocol, &StreamError{Code: http2.ErrCodeProtocol, Cause: errors.New("malformed trailers")})
		return nil
	}
	sc.mu.Lock()
	if st.declLen >= 0 && st.gotLen != st.declLen {
		sc.mu.Unlock()
		sc.resetStream(st, http2.ErrCodeProtocol, &StreamError{Code: http2.ErrCodeProtocol, Cause: errors.New("body shorter than content-length")})
		return nil
	}
	// Kept on the stream: the request's Trailer map is filled by the body's reader when
	// it reaches the end (requestBody.Read), where readers of the map expect it.
	if len(hb.header) > 0 {
		st.trailer = hb.header
	}
	sc.endRemoteLocked(st)
	sc.mu.Unlock()
	return nil
}

// endRemoteLocked marks the request complete; mu is held.
func (sc *serverConn) endRemoteLocked(st *stream) {
	st.remoteDone = true
	if st.readErr == nil {
		st.readErr = io.EOF
	}
	st.cond.Broadcast()
	if st.localDone {
		sc.removeLocked(st)
	}
}

func (sc *serverConn) onData(f *http2.DataFrame) error {
	id := f.StreamID
	data := f.Data()
	if !sc.noteEmpty(len(data) == 0 && !f.StreamEnded() && f.Length == 0) {
		return flood(FloodEmptyFrames, "empty DATA frames")
	}
	sc.mu.Lock()
	st := sc.streams[id]
	if st == nil || st.remoteDone {
		if id > sc.maxClientID {
			sc.mu.Unlock()
			return protocolError("DATA on idle stream %d", id)
		}
		if _, err := sc.acceptData(nil, f); err != nil {
			sc.mu.Unlock()
			return err
		}
		sc.recvUnacked += int32(f.Length)
		ignore := st == nil && sc.wasReset(id)
		sc.mu.Unlock()
		sc.consumed(nil, 0)
		if !ignore {
			sc.resetID(id, http2.ErrCodeStreamClosed, errors.New("DATA on a closed stream"))
		}
		return nil
	}
	pad, bad, err := sc.deliverData(st, f)
	if err != nil {
		return err
	}
	if bad {
		sc.cnt.StreamErrors.Add(1)
		sc.resetStream(st, http2.ErrCodeProtocol, &StreamError{Code: http2.ErrCodeProtocol, Cause: errors.New("body length differs from content-length")})
		return nil
	}
	if pad > 0 {
		sc.creditPadding(st, pad)
	}
	return nil
}

// creditPadding returns at once the window that padding used (it is never read).
func (sc *serverConn) creditPadding(st *stream, pad int32) { sc.consumed(st, int(pad)) }

func (sc *serverConn) onReset(f *http2.RSTStreamFrame) error {
	if f.StreamID > sc.maxClientID {
		return protocolError("RST_STREAM on idle stream %d", f.StreamID)
	}
	sc.mu.Lock()
	st := sc.streams[f.StreamID]
	if st == nil {
		sc.mu.Unlock()
		return nil
	}
	if !st.responded {
		sc.resets++
	}
	st.failLocked(&StreamError{Code: f.ErrCode, Remote: true})
	sc.removeLocked(st)
	defer sc.consumed(nil, 0) // the stream's unread data, dropped
	opened := sc.streamsOpen.Load()
	rapid := opened >= int64(sc.lim.RapidResetStreams) && sc.resets*2 >= opened
	sc.mu.Unlock()
	if ss, ok := st.owner.(*serverStream); ok {
		ss.ctx.Cancel()
	}
	if rapid {
		return flood(FloodRapidReset, fmt.Sprintf("%d of %d streams reset before their response", sc.resets, opened))
	}
	return nil
}

// serverStream is a request and its response, allocated once per stream.
type serverStream struct {
	stream
	sc    *serverConn
	req   http.Request
	rw    responseWriter
	body  requestBody
	ctx   reqctx.Ctx
	local int     // 0, or a status meshd answers itself (431: header list too large)
	url   url.URL // req.URL's storage, for the common :path (plainPath)
	// fields is the number of regular fields the request's header map was filled with
	// (what its size follows; deletes since then shrink its length, not its size).
	fields int
	hop    bool // the request has a hop-by-hop field (headerBlock.hop)
}

// newStream builds stream id's request and registers the stream; nil when the
// connection closed meanwhile.
func (sc *serverConn) newStream(id uint32, ended bool) *serverStream {
	hb := &sc.hblock
	ss := sc.takeFree()
	ss.sc = sc
	st := &ss.stream
	st.init(&sc.core, id)
	st.owner = ss
	st.declLen = hb.contentLength
	st.remoteDone = ended
	if ended {
		st.readErr = io.EOF
	}
	st.onRemove = sc.removeHook
	ss.fields, ss.hop = hb.fields, hb.hop
	// Streams link into the connection's context without a map or a shared lock
	// (reqctx); the attempts of forward.RoundTrip link into the stream's.
	ss.ctx.Init(&sc.ctx)
	st.cancel = &ss.ctx
	if hb.tooLarge {
		sc.cnt.HeaderTooLarge.Add(1)
		ss.local = http.StatusRequestHeaderFieldsTooLarge
	}
	r := &ss.req
	r.Method = hb.method
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/2.0", 2, 0
	r.Header = hb.header
	if r.Header == nil {
		r.Header = make(http.Header)
	}
	r.Host = hb.authority
	if r.Host == "" {
		r.Host = first(r.Header["Host"])
	}
	r.RequestURI = hb.path
	r.RemoteAddr = sc.info.RemoteAddr
	r.TLS = sc.info.TLS
	if hb.method == "CONNECT" && hb.protocol == "" {
		r.URL = &url.URL{Host: hb.authority}
		r.RequestURI = hb.authority
	} else if hb.path == "*" {
		r.URL = &url.URL{Path: "*"}
	} else if plainPath(hb.path) {
		// What url.ParseRequestURI makes of it, without its allocation.
		ss.url = url.URL{}
		ss.url.Path, ss.url.RawQuery, ss.url.ForceQuery = splitQuery(hb.path)
		r.URL = &ss.url
	} else if u, err := url.ParseRequestURI(hb.path); err == nil {
		r.URL = u
	} else if ss.local == 0 {
		r.URL = &url.URL{Path: "/"}
		ss.local = http.StatusBadRequest
	}
	if r.URL != nil && hb.scheme != "" {
		r.URL.Scheme = hb.scheme
	}
	switch {
	case ended:
		r.ContentLength = 0
		r.Body = http.NoBody
	default:
		r.ContentLength = hb.contentLength
		if hb.contentLength < 0 {
			r.ContentLength = -1
		}
		ss.body.ss = ss
		r.Body = &ss.body
		if decl, ok := r.Header["Trailer"]; ok || first(hb.header["Te"]) != "" || hb.contentLength < 0 {
			// As net/http: the announced names are keys from the start (nil values), the
			// values arrive with the end of the body.
			r.Trailer = make(http.Header)
			for _, d := range decl {
				for name := range splitComma(d) {
					r.Trailer[http.CanonicalHeaderKey(name)] = nil
				}
			}
		}
	}
	ss.rw.ss = ss
	sc.mu.Lock()
	sc.opening = false
	if sc.closeErr != nil {
		// The connection closed (failing the streams it had) while this one was being
		// set up: registered now, it would never be failed, and its handler would wait
		// for a body that cannot come.
		sc.mu.Unlock()
		ss.ctx.Cancel()
		return nil
	}
	sc.streams[id] = st
	sc.live.Add(1)
	st.counted = true
	sc.active++
	sc.mu.Unlock()
	if sc.idle != nil {
		sc.idle.Stop()
	}
	return ss
}

// onRemove runs (mu held) when a stream leaves the connection.
func (sc *serverConn) onRemove() {
	if len(sc.streams) == 0 && !sc.opening {
		sc.noStreamsLocked()
	}
}

// noStreamsLocked closes a connection left without streams after a GOAWAY, or re-arms
// its idle timer; mu is held.
func (sc *serverConn) noStreamsLocked() {
	if sc.goingAway || sc.peerGoAway {
		go sc.closeConn(ErrConnClosed, false, 0, 0, "")
	} else if sc.idle != nil && sc.closeErr == nil {
		sc.idle.Reset(sc.lim.IdleTimeout)
	}
}

// opened ends the reader's opening window for a stream it refused: the connection
// closes now if a GOAWAY came meanwhile and no stream is left.
func (sc *serverConn) opened() {
	sc.mu.Lock()
	sc.opening = false
	if len(sc.streams) == 0 && sc.closeErr == nil {
		sc.noStreamsLocked()
	}
	sc.mu.Unlock()
}

func (ss *serverStream) run() { ss.sc.run(ss) }

// takeFree returns a zeroed stream, a finished one when the connection keeps one.
func (sc *serverConn) takeFree() *serverStream {
	sc.mu.Lock()
	n := len(sc.free)
	if n == 0 {
		sc.mu.Unlock()
		return new(serverStream)
	}
	ss := sc.free[n-1]
	sc.free[n-1] = nil
	sc.free = sc.free[:n-1]
	sc.mu.Unlock()
	*ss = serverStream{}
	return ss
}

// recycle keeps ss for the reader's next stream when nothing can reach it any more: its
// handler returned without a panic and did not ask to keep it (KeepStream), the response
// ended cleanly, the stream left the connection, it had no request body or the handler
// released it (ReleaseBody: a body's reader, such as an upstream body writer, may
// otherwise outlive the handler), and no stall timer was armed for it. Its context is
// cancelled already (its children detached). A handler must not keep the request or
// the ResponseWriter after it returns (net/http's contract).
func (sc *serverConn) recycle(ss *serverStream) {
	st := &ss.stream
	if (ss.req.Body != http.NoBody && !ss.rw.bodyFree) || !ss.rw.done || ss.rw.endErr != nil || ss.rw.keep {
		return
	}
	// A handler that derived a context from the request's with package context (a
	// WithTimeout) may be reached through it later: its stop can run from a timer
	// goroutine after the handler returned (reqctx.Ctx.Derived).
	if ss.ctx.Derived() {
		return
	}
	// A small map only: a cleared map keeps its size, and ranging over a large one
	// costs its capacity, not its length, on every later request it would serve.
	h := ss.req.Header
	if !ss.rw.headerFree || ss.fields > maxSpareHeaderFields || len(h) > maxSpareHeaderFields {
		h = nil
	}
	sc.mu.Lock()
	if st.removed && !st.stallArmed && st.sendErr == nil && sc.closeErr == nil && len(sc.free) < maxFreeStreams {
		sc.free = append(sc.free, ss)
		if h != nil && len(sc.hdrFree) < maxFreeStreams {
			clear(h)
			sc.hdrFree = append(sc.hdrFree, h)
		}
	}
	sc.mu.Unlock()
}

// maxSpareHeaderFields bounds the maps recycle keeps: one group of a Go map.
const maxSpareHeaderFields = 8

// run serves one request on a worker goroutine.
func (sc *serverConn) run(ss *serverStream) {
	defer sc.handlers.Done()
	ch, direct := sc.srv.Handler.(ContextHandler)
	aborted := false
	func() {
		defer func() {
			if p := recover(); p != nil {
				aborted = true
				if p != http.ErrAbortHandler {
					sc.srv.Log.Error("http2: handler panic", "panic", p, "path", ss.req.RequestURI)
				}
			}
		}()
		switch {
		case ss.local == 0 && direct:
			ch.ServeHTTPContext(&ss.ctx, &ss.rw, &ss.req)
		case ss.local == 0:
			sc.srv.Handler.ServeHTTP(&ss.rw, ss.req.WithContext(&ss.ctx))
		default:
			if f := sc.srv.LocalReply; f != nil {
				f(&ss.rw, ss.req.WithContext(&ss.ctx), ss.local)
				return
			}
			ss.rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
			ss.rw.WriteHeader(ss.local)
			_, _ = io.WriteString(&ss.rw, "meshd: "+http.StatusText(ss.local)+"\n")
		}
	}()
	st := &ss.stream
	if aborted {
		sc.resetStream(st, http2.ErrCodeInternal, &StreamError{Code: http2.ErrCodeInternal, Cause: errors.New("handler aborted")})
	} else if err := ss.rw.finish(); err != nil {
		sc.resetStream(st, http2.ErrCodeInternal, err)
	}
	ss.rw.release()
	// A response complete before its request: tell the client to stop sending (RFC
	// 9113 §8.1, RST_STREAM NO_ERROR).
	sc.mu.Lock()
	rst := !st.removed && !st.remoteDone
	sc.mu.Unlock()
	if rst {
		sc.resetStream(st, http2.ErrCodeNo, &StreamError{Code: http2.ErrCodeNo, Cause: errors.New("response complete")})
	}
	// Cancelled here, not deferred: once recycled, ss may be the reader's next stream.
	ss.ctx.Cancel()
	if !aborted {
		sc.recycle(ss)
	}
}

// requestBody is a request's body: the stream's received data.
type requestBody struct{ ss *serverStream }

func (b *requestBody) Read(p []byte) (int, error) {
	n, err := b.ss.stream.read(p)
	if err == io.EOF {
		st := &b.ss.stream
		st.c.mu.Lock()
		t := st.trailer
		st.trailer = nil
		st.c.mu.Unlock()
		if t != nil && b.ss.req.Trailer != nil {
			for k, v := range t {
				b.ss.req.Trailer[k] = v
			}
		}
	} else if err != nil {
		err = fmt.Errorf("http2: request body: %w", err)
	}
	return n, err
}

// Close stops the body: a reader waiting in Read returns.
func (b *requestBody) Close() error {
	c := b.ss.stream.c
	c.mu.Lock()
	if st := &b.ss.stream; st.readErr == nil {
		// failLocked also fails sends; the response may still be written.
		sendErr := st.sendErr
		st.failLocked(errBodyClosed)
		st.sendErr = sendErr
	}
	c.mu.Unlock()
	c.consumed(nil, 0) // what was buffered and not read
	return nil
}

var errBodyClosed = errors.New("http2: request body closed")

// responseWriter is the http.ResponseWriter (and http.Flusher) of one stream. It
// keeps the body in a buffer until a flush, the buffer filling, or the handler's end,
// so a small response leaves as HEADERS + DATA with END_STREAM in one write.
type responseWriter struct {
	ss          *serverStream
	header      http.Header
	head        http.Header // the head's fields when trailers were announced (else header)
	status      int
	wroteHeader bool
	sentHeader  bool
	done        bool
	buf         []byte
	written     int64
	endErr      error // the end's failure (finish), returned again instead of a second try
	// keep: the handler asked that its stream not be reused (KeepStream): something it
	// started may still reach the stream's context after it returns.
	keep bool
	// bodyFree: the handler said nothing reads the request body any more (ReleaseBody).
	bodyFree bool
	// headerFree: the handler said nothing uses the request's header map any more
	// (ReleaseHeader).
	headerFree bool
}

func (w *responseWriter) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header, 4)
	}
	return w.header
}

// AdoptHeader makes h the response's header map when the handler has set no field yet
// (a proxy relaying a response head it owns), saving a copy; false: copy instead.
func (w *responseWriter) AdoptHeader(h http.Header) bool {
	if w.wroteHeader || len(w.header) > 0 {
		return false
	}
	w.header = h
	return true
}

func (w *responseWriter) WriteHeader(code int) {
	if w.wroteHeader || code < 200 && code != 0 && code >= 100 {
		// Informational heads are not relayed on this path (103 is advisory).
		return
	}
	if code < 100 || code > 999 {
		code = http.StatusInternalServerError
	}
	w.status, w.wroteHeader = code, true
	if _, ok := w.header["Trailer"]; ok {
		// Fields set after this call are trailers: the head is what is set now.
		w.head = w.header.Clone()
	}
}

// RetractHead drops a response head and body the handler wrote but that has not left
// yet (nothing flushed, the buffer never filled), so the handler can answer otherwise: a
// proxy whose upstream failed before any of its response reached the client answers
// with its own error instead of resetting the stream. False once the head has left.
func (w *responseWriter) RetractHead() bool {
	if w.sentHeader || w.done {
		return false
	}
	w.header = make(http.Header, 4) // the old map may be the upstream's, adopted
	w.head, w.status, w.wroteHeader, w.written = nil, 0, false, 0
	if w.buf != nil {
		w.buf = w.buf[:0]
	}
	return true
}

func (w *responseWriter) bodyAllowed() bool {
	return w.status != http.StatusNoContent && w.status != http.StatusNotModified && w.ss.req.Method != http.MethodHead
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.bodyAllowed() {
		return 0, http.ErrBodyNotAllowed
	}
	if len(p) == 0 {
		return 0, nil
	}
	if w.buf == nil {
		w.buf = getBuf()
	}
	if len(w.buf)+len(p) <= cap(w.buf) {
		w.buf = append(w.buf, p...)
		w.written += int64(len(p))
		return len(p), nil
	}
	if err := w.send(w.buf, false); err != nil {
		return 0, err
	}
	w.buf = w.buf[:0]
	if len(p) <= cap(w.buf) {
		w.buf = append(w.buf, p...)
	} else if err := w.send(p, false); err != nil {
		return 0, err
	}
	w.written += int64(len(p))
	return len(p), nil
}

// Flush sends the head and what the buffer holds.
func (w *responseWriter) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if err := w.send(w.buf, false); err == nil && w.buf != nil {
		w.buf = w.buf[:0]
	}
}

// FlushError is Flush with its error (http.ResponseController uses it).
func (w *responseWriter) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	err := w.send(w.buf, false)
	if err == nil && w.buf != nil {
		w.buf = w.buf[:0]
	}
	return err
}

// trailerField is one trailer field the handler set, with its values.
type trailerField struct {
	name   string
	values []string
}

// trailers collects the trailer fields the handler set, appended to buf: "Trailer:"-
// prefixed keys, and keys it announced in a Trailer field and set after the head. A
// slice, not a map: a unary gRPC call's one or two trailers cost no allocation then (a
// map and its group did). Names equal but for case are one field, the later kept, as
// a map keyed by the canonical name kept them.
func (w *responseWriter) trailers(buf []trailerField) []trailerField {
	for k, v := range w.header {
		name, ok := strings.CutPrefix(k, http.TrailerPrefix)
		if !ok {
			continue
		}
		buf = addTrailer(buf, name, v)
	}
	for _, decl := range w.header["Trailer"] {
		for name := range strings.SplitSeq(decl, ",") {
			k := http.CanonicalHeaderKey(strings.TrimSpace(name))
			if v, ok := w.header[k]; ok && k != "" && w.head != nil && w.head[k] == nil {
				buf = addTrailer(buf, k, v)
			}
		}
	}
	return buf
}

// addTrailer appends the field, or replaces the values of one of the same name (ASCII
// case folded: strings.EqualFold would take a name with the Kelvin sign for one with
// a k, and let an invalid name replace a valid one).
func addTrailer(buf []trailerField, name string, values []string) []trailerField {
	for i := range buf {
		if asciiEqualFold(buf[i].name, name) {
			buf[i].values = values
			return buf
		}
	}
	return append(buf, trailerField{name, values})
}

// encodeTrailers encodes the trailer fields, less those a trailer section must not
// carry (notTrailerField).
func encodeTrailers(enc *hpackEncoder, fs []trailerField) {
	for _, f := range fs {
		if notTrailerField(f.name) {
			continue
		}
		encodeField(enc, f.name, f.values)
	}
}

// finish ends the response when the handler returns (or at EndResponse).
func (w *responseWriter) finish() error {
	if w.done {
		return nil
	}
	if w.endErr != nil {
		return w.endErr
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.endErr = w.send(w.buf, true)
	return w.endErr
}

// EndResponse sends what is left of the response, its trailers included, and ends the
// stream now instead of when the handler returns: a proxy that has relayed the whole
// response lets it leave before its own bookkeeping (statistics, the upstream
// connection's release), which is then off the request's latency. The handler must
// write nothing after it. A failure (the client gone) is the stream's: it is reset
// when the handler returns, as it would have been then.
func (w *responseWriter) EndResponse() error { return w.finish() }

// RequestHopFree reports that the request's header holds none of the fields
// h1.HopByHop names (HTTP/2 refuses the connection-specific ones; this request had no
// te, trailer, proxy-authenticate or proxy-authorization either), so a proxy's pass
// removing them would remove nothing.
func (w *responseWriter) RequestHopFree() bool { return !w.ss.hop }

// KeepStream tells the server not to reuse the stream for a later request once the
// handler returns: for a handler that leaves work behind holding the stream's context
// (an upstream attempt it abandoned, whose transport may still ask the context for a
// value or its deadline).
func (w *responseWriter) KeepStream() { w.keep = true }

// ReleaseBody tells the server that nothing reads the request body any more: the
// handler's readers of it, on any goroutine (an upstream body writer), are done and will
// not read it again. A stream whose request had a body may then be reused like a
// bodyless one. Without it such a stream is left to the collector, since a reader that
// outlives the handler would read the next request's body.
func (w *responseWriter) ReleaseBody() { w.bodyFree = true }

// ReleaseHeader tells the server that nothing uses the request's header map (or the
// value slices in it) any more once the handler returns, not even something the handler
// started: the server may then clear it and fill it with a later request's fields.
func (w *responseWriter) ReleaseHeader() { w.headerFree = true }

func (w *responseWriter) release() {
	if w.buf != nil {
		putBuf(w.buf)
		w.buf = nil
	}
}

// send writes the head (once) and data, ending the stream when end is set (with the
// trailers, if any).
func (w *responseWriter) send(data []byte, end bool) error {
	if w.done {
		return errors.New("http2: response already complete")
	}
	ss := w.ss
	st := &ss.stream
	c := st.c
	var tbuf [2]trailerField
	var trailers []trailerField
	if end {
		trailers = w.trailers(tbuf[:0])
	}
	endData := end && len(trailers) == 0
	if !w.sentHeader {
		n := 0
		if len(data) > 0 {
			n = c.tryReserve(st, len(data))
		}
		// The length of a whole body goes in the head; not with trailers (gRPC), where no
		// client wants it and it would be one more field to encode per call.
		head := func(e *hpackEncoder) { w.encodeHead(e, end && len(data) == n && len(trailers) == 0) }
		headEnd := endData && len(data) == 0
		// A whole response with trailers (a unary gRPC call's) leaves in one write: head,
		// data and trailers. Written one by one, a connection with one stream wrote the
		// trailers with a syscall of their own, and the client woke twice.
		withTrailers := end && len(trailers) > 0 && n == len(data) && st.sendable() == nil
		ending := headEnd || (n > 0 && endData && n == len(data)) || withTrailers
		if ending {
			st.closing()
		}
		err := c.write(func() error {
			if err := c.writeHeadersLocked(st.id, headEnd, head); err != nil {
				return err
			}
			if n > 0 {
				if err := c.writeDataLocked(st.id, data[:n], endData && n == len(data)); err != nil {
					return err
				}
			}
			if withTrailers {
				return c.writeHeadersLocked(st.id, true, func(e *hpackEncoder) { encodeTrailers(e, trailers) })
			}
			return nil
		})
		if err != nil {
			return err
		}
		c.mu.Lock()
		st.responded = true
		if ending {
			w.markDoneLocked()
		}
		c.mu.Unlock()
		w.sentHeader = true
		data = data[n:]
		if w.done {
			return nil
		}
		if len(data) == 0 && !end {
			return nil
		}
	}
	for len(data) > 0 {
		n, err := c.reserve(st, len(data))
		if err != nil {
			return err
		}
		last := n == len(data)
		if last && endData {
			st.closing()
		}
		if err := c.write(func() error { return c.writeDataLocked(st.id, data[:n], endData && last) }); err != nil {
			return err
		}
		data = data[n:]
		if last && endData {
			c.mu.Lock()
			w.markDoneLocked()
			c.mu.Unlock()
			return nil
		}
	}
	if !end {
		return nil
	}
	if err := st.sendable(); err != nil {
		return err
	}
	st.closing()
	err := c.write(func() error {
		if len(trailers) == 0 {
			return c.fr.WriteData(st.id, true, nil)
		}
		return c.writeHeadersLocked(st.id, true, func(e *hpackEncoder) { encodeTrailers(e, trailers) })
	})
	if err != nil {
		return err
	}
	c.mu.Lock()
	w.markDoneLocked()
	c.mu.Unlock()
	return nil
}

// markDoneLocked records END_STREAM sent; mu is held.
func (w *responseWriter) markDoneLocked() {
	w.done = true
	st := &w.ss.stream
	st.localDone = true
	if st.remoteDone {
		w.ss.sc.removeLocked(st)
	}
}

// encodeHead writes the response head: :status, the handler's fields (not the
// trailer ones), and content-length when the whole body is known at the first write.
func (w *responseWriter) encodeHead(e *hpackEncoder, whole bool) {
	_ = e.WriteField(hpack.HeaderField{Name: ":status", Value: statusText(w.status)})
	h := w.header
	if w.head != nil {
		h = w.head
	}
	encodeHeader(e, h, func(k string) bool { return strings.HasPrefix(k, http.TrailerPrefix) })
	if whole && w.bodyAllowed() && first(h["Content-Length"]) == "" && w.head == nil {
		_ = e.WriteField(hpack.HeaderField{Name: "content-length", Value: strconv.FormatInt(w.written, 10)})
	}
}

func statusText(code int) string {
	switch code {
	case 200:
		return "200"
	case 204:
		return "204"
	case 404:
		return "404"
	case 500:
		return "500"
	case 503:
		return "503"
	}
	return strconv.Itoa(code)
}

// closing is called before the frame that ends a stream is written: once the client
// has ended its side too, the stream stops counting against the concurrency limit now,
// since the client may open the next one as soon as it reads that frame.
func (st *stream) closing() {
	st.c.mu.Lock()
	if st.remoteDone {
		st.c.uncountLocked(st)
	}
	st.c.mu.Unlock()
}

// sendable reports the error a write to st would fail with, nil if none.
func (st *stream) sendable() error {
	st.c.mu.Lock()
	defer st.c.mu.Unlock()
	if st.sendErr != nil {
		return st.sendErr
	}
	return st.c.closeErr
}

// first is a field's first value ("" when none): http.Header.Get for a canonical key,
// without canonicalizing it again.
func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

// plainPath reports a :path whose URL url.ParseRequestURI would build without
// unescaping anything: an absolute path of unreserved characters and sub-delimiters
// (RFC 3986, none that url escapes in a path), then any query without control
// characters. Its URL is what splitQuery returns.
func plainPath(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	i := 0
	for ; i < len(p) && p[i] != '?'; i++ {
		if !pathChar[p[i]] {
			return false
		}
	}
	for ; i < len(p); i++ {
		if c := p[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

// pathChar: the bytes a path may hold for url to keep it as it is (EscapedPath equal to
// the input, RawPath empty).
var pathChar = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "-._~/$&+,;=:@" {
		t[c] = true
	}
	return t
}()

// splitQuery is url.ParseRequestURI's split of a path and its query: a lone trailing
// "?" is ForceQuery.
func splitQuery(p string) (path, rawQuery string, force bool) {
	path, rawQuery, found := strings.Cut(p, "?")
	if found && rawQuery == "" && strings.Count(p, "?") == 1 {
		return path, "", true
	}
	return path, rawQuery, false
}

// asciiEqualFold reports whether a and b are equal under ASCII case folding only.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
