package proxy_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy/forward"
)

// stallingHealth is a gRPC health server that goes silent: Watch sends one message and
// then waits for its stream to end; Check answers nothing until its call ends. Each
// records that it saw its context end, which is meshd cancelling the upstream call.
type stallingHealth struct {
	healthpb.UnimplementedHealthServer
	watchEnded atomic.Int64
	checkEnded atomic.Int64
}

func (s *stallingHealth) Watch(_ *healthpb.HealthCheckRequest, stream grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
	if err := stream.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}); err != nil {
		return err
	}
	<-stream.Context().Done()
	s.watchEnded.Add(1)
	return stream.Context().Err()
}

func (s *stallingHealth) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	<-ctx.Done()
	s.checkEnded.Add(1)
	return nil, ctx.Err()
}

// TestGRPCStreamTimeout: when meshd's own timeout cuts a gRPC server stream that has
// already sent its headers and a message, the client's stream ends with
// DEADLINE_EXCEEDED and meshd's reason (trailers grpc-status 4, grpc-message,
// x-meshd-error: upstream_timeout), not the INTERNAL or CANCELLED an RST_STREAM gives.
// The client sets no deadline of its own, so only meshd can have cut the call.
func TestGRPCStreamTimeout(t *testing.T) {
	h := &stallingHealth{}
	up := testutil.StartGRPC(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, h) })
	route := func(node, timeout string) []string {
		return []string{`{grpcRoute: {match: {serviceName: grpc.health.v1.Health}, action: {weightedTargets: [{virtualNode: ` +
			node + `, weight: 1}]}, timeout: ` + timeout + `}}`}
	}
	// Two services on the same upstream: one route bounds the whole call, the other
	// only the silences in it. The listener-level idle timeout is left at its default.
	srv, _ := meshDef{services: []svcDef{
		{name: "perreq.t.local", node: "perreq", port: up.Port, proto: "grpc",
			routes: route("perreq", `{perRequest: {unit: ms, value: 300}}`)},
		{name: "idle.t.local", node: "idle", port: up.Port, proto: "grpc",
			routes: route("idle", `{idle: {unit: ms, value: 300}}`)},
	}}.start(t)

	for _, tc := range []struct{ name, authority, reason string }{
		{"perRequest", "perreq.t.local", "request timeout"},
		{"idle", "idle.t.local", "idle timeout 300ms"},
	} {
		t.Run("stream "+tc.name, func(t *testing.T) {
			before := h.watchEnded.Load()
			hc := healthpb.NewHealthClient(grpcDial(t, srv.EgressAddr(), tc.authority))
			// No client deadline: a guard only, far beyond meshd's 300ms.
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			guard := time.AfterFunc(10*time.Second, cancel)
			defer guard.Stop()
			start := time.Now()
			stream, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if m, err := stream.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("first Watch message: %v %v", m, err)
			}
			_, err = stream.Recv()
			el := time.Since(start)
			st := status.Convert(err)
			if st.Code() != codes.DeadlineExceeded {
				t.Fatalf("Recv after the timeout: %v (code %v), want DeadlineExceeded", err, st.Code())
			}
			if !strings.Contains(st.Message(), "meshd") || !strings.Contains(st.Message(), "upstream_timeout") ||
				!strings.Contains(st.Message(), tc.reason) {
				t.Errorf("status message %q, want meshd's upstream_timeout reason mentioning %q", st.Message(), tc.reason)
			}
			if got := stream.Trailer().Get("x-meshd-error"); len(got) != 1 || got[0] != "upstream_timeout" {
				t.Errorf("trailer x-meshd-error = %q, want [upstream_timeout] (trailers %v)", got, stream.Trailer())
			}
			if el < 250*time.Millisecond || el > 5*time.Second {
				t.Errorf("stream ended after %v, want about 300ms", el)
			}
			eventually(t, "the upstream Watch to be cancelled", func() bool { return h.watchEnded.Load() > before })
		})
	}

	// The same on the wire, with a plain h2c client: the stream ends cleanly (END_STREAM
	// on a trailers frame, so the body reads to EOF, no RST_STREAM) with exactly meshd's
	// trailers.
	for _, tc := range []struct{ name, host string }{{"perRequest", "perreq.t.local"}, {"idle", "idle.t.local"}} {
		t.Run("h2c wire "+tc.name, func(t *testing.T) {
			client := testutil.H2CClient(t, srv.EgressAddr())
			// An empty HealthCheckRequest in gRPC framing: uncompressed, length 0.
			req := newReq(t, "POST", "http://"+tc.host+"/grpc.health.v1.Health/Watch", bytes.NewReader(make([]byte, 5)))
			req.Header.Set("Content-Type", "application/grpc")
			req.Header.Set("Te", "trailers")
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("body after %d bytes: %v, want a clean end with trailers", len(body), err)
			}
			if resp.StatusCode != http.StatusOK || len(body) == 0 || resp.Header.Get("Grpc-Status") != "" {
				t.Fatalf("status %d, %d body bytes, header grpc-status %q: want 200, the first message, status in trailers",
					resp.StatusCode, len(body), resp.Header.Get("Grpc-Status"))
			}
			want := map[string]string{"Grpc-Status": "4", forward.HeaderError: forward.CodeTimeout}
			for k, v := range want {
				if got := resp.Trailer.Values(k); len(got) != 1 || got[0] != v {
					t.Errorf("trailer %s = %q, want [%s] (trailers %v)", k, got, v, resp.Trailer)
				}
			}
			if m := resp.Trailer.Get("Grpc-Message"); !strings.Contains(m, "upstream_timeout") {
				t.Errorf("trailer grpc-message %q, want meshd's upstream_timeout reason", m)
			}
		})
	}

	// The control: a unary call whose response head never comes is answered by meshd
	// itself, trailers-only, with DEADLINE_EXCEEDED (this path is not CopyResponse's).
	t.Run("unary perRequest", func(t *testing.T) {
		before := h.checkEnded.Load()
		hc := healthpb.NewHealthClient(grpcDial(t, srv.EgressAddr(), "perreq.t.local"))
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		guard := time.AfterFunc(10*time.Second, cancel)
		defer guard.Stop()
		var trailer metadata.MD
		_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Trailer(&trailer))
		if st := status.Convert(err); st.Code() != codes.DeadlineExceeded || !strings.Contains(st.Message(), "meshd") {
			t.Fatalf("Check: %v (code %v), want DeadlineExceeded from meshd", err, st.Code())
		}
		if got := trailer.Get("x-meshd-error"); len(got) != 1 || got[0] != "upstream_timeout" {
			t.Errorf("x-meshd-error = %q, want [upstream_timeout]", got)
		}
		eventually(t, "the upstream Check to be cancelled", func() bool { return h.checkEnded.Load() > before })
	})
}
