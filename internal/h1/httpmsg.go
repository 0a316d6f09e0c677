package h1

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// HeaderRequest is an HTTP/1.1 request head held the way net/http holds one (fields in an
// http.Header), for WriteHeaderRequest: requests that reach meshd over HTTP/2 and leave
// for an HTTP/1.1 upstream.
type HeaderRequest struct {
	Method string
	// Path and Query make the request-target: Path ("/" when empty), then "?" and Query
	// when Query is not empty or ForceQuery is set. Both are sent as they are (already
	// escaped).
	Path, Query string
	ForceQuery  bool
	Host        string // written as the Host field; a Host key in Header is ignored
	Header      http.Header
	// Trailer's keys are announced in a Trailer field when the body is chunked; WriteBody
	// writes their values after the body.
	Trailer http.Header
	// Framing: Transfer-Encoding: chunked when Chunked, otherwise Content-Length when
	// ContentLength >= 0, otherwise none (no body).
	ContentLength int64
	Chunked       bool
	// Close asks the server to close the connection after its response
	// (Connection: close).
	Close bool
}

// InvalidFieldError is a request field WriteHeaderRequest or WriteBody refused to send:
// its name is not a token, or its value holds a CR, LF, NUL or other control byte (a
// field that would let a peer read a different message, RFC 9110 §5.5).
type InvalidFieldError struct{ Name string }

func (e *InvalidFieldError) Error() string {
	return "h1: invalid field " + quote(e.Name) + " in the request"
}

// WriteHeaderRequest writes r's head to w as an HTTP/1.1 request: the request-line, the
// Host field, the fields of r.Header in the order of their names (sorted, so the same
// request is always written the same way), "Connection: close" when r.Close, then the
// Trailer field announcing r.Trailer's keys when chunked, then the framing field.
//
// Dropped from r.Header, as WriteRequestHead drops them: Host (r.Host is written),
// Content-Length and Transfer-Encoding (re-generated from the framing), Connection,
// Keep-Alive, Proxy-Connection, Proxy-Authorization, Proxy-Authenticate, Upgrade,
// Trailer, every field named in a Connection field; TE is written as "TE: trailers" when
// it lists trailers (RFC 9110 §10.1.4), dropped otherwise. Names and values are checked
// (InvalidFieldError) before anything is written: a value with CR or LF would smuggle a
// field or a message. Nothing is flushed. Other errors are w's.
func WriteHeaderRequest(w *bufio.Writer, r *HeaderRequest) error {
	if !validValue(r.Host) {
		return &InvalidFieldError{Name: "Host"}
	}
	// The fields are kept with their values as the map gives them: looking each key up
	// again after the sort cost a map lookup per field (issue 12). The array holds a
	// usual request's fields; it is zeroed at each call, in lines of the stack that are
	// often cold (a goroutine per stream), so it is no larger than that.
	var arr [16]field
	fields := arr[:0]
	var conn []string
	for k, vs := range r.Header {
		if !isToken(k) {
			return &InvalidFieldError{Name: k}
		}
		for _, v := range vs {
			if !validValue(v) {
				return &InvalidFieldError{Name: k}
			}
		}
		if k == "Connection" {
			conn = vs
		}
		fields = append(fields, field{k, vs})
	}
	sortFields(fields)
	path := r.Path
	if path == "" {
		path = "/"
	}
	_, _ = w.WriteString(r.Method)
	_ = w.WriteByte(' ')
	_, _ = w.WriteString(path)
	if r.Query != "" || r.ForceQuery {
		_ = w.WriteByte('?')
		_, _ = w.WriteString(r.Query)
	}
	_, _ = w.WriteString(" HTTP/1.1\r\n")
	writeField(w, "Host", r.Host)
	teTrailers := false
	for _, f := range fields {
		switch classify(f.name) {
		case fcTE:
			for _, v := range f.values {
				teTrailers = teTrailers || listHasToken(v, "trailers")
			}
			continue
		case fcOther:
		default:
			continue
		}
		if len(conn) > 0 && namedInValues(conn, f.name) {
			continue
		}
		for _, v := range f.values {
			writeField(w, f.name, v)
		}
	}
	if teTrailers {
		_, _ = w.WriteString("TE: trailers\r\n")
	}
	if r.Close {
		_, _ = w.WriteString("Connection: close\r\n")
	}
	if r.Chunked {
		announced := false
		for k := range r.Trailer {
			if !isToken(k) || isFramingOrHopField(k) {
				continue
			}
			if !announced {
				_, _ = w.WriteString("Trailer: ")
				announced = true
			} else {
				_, _ = w.WriteString(", ")
			}
			_, _ = w.WriteString(k)
		}
		if announced {
			_, _ = w.WriteString("\r\n")
		}
	}
	return writeExtraAndEnd(w, nil, r.Chunked, r.ContentLength)
}

// sortFields sorts fields by name: by insertion while they are few (a request's usual
// dozen, where slices.SortFunc's generic machinery cost three times as much).
func sortFields(fields []field) {
	if len(fields) > 16 {
		slices.SortFunc(fields, func(a, b field) int { return strings.Compare(a.name, b.name) })
		return
	}
	for i := 1; i < len(fields); i++ {
		for j := i; j > 0 && fields[j].name < fields[j-1].name; j-- {
			fields[j], fields[j-1] = fields[j-1], fields[j]
		}
	}
}

// field is one key of an http.Header with its values.
type field struct {
	name   string
	values []string
}

// namedInValues reports whether one of the Connection field values lists name.
func namedInValues(conn []string, name string) bool {
	for _, list := range conn {
		for {
			elem, rest, ok := nextListElem(list)
			if !ok {
				break
			}
			if len(elem) == len(name) && equalFoldASCII(elem, name) {
				return true
			}
			list = rest
		}
	}
	return false
}

// chunkHeadRoom is the room kept before the data of a chunk read straight into the write
// buffer: the chunk-size (up to 8 hex digits) and its CRLF.
const chunkHeadRoom = 10

// minChunkRoom is the least free space worth reading a chunk into; with less, the buffer
// is flushed first. WriteBody needs a writer with a buffer at least this large.
const minChunkRoom = 1 << 10

var errSmallWriter = errors.New("h1: WriteBody needs a bufio.Writer of 1 KiB or more")

// WriteBody copies a message body from r to w framed for HTTP/1.1, as the head written by
// WriteHeaderRequest announced it. Sized (chunked false, contentLength >= 0): exactly
// contentLength bytes are read and written; a shorter r is a *BodyError "read" wrapping
// io.ErrUnexpectedEOF, and nothing beyond contentLength is read. Chunked: every read of r
// becomes one chunk and is flushed at once (a stream must not be held back in w), and
// once r returns io.EOF the last chunk follows with trailer's fields (their values are
// read only then, which is when net/http fills a request's Trailer). The end is not
// flushed.
//
// Bytes are read from r straight into w's buffer (of 1 KiB or more for a chunked body).
// It returns the payload bytes written.
// Errors: *BodyError with Op "read" wrapping r's error (a failure of whoever feeds r),
// Op "write" wrapping w's; *InvalidFieldError for a trailer field that may not be sent
// (nothing of the trailer section is written then).
func WriteBody(w *bufio.Writer, r io.Reader, contentLength int64, chunked bool, trailer http.Header) (int64, error) {
	if !chunked {
		return writeSized(w, r, contentLength)
	}
	if w.Size() < minChunkRoom {
		return 0, errSmallWriter
	}
	var total int64
	for {
		if w.Available() < minChunkRoom {
			if err := w.Flush(); err != nil {
				return total, writeErr(err)
			}
		}
		buf := w.AvailableBuffer()[:w.Available()]
		n, rerr := r.Read(buf[chunkHeadRoom : len(buf)-2])
		if n > 0 {
			// The chunk-size goes right before the data, the CRLF after it; Write then moves
			// the chunk to the buffer's write position (by at most chunkHeadRoom bytes).
			var hexBuf [16]byte
			head := strconv.AppendInt(hexBuf[:0], int64(n), 16)
			head = append(head, '\r', '\n')
			start := chunkHeadRoom - len(head)
			copy(buf[start:], head)
			buf[chunkHeadRoom+n], buf[chunkHeadRoom+n+1] = '\r', '\n'
			if _, err := w.Write(buf[start : chunkHeadRoom+n+2]); err != nil {
				return total, writeErr(err)
			}
			total += int64(n)
			if err := w.Flush(); err != nil {
				return total, writeErr(err)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return total, readErr(rerr)
		}
	}
	if err := checkTrailer(trailer); err != nil {
		return total, err
	}
	_, _ = w.WriteString("0\r\n")
	for k, vs := range trailer {
		if isFramingOrHopField(k) {
			continue
		}
		for _, v := range vs {
			writeField(w, k, v)
		}
	}
	if _, err := w.WriteString("\r\n"); err != nil {
		return total, writeErr(err)
	}
	return total, nil
}

// checkTrailer validates the trailer fields WriteBody is about to send.
func checkTrailer(trailer http.Header) error {
	for k, vs := range trailer {
		if !isToken(k) {
			return &InvalidFieldError{Name: k}
		}
		for _, v := range vs {
			if !validValue(v) {
				return &InvalidFieldError{Name: k}
			}
		}
	}
	return nil
}

// writeSized copies exactly n bytes (none when n <= 0) from r into w's buffer.
func writeSized(w *bufio.Writer, r io.Reader, n int64) (int64, error) {
	var total int64
	for total < n {
		if w.Available() == 0 {
			if err := w.Flush(); err != nil {
				return total, writeErr(err)
			}
		}
		buf := w.AvailableBuffer()[:w.Available()]
		k, rerr := r.Read(buf[:clamp(len(buf), n-total)])
		if k > 0 {
			if _, err := w.Write(buf[:k]); err != nil {
				return total, writeErr(err)
			}
			total += int64(k)
		}
		if total == n {
			break
		}
		if rerr != nil {
			return total, readErr(eofUnexpected(rerr))
		}
	}
	return total, nil
}
