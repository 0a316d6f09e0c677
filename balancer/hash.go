package balancer

import (
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// HashOn says what a hash policy (RING_HASH, MAGLEV) hashes. Exactly one of Header,
// Cookie and SourceIP is set (config validation sees to it). A request that lacks the
// header falls back to the least-request pick; a request that lacks the cookie gets one
// generated (GenerateCookie) that the response sets.
type HashOn struct {
	// Header is the request field name, lower case; HeaderKey is its canonical form
	// (an http.Header key), so front ends on net/http's types look it up as is.
	Header    string
	HeaderKey string
	// Cookie is the cookie name; CookiePath and CookieTTL shape the generated cookie's
	// Set-Cookie (TTL 0: a session cookie).
	Cookie     string
	CookiePath string
	CookieTTL  time.Duration
	// CookieSecure and CookieSameSite ("" for none) are the generated cookie's
	// attributes.
	CookieSecure   bool
	CookieSameSite string
	// SourceIP hashes the downstream peer's IP address.
	SourceIP bool

	generated atomic.Uint64 // cookies GenerateCookie made
}

// CookiesGenerated is how many affinity cookies were generated (a counter).
func (h *HashOn) CookiesGenerated() uint64 { return h.generated.Load() }

// Key hashes a request's key (a header value, a cookie value, an IP address). The hash
// is FNV-1a finished with murmur3's 64-bit mixer, so that keys differing in one byte land
// far apart on the ring; it allocates nothing.
func Key(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return fmix64(h)
}

func fmix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// CookieValue finds the cookie name in a Cookie field value ("a=1; b=2"), without
// allocating. Quotes around the value are kept: the same client sends the same bytes.
func CookieValue(field, name string) (string, bool) {
	for field != "" {
		var pair string
		if i := strings.IndexByte(field, ';'); i >= 0 {
			pair, field = field[:i], field[i+1:]
		} else {
			pair, field = field, ""
		}
		pair = strings.TrimLeft(pair, " \t")
		if len(pair) > len(name) && pair[len(name)] == '=' && pair[:len(name)] == name {
			return strings.TrimRight(pair[len(name)+1:], " \t"), true
		}
	}
	return "", false
}

// GenerateCookie makes the affinity cookie for a request that came without one, like
// Envoy's generated cookie: a random value (rnd, 16 hex digits) whose Key the request is
// hashed on, and the Set-Cookie field value that makes the client send it back. It
// allocates (the two strings), once per client session, not per request.
func (h *HashOn) GenerateCookie(rnd uint64) (value, setCookie string) {
	h.generated.Add(1)
	var buf [16]byte
	const hex = "0123456789abcdef"
	for i := range buf {
		buf[15-i] = hex[rnd&0xf]
		rnd >>= 4
	}
	value = string(buf[:])
	var b strings.Builder
	b.Grow(len(h.Cookie) + len(h.CookiePath) + 64)
	b.WriteString(h.Cookie)
	b.WriteByte('=')
	b.WriteString(value)
	path := h.CookiePath
	if path == "" {
		path = "/"
	}
	b.WriteString("; Path=")
	b.WriteString(path)
	if h.CookieTTL > 0 {
		b.WriteString("; Max-Age=")
		b.WriteString(strconv.FormatInt(int64((h.CookieTTL+time.Second-1)/time.Second), 10))
	}
	b.WriteString("; HttpOnly")
	if h.CookieSecure {
		b.WriteString("; Secure")
	}
	if h.CookieSameSite != "" {
		b.WriteString("; SameSite=")
		b.WriteString(h.CookieSameSite)
	}
	return value, b.String()
}

// vnodesPerWeight is how many points of the ring each unit of weight gets. A fixed count
// (rather than Envoy's ring size divided among the endpoints) means an endpoint's points
// do not depend on the rest of the set, so removing an endpoint moves exactly its own
// keys and adding one moves only the keys it takes over.
const vnodesPerWeight = 128

// maxRing bounds the ring (Envoy's maximum_ring_size default, 8M points); larger weight
// sets are scaled down, keeping shares but no longer the exact stability above.
const maxRing = 8 << 20

// maglevSize is the Maglev lookup table's size, a prime (Envoy's default, 65537).
const maglevSize = 65537

type ringPoint struct {
	hash uint64
	idx  uint32 // into picker.all
}

// buildRing places every endpoint of all (available or not: an endpoint that is ejected
// for a while must not move everyone else's keys) on the ring, weight × vnodesPerWeight
// points each, at Key("<address>_<n>").
func buildRing(all []*Endpoint) []ringPoint {
	var total uint64
	for _, e := range all {
		total += uint64(e.Weight()) * vnodesPerWeight
	}
	scale := 1.0
	if total > maxRing {
		scale = float64(maxRing) / float64(total)
	}
	ring := make([]ringPoint, 0, min(total, maxRing)+uint64(len(all)))
	var buf []byte
	for i, e := range all {
		n := max(int(float64(uint64(e.Weight())*vnodesPerWeight)*scale), 1)
		for k := range n {
			buf = append(append(append(buf[:0], e.Address...), '_'), strconv.Itoa(k)...)
			ring = append(ring, ringPoint{hash: Key(string(buf)), idx: uint32(i)})
		}
	}
	slices.SortFunc(ring, func(a, b ringPoint) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return int(a.idx) - int(b.idx)
	})
	return ring
}

// ringPick walks the ring clockwise from key to the first point whose endpoint may be
// picked (available, or every endpoint in panic mode) and is not avoid; when avoid is the
// only one, it is taken. O(log n) for the search, and the walk passes over the points of
// unavailable endpoints only.
func (p *picker) ringPick(key uint64, avoid *Endpoint) (e *Endpoint, fellBack bool) {
	ring := p.ring
	lo, hi := 0, len(ring)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if ring[m].hash < key {
			lo = m + 1
		} else {
			hi = m
		}
	}
	var fallback *Endpoint
	for k := range len(ring) {
		pt := ring[(lo+k)%len(ring)]
		if !p.ok[pt.idx] {
			fellBack = true
			continue
		}
		e := p.all[pt.idx]
		if e != avoid {
			return e, fellBack
		}
		if fallback == nil {
			fallback = e
		}
	}
	return fallback, fellBack
}

// buildMaglev fills Maglev's lookup table (Eisenbud et al., NSDI 2016, with Envoy's
// weighting) over eps: each endpoint claims slots in the order of its own permutation of
// the table, endpoints taking turns, a heavier one claiming more often. Built over the
// endpoints that may be picked, so a key of an ejected endpoint goes to another one and
// Maglev's minimal disruption keeps most other keys where they were.
func buildMaglev(eps []*Endpoint, w []uint32) []uint32 {
	const m = maglevSize
	table := make([]uint32, m)
	for i := range table {
		table[i] = ^uint32(0)
	}
	n := len(eps)
	offset := make([]uint64, n)
	skip := make([]uint64, n)
	next := make([]uint64, n)
	claimed := make([]float64, n)
	var wmax uint32
	for i, e := range eps {
		offset[i] = Key(e.Address) % m
		skip[i] = Key(e.Address+"#skip")%(m-1) + 1
		wmax = max(wmax, w[i])
	}
	filled := 0
	for round := 1; filled < m; round++ {
		for i := range eps {
			// A weight-w endpoint claims a slot in a round only while its claims trail
			// round·w/wmax, so shares follow the weights.
			if claimed[i] >= float64(round)*float64(w[i])/float64(wmax) {
				continue
			}
			c := (offset[i] + next[i]*skip[i]) % m
			for table[c] != ^uint32(0) {
				next[i]++
				c = (offset[i] + next[i]*skip[i]) % m
			}
			table[c] = uint32(i)
			next[i]++
			claimed[i]++
			if filled++; filled == m {
				break
			}
		}
	}
	return table
}

// maglevPick looks the key up in the table; an endpoint to avoid is replaced by the next
// slot's endpoint that differs.
func (p *picker) maglevPick(key uint64, avoid *Endpoint) *Endpoint {
	i := key % maglevSize
	e := p.eps[p.table[i]]
	if e != avoid || len(p.eps) == 1 {
		return e
	}
	for k := uint64(1); k < maglevSize; k++ {
		if f := p.eps[p.table[(i+k)%maglevSize]]; f != avoid {
			return f
		}
	}
	return e
}
