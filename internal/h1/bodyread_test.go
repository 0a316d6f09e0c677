package h1

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// readBody reads a whole body through a BodyReader with reads of size bytes.
func readBody(t *testing.T, in string, cl int64, chunked, untilClose, oneByte bool, size int) (string, *BodyReader, *bufio.Reader, error) {
	t.Helper()
	var src io.Reader = strings.NewReader(in)
	if oneByte {
		src = iotest.OneByteReader(src)
	}
	br := bufio.NewReaderSize(src, 64)
	var b BodyReader
	b.Reset(br, cl, chunked, untilClose)
	var out strings.Builder
	p := make([]byte, size)
	for i := 0; i < 10000; i++ {
		n, err := b.Read(p)
		out.Write(p[:n])
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return out.String(), &b, br, err
		}
	}
	t.Fatal("no end")
	return "", nil, nil, nil
}

func TestBodyReader(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		cl         int64
		chunked    bool
		untilClose bool
		body       string
		trailers   []Header
		rest       string // left in the bufio.Reader for the next message
	}{
		{"sized", "hello world", 5, false, false, "hello", nil, " world"},
		{"sized zero", "next", 0, false, false, "", nil, "next"},
		{"no framing", "next", -1, false, false, "", nil, "next"},
		{"until close", "all of it", -1, false, true, "all of it", nil, ""},
		{"chunked", "3\r\nabc\r\n1;x=\"y\"\r\nd\r\n0\r\n\r\nnext", 0, true, false, "abcd", nil, "next"},
		{"chunked with trailers", "1\r\na\r\n0\r\nX-T:  v \r\nTransfer-Encoding: chunked\r\nHost: evil\r\nGrpc-Status: 0\r\n\r\nnext",
			0, true, false, "a", []Header{{"X-T", "v"}, {"Grpc-Status", "0"}}, "next"},
		{"chunked empty", "0\r\n\r\n", 0, true, false, "", nil, ""},
		{"chunked large", "40\r\n" + strings.Repeat("z", 64) + "\r\n0\r\n\r\n", 0, true, false, strings.Repeat("z", 64), nil, ""},
	}
	for _, tc := range tests {
		for _, oneByte := range []bool{false, true} {
			for _, size := range []int{1, 3, 100} {
				got, b, br, err := readBody(t, tc.in, tc.cl, tc.chunked, tc.untilClose, oneByte, size)
				if err != nil || got != tc.body {
					t.Errorf("%s (one byte %v, reads of %d): %q %v, want %q", tc.name, oneByte, size, got, err, tc.body)
					continue
				}
				if !b.Done() {
					t.Errorf("%s: not Done after io.EOF", tc.name)
				}
				if len(b.Trailers) != len(tc.trailers) {
					t.Errorf("%s: trailers %v, want %v", tc.name, b.Trailers, tc.trailers)
				} else {
					for i := range tc.trailers {
						if b.Trailers[i] != tc.trailers[i] {
							t.Errorf("%s: trailers %v, want %v", tc.name, b.Trailers, tc.trailers)
						}
					}
				}
				rest, _ := io.ReadAll(br)
				if string(rest) != tc.rest {
					t.Errorf("%s: left %q, want %q", tc.name, rest, tc.rest)
				}
			}
		}
	}
}

// TestBodyReaderEOFWithLastBytes: the last bytes come with io.EOF when the end of the
// framing is already buffered, so the connection is known free without another Read.
func TestBodyReaderEOFWithLastBytes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		cl      int64
		chunked bool
	}{
		{"sized", "hello", 5, false},
		{"chunked", "5\r\nhello\r\n0\r\nX-A: 1\r\n\r\n", 0, true},
	} {
		var b BodyReader
		b.Reset(bufio.NewReader(strings.NewReader(tc.in)), tc.cl, tc.chunked, false)
		p := make([]byte, 100)
		n, err := b.Read(p)
		if n != 5 || err != io.EOF || string(p[:n]) != "hello" {
			t.Errorf("%s: %d %v, want 5 bytes and io.EOF", tc.name, n, err)
		}
		if n, err := b.Read(p); n != 0 || err != io.EOF {
			t.Errorf("%s: after the end: %d %v", tc.name, n, err)
		}
	}
	// Not buffered yet: the bytes come now, io.EOF with the next Read.
	pr, pw := io.Pipe()
	go func() {
		_, _ = io.WriteString(pw, "5\r\nhello\r\n")
		_, _ = io.WriteString(pw, "0\r\n\r\n")
		_ = pw.Close()
	}()
	var b BodyReader
	b.Reset(bufio.NewReader(pr), 0, true, false)
	p := make([]byte, 100)
	if n, err := b.Read(p); n != 5 || err != nil {
		t.Fatalf("first read: %d %v", n, err)
	}
	if n, err := b.Read(p); n != 0 || err != io.EOF || !b.Done() {
		t.Fatalf("second read: %d %v", n, err)
	}
}

func TestBodyReaderErrors(t *testing.T) {
	for _, tc := range []struct {
		name       string
		in         string
		cl         int64
		chunked    bool
		malformed  bool // *Error, else *BodyError read with io.ErrUnexpectedEOF
		wantPrefix string
	}{
		{"sized short", "abc", 5, false, false, "abc"},
		{"chunked truncated data", "5\r\nab", 0, true, false, "ab"},
		{"chunked no last chunk", "2\r\nab\r\n", 0, true, false, "ab"},
		{"chunked truncated trailers", "2\r\nab\r\n0\r\nX: 1\r\n", 0, true, false, "ab"},
		{"chunk size invalid", "zz\r\nab\r\n", 0, true, true, ""},
		{"chunk data without CRLF", "2\r\nabXX0\r\n\r\n", 0, true, true, "ab"},
		{"bare LF chunk line", "2\nab\r\n0\r\n\r\n", 0, true, true, ""},
		{"trailer obs-fold", "0\r\nX: 1\r\n  more\r\n\r\n", 0, true, true, ""},
		{"trailer bare LF", "0\r\nX: 1\n\r\n", 0, true, true, ""},
	} {
		got, b, _, err := readBody(t, tc.in, tc.cl, tc.chunked, false, false, 100)
		var he *Error
		var be *BodyError
		switch {
		case tc.malformed && !errors.As(err, &he):
			t.Errorf("%s: %v, want *Error", tc.name, err)
		case !tc.malformed && (!errors.As(err, &be) || be.Op != "read" || !errors.Is(err, io.ErrUnexpectedEOF)):
			t.Errorf("%s: %v, want a read *BodyError with io.ErrUnexpectedEOF", tc.name, err)
		}
		if got != tc.wantPrefix {
			t.Errorf("%s: read %q before the error, want %q", tc.name, got, tc.wantPrefix)
		}
		if b.Done() {
			t.Errorf("%s: Done after an error", tc.name)
		}
		if _, again := b.Read(make([]byte, 10)); again != err {
			t.Errorf("%s: error not sticky: %v then %v", tc.name, err, again)
		}
	}
}

// TestBodyReaderReuse: a BodyReader reused for the next body reads it from the start,
// with its own trailers; steady-state reads allocate nothing.
func TestBodyReaderReuse(t *testing.T) {
	in := strings.Repeat("3\r\nabc\r\n0\r\nX-N: 1\r\n\r\n", 2000)
	br := bufio.NewReader(strings.NewReader(in))
	var b BodyReader
	p := make([]byte, 16)
	one := func() {
		b.Reset(br, 0, true, false)
		for {
			_, err := b.Read(p)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if len(b.Trailers) != 1 || b.Trailers[0].Value != "1" {
			t.Fatalf("trailers %v", b.Trailers)
		}
	}
	one()
	if n := testing.AllocsPerRun(500, one); n != 0 {
		t.Errorf("%v allocs per body, want 0", n)
	}
}
