package accesslog

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/telemetry"
)

// hdrs is a header getter over a map of lower-case names.
type hdrs map[string]string

func (h hdrs) Get(name string) (string, bool) {
	v, ok := h[name]
	return v, ok
}

var start = time.Date(2024, 3, 5, 7, 8, 9, 123456789, time.FixedZone("CET", 3600)) // 06:08:09 UTC

// filled is a request with every field set.
func filled() *telemetry.Request {
	return &telemetry.Request{
		Start:         start,
		Duration:      1234567 * time.Microsecond,
		UpstreamTime:  15700 * time.Microsecond,
		Listener:      "egress",
		Protocol:      "HTTP/1.1",
		Method:        "POST",
		Authority:     "shop.local",
		Path:          "/api/v1?x=1",
		Remote:        "10.0.0.7:51234",
		Status:        201,
		Flags:         "UO",
		Service:       "backend.shop.local",
		Route:         "split",
		Cluster:       "backend-v1",
		Upstream:      "10.0.1.2:9001",
		Attempts:      2,
		BytesReceived: 17,
		BytesSent:     342,
		TLS:           &tls.ConnectionState{Version: tls.VersionTLS13, ServerName: "backend.shop.local"},
		Peer:          "spiffe://shop/frontend",
		Req: hdrs{
			"user-agent":            "curl/8.5",
			"x-request-id":          "abc-123",
			"x-forwarded-for":       "10.0.0.7",
			"x-envoy-original-path": "/spoofed", // sent by the client: never logged
			"x-quote":               "a\"b\\c\n\x01\xff\u2028z",
		},
		Resp: hdrs{
			"content-type":                  "application/json",
			"x-envoy-upstream-service-time": "999", // the upstream's: meshd's own time wins
			"x-empty":                       "",
		},
	}
}

// render formats r with a text format and strips the final newline.
func render(t *testing.T, text string, r *telemetry.Request) string {
	t.Helper()
	f, err := Compile(text, nil)
	if err != nil {
		t.Fatalf("Compile(%q): %v", text, err)
	}
	out := string(f.Append(nil, r))
	s, ok := strings.CutSuffix(out, "\n")
	if !ok || strings.Contains(s, "\n") {
		t.Fatalf("Compile(%q) line %q: want exactly one trailing newline", text, out)
	}
	return s
}

func TestOperators(t *testing.T) {
	host, _ := os.Hostname()
	unix := fmt.Sprint(start.Unix())
	tests := []struct{ format, want string }{
		{"%START_TIME%", "2024-03-05T06:08:09.123Z"},
		{"%START_TIME()%", "2024-03-05T06:08:09.123Z"},
		{"%START_TIME(%Y/%m/%d %H:%M:%S %z %Z)%", "2024/03/05 06:08:09 +0000 UTC"},
		{"%START_TIME(%s.%3f|%6f|%9f|%f|%1f)%", unix + ".123|123456|123456789|123456789|1"},
		{"%START_TIME(%j %a %b %%)%", "065 Tue Mar %"},
		{"%REQ(:METHOD)%", "POST"},
		{"%REQ(:method)%", "POST"},
		{"%REQ(:PATH)%", "/api/v1?x=1"},
		{"%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", "/api/v1?x=1"},
		{"%REQ(X-ENVOY-ORIGINAL-PATH)%", "-"},
		{"%REQ(:AUTHORITY)%", "shop.local"},
		{"%REQ(:SCHEME)%", "-"},
		{"%REQ(USER-AGENT)%", "curl/8.5"},
		{"%REQ(User-Agent)%", "curl/8.5"},
		{"%REQ(USER-AGENT):4%", "curl"},
		{"%REQ(USER-AGENT):0%", ""},
		{"%REQ(X-MISSING?USER-AGENT)%", "curl/8.5"},
		{"%REQ(X-MISSING?X-ALSO-MISSING)%", "-"},
		{"%REQ(X-MISSING)%", "-"},
		{"%REQUEST_HEADER(X-REQUEST-ID)%", "abc-123"},
		{"%RESP(CONTENT-TYPE)%", "application/json"},
		{"%RESP(content-type):4%", "appl"},
		{"%RESP(:STATUS)%", "201"},
		{"%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%", "15"},
		{"%RESP(X-EMPTY)%", ""},
		{"%RESPONSE_HEADER(X-NONE)%", "-"},
		{"%PROTOCOL%", "HTTP/1.1"},
		{"%PROTOCOL:4%", "HTTP"},
		{"%RESPONSE_CODE%", "201"},
		{"%RESPONSE_FLAGS%", "UO"},
		{"%RESPONSE_CODE_DETAILS%", "via_upstream"},
		{"%BYTES_RECEIVED%", "17"},
		{"%BYTES_SENT%", "342"},
		{"%DURATION%", "1234"},
		{"%DURATION:1%", "1234"}, // numbers are never truncated
		{"%REQUEST_DURATION%", "1234"},
		{"%RESPONSE_DURATION%", "15"},
		{"%UPSTREAM_SERVICE_TIME%", "15"},
		{"%UPSTREAM_REQUEST_ATTEMPT_COUNT%", "2"},
		{"%UPSTREAM_HOST%", "10.0.1.2:9001"},
		{"%UPSTREAM_CLUSTER%", "backend-v1"},
		{"%ROUTE_NAME%", "split"},
		{"%DOWNSTREAM_REMOTE_ADDRESS%", "10.0.0.7:51234"},
		{"%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "10.0.0.7"},
		{"%DOWNSTREAM_LOCAL_ADDRESS%", "-"},
		{"%UPSTREAM_TRANSPORT_FAILURE_REASON%", "-"},
		{"%REQUESTED_SERVER_NAME%", "backend.shop.local"},
		{"%DOWNSTREAM_TLS_VERSION%", "TLSv1.3"},
		{"%DOWNSTREAM_PEER_URI_SAN%", "spiffe://shop/frontend"},
		{"%HOSTNAME%", host},
		{"100%% done", "100% done"},
		{"a%%b%PROTOCOL%c%%", "a%bHTTP/1.1c%"},
		{"%%PROTOCOL%%", "%PROTOCOL%"},
		{"no operators", "no operators"},
	}
	r := filled()
	for _, tt := range tests {
		if got := render(t, tt.format, r); got != tt.want {
			t.Errorf("%s = %q, want %q", tt.format, got, tt.want)
		}
	}
}

// TestAbsent: what each operator prints for a request that has nothing.
func TestAbsent(t *testing.T) {
	tests := []struct{ format, want string }{
		{"%START_TIME%", "-"},
		{"%START_TIME(%s)%", "-"},
		{"%REQ(:METHOD)% %REQ(:PATH)% %REQ(:AUTHORITY)% %REQ(USER-AGENT)%", "- - - -"},
		{"%RESP(:STATUS)% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% %RESP(CONTENT-TYPE)%", "- - -"},
		{"%PROTOCOL% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%", "- - -"},
		{"%RESPONSE_CODE% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %UPSTREAM_REQUEST_ATTEMPT_COUNT%", "0 0 0 0 0"},
		{"%RESPONSE_DURATION% %UPSTREAM_SERVICE_TIME%", "- -"},
		{"%UPSTREAM_HOST% %UPSTREAM_CLUSTER% %ROUTE_NAME%", "- - -"},
		{"%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "- -"},
		{"%REQUESTED_SERVER_NAME% %DOWNSTREAM_TLS_VERSION% %DOWNSTREAM_PEER_URI_SAN%", "- - -"},
	}
	for _, tt := range tests {
		if got := render(t, tt.format, &telemetry.Request{}); got != tt.want {
			t.Errorf("%s = %q, want %q", tt.format, got, tt.want)
		}
	}
}

// TestTLSOperators: the TLS operators of a connection without SNI or client
// certificate, and of a client certificate of another PKI (URI SANs without a SPIFFE
// ID meshd took as the caller's identity).
func TestTLSOperators(t *testing.T) {
	const f = "%REQUESTED_SERVER_NAME% %DOWNSTREAM_TLS_VERSION% %DOWNSTREAM_PEER_URI_SAN%"
	r := &telemetry.Request{TLS: &tls.ConnectionState{Version: tls.VersionTLS12}}
	if got := render(t, f, r); got != "- TLSv1.2 -" {
		t.Errorf("TLS 1.2 without SNI or client certificate: %q", got)
	}
	a, _ := url.Parse("urn:example:a")
	b, _ := url.Parse("https://example.com/b")
	r.TLS.PeerCertificates = []*x509.Certificate{{URIs: []*url.URL{a, b}}}
	if got := render(t, f, r); got != "- TLSv1.2 urn:example:a,https://example.com/b" {
		t.Errorf("a client certificate with two URI SANs: %q", got)
	}
}

func TestResponseCodeDetails(t *testing.T) {
	r := &telemetry.Request{Status: 404, Code: "no_route"}
	if got := render(t, "%RESPONSE_CODE_DETAILS%", r); got != "no_route" {
		t.Errorf("with a meshd code: %q, want no_route", got)
	}
}

func TestRemoteWithoutPort(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1:80":      "10.0.0.1",
		"10.0.0.1":         "10.0.0.1",
		"[2001:db8::1]:80": "2001:db8::1",
		"[::1]":            "::1",
		"::1":              "::1",
		"[broken":          "[broken",
	} {
		r := &telemetry.Request{Remote: in}
		if got := render(t, "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", r); got != want {
			t.Errorf("%q without port = %q, want %q", in, got, want)
		}
	}
}

func TestDefaultFormat(t *testing.T) {
	f, err := Compile("", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := `[2024-03-05T06:08:09.123Z] "POST /api/v1?x=1 HTTP/1.1" 201 UO 17 342 1234 15 "10.0.0.7" "curl/8.5" "abc-123" "shop.local" "10.0.1.2:9001"` + "\n"
	if got := string(f.Append(nil, filled())); got != want {
		t.Errorf("default line:\n got %q\nwant %q", got, want)
	}
	want = `[-] "- - -" 0 - 0 0 0 - "-" "-" "-" "-" "-"` + "\n"
	if got := string(f.Append(nil, &telemetry.Request{})); got != want {
		t.Errorf("default line of an empty record:\n got %q\nwant %q", got, want)
	}
	// Append appends.
	if got := string(f.Append([]byte("x"), &telemetry.Request{})); got != "x"+want {
		t.Errorf("Append did not append to b: %q", got)
	}
}

func TestTextNewline(t *testing.T) {
	f, err := Compile("%PROTOCOL%\n", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(f.Append(nil, filled())); got != "HTTP/1.1\n" {
		t.Errorf("a format ending in a newline got another: %q", got)
	}
}

func TestJSON(t *testing.T) {
	kv := []KV{
		{"start_time", "%START_TIME%"},
		{"method", "%REQ(:METHOD)%"},
		{"path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"},
		{"response_code", "%RESPONSE_CODE%"},
		{"bytes_received", "%BYTES_RECEIVED%"},
		{"bytes_sent", "%BYTES_SENT%"},
		{"duration", "%DURATION%"},
		{"request_duration", "%REQUEST_DURATION%"},
		{"response_duration", "%RESPONSE_DURATION%"},
		{"upstream_service_time", "%UPSTREAM_SERVICE_TIME%"},
		{"attempts", "%UPSTREAM_REQUEST_ATTEMPT_COUNT%"},
		{"x_envoy_upstream_service_time", "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%"},
		{"status_header", "%RESP(:STATUS)%"},
		{"missing", "%REQ(X-MISSING)%"},
		{"local", "%DOWNSTREAM_LOCAL_ADDRESS%"},
		{"request", "%REQ(:METHOD)% %REQ(:PATH)% %REQ(X-MISSING)%"},
		{"code_ms", "%RESPONSE_CODE%ms"},
		{"static", "static \"text\" 100%%"},
		{"empty", ""},
		{"quote", "%REQ(X-QUOTE)%"},
		{"quote_in_text", "<%REQ(X-QUOTE)%>"},
		{"odd_time", `%START_TIME(%Y"\%m)%`},
		{"key \"with\" quotes\n", "%PROTOCOL%"},
	}
	f, err := Compile("ignored when json is set", kv)
	if err != nil {
		t.Fatal(err)
	}
	out := f.Append(nil, filled())
	if bytes.Count(out, []byte("\n")) != 1 || out[len(out)-1] != '\n' {
		t.Fatalf("want one line ending in a newline: %q", out)
	}

	// Keys in the configured order.
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not an object: %v %v\n%s", tok, err, out)
	}
	var keys []string
	got := map[string]any{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		k := tok.(string)
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("value of %s: %v\n%s", k, err, out)
		}
		keys = append(keys, k)
		got[k] = v
	}
	for i, e := range kv {
		if i >= len(keys) || keys[i] != e.Key {
			t.Fatalf("keys %q, want the configured order", keys)
		}
	}

	want := map[string]any{
		"start_time":                    "2024-03-05T06:08:09.123Z",
		"method":                        "POST",
		"path":                          "/api/v1?x=1",
		"response_code":                 json.Number("201"),
		"bytes_received":                json.Number("17"),
		"bytes_sent":                    json.Number("342"),
		"duration":                      json.Number("1234"),
		"request_duration":              json.Number("1234"),
		"response_duration":             json.Number("15"),
		"upstream_service_time":         json.Number("15"),
		"attempts":                      json.Number("2"),
		"x_envoy_upstream_service_time": "15", // a header: a string, as in Envoy
		"status_header":                 "201",
		"missing":                       nil,
		"local":                         nil,
		"request":                       "POST /api/v1?x=1 -",
		"code_ms":                       "201ms",
		"static":                        `static "text" 100%`,
		"empty":                         "",
		"quote":                         "a\"b\\c\n\x01\ufffd\u2028z",
		"quote_in_text":                 "<a\"b\\c\n\x01\ufffd\u2028z>",
		"odd_time":                      `2024"\03`,
		"key \"with\" quotes\n":         "HTTP/1.1",
	}
	for k, w := range want {
		if g, ok := got[k]; !ok || g != w {
			t.Errorf("%s = %#v (%T), want %#v (%T)", k, g, g, w, w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d keys, want %d", len(got), len(want))
	}

	// Absent numbers are null, present zeros are numbers.
	out = f.Append(nil, &telemetry.Request{})
	var empty map[string]any
	if err := json.Unmarshal(out, &empty); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for k, w := range map[string]any{"response_code": 0.0, "duration": 0.0, "response_duration": nil, "start_time": nil, "status_header": nil, "request": "- - -"} {
		if g := empty[k]; g != w {
			t.Errorf("empty record: %s = %#v, want %#v", k, g, w)
		}
	}
}

func TestJSONDuplicateKey(t *testing.T) {
	f, err := Compile("", []KV{{"a", "%PROTOCOL%"}, {"b", "x"}, {"a", "%RESPONSE_CODE%"}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(f.Append(nil, filled())), `{"a":201,"b":"x"}`+"\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		text  string
		json  []KV
		field string
		pos   int
		msg   string // Msg contains it
	}{
		{"%FOO%", nil, "text", 0, "unknown command operator %FOO% at 0"},
		{"%PROTOCOL% x%FOO%", nil, "text", 12, "unknown command operator %FOO% at 12"},
		{"abc %FOO(x):3% def", nil, "text", 4, "unknown command operator %FOO(x):3% at 4"},
		{"%TRAILER(grpc-status)%", nil, "text", 0, "unknown command operator %TRAILER(grpc-status)% at 0"},
		{"[%START_TIME%] %PROTOCOL", nil, "text", 15, "malformed command operator %PROTOCOL at 15: unterminated"},
		{"100%", nil, "text", 3, "malformed command operator % at 3"},
		{"50% off", nil, "text", 2, "malformed command operator % off at 2"},
		{"%foo%", nil, "text", 0, "malformed command operator %foo% at 0"},
		{"%REQ%", nil, "text", 0, "malformed command operator %REQ% at 0: REQ needs a header name"},
		{"%RESP()%", nil, "text", 0, "RESP needs a header name"},
		{"%REQ(A?B?C)%", nil, "text", 0, "at most one alternative header"},
		{"%REQ(A?)%", nil, "text", 0, "empty header name"},
		{"%REQ(?B)%", nil, "text", 0, "empty header name"},
		{"x %REQ(USER-AGENT%", nil, "text", 2, `malformed command operator %REQ(USER-AGENT% at 2: missing ")"`},
		{"%REQ(X):%", nil, "text", 0, "want a length"},
		{"%REQ(X):1a%", nil, "text", 0, "unterminated"},
		{"%PROTOCOL(x)%", nil, "text", 0, "PROTOCOL takes no argument"},
		{"%START_TIME(%Q)%", nil, "text", 0, "malformed command operator %START_TIME(%Q)% at 0: unsupported time specifier %Q"},
		{"%START_TIME(%5)%", nil, "text", 0, "unsupported time specifier %5"},
		{"%START_TIME(%)%", nil, "text", 0, "lone %"},
		{"", []KV{{"a", "%PROTOCOL%"}, {"b", "x %NOPE%"}}, "json[1].value", 2, "unknown command operator %NOPE% at 2"},
	}
	for _, tt := range tests {
		_, err := Compile(tt.text, tt.json)
		var fe *FormatError
		if !errors.As(err, &fe) {
			t.Errorf("Compile(%q, %v) = %v, want a *FormatError", tt.text, tt.json, err)
			continue
		}
		if fe.Field != tt.field || fe.Pos != tt.pos || !strings.Contains(fe.Msg, tt.msg) || fe.Error() != tt.field+": "+fe.Msg {
			t.Errorf("Compile(%q, %v): %+v; want field %s, pos %d, msg containing %q", tt.text, tt.json, fe, tt.field, tt.pos, tt.msg)
		}
		if !strings.HasPrefix(tt.msg, "unknown") && !strings.Contains(fe.Msg, "malformed") && !strings.Contains(fe.Msg, "unknown") {
			t.Errorf("Compile(%q): %q names no kind of problem", tt.text, fe.Msg)
		}
		if verr := Validate(tt.text, tt.json); verr == nil || verr.Error() != err.Error() {
			t.Errorf("Validate(%q) = %v, want Compile's %v", tt.text, verr, err)
		}
	}
	for _, ok := range []string{"", DefaultText, "%%", "plain", "%START_TIME(%Y%%%m)%", "%REQ(a(b)%"} {
		if err := Validate(ok, nil); err != nil {
			t.Errorf("Validate(%q) = %v, want nil", ok, err)
		}
	}
}

// TestAppendAllocs: formatting into a buffer with room allocates nothing.
func TestAppendAllocs(t *testing.T) {
	r := filled()
	for name, f := range map[string]*Format{
		"default": mustCompile(t, "", nil),
		"every operator": mustCompile(t, "%START_TIME(%Y %j %a %b %s %6f %z)% %REQ(:SCHEME)% %REQ(X-MISSING?USER-AGENT):3% "+
			"%RESP(:STATUS)% %RESPONSE_CODE_DETAILS% %RESPONSE_DURATION% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %HOSTNAME% %%"+
			" %REQUESTED_SERVER_NAME% %DOWNSTREAM_TLS_VERSION% %DOWNSTREAM_PEER_URI_SAN%", nil),
		"json": mustCompile(t, "", []KV{{"t", "%START_TIME%"}, {"code", "%RESPONSE_CODE%"}, {"ua", "%REQ(USER-AGENT)%"},
			{"q", "%REQ(X-QUOTE)%"}, {"x", "%REQ(X-MISSING)%"}, {"line", "%REQ(:METHOD)% %REQ(:PATH)%"}}),
	} {
		buf := make([]byte, 0, 4096)
		if n := testing.AllocsPerRun(200, func() { buf = f.Append(buf[:0], r) }); n != 0 {
			t.Errorf("%s: %v allocs per Append, want 0", name, n)
		}
	}
}

func mustCompile(t testing.TB, text string, json []KV) *Format {
	t.Helper()
	f, err := Compile(text, json)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func BenchmarkAppendDefault(b *testing.B) {
	f, r := mustCompile(b, "", nil), filled()
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = f.Append(buf[:0], r)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkAppendJSON(b *testing.B) {
	f := mustCompile(b, "", []KV{
		{"start_time", "%START_TIME%"}, {"method", "%REQ(:METHOD)%"}, {"path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"},
		{"protocol", "%PROTOCOL%"}, {"response_code", "%RESPONSE_CODE%"}, {"response_flags", "%RESPONSE_FLAGS%"},
		{"bytes_received", "%BYTES_RECEIVED%"}, {"bytes_sent", "%BYTES_SENT%"}, {"duration", "%DURATION%"},
		{"upstream_service_time", "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%"}, {"x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"},
		{"user_agent", "%REQ(USER-AGENT)%"}, {"request_id", "%REQ(X-REQUEST-ID)%"}, {"authority", "%REQ(:AUTHORITY)%"},
		{"upstream_host", "%UPSTREAM_HOST%"},
	})
	r := filled()
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = f.Append(buf[:0], r)
	}
	b.SetBytes(int64(len(buf)))
}
