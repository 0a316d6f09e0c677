package h1

import "encoding/binary"

// Character classes from RFC 9110 §5.6.2 (token), §5.5 (field values) and RFC 3986 (URI
// components), as lookup tables so the per-byte checks on the hot path are one load.

var tcharTable = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// regNameTable: RFC 3986 reg-name without pct-encoded (unreserved / sub-delims). Real host
// names are never percent-encoded, and a '%' in a host is where URL parsers disagree.
var regNameTable = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "-._~!$&'()*+,;=" {
		t[c] = true
	}
	return t
}()

// tchar8 is tcharTable as 0/1 bytes, to be ANDed.
var tchar8 = func() (t [256]uint8) {
	for c, ok := range tcharTable {
		if ok {
			t[c] = 1
		}
	}
	return t
}()

func isTchar(c byte) bool { return tcharTable[c] }

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tcharTable[s[i]] {
			return false
		}
	}
	return true
}

// isFieldVchar: field-vchar = VCHAR / obs-text, plus SP and HTAB inside a value
// (RFC 9110 §5.5). Everything else (NUL, CR, LF, other CTLs, DEL) is rejected.
func isFieldValueByte(c byte) bool {
	return c == '\t' || (c >= ' ' && c != 0x7f)
}

// validFieldValue reports whether every byte of v is a field-value byte
// (isFieldValueByte), eight at a time: values are most of a head's bytes, and checking
// them one by one was a tenth of meshd's instructions per request (issue 17). A word with
// a byte below 0x20 (a CTL, or HTAB, which is allowed) or DEL is checked byte by byte.
func validFieldValue(v []byte) bool {
	i := 0
	for ; i+8 <= len(v); i += 8 {
		if suspectWord(binary.LittleEndian.Uint64(v[i:])) {
			for _, c := range v[i : i+8] {
				if !isFieldValueByte(c) {
					return false
				}
			}
		}
	}
	for ; i < len(v); i++ {
		if !isFieldValueByte(v[i]) {
			return false
		}
	}
	return true
}

// validValue reports whether v may be sent as a field value: field-vchar, SP and HTAB
// only (RFC 9110 §5.5). It is validFieldValue for a string: the values of a head written from an
// http.Header (WriteHeaderRequest, the bridge's requests of HTTP/2 clients), where the
// byte-by-byte check was most of the writer's instructions (issue 12).
func validValue(v string) bool {
	i := 0
	for ; i+8 <= len(v); i += 8 {
		w := v[i : i+8]
		x := uint64(w[0]) | uint64(w[1])<<8 | uint64(w[2])<<16 | uint64(w[3])<<24 |
			uint64(w[4])<<32 | uint64(w[5])<<40 | uint64(w[6])<<48 | uint64(w[7])<<56
		if suspectWord(x) {
			for j := 0; j < 8; j++ {
				if !isFieldValueByte(w[j]) {
					return false
				}
			}
		}
	}
	for ; i < len(v); i++ {
		if !isFieldValueByte(v[i]) {
			return false
		}
	}
	return true
}

// suspectWord reports whether a byte of x (eight bytes of a value) is below 0x20 (a CTL,
// or HTAB, which is allowed) or DEL: then its bytes are checked one by one.
func suspectWord(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	del := x ^ (0x7f * ones)
	// (w - n·ones) &^ w & highs is nonzero exactly when a byte of w is below n (n <= 0x80).
	return ((x-0x20*ones)&^x|(del-ones)&^del)&highs != 0
}

func isHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

func unhex(c byte) int64 {
	switch {
	case '0' <= c && c <= '9':
		return int64(c - '0')
	case 'a' <= c && c <= 'f':
		return int64(c-'a') + 10
	default:
		return int64(c-'A') + 10
	}
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// EqualFoldLower reports whether s equals the lower-case ASCII string l, ignoring case
// in s: the field-name comparison of every HTTP/1.1 path (the codec, the forwarding
// rules, the transports).
func EqualFoldLower(s, l string) bool { return equalFoldLower(s, l) }

// EqualFold reports whether two ASCII strings are equal ignoring case.
func EqualFold(a, b string) bool { return equalFoldASCII(a, b) }

// equalFoldLower reports whether s equals the lower-case ASCII string l, ignoring case in s.
func equalFoldLower(s, l string) bool {
	if len(s) != len(l) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if lower(s[i]) != l[i] {
			return false
		}
	}
	return true
}

// trimOWS removes OWS (SP / HTAB) from both ends (RFC 9110 §5.6.3).
func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// nextListElem splits the first element off a comma-separated list (RFC 9110 §5.6.1),
// trimming OWS around it. ok is false when the list is exhausted.
func nextListElem(list string) (elem, rest string, ok bool) {
	if list == "" {
		return "", "", false
	}
	for i := 0; i < len(list); i++ {
		if list[i] == ',' {
			return trimOWS(list[:i]), list[i+1:], true
		}
	}
	return trimOWS(list), "", true
}

// listHasToken reports whether the comma-separated list contains tok (lower case),
// case-insensitively.
func listHasToken(list, tok string) bool {
	for {
		elem, rest, ok := nextListElem(list)
		if !ok {
			return false
		}
		if equalFoldLower(elem, tok) {
			return true
		}
		list = rest
	}
}

// foldKey is a lower-case field name (letters, digits and '-') made ready to be compared,
// case-insensitively, with a name of its length a word at a time: OR-ing 0x20 into the
// places of its letters lowers a name's letters there and maps no other byte onto a
// letter, so the comparison is exact for any bytes. The words are the name's first
// eight (or four) bytes, its last eight (or four), and for names over sixteen bytes the
// eight after the first.
type foldKey struct {
	a, b, c foldWord
	lit     string
}

type foldWord struct{ w, mask uint64 }

func (x foldWord) eq(v uint64) bool { return v|x.mask == x.w }

func mkFoldWord(lit string) (x foldWord) {
	for i := 0; i < len(lit); i++ {
		x.w |= uint64(lit[i]) << (8 * i)
		if lit[i] >= 'a' && lit[i] <= 'z' {
			x.mask |= 0x20 << (8 * i)
		}
	}
	return x
}

func mkFoldKey(lit string) foldKey {
	k := foldKey{lit: lit}
	switch n := len(lit); {
	case n >= 8:
		k.a, k.c = mkFoldWord(lit[:8]), mkFoldWord(lit[n-8:])
		if n > 16 {
			k.b = mkFoldWord(lit[8:16])
		}
	case n >= 4:
		k.a, k.c = mkFoldWord(lit[:4]), mkFoldWord(lit[n-4:])
	}
	return k
}

// match reports whether s equals k's name ignoring case; the caller has checked that
// their lengths are equal.
func (k *foldKey) match(s string) bool {
	switch n := len(s); {
	case n >= 8:
		if !k.a.eq(le64(s)) || !k.c.eq(le64(s[n-8:])) {
			return false
		}
		return n <= 16 || k.b.eq(le64(s[8:]))
	case n >= 4:
		return k.a.eq(uint64(le32(s))) && k.c.eq(uint64(le32(s[n-4:])))
	}
	return equalFoldLower(s, k.lit)
}

func le32(s string) uint32 {
	_ = s[3]
	return uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24
}

func le64(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// The field names the codec tells apart, as foldKeys.
var (
	keyHost             = mkFoldKey("host")
	keyExpect           = mkFoldKey("expect")
	keyUpgrade          = mkFoldKey("upgrade")
	keyTrailer          = mkFoldKey("trailer")
	keyConnection       = mkFoldKey("connection")
	keyKeepAlive        = mkFoldKey("keep-alive")
	keyContentLength    = mkFoldKey("content-length")
	keyProxyConnection  = mkFoldKey("proxy-connection")
	keyTransferEncoding = mkFoldKey("transfer-encoding")
	keyProxyAuthn       = mkFoldKey("proxy-authenticate")
	keyProxyAuthz       = mkFoldKey("proxy-authorization")
)
