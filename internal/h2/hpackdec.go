package h2

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/net/http2/hpack"
)

// hpackDecoder is an HPACK (RFC 7541) decoder that allocates nothing for the fields it
// emits from its tables and one arena chunk per arenaChunk bytes of literal strings,
// where x/net's hpack.Decoder allocates a string per literal name and value.
//
// Ownership, which an earlier version of this path got wrong (views into a reused
// buffer ended up in an HPACK table and corrupted it): a literal's bytes are copied
// into an append-only arena and emitted as a string view of them; arena bytes are
// never written again once handed out (a full chunk is replaced, never reset), so a
// view stays valid for as long as anything (a header map, an HPACK encoder's table
// downstream) holds it, and the garbage collector keeps its chunk alive that long. The
// decoder's own dynamic table owns its strings: an entry is copied out of the input
// into a string of its own when it is inserted.
//
// It behaves as hpack.Decoder (NewDecoder with the same table size, SetMaxStringLength
// with maxStrLen) for every input: the same fields, the same table, an error where it
// fails (TestHPACKDecoderMatchesXNet and FuzzHPACKDecoder compare them).
type hpackDecoder struct {
	emit      func(hpack.HeaderField)
	maxStrLen int

	ents       []hpack.HeaderField // the dynamic table, oldest first
	size       uint32              // its size (RFC 7541 §4.1)
	maxSize    uint32              // its current maximum (size updates)
	allowedMax uint32              // the maximum the peer may set (our SETTINGS_HEADER_TABLE_SIZE)
	firstField bool                // no representation decoded yet in this block

	save  []byte       // the start of a representation split across Write calls
	tmp   appendWriter // a literal's decoded name and value, reused
	arena []byte       // the current chunk: bytes [0:len) are handed out, [len:cap) free
}

// arenaChunk is the size of a literal arena chunk. Small, since a view held long (by
// an HPACK encoder's table, say) keeps its whole chunk alive.
const arenaChunk = 2 << 10

var (
	errNeedMore       = errors.New("hpack: need more data")
	errVarintOverflow = hpack.DecodingError{Err: errors.New("varint integer overflow")}
)

func newHPACKDecoder(maxTableSize uint32, emit func(hpack.HeaderField)) *hpackDecoder {
	return &hpackDecoder{emit: emit, maxSize: maxTableSize, allowedMax: maxTableSize, firstField: true}
}

// SetMaxStringLength bounds a literal string (encoded, and decoded) and an emitted
// field's name and value.
func (d *hpackDecoder) SetMaxStringLength(n int) { d.maxStrLen = n }

// Write decodes a fragment of a header block, emitting each complete field.
func (d *hpackDecoder) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	buf := p
	if len(d.save) > 0 {
		d.save = append(d.save, p...)
		buf = d.save
	}
	for len(buf) > 0 {
		rest, err := d.field(buf)
		if err == errNeedMore {
			const varIntOverhead = 8
			if d.maxStrLen != 0 && int64(len(buf)) > 2*(int64(d.maxStrLen)+varIntOverhead) {
				return 0, hpack.ErrStringLength
			}
			// buf may be save itself: move its tail to the front.
			d.save = append(d.save[:0], buf...)
			return len(p), nil
		}
		d.firstField = false
		if err != nil {
			d.save = d.save[:0]
			return len(p), err
		}
		buf = rest
	}
	d.save = d.save[:0]
	return len(p), nil
}

// Close ends a header block: an incomplete representation is an error.
func (d *hpackDecoder) Close() error {
	if len(d.save) > 0 {
		d.save = d.save[:0]
		return hpack.DecodingError{Err: errors.New("truncated headers")}
	}
	d.firstField = true
	// A huge literal must not keep its buffers for the connection's life.
	if cap(d.tmp.b) > keptScratch {
		d.tmp.b = nil
	}
	if cap(d.save) > keptScratch {
		d.save = nil
	}
	return nil
}

// keptScratch bounds the scratch buffers kept between header blocks.
const keptScratch = 16 << 10

// field decodes one representation at the start of p (RFC 7541 §6).
func (d *hpackDecoder) field(p []byte) ([]byte, error) {
	b := p[0]
	switch {
	case b&128 != 0:
		idx, rest, err := readVarInt(7, p)
		if err != nil {
			return nil, err
		}
		hf, ok := d.at(idx)
		if !ok {
			return nil, hpack.DecodingError{Err: hpack.InvalidIndexError(idx)}
		}
		return rest, d.callEmit(hpack.HeaderField{Name: hf.Name, Value: hf.Value})
	case b&192 == 64:
		return d.literal(p, 6, true, false)
	case b&240 == 0:
		return d.literal(p, 4, false, false)
	case b&240 == 16:
		return d.literal(p, 4, false, true)
	case b&224 == 32:
		if !d.firstField && d.size > 0 {
			return nil, hpack.DecodingError{Err: errors.New("dynamic table size update MUST occur at the beginning of a header block")}
		}
		size, rest, err := readVarInt(5, p)
		if err != nil {
			return nil, err
		}
		if size > uint64(d.allowedMax) {
			return nil, hpack.DecodingError{Err: errors.New("dynamic table size update too large")}
		}
		d.maxSize = uint32(size)
		d.evict()
		return rest, nil
	}
	return nil, hpack.DecodingError{Err: errors.New("invalid encoding")}
}

// literal decodes a literal field representation with an n-bit name index prefix;
// indexed: it goes into the dynamic table.
func (d *hpackDecoder) literal(p []byte, n uint8, indexed, sensitive bool) ([]byte, error) {
	nameIdx, buf, err := readVarInt(n, p)
	if err != nil {
		return nil, err
	}
	var name string
	var rawName, rawValue []byte
	var huffName, huffValue bool
	if nameIdx > 0 {
		hf, ok := d.at(nameIdx)
		if !ok {
			return nil, hpack.DecodingError{Err: hpack.InvalidIndexError(nameIdx)}
		}
		name = hf.Name
	} else if rawName, huffName, buf, err = d.readString(buf); err != nil {
		return nil, err
	}
	if rawValue, huffValue, buf, err = d.readString(buf); err != nil {
		return nil, err
	}
	// Complete: decode the strings into the scratch buffer.
	d.tmp.b = d.tmp.b[:0]
	if nameIdx == 0 {
		if err := d.decodeString(rawName, huffName); err != nil {
			return nil, err
		}
	}
	nameLen := len(d.tmp.b)
	if err := d.decodeString(rawValue, huffValue); err != nil {
		return nil, err
	}
	if indexed {
		// The table owns its strings: one copy of a literal name and the value; the
		// field emitted is the table's.
		s := string(d.tmp.b)
		if nameIdx == 0 {
			name = s[:nameLen]
		}
		hf := hpack.HeaderField{Name: name, Value: s[nameLen:]}
		d.add(hf)
		return buf, d.callEmit(hf)
	}
	// Not indexed: emitted as views of arena bytes that are never written again.
	a := d.grab(len(d.tmp.b))
	copy(a, d.tmp.b)
	if nameIdx == 0 {
		name = view(a[:nameLen])
	}
	return buf, d.callEmit(hpack.HeaderField{Name: name, Value: view(a[nameLen:]), Sensitive: sensitive})
}

// readString reads a string literal's length and bytes (not yet decoded).
func (d *hpackDecoder) readString(p []byte) (raw []byte, huff bool, rest []byte, err error) {
	if len(p) == 0 {
		return nil, false, p, errNeedMore
	}
	huff = p[0]&128 != 0
	n, p, err := readVarInt(7, p)
	if err != nil {
		return nil, false, p, err
	}
	if d.maxStrLen != 0 && n > uint64(d.maxStrLen) {
		return nil, false, nil, hpack.ErrStringLength
	}
	if uint64(len(p)) < n {
		return nil, false, p, errNeedMore
	}
	return p[:n], huff, p[n:], nil
}

// decodeString appends a string literal to the scratch buffer, Huffman-decoded if
// need be.
func (d *hpackDecoder) decodeString(raw []byte, huff bool) error {
	if !huff {
		d.tmp.b = append(d.tmp.b, raw...)
		return nil
	}
	start := len(d.tmp.b)
	if _, err := hpack.HuffmanDecode(&d.tmp, raw); err != nil {
		return err
	}
	if d.maxStrLen != 0 && len(d.tmp.b)-start > d.maxStrLen {
		return hpack.ErrStringLength
	}
	return nil
}

// appendWriter appends what is written to b (a field of the decoder, so that passing
// it as an io.Writer allocates nothing).
type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// grab hands out n bytes of the arena that no one has been given before.
func (d *hpackDecoder) grab(n int) []byte {
	if cap(d.arena)-len(d.arena) < n {
		d.arena = make([]byte, 0, max(arenaChunk, n))
	}
	start := len(d.arena)
	d.arena = d.arena[:start+n]
	return d.arena[start : start+n : start+n]
}

// view is the string of arena bytes b, without a copy: they are never written again.
func view(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

func (d *hpackDecoder) callEmit(hf hpack.HeaderField) error {
	if d.maxStrLen != 0 && (len(hf.Name) > d.maxStrLen || len(hf.Value) > d.maxStrLen) {
		return hpack.ErrStringLength
	}
	d.emit(hf)
	return nil
}

// at is the field at index i of the static and dynamic tables (RFC 7541 §2.3.3).
func (d *hpackDecoder) at(i uint64) (hpack.HeaderField, bool) {
	if i == 0 {
		return hpack.HeaderField{}, false
	}
	if i <= uint64(len(staticTable)) {
		return staticTable[i-1], true
	}
	j := i - uint64(len(staticTable))
	if j > uint64(len(d.ents)) {
		return hpack.HeaderField{}, false
	}
	return d.ents[uint64(len(d.ents))-j], true
}

func (d *hpackDecoder) add(hf hpack.HeaderField) {
	d.ents = append(d.ents, hf)
	d.size += hf.Size()
	d.evict()
}

// evict drops the oldest entries until the table fits its maximum.
func (d *hpackDecoder) evict() {
	n := 0
	for d.size > d.maxSize && n < len(d.ents) {
		d.size -= d.ents[n].Size()
		n++
	}
	if n > 0 {
		k := copy(d.ents, d.ents[n:])
		clear(d.ents[k:])
		d.ents = d.ents[:k]
	}
}

// readVarInt reads an HPACK integer with an n-bit prefix (RFC 7541 §5.1).
func readVarInt(n byte, p []byte) (uint64, []byte, error) {
	if len(p) == 0 {
		return 0, p, errNeedMore
	}
	i := uint64(p[0]) & (1<<n - 1)
	if i < 1<<n-1 {
		return i, p[1:], nil
	}
	orig := p
	p = p[1:]
	var m uint64
	for len(p) > 0 {
		b := p[0]
		p = p[1:]
		i += uint64(b&127) << m
		if b&128 == 0 {
			return i, p, nil
		}
		m += 7
		if m >= 63 {
			return 0, orig, errVarintOverflow
		}
	}
	return 0, orig, errNeedMore
}

// staticTable is RFC 7541 Appendix A.
var staticTable = [...]hpack.HeaderField{
	{Name: ":authority"}, {Name: ":method", Value: "GET"}, {Name: ":method", Value: "POST"},
	{Name: ":path", Value: "/"}, {Name: ":path", Value: "/index.html"}, {Name: ":scheme", Value: "http"},
	{Name: ":scheme", Value: "https"}, {Name: ":status", Value: "200"}, {Name: ":status", Value: "204"},
	{Name: ":status", Value: "206"}, {Name: ":status", Value: "304"}, {Name: ":status", Value: "400"},
	{Name: ":status", Value: "404"}, {Name: ":status", Value: "500"}, {Name: "accept-charset"},
	{Name: "accept-encoding", Value: "gzip, deflate"}, {Name: "accept-language"}, {Name: "accept-ranges"},
	{Name: "accept"}, {Name: "access-control-allow-origin"}, {Name: "age"}, {Name: "allow"},
	{Name: "authorization"}, {Name: "cache-control"}, {Name: "content-disposition"},
	{Name: "content-encoding"}, {Name: "content-language"}, {Name: "content-length"},
	{Name: "content-location"}, {Name: "content-range"}, {Name: "content-type"}, {Name: "cookie"},
	{Name: "date"}, {Name: "etag"}, {Name: "expect"}, {Name: "expires"}, {Name: "from"}, {Name: "host"},
	{Name: "if-match"}, {Name: "if-modified-since"}, {Name: "if-none-match"}, {Name: "if-range"},
	{Name: "if-unmodified-since"}, {Name: "last-modified"}, {Name: "link"}, {Name: "location"},
	{Name: "max-forwards"}, {Name: "proxy-authenticate"}, {Name: "proxy-authorization"},
	{Name: "range"}, {Name: "referer"}, {Name: "refresh"}, {Name: "retry-after"}, {Name: "server"},
	{Name: "set-cookie"}, {Name: "strict-transport-security"}, {Name: "transfer-encoding"},
	{Name: "user-agent"}, {Name: "vary"}, {Name: "via"}, {Name: "www-authenticate"},
}

func init() {
	if len(staticTable) != 61 {
		panic(fmt.Sprintf("hpack static table: %d entries", len(staticTable)))
	}
}
