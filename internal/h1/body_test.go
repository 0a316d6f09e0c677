package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func copyString(t *testing.T, c BodyCopy, in string, oneByte bool) (string, int64, error) {
	t.Helper()
	var src io.Reader = strings.NewReader(in)
	if oneByte {
		src = iotest.OneByteReader(src)
	}
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	n, err := c.Copy(bw, bufio.NewReader(src))
	_ = bw.Flush()
	return out.String(), n, err
}

func TestCopyBody(t *testing.T) {
	tests := []struct {
		name string
		c    BodyCopy
		in   string
		out  string
		n    int64
	}{
		{"content-length exact", BodyCopy{ContentLength: 5}, "hellonext", "hello", 5},
		{"content-length zero", BodyCopy{ContentLength: 0}, "next", "", 0},
		{"no framing", BodyCopy{ContentLength: -1}, "next", "", 0},
		{"until close", BodyCopy{UntilClose: true}, "all of it", "all of it", 9},
		{"chunked", BodyCopy{Chunked: true}, "3\r\nabc\r\n1;x=\"y\"\r\nd\r\n0\r\n\r\nnext", "3\r\nabc\r\n1\r\nd\r\n0\r\n\r\n", 4},
		{"chunked trailers forwarded, framing trailers dropped", BodyCopy{Chunked: true},
			"1\r\na\r\n0\r\nX-T:  v \r\nTransfer-Encoding: chunked\r\nHost: evil\r\n\r\n", "1\r\na\r\n0\r\nX-T: v\r\n\r\n", 1},
		{"chunked trailers dropped", BodyCopy{Chunked: true, DropTrailers: true},
			"1\r\na\r\n0\r\nX-T: v\r\n\r\n", "1\r\na\r\n0\r\n\r\n", 1},
		{"dechunk", BodyCopy{Chunked: true, Dechunk: true}, "3\r\nabc\r\n2\r\nde\r\n0\r\nX: y\r\n\r\n", "abcde", 5},
		{"chunk-ext BWS", BodyCopy{Chunked: true}, "1 ; a = b ;c\r\nx\r\n0\r\n\r\n", "1\r\nx\r\n0\r\n\r\n", 1},
		{"large chunk", BodyCopy{Chunked: true}, "2710\r\n" + strings.Repeat("z", 10000) + "\r\n0\r\n\r\n",
			"2710\r\n" + strings.Repeat("z", 10000) + "\r\n0\r\n\r\n", 10000},
	}
	for _, tt := range tests {
		for _, oneByte := range []bool{false, true} {
			t.Run(tt.name, func(t *testing.T) {
				out, n, err := copyString(t, tt.c, tt.in, oneByte)
				if err != nil {
					t.Fatal(err)
				}
				if out != tt.out || n != tt.n {
					t.Errorf("got %q (%d), want %q (%d)", out, n, tt.out, tt.n)
				}
			})
		}
	}
}

func TestCopyBodyErrors(t *testing.T) {
	tests := []struct {
		name   string
		c      BodyCopy
		in     string
		status int   // *Error status, or 0
		ioErr  error // wrapped in *BodyError, op "read"
	}{
		{"content-length short", BodyCopy{ContentLength: 10}, "short", 0, io.ErrUnexpectedEOF},
		{"chunk size empty", BodyCopy{Chunked: true}, "\r\nabc\r\n0\r\n\r\n", 400, nil},
		{"chunk size 0x", BodyCopy{Chunked: true}, "0x5\r\nhello\r\n0\r\n\r\n", 400, nil},
		{"chunk size plus", BodyCopy{Chunked: true}, "+5\r\nhello\r\n0\r\n\r\n", 400, nil},
		{"chunk size leading space", BodyCopy{Chunked: true}, " 5\r\nhello\r\n0\r\n\r\n", 400, nil},
		{"chunk size trailing space", BodyCopy{Chunked: true}, "5 \r\nhello\r\n0\r\n\r\n", 400, nil},
		{"chunk size overflow", BodyCopy{Chunked: true}, "10000000000000000\r\n", 400, nil},
		{"chunk size bare LF", BodyCopy{Chunked: true}, "5\nhello\r\n0\r\n\r\n", 400, nil},
		{"chunk data no CRLF", BodyCopy{Chunked: true}, "5\r\nhelloX\r\n0\r\n\r\n", 400, nil},
		{"chunk data bare LF", BodyCopy{Chunked: true}, "5\r\nhello\n0\r\n\r\n", 400, nil},
		{"chunk data too short", BodyCopy{Chunked: true}, "5\r\nhel", 0, io.ErrUnexpectedEOF},
		{"missing last chunk", BodyCopy{Chunked: true}, "5\r\nhello\r\n", 0, io.ErrUnexpectedEOF},
		{"ext without name", BodyCopy{Chunked: true}, "5;\r\nhello\r\n0\r\n\r\n", 400, nil},
		{"ext bad name", BodyCopy{Chunked: true}, "5;a@b\r\nhello\r\n0\r\n\r\n", 400, nil},
		{"ext empty value", BodyCopy{Chunked: true}, "5;a=\r\nhello\r\n0\r\n\r\n", 400, nil},
		{"ext unterminated quote", BodyCopy{Chunked: true}, "5;a=\"b\r\nhello\r\n0\r\n\r\n", 400, nil},
		{"ext CTL in quote", BodyCopy{Chunked: true}, "5;a=\"\x01\"\r\nhello\r\n0\r\n\r\n", 400, nil},
		{"bare CR in chunk line", BodyCopy{Chunked: true}, "5\r;a\r\nhello\r\n0\r\n\r\n", 400, nil},
		{"trailer obs-fold", BodyCopy{Chunked: true}, "0\r\nX: a\r\n b\r\n\r\n", 400, nil},
		{"trailer space before colon", BodyCopy{Chunked: true}, "0\r\nX : a\r\n\r\n", 400, nil},
		{"trailer NUL", BodyCopy{Chunked: true}, "0\r\nX: a\x00\r\n\r\n", 400, nil},
		{"trailer bare LF", BodyCopy{Chunked: true}, "0\r\nX: a\n\r\n", 400, nil},
		{"trailer unterminated", BodyCopy{Chunked: true}, "0\r\nX: a\r\n", 0, io.ErrUnexpectedEOF},
		{"too many trailers", BodyCopy{Chunked: true}, "0\r\n" + strings.Repeat("X: a\r\n", maxTrailerFields+1) + "\r\n", 400, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := copyString(t, tt.c, tt.in, false)
			if tt.status != 0 {
				var he *Error
				if !errors.As(err, &he) || he.Status != tt.status {
					t.Fatalf("err = %v, want *Error %d", err, tt.status)
				}
				return
			}
			var be *BodyError
			if !errors.As(err, &be) || be.Op != "read" || !errors.Is(err, tt.ioErr) {
				t.Fatalf("err = %v, want read BodyError wrapping %v", err, tt.ioErr)
			}
		})
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("peer gone") }

func TestCopyBodyWriteError(t *testing.T) {
	bw := bufio.NewWriterSize(failWriter{}, 16)
	_, err := CopyBody(bw, bufio.NewReader(strings.NewReader(strings.Repeat("x", 100))), 100, false, false)
	var be *BodyError
	if !errors.As(err, &be) || be.Op != "write" {
		t.Fatalf("err = %v, want write BodyError", err)
	}
}

// flushRecorder records what had reached the destination each time the source was read:
// with streaming flushes, every chunk read so far has been delivered before the next read.
type flushRecorder struct {
	out        bytes.Buffer
	seenAtRead []string
}

type recordingSource struct {
	parts []string
	rec   *flushRecorder
}

func (s *recordingSource) Read(p []byte) (int, error) {
	s.rec.seenAtRead = append(s.rec.seenAtRead, s.rec.out.String())
	if len(s.parts) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.parts[0])
	s.parts = s.parts[1:]
	return n, nil
}

func TestCopyBodyFlushStreams(t *testing.T) {
	parts := []string{"5\r\nev: 1\r\n", "5\r\nev: 2\r\n", "0\r\n\r\n"}
	for _, flush := range []bool{false, true} {
		rec := &flushRecorder{}
		src := bufio.NewReader(&recordingSource{parts: append([]string(nil), parts...), rec: rec})
		dst := bufio.NewWriter(&rec.out)
		var err error
		if flush {
			_, err = CopyBodyFlush(dst, src, -1, true, false)
		} else {
			_, err = CopyBody(dst, src, -1, true, false)
		}
		if err != nil {
			t.Fatal(err)
		}
		// The third read (for the last chunk) happens after two events were relayed.
		got := rec.seenAtRead[2]
		if flush && got != "5\r\nev: 1\r\n5\r\nev: 2\r\n" {
			t.Errorf("flush: destination before third read = %q", got)
		}
		if !flush && got != "" {
			t.Errorf("no flush: destination before third read = %q, want nothing yet", got)
		}
	}
}
