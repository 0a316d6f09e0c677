// Package accesslog formats and writes App Mesh access logs: the
// `logging.accessLog.file {path, format}` of a virtual node or gateway, where format is
// an Envoy format string (text) or a list of JSON keys with a format string each.
//
// Compile turns a format into a Format once; Format.Append renders one
// telemetry.Request into a line without allocating; Writer (from Open) is the
// telemetry.Observer that formats on the request's goroutine and hands the line to a
// bounded queue drained by one goroutine, so a slow or full disk never stalls a request.
//
// # Command operators
//
// The supported operators, with the telemetry.Request field each reads (OPERATORS.md in
// this directory has the same table with examples). A value that is absent prints "-",
// as in Envoy; in a JSON value that is exactly one operator, an absent value is null and
// the operators marked "number" are JSON numbers.
//
//	%START_TIME%                       Start, UTC, as %Y-%m-%dT%H:%M:%S.%3fZ
//	%START_TIME(<strftime>)%           Start, UTC; %Y %m %d %H %M %S %s %z %Z %j %a %b %f %1f..%9f %%
//	%REQ(X)% %REQ(X?Y)% %REQ(X):N%     request header X (else Y), at most N bytes; also %REQUEST_HEADER(...)%
//	                                   :METHOD :PATH :AUTHORITY from Method, Path, Authority; :SCHEME from
//	                                   the request head's :scheme; X-ENVOY-ORIGINAL-PATH is always absent
//	%RESP(X)% %RESP(X):N%              response header X; also %RESPONSE_HEADER(...)%; :STATUS is Status;
//	                                   X-ENVOY-UPSTREAM-SERVICE-TIME is UpstreamTime in ms (absent if 0)
//	%PROTOCOL%                         Protocol
//	%RESPONSE_CODE%                    Status (0 when none was sent)                    number
//	%RESPONSE_FLAGS%                   Flags
//	%RESPONSE_CODE_DETAILS%            Code, else "via_upstream" when a status was sent
//	%BYTES_RECEIVED% %BYTES_SENT%      BytesReceived, BytesSent                         number
//	%DURATION%                         Duration in ms                                   number
//	%REQUEST_DURATION%                 Duration in ms (meshd does not time the request
//	                                   body apart; Envoy's ends at its last byte)       number
//	%RESPONSE_DURATION%                UpstreamTime in ms, absent if 0 (a lower bound of
//	                                   Envoy's: it starts at the final attempt)         number
//	%UPSTREAM_SERVICE_TIME%            UpstreamTime in ms, absent if 0 (meshd's)        number
//	%UPSTREAM_REQUEST_ATTEMPT_COUNT%   Attempts                                         number
//	%UPSTREAM_HOST%                    Upstream
//	%UPSTREAM_CLUSTER%                 Cluster
//	%ROUTE_NAME%                       Route
//	%DOWNSTREAM_REMOTE_ADDRESS%        Remote
//	%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%  Remote without the port (and IPv6 brackets)
//	%DOWNSTREAM_LOCAL_ADDRESS%         always absent (the record does not carry it)
//	%DOWNSTREAM_TLS_VERSION%           TLS.Version as TLSv1.2 or TLSv1.3; absent in plaintext
//	%DOWNSTREAM_PEER_URI_SAN%          Peer, else the URI SANs of the client certificate (comma
//	                                   separated); absent without a client certificate
//	%REQUESTED_SERVER_NAME%            TLS.ServerName (SNI); absent in plaintext or without SNI
//	%UPSTREAM_TRANSPORT_FAILURE_REASON%  always absent
//	%HOSTNAME%                         os.Hostname at Compile
//	%%                                 a literal %
//
// :N truncates a string value to N bytes (as Envoy does); numbers and times are never
// truncated.
package accesslog

import (
	"crypto/tls"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/meshd/meshd/telemetry"
)

// DefaultText is Envoy's default access log format, used when a format has neither
// text nor json.
const DefaultText = `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"` + "\n"

// KV is one entry of a JSON format: the output key and the format string of its value.
type KV struct{ Key, Value string }

// Format is a compiled App Mesh access log format. It is immutable and safe for
// concurrent use.
type Format struct {
	json   bool
	text   []seg   // text format: the line, ending in "\n"
	fields []field // json format: the keys in configured order
}

// field is one key of a JSON format.
type field struct {
	prefix string // `{"key":` for the first field, `,"key":` after it
	segs   []seg
	// typed: the value is exactly one operator, rendered as a JSON number or null
	// where that applies, as Envoy renders such values.
	typed bool
}

// seg is a literal or an operator.
type seg struct {
	lit string // when op.kind == kLit; JSON-escaped in JSON values
	op  op
}

type kind uint8

const (
	kLit kind = iota
	kStartTime
	kReq
	kResp
	kProtocol
	kResponseCode
	kResponseFlags
	kResponseCodeDetails
	kBytesReceived
	kBytesSent
	kDuration
	kResponseDuration
	kUpstreamServiceTime
	kAttempts
	kUpstreamHost
	kUpstreamCluster
	kRouteName
	kRemote
	kRemoteNoPort
	kAbsent
	kHostname
	kTLSVersion
	kPeerURISAN
	kSNI
)

// simple maps the operators that take no argument to their kind.
var simple = map[string]kind{
	"PROTOCOL":                               kProtocol,
	"RESPONSE_CODE":                          kResponseCode,
	"RESPONSE_FLAGS":                         kResponseFlags,
	"RESPONSE_CODE_DETAILS":                  kResponseCodeDetails,
	"BYTES_RECEIVED":                         kBytesReceived,
	"BYTES_SENT":                             kBytesSent,
	"DURATION":                               kDuration,
	"REQUEST_DURATION":                       kDuration,
	"RESPONSE_DURATION":                      kResponseDuration,
	"UPSTREAM_SERVICE_TIME":                  kUpstreamServiceTime,
	"UPSTREAM_REQUEST_ATTEMPT_COUNT":         kAttempts,
	"UPSTREAM_HOST":                          kUpstreamHost,
	"UPSTREAM_CLUSTER":                       kUpstreamCluster,
	"ROUTE_NAME":                             kRouteName,
	"DOWNSTREAM_REMOTE_ADDRESS":              kRemote,
	"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": kRemoteNoPort,
	"DOWNSTREAM_LOCAL_ADDRESS":               kAbsent,
	"UPSTREAM_TRANSPORT_FAILURE_REASON":      kAbsent,
	"REQUESTED_SERVER_NAME":                  kSNI,
	"DOWNSTREAM_TLS_VERSION":                 kTLSVersion,
	"DOWNSTREAM_PEER_URI_SAN":                kPeerURISAN,
	"HOSTNAME":                               kHostname,
}

// header is a header name of %REQ% or %RESP%, lower case, with the record field that
// stands in for it.
type header struct {
	name string
	from source
}

type source uint8

const (
	fromHead         source = iota // the header getter
	fromMethod                     // :method
	fromPath                       // :path
	fromAuthority                  // :authority
	fromStatus                     // :status (response)
	fromUpstreamTime               // x-envoy-upstream-service-time (response)
	fromNever                      // x-envoy-original-path: meshd never rewrites the path
	fromNone                       // no alternative
)

// op is one compiled command operator.
type op struct {
	kind     kind
	max      int // :N, -1 when not set
	hdr, alt header
	tm       *timeFormat // kStartTime
	host     string      // kHostname
}

// FormatError is the error of Compile and Validate: the first bad command operator.
type FormatError struct {
	// Field is where in the format object the operator is: "text", or "json[i].value"
	// for the i-th JSON entry.
	Field string
	// Operator is the operator as written (as far as it could be read), e.g. "%FOO%".
	Operator string
	// Pos is the byte offset, from 0, of the operator's opening % in the format string
	// of Field (the position Envoy reports).
	Pos int
	// Msg says what is wrong, with the operator and its position, e.g.
	// "unknown command operator %FOO% at 12".
	Msg string
}

// Error is Field and Msg; prefixing it with the config path of the format object and
// a dot gives the full field path, e.g.
// "virtualNodes[0].spec.logging.accessLog.file.format." + err.Error().
func (e *FormatError) Error() string { return e.Field + ": " + e.Msg }

// Compile compiles an Envoy format string (text) or, when json is non-empty, the JSON
// key → format-string list (each value may hold literals and operators); both empty
// means Envoy's default format (DefaultText). A text line gets a "\n" appended unless
// it already ends in one. An unknown or malformed command operator is a *FormatError.
//
// JSON keys are written in the configured order (Envoy sorts them; JSON readers do not
// care); a key given twice keeps its first position and its last value, as App Mesh's
// key → value map would.
func Compile(text string, json []KV) (*Format, error) {
	return compile(text, json, true)
}

// Validate reports Compile's error without compiling for use (it does not look up the
// host name), for config validation.
func Validate(text string, json []KV) error {
	_, err := compile(text, json, false)
	return err
}

func compile(text string, json []KV, resolve bool) (*Format, error) {
	c := compiler{resolve: resolve}
	if len(json) == 0 {
		if text == "" {
			text = DefaultText
		}
		segs, err := c.parse(text, false)
		if err != nil {
			err.Field = "text"
			return nil, err
		}
		if n := len(segs); n == 0 || segs[n-1].op.kind != kLit || !strings.HasSuffix(segs[n-1].lit, "\n") {
			segs = appendLit(segs, "\n")
		}
		return &Format{text: segs}, nil
	}
	f := &Format{json: true}
	index := make(map[string]int, len(json))
	for i, kv := range json {
		segs, err := c.parse(kv.Value, true)
		if err != nil {
			err.Field = fmt.Sprintf("json[%d].value", i)
			return nil, err
		}
		fd := field{segs: segs, typed: len(segs) == 1 && segs[0].op.kind != kLit}
		if j, dup := index[kv.Key]; dup {
			fd.prefix = f.fields[j].prefix
			f.fields[j] = fd
			continue
		}
		index[kv.Key] = len(f.fields)
		sep := ","
		if len(f.fields) == 0 {
			sep = "{"
		}
		fd.prefix = sep + string(appendJSONString(nil, kv.Key)) + ":"
		f.fields = append(f.fields, fd)
	}
	return f, nil
}

type compiler struct {
	resolve bool
	host    string
	hostSet bool
}

func (c *compiler) hostname() string {
	if !c.hostSet {
		c.hostSet = true
		if h, err := os.Hostname(); err == nil {
			c.host = h
		}
	}
	return c.host
}

// appendLit adds a literal, merging it into a literal before it.
func appendLit(segs []seg, s string) []seg {
	if s == "" {
		return segs
	}
	if n := len(segs); n > 0 && segs[n-1].op.kind == kLit {
		segs[n-1].lit += s
		return segs
	}
	return append(segs, seg{lit: s})
}

// parse splits a format string into literals and operators the way Envoy's parser
// does: "%%" is a literal %, and an operator is % NAME [(ARG)] [:N] %, with NAME in
// [A-Z0-9_]+ and ARG holding no ")". In JSON values the literals are stored
// JSON-escaped.
func (c *compiler) parse(s string, json bool) ([]seg, *FormatError) {
	var segs []seg
	var lit []byte
	flush := func() {
		if len(lit) > 0 {
			if json {
				segs = appendLit(segs, string(appendJSONEscaped(nil, string(lit))))
			} else {
				segs = appendLit(segs, string(lit))
			}
			lit = lit[:0]
		}
	}
	for i := 0; i < len(s); {
		if s[i] != '%' {
			lit = append(lit, s[i])
			i++
			continue
		}
		if i+1 < len(s) && s[i+1] == '%' {
			lit = append(lit, '%')
			i += 2
			continue
		}
		o, end, err := c.operator(s, i, json)
		if err != nil {
			return nil, err
		}
		flush()
		segs = append(segs, seg{op: o})
		i = end
	}
	flush()
	return segs, nil
}

// operator reads the operator whose opening % is at s[start] and returns it with the
// offset just past its closing %.
func (c *compiler) operator(s string, start int, json bool) (op, int, *FormatError) {
	j := start + 1
	for j < len(s) && isNameByte(s[j]) {
		j++
	}
	name := s[start+1 : j]
	bad := func(token, why string) *FormatError {
		return &FormatError{Operator: token, Pos: start, Msg: fmt.Sprintf("malformed command operator %s at %d: %s", token, start, why)}
	}
	if name == "" {
		return op{}, 0, bad(snippet(s, start), "want %NAME%, %NAME(arg)% or %NAME(arg):N% with NAME of A-Z, 0-9 and _ (a literal % is written %%)")
	}
	arg, hasArg := "", false
	if j < len(s) && s[j] == '(' {
		k := strings.IndexByte(s[j+1:], ')')
		if k < 0 {
			return op{}, 0, bad(snippet(s, start), `missing ")"`)
		}
		arg, hasArg = s[j+1:j+1+k], true
		j += k + 2
	}
	limit := -1
	if j < len(s) && s[j] == ':' {
		d := j + 1
		for d < len(s) && s[d] >= '0' && s[d] <= '9' {
			d++
		}
		n, err := strconv.Atoi(s[j+1 : d])
		if d == j+1 || err != nil {
			return op{}, 0, bad(snippet(s, start), "want a length of digits after \":\"")
		}
		limit, j = n, d
	}
	if j >= len(s) || s[j] != '%' {
		return op{}, 0, bad(snippet(s, start), "unterminated: missing the closing %")
	}
	token := s[start : j+1]
	o := op{max: limit}
	switch name {
	case "START_TIME":
		o.kind = kStartTime
		layout := arg
		if layout == "" {
			layout = defaultTimeLayout
		}
		tf, why := compileTime(layout, json)
		if why != "" {
			return op{}, 0, bad(token, why)
		}
		o.tm = tf
	case "REQ", "REQUEST_HEADER", "RESP", "RESPONSE_HEADER":
		resp := name == "RESP" || name == "RESPONSE_HEADER"
		o.kind = kReq
		if resp {
			o.kind = kResp
		}
		if !hasArg || arg == "" {
			return op{}, 0, bad(token, name+" needs a header name, as in %"+name+"(USER-AGENT)%")
		}
		main, alt, two := strings.Cut(arg, "?")
		if strings.Contains(alt, "?") {
			return op{}, 0, bad(token, "at most one alternative header, as in %"+name+"(X?Y)%")
		}
		if main == "" || (two && alt == "") {
			return op{}, 0, bad(token, "empty header name")
		}
		o.hdr = newHeader(main, resp)
		o.alt = header{from: fromNone}
		if two {
			o.alt = newHeader(alt, resp)
		}
	default:
		k, ok := simple[name]
		if !ok {
			return op{}, 0, &FormatError{Operator: token, Pos: start, Msg: fmt.Sprintf("unknown command operator %s at %d", token, start)}
		}
		if hasArg {
			return op{}, 0, bad(token, name+" takes no argument")
		}
		o.kind = k
		if k == kHostname && c.resolve {
			o.host = c.hostname()
		}
	}
	return o, j + 1, nil
}

func newHeader(name string, resp bool) header {
	h := header{name: strings.ToLower(name)}
	switch {
	case !resp && h.name == ":method":
		h.from = fromMethod
	case !resp && h.name == ":path":
		h.from = fromPath
	case !resp && h.name == ":authority":
		h.from = fromAuthority
	case !resp && h.name == "x-envoy-original-path":
		h.from = fromNever
	case resp && h.name == ":status":
		h.from = fromStatus
	case resp && h.name == "x-envoy-upstream-service-time":
		h.from = fromUpstreamTime
	}
	return h
}

func isNameByte(b byte) bool {
	return b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '_'
}

// snippet is the operator text starting at s[start] for an error message: up to the
// next % (included), at most 40 bytes.
func snippet(s string, start int) string {
	rest := s[start:]
	end := len(rest)
	if k := strings.IndexByte(rest[1:], '%'); k >= 0 {
		end = k + 2
	}
	if end > 40 {
		end = 40
		for end > 0 && !utf8.RuneStart(rest[end]) {
			end--
		}
		return rest[:end] + "…"
	}
	return rest[:end]
}

// Append appends one formatted line, ending in "\n", to b and returns it. A JSON
// format gives one object per line. It allocates only to grow b.
func (f *Format) Append(b []byte, r *telemetry.Request) []byte {
	if !f.json {
		for i := range f.text {
			s := &f.text[i]
			if s.op.kind == kLit {
				b = append(b, s.lit...)
			} else {
				b = s.op.appendText(b, r, false)
			}
		}
		return b
	}
	if len(f.fields) == 0 {
		return append(b, "{}\n"...)
	}
	for i := range f.fields {
		fd := &f.fields[i]
		b = append(b, fd.prefix...)
		if fd.typed {
			b = fd.segs[0].op.appendTyped(b, r)
			continue
		}
		b = append(b, '"')
		for j := range fd.segs {
			s := &fd.segs[j]
			if s.op.kind == kLit {
				b = append(b, s.lit...)
			} else {
				b = s.op.appendText(b, r, true)
			}
		}
		b = append(b, '"')
	}
	return append(b, "}\n"...)
}

// A value is what an operator yields for one request.
type value struct {
	k vkind
	s string
	n int64
}

type vkind uint8

const (
	vAbsent vkind = iota
	vString
	vNumber    // a JSON number
	vNumString // an integer that Envoy renders as a string (a header value)
	vTime
)

func str(s string) value {
	if s == "" {
		return value{}
	}
	return value{k: vString, s: s}
}

func ms(d time.Duration) value { return value{k: vNumber, n: d.Milliseconds()} }

func (o *op) value(r *telemetry.Request) value {
	switch o.kind {
	case kStartTime:
		if r.Start.IsZero() {
			return value{}
		}
		return value{k: vTime}
	case kReq:
		if v, ok := reqHeader(r, o.hdr); ok {
			return v
		}
		if v, ok := reqHeader(r, o.alt); ok {
			return v
		}
		return value{}
	case kResp:
		if v, ok := respHeader(r, o.hdr); ok {
			return v
		}
		if v, ok := respHeader(r, o.alt); ok {
			return v
		}
		return value{}
	case kProtocol:
		return str(r.Protocol)
	case kResponseCode:
		return value{k: vNumber, n: int64(r.Status)}
	case kResponseFlags:
		return str(r.Flags)
	case kResponseCodeDetails:
		if r.Code != "" {
			return str(r.Code)
		}
		if r.Status != 0 {
			return str("via_upstream")
		}
		return value{}
	case kBytesReceived:
		return value{k: vNumber, n: r.BytesReceived}
	case kBytesSent:
		return value{k: vNumber, n: r.BytesSent}
	case kDuration:
		return ms(r.Duration)
	case kResponseDuration, kUpstreamServiceTime:
		if r.UpstreamTime == 0 {
			return value{}
		}
		return ms(r.UpstreamTime)
	case kAttempts:
		return value{k: vNumber, n: int64(r.Attempts)}
	case kUpstreamHost:
		return str(r.Upstream)
	case kUpstreamCluster:
		return str(r.Cluster)
	case kRouteName:
		return str(r.Route)
	case kRemote:
		return str(r.Remote)
	case kRemoteNoPort:
		return str(hostOnly(r.Remote))
	case kHostname:
		return str(o.host)
	case kTLSVersion:
		if r.TLS == nil {
			return value{}
		}
		return str(tlsVersion(r.TLS.Version))
	case kPeerURISAN:
		return str(peerURISANs(r))
	case kSNI:
		if r.TLS == nil {
			return value{}
		}
		return str(r.TLS.ServerName)
	}
	return value{} // kAbsent
}

// tlsVersion is a TLS version as Envoy's %DOWNSTREAM_TLS_VERSION% writes it.
func tlsVersion(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "TLSv1.3"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS10:
		return "TLSv1"
	}
	return ""
}

// peerURISANs is the client certificate's URI SANs: the verified SPIFFE ID when there
// is one (its only URI SAN, so nothing is formatted), else every URI SAN joined by ","
// (which allocates, for certificates of another PKI).
func peerURISANs(r *telemetry.Request) string {
	if r.Peer != "" {
		return r.Peer
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return ""
	}
	var b strings.Builder
	for i, u := range r.TLS.PeerCertificates[0].URIs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(u.String())
	}
	return b.String()
}

func reqHeader(r *telemetry.Request, h header) (value, bool) {
	switch h.from {
	case fromNone, fromNever:
		return value{}, false
	case fromMethod:
		return str(r.Method), r.Method != ""
	case fromPath:
		return str(r.Path), r.Path != ""
	case fromAuthority:
		return str(r.Authority), r.Authority != ""
	}
	if r.Req == nil {
		return value{}, false
	}
	s, ok := r.Req.Get(h.name)
	return value{k: vString, s: s}, ok
}

func respHeader(r *telemetry.Request, h header) (value, bool) {
	switch h.from {
	case fromNone:
		return value{}, false
	case fromStatus:
		return value{k: vNumString, n: int64(r.Status)}, r.Status != 0
	case fromUpstreamTime:
		// Envoy's router sets this header itself, replacing any the upstream sent.
		return value{k: vNumString, n: r.UpstreamTime.Milliseconds()}, r.UpstreamTime != 0
	}
	if r.Resp == nil {
		return value{}, false
	}
	s, ok := r.Resp.Get(h.name)
	return value{k: vString, s: s}, ok
}

// hostOnly strips the port from host:port or [v6]:port, and the brackets.
func hostOnly(a string) string {
	if strings.HasPrefix(a, "[") {
		if i := strings.IndexByte(a, ']'); i > 0 {
			return a[1:i]
		}
		return a
	}
	if i := strings.LastIndexByte(a, ':'); i >= 0 && strings.IndexByte(a, ':') == i {
		return a[:i]
	}
	return a
}

func (o *op) truncate(s string) string {
	if o.max >= 0 && len(s) > o.max {
		return s[:o.max]
	}
	return s
}

// appendText renders the operator as text: absent is "-". inJSON escapes it for the
// inside of a JSON string.
func (o *op) appendText(b []byte, r *telemetry.Request, inJSON bool) []byte {
	v := o.value(r)
	switch v.k {
	case vString:
		if inJSON {
			return appendJSONEscaped(b, o.truncate(v.s))
		}
		return append(b, o.truncate(v.s)...)
	case vNumber, vNumString:
		return strconv.AppendInt(b, v.n, 10)
	case vTime:
		return o.tm.append(b, r.Start)
	}
	return append(b, '-')
}

// appendTyped renders the operator as a whole JSON value: numbers bare, absent as
// null, the rest as strings.
func (o *op) appendTyped(b []byte, r *telemetry.Request) []byte {
	v := o.value(r)
	switch v.k {
	case vString:
		return appendJSONString(b, o.truncate(v.s))
	case vNumber:
		return strconv.AppendInt(b, v.n, 10)
	case vNumString:
		b = append(b, '"')
		b = strconv.AppendInt(b, v.n, 10)
		return append(b, '"')
	case vTime:
		b = append(b, '"')
		b = o.tm.append(b, r.Start)
		return append(b, '"')
	}
	return append(b, "null"...)
}

// appendJSONString appends s as a quoted JSON string.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	b = appendJSONEscaped(b, s)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

// appendJSONEscaped appends s escaped for the inside of a JSON string, as
// encoding/json does without HTML escaping: invalid UTF-8 becomes U+FFFD.
func appendJSONEscaped(b []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(b, s[start:]...)
}
