package proxy

import (
	"context"
	"testing"
)

// TestH2CleanPathRecycles: an HTTP/2 request that ends on the clean path gives its
// per-request object (telemetry record, RoundTrip, forwarding values: 1,352 bytes, half
// of what an h2c request allocated) back for the next one, and a unary gRPC call (a
// request body) its stream too once the upstream transport closed the attempt's body
// (ReleaseBody). Allocations per request: 8 → 7 to an HTTP/1.1 upstream, 9 → 8 to an
// HTTP/2 one (BenchmarkForwardH2C), 25 → 23 per gRPC call (BenchmarkForwardGRPC).
// Then the request's header map is kept by its connection for the next request
// (ReleaseHeader), and an HTTP/1.1 upstream's response with its header map goes back
// to its transport (upstream.ReleaseResponse): 7 → 2, 8 → 6 and 23 → 21. A gRPC
// call's trailers then cost no map on either side (the server gathers them in a slice,
// the client adopts the decoder's map, the "Trailer:" keys of gRPC's are constants):
// 21 → 16.
func TestH2CleanPathRecycles(t *testing.T) {
	for _, tc := range []struct {
		name   string
		proto  string
		start  func(testing.TB) (string, func())
		client func(testing.TB, string) func()
		want   float64
		// race: the race detector's own allocations per request and the objects its
		// sync.Pool drops on purpose (measured: 5, 8 and 24 with every recycling on).
		race float64
	}{
		{"h1-upstream", "http", rawUpstream, rawH2CClient, 2, 4},
		{"h2-upstream", "http2", rawH2Upstream, rawH2CClient, 6, 3},
		{"grpc", "grpc", rawGRPCUpstream, rawGRPCClient, 16, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, stop := tc.start(t)
			defer stop()
			s := benchServerProto(t, addr, tc.proto, Options{})
			defer s.Shutdown(context.Background())
			roundTrip := tc.client(t, s.EgressAddr())
			for range 200 {
				roundTrip()
			}
			// sync.Pool drops a share of what it is given under -race on purpose, and
			// AllocsPerRun rounds the mean down.
			want := tc.want
			if raceOn {
				want += tc.race
			}
			if n := testing.AllocsPerRun(1000, roundTrip); n > want {
				t.Fatalf("%.0f allocations per request, want %.0f (the per-request object is recycled)", n, want)
			}
		})
	}
}
