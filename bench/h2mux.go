package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The multiplexed h2c client: h2Mux is one connection's worth of load, shared by
// the Streams worker slots of that connection (LoadSpec.Streams > 1), each of which
// keeps one request in flight on it, so a connection carries up to Streams
// concurrent streams as h2load -m does. It is built on x/net/http2's Framer and hpack
// rather than net/http's Transport so that the load generator costs little per
// request: a request's HEADERS (and DATA) frames are encoded under the connection's
// write mutex and leave in one write, and one reader goroutine per connection reads
// every frame and hands each stream its outcome.

// Receive windows the client advertises: h2load's defaults (2^30-1 for each stream
// and for the connection), so flow control never holds a response back.
const (
	muxStreamWindow = 1<<30 - 1
	muxConnWindow   = 1<<30 - 1
	// muxMaxStreamID bounds the stream IDs of one connection (2^31-1); a connection
	// that gets near it is replaced by a new one.
	muxMaxStreamID = 1<<31 - 1
	// muxCtrlWriteTimeout bounds a write of the reader (ACKs, WINDOW_UPDATE).
	muxCtrlWriteTimeout = 5 * time.Second
)

var (
	errMuxGoAway  = errors.New("stream not processed: the server sent GOAWAY")
	errMuxRefused = errors.New("stream refused (REFUSED_STREAM)")
	errMuxIDs     = errors.New("stream IDs of the connection used up")
	errMuxClosed  = errors.New("connection closed")
)

// h2Mux is the shared state of the slots of one connection: the current muxConn
// and any older ones that still finish streams after a GOAWAY.
type h2Mux struct {
	t       target
	streams int // slots sharing the connection
	method  string
	headers []Header // -H, names lower-cased as HTTP/2 wants them
	body    []byte
	peak    atomic.Int64 // most streams in flight on one connection

	mu   sync.Mutex // guards cur, live, refs
	cur  *muxConn
	live map[*muxConn]struct{}
	refs int
}

// newH2Mux returns the requesters of one connection carrying streams concurrent
// requests.
func newH2Mux(t target, streams int) []requester {
	m := &h2Mux{t: t, streams: streams, method: t.requestMethod(), live: map[*muxConn]struct{}{}, refs: streams}
	if t.reqBody > 0 {
		m.body = bytes.Repeat([]byte{'x'}, t.reqBody)
	}
	for _, h := range t.headers {
		m.headers = append(m.headers, Header{Name: strings.ToLower(h.Name), Value: h.Value})
	}
	out := make([]requester, streams)
	for i := range out {
		out[i] = &muxSlot{m: m, st: &muxStream{done: make(chan muxResult, 1)}}
	}
	return out
}

// release is called once by each slot when its worker ends; the last closes the
// connections and waits for their readers.
func (m *h2Mux) release() {
	m.mu.Lock()
	m.refs--
	if m.refs > 0 {
		m.mu.Unlock()
		return
	}
	conns := make([]*muxConn, 0, len(m.live))
	for c := range m.live {
		conns = append(conns, c)
	}
	m.cur = nil
	m.mu.Unlock()
	for _, c := range conns {
		c.fail(errMuxClosed)
		<-c.readerDone
	}
}

// conn returns the connection new streams go on, dialling one (and waiting for the
// server's SETTINGS) when there is none or the current one takes no new streams.
func (m *h2Mux) conn(ctx context.Context, deadline time.Time) (*muxConn, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c := m.cur; c != nil && c.usable() {
		return c, nil
	}
	m.cur = nil
	for c := range m.live {
		select {
		case <-c.readerDone:
			delete(m.live, c)
		default:
		}
	}
	c, err := dialMux(ctx, m, deadline)
	if err != nil {
		return nil, err
	}
	m.cur = c
	m.live[c] = struct{}{}
	return c, nil
}

func (m *h2Mux) peakStreams() int { return int(m.peak.Load()) }

// muxSlot is one worker's stream slot on a shared connection.
type muxSlot struct {
	m      *h2Mux
	st     *muxStream
	timer  *time.Timer
	closed bool
}

func (s *muxSlot) close() {
	if !s.closed {
		s.closed = true
		if s.timer != nil {
			s.timer.Stop()
		}
		s.m.release()
	}
}

func (s *muxSlot) peakStreams() int { return s.m.peakStreams() }

// connect opens the shared connection (once for all its slots: conn dials only when
// there is none).
func (s *muxSlot) connect(ctx context.Context, deadline time.Time) error {
	_, err := s.m.conn(ctx, deadline)
	return err
}

// do sends one request on the shared connection and waits for its response. A
// stream the server did not process (GOAWAY, REFUSED_STREAM) is sent again on a new
// connection within the same deadline, as an HTTP/2 client would.
func (s *muxSlot) do(ctx context.Context, deadline time.Time) (int, error) {
	if s.timer == nil {
		s.timer = time.NewTimer(time.Until(deadline))
	} else {
		s.timer.Reset(time.Until(deadline))
	}
	defer s.timer.Stop()
	for {
		c, err := s.m.conn(ctx, deadline)
		if err != nil {
			return 0, err
		}
		r := c.roundTrip(ctx, s.st, deadline, s.timer.C)
		if r.retry && time.Now().Before(deadline) {
			continue
		}
		return r.status, r.err
	}
}

// muxResult is a stream's outcome.
type muxResult struct {
	status int
	err    error
	retry  bool // not processed by the server: may be sent again
}

// muxStream is a slot's stream, reused for each of its requests. Fields are guarded
// by the connection's smu, sendWin by its wmu.
type muxStream struct {
	id      uint32
	status  int   // final status once its HEADERS arrived
	recvd   int64 // DATA bytes not yet returned to the stream's window
	sendWin int64
	done    chan muxResult // one result per registered stream
}

// muxConn is one h2c connection.
type muxConn struct {
	m  *h2Mux
	nc net.Conn

	// Write side, under wmu: frames are encoded into wbuf and written at once.
	wmu      sync.Mutex
	winCond  *sync.Cond // signalled when a send window grows or the connection fails
	wbuf     bytes.Buffer
	fw       *http2.Framer
	hbuf     bytes.Buffer
	henc     *hpack.Encoder
	nextID   uint32
	sendWin  int64 // connection send window
	initWin  int64 // peer's SETTINGS_INITIAL_WINDOW_SIZE
	maxFrame int   // peer's SETTINGS_MAX_FRAME_SIZE

	// Streams, under smu.
	smu      sync.Mutex
	streams  map[uint32]*muxStream
	inflight int
	err      error // set once when the connection failed: no new streams
	goAway   bool  // no new streams; the ones it still carries finish
	closing  bool

	sem          chan struct{} // the peer's SETTINGS_MAX_CONCURRENT_STREAMS, nil when unlimited
	lastRead     atomic.Int64  // unix ns of the last frame read
	settingsSeen chan struct{}
	readerDone   chan struct{}
}

func dialMux(ctx context.Context, m *h2Mux, deadline time.Time) (*muxConn, error) {
	nc, err := dialTarget(ctx, m.t, "h2", deadline)
	if err != nil {
		return nil, err
	}
	c := &muxConn{m: m, nc: nc, nextID: 1, sendWin: 65535, initWin: 65535, maxFrame: 16384,
		streams: map[uint32]*muxStream{}, settingsSeen: make(chan struct{}), readerDone: make(chan struct{})}
	c.winCond = sync.NewCond(&c.wmu)
	c.fw = http2.NewFramer(&c.wbuf, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	// Preface, SETTINGS and the connection window in one write.
	c.wbuf.WriteString(http2.ClientPreface)
	_ = c.fw.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: muxStreamWindow})
	_ = c.fw.WriteWindowUpdate(0, muxConnWindow-65535)
	_ = nc.SetWriteDeadline(deadline)
	if _, err := nc.Write(c.wbuf.Bytes()); err != nil {
		nc.Close()
		return nil, &reqError{kind: ErrConnect, err: fmt.Errorf("write preface: %w", err)}
	}
	c.wbuf.Reset()
	go c.readLoop()
	// The peer's first frame is its SETTINGS; wait for it so that its stream limit
	// and windows are known before the first request.
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-c.settingsSeen:
		return c, nil
	case <-c.readerDone:
		c.smu.Lock()
		err := c.err
		c.smu.Unlock()
		return nil, &reqError{kind: ErrConnect, err: fmt.Errorf("before the server's SETTINGS: %w", err)}
	case <-t.C:
		err = &reqError{kind: ErrConnect, err: errors.New("no SETTINGS from the server by the deadline")}
	case <-ctx.Done():
		err = ctx.Err()
	}
	c.fail(errMuxClosed)
	<-c.readerDone
	return nil, err
}

// usable says whether new streams may start on c.
func (c *muxConn) usable() bool {
	c.smu.Lock()
	defer c.smu.Unlock()
	return c.err == nil && !c.goAway
}

// failed says whether c has failed.
func (c *muxConn) failed() bool {
	c.smu.Lock()
	defer c.smu.Unlock()
	return c.err != nil
}

// roundTrip sends one request as stream st and waits for its outcome until timeout
// fires (the request's deadline) or ctx ends.
func (c *muxConn) roundTrip(ctx context.Context, st *muxStream, deadline time.Time, timeout <-chan time.Time) muxResult {
	if c.sem != nil {
		select {
		case c.sem <- struct{}{}:
			defer func() { <-c.sem }()
		case <-timeout:
			return muxResult{err: &reqError{kind: ErrTimeout, err: errors.New("no stream free under the server's concurrent stream limit")}}
		case <-ctx.Done():
			return muxResult{err: ctx.Err()}
		}
	}
	sent := time.Now()
	if r, ok := c.send(st, deadline); !ok {
		return r
	}
	select {
	case r := <-st.done:
		return r
	case <-timeout:
		return c.abandon(st, sent, &reqError{kind: ErrTimeout, err: errors.New("no response by the deadline")})
	case <-ctx.Done():
		return c.abandon(st, sent, ctx.Err())
	}
}

// send registers st under a new stream ID and writes its request. ok false means
// st was not registered and r is the outcome.
func (c *muxConn) send(st *muxStream, deadline time.Time) (r muxResult, ok bool) {
	m := c.m
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.smu.Lock()
	switch {
	case c.err != nil:
		err := c.err
		c.smu.Unlock()
		return muxResult{err: err, retry: true}, false
	case c.goAway:
		c.smu.Unlock()
		return muxResult{err: &reqError{kind: ErrReset, err: errMuxGoAway}, retry: true}, false
	case c.nextID > muxMaxStreamID-2:
		c.goAway = true
		c.smu.Unlock()
		return muxResult{err: &reqError{kind: ErrProtocol, err: errMuxIDs}, retry: true}, false
	}
	id := c.nextID
	c.nextID += 2
	st.id, st.status, st.recvd = id, 0, 0
	c.streams[id] = st
	c.inflight++
	n := int64(c.inflight)
	c.smu.Unlock()
	for {
		p := m.peak.Load()
		if n <= p || m.peak.CompareAndSwap(p, n) {
			break
		}
	}
	st.sendWin = c.initWin

	c.hbuf.Reset()
	c.henc.WriteField(hpack.HeaderField{Name: ":method", Value: m.method})
	c.henc.WriteField(hpack.HeaderField{Name: ":scheme", Value: m.t.scheme()})
	c.henc.WriteField(hpack.HeaderField{Name: ":authority", Value: m.t.host})
	c.henc.WriteField(hpack.HeaderField{Name: ":path", Value: m.t.path})
	c.henc.WriteField(hpack.HeaderField{Name: "user-agent", Value: "meshbench"})
	for _, h := range m.headers {
		c.henc.WriteField(hpack.HeaderField{Name: h.Name, Value: h.Value})
	}
	if len(m.body) > 0 {
		c.henc.WriteField(hpack.HeaderField{Name: "content-type", Value: "application/octet-stream"})
		c.henc.WriteField(hpack.HeaderField{Name: "content-length", Value: strconv.Itoa(len(m.body))})
	}
	block := c.hbuf.Bytes()
	first := min(len(block), c.maxFrame)
	c.wbuf.Reset()
	_ = c.fw.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block[:first],
		EndStream: len(m.body) == 0, EndHeaders: first == len(block)})
	for rest := block[first:]; len(rest) > 0; {
		k := min(len(rest), c.maxFrame)
		_ = c.fw.WriteContinuation(id, k == len(rest), rest[:k])
		rest = rest[k:]
	}
	body := m.body
	var timer *time.Timer
	for len(body) > 0 {
		k := int64(min(len(body), c.maxFrame))
		k = min(k, c.sendWin, st.sendWin)
		if k <= 0 {
			// Out of send window: write what is ready and wait for WINDOW_UPDATE.
			if err := c.flushLocked(deadline); err != nil {
				return muxResult{}, true // fail delivers the outcome to st
			}
			if time.Now().After(deadline) {
				c.wmu.Unlock()
				r := c.abandon(st, time.Now(), &reqError{kind: ErrTimeout, err: errors.New("send window closed until the deadline")})
				c.wmu.Lock()
				return r, false
			}
			if timer == nil {
				timer = time.AfterFunc(time.Until(deadline), func() {
					c.wmu.Lock()
					c.winCond.Broadcast()
					c.wmu.Unlock()
				})
				defer timer.Stop()
			}
			if c.failed() {
				return muxResult{}, true
			}
			c.winCond.Wait()
			continue
		}
		_ = c.fw.WriteData(id, int(k) == len(body), body[:k])
		c.sendWin -= k
		st.sendWin -= k
		body = body[k:]
	}
	_ = c.flushLocked(deadline)
	return muxResult{}, true
}

// flushLocked writes wbuf; on failure the connection fails, which hands every
// registered stream its outcome.
func (c *muxConn) flushLocked(deadline time.Time) error {
	if c.wbuf.Len() == 0 {
		return nil
	}
	_ = c.nc.SetWriteDeadline(deadline)
	_, err := c.nc.Write(c.wbuf.Bytes())
	c.wbuf.Reset()
	if err != nil {
		c.failQuiet(classify(ErrWrite, err))
		c.winCond.Broadcast() // wmu is held
	}
	return err
}

// abandon gives up on st (timeout, ctx): it is removed and reset, unless its outcome
// is already on the way, which is then returned. A connection on which nothing at
// all arrived since the stream was sent is taken for dead and closed.
func (c *muxConn) abandon(st *muxStream, sent time.Time, err error) muxResult {
	c.smu.Lock()
	mine := c.streams[st.id] == st
	if mine {
		delete(c.streams, st.id)
		c.inflight--
	}
	c.smu.Unlock()
	if !mine {
		return <-st.done
	}
	if c.lastRead.Load() < sent.UnixNano() {
		c.fail(err)
		return muxResult{err: err}
	}
	c.wmu.Lock()
	_ = c.fw.WriteRSTStream(st.id, http2.ErrCodeCancel)
	_ = c.flushLocked(time.Now().Add(muxCtrlWriteTimeout))
	c.wmu.Unlock()
	c.closeIfDrained()
	return muxResult{err: err}
}

// fail marks c failed with err, closes it, hands every open stream err and wakes a
// sender waiting for window. The caller must not hold wmu.
func (c *muxConn) fail(err error) {
	c.failQuiet(err)
	c.wmu.Lock()
	c.winCond.Broadcast()
	c.wmu.Unlock()
}

// failQuiet is fail without the wake-up, for callers holding wmu.
func (c *muxConn) failQuiet(err error) {
	c.smu.Lock()
	if c.err == nil {
		c.err = err
	}
	streams := c.streams
	c.streams = map[uint32]*muxStream{}
	c.inflight = 0
	c.smu.Unlock()
	c.nc.Close()
	for _, st := range streams {
		st.done <- muxResult{err: err}
	}
}

// closeIfDrained closes a connection that takes no new streams once its last
// stream is done.
func (c *muxConn) closeIfDrained() {
	c.smu.Lock()
	done := c.goAway && c.inflight == 0 && c.err == nil && !c.closing
	if done {
		c.closing = true
	}
	c.smu.Unlock()
	if done {
		c.fail(errMuxClosed)
	}
}

// complete ends stream id with r, if it is still open.
func (c *muxConn) complete(id uint32, r muxResult) {
	c.smu.Lock()
	st := c.streams[id]
	if st != nil {
		delete(c.streams, id)
		c.inflight--
		if r.err == nil {
			r.status = st.status
		}
	}
	c.smu.Unlock()
	if st != nil {
		st.done <- r
		c.closeIfDrained()
	}
}

// writeCtrl writes a control frame built by fn (from the reader goroutine). The
// reader waits for wmu meanwhile: if a sender holding it is blocked on a full socket
// whose peer in turn waits for the reader, the sender's write deadline (its request's)
// ends the wait by failing the connection. Control frames are rare here (SETTINGS and
// PING ACKs, a WINDOW_UPDATE per 512 MiB received), so this is not worth a queue.
func (c *muxConn) writeCtrl(fn func(*http2.Framer) error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := fn(c.fw); err != nil {
		c.wbuf.Reset()
		return
	}
	_ = c.flushLocked(time.Now().Add(muxCtrlWriteTimeout))
}

// readLoop reads every frame of the connection until it fails.
func (c *muxConn) readLoop() {
	defer close(c.readerDone)
	fr := http2.NewFramer(nil, bufio.NewReaderSize(c.nc, 32<<10))
	fr.SetMaxReadFrameSize(16384) // the default the client advertises
	fr.SetReuseFrames()
	var (
		hdrStream uint32 // stream of the header block being read
		hdrEnd    bool   // that HEADERS frame had END_STREAM
		status    int    // :status of the block
		badStatus bool
		connRecvd int64 // DATA bytes not yet returned to the connection window
		settings  bool
	)
	dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) {
		if f.Name == ":status" {
			n, err := strconv.Atoi(f.Value)
			if err != nil || n < 100 || n > 999 {
				badStatus = true
			}
			status = n
		}
	})
	dec.SetMaxStringLength(64 << 10)
	// endBlock finishes a header block of hdrStream: the final response head, an
	// interim 1xx, or trailers.
	endBlock := func() error {
		if err := dec.Close(); err != nil {
			return err
		}
		id := hdrStream
		c.smu.Lock()
		st := c.streams[id]
		var protoErr error
		if st != nil {
			switch {
			case badStatus:
				protoErr = errors.New("malformed :status")
			case st.status == 0 && status == 0:
				protoErr = errors.New("response HEADERS without :status")
			case st.status == 0 && status >= 200:
				st.status = status
			case st.status == 0 && hdrEnd: // 1xx with END_STREAM
				protoErr = errors.New("interim response ends the stream")
			case st.status != 0 && status != 0:
				protoErr = errors.New("second response head on a stream")
			}
		}
		c.smu.Unlock()
		switch {
		case protoErr != nil:
			c.complete(id, muxResult{err: &reqError{kind: ErrProtocol, err: protoErr}})
			c.writeCtrl(func(f *http2.Framer) error { return f.WriteRSTStream(id, http2.ErrCodeProtocol) })
		case hdrEnd:
			c.complete(id, muxResult{})
		}
		hdrStream, status, badStatus = 0, 0, false
		return nil
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			c.fail(classify(ErrRead, err))
			return
		}
		c.lastRead.Store(time.Now().UnixNano())
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				break
			}
			c.wmu.Lock()
			err := f.ForeachSetting(func(s http2.Setting) error {
				switch s.ID {
				case http2.SettingInitialWindowSize:
					delta := int64(s.Val) - c.initWin
					c.initWin = int64(s.Val)
					c.smu.Lock()
					for _, st := range c.streams {
						st.sendWin += delta
					}
					c.smu.Unlock()
				case http2.SettingMaxFrameSize:
					c.maxFrame = int(s.Val)
				case http2.SettingHeaderTableSize:
					c.henc.SetMaxDynamicTableSizeLimit(s.Val)
				case http2.SettingMaxConcurrentStreams:
					if !settings && s.Val < uint32(c.m.streams) {
						c.sem = make(chan struct{}, max(s.Val, 1))
					}
				}
				return nil
			})
			c.winCond.Broadcast()
			c.wmu.Unlock()
			if err != nil {
				c.fail(&reqError{kind: ErrProtocol, err: err})
				return
			}
			c.writeCtrl(func(f *http2.Framer) error { return f.WriteSettingsAck() })
			if !settings {
				settings = true
				close(c.settingsSeen)
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				data := f.Data
				c.writeCtrl(func(f *http2.Framer) error { return f.WritePing(true, data) })
			}
		case *http2.WindowUpdateFrame:
			c.wmu.Lock()
			if f.StreamID == 0 {
				c.sendWin += int64(f.Increment)
			} else {
				c.smu.Lock()
				if st := c.streams[f.StreamID]; st != nil {
					st.sendWin += int64(f.Increment)
				}
				c.smu.Unlock()
			}
			c.winCond.Broadcast()
			c.wmu.Unlock()
		case *http2.HeadersFrame:
			hdrStream, hdrEnd = f.StreamID, f.StreamEnded()
			if _, err := dec.Write(f.HeaderBlockFragment()); err != nil {
				c.fail(&reqError{kind: ErrProtocol, err: fmt.Errorf("hpack: %w", err)})
				return
			}
			if f.HeadersEnded() {
				if err := endBlock(); err != nil {
					c.fail(&reqError{kind: ErrProtocol, err: fmt.Errorf("hpack: %w", err)})
					return
				}
			}
		case *http2.ContinuationFrame:
			if _, err := dec.Write(f.HeaderBlockFragment()); err != nil {
				c.fail(&reqError{kind: ErrProtocol, err: fmt.Errorf("hpack: %w", err)})
				return
			}
			if f.HeadersEnded() {
				if err := endBlock(); err != nil {
					c.fail(&reqError{kind: ErrProtocol, err: fmt.Errorf("hpack: %w", err)})
					return
				}
			}
		case *http2.DataFrame:
			n := int64(f.Length)
			id := f.StreamID
			var streamUpdate int64
			c.smu.Lock()
			st := c.streams[id]
			noHead := st != nil && st.status == 0
			if st != nil {
				st.recvd += n
				if st.recvd >= muxStreamWindow/2 && !f.StreamEnded() {
					streamUpdate, st.recvd = st.recvd, 0
				}
			}
			c.smu.Unlock()
			connRecvd += n
			var cu int64
			if connRecvd >= muxConnWindow/2 {
				cu, connRecvd = connRecvd, 0
			}
			if cu > 0 || streamUpdate > 0 {
				c.writeCtrl(func(f *http2.Framer) error {
					if cu > 0 {
						if err := f.WriteWindowUpdate(0, uint32(cu)); err != nil {
							return err
						}
					}
					if streamUpdate > 0 {
						return f.WriteWindowUpdate(id, uint32(streamUpdate))
					}
					return nil
				})
			}
			switch {
			case noHead:
				c.complete(id, muxResult{err: &reqError{kind: ErrProtocol, err: errors.New("DATA before the response HEADERS")}})
				c.writeCtrl(func(f *http2.Framer) error { return f.WriteRSTStream(id, http2.ErrCodeProtocol) })
			case f.StreamEnded():
				c.complete(id, muxResult{})
			}
		case *http2.RSTStreamFrame:
			r := muxResult{err: &reqError{kind: ErrReset, err: fmt.Errorf("RST_STREAM %v", f.ErrCode)}}
			if f.ErrCode == http2.ErrCodeRefusedStream {
				r = muxResult{err: &reqError{kind: ErrReset, err: errMuxRefused}, retry: true}
			}
			c.complete(f.StreamID, r)
		case *http2.GoAwayFrame:
			c.smu.Lock()
			c.goAway = true
			var lost []*muxStream
			for id, st := range c.streams {
				if id > f.LastStreamID {
					lost = append(lost, st)
					delete(c.streams, id)
					c.inflight--
				}
			}
			c.smu.Unlock()
			for _, st := range lost {
				st.done <- muxResult{err: &reqError{kind: ErrReset, err: errMuxGoAway}, retry: true}
			}
			c.closeIfDrained()
		}
	}
}
