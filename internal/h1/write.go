package h1

import (
	"bufio"
	"net/http"
	"strconv"
)

// Field classes the writers treat specially. Hop-by-hop fields are those RFC 9110 §7.6.1
// says a proxy must not forward: Connection and every field it names, plus the fields that
// are hop-by-hop by definition (Keep-Alive, Proxy-Connection, TE, Transfer-Encoding, Upgrade).
// Proxy-Authorization / Proxy-Authenticate are consumed by the first proxy (RFC 9110 §11.7)
// and dropped like net/http/httputil.ReverseProxy does, so credentials meant for meshd never
// leak upstream.
type fieldClass uint8

const (
	fcOther fieldClass = iota
	fcHost
	fcContentLength
	fcTransferEncoding
	fcConnection
	fcHop // Keep-Alive, Proxy-Connection, Proxy-Authorization, Proxy-Authenticate
	fcTE
	fcTrailer
	fcUpgrade
)

func classify(name string) fieldClass {
	switch len(name) {
	case 2:
		if equalFoldLower(name, "te") {
			return fcTE
		}
	case 4:
		if keyHost.match(name) {
			return fcHost
		}
	case 7:
		if keyUpgrade.match(name) {
			return fcUpgrade
		}
		if keyTrailer.match(name) {
			return fcTrailer
		}
	case 10:
		if keyConnection.match(name) {
			return fcConnection
		}
		if keyKeepAlive.match(name) {
			return fcHop
		}
	case 14:
		if keyContentLength.match(name) {
			return fcContentLength
		}
	case 16:
		if keyProxyConnection.match(name) {
			return fcHop
		}
	case 17:
		if keyTransferEncoding.match(name) {
			return fcTransferEncoding
		}
	case 18:
		if keyProxyAuthn.match(name) {
			return fcHop
		}
	case 19:
		if keyProxyAuthz.match(name) {
			return fcHop
		}
	}
	return fcOther
}

// HopByHop reports whether a field is hop-by-hop (RFC 9110 §7.6.1): Connection, TE,
// Trailer, Transfer-Encoding, Upgrade, Keep-Alive, Proxy-Connection and the
// Proxy-Authenticate/-Authorization pair. It is the one list meshd strips, whether the
// request goes out through this package's writers or through net/http (proxy/forward).
// Fields a Connection field names are hop-by-hop too; that is the caller's to check.
func HopByHop(name string) bool {
	switch classify(name) {
	case fcOther, fcHost, fcContentLength:
		return false
	}
	return true
}

// isFramingOrHopField reports fields that must never appear in a forwarded trailer section.
func isFramingOrHopField(name string) bool { return classify(name) != fcOther }

// TrailerField reports whether name may be a trailer field: a token, and none of the
// framing or hop-by-hop fields (RFC 9110 §6.5.1) the body writers and readers drop there.
func TrailerField(name string) bool { return isToken(name) && !isFramingOrHopField(name) }

// namedInConnection reports whether a Connection field in hs lists name (RFC 9110 §7.6.1:
// such fields are hop-by-hop and removed by a proxy).
func namedInConnection(hs []Header, name string) bool {
	for i := range hs {
		if classify(hs[i].Name) != fcConnection {
			continue
		}
		for list := hs[i].Value; ; {
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

func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if lower(a[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}

// connectionNamesFields reports whether a Connection field lists anything beyond close,
// keep-alive and upgrade, whose named fields the writers drop anyway; the common case then
// skips the per-field namedInConnection scan.
func connectionNamesFields(hs []Header) bool {
	for i := range hs {
		if classify(hs[i].Name) != fcConnection {
			continue
		}
		for list := hs[i].Value; ; {
			elem, rest, ok := nextListElem(list)
			if !ok {
				break
			}
			if elem != "" && !equalFoldLower(elem, "close") && !equalFoldLower(elem, "keep-alive") && !equalFoldLower(elem, "upgrade") {
				return true
			}
			list = rest
		}
	}
	return false
}

func writeField(w *bufio.Writer, name, value string) {
	if len(name)+len(value)+4 <= w.Available() {
		// The common case, appended in place and written once: four WriteString calls
		// per field were a twentieth of meshd's instructions per request (issue 17).
		b := append(w.AvailableBuffer(), name...)
		b = append(b, ':', ' ')
		b = append(b, value...)
		b = append(b, '\r', '\n')
		_, _ = w.Write(b)
		return
	}
	// bufio.Writer errors are sticky: the writers check only the last write.
	_, _ = w.WriteString(name)
	_, _ = w.WriteString(": ")
	_, _ = w.WriteString(value)
	_, _ = w.WriteString("\r\n")
}

func writeExtraAndEnd(w *bufio.Writer, extra []Header, chunked bool, contentLength int64) error {
	for i := range extra {
		writeField(w, extra[i].Name, extra[i].Value)
	}
	if chunked {
		_, _ = w.WriteString("Transfer-Encoding: chunked\r\n")
	} else if contentLength >= 0 {
		if w.Available() >= 44 {
			b := append(w.AvailableBuffer(), "Content-Length: "...)
			b = strconv.AppendInt(b, contentLength, 10)
			b = append(b, "\r\n\r\n"...)
			_, err := w.Write(b)
			return err
		}
		_, _ = w.WriteString("Content-Length: ")
		_ = writeInt(w, contentLength, 10)
		_, _ = w.WriteString("\r\n")
	}
	_, err := w.WriteString("\r\n")
	return err
}

// WriteRequestHead writes req's head to w as an HTTP/1.1 request for an upstream: the
// request-line with target (req.Target when target is ""), the Host field with req.Host
// (where the Host field was received, first if it was not), the end-to-end fields of
// req.Headers in order, "TE: trailers" if the client sent a TE listing trailers (RFC 9110
// §10.1.4), then extra, then the framing field the body needs: Transfer-Encoding: chunked
// when req.Chunked, Content-Length when req.ContentLength >= 0, none otherwise.
//
// Dropped from req.Headers: Connection, Keep-Alive, Proxy-Connection, TE, Transfer-Encoding,
// Content-Length (re-generated from the parsed framing), Upgrade, Proxy-Authorization,
// Trailer unless the body is chunked (it announces trailers, which are forwarded only in a
// chunked body; RFC 9110 §6.6.2 makes it end-to-end otherwise), and every field named in a
// Connection field. With keepUpgrade (a WebSocket or other protocol switch the caller has
// decided to relay) Upgrade is kept and "Connection: upgrade" written.
//
// extra must hold valid field lines (token names, values without CR/LF/NUL); the writer does
// not re-check them, and must not contain Host or framing fields. To ask the upstream to
// close, pass Connection: close in extra. Nothing is flushed. The only error is w's.
func WriteRequestHead(w *bufio.Writer, req *Request, target string, extra []Header, keepUpgrade bool) error {
	if target == "" {
		target = req.Target
	}
	// Room for the longest head these fields can make: the start line, Host, the fields,
	// TE: trailers, Connection: upgrade, the framing field and the end.
	need := len(req.Method) + len(target) + len(req.Host) + fieldsSize(req.Headers) + fieldsSize(extra) + 11 + 8 + 14 + 21 + headEndSize
	b, err := headBuffer(w, need)
	if err != nil {
		return err
	}
	b = append(b, req.Method...)
	b = append(b, ' ')
	b = append(b, target...)
	b = append(b, " HTTP/1.1\r\n"...)
	if !req.hasHost {
		b = appendField(b, "Host", req.Host)
	}
	conn := !req.noConn && connectionNamesFields(req.Headers)
	teTrailers := false
	for i := range req.Headers {
		h := &req.Headers[i]
		switch classify(h.Name) {
		case fcHost:
			if req.hasHost {
				b = appendField(b, h.Name, req.Host)
			}
			continue
		case fcTE:
			teTrailers = teTrailers || listHasToken(h.Value, "trailers")
			continue
		case fcTrailer:
			if !req.Chunked {
				continue
			}
		case fcUpgrade:
			if !keepUpgrade {
				continue
			}
			b = appendField(b, h.Name, h.Value)
			continue
		case fcContentLength, fcTransferEncoding, fcConnection, fcHop:
			continue
		}
		if conn && namedInConnection(req.Headers, h.Name) {
			continue
		}
		b = appendField(b, h.Name, h.Value)
	}
	if teTrailers {
		b = append(b, "TE: trailers\r\n"...)
	}
	if keepUpgrade {
		b = append(b, "Connection: upgrade\r\n"...)
	}
	b = appendExtraAndEnd(b, extra, req.Chunked, req.ContentLength)
	_, err = w.Write(b)
	return err
}

// headEndSize bounds what appendExtraAndEnd adds besides extra: the framing field (the
// longer of "Transfer-Encoding: chunked" and a Content-Length of 19 digits) and the end.
const headEndSize = 40 + 4

// fieldsSize is the size of hs as field lines.
func fieldsSize(hs []Header) int {
	n := 0
	for i := range hs {
		n += len(hs[i].Name) + len(hs[i].Value) + 4
	}
	return n
}

// headBuffer returns the writer's free buffer with room for need bytes, the head then
// made in it by appends and written with one Write (a Write per field line was a tenth
// of meshd's instructions per request; issue 17). A head that does not fit in what is
// free is flushed ahead of, and one larger than the whole buffer (rare: the buffer holds
// kilobytes) is made in a buffer of its own.
func headBuffer(w *bufio.Writer, need int) ([]byte, error) {
	if need <= w.Available() {
		return w.AvailableBuffer(), nil
	}
	if need <= w.Size() {
		if err := w.Flush(); err != nil {
			return nil, err
		}
		return w.AvailableBuffer(), nil
	}
	return make([]byte, 0, need), nil
}

// appendField appends the field line name: value.
func appendField(b []byte, name, value string) []byte {
	b = append(b, name...)
	b = append(b, ':', ' ')
	b = append(b, value...)
	return append(b, '\r', '\n')
}

// appendExtraAndEnd is writeExtraAndEnd appending to b.
func appendExtraAndEnd(b []byte, extra []Header, chunked bool, contentLength int64) []byte {
	for i := range extra {
		b = appendField(b, extra[i].Name, extra[i].Value)
	}
	if chunked {
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	} else if contentLength >= 0 {
		b = append(b, "Content-Length: "...)
		b = appendDec(b, contentLength)
		b = append(b, '\r', '\n')
	}
	return append(b, '\r', '\n')
}

// appendDec appends v in decimal. A status code and most Content-Lengths have at most
// four digits, appended here without strconv's general loop (two calls per request
// were ~140 instructions; issue 17).
func appendDec(b []byte, v int64) []byte {
	if v < 0 || v > 9999 {
		return strconv.AppendInt(b, v, 10)
	}
	u := uint(v)
	switch {
	case u < 10:
		return append(b, byte('0'+u))
	case u < 100:
		return append(b, byte('0'+u/10), byte('0'+u%10))
	case u < 1000:
		return append(b, byte('0'+u/100), byte('0'+u/10%10), byte('0'+u%10))
	}
	return append(b, byte('0'+u/1000), byte('0'+u/100%10), byte('0'+u/10%10), byte('0'+u%10))
}

// WriteResponseHead writes resp's head to w as an HTTP/1.1 response for a client: the
// status-line with resp's status and reason, the end-to-end fields of resp.Headers (the same
// hop-by-hop set as WriteRequestHead, with Proxy-Authenticate for Proxy-Authorization),
// "Connection: upgrade" and the Upgrade field when keepUpgrade (a 101 being relayed),
// otherwise "Connection: close" when close is set or the body is delimited by close, then
// extra, then the framing field: for NoBody responses the received Content-Length if one is
// kept (304, HEAD; see Response.ContentLength), else Transfer-Encoding: chunked or
// Content-Length, and none for a read-until-close body (the caller must then close the client
// connection after the body).
//
// To relay a chunked body to an HTTP/1.0 client, write a copy of resp with Chunked false and
// close set, and copy the body with BodyCopy.Dechunk. For 1xx heads pass close false. extra
// follows WriteRequestHead's rules. Nothing is flushed. The only error is w's.
func WriteResponseHead(w *bufio.Writer, resp *Response, extra []Header, keepUpgrade bool, close bool) error {
	// Room for the status line (a status of up to 20 digits), the fields, a Connection
	// field and the framing field.
	need := len(resp.Reason) + fieldsSize(resp.Headers) + fieldsSize(extra) + 32 + 21 + headEndSize
	b, err := headBuffer(w, need)
	if err != nil {
		return err
	}
	b = append(b, "HTTP/1.1 "...)
	b = appendDec(b, int64(resp.Status))
	b = append(b, ' ')
	b = append(b, resp.Reason...)
	b = append(b, '\r', '\n')
	conn := !resp.noConn && connectionNamesFields(resp.Headers)
	for i := range resp.Headers {
		h := &resp.Headers[i]
		switch classify(h.Name) {
		case fcTrailer:
			if !resp.Chunked {
				continue
			}
		case fcUpgrade:
			if keepUpgrade {
				b = appendField(b, h.Name, h.Value)
			}
			continue
		case fcContentLength, fcTransferEncoding, fcConnection, fcHop, fcTE:
			continue
		}
		if conn && namedInConnection(resp.Headers, h.Name) {
			continue
		}
		b = appendField(b, h.Name, h.Value)
	}
	switch {
	case keepUpgrade:
		b = append(b, "Connection: upgrade\r\n"...)
	case close || resp.UntilClose():
		b = append(b, "Connection: close\r\n"...)
	}
	if resp.NoBody {
		b = appendExtraAndEnd(b, extra, false, resp.ContentLength)
	} else {
		b = appendExtraAndEnd(b, extra, resp.Chunked, resp.ContentLength)
	}
	_, err = w.Write(b)
	return err
}

// WriteSimpleResponse writes a complete locally generated response (meshd's own 400, 404,
// 502, 503, ...): status-line with the standard reason phrase, headers verbatim (valid field
// lines, no framing fields), Content-Length: len(body) unless the status forbids a body
// (1xx, 204, 304; body is then not written), Connection: close when close is set, and body.
// Nothing is flushed. The only error is w's.
func WriteSimpleResponse(w *bufio.Writer, status int, headers []Header, body []byte, close bool) error {
	_, _ = w.WriteString("HTTP/1.1 ")
	_ = writeInt(w, int64(status), 10)
	_ = w.WriteByte(' ')
	_, _ = w.WriteString(http.StatusText(status))
	_, _ = w.WriteString("\r\n")
	for i := range headers {
		writeField(w, headers[i].Name, headers[i].Value)
	}
	if close {
		_, _ = w.WriteString("Connection: close\r\n")
	}
	noBody := status < 200 || status == 204 || status == 304
	cl := int64(len(body))
	if noBody {
		cl = -1
	}
	err := writeExtraAndEnd(w, nil, false, cl)
	if noBody || err != nil {
		return err
	}
	_, err = w.Write(body)
	return err
}
