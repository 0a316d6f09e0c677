package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"
)

type reqWant struct {
	method, target, host string
	cl                   int64
	chunked, close       bool
	upgrade              string
	expect               bool
	headers              int
	body                 string // re-emitted body bytes (CopyBody output)
}

// readOne parses one request (and relays its body) from in. oneByte feeds the parser one
// byte per Read; small uses the smallest bufio buffer so long lines cross buffer refills.
func readOne(t testing.TB, in string, oneByte, small bool, l Limits) (*Request, string, error) {
	t.Helper()
	var src io.Reader = strings.NewReader(in)
	if oneByte {
		src = iotest.OneByteReader(src)
	}
	size := 4096
	if small {
		size = 16
	}
	br := bufio.NewReaderSize(src, size)
	r := NewReader(br, l)
	var req Request
	if err := r.ReadRequest(&req); err != nil {
		return nil, "", err
	}
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	if _, err := CopyBody(bw, br, req.ContentLength, req.Chunked, false); err != nil {
		return &req, "", err
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	return &req, out.String(), nil
}

func TestReadRequestValid(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want reqWant
	}{
		{"get", "GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n",
			reqWant{method: "GET", target: "/a?b=c", host: "example.com", cl: -1, headers: 3}},
		{"post content-length", "POST /p HTTP/1.1\r\nHost: h:8080\r\nContent-Length: 5\r\n\r\nhello",
			reqWant{method: "POST", target: "/p", host: "h:8080", cl: 5, headers: 2, body: "hello"}},
		{"post content-length zero", "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
			reqWant{method: "POST", target: "/p", host: "h", cl: 0, headers: 2}},
		{"chunked with extensions and trailers",
			"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
				"5;name=val;q=\"a \\\"b\\\"\" ; flag\r\nhello\r\n0006\r\n world\r\n0\r\nX-Sum: 42 \r\nContent-Length: 9\r\n\r\n",
			reqWant{method: "POST", target: "/c", host: "h", cl: -1, chunked: true, headers: 3,
				body: "5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n"}},
		{"chunked upper-case coding name", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n",
			reqWant{method: "POST", target: "/", host: "h", cl: -1, chunked: true, headers: 2, body: "a\r\n0123456789\r\n0\r\n\r\n"}},
		{"absolute-form uses target authority", "GET http://up.example:81/x?y HTTP/1.1\r\nHost: other\r\n\r\n",
			reqWant{method: "GET", target: "http://up.example:81/x?y", host: "up.example:81", cl: -1, headers: 1}},
		{"connect authority-form", "CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n",
			reqWant{method: "CONNECT", target: "db.internal:5432", host: "db.internal:5432", cl: -1, headers: 1}},
		{"connect ipv6", "CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n",
			reqWant{method: "CONNECT", target: "[::1]:443", host: "[::1]:443", cl: -1, headers: 1}},
		{"options asterisk", "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
			reqWant{method: "OPTIONS", target: "*", host: "h", cl: -1, headers: 1}},
		{"http/1.0 closes by default", "GET / HTTP/1.0\r\n\r\n",
			reqWant{method: "GET", target: "/", cl: -1, close: true}},
		{"http/1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: h\r\n\r\n",
			reqWant{method: "GET", target: "/", host: "h", cl: -1, headers: 2}},
		{"http/1.1 connection close", "GET / HTTP/1.1\r\nHost: h\r\nConnection: foo, close\r\n\r\n",
			reqWant{method: "GET", target: "/", host: "h", cl: -1, close: true, headers: 2}},
		{"websocket upgrade", "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
			reqWant{method: "GET", target: "/ws", host: "h", cl: -1, upgrade: "websocket", headers: 4}},
		{"upgrade without connection token ignored", "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n",
			reqWant{method: "GET", target: "/", host: "h", cl: -1, headers: 2}},
		{"http/1.0 upgrade ignored", "GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
			reqWant{method: "GET", target: "/", cl: -1, close: true, headers: 2}},
		{"expect 100-continue", "PUT /u HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\nok",
			reqWant{method: "PUT", target: "/u", host: "h", cl: 2, expect: true, headers: 3, body: "ok"}},
		{"expect ignored in http/1.0", "PUT /u HTTP/1.0\r\nExpect: 100-continue\r\n\r\n",
			reqWant{method: "PUT", target: "/u", cl: -1, close: true, headers: 1}},
		{"ows trimmed, empty value, obs-text", "GET / HTTP/1.1\r\nHost:\th \t\r\nX-Empty:\r\nX-Obs: caf\xc3\xa9\r\n\r\n",
			reqWant{method: "GET", target: "/", host: "h", cl: -1, headers: 3}},
		{"leading empty line ignored", "\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
			reqWant{method: "GET", target: "/", host: "h", cl: -1, headers: 1}},
		{"query with unencoded brackets", "GET /?a[]=1|2 HTTP/1.1\r\nHost: h\r\n\r\n",
			reqWant{method: "GET", target: "/?a[]=1|2", host: "h", cl: -1, headers: 1}},
		{"empty host allowed", "GET / HTTP/1.1\r\nHost: \r\n\r\n",
			reqWant{method: "GET", target: "/", cl: -1, headers: 1}},
	}
	for _, tt := range tests {
		for _, mode := range []struct {
			name           string
			oneByte, small bool
		}{{"buffered", false, false}, {"one-byte", true, false}, {"small-buffer", false, true}} {
			t.Run(tt.name+"/"+mode.name, func(t *testing.T) {
				if mode.small && strings.Contains(tt.name, "chunked with") {
					t.Skip("chunk lines longer than a 16-byte buffer are rejected by design")
				}
				req, body, err := readOne(t, tt.in, mode.oneByte, mode.small, Limits{})
				if err != nil {
					t.Fatalf("ReadRequest: %v", err)
				}
				got := reqWant{method: req.Method, target: req.Target, host: req.Host, cl: req.ContentLength,
					chunked: req.Chunked, close: req.Close, upgrade: req.Upgrade, expect: req.ExpectContinue,
					headers: len(req.Headers), body: body}
				if got != tt.want {
					t.Errorf("got  %+v\nwant %+v", got, tt.want)
				}
				if req.HasBody() != (tt.want.cl > 0 || tt.want.chunked) {
					t.Errorf("HasBody = %v", req.HasBody())
				}
			})
		}
	}
}

func TestReadRequestRejects(t *testing.T) {
	const ok = "GET / HTTP/1.1\r\nHost: h\r\n"
	tests := []struct {
		name   string
		in     string
		status int
	}{
		// request-line, RFC 9112 §3
		{"double SP", "GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400},
		{"trailing SP", "GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 400},
		{"tab separator", "GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n", 400},
		{"missing version", "GET /\r\nHost: h\r\n\r\n", 400},
		{"method not a token", "G@T / HTTP/1.1\r\nHost: h\r\n\r\n", 400},
		{"lower-case version", "GET / http/1.1\r\nHost: h\r\n\r\n", 400},
		{"version 1.2", "GET / HTTP/1.2\r\nHost: h\r\n\r\n", 505},
		{"version 2.0", "GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505},
		{"version 0.9", "GET / HTTP/0.9\r\nHost: h\r\n\r\n", 505},
		{"version two digits", "GET / HTTP/1.10\r\nHost: h\r\n\r\n", 400},
		{"target with fragment", "GET /a#b HTTP/1.1\r\nHost: h\r\n\r\n", 400},
		{"target with bad percent", "GET /a%zz HTTP/1.1\r\nHost: h\r\n\r\n", 400},
		{"target with non-ascii", "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", 400},
		{"target not origin or absolute", "GET a/b HTTP/1.1\r\nHost: h\r\n\r\n", 400},
		{"asterisk with GET", "GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400},
		{"connect without port", "CONNECT host HTTP/1.1\r\nHost: h\r\n\r\n", 400},
		{"connect origin-form", "CONNECT /x HTTP/1.1\r\nHost: h\r\n\r\n", 400},
		{"absolute-form userinfo", "GET http://u@h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400},
		{"absolute-form empty host", "GET http:/// HTTP/1.1\r\nHost: h\r\n\r\n", 400},
		{"target too long", "GET /" + strings.Repeat("a", 200) + " HTTP/1.1\r\nHost: h\r\n\r\n", 414},
		// line endings, RFC 9112 §2.2
		{"bare LF request-line", "GET / HTTP/1.1\nHost: h\r\n\r\n", 400},
		{"bare LF field", "GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", 400},
		{"bare LF end of head", ok + "\n", 400},
		{"bare CR in value", ok + "X: a\rb\r\n\r\n", 400},
		{"bare CR request-line", "GET /\r HTTP/1.1\r\nHost: h\r\n\r\n", 400},
		{"too many empty lines", strings.Repeat("\r\n", 6) + ok + "\r\n", 400},
		// fields, RFC 9112 §5
		{"space before colon", ok + "X-A : b\r\n\r\n", 400},
		{"tab before colon", ok + "X-A\t: b\r\n\r\n", 400},
		{"space in name", ok + "X A: b\r\n\r\n", 400},
		{"obs-fold", ok + "X-A: b\r\n c\r\n\r\n", 400},
		{"whitespace before first field", "GET / HTTP/1.1\r\n Host: h\r\n\r\n", 400},
		{"no colon", ok + "X-A\r\n\r\n", 400},
		{"empty name", ok + ": b\r\n\r\n", 400},
		{"NUL in value", ok + "X-A: a\x00b\r\n\r\n", 400},
		{"NUL in name", ok + "X\x00A: b\r\n\r\n", 400},
		{"DEL in value", ok + "X-A: a\x7fb\r\n\r\n", 400},
		{"ctl in value", ok + "X-A: a\x01b\r\n\r\n", 400},
		// Host, RFC 9112 §3.2
		{"http/1.1 without host", "GET / HTTP/1.1\r\nX: y\r\n\r\n", 400},
		{"two hosts", ok + "Host: h\r\n\r\n", 400},
		{"two hosts differing case", ok + "host: i\r\n\r\n", 400},
		{"host with userinfo", "GET / HTTP/1.1\r\nHost: u@h\r\n\r\n", 400},
		{"host with path", "GET / HTTP/1.1\r\nHost: h/x\r\n\r\n", 400},
		{"host bad port", "GET / HTTP/1.1\r\nHost: h:x\r\n\r\n", 400},
		// Content-Length, RFC 9110 §8.6 / RFC 9112 §6.3
		{"CL plus sign", ok + "Content-Length: +5\r\n\r\nhello", 400},
		{"CL hex", ok + "Content-Length: 0x5\r\n\r\nhello", 400},
		{"CL negative", ok + "Content-Length: -1\r\n\r\n", 400},
		{"CL empty", ok + "Content-Length: \r\n\r\n", 400},
		{"CL inner space", ok + "Content-Length: 1 2\r\n\r\n", 400},
		{"CL list", ok + "Content-Length: 5, 5\r\n\r\nhello", 400},
		{"CL duplicated identical", ok + "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400},
		{"CL duplicated differing", ok + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400},
		{"CL overflow", ok + "Content-Length: 99999999999999999999\r\n\r\n", 400},
		// smuggling: CL.TE / TE.CL / TE.TE, RFC 9112 §6.1
		{"CL.TE", ok + "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX", 400},
		{"TE.CL", ok + "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n", 400},
		{"TE xchunked", ok + "Transfer-Encoding: xchunked\r\n\r\n", 501},
		{"TE leading space name", ok + " Transfer-Encoding: chunked\r\n\r\n", 400},
		{"TE chunked, identity", ok + "Transfer-Encoding: chunked, identity\r\n\r\n", 501},
		{"TE identity", ok + "Transfer-Encoding: identity\r\n\r\n", 501},
		{"TE gzip, chunked", ok + "Transfer-Encoding: gzip, chunked\r\n\r\n", 501},
		{"TE chunked twice", ok + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"TE chunked twice in list", ok + "Transfer-Encoding: chunked, chunked\r\n\r\n", 400},
		{"TE empty element", ok + "Transfer-Encoding: chunked,\r\n\r\n", 400},
		{"TE empty", ok + "Transfer-Encoding: \r\n\r\n", 400},
		{"TE quoted", ok + "Transfer-Encoding: \"chunked\"\r\n\r\n", 400},
		{"TE with vertical tab", ok + "Transfer-Encoding: \x0bchunked\r\n\r\n", 400},
		{"TE in http/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"TE name with space before colon", ok + "Transfer-Encoding : chunked\r\n\r\n", 400},
		{"connection not a token list", ok + "Connection: a b\r\n\r\n", 400},
	}
	for _, tt := range tests {
		for _, oneByte := range []bool{false, true} {
			t.Run(tt.name, func(t *testing.T) {
				_, _, err := readOne(t, tt.in, oneByte, false, Limits{MaxHeaderBytes: 128})
				var he *Error
				if !errors.As(err, &he) {
					t.Fatalf("err = %v, want *Error %d", err, tt.status)
				}
				if he.Status != tt.status {
					t.Fatalf("status = %d (%v), want %d", he.Status, he, tt.status)
				}
			})
		}
	}
}

func TestReadRequestLimits(t *testing.T) {
	many := "GET / HTTP/1.1\r\nHost: h\r\n" + strings.Repeat("X-A: b\r\n", 10) + "\r\n"
	big := "GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + strings.Repeat("v", 300) + "\r\n\r\n"
	tests := []struct {
		name   string
		in     string
		l      Limits
		status int
	}{
		{"headers within count", many, Limits{MaxHeaders: 11}, 0},
		{"too many headers", many, Limits{MaxHeaders: 10}, 431},
		{"header section within bytes", big, Limits{MaxHeaderBytes: 330}, 0},
		{"header section too large", big, Limits{MaxHeaderBytes: 300}, 431},
		{"request-line within limit", "GET /" + strings.Repeat("a", 100) + " HTTP/1.1\r\nHost: h\r\n\r\n", Limits{MaxHeaderBytes: 116}, 0},
		{"request-line over limit", "GET /" + strings.Repeat("a", 100) + " HTTP/1.1\r\nHost: h\r\n\r\n", Limits{MaxHeaderBytes: 115}, 414},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := readOne(t, tt.in, false, true, tt.l)
			if tt.status == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var he *Error
			if !errors.As(err, &he) || he.Status != tt.status {
				t.Fatalf("err = %v, want status %d", err, tt.status)
			}
		})
	}
}

func TestReadRequestEOF(t *testing.T) {
	tests := []struct {
		in   string
		want error
	}{
		{"", io.EOF},
		{"GET / HT", io.ErrUnexpectedEOF},
		{"GET / HTTP/1.1\r\nHost: h\r\n", io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		_, _, err := readOne(t, tt.in, false, false, Limits{})
		if err != tt.want {
			t.Errorf("%q: err = %v, want %v", tt.in, err, tt.want)
		}
	}
}

func TestPipelined(t *testing.T) {
	in := "POST /1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc" +
		"POST /2 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n" +
		"GET /3 HTTP/1.1\r\nHost: h\r\n\r\n"
	for _, oneByte := range []bool{false, true} {
		var src io.Reader = strings.NewReader(in)
		if oneByte {
			src = iotest.OneByteReader(src)
		}
		br := bufio.NewReader(src)
		r := NewReader(br, Limits{})
		var req Request // reused across requests, as a connection does
		var targets, bodies []string
		for {
			err := r.ReadRequest(&req)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			targets = append(targets, strings.Clone(req.Target)) // strings alias req's buffer
			var out bytes.Buffer
			bw := bufio.NewWriter(&out)
			if _, err := CopyBody(bw, br, req.ContentLength, req.Chunked, false); err != nil {
				t.Fatal(err)
			}
			_ = bw.Flush()
			bodies = append(bodies, out.String())
		}
		if got := strings.Join(targets, ","); got != "/1,/2,/3" {
			t.Errorf("targets %q", got)
		}
		if got := strings.Join(bodies, "|"); got != "abc|2\r\nde\r\n0\r\n\r\n|" {
			t.Errorf("bodies %q", got)
		}
	}
}

func TestGet(t *testing.T) {
	req, _, err := readOne(t, "GET / HTTP/1.1\r\nHost: h\r\nX-Env: prod\r\nx-env: dev\r\n\r\n", false, false, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := req.Get("x-env"); !ok || v != "prod" {
		t.Errorf("Get(x-env) = %q, %v", v, ok)
	}
	if _, ok := req.Get("x-missing"); ok {
		t.Error("Get(x-missing) found")
	}
}

func TestSplitAbsoluteTarget(t *testing.T) {
	tests := []struct {
		in                      string
		scheme, authority, path string
		ok                      bool
	}{
		{"http://h/p?q", "http", "h", "/p?q", true},
		{"https://h:8443", "https", "h:8443", "/", true},
		{"http://h?q=1", "http", "h", "/?q=1", true},
		{"http://[::1]:80/x", "http", "[::1]:80", "/x", true},
		{"http://u@h/", "", "", "", false},
		{"http:///p", "", "", "", false},
		{"http:/h", "", "", "", false},
		{"1http://h/", "", "", "", false},
		{"/origin", "", "", "", false},
		{"http://h:port/", "", "", "", false},
	}
	for _, tt := range tests {
		s, a, p, ok := SplitAbsoluteTarget(tt.in)
		if s != tt.scheme || a != tt.authority || p != tt.path || ok != tt.ok {
			t.Errorf("SplitAbsoluteTarget(%q) = %q %q %q %v", tt.in, s, a, p, ok)
		}
	}
}

// TestValidFieldValue holds the eight-at-a-time check to the byte-by-byte rule: every
// byte value at every place of values of every length up to 24, alone and next to a tab
// (allowed, and below 0x20 like the CTLs the word test looks for).
func TestValidFieldValue(t *testing.T) {
	bytewise := func(v []byte) bool {
		for _, c := range v {
			if !isFieldValueByte(c) {
				return false
			}
		}
		return true
	}
	for n := 0; n <= 24; n++ {
		for pos := 0; pos < n; pos++ {
			for c := 0; c < 256; c++ {
				v := bytes.Repeat([]byte{'a'}, n)
				v[pos] = byte(c)
				if got, want := validFieldValue(v), bytewise(v); got != want {
					t.Fatalf("validFieldValue(%q) = %v, want %v", v, got, want)
				}
				v[(pos+1)%n] = '\t'
				if got, want := validFieldValue(v), bytewise(v); got != want {
					t.Fatalf("validFieldValue(%q) = %v, want %v", v, got, want)
				}
				v[(pos+3)%n] = 0x80 | byte(c)
				if got, want := validFieldValue(v), bytewise(v); got != want {
					t.Fatalf("validFieldValue(%q) = %v, want %v", v, got, want)
				}
			}
		}
	}
}

// TestFoldKeysMatchEqualFold checks the word-at-a-time name comparisons (foldKey,
// used by fieldStats.note and classify) against equalFoldLower on every string that
// differs from one of the names in one byte, any byte, in either case.
func TestFoldKeysMatchEqualFold(t *testing.T) {
	keys := []*foldKey{&keyHost, &keyExpect, &keyUpgrade, &keyTrailer, &keyConnection, &keyKeepAlive,
		&keyContentLength, &keyProxyConnection, &keyTransferEncoding, &keyProxyAuthn, &keyProxyAuthz}
	checked := 0
	for _, k := range keys {
		for _, base := range []string{k.lit, strings.ToUpper(k.lit)} {
			for i := range len(base) {
				for c := range 256 {
					v := []byte(base)
					v[i] = byte(c)
					for _, other := range keys {
						if len(other.lit) != len(v) {
							continue
						}
						if got, want := other.match(string(v)), equalFoldLower(string(v), other.lit); got != want {
							t.Fatalf("%q against %q: match %v, equalFoldLower %v", v, other.lit, got, want)
						}
						checked++
					}
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("nothing checked")
	}
	fs := fieldStats{upgradeIdx: -1, expectIdx: -1}
	for i, n := range []string{"HOST", "Expect", "upgrade", "Connection", "content-LENGTH", "Transfer-Encoding", "Hos", "hostt"} {
		fs.note(n, "v", i)
	}
	if fs.hostCount != 1 || fs.expectIdx != 1 || fs.upgradeIdx != 2 || fs.connCount != 1 || fs.clCount != 1 || fs.teCount != 1 || fs.host != "v" {
		t.Fatalf("note: %+v", fs)
	}
	for _, c := range []struct {
		name string
		want fieldClass
	}{{"TE", fcTE}, {"Host", fcHost}, {"Upgrade", fcUpgrade}, {"trailer", fcTrailer}, {"CONNECTION", fcConnection},
		{"Keep-Alive", fcHop}, {"Content-Length", fcContentLength}, {"Proxy-Connection", fcHop},
		{"Transfer-Encoding", fcTransferEncoding}, {"Proxy-Authenticate", fcHop}, {"Proxy-Authorization", fcHop},
		{"Content\rLength", fcOther}, {"X-Host", fcOther}} {
		if got := classify(c.name); got != c.want {
			t.Fatalf("classify(%q) = %d, want %d", c.name, got, c.want)
		}
	}
}

// TestValueEndMatchesBytewise checks valueEnd's word-at-a-time search against a byte
// by byte one on strings drawn from the bytes at the edges of the field-value class.
func TestValueEndMatchesBytewise(t *testing.T) {
	alphabet := []byte{'a', ' ', '\t', '\r', '\n', 0x7f, 0x80, 0xff, 0x00, 0x1f, 0x20, 0x7e, 0x21}
	rng := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 200000; n++ {
		b := make([]byte, rng.IntN(41))
		for i := range b {
			if rng.IntN(4) == 0 {
				b[i] = alphabet[rng.IntN(len(alphabet))]
			} else {
				b[i] = 'x'
			}
		}
		start := 0
		if len(b) > 0 {
			start = rng.IntN(len(b) + 1)
		}
		want := start
		for want < len(b) && isFieldValueByte(b[want]) {
			want++
		}
		if got := valueEnd(b, start); got != want {
			t.Fatalf("valueEnd(%q, %d) = %d, want %d", b, start, got, want)
		}
	}
}

// TestRegNameEndMatchesBytewise checks regNameEnd's four-byte steps against a byte by
// byte walk on strings drawn from the bytes around the reg-name class.
func TestRegNameEndMatchesBytewise(t *testing.T) {
	alphabet := []byte{'a', 'Z', '0', '.', '-', ':', '%', '@', ' ', '[', 0x80, 0x00, '~', '!'}
	rng := rand.New(rand.NewPCG(5, 6))
	for range 200000 {
		b := make([]byte, rng.IntN(24))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
			if rng.IntN(3) > 0 {
				b[i] = 'h'
			}
		}
		want := 0
		for want < len(b) && regNameTable[b[want]] {
			want++
		}
		if got := regNameEnd(string(b)); got != want {
			t.Fatalf("regNameEnd(%q) = %d, want %d", b, got, want)
		}
	}
}

// TestHeadWasBuffered: a head whole among the bytes buffered before ReadRequest is
// reported as such; one that took reads (one byte at a time, or nothing buffered at the
// call) is not.
func TestHeadWasBuffered(t *testing.T) {
	const head = "GET / HTTP/1.1\r\nHost: h\r\n\r\n"
	for _, c := range []struct {
		name       string
		src        io.Reader
		peek, want bool
	}{
		{"buffered", strings.NewReader(head), true, true},
		{"nothing buffered at the call", strings.NewReader(head), false, false},
		{"one byte a read", iotest.OneByteReader(strings.NewReader(head)), true, false},
	} {
		br := bufio.NewReader(c.src)
		if c.peek {
			if _, err := br.Peek(1); err != nil {
				t.Fatal(err)
			}
		}
		r := NewReader(br, Limits{})
		var req Request
		if err := r.ReadRequest(&req); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := r.HeadWasBuffered(); got != c.want {
			t.Errorf("%s: HeadWasBuffered %v, want %v", c.name, got, c.want)
		}
	}
}

// TestHostMemo reads requests on one Reader whose Hosts repeat, change, and go bad with
// the length of the one remembered: the remembered Host answers only for itself, and a
// bad one is refused as on a fresh Reader, whether its head is whole in the buffer or
// read line by line.
func TestHostMemo(t *testing.T) {
	long := strings.Repeat("a", 60) + ".example"
	steps := []struct {
		host string
		ok   bool
	}{
		{"upstream.bench.local", true},
		{"upstream.bench.local", true},
		{"upstream.bench.locaX", true},
		{"upstream.bench.loc@l", false}, // the remembered one's length, a byte refused
		{"upstream.bench.locaX", true},
		{"upstream.bench.local:8080", true},
		{"upstream.bench.local:80a", false},
		{long, true}, // too long to remember: checked every time
		{long, true},
		{long[:len(long)-1] + "/", false},
		{"", true}, // an empty Host is allowed for an origin-form target
		{"[::1]:80", true},
		{"[::1]:80", true},
		{"[::1]x80", false},
	}
	for _, small := range []bool{false, true} {
		var in strings.Builder
		for _, s := range steps {
			in.WriteString("GET / HTTP/1.1\r\nHost: " + s.host + "\r\n\r\n")
		}
		size := 4096
		if small {
			size = 16 // heads not whole in the buffer: the line-by-line path
		}
		r := NewReader(bufio.NewReaderSize(strings.NewReader(in.String()), size), Limits{})
		for i, s := range steps {
			var req Request
			err := r.ReadRequest(&req)
			if s.ok {
				if err != nil || req.Host != s.host {
					t.Fatalf("small=%v step %d Host %q: err %v, Host %q", small, i, s.host, err, req.Host)
				}
				continue
			}
			var he *Error
			if !errors.As(err, &he) || he.Status != 400 || !strings.Contains(he.Msg, "invalid Host") {
				t.Fatalf("small=%v step %d Host %q: err %v, want 400 invalid Host", small, i, s.host, err)
			}
		}
	}
}
