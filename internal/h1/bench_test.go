package h1

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"
)

var benchReq = []byte("GET /api/v1/items?id=42 HTTP/1.1\r\nHost: svc.mesh.local\r\nUser-Agent: bench/1.0\r\n" +
	"Accept: application/json\r\nAccept-Encoding: gzip\r\nX-Request-Id: 0f8fad5b-d9cb-469f-a165-70867728950e\r\n" +
	"Connection: keep-alive\r\n\r\n")

func BenchmarkReadRequest(b *testing.B) {
	src := bytes.NewReader(benchReq)
	br := bufio.NewReader(src)
	r := NewReader(br, Limits{})
	var req Request
	b.SetBytes(int64(len(benchReq)))
	b.ReportAllocs()
	for b.Loop() {
		src.Reset(benchReq)
		br.Reset(src)
		if err := r.ReadRequest(&req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWriteRequestHead(b *testing.B) {
	var req Request
	if err := NewReader(bufio.NewReader(bytes.NewReader(benchReq)), Limits{}).ReadRequest(&req); err != nil {
		b.Fatal(err)
	}
	bw := bufio.NewWriter(io.Discard)
	extra := []Header{{"X-Forwarded-Proto", "http"}}
	b.ReportAllocs()
	for b.Loop() {
		if err := WriteRequestHead(bw, &req, "", extra, false); err != nil {
			b.Fatal(err)
		}
		bw.Reset(io.Discard)
	}
}

func BenchmarkCopyBodyChunked(b *testing.B) {
	var in strings.Builder
	for range 16 {
		in.WriteString("1000;ext=1\r\n")
		in.WriteString(strings.Repeat("x", 0x1000))
		in.WriteString("\r\n")
	}
	in.WriteString("0\r\nX-Checksum: abc\r\n\r\n")
	body := []byte(in.String())
	src := bytes.NewReader(body)
	br := bufio.NewReaderSize(src, 32<<10)
	bw := bufio.NewWriterSize(io.Discard, 32<<10)
	b.SetBytes(16 * 0x1000)
	b.ReportAllocs()
	for b.Loop() {
		src.Reset(body)
		br.Reset(src)
		if _, err := CopyBody(bw, br, -1, true, false); err != nil {
			b.Fatal(err)
		}
	}
}
