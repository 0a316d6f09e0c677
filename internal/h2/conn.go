// Package h2 is meshd's HTTP/2 (RFC 9113) on golang.org/x/net/http2's Framer and hpack
// (its encoder; the decoder is this package's own, hpackdec.go):
// a server (Serve: one connection, each request handed to an http.Handler) and a client
// (Transport: an http.RoundTripper multiplexing streams over connections per address).
//
// Both sides share one connection core (this file): one goroutine reads frames; every
// other goroutine writes through a mutex into one buffered writer, and the last writer
// of a burst flushes, so the frames produced together leave in one write (a response's
// HEADERS and DATA, the window updates of many streams) instead of one syscall each.
// Flow control is a proxy's: a stream's receive buffer holds at most its window, the
// window is returned only as the consumer reads, so a slow reader on one side slows the
// sender on the other instead of growing memory.
package h2

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/internal/rawio"
	"github.com/meshd/meshd/internal/reqctx"

	"golang.org/x/net/http2"
)

// Limits are one side's bounds and defences. The zero value of a field means its
// default (DefaultLimits), never "unlimited".
type Limits struct {
	// MaxConcurrentStreams is what a server advertises and enforces (streams above it
	// are refused with REFUSED_STREAM). Default 100.
	MaxConcurrentStreams uint32
	// StreamWindow and ConnWindow are the receive windows meshd grants the peer: the
	// most it buffers for one stream and for the connection. Defaults 64 KiB and 1 MiB.
	StreamWindow int32
	ConnWindow   int32
	// MaxHeaderListSize bounds a header block (RFC 9113 size: name + value + 32 per
	// field) and MaxHeaderFields its field count; past either a request is answered 431
	// (a response fails). Defaults 60 KiB and 100 fields, as the HTTP/1.1 front end.
	MaxHeaderListSize uint32
	MaxHeaderFields   int
	// MaxContinuations bounds the CONTINUATION frames of one header block. Default 64.
	MaxContinuations int
	// MaxEmptyFrames bounds consecutive frames with an empty payload that end nothing
	// (DATA, HEADERS, CONTINUATION): Envoy's max_consecutive_inbound_frames_with_empty_payload.
	// Default 1.
	MaxEmptyFrames int
	// ControlBurst and ControlRate bound SETTINGS and PING frames: a token bucket of
	// ControlBurst tokens refilled at ControlRate per second. Defaults 1000 and 100.
	ControlBurst int
	ControlRate  float64
	// WindowUpdatesPerData bounds WINDOW_UPDATE frames: at most 5 + 2×(streams +
	// WindowUpdatesPerData × DATA frames sent), Envoy's
	// max_inbound_window_update_frames_per_data_frame_sent. Default 10.
	WindowUpdatesPerData int
	// PriorityPerStream bounds PRIORITY frames: at most PriorityPerStream × (1 +
	// streams), Envoy's max_inbound_priority_frames_per_stream. Default 100.
	PriorityPerStream int
	// RapidResetStreams: once a connection has opened this many streams, it is closed
	// when at least half of them were reset by the client before meshd answered
	// (CVE-2023-44487), Envoy's premature_reset_total_stream_count. Default 500.
	RapidResetStreams int
	// IdleTimeout closes a connection (GOAWAY) with no open stream for this long; 0: never.
	IdleTimeout time.Duration
	// WriteTimeout bounds one flush to the socket; a peer that does not read for that
	// long loses its connection. Default 30 s.
	WriteTimeout time.Duration
	// Now is the clock of the flood limits (tests inject one); nil: time.Now.
	Now func() time.Time
}

// DefaultLimits are Envoy's recommended edge defaults.
func DefaultLimits() Limits {
	return Limits{
		MaxConcurrentStreams: 100,
		StreamWindow:         64 << 10,
		ConnWindow:           1 << 20,
		MaxHeaderListSize:    60 << 10,
		MaxHeaderFields:      100,
		MaxContinuations:     64,
		MaxEmptyFrames:       1,
		ControlBurst:         1000,
		ControlRate:          100,
		WindowUpdatesPerData: 10,
		PriorityPerStream:    100,
		RapidResetStreams:    500,
		WriteTimeout:         30 * time.Second,
	}
}

// withDefaults fills the zero fields.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxConcurrentStreams == 0 {
		l.MaxConcurrentStreams = d.MaxConcurrentStreams
	}
	if l.StreamWindow <= 0 {
		l.StreamWindow = d.StreamWindow
	}
	if l.ConnWindow <= 0 {
		l.ConnWindow = d.ConnWindow
	}
	if l.ConnWindow < initialWindow {
		l.ConnWindow = initialWindow
	}
	if l.MaxHeaderListSize == 0 {
		l.MaxHeaderListSize = d.MaxHeaderListSize
	}
	if l.MaxHeaderFields <= 0 {
		l.MaxHeaderFields = d.MaxHeaderFields
	}
	if l.MaxContinuations <= 0 {
		l.MaxContinuations = d.MaxContinuations
	}
	if l.MaxEmptyFrames <= 0 {
		l.MaxEmptyFrames = d.MaxEmptyFrames
	}
	if l.ControlBurst <= 0 {
		l.ControlBurst = d.ControlBurst
	}
	if l.ControlRate <= 0 {
		l.ControlRate = d.ControlRate
	}
	if l.WindowUpdatesPerData <= 0 {
		l.WindowUpdatesPerData = d.WindowUpdatesPerData
	}
	if l.PriorityPerStream <= 0 {
		l.PriorityPerStream = d.PriorityPerStream
	}
	if l.RapidResetStreams <= 0 {
		l.RapidResetStreams = d.RapidResetStreams
	}
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = d.WriteTimeout
	}
	if l.Now == nil {
		l.Now = time.Now
	}
	return l
}

// Flood names a defence that closed a connection.
type Flood int

// The defences, in Counters.Flood.
const (
	FloodSettings Flood = iota
	FloodPing
	FloodWindowUpdate
	FloodPriority
	FloodEmptyFrames
	FloodContinuation
	FloodRapidReset
	numFloods
)

var floodNames = [numFloods]string{"settings_flood", "ping_flood", "window_update_flood",
	"priority_flood", "empty_frame_flood", "continuation_flood", "rapid_reset"}

func (f Flood) String() string { return floodNames[f] }

// Floods lists every defence, for exposition.
func Floods() []Flood {
	out := make([]Flood, numFloods)
	for i := range out {
		out[i] = Flood(i)
	}
	return out
}

// Counters are one side's connection events (shared by the connections of a Server or
// Transport), read at scrape time.
type Counters struct {
	Conns          atomic.Uint64 // connections served or dialled
	Streams        atomic.Uint64 // streams opened
	RefusedStreams atomic.Uint64 // streams refused (limit, or after GOAWAY)
	ProtocolErrors atomic.Uint64 // connections closed for a protocol violation
	StreamErrors   atomic.Uint64 // streams reset for a protocol violation
	HeaderTooLarge atomic.Uint64 // header blocks past MaxHeaderListSize or MaxHeaderFields
	GoAwaySent     atomic.Uint64
	GoAwayReceived atomic.Uint64
	flood          [numFloods]atomic.Uint64
}

// Flood is how many connections the defence f closed.
func (c *Counters) Flood(f Flood) uint64 { return c.flood[f].Load() }

const (
	initialWindow     = 65535 // RFC 9113 §6.9.2
	defaultFrameSize  = 16384
	maxWindow         = math.MaxInt32
	writeBufferSize   = 32 << 10
	recentResetsKept  = 32
	maxStreamID       = 1<<31 - 1
	clientPreface     = http2.ClientPreface
	maxDataFrameChunk = 16384
)

// connError is a connection error (RFC 9113 §5.4.1): GOAWAY with code, then close.
type connError struct {
	code  http2.ErrCode
	why   string
	flood Flood
	isFl  bool
}

func (e *connError) Error() string {
	return fmt.Sprintf("http2: connection error %s: %s", errCode(e.code), e.why)
}

func protocolError(format string, a ...any) *connError {
	return &connError{code: http2.ErrCodeProtocol, why: fmt.Sprintf(format, a...)}
}

// StreamError is a stream reset, by the peer (RST_STREAM received) or by meshd.
type StreamError struct {
	Code   http2.ErrCode
	Remote bool // the peer reset the stream
	Cause  error
}

func (e *StreamError) Error() string {
	who := "meshd"
	if e.Remote {
		who = "peer"
	}
	s := "http2: stream reset by " + who + ": " + errCode(e.Code)
	if e.Cause != nil {
		s += ": " + e.Cause.Error()
	}
	return s
}

func (e *StreamError) Unwrap() error { return e.Cause }

// ErrUnprocessed is wrapped by the errors of requests the upstream did not process:
// refused (RST_STREAM REFUSED_STREAM) or above the last stream id of its GOAWAY (RFC
// 9113 §8.7). Such a request is safe to send again, even a non-idempotent one.
var ErrUnprocessed = errors.New("http2: request not processed by the upstream")

// ErrConnClosed is a stream's error when its connection ended under it.
var ErrConnClosed = errors.New("http2: connection closed")

// core is the state both sides share.
type core struct {
	nc net.Conn
	// rio does nc's writes (and, on a client connection, its reads) with system calls
	// that do not wake the runtime's sysmon thread when nc is a plain TCP socket
	// (internal/rawio).
	rio rawio.Conn
	br  *bufio.Reader
	fr  *http2.Framer
	lim Limits
	cnt *Counters

	// The write side: writers append frames to pend under wmu and wake the flusher,
	// which writes everything pending in one syscall. The frames produced while it was
	// busy, or before it got to run (one scheduling round), leave together; writers do
	// not wait for the socket unless maxPending bytes are already queued.
	wmu      sync.Mutex
	wcond    sync.Cond // (wmu) room in pend, or the flusher stopped
	pend     pendBuf
	spare    []byte
	kick     chan struct{}
	wclosing bool // (wmu) the connection is closing: flush, then stop
	// flushing (wmu) is set while a batch is being written, by the flusher or by a
	// writer writing inline; only its holder touches the socket and wdeadline.
	flushing bool
	// deferFlush (wmu) is set by a write that more frames follow at once (a request's
	// HEADERS before its DATA): it goes to the flusher, to leave with them.
	deferFlush bool
	// live counts the streams in the streams map; writers read it without mu to
	// decide whether to write inline (one stream: nothing to batch with).
	live    atomic.Int32
	flushed chan struct{} // closed when the flusher has stopped
	// linger (set before serving, server connections): closeConn half-closes the socket
	// instead of closing it, and the reader discards what the peer still sends until the
	// peer closes or lingerTimeout passes (its owner closes the socket then). A socket
	// closed with unread input sends RST, and a RST makes the peer's kernel drop what it
	// received and its application has not read yet: the end of the last responses and
	// the GOAWAY, which the close had just flushed. A client's SETTINGS or PING
	// acknowledgement arriving as the server closes is enough.
	linger bool
	// hardClose makes closeConn close at once (Server.Close).
	hardClose atomic.Bool
	henc      hpackEncoder
	werr      error
	wdeadline time.Time

	// mu guards the connection and stream state below, and every stream's fields
	// documented as such. It is never held while wmu is taken (wmu, then mu, is fine).
	mu             sync.Mutex
	sendCond       sync.Cond // send windows grew, or a stream or the connection ended
	streams        map[uint32]*stream
	active         int   // streams counted against the concurrency limit
	sendWin        int64 // the peer's connection window for our DATA
	recvWin        int32 // what the peer may still send on the connection
	recvUnacked    int32 // consumed connection credit not yet returned
	peerInitWin    int32
	peerMaxFrame   uint32
	peerMaxStreams uint32
	peerSettings   bool // the peer's first SETTINGS arrived
	ourAcked       bool // our SETTINGS were acknowledged
	closeErr       error
	closed         chan struct{}
	recentResets   [recentResetsKept]uint32
	recentN        int

	// side is the server or client connection: what ends a stream's remote half.
	side interface{ endRemoteLocked(*stream) }
	// removeHook is the side's hook for a stream leaving the connection (mu held),
	// bound once per connection: a method value taken per stream costs an allocation.
	removeHook func()

	// reader-only state
	hdec        *hpackDecoder
	hblock      headerBlock
	emptyFrames int
	ctlTokens   float64
	ctlLast     time.Time
	wuFrames    int64
	prioFrames  int64
	dataSent    atomic.Int64
	streamsOpen atomic.Int64 // streams the peer opened (server) or we opened (client)
	resets      int64        // streams reset prematurely by the peer
}

func (c *core) init(nc net.Conn, br *bufio.Reader, lim Limits, cnt *Counters) {
	c.nc = nc
	c.rio.Init(nc)
	if br == nil {
		br = bufio.NewReaderSize(&c.rio, 16<<10)
	}
	c.br = br
	c.pend.b = make([]byte, 0, writeBufferSize)
	c.wcond.L = &c.wmu
	c.kick = make(chan struct{}, 1)
	c.flushed = make(chan struct{})
	c.fr = http2.NewFramer(&c.pend, br)
	c.fr.SetReuseFrames()
	c.fr.SetMaxReadFrameSize(defaultFrameSize)
	c.lim = lim
	if cnt == nil {
		cnt = &Counters{}
	}
	c.cnt = cnt
	c.hdec = newHPACKDecoder(4096, c.hblock.emit)
	c.hdec.SetMaxStringLength(int(lim.MaxHeaderListSize))
	c.sendCond.L = &c.mu
	c.streams = make(map[uint32]*stream)
	c.sendWin = initialWindow
	c.recvWin = initialWindow
	c.peerInitWin = initialWindow
	c.peerMaxFrame = defaultFrameSize
	c.peerMaxStreams = 100 // until the peer's SETTINGS say otherwise (as Go's client)
	c.closed = make(chan struct{})
	c.ctlTokens = float64(lim.ControlBurst)
	c.ctlLast = lim.Now()
	go c.flusher()
}

// pendBuf is where the Framer writes: frames wait there for the flusher.
type pendBuf struct{ b []byte }

func (p *pendBuf) Write(x []byte) (int, error) {
	p.b = append(p.b, x...)
	return len(x), nil
}

// maxPending bounds the bytes queued for the flusher; writers wait beyond it, so a
// peer that does not read stops the writers instead of growing memory.
const maxPending = 1 << 20

// write runs fn (which writes frames) under the write lock and wakes the flusher.
func (c *core) write(fn func() error) error {
	c.wmu.Lock()
	for c.werr == nil && !c.wclosing && len(c.pend.b) >= maxPending {
		c.wcond.Wait()
	}
	return c.writeLocked(fn)
}

// writeNow is write without waiting for room in the queue, for a frame written once per
// connection (GOAWAY) by a caller that must not be held by a peer that does not read:
// write would wait for it until the write timeout.
func (c *core) writeNow(fn func() error) error {
	c.wmu.Lock()
	return c.writeLocked(fn)
}

// writeLocked is write's end; wmu is held, and released.
func (c *core) writeLocked(fn func() error) error {
	if c.werr != nil || c.wclosing {
		err := c.werr
		c.wmu.Unlock()
		if err == nil {
			err = ErrConnClosed
		}
		return err
	}
	err := fn()
	if err != nil && err != errNotUsable {
		c.werr = err
	}
	wake := len(c.pend.b) > 0
	deferred := c.deferFlush
	c.deferFlush = false
	if wake && !deferred && !c.flushing && c.live.Load() <= 1 && c.werr == nil && !c.wclosing {
		// A connection with one stream has nothing to batch this write with: writing
		// it now saves the flusher's hand-off and its yield (the latency of a lone
		// request). With several streams the flusher batches their frames.
		c.flushBatch()
		return err
	}
	c.wmu.Unlock()
	if wake {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
	return err
}

// writeLazy is write for the reader's own frames (acknowledgements, window updates).
// They are never written inline: a burst of them (acknowledgements of a PING flood)
// leaves in one write, and the reader never blocks on the socket.
func (c *core) writeLazy(fn func() error) {
	_ = c.write(func() error {
		c.deferFlush = true
		return fn()
	})
}

// flusher writes what writers queued, one syscall per batch, until the connection
// closes (it writes what was queued before the close first, a GOAWAY among it). The
// write deadline is moved only once a second (a quarter of the timeout, if shorter) of
// it has passed, so steady traffic does not touch the timer on every write.
func (c *core) flusher() {
	defer close(c.flushed)
	for {
		<-c.kick
		// A woken goroutine runs next on its P, before the ones already runnable:
		// yielding once lets the other streams' goroutines of this round queue their
		// frames too, so they share this write.
		runtime.Gosched()
		c.wmu.Lock()
		if c.flushing {
			// A writer is writing inline; it kicks again if more is queued.
			c.wmu.Unlock()
			continue
		}
		closing := c.wclosing
		if len(c.pend.b) == 0 {
			c.wmu.Unlock()
			if closing {
				return
			}
			continue
		}
		if c.flushBatch() != nil {
			return
		}
	}
}

// flushBatch writes what is queued, in one syscall; wmu is held, c.flushing is not
// set, and wmu is released. On a write error the connection is closed (on a goroutine
// of its own: closeConn waits for the flusher to stop) and the error returned; when more
// was queued meanwhile, or the connection is closing, the flusher is kicked.
func (c *core) flushBatch() error {
	buf := c.pend.b
	closing := c.wclosing
	c.pend.b = c.spare[:0]
	c.flushing = true
	c.wmu.Unlock()
	now := time.Now()
	if c.wdeadline.Sub(now) < c.lim.WriteTimeout-min(time.Second, c.lim.WriteTimeout/4) {
		c.wdeadline = now.Add(c.lim.WriteTimeout)
		_ = c.nc.SetWriteDeadline(c.wdeadline)
	}
	_, err := c.rio.Write(buf)
	c.wmu.Lock()
	c.flushing = false
	if cap(buf) <= 4*writeBufferSize {
		c.spare = buf[:0]
	} else {
		c.spare = make([]byte, 0, writeBufferSize)
	}
	if err != nil && c.werr == nil {
		c.werr = err
	}
	more := len(c.pend.b) > 0
	closing = closing || c.wclosing
	c.wcond.Broadcast()
	c.wmu.Unlock()
	if err != nil {
		cerr := fmt.Errorf("%w: write: %w", ErrConnClosed, err)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			go c.closeConn(cerr, false, 0, 0, "") // the peer does not read: now
		} else {
			go c.closeAfterReader(cerr)
		}
	}
	// Kicked on an error too: an inline writer's failure may come after closeConn's
	// kick was taken by a flusher that found the batch busy; it must look again.
	if more || closing || err != nil {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
	return err
}

// closeAfterReader closes the connection with err, the error of a write that found the
// peer gone (a reset, a broken pipe), unless the reader closes it first, within a
// second. What the peer sent before it went is queued in the socket ahead of the reset,
// and says more than the write's error: a GOAWAY (which streams it did not process), or
// a TLS alert (a server refusing the client's certificate after a TLS 1.3 handshake,
// which meshd reports as a connect failure). The reader reads it, then the end, and
// closes the connection with it; the write error would otherwise race it.
func (c *core) closeAfterReader(err error) {
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-c.closed:
		return
	case <-t.C:
	}
	c.closeConn(err, false, 0, 0, "")
}

// writeHeadersLocked encodes fields (with enc) and writes them as HEADERS and
// CONTINUATION frames within the peer's frame size; wmu is held.
func (c *core) writeHeadersLocked(id uint32, endStream bool, enc func(*hpackEncoder)) error {
	c.henc.begin()
	enc(&c.henc)
	block := c.henc.buf
	max := int(c.maxFrame())
	first := true
	for first || len(block) > 0 {
		n := min(len(block), max)
		frag := block[:n]
		block = block[n:]
		var err error
		if first {
			err = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: frag,
				EndStream: endStream, EndHeaders: len(block) == 0})
			first = false
		} else {
			err = c.fr.WriteContinuation(id, len(block) == 0, frag)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// writeDataLocked writes p as DATA frames within the peer's frame size (the windows
// are already reserved); wmu is held.
func (c *core) writeDataLocked(id uint32, p []byte, end bool) error {
	max := int(c.maxFrame())
	for {
		n := min(len(p), max)
		last := n == len(p)
		if err := c.fr.WriteData(id, end && last, p[:n]); err != nil {
			return err
		}
		if n > 0 {
			c.dataSent.Add(1)
		}
		p = p[n:]
		if last {
			return nil
		}
	}
}

func (c *core) maxFrame() uint32 {
	c.mu.Lock()
	m := c.peerMaxFrame
	c.mu.Unlock()
	return m
}

// reserve takes up to want bytes of send window for st, waiting while either window
// is empty. It fails when the stream or connection ended.
//
// A peer that keeps a window closed for the write timeout (it stopped reading the
// stream, or the connection) loses the stream: it is reset with CANCEL, so a reader
// that stalls cannot hold meshd's side of the stream, and what it relays, for ever.
func (c *core) reserve(st *stream, want int) (int, error) {
	c.mu.Lock()
	var stall *time.Timer
	for {
		if st.sendErr != nil {
			c.mu.Unlock()
			if stall != nil {
				stall.Stop()
			}
			return 0, st.sendErr
		}
		if c.closeErr != nil {
			c.mu.Unlock()
			if stall != nil {
				stall.Stop()
			}
			return 0, c.closeErr
		}
		n := int64(want)
		n = min(n, c.sendWin, int64(st.sendWin), int64(c.peerMaxFrame)*4)
		if n > 0 {
			c.sendWin -= n
			st.sendWin -= int32(n)
			c.mu.Unlock()
			if stall != nil {
				stall.Stop()
			}
			return int(n), nil
		}
		if stall == nil {
			st.stallArmed = true // (mu) its late call may still come: st is not reused
			stall = time.AfterFunc(c.lim.WriteTimeout, func() {
				c.resetStream(st, http2.ErrCodeCancel, fmt.Errorf("%w: the peer's flow-control window stayed closed for %v", ErrStalled, c.lim.WriteTimeout))
			})
		}
		c.sendCond.Wait()
	}
}

// ErrStalled is wrapped by the error of a stream whose peer did not open its window
// within the write timeout.
var ErrStalled = errors.New("http2: peer stopped reading")

// tryReserve is reserve without waiting: 0 when a window is empty.
func (c *core) tryReserve(st *stream, want int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.sendErr != nil || c.closeErr != nil {
		return 0
	}
	n := min(int64(want), c.sendWin, int64(st.sendWin), int64(c.peerMaxFrame)*4)
	if n <= 0 {
		return 0
	}
	c.sendWin -= n
	st.sendWin -= int32(n)
	return int(n)
}

// consumed returns n bytes of receive credit for st (nil: connection only) after its
// consumer read them, as WINDOW_UPDATE frames once half a window is owed, so a
// streaming reader costs one update per half window rather than one per read.
//
// n == 0 with st nil only checks the connection credit: data dropped unread (a reset
// stream's, or DATA on a closed stream) is credited to recvUnacked by its dropper, and
// must still go back to the peer, or the connection window would drain for good.
func (c *core) consumed(st *stream, n int) {
	if n < 0 || (n == 0 && st != nil) {
		return
	}
	var connInc, streamInc int32
	c.mu.Lock()
	c.recvUnacked += int32(n)
	if c.recvUnacked >= c.lim.ConnWindow/2 {
		connInc, c.recvUnacked = c.recvUnacked, 0
		c.recvWin += connInc
	}
	if st != nil && !st.remoteDone {
		st.recvUnacked += int32(n)
		if st.recvUnacked >= c.lim.StreamWindow/2 {
			streamInc, st.recvUnacked = st.recvUnacked, 0
			st.recvWin += streamInc
		}
	}
	closed := c.closeErr != nil
	c.mu.Unlock()
	if closed || (connInc == 0 && streamInc == 0) {
		return
	}
	_ = c.write(func() error {
		if connInc > 0 {
			if err := c.fr.WriteWindowUpdate(0, uint32(connInc)); err != nil {
				return err
			}
		}
		if streamInc > 0 {
			return c.fr.WriteWindowUpdate(st.id, uint32(streamInc))
		}
		return nil
	})
}

// controlToken takes one token of the SETTINGS/PING bucket; false: flood.
func (c *core) controlToken() bool {
	now := c.lim.Now()
	c.ctlTokens += now.Sub(c.ctlLast).Seconds() * c.lim.ControlRate
	c.ctlLast = now
	if c.ctlTokens > float64(c.lim.ControlBurst) {
		c.ctlTokens = float64(c.lim.ControlBurst)
	}
	if c.ctlTokens < 1 {
		return false
	}
	c.ctlTokens--
	return true
}

// noteEmpty counts consecutive empty frames that end nothing; false: flood.
func (c *core) noteEmpty(empty bool) bool {
	if !empty {
		c.emptyFrames = 0
		return true
	}
	c.emptyFrames++
	return c.emptyFrames <= c.lim.MaxEmptyFrames
}

func flood(f Flood, why string) *connError {
	return &connError{code: http2.ErrCodeEnhanceYourCalm, why: why, flood: f, isFl: true}
}

// handleSettings applies the peer's SETTINGS (in order, RFC 9113 §6.5.3) and
// acknowledges them.
func (c *core) handleSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		c.mu.Lock()
		c.ourAcked = true
		c.mu.Unlock()
		return nil
	}
	if !c.controlToken() {
		return flood(FloodSettings, "SETTINGS frames past the rate limit")
	}
	// The settings are applied and acknowledged under the write lock: a stream that
	// the new values unblock cannot write before the SETTINGS ACK is queued (peers
	// expect the acknowledgement first, RFC 9113 §6.5.3).
	var err error
	c.writeLazy(func() error {
		c.mu.Lock()
		err = f.ForeachSetting(c.applySettingLocked)
		c.peerSettings = true
		c.sendCond.Broadcast()
		c.mu.Unlock()
		if err != nil {
			return nil
		}
		return c.fr.WriteSettingsAck()
	})
	return err
}

// applySettingLocked applies one of the peer's settings; mu and wmu are held.
func (c *core) applySettingLocked(s http2.Setting) error {
	if err := s.Valid(); err != nil {
		var ce http2.ConnectionError
		if errors.As(err, &ce) {
			return &connError{code: http2.ErrCode(ce), why: "invalid setting " + s.String()}
		}
		return protocolError("invalid setting %v", s)
	}
	switch s.ID {
	case http2.SettingInitialWindowSize:
		delta := int64(s.Val) - int64(c.peerInitWin)
		c.peerInitWin = int32(s.Val)
		for _, st := range c.streams {
			w := int64(st.sendWin) + delta
			if w > maxWindow {
				return &connError{code: http2.ErrCodeFlowControl, why: "SETTINGS_INITIAL_WINDOW_SIZE overflows a stream window"}
			}
			st.sendWin = int32(w)
		}
	case http2.SettingHeaderTableSize:
		// The next block repeats the size update to 0 (wmu is held: handleSettings
		// applies settings in a write): RFC 7541 needs none, since meshd's table is
		// already empty, but nghttp2 before 1.47 expected one after every decrease.
		c.henc.sized = false
	case http2.SettingMaxFrameSize:
		c.peerMaxFrame = s.Val
	case http2.SettingMaxConcurrentStreams:
		c.peerMaxStreams = s.Val
	}
	return nil
}

func (c *core) handlePing(f *http2.PingFrame) error {
	if f.IsAck() {
		return nil
	}
	if !c.controlToken() {
		return flood(FloodPing, "PING frames past the rate limit")
	}
	data := f.Data
	c.writeLazy(func() error { return c.fr.WritePing(true, data) })
	return nil
}

// handleWindowUpdate credits a send window. Stream-level problems come back as a
// stream to reset.
func (c *core) handleWindowUpdate(f *http2.WindowUpdateFrame) (*stream, error) {
	c.wuFrames++
	if c.wuFrames > 5+2*(c.streamsOpen.Load()+int64(c.lim.WindowUpdatesPerData)*c.dataSent.Load()) {
		return nil, flood(FloodWindowUpdate, "WINDOW_UPDATE frames past the limit")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID == 0 {
		if c.sendWin+int64(f.Increment) > maxWindow {
			return nil, &connError{code: http2.ErrCodeFlowControl, why: "connection window overflow"}
		}
		c.sendWin += int64(f.Increment)
		c.sendCond.Broadcast()
		return nil, nil
	}
	st := c.streams[f.StreamID]
	if st == nil {
		return nil, nil
	}
	if int64(st.sendWin)+int64(f.Increment) > maxWindow {
		return st, &StreamError{Code: http2.ErrCodeFlowControl, Cause: errors.New("stream window overflow")}
	}
	st.sendWin += int32(f.Increment)
	c.sendCond.Broadcast()
	return nil, nil
}

func (c *core) handlePriority() error {
	c.prioFrames++
	if c.prioFrames > int64(c.lim.PriorityPerStream)*(1+c.streamsOpen.Load()) {
		return flood(FloodPriority, "PRIORITY frames past the limit")
	}
	return nil
}

// readHeaderBlock decodes the block of f and its CONTINUATION frames into c.hblock,
// bounding their count. A decoding failure is a connection error (the shared hpack
// state is lost); a malformed or oversized block is reported in c.hblock.
func (c *core) readHeaderBlock(f *http2.HeadersFrame, response, trailers bool) error {
	c.hblock.reset(response, trailers, c.lim.MaxHeaderListSize, c.lim.MaxHeaderFields)
	frag := f.HeaderBlockFragment()
	end := f.HeadersEnded()
	empty := len(frag) == 0 && !end && !f.StreamEnded()
	if !c.noteEmpty(empty) {
		return flood(FloodEmptyFrames, "empty HEADERS frames")
	}
	conts := 0
	for {
		if _, err := c.hdec.Write(frag); err != nil {
			return &connError{code: http2.ErrCodeCompression, why: err.Error()}
		}
		if end {
			break
		}
		fr, err := c.fr.ReadFrame()
		if err != nil {
			return err
		}
		cf, ok := fr.(*http2.ContinuationFrame)
		if !ok {
			return protocolError("expected CONTINUATION")
		}
		conts++
		if conts > c.lim.MaxContinuations {
			return flood(FloodContinuation, fmt.Sprintf("more than %d CONTINUATION frames", c.lim.MaxContinuations))
		}
		frag, end = cf.HeaderBlockFragment(), cf.HeadersEnded()
		if !c.noteEmpty(len(frag) == 0 && !end) {
			return flood(FloodEmptyFrames, "empty CONTINUATION frames")
		}
	}
	if err := c.hdec.Close(); err != nil {
		return &connError{code: http2.ErrCodeCompression, why: err.Error()}
	}
	return nil
}

// acceptData does the flow-control accounting of a DATA frame (RFC 9113 §6.9): the
// connection window always, the stream's when st is not nil. It returns the padding
// to credit back at once.
func (c *core) acceptData(st *stream, f *http2.DataFrame) (pad int32, err error) {
	n := int32(f.Length)
	pad = n - int32(len(f.Data()))
	if n > c.recvWin {
		return 0, &connError{code: http2.ErrCodeFlowControl, why: "DATA beyond the connection window"}
	}
	c.recvWin -= n
	if st != nil {
		if n > st.recvWin {
			return n, &StreamError{Code: http2.ErrCodeFlowControl, Cause: errors.New("DATA beyond the stream window")}
		}
		st.recvWin -= n
	}
	return pad, nil
}

// deliverData takes a DATA frame for st, open for receiving: flow-control accounting
// (a stream-level violation resets st), the content-length check, the data queued for
// its reader and, with END_STREAM, the end of the remote half. mu is held on entry and
// released on return. malformed reports a body longer or shorter than its
// content-length, for the caller to reset with its own words; pad is the padding to
// credit back.
func (c *core) deliverData(st *stream, f *http2.DataFrame) (pad int32, malformed bool, err error) {
	pad, err = c.acceptData(st, f)
	if err != nil {
		var se *StreamError
		if errors.As(err, &se) {
			c.recvUnacked += int32(f.Length)
			c.mu.Unlock()
			c.resetStream(st, se.Code, se)
			return 0, false, nil
		}
		c.mu.Unlock()
		return 0, false, err
	}
	data := f.Data()
	st.gotLen += int64(len(data))
	malformed = st.declLen >= 0 && (st.gotLen > st.declLen || (f.StreamEnded() && st.gotLen != st.declLen))
	if !malformed {
		st.appendData(data)
		if f.StreamEnded() {
			c.side.endRemoteLocked(st)
		}
	}
	c.mu.Unlock()
	return pad, malformed, nil
}

// rememberReset notes a stream meshd reset, whose late frames are ignored (RFC 9113
// §5.1, "closed").
func (c *core) rememberReset(id uint32) {
	c.recentResets[c.recentN%recentResetsKept] = id
	c.recentN++
}

func (c *core) wasReset(id uint32) bool {
	for _, r := range c.recentResets {
		if r == id && id != 0 {
			return true
		}
	}
	return false
}

// resetStream sends RST_STREAM and ends st with err; mu is not held.
func (c *core) resetStream(st *stream, code http2.ErrCode, err error) {
	c.mu.Lock()
	already := st.localDone && st.remoteDone
	if !already {
		st.failLocked(err)
		c.rememberReset(st.id)
		c.removeLocked(st)
	}
	c.mu.Unlock()
	if already {
		return
	}
	_ = c.write(func() error { return c.fr.WriteRSTStream(st.id, code) })
	c.consumed(nil, 0) // the stream's unread data, dropped by failLocked
}

// removeLocked forgets a finished stream; mu is held.
func (c *core) removeLocked(st *stream) {
	if st.removed {
		return
	}
	st.removed = true
	st.localDone, st.remoteDone = true, true
	c.uncountLocked(st)
	st.releaseBuf()
	if c.streams[st.id] == st {
		delete(c.streams, st.id)
		c.live.Add(-1)
	}
	if st.abort != nil {
		st.abort()
	}
	if st.cancel != nil {
		st.cancel.Cancel()
	}
	if st.watch != nil {
		st.watch.Unhook(st.watchID)
	}
	if st.onRemove != nil {
		st.onRemove()
	}
	c.sendCond.Broadcast()
}

// uncountLocked stops counting st against the concurrency limit (once); mu is held.
func (c *core) uncountLocked(st *stream) {
	if st.counted {
		st.counted = false
		c.active--
	}
}

// closeConn ends the connection: GOAWAY (unless err is the peer's doing), close,
// every stream failed. It is idempotent.
func (c *core) closeConn(err error, goaway bool, lastID uint32, code http2.ErrCode, debug string) {
	c.mu.Lock()
	if c.closeErr != nil {
		c.mu.Unlock()
		return
	}
	c.closeErr = err
	for _, st := range c.streams {
		st.failLocked(err)
		c.removeLocked(st)
	}
	c.sendCond.Broadcast()
	close(c.closed)
	c.mu.Unlock()
	// What is queued leaves first (a GOAWAY last), within a second: a peer that does
	// not read cannot hold the close for the write timeout.
	c.wmu.Lock()
	if goaway && c.werr == nil && !c.wclosing {
		c.cnt.GoAwaySent.Add(1)
		_ = c.fr.WriteGoAway(lastID, code, []byte(debug))
	}
	c.wclosing = true
	c.wcond.Broadcast()
	c.wmu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	select {
	case c.kick <- struct{}{}:
	default:
	}
	flushed := false
	select {
	case <-c.flushed:
		flushed = true
	case <-time.After(time.Second):
	}
	if flushed && c.halfClose() {
		return
	}
	_ = c.nc.Close()
}

// lingerTimeout bounds the reads of a connection closed with linger (core.linger).
const lingerTimeout = time.Second

// halfClose is a lingering close's start: the write side shut (FIN after what was
// flushed) and a deadline for the reader's discarding. False: close now (no linger, a
// hard close, a write that failed, or a socket that cannot be half-closed).
func (c *core) halfClose() bool {
	if !c.linger || c.hardClose.Load() {
		return false
	}
	c.wmu.Lock()
	werr := c.werr
	c.wmu.Unlock()
	if werr != nil {
		return false
	}
	if closeWrite(c.nc) != nil {
		return false
	}
	return c.nc.SetReadDeadline(time.Now().Add(lingerTimeout)) == nil
}

// closeWrite shuts nc's write side and that of every connection under it: over TLS a
// close_notify, then the TCP socket's FIN (tls.Conn.CloseWrite leaves the socket open).
func closeWrite(nc net.Conn) error {
	for {
		cw, ok := nc.(interface{ CloseWrite() error })
		if !ok {
			return errors.ErrUnsupported
		}
		if err := cw.CloseWrite(); err != nil {
			return err
		}
		u, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			return nil
		}
		nc = u.NetConn()
	}
}

// isClosed reports whether closeConn has run.
func (c *core) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// stream is one stream's state, client or server side. Fields marked (mu) are guarded
// by core.mu.
type stream struct {
	c  *core
	id uint32

	// (mu)
	sendWin     int32
	recvWin     int32
	recvUnacked int32
	sendErr     error // sends fail with it (reset, or connection gone)
	readErr     error // reads end with it after the buffer (io.EOF: END_STREAM)
	localDone   bool  // END_STREAM or RST_STREAM sent
	remoteDone  bool  // END_STREAM or RST_STREAM received
	removed     bool
	counted     bool      // in core.active
	cond        sync.Cond // data, end, head or error arrived
	buf         []byte    // received, not yet read
	roff        int
	trailer     map[string][]string
	declLen     int64 // content-length, -1 when absent
	gotLen      int64
	onRemove    func() // the connection's hook, mu held
	abort       func() // cancels the stream's request context when it is removed
	// watch is the request's context (client streams), watchID the hook that resets
	// the stream when it ends; removing the stream removes the hook.
	watch   *reqctx.Ctx
	watchID uint32
	// cancel is the request's context (server streams), cancelled when the stream is
	// removed (a method value in abort would cost an allocation per stream).
	cancel    *reqctx.Ctx
	owner     any  // *serverStream or *clientStream
	responded bool // server: the response head was sent (for rapid reset)
	// stallArmed (mu): reserve armed its stall timer for st, whose call may come after
	// the stream ended; such a server stream is never reused (serverConn.free).
	stallArmed bool
}

func (st *stream) init(c *core, id uint32) {
	st.c, st.id = c, id
	st.cond.L = &c.mu
	st.sendWin = c.peerInitWin
	st.recvWin = c.lim.StreamWindow
	if !c.ourAcked && st.recvWin < initialWindow {
		// Until our SETTINGS are acknowledged the peer may use the default window.
		st.recvWin = initialWindow
	}
	st.declLen = -1
}

// failLocked ends st's reads and writes with err (first error wins); mu is held.
// Unread data is dropped and its connection credit returned with the next update.
func (st *stream) failLocked(err error) {
	if st.sendErr == nil {
		st.sendErr = err
	}
	if st.readErr == nil || st.readErr == io.EOF {
		st.readErr = err
		if st.buf != nil {
			st.c.recvUnacked += int32(len(st.buf) - st.roff)
			st.roff = len(st.buf)
		}
	}
	st.releaseBuf()
	st.cond.Broadcast()
}

// appendData queues received data; mu is held.
func (st *stream) appendData(p []byte) {
	if len(p) == 0 {
		return
	}
	if st.buf == nil {
		st.buf = getBuf()
	}
	if st.roff > 0 && len(st.buf)+len(p) > cap(st.buf) {
		n := copy(st.buf, st.buf[st.roff:])
		st.buf = st.buf[:n]
		st.roff = 0
	}
	st.buf = append(st.buf, p...)
	st.cond.Broadcast()
}

func (st *stream) releaseBuf() {
	if st.buf != nil && len(st.buf)-st.roff == 0 {
		putBuf(st.buf)
		st.buf, st.roff = nil, 0
	}
}

// read reads received data, waiting for it; it returns the credit to the windows.
func (st *stream) read(p []byte) (int, error) {
	c := st.c
	c.mu.Lock()
	for st.buf == nil || len(st.buf)-st.roff == 0 {
		if st.readErr != nil {
			err := st.readErr
			c.mu.Unlock()
			return 0, err
		}
		st.cond.Wait()
	}
	n := copy(p, st.buf[st.roff:])
	st.roff += n
	var err error
	if st.roff == len(st.buf) {
		st.buf = st.buf[:0]
		st.roff = 0
		if st.readErr != nil {
			// The end arrived: nothing more will be appended. It is returned with the
			// last bytes, so a relay learns of the end (END_STREAM, trailers) in the same
			// read and sends the last data with it in one write, not two: the upstream of
			// a unary gRPC call got its END_STREAM in a second DATA frame and write, and
			// the client its trailers after the data in another.
			putBuf(st.buf)
			st.buf = nil
			err = st.readErr
		}
	}
	c.mu.Unlock()
	c.consumed(st, n)
	return n, err
}

// poolBufSize is the size of the pooled stream buffers (received data, response
// bodies). They are pooled as array pointers, so putting one back allocates nothing; a
// buffer that append grew past it is left to the collector.
const poolBufSize = 16 << 10

var bufPool = sync.Pool{New: func() any { return new([poolBufSize]byte) }}

func getBuf() []byte { return bufPool.Get().(*[poolBufSize]byte)[:0] }

func putBuf(b []byte) {
	if cap(b) != poolBufSize {
		return
	}
	bufPool.Put((*[poolBufSize]byte)(b[:poolBufSize]))
}

// dataBufPool holds the buffers DATA is written from (request bodies, relayed bodies).
var dataBufPool = sync.Pool{New: func() any { b := make([]byte, maxDataFrameChunk); return &b }}

// task is work for a pooled goroutine.
type task interface{ run() }

// workers runs tasks on goroutines kept between tasks (up to maxIdle parked): a
// request's goroutine grows its stack through the whole proxy path once, not once per
// request, and is not created each time. stop ends the parked ones.
//
// A parked worker waits on ch alone: a receive costs a fraction of a select over ch and
// a stop channel, which was paid once per request (issue 12). stop hands each parked
// worker a nil task instead.
type workers struct {
	ch      chan task
	idle    atomic.Int32
	stopped atomic.Bool
	once    sync.Once
}

const maxIdleWorkers = 256

func newWorkers() *workers { return &workers{ch: make(chan task)} }

// spawn runs t on a parked worker, or a new goroutine when none waits.
func (w *workers) spawn(t task) {
	select {
	case w.ch <- t:
	default:
		go w.loop(t)
	}
}

func (w *workers) loop(t task) {
	for {
		t.run()
		// Counted before stopped is read: a stop that found no worker counted (and
		// sent nothing) has set stopped before, and this worker sees it.
		if w.idle.Add(1) > maxIdleWorkers || w.stopped.Load() {
			w.idle.Add(-1)
			return
		}
		t = <-w.ch
		w.idle.Add(-1)
		if t == nil {
			return
		}
	}
}

// stop ends the parked workers, and those about to park, on a goroutine of its own: a
// nil task each, until none is counted. A counted worker that took a task instead, or
// saw stopped and left by itself, is looked for again after a moment.
func (w *workers) stop() {
	w.once.Do(func() {
		w.stopped.Store(true)
		go func() {
			for w.idle.Load() > 0 {
				t := time.NewTimer(10 * time.Millisecond)
				select {
				case w.ch <- nil:
				case <-t.C:
				}
				t.Stop()
			}
		}()
	})
}

// limitKeys are the names ParseLimits accepts, each with the field it sets.
var limitKeys = map[string]func(l *Limits, v float64) error{
	"max-concurrent-streams":        func(l *Limits, v float64) error { return intLimit(&l.MaxConcurrentStreams, v, 1, 1<<31-1) },
	"initial-stream-window":         func(l *Limits, v float64) error { return intLimit(&l.StreamWindow, v, 1, maxWindow) },
	"initial-connection-window":     func(l *Limits, v float64) error { return intLimit(&l.ConnWindow, v, initialWindow, maxWindow) },
	"max-continuations":             func(l *Limits, v float64) error { return intLimit(&l.MaxContinuations, v, 1, 1<<20) },
	"max-empty-frames":              func(l *Limits, v float64) error { return intLimit(&l.MaxEmptyFrames, v, 1, 1<<20) },
	"control-frame-burst":           func(l *Limits, v float64) error { return intLimit(&l.ControlBurst, v, 1, 1<<30) },
	"window-updates-per-data-frame": func(l *Limits, v float64) error { return intLimit(&l.WindowUpdatesPerData, v, 1, 1<<20) },
	"priority-frames-per-stream":    func(l *Limits, v float64) error { return intLimit(&l.PriorityPerStream, v, 1, 1<<20) },
	"rapid-reset-streams":           func(l *Limits, v float64) error { return intLimit(&l.RapidResetStreams, v, 1, 1<<30) },
	"control-frame-rate": func(l *Limits, v float64) error {
		if v <= 0 {
			return fmt.Errorf("must be above 0")
		}
		l.ControlRate = v
		return nil
	},
}

func intLimit[T int | int32 | uint32](dst *T, v float64, lo, hi float64) error {
	if v != float64(int64(v)) || v < lo || v > hi {
		return fmt.Errorf("must be a whole number from %v to %v", lo, hi)
	}
	*dst = T(v)
	return nil
}

// LimitNames lists the keys of ParseLimits, sorted.
func LimitNames() []string {
	out := make([]string, 0, len(limitKeys))
	for k := range limitKeys {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// ParseLimits reads "key=value,key=value" (LimitNames) over base: the command line's
// way to change the HTTP/2 defences. An unknown key or a value out of range is an
// error naming it.
func ParseLimits(s string, base Limits) (Limits, error) {
	l := base
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		k = strings.TrimSpace(k)
		set := limitKeys[k]
		if !ok || set == nil {
			return base, fmt.Errorf("http2 limit %q: want key=value with key one of %s", part, strings.Join(LimitNames(), ", "))
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err == nil {
			err = set(&l, f)
		}
		if err != nil {
			return base, fmt.Errorf("http2 limit %s=%s: %w", k, v, err)
		}
	}
	return l, nil
}
