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
	return rawH2Peer(tb, false)
}

// rawGRPCUpstream answers every gRPC call (its request ends with a DATA frame) as a
// gRPC server does: a pre-encoded head, one 10-byte message, and trailers carrying
// grpc-status 0.
func rawGRPCUpstream(tb testing.TB) (addr string, stop func()) {
	return rawH2Peer(tb, true)
}

func rawH2Peer(tb testing.TB, grpc bool) (addr string, stop func()) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	head := literalBlock(":status", "200", "content-type", "text/plain", "content-length", "63")
	body := bytes.Repeat([]byte("x"), 63)
	trailers := literalBlock("grpc-status", "0")
	if grpc {
		head = literalBlock(":status", "200", "content-type", "application/grpc")
		body = append([]byte{0, 0, 0, 0, 10}, bytes.Repeat([]byte("y"), 10)...)
	}
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
				var rf rawFrame
				for {
					if rf.read(br) != nil {
						return
					}
					switch rf.typ {
					case http2.FrameSettings:
						if rf.flags&0x1 == 0 {
							_ = fr.WriteSettingsAck()
						}
					case http2.FramePing:
						if rf.flags&0x1 == 0 && len(rf.payload) == 8 {
							_ = fr.WritePing(true, [8]byte(rf.payload))
						}
					case http2.FrameData:
						recv += uint32(len(rf.payload))
						if recv > 1<<20 {
							_ = fr.WriteWindowUpdate(0, recv)
							recv = 0
						}
						if grpc && rf.flags&0x1 != 0 {
							_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: rf.stream, BlockFragment: head, EndHeaders: true})
							_ = fr.WriteData(rf.stream, false, body)
							_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: rf.stream, BlockFragment: trailers, EndHeaders: true, EndStream: true})
						}
					case http2.FrameHeaders:
						// The pre-encoded blocks of meshd's requests fit one frame; END_STREAM:
						if !grpc && rf.flags&0x1 != 0 {
							_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: rf.stream, BlockFragment: head, EndHeaders: true})
							_ = fr.WriteData(rf.stream, true, body)
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

// rawFrame reads frames into a buffer it reuses: Framer.ReadFrame allocates each
// HEADERS frame, which the benchmark would count as meshd's.
type rawFrame struct {
	hdr     [9]byte
	buf     []byte
	typ     http2.FrameType
	flags   uint8
	stream  uint32
	payload []byte
}

func (f *rawFrame) read(br *bufio.Reader) error {
	if _, err := ioReadFull(br, f.hdr[:]); err != nil {
		return err
	}
	n := int(f.hdr[0])<<16 | int(f.hdr[1])<<8 | int(f.hdr[2])
	f.typ, f.flags = http2.FrameType(f.hdr[3]), f.hdr[4]
	f.stream = (uint32(f.hdr[5])<<24 | uint32(f.hdr[6])<<16 | uint32(f.hdr[7])<<8 | uint32(f.hdr[8])) & (1<<31 - 1)
	if cap(f.buf) < n {
		f.buf = make([]byte, n)
	}
	f.payload = f.buf[:n]
	_, err := ioReadFull(br, f.payload)
	return err
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
			roundTrip := rawH2CClient(b, s.EgressAddr())
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

// BenchmarkForwardGRPC measures unary gRPC calls (a 10-byte message each way, trailers)
// relayed by meshd's egress listener to an h2c gRPC upstream, one call at a time on
// one client connection. Client and upstream allocate nothing per call.
func BenchmarkForwardGRPC(b *testing.B) {
	addr, stop := rawGRPCUpstream(b)
	defer stop()
	s := benchServerProto(b, addr, "grpc", Options{})
	defer s.Shutdown(context.Background())
	call := rawGRPCClient(b, s.EgressAddr())
	for range 100 {
		call()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		call()
	}
}

// rawGRPCClient is rawH2CClient for unary gRPC calls: HEADERS, then one DATA frame with
// a 10-byte message and END_STREAM; the call ends with the trailers' HEADERS.
func rawGRPCClient(tb testing.TB, addr string) func() {
	return rawH2Client(tb, addr, true)
}

// rawH2CClient opens an h2c connection to addr with x/net's Framer and returns a
// function that sends one bodyless GET and reads its response to the end: the
// lightest client there is, so what a benchmark or an allocation count measures is
// meshd (and the raw upstream).
func rawH2CClient(tb testing.TB, addr string) func() {
	return rawH2Client(tb, addr, false)
}

func rawH2Client(tb testing.TB, addr string, grpc bool) func() {
	tb.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	br := bufio.NewReaderSize(c, 64<<10)
	fr := http2.NewFramer(c, br)
	fr.SetReuseFrames()
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		tb.Fatal(err)
	}
	_ = fr.WriteSettings()
	_ = fr.WriteWindowUpdate(0, 1<<30)
	req := literalBlock(":method", "GET", ":scheme", "http", ":authority", "upstream.bench.local", ":path", "/bench", "user-agent", "bench")
	msg := append([]byte{0, 0, 0, 0, 10}, bytes.Repeat([]byte("m"), 10)...)
	if grpc {
		req = literalBlock(":method", "POST", ":scheme", "http", ":authority", "upstream.bench.local", ":path", "/bench.Svc/Unary",
			"content-type", "application/grpc", "te", "trailers", "user-agent", "bench")
	}
	var id uint32 = 1
	var recv uint32
	var rf rawFrame
	roundTrip := func() {
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: req, EndStream: !grpc, EndHeaders: true}); err != nil {
			tb.Fatal(err)
		}
		if grpc {
			if err := fr.WriteData(id, true, msg); err != nil {
				tb.Fatal(err)
			}
		}
		for {
			if err := rf.read(br); err != nil {
				tb.Fatal(err)
			}
			switch rf.typ {
			case http2.FrameSettings:
				if rf.flags&0x1 == 0 {
					_ = fr.WriteSettingsAck()
				}
			case http2.FrameRSTStream:
				tb.Fatalf("stream reset: %x", rf.payload)
			case http2.FrameData:
				recv += uint32(len(rf.payload))
				if rf.flags&0x1 != 0 && rf.stream == id {
					if recv > 1<<20 {
						_ = fr.WriteWindowUpdate(0, recv)
						recv = 0
					}
					id += 2
					return
				}
			case http2.FrameHeaders:
				if rf.flags&0x1 != 0 && rf.stream == id {
					if !grpc {
						tb.Fatalf("response without body")
					}
					// The trailers end the call.
					if recv > 1<<20 {
						_ = fr.WriteWindowUpdate(0, recv)
						recv = 0
					}
					id += 2
					return
				}
			}
		}
	}
	return roundTrip
}
