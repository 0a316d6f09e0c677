package h1

import (
	"bufio"
	"io"
	"strconv"
)

// BodyError is an I/O failure while relaying a body. Op says which side failed, so the
// caller can classify it by origin: "read" (the source peer: reset, timeout, or
// io.ErrUnexpectedEOF when it closed before the framing said the body ends) or "write"
// (the destination peer). Protocol violations in a chunked body are *Error instead.
type BodyError struct {
	Op  string // "read" or "write"
	Err error
}

func (e *BodyError) Error() string { return "h1: body " + e.Op + ": " + e.Err.Error() }
func (e *BodyError) Unwrap() error { return e.Err }

func readErr(err error) error  { return &BodyError{Op: "read", Err: err} }
func writeErr(err error) error { return &BodyError{Op: "write", Err: err} }

// Trailer section limits: the trailer section is a header section (RFC 9112 §7.1.2), bounded
// like one.
const (
	maxTrailerBytes  = DefaultMaxHeaderBytes
	maxTrailerFields = DefaultMaxHeaders
)

// BodyCopy describes how to relay one message body; its zero value copies nothing. Set the
// framing fields from a parsed Request or Response.
type BodyCopy struct {
	// ContentLength is the exact body length when neither Chunked nor UntilClose is set;
	// values <= 0 mean no body.
	ContentLength int64
	// Chunked: the source body is chunked. It is validated (RFC 9112 §7.1) and re-emitted
	// chunked with the same chunk sizes, extensions dropped (they are hop-by-hop in
	// effect: meshd understands none), and trailer fields forwarded after validation.
	Chunked bool
	// UntilClose: the body ends when the source reaches EOF (RFC 9112 §6.3 rule 8).
	UntilClose bool
	// Flush makes the copy flush dst whenever src has no buffered bytes left, i.e. before
	// every read that may block, so streams (server-sent events, gRPC-web, long polls)
	// are not held back in dst's buffer. Without it the caller flushes once at the end.
	Flush bool
	// Dechunk writes a chunked body's payload without framing and drops its trailers, for
	// an HTTP/1.0 destination that delimits the body by connection close (RFC 9112 §7.1:
	// chunked must not be sent to HTTP/1.0 recipients). The caller writes a head without
	// framing fields and closes the connection afterwards.
	Dechunk bool
	// DropTrailers discards trailer fields instead of forwarding them, for a destination
	// that cannot take them.
	DropTrailers bool
}

// CopyBody relays one message body from src to dst with the given framing and returns the
// number of payload bytes copied (chunk framing not counted). Content-Length bodies are
// copied exactly (a short source gives a *BodyError wrapping io.ErrUnexpectedEOF); chunked
// bodies are validated and re-emitted chunked; untilClose copies to EOF. It reads and writes
// through the bufio buffers only (src.Peek/Discard), allocating nothing on success. It does
// not flush dst at the end. Errors: *Error (status 400) for a malformed chunked body,
// *BodyError for I/O failures. After any error the framing on both connections is unknown:
// close both.
func CopyBody(dst *bufio.Writer, src *bufio.Reader, contentLength int64, chunked, untilClose bool) (int64, error) {
	return BodyCopy{ContentLength: contentLength, Chunked: chunked, UntilClose: untilClose}.Copy(dst, src)
}

// CopyBodyFlush is CopyBody with BodyCopy.Flush set: dst is flushed whenever src has nothing
// buffered, for streaming responses.
func CopyBodyFlush(dst *bufio.Writer, src *bufio.Reader, contentLength int64, chunked, untilClose bool) (int64, error) {
	return BodyCopy{ContentLength: contentLength, Chunked: chunked, UntilClose: untilClose, Flush: true}.Copy(dst, src)
}

// Copy relays the body described by c from src to dst; see CopyBody for the contract.
func (c BodyCopy) Copy(dst *bufio.Writer, src *bufio.Reader) (int64, error) {
	switch {
	case c.Chunked:
		return c.copyChunked(dst, src)
	case c.UntilClose:
		return c.copyN(dst, src, -1)
	case c.ContentLength > 0:
		return c.copyN(dst, src, c.ContentLength)
	}
	return 0, nil
}

// fill makes sure src has at least one buffered byte, flushing dst first when streaming.
func (c *BodyCopy) fill(dst *bufio.Writer, src *bufio.Reader) error {
	if src.Buffered() > 0 {
		return nil
	}
	if c.Flush && dst.Buffered() > 0 {
		if err := dst.Flush(); err != nil {
			return writeErr(err)
		}
	}
	_, err := src.Peek(1)
	return err
}

// copyN copies n bytes, or until EOF when n < 0.
func (c *BodyCopy) copyN(dst *bufio.Writer, src *bufio.Reader, n int64) (int64, error) {
	var written int64
	for n != 0 {
		if err := c.fill(dst, src); err != nil {
			if _, ok := err.(*BodyError); ok {
				return written, err
			}
			if err == io.EOF {
				if n < 0 {
					return written, nil
				}
				err = io.ErrUnexpectedEOF
			}
			return written, readErr(err)
		}
		k := src.Buffered()
		if n > 0 && int64(k) > n {
			k = int(n)
		}
		b, _ := src.Peek(k) // k <= Buffered: no read, no error
		if _, err := dst.Write(b); err != nil {
			return written, writeErr(err)
		}
		_, _ = src.Discard(k)
		written += int64(k)
		if n > 0 {
			n -= int64(k)
		}
	}
	return written, nil
}

func (c *BodyCopy) copyChunked(dst *bufio.Writer, src *bufio.Reader) (int64, error) {
	var written int64
	framed := !c.Dechunk
	for {
		if err := c.fill(dst, src); err != nil {
			if _, ok := err.(*BodyError); ok {
				return written, err
			}
			return written, readErr(eofUnexpected(err))
		}
		line, err := readChunkLine(src)
		if err != nil {
			return written, err
		}
		size, perr := parseChunkLine(line)
		if perr != nil {
			return written, perr
		}
		if size == 0 {
			break
		}
		if framed {
			if err := writeInt(dst, size, 16); err != nil {
				return written, writeErr(err)
			}
			if _, err := dst.WriteString("\r\n"); err != nil {
				return written, writeErr(err)
			}
		}
		n, err := c.copyN(dst, src, size)
		written += n
		if err != nil {
			return written, err
		}
		// RFC 9112 §7.1: chunk-data is followed by exactly CRLF.
		crlf, err := src.Peek(2)
		if err != nil {
			return written, readErr(eofUnexpected(err))
		}
		if crlf[0] != '\r' || crlf[1] != '\n' {
			return written, &Error{400, "chunk data not followed by CRLF"}
		}
		_, _ = src.Discard(2)
		if framed {
			if _, err := dst.WriteString("\r\n"); err != nil {
				return written, writeErr(err)
			}
		}
	}
	if framed {
		if _, err := dst.WriteString("0\r\n"); err != nil {
			return written, writeErr(err)
		}
	}
	if err := c.copyTrailers(dst, src, framed && !c.DropTrailers); err != nil {
		return written, err
	}
	if framed {
		if _, err := dst.WriteString("\r\n"); err != nil {
			return written, writeErr(err)
		}
	}
	return written, nil
}

// copyTrailers reads the trailer section up to its empty line, validating each field line
// like a header field (RFC 9112 §7.1.2), and forwards the end-to-end ones when forward is set.
// Framing and hop-by-hop fields are never forwarded: RFC 9110 §6.5.1 forbids them in
// trailers, and a downstream that merges trailers into headers must not see them.
func (c *BodyCopy) copyTrailers(dst *bufio.Writer, src *bufio.Reader, forward bool) error {
	budget, fields := maxTrailerBytes, 0
	for {
		line, err := src.ReadSlice('\n')
		switch err {
		case nil:
		case bufio.ErrBufferFull:
			return &Error{400, "trailer field line longer than the read buffer"}
		default:
			return readErr(eofUnexpected(err))
		}
		if budget -= len(line); budget < 0 {
			return &Error{400, "trailer section too large"}
		}
		if len(line) < 2 || line[len(line)-2] != '\r' {
			return &Error{400, "trailer line terminated by bare LF"}
		}
		line = line[:len(line)-2]
		if len(line) == 0 {
			return nil
		}
		if fields++; fields > maxTrailerFields {
			return &Error{400, "too many trailer fields"}
		}
		sp, perr := parseFieldLine(line, 400)
		if perr != nil {
			return perr
		}
		if !forward || isFramingOrHopField(b2s(line[:sp.nameEnd])) {
			continue
		}
		if _, err := dst.Write(line[:sp.nameEnd]); err != nil {
			return writeErr(err)
		}
		if _, err := dst.WriteString(": "); err != nil {
			return writeErr(err)
		}
		if _, err := dst.Write(line[sp.valStart:sp.valEnd]); err != nil {
			return writeErr(err)
		}
		if _, err := dst.WriteString("\r\n"); err != nil {
			return writeErr(err)
		}
	}
}

func eofUnexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// readChunkLine returns the next chunk-size line without its CRLF. Lines must end in CRLF
// (RFC 9112 §7.1; erratum 7633 refused bare LF here) and fit in src's buffer: a chunk line
// is a few bytes plus extensions, and extensions are bounded by the buffer so a sender
// cannot make meshd buffer without bound.
func readChunkLine(src *bufio.Reader) ([]byte, error) {
	line, err := src.ReadSlice('\n')
	switch err {
	case nil:
	case bufio.ErrBufferFull:
		return nil, &Error{400, "chunk-size line longer than the read buffer"}
	default:
		return nil, readErr(eofUnexpected(err))
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return nil, &Error{400, "chunk-size line terminated by bare LF"}
	}
	return line[:len(line)-2], nil
}

// parseChunkLine parses chunk-size [ chunk-ext ] (RFC 9112 §7.1, §7.1.1):
//
//	chunk-size = 1*HEXDIG
//	chunk-ext  = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
//	chunk-ext-name = token; chunk-ext-val = token / quoted-string
//
// Sizes beyond 2^60-1 are rejected as overflow; "0x5", "+5", " 5", "" and "5 " are invalid.
func parseChunkLine(line []byte) (int64, *Error) {
	i := 0
	var n int64
	for i < len(line) && isHex(line[i]) {
		if n>>56 != 0 {
			return 0, &Error{400, "chunk size overflows"}
		}
		n = n<<4 | unhex(line[i])
		i++
	}
	if i == 0 {
		return 0, &Error{400, "missing or invalid chunk size"}
	}
	for i < len(line) {
		// BWS ";" — whitespace only counts as BWS when a ';' follows it.
		j := skipOWS(line, i)
		if j == len(line) || line[j] != ';' {
			return 0, &Error{400, "invalid byte after chunk size"}
		}
		i = skipOWS(line, j+1)
		start := i
		for i < len(line) && isTchar(line[i]) {
			i++
		}
		if i == start {
			return 0, &Error{400, "chunk extension without a name"}
		}
		j = skipOWS(line, i)
		if j == len(line) || line[j] != '=' {
			continue
		}
		i = skipOWS(line, j+1)
		if i < len(line) && line[i] == '"' {
			end, ok := quotedStringEnd(line, i)
			if !ok {
				return 0, &Error{400, "malformed quoted chunk extension value"}
			}
			i = end
			continue
		}
		start = i
		for i < len(line) && isTchar(line[i]) {
			i++
		}
		if i == start {
			return 0, &Error{400, "chunk extension without a value after '='"}
		}
	}
	return n, nil
}

func skipOWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	return i
}

// quotedStringEnd returns the index just past the quoted-string starting at b[i] == '"'
// (RFC 9110 §5.6.4).
func quotedStringEnd(b []byte, i int) (int, bool) {
	for i++; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i + 1, true
		case c == '\\':
			i++
			if i == len(b) || !isFieldValueByte(b[i]) {
				return 0, false
			}
		case !isFieldValueByte(c):
			return 0, false
		}
	}
	return 0, false
}

// writeInt appends n in base to w without allocating: it makes room first so that
// strconv.AppendInt works inside w's own buffer.
func writeInt(w *bufio.Writer, n int64, base int) error {
	if w.Available() < 24 {
		if err := w.Flush(); err != nil {
			return err
		}
	}
	_, err := w.Write(strconv.AppendInt(w.AvailableBuffer(), n, base))
	return err
}
