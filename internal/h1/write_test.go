package h1

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func writeReq(t *testing.T, in, target string, extra []Header, keepUpgrade bool) string {
	t.Helper()
	br := bufio.NewReader(strings.NewReader(in))
	var req Request
	if err := NewReader(br, Limits{}).ReadRequest(&req); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	if err := WriteRequestHead(bw, &req, target, extra, keepUpgrade); err != nil {
		t.Fatal(err)
	}
	if _, err := CopyBody(bw, br, req.ContentLength, req.Chunked, false); err != nil {
		t.Fatal(err)
	}
	_ = bw.Flush()
	return out.String()
}

func TestWriteRequestHead(t *testing.T) {
	tests := []struct {
		name, in, target string
		extra            []Header
		keepUpgrade      bool
		want             string
	}{
		{"hop-by-hop stripped",
			"GET /a HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: 5\r\nX-Hop: 1\r\nProxy-Connection: k\r\nProxy-Authorization: Basic x\r\nTE: gzip\r\nUpgrade: h2c\r\nTrailer: X-T\r\nAccept: */*\r\n\r\n",
			"", nil, false,
			"GET /a HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n"},
		{"te trailers kept",
			"GET / HTTP/1.1\r\nTE: trailers, deflate\r\nHost: h\r\n\r\n", "", nil, false,
			"GET / HTTP/1.1\r\nHost: h\r\nTE: trailers\r\n\r\n"},
		{"content-length regenerated, extras before framing",
			"POST /p HTTP/1.1\r\nhost: h\r\nContent-Length: 3\r\nX-A: 1\r\n\r\nabc", "/rewritten",
			[]Header{{"X-Forwarded-Proto", "http"}}, false,
			"POST /rewritten HTTP/1.1\r\nhost: h\r\nX-A: 1\r\nX-Forwarded-Proto: http\r\nContent-Length: 3\r\n\r\nabc"},
		{"chunked keeps Trailer",
			"POST / HTTP/1.1\r\nHost: h\r\nTrailer: X-T\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-T: v\r\n\r\n", "", nil, false,
			"POST / HTTP/1.1\r\nHost: h\r\nTrailer: X-T\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-T: v\r\n\r\n"},
		{"absolute-form Host from target",
			"GET http://up:81/x HTTP/1.1\r\nUser-Agent: u\r\nHost: other\r\n\r\n", "/x", nil, false,
			"GET /x HTTP/1.1\r\nUser-Agent: u\r\nHost: up:81\r\n\r\n"},
		{"http/1.0 without Host gets one first",
			"GET / HTTP/1.0\r\nAccept: */*\r\n\r\n", "", nil, false,
			"GET / HTTP/1.1\r\nHost: \r\nAccept: */*\r\n\r\n"},
		{"connection cannot drop Host",
			"GET / HTTP/1.1\r\nHost: h\r\nConnection: Host, content-length\r\nContent-Length: 1\r\n\r\nz", "", nil, false,
			"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nz"},
		{"websocket kept",
			"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, keep-alive\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n", "", nil, true,
			"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nConnection: upgrade\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := writeReq(t, tt.in, tt.target, tt.extra, tt.keepUpgrade); got != tt.want {
				t.Errorf("got\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

func TestWriteResponseHead(t *testing.T) {
	tests := []struct {
		name, method, in   string
		keepUpgrade, close bool
		want               string
	}{
		{"hop-by-hop stripped", "GET",
			"HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: t=5\r\nProxy-Authenticate: Basic\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n",
			false, false, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n"},
		{"close requested", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, true,
			"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"},
		{"until close forces close", "GET", "HTTP/1.0 200 OK\r\nServer: s\r\n\r\n", false, false,
			"HTTP/1.1 200 OK\r\nServer: s\r\nConnection: close\r\n\r\n"},
		{"chunked", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n", false, false,
			"HTTP/1.1 200 OK\r\nTrailer: X-T\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"HEAD keeps length", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", false, false,
			"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"},
		{"204 drops length", "GET", "HTTP/1.1 204 No Content\r\nContent-Length: 99\r\n\r\n", false, false,
			"HTTP/1.1 204 No Content\r\n\r\n"},
		{"101 upgrade", "GET", "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: a\r\n\r\n", true, false,
			"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: a\r\nConnection: upgrade\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var resp Response
			if err := NewReader(bufio.NewReader(strings.NewReader(tt.in)), Limits{}).ReadResponse(&resp, tt.method); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			bw := bufio.NewWriter(&out)
			if err := WriteResponseHead(bw, &resp, nil, tt.keepUpgrade, tt.close); err != nil {
				t.Fatal(err)
			}
			_ = bw.Flush()
			if out.String() != tt.want {
				t.Errorf("got\n%q\nwant\n%q", out.String(), tt.want)
			}
		})
	}
}

func TestWriteSimpleResponse(t *testing.T) {
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	if err := WriteSimpleResponse(bw, 503, []Header{{"Content-Type", "text/plain"}}, []byte("no healthy upstream"), true); err != nil {
		t.Fatal(err)
	}
	_ = bw.Flush()
	// net/http's client parser is the oracle.
	resp, err := http.ReadResponse(bufio.NewReader(&out), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 503 || resp.Status != "503 Service Unavailable" || string(body) != "no healthy upstream" ||
		!resp.Close || resp.Header.Get("Content-Type") != "text/plain" || resp.ContentLength != 19 {
		t.Errorf("got %+v body %q", resp, body)
	}
	out.Reset()
	_ = WriteSimpleResponse(bw, 204, nil, []byte("ignored"), false)
	_ = bw.Flush()
	if out.String() != "HTTP/1.1 204 No Content\r\n\r\n" {
		t.Errorf("204: %q", out.String())
	}
}

// TestDechunkForHTTP10 relays a chunked response to an HTTP/1.0 client as the
// WriteResponseHead doc describes, and checks net/http reads it as a close-delimited body.
func TestDechunkForHTTP10(t *testing.T) {
	in := "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
	br := bufio.NewReader(strings.NewReader(in))
	var resp Response
	if err := NewReader(br, Limits{}).ReadResponse(&resp, "GET"); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	down := resp
	down.Chunked = false
	if err := WriteResponseHead(bw, &down, nil, false, true); err != nil {
		t.Fatal(err)
	}
	if _, err := (BodyCopy{Chunked: true, Dechunk: true}).Copy(bw, br); err != nil {
		t.Fatal(err)
	}
	_ = bw.Flush()
	req, _ := http.NewRequest("GET", "http://h/", nil)
	req.ProtoMinor = 0
	hr, err := http.ReadResponse(bufio.NewReader(&out), req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(hr.Body)
	if string(body) != "abcde" || !hr.Close || len(hr.TransferEncoding) != 0 {
		t.Errorf("body %q close %v te %v", body, hr.Close, hr.TransferEncoding)
	}
}

// roundTrip parses in, re-emits it with WriteRequestHead+CopyBody, and returns the bytes.
func roundTrip(t testing.TB, in string) (*Request, []byte, error) {
	br := bufio.NewReader(strings.NewReader(in))
	var req Request
	if err := NewReader(br, Limits{}).ReadRequest(&req); err != nil {
		return nil, nil, err
	}
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	if err := WriteRequestHead(bw, &req, "", nil, false); err != nil {
		t.Fatal(err)
	}
	if _, err := CopyBody(bw, br, req.ContentLength, req.Chunked, false); err != nil {
		return nil, nil, err
	}
	_ = bw.Flush()
	return &req, out.Bytes(), nil
}

// endToEnd returns the headers a proxy forwards, as (lower-case name, value) pairs.
func endToEnd(req *Request) [][2]string {
	var hs [][2]string
	for _, h := range req.Headers {
		c := classify(h.Name)
		if c == fcOther && !namedInConnection(req.Headers, h.Name) || c == fcTrailer && req.Chunked {
			hs = append(hs, [2]string{strings.ToLower(h.Name), h.Value})
		}
	}
	return hs
}

// checkAgainstOracle compares our parse of the re-emitted bytes with our first parse and
// with net/http's parse of the same bytes.
func checkAgainstOracle(t testing.TB, first *Request, out []byte) {
	t.Helper()
	firstHeaders, firstHost := endToEnd(first), first.Host
	firstMethod, firstTarget := strings.Clone(first.Method), strings.Clone(first.Target)
	firstCL, firstChunked := first.ContentLength, first.Chunked

	br := bufio.NewReader(bytes.NewReader(out))
	var again Request
	if err := NewReader(br, Limits{MaxHeaderBytes: 1 << 20, MaxHeaders: 1000}).ReadRequest(&again); err != nil {
		t.Fatalf("re-emitted request rejected: %v\n%q", err, out)
	}
	var body bytes.Buffer
	bw := bufio.NewWriter(&body)
	if _, err := (BodyCopy{ContentLength: again.ContentLength, Chunked: again.Chunked, Dechunk: true}).Copy(bw, br); err != nil {
		t.Fatalf("re-emitted body: %v", err)
	}
	_ = bw.Flush()
	if br.Buffered() != 0 {
		t.Fatalf("re-emitted bytes continue after body: %q", out)
	}
	if again.Method != firstMethod || again.Target != firstTarget || again.Host != firstHost ||
		again.ContentLength != firstCL || again.Chunked != firstChunked || again.Close ||
		!reflect.DeepEqual(endToEnd(&again), firstHeaders) {
		t.Fatalf("re-parse differs:\nfirst  %s %s host=%q cl=%d chunked=%v %q\nagain  %s %s host=%q cl=%d chunked=%v close=%v %q",
			firstMethod, firstTarget, firstHost, firstCL, firstChunked, firstHeaders,
			again.Method, again.Target, again.Host, again.ContentLength, again.Chunked, again.Close, endToEnd(&again))
	}

	hr, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(out)))
	if err != nil {
		t.Fatalf("net/http rejects re-emitted request: %v\n%q", err, out)
	}
	hbody, err := io.ReadAll(hr.Body)
	if err != nil {
		t.Fatalf("net/http body: %v\n%q", err, out)
	}
	wantCL := again.ContentLength
	if again.Chunked {
		wantCL = -1
	} else if wantCL < 0 {
		wantCL = 0
	}
	if hr.Method != again.Method || hr.RequestURI != again.Target || hr.Host != again.Host ||
		hr.ContentLength != wantCL || !bytes.Equal(hbody, body.Bytes()) || hr.Close {
		t.Fatalf("net/http disagrees: %s %s host=%q cl=%d close=%v body=%q; ours body=%q",
			hr.Method, hr.RequestURI, hr.Host, hr.ContentLength, hr.Close, hbody, body.Bytes())
	}
	for _, h := range endToEnd(&again) {
		if h[0] == "trailer" {
			continue // net/http moves it into Request.Trailer
		}
		if !contains(hr.Header.Values(h[0]), h[1]) {
			t.Fatalf("net/http lost header %q: %v", h, hr.Header)
		}
	}
}

func contains(vs []string, v string) bool {
	for _, x := range vs {
		if x == v {
			return true
		}
	}
	return false
}

func TestRoundTripOracle(t *testing.T) {
	for _, in := range []string{
		"GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\nAccept: */*\r\nX-Multi: 1\r\nx-multi: 2\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: h:8080\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
		"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5;e=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n",
		"GET http://up.example:81/x?y HTTP/1.1\r\nHost: up.example:81\r\n\r\n",
		"GET / HTTP/1.0\r\nConnection: keep-alive\r\nHost: h\r\n\r\n",
		"PUT /u HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
		"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
		"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n",
	} {
		first, out, err := roundTrip(t, in)
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		checkAgainstOracle(t, first, out)
	}
}

func TestZeroAlloc(t *testing.T) {
	in := []byte("GET /api/v1/items?id=42 HTTP/1.1\r\nHost: svc.mesh.local\r\nUser-Agent: bench/1.0\r\nAccept: application/json\r\n" +
		"Accept-Encoding: gzip\r\nX-Request-Id: 0f8fad5b-d9cb-469f-a165-70867728950e\r\nConnection: keep-alive\r\n\r\n")
	src := bytes.NewReader(in)
	br := bufio.NewReader(src)
	r := NewReader(br, Limits{})
	bw := bufio.NewWriter(io.Discard)
	extra := []Header{{"X-Forwarded-Proto", "http"}}
	var req Request
	run := func() {
		src.Reset(in)
		br.Reset(src)
		if err := r.ReadRequest(&req); err != nil {
			t.Fatal(err)
		}
		if err := WriteRequestHead(bw, &req, "", extra, false); err != nil {
			t.Fatal(err)
		}
		if v, ok := req.Get("x-request-id"); !ok || v == "" {
			t.Fatal("Get failed")
		}
		bw.Reset(io.Discard)
	}
	run() // warm up: buffers grow once
	if n := testing.AllocsPerRun(200, run); n != 0 {
		t.Errorf("ReadRequest+WriteRequestHead allocs/op = %v, want 0", n)
	}

	chunked := []byte("5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n")
	runBody := func() {
		src.Reset(chunked)
		br.Reset(src)
		if _, err := CopyBody(bw, br, -1, true, false); err != nil {
			t.Fatal(err)
		}
		bw.Reset(io.Discard)
	}
	if n := testing.AllocsPerRun(200, runBody); n != 0 {
		t.Errorf("CopyBody chunked allocs/op = %v, want 0", n)
	}
}

// TestConnectionFieldsSkip: a parsed head without a Connection field lets the writers
// skip the scan for fields it names; one with it, or a head built by hand, is scanned.
func TestConnectionFieldsSkip(t *testing.T) {
	read := func(s string) *Request {
		var req Request
		if err := NewReader(bufio.NewReader(strings.NewReader(s)), Limits{}).ReadRequest(&req); err != nil {
			t.Fatal(err)
		}
		return &req
	}
	if read("GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\n").ConnectionFields() {
		t.Error("a head without Connection: ConnectionFields true")
	}
	req := read("GET / HTTP/1.1\r\nHost: h\r\nConnection: x-a\r\nX-A: 1\r\nX-B: 2\r\n\r\n")
	if !req.ConnectionFields() {
		t.Error("a head with Connection: ConnectionFields false")
	}
	var b strings.Builder
	w := bufio.NewWriter(&b)
	if err := WriteRequestHead(w, req, "", nil, false); err != nil {
		t.Fatal(err)
	}
	_ = w.Flush()
	if strings.Contains(b.String(), "X-A") || !strings.Contains(b.String(), "X-B: 2") {
		t.Errorf("written head %q: want X-A (named in Connection) dropped, X-B kept", b.String())
	}
	if !(&Request{}).ConnectionFields() {
		t.Error("a Request built by hand: ConnectionFields false")
	}
}

// TestHeadWritersSmallBuffers: the head writers (which append a line in the writer's
// free buffer when it fits) write the same bytes whatever the buffer's size and however
// much it already holds, down to buffers smaller than one field.
func TestHeadWritersSmallBuffers(t *testing.T) {
	var req Request
	in := "POST /upload?x=1 HTTP/1.1\r\nHost: svc.mesh.local:8080\r\nUser-Agent: t/1\r\nX-Long: " +
		strings.Repeat("v", 300) + "\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\n\r\n"
	if err := NewReader(bufio.NewReader(strings.NewReader(in)), Limits{}).ReadRequest(&req); err != nil {
		t.Fatal(err)
	}
	var resp Response
	rin := "HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nX-Long: " + strings.Repeat("r", 300) + "\r\nContent-Length: 12345\r\n\r\n"
	if err := NewReader(bufio.NewReader(strings.NewReader(rin)), Limits{}).ReadResponse(&resp, "POST"); err != nil {
		t.Fatal(err)
	}
	extra := []Header{{"X-Forwarded-For", "10.0.0.1"}, {"X-Request-Id", strings.Repeat("i", 36)}}
	write := func(size, pre int) string {
		var b strings.Builder
		w := bufio.NewWriterSize(&b, size)
		_, _ = w.WriteString(strings.Repeat("p", pre))
		if err := WriteRequestHead(w, &req, "", extra, false); err != nil {
			t.Fatal(err)
		}
		if err := WriteResponseHead(w, &resp, extra, false, true); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	want := write(64<<10, 0)
	if !strings.Contains(want, "Content-Length: 12345\r\n") || !strings.Contains(want, "Transfer-Encoding: chunked\r\n") {
		t.Fatalf("heads:\n%s", want)
	}
	for _, size := range []int{1, 7, 16, 24, 40, 100, 333, 4096} {
		for _, pre := range []int{0, 3, 15} {
			if got := write(size, pre); got != strings.Repeat("p", pre)+want {
				t.Fatalf("buffer %d holding %d: got\n%q\nwant\n%q", size, pre, got, strings.Repeat("p", pre)+want)
			}
		}
	}
}

// TestAppendDec checks the short decimal path against strconv at every value it takes
// and at its edges.
func TestAppendDec(t *testing.T) {
	for _, v := range []int64{-1, -10000, 10000, 10001, 99999, 1 << 40, 9223372036854775807, -9223372036854775808} {
		if got, want := string(appendDec([]byte("x"), v)), "x"+strconv.FormatInt(v, 10); got != want {
			t.Errorf("appendDec(%d) = %q, want %q", v, got, want)
		}
	}
	for v := int64(0); v <= 9999; v++ {
		if got, want := string(appendDec(nil, v)), strconv.FormatInt(v, 10); got != want {
			t.Fatalf("appendDec(%d) = %q, want %q", v, got, want)
		}
	}
}
