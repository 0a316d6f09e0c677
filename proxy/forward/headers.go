package forward

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
	"net/http"
	"net/textproto"
	"strings"
	"sync"
	"unsafe"

	"github.com/meshd/meshd/internal/h1"
	"golang.org/x/net/http/httpguts"
)

// This file holds the forwarding-header rules of every L7 path, in one place: what meshd
// adds to a request it forwards (X-Forwarded-For appended, X-Forwarded-Proto, X-Request-Id)
// and what it removes (hop-by-hop fields, RFC 9110 §7.6.1). The HTTP/1.1 fast path works on
// the codec's h1.Header slice without allocating (H1Forwarding); the net/http paths work on
// http.Header (HTTPForwarding). Both apply the same rules, and TestForwardingRulesAgree
// holds them to it. The HTTP/1.1 codec's writer drops the hop-by-hop fields of an h1
// request itself (internal/h1/write.go); both use h1.HopByHop, the one list.
//
// The rules:
//   - X-Forwarded-For: the client's address is appended; repeated fields are merged into
//     one (RFC 9110 §5.3), so the client's address is always the last entry.
//   - X-Forwarded-Proto: on ingress, the scheme meshd saw (the network peer is not trusted
//     to state it); on egress, the app's value is kept when present.
//   - X-Request-Id: kept when present, generated (a random UUID) otherwise.
//   - X-Meshd-Peer-Identity: the verified SPIFFE ID of the caller of an ingress mTLS
//     connection, for the application (docs/tls.md#the-caller-identity-header). Whatever
//     a request brings in this field is removed, on ingress and egress alike, so that
//     the value the application reads is meshd's or none: it cannot be forged.
//   - Fields the client names in Connection are removed first, so naming a forwarding
//     header there cannot drop the value meshd computed.

// HeaderPeerIdentity carries the verified identity of an ingress caller to the local
// application.
const HeaderPeerIdentity = "x-meshd-peer-identity"

// headerPeerIdentityCanonical is HeaderPeerIdentity as an http.Header key.
const headerPeerIdentityCanonical = "X-Meshd-Peer-Identity"

// DeleteHeader removes, in place, every field called lower.
func DeleteHeader(hs []h1.Header, lower string) []h1.Header {
	out := hs[:0]
	for _, h := range hs {
		if !EqualFoldASCII(h.Name, lower) {
			out = append(out, h)
		}
	}
	return out
}

// EqualFoldASCII compares s with lower, which must be lower case, ignoring ASCII case.
func EqualFoldASCII(s, lower string) bool { return h1.EqualFoldLower(s, lower) }

// Str views b as a string without copying; the caller keeps b unchanged while the
// string is in use (until the next request reuses scratch).
func Str(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// Values are built in scratch, which is sized so that appends never move it within
// one request (the strings handed out alias it); only repeated X-Forwarded-For fields
// can make it grow.
// H1Forwarding applies the forwarding rules to the HTTP/1.1 requests of one downstream
// connection. It is reused across the connection's requests, so the steady state
// allocates nothing; Extra holds the fields to add after the request's own, valid until
// the next Apply.
type H1Forwarding struct {
	Extra   []h1.Header
	scratch []byte
	ids     *rand.PCG
	draws   *rand.PCG // Draw's: kept apart from the ids, whose stream a client sees
}

// Draw is a uniform random number for the connection's routing choices (weighted
// targets): a generator of the connection's, seeded from the global one, costs a third
// of a draw from the global one per request (issue 17).
func (c *H1Forwarding) Draw() uint64 { return c.draws.Uint64() }

// NewH1Forwarding returns a forwarder with its buffers sized for the common request.
func NewH1Forwarding() *H1Forwarding {
	return &H1Forwarding{
		Extra:   make([]h1.Header, 0, 6),
		scratch: make([]byte, 0, 1024),
		ids:     rand.NewPCG(rand.Uint64(), rand.Uint64()),
		draws:   rand.NewPCG(rand.Uint64(), rand.Uint64()),
	}
}

// Apply rewrites req's fields and fills Extra. client is the peer IP ("" when unknown);
// peer is the verified identity of the client of an ingress connection ("" when none).
func (c *H1Forwarding) Apply(req *h1.Request, client, peer string, ingress bool, scheme string) {
	c.Extra = c.Extra[:0]
	c.scratch = c.scratch[:0]
	if req.ConnectionFields() && connectionNamesFields(req.Headers) {
		req.Headers = stripConnectionNamed(req.Headers)
	}
	xff, nxff, xffLen := -1, 0, 0
	haveProto, haveID, haveIdentity := false, false, false
	// Told apart by length first: a field of none of these lengths costs one switch,
	// not four comparisons (issue 17).
	for i := range req.Headers {
		switch n := req.Headers[i].Name; len(n) {
		case len(HeaderPeerIdentity):
			haveIdentity = haveIdentity || EqualFoldASCII(n, HeaderPeerIdentity)
		case len("x-forwarded-for"):
			if EqualFoldASCII(n, "x-forwarded-for") {
				if xff < 0 {
					xff = i
				}
				nxff++
				xffLen += len(req.Headers[i].Value) + 2
			}
		case len("x-forwarded-proto"):
			haveProto = haveProto || EqualFoldASCII(n, "x-forwarded-proto")
		case len("x-request-id"):
			haveID = haveID || EqualFoldASCII(n, "x-request-id")
		}
	}
	if client != "" {
		if xff >= 0 {
			need := xffLen + len(client)
			if need > cap(c.scratch) {
				c.scratch = make([]byte, 0, need+64)
			}
			start := len(c.scratch)
			for i := xff; i < len(req.Headers); i++ {
				h := &req.Headers[i]
				if h.Value == "" || (i > xff && !EqualFoldASCII(h.Name, "x-forwarded-for")) {
					continue
				}
				if len(c.scratch) > start {
					c.scratch = append(c.scratch, ", "...)
				}
				c.scratch = append(c.scratch, h.Value...)
			}
			if len(c.scratch) > start {
				c.scratch = append(c.scratch, ", "...)
			}
			c.scratch = append(c.scratch, client...)
			req.Headers[xff].Value = Str(c.scratch[start:])
			if nxff > 1 {
				req.Headers = removeFieldsAfter(req.Headers, xff, "x-forwarded-for")
			}
		} else {
			c.Extra = append(c.Extra, h1.Header{Name: "X-Forwarded-For", Value: client})
		}
	}
	if haveProto && ingress {
		// From the network, the scheme is what meshd saw, not what the peer claims.
		req.Headers = DeleteHeader(req.Headers, "x-forwarded-proto")
		haveProto = false
	}
	if haveIdentity {
		req.Headers = DeleteHeader(req.Headers, HeaderPeerIdentity)
	}
	if ingress && peer != "" {
		c.Extra = append(c.Extra, h1.Header{Name: headerPeerIdentityCanonical, Value: peer})
	}
	if !haveProto {
		c.Extra = append(c.Extra, h1.Header{Name: "X-Forwarded-Proto", Value: scheme})
	}
	if !haveID {
		if cap(c.scratch)-len(c.scratch) < 36 {
			c.scratch = make([]byte, 0, 64)
		}
		start := len(c.scratch)
		c.scratch = appendUUID(c.scratch, c.ids.Uint64(), c.ids.Uint64())
		c.Extra = append(c.Extra, h1.Header{Name: "X-Request-Id", Value: Str(c.scratch[start:])})
	}
}

// connectionNamesFields reports whether a Connection field lists a field name (anything
// beyond close, keep-alive and upgrade), so the common request skips stripConnectionNamed.
func connectionNamesFields(hs []h1.Header) bool {
	for i := range hs {
		if !EqualFoldASCII(hs[i].Name, "connection") {
			continue
		}
		for list := hs[i].Value; list != ""; {
			var elem string
			elem, list = NextToken(list)
			if elem != "" && !EqualFoldASCII(elem, "close") && !EqualFoldASCII(elem, "keep-alive") && !EqualFoldASCII(elem, "upgrade") {
				return true
			}
		}
	}
	return false
}

// NextToken splits the first element off a comma-separated list, trimming OWS.
func NextToken(list string) (elem, rest string) {
	elem = list
	for i := 0; i < len(list); i++ {
		if list[i] == ',' {
			elem, rest = list[:i], list[i+1:]
			break
		}
	}
	for len(elem) > 0 && (elem[0] == ' ' || elem[0] == '\t') {
		elem = elem[1:]
	}
	for len(elem) > 0 && (elem[len(elem)-1] == ' ' || elem[len(elem)-1] == '\t') {
		elem = elem[:len(elem)-1]
	}
	return elem, rest
}

// stripConnectionNamed removes, in place, the fields a Connection field names. Fields
// the request writer handles itself (Host, framing, Connection, TE, Upgrade, Trailer)
// stay for it to treat. Connection fields are always kept, so the region the compaction
// has already overwritten still holds every Connection value the scan needs.
func stripConnectionNamed(hs []h1.Header) []h1.Header {
	out := hs[:0]
	for _, h := range hs {
		if !writerHandled(h.Name) && namedInConnection(hs, h.Name) {
			continue
		}
		out = append(out, h)
	}
	return out
}

func writerHandled(name string) bool {
	for _, n := range [...]string{"host", "content-length", "transfer-encoding", "connection", "te", "upgrade", "trailer"} {
		if EqualFoldASCII(name, n) {
			return true
		}
	}
	return false
}

// namedInConnection reports whether a Connection field in hs lists name.
func namedInConnection(hs []h1.Header, name string) bool {
	for i := range hs {
		if !EqualFoldASCII(hs[i].Name, "connection") {
			continue
		}
		for list := hs[i].Value; list != ""; {
			var elem string
			elem, list = NextToken(list)
			if len(elem) == len(name) && EqualFoldBoth(elem, name) {
				return true
			}
		}
	}
	return false
}

// EqualFoldBoth compares two ASCII strings case-insensitively (EqualFoldASCII wants
// its second argument in lower case).
func EqualFoldBoth(a, b string) bool { return h1.EqualFold(a, b) }

// removeFieldsAfter removes, in place, the fields called lower that come after index
// keep, preserving the order of the others.
func removeFieldsAfter(hs []h1.Header, keep int, lower string) []h1.Header {
	out := hs[:keep+1]
	for _, h := range hs[keep+1:] {
		if !EqualFoldASCII(h.Name, lower) {
			out = append(out, h)
		}
	}
	return out
}

// appendUUID formats a random (version 4) UUID. The digits are made eight at a time in
// a word (hex8) and stored at fixed places: a byte's two at a time from a table cost 200
// instructions per request, one by one 600 (issue 17).
func appendUUID(b []byte, hi, lo uint64) []byte {
	hi = (hi &^ (0xf << 12)) | (4 << 12)
	lo = (lo &^ (0x3 << 62)) | (0x2 << 62)
	var u [36]byte
	binary.LittleEndian.PutUint64(u[0:], hex8(uint32(hi>>32)))
	d := hex8(uint32(hi))
	binary.LittleEndian.PutUint32(u[9:], uint32(d))
	binary.LittleEndian.PutUint32(u[14:], uint32(d>>32))
	e := hex8(uint32(lo >> 32))
	binary.LittleEndian.PutUint32(u[19:], uint32(e))
	binary.LittleEndian.PutUint32(u[24:], uint32(e>>32))
	binary.LittleEndian.PutUint64(u[28:], hex8(uint32(lo)))
	u[8], u[13], u[18], u[23] = '-', '-', '-', '-'
	return append(b, u[:]...)
}

// hex8 is v's eight lower-case hex digits, the first in the word's lowest byte: the
// nibbles spread one to a byte, each turned into its digit by adding '0', and 'a'-'0'-10
// more where the nibble is over 9 (adding 6 carries into bit 4 exactly then).
func hex8(v uint32) uint64 {
	const ones = 0x0101010101010101
	x := uint64(v)
	x = (x | x<<16) & 0x0000ffff0000ffff
	x = (x | x<<8) & 0x00ff00ff00ff00ff
	x = (x | x<<4) & 0x0f0f0f0f0f0f0f0f
	over9 := ((x + 6*ones) >> 4) & ones
	x += '0'*ones + over9*('a'-'0'-10)
	return bits.ReverseBytes64(x)
}

// RemoveHopByHop deletes the hop-by-hop fields of h and those its Connection fields name.
func RemoveHopByHop(h http.Header) {
	for _, f := range h["Connection"] { // canonical key: Values would canonicalize it again
		for _, name := range strings.Split(f, ",") {
			if name = textproto.TrimString(name); name != "" {
				h.Del(name)
			}
		}
	}
	for k := range h {
		if h1.HopByHop(k) {
			delete(h, k)
		}
	}
}

// HTTPForwarding applies the forwarding rules to a request held as an http.Header (the
// HTTP/2 front end, and the HTTP/1.1 front end when the upstream speaks HTTP/2). in is
// the received header; the returned one is a copy with hop-by-hop fields removed,
// "TE: trailers" kept (gRPC needs it), and the forwarding fields set. client is the peer
// IP ("" when unknown); peer is the verified identity of the client of an ingress
// connection ("" when none).
func HTTPForwarding(in http.Header, client, peer string, ingress bool, scheme string) http.Header {
	hdr := make(http.Header, len(in)+4)
	for k, v := range in {
		hdr[k] = v
	}
	return HTTPForwardingOwned(hdr, client, peer, ingress, scheme)
}

// Shared values of the fields HTTPForwardingOwned sets (never modified).
var (
	valHTTP     = []string{"http"}
	valHTTPS    = []string{"https"}
	valTrailers = []string{"trailers"}
)

// HTTPForwardingOwned is HTTPForwarding on a header the caller owns (a request head
// decoded for this request alone): it is changed in place and returned, saving the
// copy.
func HTTPForwardingOwned(hdr http.Header, client, peer string, ingress bool, scheme string) http.Header {
	return HTTPForwardingInto(hdr, client, peer, ingress, scheme, nil, false)
}

// HTTPForwardingInto is HTTPForwardingOwned taking the value slices of the fields it
// sets from spare (one-element windows of its unused capacity, so a later append to a
// field copies and never overwrites its neighbour) while it has room: the caller's
// per-request storage instead of an allocation per field. hopFree says hdr is known to
// hold no field RemoveHopByHop would remove (the HTTP/2 decoder's report), which saves
// that pass over the map.
func HTTPForwardingInto(hdr http.Header, client, peer string, ingress bool, scheme string, spare []string, hopFree bool) http.Header {
	if !hopFree {
		te := false
		for _, v := range hdr["Te"] {
			if httpguts.HeaderValuesContainsToken([]string{v}, "trailers") {
				te = true
			}
		}
		RemoveHopByHop(hdr)
		if te {
			hdr["Te"] = valTrailers
		}
	}
	if client != "" {
		if prior := hdr["X-Forwarded-For"]; len(prior) > 0 {
			var b strings.Builder
			for _, v := range prior {
				if v != "" {
					b.WriteString(v)
					b.WriteString(", ")
				}
			}
			b.WriteString(client)
			hdr["X-Forwarded-For"] = oneValue(&spare, b.String())
		} else {
			hdr["X-Forwarded-For"] = oneValue(&spare, client)
		}
	}
	// Direct lookups: the keys are canonical, and Get would canonicalize them again.
	if ingress || first(hdr["X-Forwarded-Proto"]) == "" {
		switch scheme {
		case "http":
			hdr["X-Forwarded-Proto"] = valHTTP
		case "https":
			hdr["X-Forwarded-Proto"] = valHTTPS
		default:
			hdr["X-Forwarded-Proto"] = oneValue(&spare, scheme)
		}
	}
	if first(hdr["X-Request-Id"]) == "" {
		hdr["X-Request-Id"] = oneValue(&spare, newRequestID())
	}
	delete(hdr, headerPeerIdentityCanonical)
	if ingress && peer != "" {
		hdr[headerPeerIdentityCanonical] = oneValue(&spare, peer)
	}
	return hdr
}

// oneValue is []string{v}, in the spare capacity of *spare when it has some.
func oneValue(spare *[]string, v string) []string {
	s := *spare
	if len(s) == cap(s) {
		return []string{v}
	}
	n := len(s)
	s = append(s, v)
	*spare = s
	return s[n : n+1 : n+1]
}

// H1ToHTTP builds the http.Header of an HTTP/1.1 request forwarded to an HTTP/2
// upstream: its fields after H1Forwarding.Apply, plus extra (the forwarding fields
// Apply computed), minus the hop-by-hop fields, with "TE: trailers" kept. The
// forwarding rules are therefore applied once, by H1Forwarding, whatever protocol the
// upstream speaks.
func H1ToHTTP(hs []h1.Header, extra []h1.Header) http.Header {
	hdr := make(http.Header, len(hs)+len(extra))
	teTrailers := false
	for _, f := range hs {
		if EqualFoldASCII(f.Name, "te") {
			teTrailers = teTrailers || httpguts.HeaderValuesContainsToken([]string{f.Value}, "trailers")
		}
		// Copies: the fields alias the connection's read buffer, which the next request
		// overwrites, while an HTTP/2 upstream's HPACK encoder keeps the strings in its
		// dynamic table (aliased, they corrupted it: "id <= evictCount" panics).
		hdr.Add(strings.Clone(f.Name), strings.Clone(f.Value))
	}
	RemoveHopByHop(hdr)
	for _, f := range extra {
		// Copies too: X-Request-Id and X-Forwarded-For are written in a per-connection
		// scratch buffer that the next request reuses.
		hdr.Set(strings.Clone(f.Name), strings.Clone(f.Value))
	}
	if teTrailers {
		hdr.Set("Te", "trailers")
	}
	return hdr
}

// HTTPHeader adapts http.Header to the router's and the telemetry record's lookup.
type HTTPHeader http.Header

func (h HTTPHeader) Get(name string) (string, bool) {
	v, ok := h[textproto.CanonicalMIMEHeaderKey(name)]
	if !ok || len(v) == 0 {
		return "", false
	}
	return v[0], true
}

// GetJoined makes HTTPHeader a router.HeaderJoiner: the values of a repeated
// field joined with "," (allocating only then).
func (h HTTPHeader) GetJoined(name string) (string, bool) {
	v, ok := h[textproto.CanonicalMIMEHeaderKey(name)]
	switch {
	case !ok || len(v) == 0:
		return "", false
	case len(v) == 1:
		return v[0], true
	}
	return strings.Join(v, ","), true
}

// first is a field's first value, "" when it has none (http.Header.Get without
// canonicalizing the key again).
func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

// idBatch is a run of random request ids formatted into one string, handed out as
// substrings: one allocation per idBatchN requests instead of one per request. The
// string is never changed, so an id stays valid as long as it is referenced.
type idBatch struct {
	s    string
	next int
}

const (
	uuidLen  = 36
	idBatchN = 32
)

var idBatches = sync.Pool{New: func() any { return new(idBatch) }}

// newRequestID is a random (version 4) UUID for an X-Request-Id.
func newRequestID() string {
	b := idBatches.Get().(*idBatch)
	if b.next+uuidLen > len(b.s) {
		var sb strings.Builder
		sb.Grow(uuidLen * idBatchN)
		var one [uuidLen]byte
		for range idBatchN {
			sb.Write(appendUUID(one[:0], rand.Uint64(), rand.Uint64()))
		}
		b.s, b.next = sb.String(), 0
	}
	id := b.s[b.next : b.next+uuidLen]
	b.next += uuidLen
	idBatches.Put(b)
	return id
}
