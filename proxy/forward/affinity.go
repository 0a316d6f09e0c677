package forward

import (
	"net/http"

	"github.com/meshd/meshd/balancer"
)

// Affinity is one request's key for a cluster with a hash policy (RING_HASH, MAGLEV),
// found by the front end before the call, and the Set-Cookie its response must carry
// when meshd generated the affinity cookie.
type Affinity struct {
	Hash      uint64
	Hashed    bool
	SetCookie string // non-empty: add as a Set-Cookie field of the response
}

// Apply hands the key to the call's picks.
func (a *Affinity) Apply(c *Call) { c.Hash, c.Hashed = a.Hash, a.Hashed }

// set hashes key.
func (a *Affinity) set(key string) { a.Hash, a.Hashed = balancer.Key(key), true }

// FromHeader keys on a header value (absent: no key, least request).
func (a *Affinity) FromHeader(v string, ok bool) {
	if ok {
		a.set(v)
	}
}

// FromSourceIP keys on the downstream IP address (empty: unknown, no key).
func (a *Affinity) FromSourceIP(ip string) {
	if ip != "" {
		a.set(ip)
	}
}

// FromCookie keys on the cookie's value when the request has it (ok); otherwise it
// generates the cookie (random value rnd) and keys on that, so this request and the
// client's next ones, which send it back, land on the same endpoint. Generating
// allocates, once per client session.
func (a *Affinity) FromCookie(h *balancer.HashOn, value string, ok bool, rnd uint64) {
	if ok {
		a.set(value)
		return
	}
	v, sc := h.GenerateCookie(rnd)
	a.set(v)
	a.SetCookie = sc
}

// HTTPAffinity finds the key of a request held as an http.Header (the HTTP/2 front
// end); client is the downstream IP address.
func HTTPAffinity(h *balancer.HashOn, hdr http.Header, client string, rnd uint64) Affinity {
	var a Affinity
	switch {
	case h.Header != "":
		a.FromHeader(firstOf(hdr[h.HeaderKey]))
	case h.SourceIP:
		a.FromSourceIP(client)
	case h.Cookie != "":
		for _, field := range hdr["Cookie"] {
			if v, ok := balancer.CookieValue(field, h.Cookie); ok {
				a.FromCookie(h, v, true, rnd)
				return a
			}
		}
		a.FromCookie(h, "", false, rnd)
	}
	return a
}

func firstOf(vs []string) (string, bool) {
	if len(vs) == 0 {
		return "", false
	}
	return vs[0], true
}
