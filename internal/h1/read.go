package h1

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
)

// Reader parses message heads from a *bufio.Reader. It holds no buffers of its own: head
// bytes are copied into the Request/Response being read, so one Reader can serve a pooled
// bufio.Reader and the caller keeps full control of buffer lifetimes. A Reader is used by one
// goroutine at a time; body bytes are left in the bufio.Reader for CopyBody.
type Reader struct {
	br  *bufio.Reader
	lim Limits
	fs  fieldStats // the head being read's, kept here rather than copied between calls
	// whole is set when the last ReadRequest found its head whole among the bytes
	// already buffered: it read nothing.
	whole bool
	host  hostMemo
}

// hostMemo is the last Host field value a Reader found valid, when it is short: a
// keep-alive client sends the same Host on every request, and comparing it with the one
// checked before costs a fraction of checking it again (issue 17). It is a copy, not a
// view: the request's buffer is reused.
type hostMemo struct {
	n uint8
	b [47]byte
}

// valid reports validAuthority(h, false), remembering h when it is valid.
func (m *hostMemo) valid(h string) bool {
	if int(m.n) == len(h) && m.n > 0 && string(m.b[:m.n]) == h {
		return true
	}
	if !validAuthority(h, false) {
		return false
	}
	if len(h) <= len(m.b) {
		m.n = uint8(copy(m.b[:], h))
	}
	return true
}

// HeadWasBuffered reports whether the last ReadRequest's head was whole in the buffer
// when it was called (nothing read): a clock reading taken just before then stands for
// the head's arrival.
func (r *Reader) HeadWasBuffered() bool { return r.whole }

// NewReader returns a Reader over br with l's limits (zero fields take the defaults).
func NewReader(br *bufio.Reader, l Limits) *Reader {
	return &Reader{br: br, lim: l.withDefaults()}
}

// Reset points r at a new bufio.Reader, keeping its limits.
func (r *Reader) Reset(br *bufio.Reader) { r.br = br }

// maxEmptyLines bounds the empty lines ignored before a request-line: RFC 9112 §2.2 says a
// server SHOULD ignore at least one (old clients sent CRLF after a POST body).
const maxEmptyLines = 4

// ReadRequest reads one request head into req, reusing req's storage (0 allocations in the
// steady state). The body, if any, stays in the bufio.Reader: relay it with CopyBody before
// the next ReadRequest.
//
// Errors: io.EOF when the peer closed cleanly before sending any byte of a request;
// io.ErrUnexpectedEOF when it closed mid-head; a *Error with the status to answer (400, 414,
// 431, 501, 505) for a protocol violation; otherwise the bufio.Reader's error, wrapped.
// After any error req's fields are unspecified and the connection must not be reused.
func (r *Reader) ReadRequest(req *Request) error {
	req.Reset()
	had := r.br.Buffered()
	r.whole = false
	if b, err := r.buffered(); err != nil {
		return r.emptyRead(err, 414, 400, "request-line")
	} else if lineEnd := r.scanHead(b, &req.msgBuf, &req.Headers, &r.fs); lineEnd > 0 {
		r.whole = had > 0
		return req.parse(req.buf[:lineEnd-2], &r.fs, &r.host)
	}
	var line []byte
	for empty := 0; ; empty++ {
		start := len(req.buf)
		var err error
		req.buf, err = r.readLine(req.buf, r.lim.MaxHeaderBytes, 414, 400, "request-line")
		if err != nil {
			if err == io.EOF && len(req.buf) == 0 {
				return io.EOF
			}
			return err
		}
		line = req.buf[start : len(req.buf)-2]
		if len(line) > 0 {
			break
		}
		if empty == maxEmptyLines {
			return &Error{400, "too many empty lines before request-line"}
		}
		req.buf = req.buf[:start]
	}
	lineEnd := len(req.buf)
	if err := r.readFields(&req.msgBuf, 431, 400); err != nil {
		return err
	}
	// req.buf may have moved while reading fields; take the strings only now.
	req.fieldsInto(&req.Headers, &r.fs)
	return req.parse(req.buf[:lineEnd-2], &r.fs, &r.host)
}

// ReadBufferedRequest is ReadRequest for a head that lies whole in the bufio.Reader's
// buffer: it never reads from the connection. ok is false, with nothing consumed, when
// the buffer does not hold a whole head (or holds one that only ReadRequest's
// line-by-line path takes: ReadRequest then reads and answers it); otherwise err is
// ReadRequest's for that head.
func (r *Reader) ReadBufferedRequest(req *Request) (ok bool, err error) {
	n := r.br.Buffered()
	if n == 0 {
		return false, nil
	}
	b, _ := r.br.Peek(n)
	req.Reset()
	lineEnd := r.scanHead(b, &req.msgBuf, &req.Headers, &r.fs)
	if lineEnd == 0 {
		return false, nil
	}
	r.whole = true
	return true, req.parse(req.buf[:lineEnd-2], &r.fs, &r.host)
}

// parse checks the request line and the fields' semantics; fs describes req.Headers.
func (req *Request) parse(line []byte, fs *fieldStats, host *hostMemo) error {
	// RFC 9112 §3: request-line = method SP request-target SP HTTP-version, single SPs.
	sp1 := indexByte(line, ' ')
	if sp1 < 0 {
		return &Error{400, "malformed request-line"}
	}
	sp2 := indexByte(line[sp1+1:], ' ')
	if sp2 < 0 {
		return &Error{400, "malformed request-line"}
	}
	sp2 += sp1 + 1
	req.Method = b2s(line[:sp1])
	req.Target = b2s(line[sp1+1 : sp2])
	version := b2s(line[sp2+1:])
	if !isToken(req.Method) {
		return &Error{400, "method is not a token: " + quote(req.Method)}
	}
	if req.Target == "" {
		return &Error{400, "malformed request-line (empty target or extra SP)"}
	}
	major, minor, verr := parseVersion(version)
	if verr != nil {
		verr.Status = 400
		if verr.Msg == errVersionUnsupported {
			verr.Status = 505 // RFC 9110 §15.6.6
		}
		return verr
	}
	req.Proto, req.Major, req.Minor = version, major, minor
	form, authority, terr := checkTarget(req.Method, req.Target)
	if terr != nil {
		return terr
	}

	// RFC 9112 §3.2: a server MUST respond 400 to an HTTP/1.1 request without Host, with
	// more than one Host field line, or with an invalid Host value.
	if fs.hostCount > 1 {
		return &Error{400, "more than one Host field"}
	}
	if fs.hostCount == 0 && minor == 1 {
		return &Error{400, "HTTP/1.1 request without Host"}
	}
	if fs.hostCount == 1 && !host.valid(fs.host) {
		return &Error{400, "invalid Host " + quote(fs.host)}
	}
	req.hasHost = fs.hostCount == 1
	req.Host = fs.host
	if form == absoluteForm || form == authorityForm {
		// RFC 9112 §3.2.2: the target's authority overrides the Host field, so routing
		// and the upstream see the same host; for CONNECT the target is the authority
		// being asked for (RFC 9110 §9.3.6).
		req.Host = authority
	}

	if fs.teCount > 0 {
		// RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 means faulty framing.
		if minor == 0 {
			return &Error{400, "Transfer-Encoding in an HTTP/1.0 request"}
		}
		// RFC 9112 §6.1: a message with both may be an attempted smuggling; a server MAY
		// reject it, and a proxy that forwarded it would pass the ambiguity on.
		if fs.clCount > 0 {
			return &Error{400, "both Transfer-Encoding and Content-Length"}
		}
		if err := fs.checkChunked(req.Headers, 501); err != nil {
			return err
		}
		req.Chunked = true
	}
	if fs.clCount > 0 {
		n, err := fs.contentLength(req.Headers, 400)
		if err != nil {
			return err
		}
		req.ContentLength = n
	}

	keepAlive := false
	upgrade := false
	if fs.connCount > 0 {
		for i := range req.Headers {
			h := &req.Headers[i]
			if !equalFoldLower(h.Name, "connection") {
				continue
			}
			if err := checkTokenList(h.Value, 400, "Connection"); err != nil {
				return err
			}
			req.Close = req.Close || listHasToken(h.Value, "close")
			keepAlive = keepAlive || listHasToken(h.Value, "keep-alive")
			upgrade = upgrade || listHasToken(h.Value, "upgrade")
		}
	}
	if minor == 0 && !keepAlive {
		req.Close = true // RFC 9112 §9.3: HTTP/1.0 persists only with keep-alive
	}
	if minor == 1 {
		// RFC 9110 §7.8: an Upgrade field in an HTTP/1.0 request MUST be ignored.
		if upgrade && fs.upgradeIdx >= 0 {
			req.Upgrade = req.Headers[fs.upgradeIdx].Value
		}
		// RFC 9110 §10.1.1: a 100-continue expectation in HTTP/1.0 MUST be ignored.
		if fs.expectIdx >= 0 && equalFoldLower(req.Headers[fs.expectIdx].Value, "100-continue") {
			req.ExpectContinue = true
		}
	}
	return nil
}

// ReadResponse reads one response head into resp, reusing its storage. reqMethod is the
// method of the request it answers, which decides framing (RFC 9112 §6.3). Interim 1xx
// responses are returned like any other: the caller loops (forwarding 100 Continue, ending
// HTTP processing on 101 Switching Protocols).
//
// Errors: io.EOF when the upstream closed before sending any byte (for a reused connection
// the request may be retried if idempotent); io.ErrUnexpectedEOF when it closed mid-head;
// a *Error with Status 502 for any protocol violation; otherwise the read error, wrapped.
func (r *Reader) ReadResponse(resp *Response, reqMethod string) error {
	resp.Reset()
	if b, err := r.buffered(); err != nil {
		return r.emptyRead(err, 502, 502, "status-line")
	} else if lineEnd := r.scanHead(b, &resp.msgBuf, &resp.Headers, &r.fs); lineEnd > 0 {
		return resp.parse(resp.buf[:lineEnd-2], reqMethod, &r.fs)
	}
	var err error
	resp.buf, err = r.readLine(resp.buf, r.lim.MaxHeaderBytes, 502, 502, "status-line")
	if err != nil {
		if err == io.EOF && len(resp.buf) == 0 {
			return io.EOF
		}
		return err
	}
	lineEnd := len(resp.buf)
	if err := r.readFields(&resp.msgBuf, 502, 502); err != nil {
		return err
	}
	resp.fieldsInto(&resp.Headers, &r.fs)
	return resp.parse(resp.buf[:lineEnd-2], reqMethod, &r.fs)
}

// parse checks the status line and the fields' semantics; fs describes resp.Headers.
func (resp *Response) parse(line []byte, reqMethod string, fs *fieldStats) error {
	// RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ].
	// The SP before an empty reason is accepted when missing: servers omit it, and it
	// cannot affect framing.
	if len(line) < 12 || line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return &Error{502, "malformed status-line " + quote(string(line))}
	}
	major, minor, verr := parseVersion(b2s(line[:8]))
	if verr != nil {
		verr.Status = 502
		return verr
	}
	resp.Proto, resp.Major, resp.Minor = b2s(line[:8]), major, minor
	code := 0
	for _, c := range line[9:12] {
		if !isDigit(c) {
			return &Error{502, "malformed status code " + quote(string(line[9:12]))}
		}
		code = code*10 + int(c-'0')
	}
	// RFC 9110 §15: status codes are 100-599.
	if code < 100 || code > 599 {
		return &Error{502, "status code out of range " + quote(string(line[9:12]))}
	}
	resp.Status = code
	if len(line) > 13 {
		reason := line[13:]
		for _, c := range reason { // reason-phrase = 1*( HTAB / SP / VCHAR / obs-text )
			if !isFieldValueByte(c) {
				return &Error{502, "invalid byte in reason-phrase"}
			}
		}
		resp.Reason = b2s(reason)
	}

	keepAlive, upgrade := false, false
	for i := range resp.Headers {
		h := &resp.Headers[i]
		if fs.connCount == 0 {
			break
		}
		if !equalFoldLower(h.Name, "connection") {
			continue
		}
		if err := checkTokenList(h.Value, 502, "Connection"); err != nil {
			return err
		}
		resp.Close = resp.Close || listHasToken(h.Value, "close")
		keepAlive = keepAlive || listHasToken(h.Value, "keep-alive")
		upgrade = upgrade || listHasToken(h.Value, "upgrade")
	}
	if minor == 0 && !keepAlive {
		resp.Close = true
	}
	if code == 101 && upgrade && fs.upgradeIdx >= 0 {
		resp.Upgrade = resp.Headers[fs.upgradeIdx].Value
	}

	// RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing.
	if fs.teCount > 0 && minor == 0 {
		return &Error{502, "Transfer-Encoding in an HTTP/1.0 response"}
	}
	// RFC 9112 §6.3 rule 1: responses to HEAD and 1xx/204/304 end after the head whatever
	// their fields say. Rule 2: so does a 2xx to CONNECT (a tunnel follows).
	isConnect2xx := reqMethod == "CONNECT" && code >= 200 && code < 300
	if reqMethod == "HEAD" || code < 200 || code == 204 || code == 304 || isConnect2xx {
		resp.NoBody = true
		// Content-Length of a 304 or a HEAD response describes the representation and
		// is forwarded (RFC 9110 §8.6), so it must still be valid. Transfer-Encoding there
		// is dropped (hop-by-hop); in 1xx/204/CONNECT-2xx both are ignored and dropped
		// (RFC 9110 §8.6, §9.3.6 forbid sending them).
		if fs.clCount > 0 && !isConnect2xx && code >= 200 && code != 204 {
			n, err := fs.contentLength(resp.Headers, 502)
			if err != nil {
				return err
			}
			resp.ContentLength = n
		}
		return nil
	}
	if fs.teCount > 0 {
		// RFC 9112 §6.3 rule 3: TE with CL "ought to be handled as an error".
		if fs.clCount > 0 {
			return &Error{502, "both Transfer-Encoding and Content-Length"}
		}
		// Codings other than chunked would have to be relayed, not stripped; meshd does
		// not, so it refuses them rather than forward a body with the wrong coding.
		if err := fs.checkChunked(resp.Headers, 502); err != nil {
			return err
		}
		resp.Chunked = true
		return nil
	}
	if fs.clCount > 0 {
		n, err := fs.contentLength(resp.Headers, 502)
		if err != nil {
			return err
		}
		resp.ContentLength = n
		return nil
	}
	resp.Close = true // RFC 9112 §6.3 rule 8: read until close
	return nil
}

const errVersionUnsupported = "unsupported HTTP version"

// parseVersion parses HTTP-version = "HTTP" "/" DIGIT "." DIGIT (RFC 9112 §2.3, case
// sensitive). Well-formed versions other than 1.0 and 1.1 get errVersionUnsupported.
func parseVersion(v string) (major, minor int, err *Error) {
	if len(v) != 8 || v[:5] != "HTTP/" || !isDigit(v[5]) || v[6] != '.' || !isDigit(v[7]) {
		return 0, 0, &Error{400, "malformed HTTP-version " + quote(v)}
	}
	major, minor = int(v[5]-'0'), int(v[7]-'0')
	if major != 1 || minor > 1 {
		return 0, 0, &Error{505, errVersionUnsupported}
	}
	return major, minor, nil
}

// buffered returns the bytes buffered in the bufio.Reader, reading once if there are
// none. An error comes only with nothing buffered.
func (r *Reader) buffered() ([]byte, error) {
	b, err := r.br.Peek(1)
	if err != nil {
		return nil, err
	}
	// Peek's slice is of the reader's buffer from the first unread byte: its capacity
	// reaches past the buffered bytes, which one Peek so gives (a second Peek of
	// Buffered() bytes cost as much again).
	if n := r.br.Buffered(); n <= cap(b) {
		return b[:n], nil
	}
	return r.br.Peek(r.br.Buffered())
}

// emptyRead is what reading a start line returns when the first read fails with err and
// nothing is buffered: the answers of the line-by-line path (io.EOF, or err wrapped).
func (r *Reader) emptyRead(err error, tooLong, bad int, what string) error {
	_, err = r.readLineMore(nil, nil, err, r.lim.MaxHeaderBytes, tooLong, bad, what)
	return err
}

// minHeadCopy is how much of the buffered bytes scanHead copies into a message whose
// buffer is smaller: most heads fit, and a larger one, read line by line once, leaves
// the buffer its size for the next.
const minHeadCopy = 512

// scanHead parses a head lying whole in b, the bytes buffered in the bufio.Reader, in one
// pass with the checks of the line-by-line path (readLine, readFields, parseFieldLine)
// fused into the delimiter search: a field value is checked and its CR LF found eight
// bytes at a time, the name by table four bytes a step. The buffered bytes are copied
// into m.buf first (as many as its capacity takes, at least minHeadCopy) so
// that the fields go straight into hs, aliasing m.buf, with fs gathered on the way
// (fieldsInto's work). It returns the start line's end, CR LF included, having consumed
// the head from the bufio.Reader; or 0, with m.buf and hs empty, for a head not whole in
// what was copied and for anything the line-by-line path would not take as it is (an
// empty line before the start line, a limit reached, a byte out of place): that path,
// since nothing was consumed here, then reads the same bytes and answers the same, error
// included. The start line is only delimited here; parse checks it. Reading per line
// cost a ReadSlice, a copy and a call per line (issue 17).
func (r *Reader) scanHead(src []byte, m *msgBuf, hs *[]Header, fs *fieldStats) (lineEnd int) {
	limit := r.lim.MaxHeaderBytes
	b := append(m.buf[:0], src[:min(len(src), max(cap(m.buf), minHeadCopy))]...)
	m.buf = b[:0]
	i := bytes.IndexByte(b, '\n')
	if i < 2 || b[i-1] != '\r' || i+1 > limit {
		return 0
	}
	lineEnd = i + 1
	*fs = fieldStats{upgradeIdx: -1, expectIdx: -1}
	h := (*hs)[:0]
	pos := lineEnd
	for {
		if pos+1 >= len(b) {
			break
		}
		if b[pos] == '\r' {
			if b[pos+1] != '\n' || pos+2-lineEnd > limit {
				break
			}
			*hs = h
			m.buf = b[:pos+2]
			m.noConn = fs.connCount == 0
			_, _ = r.br.Discard(pos + 2) // that many bytes are buffered: Discard cannot fail
			return lineEnd
		}
		if len(h) == r.lim.MaxHeaders {
			break
		}
		j := tokenEnd(b, pos)
		if j == pos || j == len(b) || b[j] != ':' {
			break
		}
		vs := j + 1
		for vs < len(b) && (b[vs] == ' ' || b[vs] == '\t') {
			vs++
		}
		k := valueEnd(b, vs)
		if k+1 >= len(b) || b[k] != '\r' || b[k+1] != '\n' {
			break
		}
		ve := k
		for ve > vs && (b[ve-1] == ' ' || b[ve-1] == '\t') {
			ve--
		}
		name, value := b2s(b[pos:j]), b2s(b[vs:ve])
		fs.note(name, value, len(h))
		h = append(h, Header{Name: name, Value: value})
		pos = k + 2
	}
	*hs = h[:0]
	return 0
}

// tokenEnd returns the index of the first byte from b[i:] that is not a tchar, or
// len(b): four bytes a step while all four are (one table load each, no branch
// between them).
func tokenEnd(b []byte, i int) int {
	for i+4 <= len(b) {
		w := b[i : i+4 : i+4]
		if tchar8[w[0]]&tchar8[w[1]]&tchar8[w[2]]&tchar8[w[3]] == 0 {
			break
		}
		i += 4
	}
	for i < len(b) && tcharTable[b[i]] {
		i++
	}
	return i
}

// valueEnd returns the index of the first byte from b[i:] that is not a field-value byte
// (isFieldValueByte), or len(b): eight bytes a step while no byte of the word is below
// 0x20 (CR, LF, the other CTLs and HTAB) or DEL, as validFieldValue does. In a word
// with such a byte the lowest flag of the test marks the first of them exactly (a borrow
// only flags bytes above a flagged one), so an HTAB is stepped over and anything else
// ends the value without a byte-by-byte walk.
func valueEnd(b []byte, i int) int {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	for i+8 <= len(b) {
		x := binary.LittleEndian.Uint64(b[i:])
		del := x ^ (0x7f * ones)
		if m := ((x-0x20*ones)&^x | (del-ones)&^del) & highs; m != 0 {
			i += bits.TrailingZeros64(m) >> 3
			if b[i] != '\t' {
				return i
			}
			i++
			continue
		}
		i += 8
	}
	for i < len(b) && isFieldValueByte(b[i]) {
		i++
	}
	return i
}

// readLine appends one CRLF-terminated line (CRLF included) to buf. A line longer than max
// bytes gets an *Error with tooLong status, a line not ending in CRLF one with bad status. RFC 9112 §2.2 lets a recipient accept a bare LF
// as a line terminator; meshd does not, because a proxy that accepts LF-only lines and a
// backend that does not (or the reverse) disagree about where fields and chunks end, the
// root of several smuggling attacks. A bare CR anywhere is rejected by the per-element
// byte checks (RFC 9112 §2.2 allows only rejection or replacement by SP).
func (r *Reader) readLine(buf []byte, max, tooLong, bad int, what string) ([]byte, error) {
	frag, err := r.br.ReadSlice('\n')
	if n := len(frag); err == nil && n >= 2 && frag[n-2] == '\r' && n <= max {
		// The common case, a whole line in the buffer, checked on the slice before it is
		// copied: a tenth of the per-line cost (issue 17).
		return append(buf, frag...), nil
	}
	return r.readLineMore(buf, frag, err, max, tooLong, bad, what)
}

// readLineMore is readLine past its first ReadSlice (frag, err).
func (r *Reader) readLineMore(buf, frag []byte, err error, max, tooLong, bad int, what string) ([]byte, error) {
	start := len(buf)
	for ; ; frag, err = r.br.ReadSlice('\n') {
		if len(buf)-start+len(frag) > max {
			return buf, &Error{tooLong, what + " too long"}
		}
		buf = append(buf, frag...)
		switch {
		case err == nil:
			if n := len(buf); n-start < 2 || buf[n-2] != '\r' {
				return buf, &Error{bad, what + " terminated by bare LF"}
			}
			return buf, nil
		case err == bufio.ErrBufferFull:
			continue
		case err == io.EOF:
			if len(buf) == start {
				return buf, io.EOF
			}
			return buf, io.ErrUnexpectedEOF
		default:
			return buf, fmt.Errorf("h1: reading %s: %w", what, err)
		}
	}
}

// readFields reads field lines up to and including the empty line that ends the section,
// appending them to m.buf and recording their spans. Syntax is checked here; semantics are
// the message's business.
func (r *Reader) readFields(m *msgBuf, tooLarge, bad int) error {
	budget := r.lim.MaxHeaderBytes
	for {
		start := len(m.buf)
		var err error
		m.buf, err = r.readLine(m.buf, budget, tooLarge, bad, "header section")
		if err != nil {
			return eofUnexpected(err)
		}
		budget -= len(m.buf) - start
		line := m.buf[start : len(m.buf)-2]
		if len(line) == 0 {
			return nil
		}
		if len(m.spans) == r.lim.MaxHeaders {
			return &Error{tooLarge, "too many header fields"}
		}
		sp, perr := parseFieldLine(line, bad)
		if perr != nil {
			return perr
		}
		sp.nameStart += start
		sp.nameEnd += start
		sp.valStart += start
		sp.valEnd += start
		m.spans = append(m.spans, sp)
	}
}

// parseFieldLine checks field-line = field-name ":" OWS field-value OWS (RFC 9112 §5) and
// returns its spans relative to line.
func parseFieldLine(line []byte, bad int) (fieldSpan, *Error) {
	// RFC 9112 §5.2: obs-fold (a line starting with SP/HTAB) is rejected with 400; RFC 9112
	// §2.2 also allows rejecting whitespace between the start-line and the first field.
	if line[0] == ' ' || line[0] == '\t' {
		return fieldSpan{}, &Error{bad, "obs-fold or leading whitespace in field line"}
	}
	i := 0
	for i < len(line) && isTchar(line[i]) {
		i++
	}
	if i == len(line) {
		return fieldSpan{}, &Error{bad, "field line without colon"}
	}
	switch c := line[i]; {
	case c == ' ' || c == '\t':
		// RFC 9112 §5.1: whitespace between name and colon MUST be rejected with 400.
		return fieldSpan{}, &Error{bad, "whitespace before colon in field " + quote(string(line[:i]))}
	case c != ':':
		return fieldSpan{}, &Error{bad, fmt.Sprintf("invalid byte %#02x in field name", c)}
	case i == 0:
		return fieldSpan{}, &Error{bad, "empty field name"}
	}
	vs, ve := i+1, len(line)
	for vs < ve && (line[vs] == ' ' || line[vs] == '\t') {
		vs++
	}
	for ve > vs && (line[ve-1] == ' ' || line[ve-1] == '\t') {
		ve--
	}
	// RFC 9110 §5.5: NUL, CR, LF and other CTLs MUST be rejected (or replaced by SP,
	// except NUL); rejecting is the only choice that cannot desynchronise a peer.
	if !validFieldValue(line[vs:ve]) {
		for j := vs; j < ve; j++ {
			if !isFieldValueByte(line[j]) {
				return fieldSpan{}, &Error{bad, fmt.Sprintf("invalid byte %#02x in value of field %q", line[j], line[:i])}
			}
		}
	}
	return fieldSpan{nameStart: 0, nameEnd: i, valStart: vs, valEnd: ve}, nil
}

// fieldStats records the fields a message's framing depends on.
type fieldStats struct {
	host                                   string
	hostCount, clCount, teCount, connCount int
	upgradeIdx, expectIdx                  int
	clIdx                                  int // the first Content-Length's index, when clCount > 0
}

// contentLength is parseContentLength over the fields fs describes, going straight to
// the field note found (without comparing every name again).
func (fs *fieldStats) contentLength(hs []Header, bad int) (int64, *Error) {
	if fs.clCount == 1 && fs.clIdx < len(hs) {
		return contentLengthValue(hs[fs.clIdx].Value, bad)
	}
	return parseContentLength(hs, fs.clCount, bad)
}

// fieldsInto turns the recorded spans into m's Headers (strings aliasing m.buf) and gathers the
// framing-relevant fields into fs.
func (m *msgBuf) fieldsInto(hs *[]Header, fs *fieldStats) {
	*fs = fieldStats{upgradeIdx: -1, expectIdx: -1}
	for _, sp := range m.spans {
		h := Header{Name: b2s(m.buf[sp.nameStart:sp.nameEnd]), Value: b2s(m.buf[sp.valStart:sp.valEnd])}
		fs.note(h.Name, h.Value, len(*hs))
		*hs = append(*hs, h)
	}
	m.noConn = fs.connCount == 0
}

// note gathers the field line name: value, the idx-th of its message, into fs.
func (fs *fieldStats) note(name, value string, idx int) {
	switch len(name) {
	case 4:
		if keyHost.match(name) {
			fs.hostCount++
			fs.host = value
		}
	case 6:
		if fs.expectIdx < 0 && keyExpect.match(name) {
			fs.expectIdx = idx
		}
	case 7:
		if fs.upgradeIdx < 0 && keyUpgrade.match(name) {
			fs.upgradeIdx = idx
		}
	case 10:
		if keyConnection.match(name) {
			fs.connCount++
		}
	case 14:
		if keyContentLength.match(name) {
			if fs.clCount == 0 {
				fs.clIdx = idx
			}
			fs.clCount++
		}
	case 17:
		if keyTransferEncoding.match(name) {
			fs.teCount++
		}
	}
}

// checkChunked enforces that the Transfer-Encoding fields, taken together as one list
// (RFC 9110 §5.3), are exactly "chunked" (case-insensitive, RFC 9112 §7). A list with
// another coding answers unsupported (501 for requests, RFC 9112 §6.1); chunked applied
// twice, empty elements or non-token elements answer 400. Empty list elements are legal
// list syntax (RFC 9110 §5.6.1) but every smuggling obfuscation uses them, and net/http
// rejects them too.
func (fs *fieldStats) checkChunked(hs []Header, unsupported int) *Error {
	bad := 400
	if unsupported == 502 {
		bad = 502
	}
	chunked := 0
	for i := range hs {
		if !equalFoldLower(hs[i].Name, "transfer-encoding") {
			continue
		}
		v := hs[i].Value
		for more := true; more; {
			elem := v
			more = false
			for j := 0; j < len(v); j++ {
				if v[j] == ',' {
					elem, v, more = v[:j], v[j+1:], true
					break
				}
			}
			elem = trimOWS(elem)
			switch {
			case !isToken(elem):
				return &Error{bad, "malformed Transfer-Encoding " + quote(hs[i].Value)}
			case equalFoldLower(elem, "chunked"):
				chunked++
			default:
				return &Error{unsupported, "unsupported transfer coding " + quote(elem)}
			}
		}
	}
	if chunked != 1 {
		return &Error{bad, "chunked applied more than once"} // RFC 9112 §6.1
	}
	return nil
}

// checkTokenList checks a #token list such as Connection's (RFC 9110 §7.6.1).
func checkTokenList(v string, bad int, field string) *Error {
	for {
		elem, rest, ok := nextListElem(v)
		if !ok {
			return nil
		}
		if !isToken(elem) && elem != "" {
			return &Error{bad, "malformed " + field + " " + quote(v)}
		}
		v = rest
	}
}

// parseContentLength returns the value of the single Content-Length field. RFC 9110 §8.6
// lets a recipient either reject repeated (even identical) values or collapse identical
// ones; meshd rejects any repetition, including list syntax "5, 5": a proxy that collapses
// has to trust that every peer collapses the same way, and no legitimate sender repeats it.
// The value must be 1*DIGIT ("+5", "0x5", " 5" after trimming, "5 5" are all invalid) and
// fit in an int64 (RFC 9112 §6.3 rule 5: invalid means 400).
func parseContentLength(hs []Header, count, bad int) (int64, *Error) {
	if count > 1 {
		return 0, &Error{bad, "more than one Content-Length field"}
	}
	for i := range hs {
		if equalFoldLower(hs[i].Name, "content-length") {
			return contentLengthValue(hs[i].Value, bad)
		}
	}
	return -1, nil
}

// contentLengthValue parses a Content-Length value by parseContentLength's rules.
func contentLengthValue(v string, bad int) (int64, *Error) {
	if v == "" || len(v) > 18 { // 18 digits always fit in an int64
		return 0, &Error{bad, "invalid Content-Length " + quote(v)}
	}
	var n int64
	for j := 0; j < len(v); j++ {
		if !isDigit(v[j]) {
			return 0, &Error{bad, "invalid Content-Length " + quote(v)}
		}
		n = n*10 + int64(v[j]-'0')
	}
	return n, nil
}

func indexByte(b []byte, c byte) int {
	for i := range b {
		if b[i] == c {
			return i
		}
	}
	return -1
}
