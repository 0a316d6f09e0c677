package h2

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"

	"golang.org/x/net/http2"
)

// writeLog is a server connection that records each Write (not a *net.TCPConn, so the
// connection core writes through it).
type writeLog struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (c *writeLog) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, bytes.Clone(p))
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// writesWith counts the recorded writes that carry a frame of stream id.
func (c *writeLog) writesWith(t *testing.T, id uint32) int {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, w := range c.writes {
		fr := http2.NewFramer(io.Discard, bytes.NewReader(w))
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				break
			}
			if f.Header().StreamID == id {
				n++
				break
			}
		}
	}
	return n
}

// A unary gRPC call's answer (head, one message, trailers) leaves in one write, and the
// handler reads the request's last bytes together with its end: a relay then ends the
// upstream request with its last DATA frame, and the client wakes once for the answer.
func TestUnaryAnswerOneWrite(t *testing.T) {
	type first struct {
		n   int
		err error
	}
	got := make(chan first, 1)
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := make([]byte, 64)
		n, err := r.Body.Read(p)
		got <- first{n, err}
		w.Header().Set("Content-Type", "application/grpc")
		_, _ = w.Write([]byte{0, 0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o'})
		w.Header()[http.TrailerPrefix+"Grpc-Status"] = []string{"0"}
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logged := make(chan *writeLog, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		wl := &writeLog{Conn: c}
		logged <- wl
		s.ServeConn(context.Background(), wl, nil, ConnInfo{RemoteAddr: c.RemoteAddr().String()})
	})
	t.Cleanup(func() { _ = ln.Close(); _ = s.Close(); wg.Wait() })

	r := rawConn(t, ln.Addr().String())
	// HEADERS and DATA with END_STREAM, in one write as gRPC clients send them.
	var out bytes.Buffer
	fw := http2.NewFramer(&out, nil)
	blk := r.block(":method", "POST", ":scheme", "http", ":authority", "x", ":path", "/S/M", "content-type", "application/grpc", "te", "trailers")
	_ = fw.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk, EndHeaders: true})
	_ = fw.WriteData(1, true, []byte{0, 0, 0, 0, 3, 'a', 'b', 'c'})
	if _, err := r.c.Write(out.Bytes()); err != nil {
		t.Fatal(err)
	}
	var frames []string
	r.next(func(f http2.Frame) bool {
		if f.Header().StreamID != 1 {
			return false
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			for _, hf := range f.Fields {
				if hf.Name == "content-length" {
					t.Errorf("content-length %q in a head with trailers", hf.Value)
				}
			}
			if f.StreamEnded() {
				frames = append(frames, "trailers")
				return true
			}
			frames = append(frames, "head")
		case *http2.DataFrame:
			frames = append(frames, "data")
		}
		return false
	})
	if want := "[head data trailers]"; fmtList(frames) != want {
		t.Fatalf("frames %v, want %s", frames, want)
	}
	if f := <-got; f.n != 8 || f.err != io.EOF {
		t.Fatalf("first body read: %d, %v; want all 8 bytes with io.EOF (the end came with them)", f.n, f.err)
	}
	if n := (<-logged).writesWith(t, 1); n != 1 {
		t.Fatalf("the answer took %d writes, want 1", n)
	}
}

func fmtList(s []string) string {
	var b bytes.Buffer
	b.WriteByte('[')
	for i, x := range s {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(x)
	}
	b.WriteByte(']')
	return b.String()
}

// eofWithData returns its bytes and io.EOF in one Read, as a relayed request body does
// when the client's last DATA frame carried END_STREAM.
type eofWithData struct{ b []byte }

func (r *eofWithData) Read(p []byte) (int, error) {
	n := copy(p, r.b)
	r.b = r.b[n:]
	if len(r.b) == 0 {
		return n, io.EOF
	}
	return n, nil
}

// The client ends a request whose body's last read came with io.EOF on that DATA frame:
// no empty DATA frame of its own after it.
func TestRequestEndsWithItsLastData(t *testing.T) {
	type frame struct {
		data int
		end  bool
	}
	frames := make(chan []frame, 1)
	addr := rawServer(t, func(r *raw) {
		var fs []frame
		f := r.next(func(f http2.Frame) bool {
			if d, ok := f.(*http2.DataFrame); ok {
				fs = append(fs, frame{len(d.Data()), d.StreamEnded()})
				return d.StreamEnded()
			}
			return false
		})
		frames <- fs
		blk := r.block(":status", "200")
		_ = r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: f.Header().StreamID, BlockFragment: blk, EndHeaders: true, EndStream: true})
	})
	tr := &Transport{Dial: dialer()}
	defer tr.Close()
	req, _ := http.NewRequest("POST", "http://"+addr+"/", nil)
	req.Body = io.NopCloser(&eofWithData{b: []byte("0123456789")}) // length unknown
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if fs := <-frames; len(fs) != 1 || fs[0] != (frame{10, true}) {
		t.Fatalf("DATA frames %+v, want one of 10 bytes with END_STREAM", fs)
	}
}
