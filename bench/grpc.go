package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// GRPCMethod is the unary method the gRPC load calls and the built-in upstream
// serves: it takes a google.protobuf.BytesValue of --req-body bytes and answers one of
// --resp-body bytes. There is no generated code: the messages are protobuf's
// well-known BytesValue, so a grpc-go client calls it with ClientConn.Invoke.
const GRPCMethod = "/meshbench.Bench/Unary"

// grpcCodeNames are the gRPC status codes by their names in the gRPC specification;
// a failed call counts in Result.Errors as "grpc_" + name.
var grpcCodeNames = [...]string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
	"UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

// grpcKind is the Result.Errors key of a gRPC status code.
func grpcKind(c codes.Code) string {
	if int(c) < len(grpcCodeNames) {
		return "grpc_" + grpcCodeNames[c]
	}
	return "grpc_" + strconv.Itoa(int(c))
}

// grpcUnavailable is the kind a call gets when no connection could be made (and
// when a server or proxy answers UNAVAILABLE); a closed loop pauses after it as
// after a refused connection.
var grpcUnavailable = grpcKind(codes.Unavailable)

// grpcConn is one connection's worth of gRPC load: a grpc-go ClientConn (one
// address, so one HTTP/2 connection) shared by the Streams slots of the connection,
// each with one unary call in flight on it.
type grpcConn struct {
	t      target
	method string
	req    *wrapperspb.BytesValue
	peak   atomic.Int64
	flight atomic.Int64

	mu   sync.Mutex
	cc   *grpc.ClientConn
	refs int
}

// newGRPCConn returns the requesters of one gRPC connection carrying streams
// concurrent calls.
func newGRPCConn(t target, streams int) []requester {
	g := &grpcConn{t: t, method: t.path, refs: streams,
		req: &wrapperspb.BytesValue{Value: bytes.Repeat([]byte{'x'}, t.reqBody)}}
	if g.method == "" || g.method == "/" {
		g.method = GRPCMethod
	}
	out := make([]requester, streams)
	for i := range out {
		out[i] = &grpcSlot{g: g, resp: &wrapperspb.BytesValue{}}
	}
	return out
}

func (g *grpcConn) client() (*grpc.ClientConn, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cc != nil {
		return g.cc, nil
	}
	addr := g.t.addr
	// passthrough: the target is only the authority (:authority = the Host of the
	// other protocols); the connection goes to addr.
	creds := insecure.NewCredentials()
	if g.t.tls != nil {
		creds = credentials.NewTLS(g.t.tlsFor("h2"))
	}
	cc, err := grpc.NewClient("passthrough:///"+g.t.host,
		grpc.WithTransportCredentials(creds),
		grpc.WithUserAgent("meshbench"),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", addr)
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetNoDelay(true)
			}
			return c, err
		}))
	if err != nil {
		return nil, &reqError{kind: ErrProtocol, err: err}
	}
	cc.Connect()
	g.cc = cc
	return cc, nil
}

func (g *grpcConn) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.refs--
	if g.refs == 0 && g.cc != nil {
		_ = g.cc.Close()
		g.cc = nil
	}
}

// grpcSlot is one worker's call slot on a shared ClientConn.
type grpcSlot struct {
	g      *grpcConn
	resp   *wrapperspb.BytesValue
	closed bool
}

func (s *grpcSlot) close() {
	if !s.closed {
		s.closed = true
		s.g.release()
	}
}

func (s *grpcSlot) peakStreams() int { return int(s.g.peak.Load()) }

// connect makes the shared ClientConn and waits until it is ready (its slots all wait
// on the same one).
func (s *grpcSlot) connect(ctx context.Context, deadline time.Time) error {
	cc, err := s.g.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	for {
		st := cc.GetState()
		if st == connectivity.Ready {
			return nil
		}
		if st == connectivity.Idle {
			cc.Connect()
		}
		if !cc.WaitForStateChange(ctx, st) {
			return fmt.Errorf("gRPC connection to %s: %w (state %s)", s.g.t.addr, ctx.Err(), st)
		}
	}
}

// do makes one unary call. Its status is the gRPC status code: 0 (OK) on success;
// any other code is an error of kind grpc_<CODE>.
func (s *grpcSlot) do(ctx context.Context, deadline time.Time) (int, error) {
	cc, err := s.g.client()
	if err != nil {
		return 0, err
	}
	rctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	n := s.g.flight.Add(1)
	for {
		p := s.g.peak.Load()
		if n <= p || s.g.peak.CompareAndSwap(p, n) {
			break
		}
	}
	err = cc.Invoke(rctx, s.g.method, s.g.req, s.resp)
	s.g.flight.Add(-1)
	if err != nil {
		c := status.Code(err)
		return int(c), &reqError{kind: grpcKind(c), err: err}
	}
	return int(codes.OK), nil
}

// GRPC on the built-in upstream: a hand-written answer over its h2c server (no
// grpc-go server, whose cost would be the upstream's, not the proxy's).

// grpcResponse builds the length-prefixed message GRPCMethod answers: a BytesValue
// of n bytes.
func grpcResponse(n int) []byte {
	msg, err := proto.Marshal(wrapperspb.Bytes(bytes.Repeat([]byte{'x'}, n)))
	if err != nil {
		panic(err) // a BytesValue always marshals
	}
	return grpcFrame(msg)
}

// grpcFrame prefixes msg with the gRPC message header (not compressed, length).
func grpcFrame(msg []byte) []byte {
	out := make([]byte, 5, 5+len(msg))
	out[1], out[2], out[3], out[4] = byte(len(msg)>>24), byte(len(msg)>>16), byte(len(msg)>>8), byte(len(msg))
	return append(out, msg...)
}

var errGRPCFraming = errors.New("request is not one uncompressed length-prefixed message")

// checkGRPCRequest checks that body is exactly one uncompressed gRPC message.
func checkGRPCRequest(body []byte) error {
	if len(body) < 5 || body[0] != 0 {
		return errGRPCFraming
	}
	n := int(body[1])<<24 | int(body[2])<<16 | int(body[3])<<8 | int(body[4])
	if n != len(body)-5 {
		return fmt.Errorf("%w: header says %d bytes, %d follow", errGRPCFraming, n, len(body)-5)
	}
	return nil
}

// isGRPC says whether a request is gRPC (RFC-less but universal: the content type).
func isGRPC(r *http.Request) bool {
	return strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
}

var grpcBodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// serveGRPC answers GRPCMethod with u.grpcResp and status OK; another method gets
// UNIMPLEMENTED and a malformed request INTERNAL, both as trailers-only responses.
func (u *upstream) serveGRPC(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/grpc")
	if r.Method != http.MethodPost || r.URL.Path != GRPCMethod {
		_, _ = io.Copy(io.Discard, r.Body)
		h.Set("Grpc-Status", strconv.Itoa(int(codes.Unimplemented)))
		h.Set("Grpc-Message", "unknown method "+r.Method+" "+r.URL.Path)
		w.WriteHeader(http.StatusOK)
		return
	}
	buf := grpcBodyPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer grpcBodyPool.Put(buf)
	_, err := buf.ReadFrom(r.Body)
	if err == nil {
		err = checkGRPCRequest(buf.Bytes())
	}
	if err != nil {
		h.Set("Grpc-Status", strconv.Itoa(int(codes.Internal)))
		h.Set("Grpc-Message", err.Error())
		w.WriteHeader(http.StatusOK)
		return
	}
	u.stall(r.Context())
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(u.grpcResp)
	h.Set(http.TrailerPrefix+"Grpc-Status", "0")
	if st := u.cfg.Stats; st != nil {
		st.GRPCRequests.Add(1)
	}
}
