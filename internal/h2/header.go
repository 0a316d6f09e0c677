package h2

import (
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// common maps the field names most requests and responses carry between their wire
// (lower-case) and net/http (canonical) spellings, so that decoding and encoding them
// allocates no string.
var (
	commonCanonical = map[string]string{}
	commonLower     = map[string]string{}
)

func init() {
	for _, k := range []string{
		"accept", "accept-charset", "accept-encoding", "accept-language", "accept-ranges",
		"age", "authorization", "cache-control", "content-disposition", "content-encoding",
		"content-language", "content-length", "content-location", "content-range",
		"content-type", "cookie", "date", "etag", "expect", "expires", "from", "host",
		"if-match", "if-modified-since", "if-none-match", "if-unmodified-since",
		"last-modified", "link", "location", "max-forwards", "origin", "proxy-authenticate",
		"proxy-authorization", "range", "referer", "refresh", "retry-after", "server",
		"set-cookie", "strict-transport-security", "trailer", "transfer-encoding",
		"user-agent", "vary", "via", "www-authenticate", "x-forwarded-for",
		"x-forwarded-proto", "x-forwarded-host", "x-request-id", "x-envoy-attempt-count",
		"x-envoy-upstream-service-time", "x-envoy-expected-rq-timeout-ms", "traceparent",
		"tracestate", "te", "grpc-status", "grpc-message", "grpc-timeout", "grpc-encoding",
		"grpc-accept-encoding", "grpc-status-details-bin", "x-meshd-error", "x-meshd-limit",
		"b3", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "x-amzn-trace-id",
	} {
		c := http.CanonicalHeaderKey(k)
		commonCanonical[k] = c
		commonLower[c] = k
	}
}

func canonical(k string) string {
	if c, ok := commonCanonical[k]; ok {
		return c
	}
	return http.CanonicalHeaderKey(k)
}

func lower(k string) string {
	if l, ok := commonLower[k]; ok {
		return l
	}
	upper := false
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c >= utf8.RuneSelf {
			// Not a token, so validFieldName drops it; strings.ToLower would fold it
			// into one first (the Kelvin sign into k: "X-O\u212a" became "x-ok").
			return k
		}
		upper = upper || 'A' <= c && c <= 'Z'
	}
	if !upper {
		return k
	}
	b := []byte(k)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// connectionHeaders are the fields HTTP/2 forbids (RFC 9113 §8.2.2): a message that
// carries one is malformed, and an intermediary drops them when translating.
func isConnectionHeader(lowerName string) bool {
	switch lowerName {
	case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
		return true
	}
	return false
}

// validFieldName reports a field name HTTP/2 accepts on the wire: a token, lower case.
func validFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || !httpguts.IsTokenRune(rune(c)) {
			return false
		}
	}
	return true
}

// headerBlock collects one decoded header block: pseudo-header fields by name,
// regular fields into an http.Header, with the violations RFC 9113 §8.2 and §8.3 list
// recorded as the first error. It is filled by the hpack decoder's emit function.
type headerBlock struct {
	method, scheme, authority, path, protocol, status string
	pseudoSeen                                        uint8 // bit per pseudo-header field
	header                                            http.Header
	fields                                            int
	size                                              uint32
	err                                               string // first malformation, "" when none
	tooLarge                                          bool   // past the size or field-count limit
	contentLength                                     int64  // -1 when absent
	trailers                                          bool   // a trailer block: no pseudo-header fields
	response                                          bool
	maxSize                                           uint32
	maxFields                                         int
	sawRegular                                        bool
	// hop: a regular field h1.HopByHop names and HTTP/2 admits (te, trailer,
	// proxy-authenticate, proxy-authorization; the connection-specific ones are refused).
	hop  bool
	slab []string // backing of the fields' first values
	// spare is an emptied map a finished request of this connection gave back
	// (serverConn.hdrFree): the next request block's fields go into it instead of a new
	// map, two allocations and a seventh of an h2c request's bytes (issue 12).
	spare http.Header
}

// slabSize is the number of first values one slab holds (see emit).
const slabSize = 64

const (
	pMethod = 1 << iota
	pScheme
	pAuthority
	pPath
	pStatus
	pProtocol
)

func (b *headerBlock) reset(response, trailers bool, maxSize uint32, maxFields int) {
	// The slab outlives the block: its handed-out windows belong to earlier blocks'
	// headers, and the free part past them serves the next blocks.
	*b = headerBlock{response: response, trailers: trailers, maxSize: maxSize, maxFields: maxFields, contentLength: -1, slab: b.slab, spare: b.spare}
}

func (b *headerBlock) fail(msg string) {
	if b.err == "" {
		b.err = msg
	}
}

// emit is the hpack decoder's callback.
func (b *headerBlock) emit(f hpack.HeaderField) {
	if b.tooLarge {
		return
	}
	b.size += f.Size()
	if b.maxSize > 0 && b.size > b.maxSize {
		b.tooLarge = true
		return
	}
	if !validValue(f.Value) {
		b.fail("invalid value of header field " + strconv.Quote(f.Name))
		return
	}
	if strings.HasPrefix(f.Name, ":") {
		b.pseudo(f)
		return
	}
	b.sawRegular = true
	if !validFieldName(f.Name) {
		b.fail("invalid header field name " + strconv.Quote(f.Name))
		return
	}
	b.fields++
	if b.maxFields > 0 && b.fields > b.maxFields {
		b.tooLarge = true
		return
	}
	if isConnectionHeader(f.Name) {
		b.fail("connection-specific header field " + strconv.Quote(f.Name))
		return
	}
	switch f.Name {
	case "te":
		if f.Value != "trailers" {
			b.fail(`te other than "trailers"`)
			return
		}
		b.hop = true
	case "trailer", "proxy-authenticate", "proxy-authorization":
		b.hop = true
	case "content-length":
		n, ok := parseContentLength(f.Value)
		if !ok || (b.contentLength >= 0 && b.contentLength != n) {
			b.fail("invalid content-length")
			return
		}
		b.contentLength = n
	}
	if b.header == nil {
		if b.spare != nil && !b.trailers && !b.response {
			b.header, b.spare = b.spare, nil
		} else {
			b.header = make(http.Header, 8)
		}
	}
	k := canonical(f.Name)
	if prev, ok := b.header[k]; ok {
		b.header[k] = append(prev, f.Value)
		return
	}
	// A field's first value is a one-element window of a connection-wide slab: one
	// allocation per slabSize fields instead of one per field or per block. A window is
	// never handed out twice (the slab only grows into its free part, and a full one is
	// replaced, not reset), and a later value of the same field appends past the
	// window's capacity, so it copies and never overwrites a neighbour.
	if len(b.slab) == cap(b.slab) {
		b.slab = make([]string, 0, slabSize)
	}
	n := len(b.slab)
	b.slab = append(b.slab, f.Value)
	b.header[k] = b.slab[n : n+1 : n+1]
}

func (b *headerBlock) pseudo(f hpack.HeaderField) {
	if b.sawRegular {
		b.fail("pseudo-header field after a regular field")
		return
	}
	if b.trailers {
		b.fail("pseudo-header field in trailers")
		return
	}
	var bit uint8
	var dst *string
	switch {
	case f.Name == ":status" && b.response:
		bit, dst = pStatus, &b.status
	case f.Name == ":method" && !b.response:
		bit, dst = pMethod, &b.method
	case f.Name == ":scheme" && !b.response:
		bit, dst = pScheme, &b.scheme
	case f.Name == ":authority" && !b.response:
		bit, dst = pAuthority, &b.authority
	case f.Name == ":path" && !b.response:
		bit, dst = pPath, &b.path
	case f.Name == ":protocol" && !b.response:
		bit, dst = pProtocol, &b.protocol
	default:
		b.fail("unknown pseudo-header field " + strconv.Quote(f.Name))
		return
	}
	if b.pseudoSeen&bit != 0 {
		b.fail("duplicate pseudo-header field " + f.Name)
		return
	}
	b.pseudoSeen |= bit
	*dst = f.Value
}

// checkRequest applies RFC 9113 §8.3.1 to a complete request head.
func (b *headerBlock) checkRequest() {
	if b.err != "" || b.tooLarge {
		return
	}
	if b.pseudoSeen&pMethod == 0 {
		b.fail("missing :method")
		return
	}
	if b.method == "CONNECT" && b.pseudoSeen&pProtocol == 0 {
		if b.pseudoSeen&(pScheme|pPath) != 0 || b.authority == "" {
			b.fail("CONNECT with :scheme or :path, or without :authority")
		}
		return
	}
	if b.pseudoSeen&pProtocol != 0 {
		b.fail(":protocol without extended CONNECT")
		return
	}
	if b.pseudoSeen&pScheme == 0 || b.pseudoSeen&pPath == 0 || b.path == "" {
		b.fail("missing or empty :scheme or :path")
		return
	}
	if !httpguts.ValidHostHeader(b.authority) {
		b.fail("invalid :authority")
	}
}

// checkResponse applies RFC 9113 §8.3.2 to a complete response head.
func (b *headerBlock) checkResponse() (int, bool) {
	if b.err != "" || b.pseudoSeen&pStatus == 0 || len(b.status) != 3 {
		b.fail("missing or invalid :status")
		return 0, false
	}
	n, err := strconv.Atoi(b.status)
	if err != nil || n < 100 {
		b.fail("invalid :status")
		return 0, false
	}
	return n, true
}

func parseContentLength(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// encodeHeader writes the regular fields of h (net/http spelling) to enc, lower-cased,
// without the fields HTTP/2 forbids and without "Host" (carried as :authority); "te"
// only as "trailers". skip names more fields to leave out (canonical spelling).
func encodeHeader(enc *hpackEncoder, h http.Header, skip func(string) bool) {
	for k, vs := range h {
		// skip first: a head encoded at the response's end sees its trailers too
		// ("Trailer:"-prefixed keys), whose lowercase form would cost a string each.
		if skip != nil && skip(k) {
			continue
		}
		encodeField(enc, k, vs)
	}
}

// encodeField encodes one field of h with its values: in lowercase, dropped when
// HTTP/2 forbids it or its name is not a token, each value dropped when it is not valid.
func encodeField(enc *hpackEncoder, k string, vs []string) {
	lk := lower(k)
	if isConnectionHeader(lk) || lk == "host" || !validFieldName(lk) {
		return
	}
	if lk == "te" {
		for _, v := range vs {
			if strings.EqualFold(strings.TrimSpace(v), "trailers") {
				_ = enc.WriteField(hpack.HeaderField{Name: "te", Value: "trailers"})
				break
			}
		}
		return
	}
	sensitive := lk == "authorization" || lk == "cookie" || lk == "proxy-authorization"
	for _, v := range vs {
		if !validValue(v) {
			continue
		}
		_ = enc.WriteField(hpack.HeaderField{Name: lk, Value: v, Sensitive: sensitive})
	}
}

// notTrailerField reports the fields a trailer section must not carry, which the
// trailers meshd encodes leave out: framing (Content-Length, Transfer-Encoding, Host) and
// hop-by-hop ones (Connection, Keep-Alive, Proxy-Connection, TE, Trailer, Upgrade,
// Proxy-Authenticate, Proxy-Authorization), the list internal/h1's body writers drop
// from HTTP/1.1 trailers (RFC 9110 §6.5.1). encodeHeader drops the connection-specific
// ones and Host anyway.
func notTrailerField(k string) bool {
	for _, n := range [...]string{"content-length", "te", "trailer", "proxy-authenticate", "proxy-authorization"} {
		if len(k) == len(n) && strings.EqualFold(k, n) {
			return true
		}
	}
	return false
}

// errCode names an error code the way RFC 9113 spells it.
func errCode(c http2.ErrCode) string { return c.String() }

// validValue is httpguts.ValidHeaderFieldValue (no CTL but HTAB, no DEL) eight bytes at
// a time: checked byte by byte, the values of every decoded head and every encoded one
// cost more than the rest of their handling (issue 12). internal/h1 has the same check;
// this package does not import it.
func validValue(v string) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	i := 0
	for ; i+8 <= len(v); i += 8 {
		w := v[i : i+8]
		x := uint64(w[0]) | uint64(w[1])<<8 | uint64(w[2])<<16 | uint64(w[3])<<24 |
			uint64(w[4])<<32 | uint64(w[5])<<40 | uint64(w[6])<<48 | uint64(w[7])<<56
		del := x ^ (0x7f * ones)
		// (w - n·ones) &^ w & highs is nonzero exactly when a byte of w is below n.
		if ((x-0x20*ones)&^x|(del-ones)&^del)&highs != 0 {
			for j := 0; j < 8; j++ {
				if c := w[j]; c != '\t' && (c < ' ' || c == 0x7f) {
					return false
				}
			}
		}
	}
	for ; i < len(v); i++ {
		if c := v[i]; c != '\t' && (c < ' ' || c == 0x7f) {
			return false
		}
	}
	return true
}
