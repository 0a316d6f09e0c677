// Package listen is the proxy's listener room: the downstream connection with its
// deadline bookkeeping and drain state (Conn), the set of open connections a drain walks
// (Tracker), the accept loop, the original destination of a redirected connection, and
// the sniffing that tells HTTP/1.x, the HTTP/2 preface, a TLS ClientHello and opaque TCP
// apart from the first bytes.
package listen

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Protocol is what the first bytes of an egress connection say it speaks.
type Protocol uint8

const (
	HTTP1  Protocol = iota + 1 // an HTTP/1.x request line
	HTTP2                      // the HTTP/2 prior-knowledge preface (h2c)
	TLS                        // a TLS handshake record (ClientHello)
	Opaque                     // anything else, or nothing at all in time (server-first)
)

func (p Protocol) String() string {
	switch p {
	case HTTP1:
		return "http1"
	case HTTP2:
		return "http2"
	case TLS:
		return "tls"
	case Opaque:
		return "tcp"
	}
	return "unknown"
}

// DefaultSniffTimeout is how long an egress connection may stay silent before meshd
// treats it as a server-first Protocol (MySQL, SMTP, ...) and relays it as opaque TCP.
// Clients of client-first protocols send their first bytes right after connecting.
const DefaultSniffTimeout = 200 * time.Millisecond

// Sniff classifies a connection by the bytes br can peek; it consumes nothing, so
// whoever serves the connection next reads them again. It never asks br for more
// bytes than the client already sent plus one, so a complete short message (an
// HTTP/1.0 request, a one-line command) never waits for bytes that will not come.
//
// arm is called before every wait for more bytes; it sets the read deadline of the
// underlying connection (now + the sniff timeout), so each wait is bounded and progress
// extends it. A timeout before the first byte means a server-first Protocol: opaque.
// A timeout after some bytes classifies what arrived: a prefix of an HTTP request line
// stays HTTP (a slow client), a TLS record whose ClientHello did not fully arrive is TLS
// without SNI. For TLS, sni is the ClientHello's server_name (nil if absent); it
// aliases br's buffer and is valid until br is read or reset. err is a connection
// error (EOF or reset before any byte).
func Sniff(br *bufio.Reader, arm func()) (p Protocol, sni []byte, err error) {
	arm()
	b, err := br.Peek(1)
	if len(b) == 0 {
		if isTimeout(err) {
			return Opaque, nil, nil
		}
		return 0, nil, err
	}
	switch c := b[0]; {
	case c == recordTypeHandshake:
		return sniffTLS(br, arm)
	case 'A' <= c && c <= 'Z':
		return sniffHTTP(br, arm), nil, nil
	}
	return Opaque, nil, nil
}

// peekMore returns every buffered byte, waiting for at least one more than have when
// nothing beyond have is buffered. It stops at the buffer's size (bufio.ErrBufferFull).
func peekMore(br *bufio.Reader, have int) ([]byte, error) {
	if n := br.Buffered(); n > have {
		return br.Peek(n)
	}
	if have >= br.Size() {
		b, _ := br.Peek(have)
		return b, bufio.ErrBufferFull
	}
	return br.Peek(have + 1)
}

// sniffHTTP tells an HTTP/1.x request line or the HTTP/2 preface from other text
// protocols that start with a capital letter (Redis inline commands, SMTP verbs).
func sniffHTTP(br *bufio.Reader, arm func()) Protocol {
	have := 0
	for {
		b, err := peekMore(br, have)
		if len(b) > have {
			have = len(b)
			if v := classifyRequestLine(b); v != lineUndecided {
				return v.Protocol()
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				// HTTP requests end their head with CRLF; a client that stopped sending
				// before that speaks something else.
				return Opaque
			}
			// A stall, or a request line longer than the buffer, with everything so far
			// consistent with HTTP: let the HTTP/1.1 parser judge (and time out).
			return HTTP1
		}
		arm()
	}
}

type lineVerdict uint8

const (
	lineUndecided lineVerdict = iota
	lineHTTP1
	lineHTTP2
	lineOther
)

func (v lineVerdict) Protocol() Protocol {
	switch v {
	case lineHTTP1:
		return HTTP1
	case lineHTTP2:
		return HTTP2
	}
	return Opaque
}

// maxMethodLen bounds the request method the sniffer accepts; registered methods are
// at most 17 bytes (VERSION-CONTROL, RFC 3253).
const maxMethodLen = 24

// classifyRequestLine judges the start of a connection's bytes: the HTTP/2 preface
// (RFC 9113 §3.4), an HTTP/1.x request line (RFC 9112 §3: method SP target SP
// HTTP-version CRLF; a bare LF is tolerated as §2.2 allows), something else, or
// undecided while b is a proper prefix of either.
func classifyRequestLine(b []byte) lineVerdict {
	preface := bytes.HasPrefix(http2Preface, b[:min(len(b), len(http2Preface))])
	if preface && len(b) >= len(http2Preface) {
		return lineHTTP2
	}
	v := classifyHTTP1(b)
	if v == lineOther && preface {
		return lineUndecided
	}
	return v
}

func classifyHTTP1(b []byte) lineVerdict {
	i := 0
	for ; i < len(b) && b[i] != ' '; i++ {
		if !isTokenByte(b[i]) || i >= maxMethodLen {
			return lineOther
		}
	}
	if i == len(b) {
		return lineUndecided
	}
	if i == 0 {
		return lineOther
	}
	i++ // SP
	start := i
	for ; i < len(b) && b[i] != ' '; i++ {
		if b[i] <= ' ' || b[i] == 0x7f {
			return lineOther
		}
	}
	if i == len(b) {
		return lineUndecided
	}
	if i == start {
		return lineOther
	}
	rest := b[i+1:]
	const version = "HTTP/1."
	n := min(len(rest), len(version))
	if string(rest[:n]) != version[:n] {
		return lineOther
	}
	if len(rest) <= len(version) {
		return lineUndecided
	}
	if d := rest[len(version)]; d != '0' && d != '1' {
		return lineOther
	}
	rest = rest[len(version)+1:]
	switch {
	case len(rest) == 0:
		return lineUndecided
	case rest[0] == '\n':
		return lineHTTP1
	case rest[0] != '\r':
		return lineOther
	case len(rest) == 1:
		return lineUndecided
	case rest[1] == '\n':
		return lineHTTP1
	}
	return lineOther
}

// isTokenByte reports whether c is a tchar (RFC 9110 §5.6.2).
func isTokenByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return c != 0 && strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// TLS record and handshake constants (RFC 8446 §5.1, §4).
const (
	recordTypeHandshake    = 0x16
	handshakeClientHello   = 0x01
	recordHeaderLen        = 5
	maxRecordLen           = 1<<14 + 2048 // TLSCiphertext bound; a ClientHello record is plaintext but never larger
	extensionServerName    = 0
	serverNameTypeHostName = 0
)

// sniffTLS waits for the first TLS record and returns the ClientHello's SNI. A record
// header that is not a TLS 1.0-1.3 handshake header makes the connection opaque.
func sniffTLS(br *bufio.Reader, arm func()) (Protocol, []byte, error) {
	need := recordHeaderLen
	have := 0
	var b []byte
	for {
		var err error
		b, err = peekMore(br, have)
		if len(b) > have {
			have = len(b)
			if need == recordHeaderLen && have >= recordHeaderLen {
				if b[1] != 3 || b[2] > 4 {
					return Opaque, nil, nil
				}
				l := int(b[3])<<8 | int(b[4])
				if l == 0 || l > maxRecordLen {
					return Opaque, nil, nil
				}
				// A record larger than the buffer is parsed as far as it fits.
				need = min(recordHeaderLen+l, br.Size())
			}
			if have >= need {
				break
			}
		}
		if err != nil {
			if have < recordHeaderLen {
				// Not even a record header: some Protocol whose first byte is 0x16.
				return Opaque, nil, nil
			}
			// The ClientHello stopped short (stall, EOF): route without SNI.
			break
		}
		arm()
	}
	end := min(have, need)
	return TLS, clientHelloSNI(b[recordHeaderLen:end]), nil
}

// clientHelloSNI returns the host_name of the server_name extension (RFC 6066 §3) in a
// ClientHello handshake message (RFC 8446 §4.1.2), or nil when there is none or h is
// malformed or cut short before it. It aliases h and never allocates.
func clientHelloSNI(h []byte) []byte {
	if len(h) < 4 || h[0] != handshakeClientHello {
		return nil
	}
	if n := int(h[1])<<16 | int(h[2])<<8 | int(h[3]); n < len(h)-4 {
		h = h[:4+n]
	}
	h = h[4:]
	// legacy_version (2) and random (32).
	if len(h) < 34 {
		return nil
	}
	h = h[34:]
	var ok bool
	if h, ok = skipVector(h, 1); !ok { // legacy_session_id
		return nil
	}
	if h, ok = skipVector(h, 2); !ok { // cipher_suites
		return nil
	}
	if h, ok = skipVector(h, 1); !ok { // legacy_compression_methods
		return nil
	}
	if len(h) < 2 {
		return nil
	}
	if n := int(h[0])<<8 | int(h[1]); n < len(h)-2 {
		h = h[:2+n]
	}
	h = h[2:]
	for len(h) >= 4 {
		typ := int(h[0])<<8 | int(h[1])
		n := int(h[2])<<8 | int(h[3])
		h = h[4:]
		if n > len(h) {
			return nil
		}
		if typ == extensionServerName {
			return hostName(h[:n])
		}
		h = h[n:]
	}
	return nil
}

// skipVector skips a vector with a length prefix of lenBytes (1 or 2) bytes.
func skipVector(h []byte, lenBytes int) ([]byte, bool) {
	if len(h) < lenBytes {
		return nil, false
	}
	n := int(h[0])
	if lenBytes == 2 {
		n = n<<8 | int(h[1])
	}
	h = h[lenBytes:]
	if n > len(h) {
		return nil, false
	}
	return h[n:], true
}

// hostName extracts the host_name entry of a ServerNameList; a name that is not a
// plausible DNS name (RFC 6066: ASCII, no trailing dot required, at most 255 bytes) is
// ignored.
func hostName(e []byte) []byte {
	if len(e) < 2 {
		return nil
	}
	n := int(e[0])<<8 | int(e[1])
	e = e[2:]
	if n > len(e) {
		return nil
	}
	e = e[:n]
	for len(e) >= 3 {
		typ := e[0]
		l := int(e[1])<<8 | int(e[2])
		e = e[3:]
		if l > len(e) {
			return nil
		}
		if typ == serverNameTypeHostName {
			name := e[:l]
			if len(name) == 0 || len(name) > 255 {
				return nil
			}
			for _, c := range name {
				if !(c == '.' || c == '-' || c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
					return nil
				}
			}
			return name
		}
		e = e[l:]
	}
	return nil
}

// http2Preface is the client connection preface (RFC 9113 §3.4).
var http2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// SniffH2 reads just enough to tell the HTTP/2 preface from an HTTP/1.x request,
// without waiting for bytes a short HTTP/1.0 request would never send.
func SniffH2(br *bufio.Reader) (bool, error) {
	n := 1
	for {
		b, err := br.Peek(n)
		if len(b) > 0 && !bytes.HasPrefix(http2Preface, b[:min(len(b), len(http2Preface))]) {
			return false, nil
		}
		if len(b) >= len(http2Preface) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		// Look at everything already buffered but never ask for more than the preface:
		// Peek beyond what the client sent blocks until it sends more, and a complete
		// short request (POST/PUT/PATCH share the preface's leading 'P') sends nothing more.
		n = min(max(br.Buffered(), n+1), len(http2Preface))
	}
}

// LooksHTTP1 reports whether the first line the client sent (read up to 8 KiB, the
// line's end or what arrives before an error) ends with an HTTP/1.x version, as a
// request line does.
func LooksHTTP1(br *bufio.Reader) bool {
	const maxLine = 8 << 10
	n := max(br.Buffered(), 1)
	for {
		b, err := br.Peek(min(n, maxLine, br.Size()))
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line := bytes.TrimSuffix(b[:i], []byte("\r"))
			return bytes.HasSuffix(line, []byte(" HTTP/1.1")) || bytes.HasSuffix(line, []byte(" HTTP/1.0"))
		}
		if err != nil || len(b) >= maxLine || len(b) >= br.Size() {
			// No complete line: let the HTTP/1.1 server judge what there is.
			return true
		}
		n = max(br.Buffered(), len(b)+1)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// readBufSize is the size of the pooled downstream readers: 16 KiB holds a typical
// request head and a small body in one read (and is the sniff window).
const readBufSize = 16 << 10

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufSize) }}

// readersOut counts the pooled readers taken and not yet returned: downstream
// connections holding a read buffer (an idle HTTP/1.1 connection holds none).
var readersOut atomic.Int64

// ReadersOut is how many downstream read buffers are in use now.
func ReadersOut() int64 { return readersOut.Load() }

// GetReader takes a pooled reader over r; the listener sniffs with it and hands it to
// the front end that serves the connection.
func GetReader(r io.Reader) *bufio.Reader {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(r)
	readersOut.Add(1)
	return br
}

// PutReader returns br to the pool. No read through br may be pending.
func PutReader(br *bufio.Reader) { br.Reset(nil); readerPool.Put(br); readersOut.Add(-1) }
