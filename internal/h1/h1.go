// Package h1 is meshd's HTTP/1.1 message codec: a strict (RFC 9112 / RFC 9110) parser for
// request and response heads, a body relay that validates and re-frames chunked bodies, and
// head writers that strip hop-by-hop fields. It is the hot path of the L7 proxy, so in the
// steady state it allocates nothing: parsed strings alias a buffer owned by the message and
// writers append straight into a *bufio.Writer.
//
// Strictness is deliberate. Every place where two HTTP implementations can disagree about where
// a message ends is a request-smuggling vector, and a proxy sits between two implementations.
// Where RFC 9112 lets a recipient either repair or reject a malformed message, this package
// rejects; each rule cites its section next to the code that enforces it.
//
// Concurrency: a Reader, a Request and a Response belong to one goroutine at a time (the
// connection's). Package-level functions are safe for concurrent use on distinct arguments.
package h1

import (
	"strconv"
	"unsafe"
)

// Header is one field line. Name and Value alias the buffer of the message they were parsed
// into and stay valid only until the next Read* or Reset on that message; copy them
// (strings.Clone) to keep them longer. Value has leading and trailing whitespace removed.
type Header struct {
	Name, Value string
}

// Limits bound what a Reader accepts. Zero fields mean the documented defaults.
type Limits struct {
	// MaxHeaderBytes bounds the request line (414 beyond it) and, separately, the header
	// section including CRLFs (431 beyond it). For responses both bounds answer 502.
	// Default 64 KiB, the figure Envoy's edge guidance uses (60 KiB).
	MaxHeaderBytes int
	// MaxHeaders bounds the number of header field lines (431 beyond it). Default 100.
	MaxHeaders int
}

// Defaults for Limits.
const (
	DefaultMaxHeaderBytes = 64 << 10
	DefaultMaxHeaders     = 100
)

// MaxInterim bounds the interim (1xx other than 101) responses a proxy takes before the
// final one of a request. RFC 9110 §15.2 sets no bound, but an upstream that sends them
// without end would hold the exchange and make meshd relay heads forever; a real one
// sends a 100 Continue and a 103 or two. Callers answer a response past the bound as a
// malformed one (502).
const MaxInterim = 16

func (l Limits) withDefaults() Limits {
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if l.MaxHeaders <= 0 {
		l.MaxHeaders = DefaultMaxHeaders
	}
	return l
}

// Error is a protocol violation found while parsing a message. Status is the HTTP status the
// caller should answer with: 400, 414, 431, 501 or 505 for requests read from a client; always
// 502 for responses read from an upstream (RFC 9112 §5.2, §6.3: a proxy answers a broken
// upstream message with 502). Msg names the offending element and, when short, its value.
// After an Error the connection's framing is unknown: answer (if a request) and close it.
type Error struct {
	Status int
	Msg    string
}

func (e *Error) Error() string {
	return "h1: " + strconv.Itoa(e.Status) + ": " + e.Msg
}

// quote renders an offending value for an error message, copying it (the input aliases a
// reused buffer) and bounding its length so an attacker cannot make logs huge.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}

// msgBuf is the storage shared by Request and Response: the raw head bytes and the spans of
// each field line inside them.
type msgBuf struct {
	buf   []byte
	spans []fieldSpan
	// noConn is set when the head was parsed without a Connection field line: the
	// writers and the forwarding rules then skip their scan for the fields a Connection
	// field names (two passes over the fields per message; issue 17). A Connection field
	// added to Headers afterwards is not looked at (meshd adds none: config refuses
	// header rules on it).
	noConn bool
}

// ConnectionFields reports whether the message may hold Connection field lines: false
// only for a head read by a Reader that had none.
func (m *msgBuf) ConnectionFields() bool { return !m.noConn }

type fieldSpan struct {
	nameStart, nameEnd, valStart, valEnd int
}

// b2s returns a string aliasing b. The package's contract (strings valid until the next read
// into the same message) is what makes this sound: the bytes are not modified while the
// strings are in use by a caller that honours it.
func b2s(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// Request is a parsed request head. The zero value is ready to use; reuse one Request per
// connection so that its buffers are reused (0 allocations per request in the steady state).
type Request struct {
	Method, Target, Proto string // Proto is "HTTP/1.1" or "HTTP/1.0"
	Major, Minor          int
	// Headers are the field lines in wire order, names as received.
	Headers []Header
	// Host is the request's authority: the target's authority for absolute-form targets
	// (RFC 9112 §3.2.2: the Host field is then ignored) and for CONNECT's authority-form,
	// otherwise the Host field value.
	// "" only for an HTTP/1.0 request without Host (or an explicitly empty Host field).
	// WriteRequestHead writes this value as the Host field, so a caller may rewrite it.
	Host string
	// ContentLength is the Content-Length value, or -1 when the field is absent (then the
	// body is empty unless Chunked, RFC 9112 §6.3 rule 7).
	ContentLength int64
	// Chunked is set for Transfer-Encoding: chunked, the only transfer coding accepted.
	Chunked bool
	// Close is set when the connection must close after this exchange: Connection: close,
	// or HTTP/1.0 without Connection: keep-alive (RFC 9112 §9.3).
	Close bool
	// Upgrade is the Upgrade field value when Connection lists "upgrade" (HTTP/1.1 only,
	// RFC 9110 §7.8), else "".
	Upgrade string
	// ExpectContinue is set for Expect: 100-continue in an HTTP/1.1 request (RFC 9110
	// §10.1.1: HTTP/1.0 requests' expectations are ignored).
	ExpectContinue bool

	hasHost bool // a Host field line was received; WriteRequestHead keeps its position
	msgBuf
}

// Get returns the first value of the field called name, which must be given in lower case.
// It does not allocate. Get makes *Request satisfy the router's HeaderGetter.
func (r *Request) Get(name string) (string, bool) { return getHeader(r.Headers, name) }

// HasBody reports whether a message body follows the head.
func (r *Request) HasBody() bool { return r.ContentLength > 0 || r.Chunked }

// Reset clears r, keeping its buffers for reuse.
func (r *Request) Reset() {
	*r = Request{Headers: r.Headers[:0], ContentLength: -1, msgBuf: msgBuf{buf: r.buf[:0], spans: r.spans[:0]}}
}

// Response is a parsed response head. Reuse one per upstream connection.
type Response struct {
	Proto        string // "HTTP/1.1" or "HTTP/1.0"
	Major, Minor int
	Status       int    // 100-599
	Reason       string // may be empty
	Headers      []Header
	// ContentLength is the Content-Length value or -1. For a response without a body
	// (NoBody) it is kept only for 304 and responses to HEAD, where it describes the
	// representation and is forwarded (RFC 9110 §8.6); otherwise it is -1.
	ContentLength int64
	Chunked       bool
	// Close is set when the upstream connection cannot be reused after this response:
	// Connection: close, HTTP/1.0 without keep-alive, or a read-until-close body.
	Close bool
	// NoBody is set when no body follows, per RFC 9112 §6.3 rules 1-2: a response to
	// HEAD, a 1xx, 204 or 304 status, or a 2xx answer to CONNECT.
	NoBody bool
	// Upgrade is the Upgrade field value of a 101 response whose Connection lists
	// "upgrade", else "".
	Upgrade string

	msgBuf
}

// Get returns the first value of the field called name (given in lower case). No allocation.
func (r *Response) Get(name string) (string, bool) { return getHeader(r.Headers, name) }

// UntilClose reports whether the body is delimited by the upstream closing the connection
// (RFC 9112 §6.3 rule 8).
func (r *Response) UntilClose() bool { return !r.NoBody && !r.Chunked && r.ContentLength < 0 }

// Reset clears r, keeping its buffers for reuse.
func (r *Response) Reset() {
	*r = Response{Headers: r.Headers[:0], ContentLength: -1, msgBuf: msgBuf{buf: r.buf[:0], spans: r.spans[:0]}}
}

func getHeader(hs []Header, name string) (string, bool) {
	for i := range hs {
		if equalFoldLower(hs[i].Name, name) {
			return hs[i].Value, true
		}
	}
	return "", false
}
