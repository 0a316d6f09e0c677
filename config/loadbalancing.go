package config

import "strings"

// LBHash says what the hash policies (RING_HASH, MAGLEV) hash: exactly one of a request
// header, a cookie or the downstream source IP.
type LBHash struct {
	// Header is a request header name; requests without it are spread by least request.
	Header string `json:"header,omitempty"`
	// Cookie is a cookie; requests without it get one generated (Set-Cookie on the
	// response) and are hashed on its value.
	Cookie *LBHashCookie `json:"cookie,omitempty"`
	// SourceIP hashes the downstream peer's IP address.
	SourceIP bool `json:"sourceIp,omitempty"`
}

// LBHashCookie names the affinity cookie and shapes the one meshd generates.
type LBHashCookie struct {
	Name string `json:"name"`
	// TTL is the generated cookie's Max-Age; absent or 0: a session cookie.
	TTL *Duration `json:"ttl,omitempty"`
	// Path is the generated cookie's Path; absent: "/".
	Path string `json:"path,omitempty"`
	// Secure marks the generated cookie Secure (sent back over HTTPS only): for
	// clients that reach the mesh over TLS, e.g. through a gateway's TLS listener.
	Secure bool `json:"secure,omitempty"`
	// SameSite is the generated cookie's SameSite attribute: Strict, Lax or None
	// (None needs secure); absent: none set (the browser's default, Lax).
	SameSite string `json:"sameSite,omitempty"`
}

// LBSlowStart is Envoy's slow_start_config: a new or recovered endpoint's weight ramps
// from MinWeightPercent to its full weight over Window.
type LBSlowStart struct {
	Window *Duration `json:"window"`
	// Aggression shapes the ramp (factor = (elapsed/window)^(1/aggression)); absent: 1.0.
	Aggression *float64 `json:"aggression,omitempty"`
	// MinWeightPercent is where the ramp starts, 1..100; absent: 10.
	MinWeightPercent *int `json:"minWeightPercent,omitempty"`
}

func (v *validator) loadBalancing(path *fpath, lb *LoadBalancing, tcpListeners []int) {
	v.optEnum(path.f(".policy"), lb.Policy, LBLeastRequest, LBRoundRobin, LBRandom, LBRingHash, LBMaglev)
	hashing := lb.Policy == LBRingHash || lb.Policy == LBMaglev
	switch h := lb.Hash; {
	case hashing && h == nil:
		v.add(path.f(".hash"), nil, "is required with policy %s (header, cookie or sourceIp)", lb.Policy)
	case !hashing && h != nil:
		v.add(path.f(".hash"), "set", "applies only to policy RING_HASH or MAGLEV, not %s", or(lb.Policy, LBLeastRequest))
	case h != nil:
		hp := path.f(".hash")
		if n := count(h.Header != "", h.Cookie != nil, h.SourceIP); n != 1 {
			v.add(hp, nil, "needs exactly one of header, cookie, sourceIp (has %d)", n)
		}
		if h.Header != "" || h.Cookie != nil {
			for _, l := range tcpListeners {
				v.add(hp, "header/cookie", "listener port %d is tcp, where no header or cookie is seen: use sourceIp", l)
			}
		}
		if h.Header != "" && !isToken(h.Header) {
			v.add(hp.f(".header"), h.Header, "is not a valid header name")
		}
		if c := h.Cookie; c != nil {
			if !isToken(c.Name) {
				v.add(hp.f(".cookie.name"), c.Name, "is not a valid cookie name")
			}
			v.duration(hp.f(".cookie.ttl"), c.TTL)
			if c.Path != "" && (c.Path[0] != '/' || strings.ContainsAny(c.Path, "; \t\r\n")) {
				v.add(hp.f(".cookie.path"), c.Path, "must start with / and hold no ';', space or control character")
			}
			v.optEnum(hp.f(".cookie.sameSite"), c.SameSite, "Strict", "Lax", "None")
			if c.SameSite == "None" && !c.Secure {
				v.add(hp.f(".cookie.sameSite"), c.SameSite, "None needs secure: true (browsers drop a SameSite=None cookie that is not Secure)")
			}
		}
	}
	if ss := lb.SlowStart; ss != nil {
		sp := path.f(".slowStart")
		if hashing {
			v.add(sp, "set", "does not apply to policy %s: a ramping weight would move the hashed keys", lb.Policy)
		}
		v.requiredDuration(sp.f(".window"), ss.Window)
		if ss.Window != nil && ss.Window.Value <= 0 {
			v.add(sp.f(".window.value"), ss.Window.Value, "must be positive")
		}
		if a := ss.Aggression; a != nil && !(*a > 0 && *a <= 100) {
			v.add(sp.f(".aggression"), *a, "must be > 0 and ≤ 100")
		}
		if m := ss.MinWeightPercent; m != nil {
			v.between(sp.f(".minWeightPercent"), int64(*m), 1, 100)
		}
	}
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// isToken reports whether s is an RFC 9110 token (a header or cookie name).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
