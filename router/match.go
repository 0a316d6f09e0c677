package router

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/meshd/meshd/config"
)

type routeKind uint8

const (
	kindHTTP routeKind = iota + 1
	kindHTTP2
	kindGRPC
	kindTCP
)

// matcher is a route's compiled match block. Every string it compares against was
// normalised at Compile time so that match needs no allocation.
type matcher struct {
	kind routeKind

	pathKind pathKind
	path     string // prefix or exact path
	pathRe   *regexp.Regexp

	method string
	scheme string
	port   int

	headers []headerMatcher
	query   []queryMatcher

	grpcService string // "" = any
	grpcMethod  string // "" = any
}

type pathKind uint8

const (
	pathAny pathKind = iota
	pathPrefix
	pathExact
	pathRegex
)

type headerKind uint8

const (
	hdrPresent headerKind = iota
	hdrExact
	hdrPrefix
	hdrSuffix
	hdrRegex
	hdrRange
)

type headerMatcher struct {
	name       string // lower-case
	kind       headerKind
	value      string
	re         *regexp.Regexp
	start, end int64
	invert     bool
}

type queryMatcher struct {
	name     string
	hasExact bool
	exact    string
}

func (m *matcher) match(r *Request, path, query string) bool {
	switch m.kind {
	case kindTCP:
		return false
	case kindGRPC:
		if !r.GRPC {
			return false
		}
		if m.grpcService != "" || m.grpcMethod != "" {
			svc, method, ok := splitGRPCPath(path)
			if !ok {
				return false
			}
			if m.grpcService != "" && svc != m.grpcService {
				return false
			}
			if m.grpcMethod != "" && method != m.grpcMethod {
				return false
			}
		}
	default:
		switch m.pathKind {
		case pathPrefix:
			if !strings.HasPrefix(path, m.path) {
				return false
			}
		case pathExact:
			if path != m.path {
				return false
			}
		}
		if m.method != "" && r.Method != m.method {
			return false
		}
		if m.scheme != "" && !strings.EqualFold(r.Scheme, m.scheme) {
			return false
		}
	}
	if m.port != 0 && r.Port != m.port {
		return false
	}
	// The regex runs after the cheap string and port tests have had their chance to fail.
	if m.pathKind == pathRegex && !m.pathRe.MatchString(path) {
		return false
	}
	for i := range m.headers {
		if !m.headers[i].match(r.Header) {
			return false
		}
	}
	for i := range m.query {
		if !m.query[i].match(query) {
			return false
		}
	}
	return true
}

// HeaderJoiner is an optional capability of a HeaderGetter that can see every field
// line of a repeated header: GetJoined returns their values joined with "," (name in
// lower case; ok=false if absent). Header conditions use it when the getter has it, so
// they see all values as Envoy does ("a" and "b" sent on two lines match exact "a,b"; a
// condition cannot be satisfied or dodged by where a value sits). Implementations should
// join only when a second field line exists, so the common request does not allocate.
// As with Get, Match never retains the value.
type HeaderJoiner interface {
	GetJoined(name string) (value string, ok bool)
}

// match reports whether the header matcher holds. An absent header (or a nil getter)
// counts as "not matching", which invert turns into a match, as in Envoy. A repeated
// header is matched on all its values joined with "," when the getter is a HeaderJoiner,
// else on its first value.
func (h *headerMatcher) match(hg HeaderGetter) bool {
	var v string
	ok := false
	if j, isJoiner := hg.(HeaderJoiner); isJoiner {
		v, ok = j.GetJoined(h.name)
	} else if hg != nil {
		v, ok = hg.Get(h.name)
	}
	res := false
	if ok {
		switch h.kind {
		case hdrPresent:
			res = true
		case hdrExact:
			res = v == h.value
		case hdrPrefix:
			res = strings.HasPrefix(v, h.value)
		case hdrSuffix:
			res = strings.HasSuffix(v, h.value)
		case hdrRegex:
			res = h.re.MatchString(v)
		case hdrRange:
			n, isInt := parseInt64(v)
			res = isInt && h.start <= n && n < h.end
		}
	}
	return res != h.invert
}

// match looks at the first occurrence of the parameter name in the raw query. Names and
// values compare equal either raw or after percent-decoding ('+' as space), so both
// "a%20b" and "a+b" match an exact "a b", without allocating.
func (q *queryMatcher) match(query string) bool {
	for query != "" {
		var pair string
		if i := strings.IndexByte(query, '&'); i >= 0 {
			pair, query = query[:i], query[i+1:]
		} else {
			pair, query = query, ""
		}
		if pair == "" {
			continue
		}
		name, value, _ := strings.Cut(pair, "=")
		if !queryEqual(name, q.name) {
			continue
		}
		return !q.hasExact || queryEqual(value, q.exact)
	}
	return false
}

// queryEqual reports whether raw equals want, either byte for byte or once raw is
// percent-decoded with '+' read as a space. A malformed escape compares raw only.
func queryEqual(raw, want string) bool {
	if raw == want {
		return true
	}
	if strings.IndexByte(raw, '%') < 0 && strings.IndexByte(raw, '+') < 0 {
		return false
	}
	j := 0
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch c {
		case '%':
			if i+2 >= len(raw) {
				return false
			}
			hi, ok1 := unhex(raw[i+1])
			lo, ok2 := unhex(raw[i+2])
			if !ok1 || !ok2 {
				return false
			}
			c = hi<<4 | lo
			i += 2
		case '+':
			c = ' '
		}
		if j >= len(want) || want[j] != c {
			return false
		}
		j++
	}
	return j == len(want)
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// parseInt64 parses an optionally signed base-10 integer without allocating
// (strconv.ParseInt allocates a *NumError on failure, which a header value can force on
// every request). Whitespace, a '+' sign alone, and out-of-range values are rejected.
func parseInt64(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	neg := false
	switch s[0] {
	case '-':
		neg = true
		s = s[1:]
	case '+':
		s = s[1:]
	}
	if s == "" {
		return 0, false
	}
	// Accumulate as a negative number so that math.MinInt64 fits.
	const minInt64 = -1 << 63
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n < minInt64/10 || n*10 < minInt64+d {
			return 0, false
		}
		n = n*10 - d
	}
	if neg {
		return n, true
	}
	if n == minInt64 {
		return 0, false
	}
	return -n, true
}

// splitGRPCPath splits "/package.Service/Method" into its service and method parts.
func splitGRPCPath(path string) (service, method string, ok bool) {
	if len(path) < 2 || path[0] != '/' {
		return "", "", false
	}
	rest := path[1:]
	i := strings.IndexByte(rest, '/')
	if i < 0 {
		return "", "", false
	}
	return rest[:i], rest[i+1:], true
}

// compileHTTPMatch compiles an httpRoute / http2Route match; route is the path of its
// httpRoute (or http2Route) for errors.
func compileHTTPMatch(m *config.HTTPRouteMatch, route string) (matcher, error) {
	var out matcher
	switch {
	case m.Path != nil && m.Path.Regex != "":
		if m.Path.Exact != "" {
			return out, fmt.Errorf("%s.match.path: exact %q and regex %q are both set; set one", route, m.Path.Exact, m.Path.Regex)
		}
		re, err := compileFull(m.Path.Regex)
		if err != nil {
			return out, fmt.Errorf("%s.match.path.regex %q: %w", route, m.Path.Regex, err)
		}
		out.pathKind, out.pathRe = pathRegex, re
	case m.Path != nil && m.Path.Exact != "":
		out.pathKind, out.path = pathExact, m.Path.Exact
	case m.Prefix != "":
		out.pathKind, out.path = pathPrefix, m.Prefix
	}
	if m.Prefix != "" && out.pathKind != pathPrefix {
		return out, fmt.Errorf("%s.match: prefix %q and path are both set; set one", route, m.Prefix)
	}
	out.method = m.Method
	out.scheme = m.Scheme
	out.port = m.Port
	hs, err := compileHeaders(m.Headers, route, ".match.headers")
	if err != nil {
		return out, err
	}
	out.headers = hs
	for i, q := range m.QueryParameters {
		if q.Name == "" {
			return out, fmt.Errorf("%s.match.queryParameters[%d].name: empty", route, i)
		}
		qm := queryMatcher{name: q.Name}
		if q.Match != nil {
			qm.hasExact, qm.exact = true, q.Match.Exact
		}
		out.query = append(out.query, qm)
	}
	return out, nil
}

func compileGRPCMatch(m *config.GRPCRouteMatch, route string) (matcher, error) {
	out := matcher{kind: kindGRPC, grpcService: m.ServiceName, grpcMethod: m.MethodName, port: m.Port}
	if m.MethodName != "" && m.ServiceName == "" {
		return out, fmt.Errorf("%s.match.methodName %q: requires serviceName", route, m.MethodName)
	}
	hs, err := compileHeaders(m.Metadata, route, ".match.metadata")
	if err != nil {
		return out, err
	}
	out.headers = hs
	return out, nil
}

// compileHeaders compiles a match's header (or metadata) matchers; route+list is
// their path for errors, formatted only for one.
func compileHeaders(hs []config.HeaderMatch, route, list string) ([]headerMatcher, error) {
	var out []headerMatcher
	if len(hs) > 0 {
		out = make([]headerMatcher, 0, len(hs))
	}
	for i, h := range hs {
		f := func() string { return fmt.Sprintf("%s%s[%d]", route, list, i) }
		if h.Name == "" {
			return nil, fmt.Errorf("%s.name: empty", f())
		}
		hm := headerMatcher{name: strings.ToLower(h.Name), invert: h.Invert, kind: hdrPresent}
		if mm := h.Match; mm != nil {
			set := 0
			if mm.Exact != "" {
				set++
				hm.kind, hm.value = hdrExact, mm.Exact
			}
			if mm.Prefix != "" {
				set++
				hm.kind, hm.value = hdrPrefix, mm.Prefix
			}
			if mm.Suffix != "" {
				set++
				hm.kind, hm.value = hdrSuffix, mm.Suffix
			}
			if mm.Regex != "" {
				set++
				re, err := compileFull(mm.Regex)
				if err != nil {
					return nil, fmt.Errorf("%s.match.regex %q: %w", f(), mm.Regex, err)
				}
				hm.kind, hm.re = hdrRegex, re
			}
			if mm.Range != nil {
				set++
				if mm.Range.End <= mm.Range.Start {
					return nil, fmt.Errorf("%s.match.range: end %d must be greater than start %d", f(), mm.Range.End, mm.Range.Start)
				}
				hm.kind, hm.start, hm.end = hdrRange, mm.Range.Start, mm.Range.End
			}
			if set > 1 {
				return nil, fmt.Errorf("%s.match: %d of exact, prefix, suffix, regex, range are set; set one", f(), set)
			}
		}
		out = append(out, hm)
	}
	return out, nil
}

// compileFull compiles an RE2 expression that must match the whole input, as App Mesh
// (Envoy safe_regex) does: "a.c" does not match "xabcx".
func compileFull(expr string) (*regexp.Regexp, error) {
	if _, err := regexp.Compile(expr); err != nil {
		return nil, err // report the user's expression, not the anchored one
	}
	return regexp.Compile(`^(?:` + expr + `)$`)
}
