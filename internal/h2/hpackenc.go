package h2

import "golang.org/x/net/http2/hpack"

// hpackEncoder writes header blocks (RFC 7541) with the static table and literals only:
// it never adds to the dynamic table, and it writes strings as they are, without
// Huffman coding, as HAProxy's encoder does.
//
// Why not x/net's hpack.Encoder: for every field it looked the name and value up in
// two maps of the static table and two of the dynamic one (hashing both strings),
// inserted what it did not find (evicting older entries), and Huffman-coded each value
// byte by byte: ~900 instructions per proxied h2c request (cachegrind), about 2.5% of
// meshd's work per request, to save bytes that a sidecar sends over loopback or a LAN.
// It also kept its table at 4096 bytes whatever the peer's SETTINGS_HEADER_TABLE_SIZE
// said, so a peer that asked for less failed to decode meshd's second response.
//
// The dynamic table's size is set to 0 at the start of a connection's first block
// (a size update): whatever the peer's decoder allows, meshd's table is empty, so no
// later SETTINGS_HEADER_TABLE_SIZE can ask for a smaller one. (The update is repeated
// after each such setting all the same, for nghttp2 before 1.47, which expected one.)
type hpackEncoder struct {
	buf   []byte
	sized bool // the table size update was written (the connection's first block)
}

// begin starts a header block in buf (emptied).
func (e *hpackEncoder) begin() {
	e.buf = e.buf[:0]
	if !e.sized {
		e.sized = true
		e.buf = append(e.buf, 0x20) // dynamic table size update: 0
	}
}

// WriteField appends f: an indexed field when the static table holds it whole (and it is
// not sensitive), else a literal not indexed (never indexed when sensitive), its name
// by index when the static table holds the name. f.Name is in lowercase.
func (e *hpackEncoder) WriteField(f hpack.HeaderField) error {
	idx, whole := staticIndex(f.Name, f.Value)
	if whole && !f.Sensitive {
		e.buf = appendHPACKInt(e.buf, 7, 0x80, idx)
		return nil
	}
	var first byte // literal without indexing (RFC 7541 §6.2.2)
	if f.Sensitive {
		first = 0x10 // literal never indexed (§6.2.3)
	}
	if idx > 0 {
		e.buf = appendHPACKInt(e.buf, 4, first, idx)
	} else {
		e.buf = append(e.buf, first)
		e.buf = appendHPACKString(e.buf, f.Name)
	}
	e.buf = appendHPACKString(e.buf, f.Value)
	return nil
}

// appendHPACKInt appends i with an n-bit prefix whose other bits are first's (RFC 7541
// §5.1).
func appendHPACKInt(b []byte, n uint8, first byte, i uint64) []byte {
	k := uint64(1)<<n - 1
	if i < k {
		return append(b, first|byte(i))
	}
	b = append(b, first|byte(k))
	for i -= k; i >= 0x80; i >>= 7 {
		b = append(b, byte(i&0x7f)|0x80)
	}
	return append(b, byte(i))
}

// appendHPACKString appends s as a string literal without Huffman coding (§5.2).
func appendHPACKString(b []byte, s string) []byte {
	b = appendHPACKInt(b, 7, 0, uint64(len(s)))
	return append(b, s...)
}

// staticIndex is the static table's (RFC 7541 Appendix A) index of name, 0 when it has
// none; whole when the entry holds value too.
func staticIndex(name, value string) (idx uint64, whole bool) {
	switch name {
	case ":authority":
		return 1, false
	case ":method":
		switch value {
		case "GET":
			return 2, true
		case "POST":
			return 3, true
		}
		return 2, false
	case ":path":
		switch value {
		case "/":
			return 4, true
		case "/index.html":
			return 5, true
		}
		return 4, false
	case ":scheme":
		switch value {
		case "http":
			return 6, true
		case "https":
			return 7, true
		}
		return 6, false
	case ":status":
		switch value {
		case "200":
			return 8, true
		case "204":
			return 9, true
		case "206":
			return 10, true
		case "304":
			return 11, true
		case "400":
			return 12, true
		case "404":
			return 13, true
		case "500":
			return 14, true
		}
		return 8, false
	case "accept-charset":
		return 15, false
	case "accept-encoding":
		return 16, value == "gzip, deflate"
	case "accept-language":
		return 17, false
	case "accept-ranges":
		return 18, false
	case "accept":
		return 19, false
	case "access-control-allow-origin":
		return 20, false
	case "age":
		return 21, false
	case "allow":
		return 22, false
	case "authorization":
		return 23, false
	case "cache-control":
		return 24, false
	case "content-disposition":
		return 25, false
	case "content-encoding":
		return 26, false
	case "content-language":
		return 27, false
	case "content-length":
		return 28, false
	case "content-location":
		return 29, false
	case "content-range":
		return 30, false
	case "content-type":
		return 31, false
	case "cookie":
		return 32, false
	case "date":
		return 33, false
	case "etag":
		return 34, false
	case "expect":
		return 35, false
	case "expires":
		return 36, false
	case "from":
		return 37, false
	case "host":
		return 38, false
	case "if-match":
		return 39, false
	case "if-modified-since":
		return 40, false
	case "if-none-match":
		return 41, false
	case "if-range":
		return 42, false
	case "if-unmodified-since":
		return 43, false
	case "last-modified":
		return 44, false
	case "link":
		return 45, false
	case "location":
		return 46, false
	case "max-forwards":
		return 47, false
	case "proxy-authenticate":
		return 48, false
	case "proxy-authorization":
		return 49, false
	case "range":
		return 50, false
	case "referer":
		return 51, false
	case "refresh":
		return 52, false
	case "retry-after":
		return 53, false
	case "server":
		return 54, false
	case "set-cookie":
		return 55, false
	case "strict-transport-security":
		return 56, false
	case "transfer-encoding":
		return 57, false
	case "user-agent":
		return 58, false
	case "vary":
		return 59, false
	case "via":
		return 60, false
	case "www-authenticate":
		return 61, false
	}
	return 0, false
}
