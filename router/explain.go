package router

import (
	"fmt"
	"strconv"
	"strings"
)

// RouteCheck is how one route fared against a request in Explain.
type RouteCheck struct {
	Route   string `json:"route"`
	Kind    string `json:"kind"`
	Matched bool   `json:"matched"`
	// Reason is the first condition that failed, e.g. `path "/a" does not start with
	// prefix "/b"` or `header "x-canary": absent`; empty when the route matched.
	Reason string `json:"reason,omitempty"`
}

// Explain evaluates s's routes against r in match order, as Match does, and says for
// each route up to and including the first match why it did or did not match. Routes
// after the match are not listed. The matched route, if any, is the last entry and is
// the route Match returns. For operators' debugging (the admin API), not the request
// path: it allocates.
func (s *Service) Explain(r *Request) []RouteCheck {
	if s == nil || r == nil {
		return nil
	}
	path, query := splitQuery(r.Path)
	out := make([]RouteCheck, 0, len(s.Routes))
	for _, rt := range s.Routes {
		reason := rt.m.explain(r, path, query)
		out = append(out, RouteCheck{Route: rt.Name, Kind: rt.Kind, Matched: reason == "", Reason: reason})
		if reason == "" {
			break
		}
	}
	return out
}

// explain mirrors match, returning the first failing condition or "" on a match.
func (m *matcher) explain(r *Request, path, query string) string {
	switch m.kind {
	case kindTCP:
		return "tcp route: matches TCP connections, not HTTP requests"
	case kindGRPC:
		if !r.GRPC {
			return "grpc route: request is not gRPC (content-type application/grpc)"
		}
		if m.grpcService != "" || m.grpcMethod != "" {
			svc, method, ok := splitGRPCPath(path)
			if !ok {
				return fmt.Sprintf("grpc route: path %q is not /service/method", path)
			}
			if m.grpcService != "" && svc != m.grpcService {
				return fmt.Sprintf("serviceName %q is not %q", svc, m.grpcService)
			}
			if m.grpcMethod != "" && method != m.grpcMethod {
				return fmt.Sprintf("methodName %q is not %q", method, m.grpcMethod)
			}
		}
	default:
		switch m.pathKind {
		case pathPrefix:
			if !strings.HasPrefix(path, m.path) {
				return fmt.Sprintf("path %q does not start with prefix %q", path, m.path)
			}
		case pathExact:
			if path != m.path {
				return fmt.Sprintf("path %q is not exactly %q", path, m.path)
			}
		}
		if m.method != "" && r.Method != m.method {
			return fmt.Sprintf("method %s is not %s", r.Method, m.method)
		}
		if m.scheme != "" && !strings.EqualFold(r.Scheme, m.scheme) {
			return fmt.Sprintf("scheme %s is not %s", r.Scheme, m.scheme)
		}
	}
	if m.port != 0 && r.Port != m.port {
		return fmt.Sprintf("port %d is not %d", r.Port, m.port)
	}
	if m.pathKind == pathRegex && !m.pathRe.MatchString(path) {
		return fmt.Sprintf("path %q does not match regex %q", path, m.pathRe.String())
	}
	for i := range m.headers {
		if !m.headers[i].match(r.Header) {
			return m.headers[i].explain(r.Header)
		}
	}
	for i := range m.query {
		if !m.query[i].match(query) {
			q := &m.query[i]
			if q.hasExact {
				return fmt.Sprintf("query parameter %q: absent or not %q", q.name, q.exact)
			}
			return fmt.Sprintf("query parameter %q: absent", q.name)
		}
	}
	return ""
}

// explain describes why a header matcher that failed did not hold.
func (h *headerMatcher) explain(hg HeaderGetter) string {
	var v string
	ok := false
	if hg != nil {
		v, ok = hg.Get(h.name)
	}
	want := ""
	switch h.kind {
	case hdrPresent:
		want = "present"
	case hdrExact:
		want = "exactly " + strconv.Quote(h.value)
	case hdrPrefix:
		want = "prefix " + strconv.Quote(h.value)
	case hdrSuffix:
		want = "suffix " + strconv.Quote(h.value)
	case hdrRegex:
		want = "regex " + strconv.Quote(h.re.String())
	case hdrRange:
		want = fmt.Sprintf("integer in [%d, %d)", h.start, h.end)
	}
	if h.invert {
		return fmt.Sprintf("header %q: value %q matches %s and the match is inverted", h.name, v, want)
	}
	if !ok {
		return fmt.Sprintf("header %q: absent, want %s", h.name, want)
	}
	return fmt.Sprintf("header %q: value %q, want %s", h.name, v, want)
}
