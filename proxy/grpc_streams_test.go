package proxy_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshd/meshd/internal/testutil"
)

// rawCodec moves gRPC messages as plain bytes (*[]byte), so the tests below need no
// generated code: the client forces it per call, the server for every call, and the
// request's content-type is application/grpc+raw.
type rawCodec struct{}

func (rawCodec) Name() string { return "raw" }

func (rawCodec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case *[]byte:
		return *m, nil
	case []byte:
		return m, nil
	}
	return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	m, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	*m = append((*m)[:0], data...)
	return nil
}

// The methods of the test service meshd.test.Echo (served by echoStreams).
const (
	echoUnary    = "/meshd.test.Echo/Unary"    // one message in, the same bytes back
	echoDownload = "/meshd.test.Echo/Download" // in: count, size (uint32 BE each); out: count messages of size bytes, message i filled with msgPattern(i)
	echoUpload   = "/meshd.test.Echo/Upload"   // in: messages until half-close; out: "count sha256hex" of their concatenation
	echoChat     = "/meshd.test.Echo/Chat"     // each message echoed as it arrives
	echoFail     = "/meshd.test.Echo/Fail"     // three messages, then trailer metadata and a non-OK status
)

// The status echoFail ends with: a message that needs grpc-message's percent-encoding
// (%, non-ASCII, a line break) so that any re-encoding on the way shows.
const (
	failCode = codes.ResourceExhausted
	failMsg  = "quota exhausted: 100% of 3 calls — ünïcode\nsecond line"
)

func msgPattern(i int, size int) []byte {
	return bytes.Repeat([]byte{byte(i), byte(i >> 8), 'x'}, size/3+1)[:size]
}

// echoStreams serves every method of meshd.test.Echo as one stream handler.
func echoStreams(_ any, ss grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(ss)
	switch method {
	case echoUnary:
		var in []byte
		if err := ss.RecvMsg(&in); err != nil {
			return err
		}
		return ss.SendMsg(&in)
	case echoDownload:
		var in []byte
		if err := ss.RecvMsg(&in); err != nil {
			return err
		}
		if len(in) != 8 {
			return status.Errorf(codes.InvalidArgument, "want 8 bytes, got %d", len(in))
		}
		count, size := int(binary.BigEndian.Uint32(in)), int(binary.BigEndian.Uint32(in[4:]))
		for i := range count {
			m := msgPattern(i, size)
			if err := ss.SendMsg(&m); err != nil {
				return err
			}
		}
		return nil
	case echoUpload:
		h, n := sha256.New(), 0
		for {
			var in []byte
			err := ss.RecvMsg(&in)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			h.Write(in)
			n++
		}
		out := fmt.Appendf(nil, "%d %x", n, h.Sum(nil))
		return ss.SendMsg(&out)
	case echoChat:
		for {
			var in []byte
			err := ss.RecvMsg(&in)
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if err := ss.SendMsg(&in); err != nil {
				return err
			}
		}
	case echoFail:
		for i := range 3 {
			m := msgPattern(i, 100)
			if err := ss.SendMsg(&m); err != nil {
				return err
			}
		}
		ss.SetTrailer(metadata.Pairs("x-check", "after-messages", "x-check-bin", string([]byte{0, 1, 2, 0xff})))
		return status.Error(failCode, failMsg)
	}
	return status.Errorf(codes.Unimplemented, "no method %s", method)
}

// startEchoGRPC starts the meshd.test.Echo upstream and a meshd whose egress routes
// echo.t.local's meshd.test.Echo calls to it, and dials meshd with grpc-go.
func startEchoGRPC(t *testing.T) *grpc.ClientConn {
	t.Helper()
	up := testutil.StartGRPC(t, func(*grpc.Server) {}, grpc.UnknownServiceHandler(echoStreams), grpc.ForceServerCodec(rawCodec{}))
	srv, _ := meshDef{services: []svcDef{{name: "echo.t.local", node: "echo", port: up.Port, proto: "grpc", routes: []string{
		`{grpcRoute: {match: {serviceName: meshd.test.Echo}, action: {weightedTargets: [{virtualNode: echo, weight: 1}]}}}`,
	}}}}.start(t)
	return grpcDial(t, srv.EgressAddr(), "echo.t.local")
}

var (
	serverStreamDesc = &grpc.StreamDesc{ServerStreams: true}
	clientStreamDesc = &grpc.StreamDesc{ClientStreams: true}
	bidiStreamDesc   = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}
)

// TestGRPCStreamKinds: grpc-go's client and server talk through meshd in each of
// gRPC's four call shapes, with generated-code-free messages from 0 bytes to 1 MiB, and
// every message arrives intact and in order. (TestGRPC covers protobuf unary, a server
// stream and a bidi stream on grpc's own services; this one adds client streaming,
// message-by-message relay of a bidi stream and volume.)
func TestGRPCStreamKinds(t *testing.T) {
	cc := startEchoGRPC(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	force := grpc.ForceCodec(rawCodec{})

	// Unary: one request message and one response, of 0 bytes, 1 byte and 1 MiB.
	t.Run("unary", func(t *testing.T) {
		for _, size := range []int{0, 1, 1 << 20} {
			in, out := msgPattern(size, size), []byte(nil)
			if err := cc.Invoke(ctx, echoUnary, &in, &out, force); err != nil {
				t.Fatalf("%d bytes: %v", size, err)
			}
			if !bytes.Equal(in, out) {
				t.Fatalf("%d bytes: got %d bytes back, not the same", size, len(out))
			}
		}
	})

	// Server streaming: 200 messages of 32 KiB (6.4 MiB) reach the client in order and
	// intact, then a clean end (io.EOF, status OK).
	t.Run("server streaming", func(t *testing.T) {
		const count, size = 200, 32 << 10
		s, err := cc.NewStream(ctx, serverStreamDesc, echoDownload, force)
		if err != nil {
			t.Fatal(err)
		}
		req := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, count), size)
		if err := s.SendMsg(&req); err != nil {
			t.Fatal(err)
		}
		if err := s.CloseSend(); err != nil {
			t.Fatal(err)
		}
		for i := range count {
			var m []byte
			if err := s.RecvMsg(&m); err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
			if !bytes.Equal(m, msgPattern(i, size)) {
				t.Fatalf("message %d: %d bytes, not what the server sent", i, len(m))
			}
		}
		var m []byte
		if err := s.RecvMsg(&m); !errors.Is(err, io.EOF) {
			t.Fatalf("after %d messages: %v, want io.EOF (status OK)", count, err)
		}
	})

	// Client streaming: 64 messages of 64 KiB (4 MiB) reach the server in order and
	// intact (the server's count and SHA-256 of their concatenation match), and its one
	// answer comes after the client's half-close.
	t.Run("client streaming", func(t *testing.T) {
		const count, size = 64, 64 << 10
		s, err := cc.NewStream(ctx, clientStreamDesc, echoUpload, force)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		for i := range count {
			m := msgPattern(i, size)
			h.Write(m)
			if err := s.SendMsg(&m); err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
		}
		if err := s.CloseSend(); err != nil {
			t.Fatal(err)
		}
		var out []byte
		if err := s.RecvMsg(&out); err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("%d %s", count, hex.EncodeToString(h.Sum(nil))); string(out) != want {
			t.Fatalf("server received %q, want %q", out, want)
		}
		if err := s.RecvMsg(&out); !errors.Is(err, io.EOF) {
			t.Fatalf("after the answer: %v, want io.EOF", err)
		}
	})

	// Bidirectional streaming in lockstep: each message's echo arrives before the next
	// message is sent, so meshd relays every message as it comes in both directions
	// (nothing waits for more data or for the half-close); then a clean end.
	t.Run("bidi streaming", func(t *testing.T) {
		s, err := cc.NewStream(ctx, bidiStreamDesc, echoChat, force)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 100 {
			size := []int{1, 10, 1000, 16 << 10, 64 << 10}[i%5]
			m := msgPattern(i, size)
			if err := s.SendMsg(&m); err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
			var back []byte
			if err := s.RecvMsg(&back); err != nil {
				t.Fatalf("echo %d: %v", i, err)
			}
			if !bytes.Equal(back, m) {
				t.Fatalf("echo %d: %d bytes, not the %d sent", i, len(back), size)
			}
		}
		if err := s.CloseSend(); err != nil {
			t.Fatal(err)
		}
		var m []byte
		if err := s.RecvMsg(&m); !errors.Is(err, io.EOF) {
			t.Fatalf("after CloseSend: %v, want io.EOF", err)
		}
	})
}

// TestGRPCStatusInTrailersAfterMessages: a server stream that sends messages and then
// ends with a non-OK status (grpc-status, grpc-message in the trailers, with trailer
// metadata beside them) reaches the grpc-go client through meshd as the upstream sent
// it: every message, then the same code and the same message (percent-encoding,
// non-ASCII and a line break intact), and the trailer metadata.
func TestGRPCStatusInTrailersAfterMessages(t *testing.T) {
	cc := startEchoGRPC(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := cc.NewStream(ctx, serverStreamDesc, echoFail, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	req := []byte("go")
	if err := s.SendMsg(&req); err != nil {
		t.Fatal(err)
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		var m []byte
		if err := s.RecvMsg(&m); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !bytes.Equal(m, msgPattern(i, 100)) {
			t.Fatalf("message %d: not what the server sent", i)
		}
	}
	var m []byte
	err = s.RecvMsg(&m)
	st, ok := status.FromError(err)
	if !ok || st.Code() != failCode || st.Message() != failMsg {
		t.Fatalf("end of stream: %v, want code %v message %q", err, failCode, failMsg)
	}
	tr := s.Trailer()
	if got := tr.Get("x-check"); len(got) != 1 || got[0] != "after-messages" {
		t.Errorf("trailer x-check = %q, want [after-messages]", got)
	}
	if got := tr.Get("x-check-bin"); len(got) != 1 || got[0] != string([]byte{0, 1, 2, 0xff}) {
		t.Errorf("binary trailer x-check-bin = %q, want the 4 bytes sent", got)
	}
}
