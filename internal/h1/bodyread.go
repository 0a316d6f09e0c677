package h1

import (
	"bufio"
	"errors"
	"io"
)

// BodyReader decodes one message body from a *bufio.Reader as an io.Reader, for a caller
// that hands the body on as a stream (net/http's Response.Body) rather than relaying it
// between two connections (CopyBody): a sized body (Content-Length), a chunked one
// (validated as CopyBody validates it, its trailer fields collected in Trailers) or one
// delimited by the peer closing. Bytes go from src's buffer into the caller's slice, or
// for reads of src's buffer size or more straight from the connection; nothing is copied
// twice and nothing is allocated in the steady state.
//
// Read returns io.EOF with the last bytes of a sized body, and with the last chunk's data
// when the rest of the chunked framing is already buffered, so a caller learns at once
// that the connection is free. Errors: *Error (status 400, as CopyBody's) for a
// malformed chunked body, *BodyError with Op "read" for I/O failures (io.ErrUnexpectedEOF
// when the peer closed before the framing said the body ends). Errors are sticky.
//
// The zero value reads an empty body. Reset points a BodyReader at the next body, keeping
// its trailer storage. Like a Reader, a BodyReader belongs to one goroutine at a time.
type BodyReader struct {
	src   *bufio.Reader
	n     int64 // bytes left: of a sized body, or of the current chunk's data
	state uint8
	err   error // sticky: io.EOF once the body ended, or the failure

	// Trailers are the trailer fields of a chunked body in wire order, set when Read
	// returns io.EOF. Framing and hop-by-hop fields are left out (RFC 9110 §6.5.1 forbids
	// them in trailers). Names and values alias storage the next Reset reuses.
	Trailers []Header
	trail    msgBuf
	budget   int // trailer section bytes still allowed
	fields   int // trailer field lines read, kept or not
}

// BodyReader states.
const (
	brDone       = iota // the body ended (err is io.EOF) or failed
	brSized             // n bytes of a sized body left
	brUntilClose        // until the peer closes
	brChunkData         // n bytes of the current chunk's data left
	brChunkCRLF         // the CRLF after chunk data
	brChunkSize         // a chunk-size line
	brTrailer           // trailer field lines up to the empty one
)

// errWouldBlock stops a look-ahead that would have to wait for the peer.
var errWouldBlock = errors.New("h1: would block")

// Reset prepares b to read the body framed as given from src: chunked, or delimited by
// close (untilClose), or contentLength bytes (none when it is <= 0).
func (b *BodyReader) Reset(src *bufio.Reader, contentLength int64, chunked, untilClose bool) {
	b.src, b.n, b.err = src, 0, nil
	b.Trailers = b.Trailers[:0]
	b.trail.buf, b.trail.spans = b.trail.buf[:0], b.trail.spans[:0]
	b.budget, b.fields = maxTrailerBytes, 0
	switch {
	case chunked:
		b.state = brChunkSize
	case untilClose:
		b.state = brUntilClose
	case contentLength > 0:
		b.state, b.n = brSized, contentLength
	default:
		b.state, b.err = brDone, io.EOF
	}
}

// Done reports whether the body was read to its end as its framing delimits it (a
// connection with a body read to Done is at the next message's first byte).
func (b *BodyReader) Done() bool { return b.state == brDone && b.err == io.EOF }

// Read implements io.Reader.
func (b *BodyReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	switch b.state {
	case brUntilClose:
		n, err := b.src.Read(p)
		if err == io.EOF {
			b.state, b.err = brDone, io.EOF
			return n, io.EOF
		}
		if err != nil {
			return n, b.fail(readErr(err))
		}
		return n, nil
	case brSized:
		n, err := b.src.Read(p[:clamp(len(p), b.n)])
		b.n -= int64(n)
		if b.n == 0 {
			b.state, b.err = brDone, io.EOF
			return n, io.EOF
		}
		if err != nil {
			return n, b.fail(readErr(eofUnexpected(err)))
		}
		return n, nil
	}
	if b.state != brChunkData {
		if err := b.advance(true); err != nil {
			return 0, b.end(err)
		}
	}
	n, err := b.src.Read(p[:clamp(len(p), b.n)])
	b.n -= int64(n)
	if err != nil && b.n > 0 {
		return n, b.fail(readErr(eofUnexpected(err)))
	}
	if b.n == 0 {
		// Look ahead, without waiting, for the end of the body: when the last chunk and
		// the trailers are already here, the caller gets io.EOF with these bytes.
		b.state = brChunkCRLF
		if err := b.advance(false); err != nil && err != errWouldBlock {
			return n, b.end(err)
		}
	}
	return n, nil
}

// end records the end of the chunked framing (io.EOF) or its failure.
func (b *BodyReader) end(err error) error {
	if err == io.EOF {
		b.state, b.err = brDone, io.EOF
		return io.EOF
	}
	return b.fail(err)
}

func (b *BodyReader) fail(err error) error {
	b.state, b.err = brDone, err
	return err
}

// clamp is min(n, left) for a read of n bytes with left bytes to go.
func clamp(n int, left int64) int {
	if int64(n) > left {
		return int(left)
	}
	return n
}

// advance walks the chunked framing up to the next chunk's data (nil) or the end of the
// body (io.EOF). Without block it stops with errWouldBlock rather than wait for bytes
// that are not buffered yet.
func (b *BodyReader) advance(block bool) error {
	src := b.src
	for {
		switch b.state {
		case brChunkData:
			return nil
		case brChunkCRLF:
			if !block && src.Buffered() < 2 {
				return errWouldBlock
			}
			// RFC 9112 §7.1: chunk-data is followed by exactly CRLF.
			crlf, err := src.Peek(2)
			if err != nil {
				return readErr(eofUnexpected(err))
			}
			if crlf[0] != '\r' || crlf[1] != '\n' {
				return &Error{400, "chunk data not followed by CRLF"}
			}
			_, _ = src.Discard(2)
			b.state = brChunkSize
		case brChunkSize:
			if !block && !lineBuffered(src) {
				return errWouldBlock
			}
			line, err := readChunkLine(src)
			if err != nil {
				return err
			}
			size, perr := parseChunkLine(line)
			if perr != nil {
				return perr
			}
			if size == 0 {
				b.state = brTrailer
			} else {
				b.state, b.n = brChunkData, size
			}
		case brTrailer:
			if !block && !lineBuffered(src) {
				return errWouldBlock
			}
			last, err := b.trailerLine()
			if err != nil {
				return err
			}
			if last {
				b.finishTrailers()
				return io.EOF
			}
		default:
			return io.EOF
		}
	}
}

// lineBuffered reports whether src holds a whole line (a '\n') already.
func lineBuffered(src *bufio.Reader) bool {
	buf, _ := src.Peek(src.Buffered())
	return indexByte(buf, '\n') >= 0
}

// trailerLine reads one line of the trailer section (RFC 9112 §7.1.2), validated like a
// header field line and bounded like a header section; last reports the empty line that
// ends it. End-to-end fields are kept for Trailers.
func (b *BodyReader) trailerLine() (last bool, err error) {
	line, rerr := b.src.ReadSlice('\n')
	switch rerr {
	case nil:
	case bufio.ErrBufferFull:
		return false, &Error{400, "trailer field line longer than the read buffer"}
	default:
		return false, readErr(eofUnexpected(rerr))
	}
	if b.budget -= len(line); b.budget < 0 {
		return false, &Error{400, "trailer section too large"}
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return false, &Error{400, "trailer line terminated by bare LF"}
	}
	line = line[:len(line)-2]
	if len(line) == 0 {
		return true, nil
	}
	if b.fields++; b.fields > maxTrailerFields {
		return false, &Error{400, "too many trailer fields"}
	}
	sp, perr := parseFieldLine(line, 400)
	if perr != nil {
		return false, perr
	}
	if isFramingOrHopField(b2s(line[:sp.nameEnd])) {
		return false, nil
	}
	// line aliases src's buffer: the field is copied into the message's own.
	start := len(b.trail.buf)
	b.trail.buf = append(b.trail.buf, line...)
	sp.nameStart += start
	sp.nameEnd += start
	sp.valStart += start
	sp.valEnd += start
	b.trail.spans = append(b.trail.spans, sp)
	return false, nil
}

// finishTrailers turns the recorded spans into Trailers, now that trail.buf is final.
func (b *BodyReader) finishTrailers() {
	for _, sp := range b.trail.spans {
		b.Trailers = append(b.Trailers, Header{Name: b2s(b.trail.buf[sp.nameStart:sp.nameEnd]), Value: b2s(b.trail.buf[sp.valStart:sp.valEnd])})
	}
}
