package h1

// Request-target forms, RFC 9112 §3.2.
type targetForm uint8

const (
	originForm    targetForm = iota // "/path?query"
	absoluteForm                    // "http://host/path", sent to proxies
	authorityForm                   // "host:port", CONNECT only
	asteriskForm                    // "*", OPTIONS only
)

// checkTarget validates target against the form its method allows and returns the form and,
// for absolute-form, the authority. The rules are stricter than RFC 3986 only where URL
// parsers are known to disagree (fragments, malformed percent-encoding, userinfo, '%' in
// hosts); characters RFC 3986 excludes but real clients send unencoded in queries ('[', '|',
// '{', ...) are accepted because rejecting them breaks applications, not parsers.
func checkTarget(method, target string) (targetForm, string, *Error) {
	if target == "" {
		return 0, "", &Error{400, "empty request-target"}
	}
	// RFC 9112 §3.2: request-target is a URI component; no CTLs, SP, DEL or non-ASCII.
	// '#' would start a fragment, which is not part of a request-target (RFC 9112 §3.2).
	for i := 0; i < len(target); i++ {
		c := target[i]
		if c <= ' ' || c >= 0x7f || c == '#' {
			return 0, "", &Error{400, "invalid byte in request-target " + quote(target)}
		}
		if c == '%' && (i+2 >= len(target) || !isHex(target[i+1]) || !isHex(target[i+2])) {
			return 0, "", &Error{400, "malformed percent-encoding in request-target " + quote(target)}
		}
	}
	if method == "CONNECT" {
		// RFC 9112 §3.2.3: CONNECT uses authority-form, uri-host ":" port, only.
		if !validAuthority(target, true) {
			return 0, "", &Error{400, "CONNECT target is not host:port: " + quote(target)}
		}
		return authorityForm, target, nil
	}
	switch target[0] {
	case '/':
		return originForm, "", nil
	case '*':
		// RFC 9112 §3.2.4: asterisk-form is "*" and only for OPTIONS.
		if target != "*" || method != "OPTIONS" {
			return 0, "", &Error{400, "asterisk-form target only allowed as OPTIONS *"}
		}
		return asteriskForm, "", nil
	}
	_, authority, _, ok := SplitAbsoluteTarget(target)
	if !ok {
		return 0, "", &Error{400, "request-target is neither origin-form nor absolute-form: " + quote(target)}
	}
	return absoluteForm, authority, nil
}

// SplitAbsoluteTarget splits an absolute-form request-target (RFC 9112 §3.2.2), such as
// HTTP_PROXY clients send, into its scheme, authority and origin-form remainder. ok is false
// unless target is scheme "://" authority [path-abempty] ["?" query] with a valid scheme and
// a non-empty, userinfo-free authority (RFC 9110 §4.2.1 forbids an empty host in http URIs;
// §4.2.4 says to treat userinfo as an error). pathAndQuery is "/" for an empty path; it
// aliases target and does not allocate except when the target has a query but no path
// ("http://h?q" yields "/?q").
func SplitAbsoluteTarget(target string) (scheme, authority, pathAndQuery string, ok bool) {
	// scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ), RFC 3986 §3.1.
	i := 0
	for i < len(target) {
		c := target[i]
		alpha := ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')
		if alpha || (i > 0 && (isDigit(c) || c == '+' || c == '-' || c == '.')) {
			i++
			continue
		}
		break
	}
	if i == 0 || len(target) < i+3 || target[i:i+3] != "://" {
		return "", "", "", false
	}
	scheme = target[:i]
	rest := target[i+3:]
	end := len(rest)
	for j := 0; j < len(rest); j++ {
		if rest[j] == '/' || rest[j] == '?' {
			end = j
			break
		}
	}
	authority, rest = rest[:end], rest[end:]
	if !validAuthority(authority, false) || authority == "" {
		return "", "", "", false
	}
	switch {
	case rest == "":
		rest = "/"
	case rest[0] == '?':
		rest = "/" + rest
	}
	return scheme, authority, rest, true
}

// validAuthority checks uri-host [ ":" port ] (RFC 3986 §3.2) with host an IP-literal or a
// reg-name / IPv4address without percent-encoding, and port 1-5 digits. requirePort demands
// the port (CONNECT's authority-form). The empty string is valid only without requirePort,
// because RFC 9110 §7.2 has clients send an empty Host for targets without an authority.
func validAuthority(s string, requirePort bool) bool {
	if s == "" {
		return !requirePort
	}
	port := ""
	hasPort := false
	if s[0] == '[' {
		end := -1
		for i := 1; i < len(s); i++ {
			if s[i] == ']' {
				end = i
				break
			}
		}
		if end < 2 {
			return false
		}
		// IPv6address (and IPvFuture's common subset): hex digits, ':' and '.'.
		for i := 1; i < end; i++ {
			if c := s[i]; !isHex(c) && c != ':' && c != '.' {
				return false
			}
		}
		switch {
		case end+1 == len(s):
		case s[end+1] == ':':
			port, hasPort = s[end+2:], true
		default:
			return false
		}
	} else {
		// One pass: ':' is not a reg-name byte, so the host ends at the first byte the
		// table refuses, which must be the port's colon.
		host := s
		if i := regNameEnd(s); i < len(s) {
			if s[i] != ':' {
				return false
			}
			host, port, hasPort = s[:i], s[i+1:], true
		}
		if host == "" {
			return false
		}
	}
	if !hasPort {
		return !requirePort
	}
	if port == "" || len(port) > 5 {
		return false
	}
	for i := 0; i < len(port); i++ {
		if !isDigit(port[i]) {
			return false
		}
	}
	return true
}

// regName8 is regNameTable as 0/1 bytes, to be ANDed.
var regName8 = func() (t [256]uint8) {
	for c, ok := range regNameTable {
		if ok {
			t[c] = 1
		}
	}
	return t
}()

// regNameEnd returns the index of the first byte of s that is not a reg-name byte, or
// len(s): four bytes a step while all four are (tokenEnd's way; a Host is checked per
// request).
func regNameEnd(s string) int {
	i := 0
	for i+4 <= len(s) {
		w := s[i : i+4]
		if regName8[w[0]]&regName8[w[1]]&regName8[w[2]]&regName8[w[3]] == 0 {
			break
		}
		i += 4
	}
	for i < len(s) && regNameTable[s[i]] {
		i++
	}
	return i
}
