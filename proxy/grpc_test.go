package proxy_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

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
	// Calls by grpc-status, for a canary's error rate: OK are the successful Check and
	// the reflection stream; errors the NotFound in the trailers and the cancelled Watch.
	t.Run("grpc calls counted", func(t *testing.T) {
		want := map[string]float64{"ok": 2, "error": 2}
		got := map[string]float64{}
		for deadline := time.Now().Add(5 * time.Second); ; {
			f := scrape(t, srv, "/stats/prometheus")
			for r := range want {
				got[r] = 0
				if m := f.metric("meshd_cluster_grpc_calls_total", lbls{"virtual_node": "grpcsvc", "cluster": "grpcsvc", "grpc_result": r}); m != nil {
					got[r] = m.GetCounter().GetValue()
				}
			}
			if got["ok"] == want["ok"] && got["error"] == want["error"] {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("meshd_cluster_grpc_calls_total %v, want %v", got, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
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
