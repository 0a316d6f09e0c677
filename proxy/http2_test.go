package proxy_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

func TestH2C(t *testing.T) {
	h1 := testutil.StartHTTP(t, echoHandler("h1"))
	h2 := testutil.StartH2C(t, echoHandler("h2"))
	srv, h1client := meshDef{services: []svcDef{
		{name: "h1.t.local", node: "h1", port: h1.Port},
		{name: "h2.t.local", node: "h2", port: h2.Port, proto: "http2", routes: []string{
			`{http2Route: {match: {prefix: /}, action: {weightedTargets: [{virtualNode: h2, weight: 1}]}}}`}},
	}}.start(t)
	h2client := testutil.H2CClient(t, srv.EgressAddr())
	resp, err := h2client.Get("http://h1.t.local/proto")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("downstream spoke %s, want h2c", resp.Proto)
	}

	for _, tc := range []struct {
		name, url, upstream, proto string
		client                     *http.Client
	}{
		{"h2c to http1", "http://h1.t.local/a", "h1", "HTTP/1.1", h2client},
		{"h2c to h2c", "http://h2.t.local/b", "h2", "HTTP/2.0", h2client},
		{"http1 to h2c", "http://h2.t.local/c", "h2", "HTTP/2.0", h1client},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := 0; i < 3; i++ {
				req := newReq(t, "POST", tc.url+"?i=1", strings.NewReader("payload"))
				req.Header.Set("X-Request-Id", "rid")
				info := getEcho(t, tc.client, req)
				if info.Name != tc.upstream || info.Proto != tc.proto || info.Body != "payload" ||
					info.Header.Get("X-Request-Id") != "rid" || info.Header.Get("X-Forwarded-For") != "127.0.0.1" {
					t.Fatalf("got %s %s body %q headers %v, want %s over %s", info.Name, info.Proto, info.Body, info.Header, tc.upstream, tc.proto)
				}
				if !strings.HasSuffix(info.Path, "?i=1") {
					t.Fatalf("path %q lost its query", info.Path)
				}
			}
		})
	}
	if h2.Accepted() != 1 {
		t.Fatalf("h2c upstream accepted %d connections, want 1 shared", h2.Accepted())
	}
}

func grpcDial(t *testing.T, egress, authority string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+authority,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", egress)
		}))
	if err != nil {
		t.Fatalf("grpc client: %v", err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func TestGRPC(t *testing.T) {
	hs := health.NewServer()
	up := testutil.StartGRPC(t, func(s *grpc.Server) {
		healthpb.RegisterHealthServer(s, hs)
		reflection.Register(s)
	})
	t.Cleanup(hs.Shutdown)
	srv, _ := meshDef{services: []svcDef{{name: "grpc.t.local", node: "grpcsvc", port: up.Port, proto: "grpc", routes: []string{
		`{priority: 0, grpcRoute: {match: {serviceName: grpc.health.v1.Health}, action: {weightedTargets: [{virtualNode: grpcsvc, weight: 1}]}}}`,
		`{priority: 1, grpcRoute: {match: {serviceName: grpc.reflection.v1.ServerReflection}, action: {weightedTargets: [{virtualNode: grpcsvc, weight: 1}]}}}`,
	}}}}.start(t)
	cc := grpcDial(t, srv.EgressAddr(), "grpc.t.local")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := healthpb.NewHealthClient(cc)

	t.Run("unary", func(t *testing.T) {
		resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("Check: %v %v", resp, err)
		}
		// A non-OK grpc-status travels in the trailers.
		_, err = client.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"})
		if status.Code(err) != codes.NotFound {
			t.Fatalf("Check(nope): %v, want NotFound from the trailers", err)
		}
	})

	t.Run("server streaming", func(t *testing.T) {
		hs.SetServingStatus("svc", healthpb.HealthCheckResponse_SERVING)
		wctx, wcancel := context.WithCancel(ctx)
		defer wcancel()
		stream, err := client.Watch(wctx, &healthpb.HealthCheckRequest{Service: "svc"})
		if err != nil {
			t.Fatal(err)
		}
		if m, err := stream.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("first Watch message %v %v", m, err)
		}
		hs.SetServingStatus("svc", healthpb.HealthCheckResponse_NOT_SERVING)
		if m, err := stream.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Fatalf("second Watch message %v %v", m, err)
		}
		wcancel()
		if _, err := stream.Recv(); status.Code(err) != codes.Canceled {
			t.Fatalf("after cancel: %v", err)
		}
	})

	t.Run("bidi streaming", func(t *testing.T) {
		stream, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			if err := stream.Send(&reflectionpb.ServerReflectionRequest{
				MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{ListServices: "*"}}); err != nil {
				t.Fatal(err)
			}
			resp, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, s := range resp.GetListServicesResponse().GetService() {
				names = append(names, s.GetName())
			}
			if !strings.Contains(strings.Join(names, ","), "grpc.health.v1.Health") {
				t.Fatalf("reflection listed %v", names)
			}
		}
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("after CloseSend: %v, want EOF", err)
		}
	})

	t.Run("unmatched service", func(t *testing.T) {
		err := cc.Invoke(ctx, "/other.Service/Call", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
		// meshd's own 404 no_route, in gRPC shape: UNIMPLEMENTED with meshd's reason.
		if st := status.Convert(err); st.Code() != codes.Unimplemented || !strings.Contains(st.Message(), "no route matched") {
			t.Fatalf("a call no grpcRoute matches: %v, want UNIMPLEMENTED \"no route matched\"", err)
		}
	})
}

func TestWebSocket(t *testing.T) {
	up := testutil.StartHTTP(t, websocket.Handler(func(ws *websocket.Conn) {
		// Echo whole messages (io.Copy would re-frame a large message in read-sized pieces).
		for {
			var msg string
			if websocket.Message.Receive(ws, &msg) != nil || websocket.Message.Send(ws, "echo:"+msg) != nil {
				return
			}
		}
	}))
	srv, _ := meshDef{services: []svcDef{{name: "ws.t.local", node: "ws", port: up.Port}}}.start(t)

	conn, err := net.Dial("tcp", srv.EgressAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	cfg, err := websocket.NewConfig("ws://ws.t.local/ws", "http://ws.t.local/")
	if err != nil {
		t.Fatal(err)
	}
	ws, err := websocket.NewClient(cfg, conn)
	if err != nil {
		t.Fatalf("websocket handshake through meshd: %v", err)
	}
	defer ws.Close()
	for i, msg := range []string{"one", "two", strings.Repeat("x", 70000), "four"} {
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil || got != "echo:"+msg {
			t.Fatalf("message %d: got %d bytes (%v), want %d", i, len(got), err, len(msg))
		}
	}
}

// TestH1ChunkedTrailersToH2 sends an HTTP/1.1 chunked request with a trailer to an
// HTTP/2 upstream: the trailer must arrive, and the connection must stay in sync for
// the next request (the trailer section is consumed, not parsed as a request).
func TestH1ChunkedTrailersToH2(t *testing.T) {
	h2 := testutil.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = io.WriteString(w, string(b)+"|"+r.Trailer.Get("X-Sum"))
	}))
	srv, _ := meshDef{services: []svcDef{
		{name: "h2.t.local", node: "h2", port: h2.Port, proto: "http2", routes: []string{
			`{http2Route: {match: {prefix: /}, action: {weightedTargets: [{virtualNode: h2, weight: 1}]}}}`}},
	}}.start(t)
	conn, err := net.Dial("tcp", srv.EgressAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = io.WriteString(conn, "POST /t HTTP/1.1\r\nHost: h2.t.local\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"+
		"5\r\nhello\r\n0\r\nX-Sum: 42\r\n\r\n"+
		"GET /second HTTP/1.1\r\nHost: h2.t.local\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	for i, want := range []string{"hello|42", "|"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != want {
			t.Fatalf("response %d: %d %q, want 200 %q", i, resp.StatusCode, b, want)
		}
	}
}

func TestGRPCMessageEncoding(t *testing.T) {
	for in, want := range map[string]string{
		"plain text":  "plain text",
		"100% done":   "100%25 done",
		"tab\there":   "tab%09here",
		"naïve":       "na%C3%AFve",
		"line\nbreak": "line%0Abreak",
		"":            "",
	} {
		if got := proxy.GRPCMessageEncode(in); got != want {
			t.Errorf("grpcMessageEncode(%q) = %q, want %q", in, got, want)
		}
	}
}
