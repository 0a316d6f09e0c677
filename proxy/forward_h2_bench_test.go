package proxy

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"testing"

	"golang.org/x/net/http2"
)

// literalBlock encodes fields as literals without indexing: the same bytes every
// time, so a peer can send a pre-encoded block without keeping HPACK state.
func literalBlock(fields ...string) []byte {
	var b []byte
	for i := 0; i+1 < len(fields); i += 2 {
		b = append(b, 0x00) // literal header field without indexing, new name
		b = appendString(b, fields[i])
		b = appendString(b, fields[i+1])
	}
	return b
}

func appendString(b []byte, s string) []byte {
	// 7-bit prefix length, no Huffman (lengths here are < 127).
	return append(append(b, byte(len(s))), s...)
}

// rawH2Upstream answers every request (HEADERS with END_STREAM) with a pre-encoded
// 200 and a 63-byte body, allocating nothing per request and keeping no HPACK state.
func rawH2Upstream(tb testing.TB) (addr string, stop func()) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	head := literalBlock(":status", "200", "content-type", "text/plain", "content-length", "63")
	body := bytes.Repeat([]byte("x"), 63)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				br := bufio.NewReaderSize(c, 64<<10)
				bw := bufio.NewWriterSize(c, 64<<10)
				pre := make([]byte, len(http2.ClientPreface))
				if _, err := ioReadFull(br, pre); err != nil {
					return
				}
				fr := http2.NewFramer(bw, br)
				fr.SetReuseFrames()
				_ = fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1000})
				_ = fr.WriteWindowUpdate(0, 1<<30)
				_ = bw.Flush()
				var recv uint32
				for {
					f, err := fr.ReadFrame()
					if err != nil {
						return
					}
					switch f := f.(type) {
					case *http2.SettingsFrame:
						if !f.IsAck() {
							_ = fr.WriteSettingsAck()
						}
					case *http2.PingFrame:
						if !f.IsAck() {
							_ = fr.WritePing(true, f.Data)
						}
					case *http2.DataFrame:
						recv += f.Length
						if recv > 1<<20 {
							_ = fr.WriteWindowUpdate(0, recv)
							recv = 0
						}
					case *http2.HeadersFrame:
						if f.StreamEnded() {
							_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: f.StreamID, BlockFragment: head, EndHeaders: true})
							_ = fr.WriteData(f.StreamID, true, body)
						}
					}
					if br.Buffered() == 0 {
						if bw.Flush() != nil {
							return
						}
					}
				}
			}(c)
		}
	}()
	return ln.Addr().String(), func() { ln.Close(); <-done }
}

func ioReadFull(br *bufio.Reader, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := br.Read(p[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// BenchmarkForwardH2C measures h2c requests relayed by meshd's egress listener, one
// stream at a time on one client connection, to an HTTP/1.1 upstream and to an h2c
// upstream. Client and upstreams use pre-encoded header blocks and allocate nothing
// per request, so allocs/op are meshd's.
func BenchmarkForwardH2C(b *testing.B) {
	for _, up := range []struct {
		name  string
		proto string
		start func(testing.TB) (string, func())
	}{{"h1-upstream", "http", rawUpstream}, {"h2-upstream", "http2", rawH2Upstream}} {
		b.Run(up.name, func(b *testing.B) {
			addr, stop := up.start(b)
			defer stop()
			s := benchServerProto(b, addr, up.proto, Options{})
			defer s.Shutdown(context.Background())
			c, err := net.Dial("tcp", s.EgressAddr())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReaderSize(c, 64<<10)
			fr := http2.NewFramer(c, br)
			fr.SetReuseFrames()
			if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
				b.Fatal(err)
			}
			_ = fr.WriteSettings()
			_ = fr.WriteWindowUpdate(0, 1<<30)
			req := literalBlock(":method", "GET", ":scheme", "http", ":authority", "upstream.bench.local", ":path", "/bench", "user-agent", "bench")
			var id uint32 = 1
			var recv uint32
			roundTrip := func() {
				if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: req, EndStream: true, EndHeaders: true}); err != nil {
					b.Fatal(err)
				}
				for {
					f, err := fr.ReadFrame()
					if err != nil {
						b.Fatal(err)
					}
					switch f := f.(type) {
					case *http2.SettingsFrame:
						if !f.IsAck() {
							_ = fr.WriteSettingsAck()
						}
					case *http2.RSTStreamFrame:
						b.Fatalf("stream reset: %v", f.ErrCode)
					case *http2.DataFrame:
						recv += f.Length
						if f.StreamEnded() && f.StreamID == id {
							if recv > 1<<20 {
								_ = fr.WriteWindowUpdate(0, recv)
								recv = 0
							}
							id += 2
							return
						}
					case *http2.HeadersFrame:
						if f.StreamEnded() && f.StreamID == id {
							b.Fatalf("response without body")
						}
					}
				}
			}
			for range 100 {
				roundTrip()
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				roundTrip()
			}
		})
	}
}
