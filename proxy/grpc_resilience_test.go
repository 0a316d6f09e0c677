package proxy_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/meshd/meshd/internal/testutil"
)

// unavailableHealth answers every Check with UNAVAILABLE (a trailers-only response).
type unavailableHealth struct {
	healthpb.UnimplementedHealthServer
	calls atomic.Int64
}

func (u *unavailableHealth) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	u.calls.Add(1)
	return nil, status.Error(codes.Unavailable, "draining")
}

// TestGRPCRetryOnUnavailable: under the default policy a call answered UNAVAILABLE
// (trailers-only) is retried on the other endpoint.
func TestGRPCRetryOnUnavailable(t *testing.T) {
	bad := &unavailableHealth{}
	badUp := testutil.StartGRPC(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, bad) })
	good := health.NewServer()
	goodUp := testutil.StartGRPC(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, good) })
	y := strings.ReplaceAll(resMesh([]int{badUp.Port, goodUp.Port}, "", ""), "port: 8080, protocol: http}", "port: 8080, protocol: grpc}")
	srv := testutil.StartMeshd(t, "app", y)
	hc := healthpb.NewHealthClient(grpcDial(t, srv.EgressAddr(), "svc.t.local"))
	for i := range 10 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("call %d: %v %v, want SERVING after a retry", i, resp, err)
		}
	}
	if bad.calls.Load() == 0 {
		t.Fatal("the UNAVAILABLE endpoint was never picked")
	}
	if r := readStats(t, srv).Clusters["svc"]["retries"]; r != bad.calls.Load() {
		t.Errorf("retries = %d, want %d", r, bad.calls.Load())
	}
}
