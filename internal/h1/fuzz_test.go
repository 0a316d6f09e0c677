package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"slices"
	"testing"
	"testing/iotest"
)

var fuzzSeeds = []string{
	"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\nConnection: close, X-H\r\nX-H: 1\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
	"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: X\r\n\r\n5;a=\"b\"\r\nhello\r\n0\r\nX: y\r\n\r\n",
	"GET http://h:1/x HTTP/1.1\r\nHost: h:1\r\n\r\n",
	"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
	"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\nExpect: 100-continue\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX",
	"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:  chunked, identity\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\nhello",
	"GET / HTTP/1.1\nHost: h\n\n",
	"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00\r\n\r\n",
	// A head whole in the buffer is split in memory (bufferedHead): its edges.
	"GET / HTTP/1.1\r\nHost: h\r\nX: a\n\r\n\r\n",
	"GET / HTTP/1.1\nHost: h\r\n\r\n",
	"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\n X: folded\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\nGET / HTTP/1.1\r\n\r\n",
}

// FuzzReadRequest checks that the request parser never panics, reports only documented
// errors, gives the same result however the bytes are split across reads, and that
// whatever it accepts (1) re-serializes to bytes it and net/http parse identically and
// (2) net/http also accepts as sent, with the same framing and body.
func FuzzReadRequest(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, body, err := parseAll(data, false)
		_, body1, err1 := parseAll(data, true)
		if errString(err) != errString(err1) || body != body1 {
			t.Fatalf("one-byte reads differ: %v / %v, %q / %q", err, err1, body, body1)
		}
		if err != nil {
			var he *Error
			var be *BodyError
			if !errors.As(err, &he) && !errors.As(err, &be) && err != io.EOF && err != io.ErrUnexpectedEOF {
				t.Fatalf("undocumented error %T %v", err, err)
			}
			return
		}
		first, out, err := roundTrip(t, string(data))
		if err != nil {
			t.Fatalf("second parse failed: %v", err)
		}
		checkAgainstOracle(t, first, out)

		// net/http on the original bytes (minus the empty lines RFC 9112 §2.2 lets us skip).
		orig := data
		for bytes.HasPrefix(orig, []byte("\r\n")) {
			orig = orig[2:]
		}
		hr, herr := http.ReadRequest(bufio.NewReader(bytes.NewReader(orig)))
		if herr != nil {
			t.Fatalf("we accept, net/http rejects: %v", herr)
		}
		hbody, herr := io.ReadAll(hr.Body)
		if herr != nil {
			t.Fatalf("we accept the body, net/http rejects it: %v", herr)
		}
		if req.chunked != (len(hr.TransferEncoding) > 0) || (!req.chunked && max(req.cl, 0) != hr.ContentLength) ||
			string(hbody) != req.payload || req.close != hr.Close {
			t.Fatalf("framing differs from net/http: ours %+v, net/http cl=%d te=%v close=%v body=%q",
				req, hr.ContentLength, hr.TransferEncoding, hr.Close, hbody)
		}
	})
}

type parsed struct {
	cl             int64
	chunked, close bool
	payload        string
}

// parseAll reads one request and its body, returning framing facts, the re-emitted body, and
// the first error.
func parseAll(data []byte, oneByte bool) (parsed, string, error) {
	var src io.Reader = bytes.NewReader(data)
	if oneByte {
		src = iotest.OneByteReader(src)
	}
	br := bufio.NewReader(src)
	var req Request
	if err := NewReader(br, Limits{}).ReadRequest(&req); err != nil {
		return parsed{}, "", err
	}
	p := parsed{cl: req.ContentLength, chunked: req.Chunked, close: req.Close}
	var out, payload bytes.Buffer
	bw := bufio.NewWriter(&out)
	if _, err := CopyBody(bw, br, req.ContentLength, req.Chunked, false); err != nil {
		return parsed{}, "", err
	}
	_ = bw.Flush()
	pw := bufio.NewWriter(&payload)
	if _, err := (BodyCopy{ContentLength: req.ContentLength, Chunked: req.Chunked, Dechunk: true}).Copy(pw, bufio.NewReader(bytes.NewReader(out.Bytes()))); err != nil {
		return parsed{}, "", err
	}
	_ = pw.Flush()
	p.payload = payload.String()
	return p, out.String(), nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// FuzzChunked checks the chunked relay: no panics, split-independence, idempotence (our
// output relays to itself unchanged), and that net/http's chunked reader decodes our output
// to the same payload.
func FuzzChunked(f *testing.F) {
	for _, s := range []string{
		"0\r\n\r\n",
		"5\r\nhello\r\n0\r\n\r\n",
		"5;a=b;c=\"d\\\"\"\r\nhello\r\n1 ; x\r\n!\r\n0\r\nX-T: v\r\nY: z\r\n\r\n",
		"ffffffffffffffff\r\n",
		"5\nhello\n0\n\n",
		"5\r\nhelloXX0\r\n\r\n",
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, drop bool) {
		c := BodyCopy{Chunked: true, DropTrailers: drop}
		out, n, err := relay(c, data, false)
		out1, n1, err1 := relay(c, data, true)
		if out != out1 || n != n1 || errString(err) != errString(err1) {
			t.Fatalf("one-byte reads differ: %q/%q %v/%v", out, out1, err, err1)
		}
		if err != nil {
			var he *Error
			var be *BodyError
			if !errors.As(err, &he) && !errors.As(err, &be) {
				t.Fatalf("undocumented error %T %v", err, err)
			}
			return
		}
		again, n2, err := relay(c, []byte(out), false)
		if err != nil || again != out || n2 != n {
			t.Fatalf("relay not idempotent: %q -> %q (%v)", out, again, err)
		}
		payload, _, err := relay(BodyCopy{Chunked: true, Dechunk: true}, []byte(out), false)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(httputil.NewChunkedReader(bytes.NewReader([]byte(out))))
		if err != nil || string(got) != payload || int64(len(payload)) != n {
			t.Fatalf("net/http decodes %q as %q (%v), we as %q (n=%d)", out, got, err, payload, n)
		}
	})
}

func relay(c BodyCopy, data []byte, oneByte bool) (string, int64, error) {
	var src io.Reader = bytes.NewReader(data)
	if oneByte {
		src = iotest.OneByteReader(src)
	}
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	n, err := c.Copy(bw, bufio.NewReader(src))
	_ = bw.Flush()
	return out.String(), n, err
}

// FuzzReadResponse checks that the response parser never panics, reports only
// documented errors, and gives the same head or error however the bytes are split
// across reads (a head whole in the buffer is parsed in one pass, others line by line).
func FuzzReadResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX:\ta\t\r\n\r\n0\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
		"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
		"HTTP/1.1 200\r\n\r\n",
	} {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, data []byte, head bool) {
		method := "GET"
		if head {
			method = "HEAD"
		}
		read := func(src io.Reader) (Response, []Header, error) {
			var resp Response
			err := NewReader(bufio.NewReader(src), Limits{MaxHeaders: 8, MaxHeaderBytes: 512}).ReadResponse(&resp, method)
			return resp, append([]Header(nil), resp.Headers...), err
		}
		r1, h1, err1 := read(bytes.NewReader(data))
		r2, h2, err2 := read(iotest.OneByteReader(bytes.NewReader(data)))
		if errString(err1) != errString(err2) {
			t.Fatalf("one-byte reads differ: %v / %v", err1, err2)
		}
		if err1 != nil {
			var he *Error
			if !errors.As(err1, &he) && err1 != io.EOF && err1 != io.ErrUnexpectedEOF {
				t.Fatalf("undocumented error %T %v", err1, err1)
			}
			return
		}
		if r1.Status != r2.Status || r1.Reason != r2.Reason || r1.Minor != r2.Minor || r1.ContentLength != r2.ContentLength ||
			r1.Chunked != r2.Chunked || r1.Close != r2.Close || r1.NoBody != r2.NoBody || r1.Upgrade != r2.Upgrade ||
			r1.ConnectionFields() != r2.ConnectionFields() || !slices.Equal(h1, h2) {
			t.Fatalf("heads differ:\n%+v %q\n%+v %q", r1, h1, r2, h2)
		}
	})
}
