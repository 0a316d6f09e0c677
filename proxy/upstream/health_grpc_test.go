package upstream

import (
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meshd/meshd/balancer"
	"github.com/meshd/meshd/config"
)

// An endpoint removed while its gRPC check is running (after the round took its
// state, before the check stored the connection it created) must not keep that
// connection: nothing would ever close it once its state left the checker.
func TestGRPCHealthCheckConnOfRemovedEndpointIsClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, health.NewServer())
	served := make(chan error, 1)
	go func() { served <- gs.Serve(ln) }()
	defer func() { gs.Stop(); <-served }()

	h := newHealthChecker(&Cluster{}, config.HealthCheck{Protocol: config.ProtoGRPC,
		IntervalMillis: 5000, TimeoutMillis: 5000, HealthyThreshold: 2, UnhealthyThreshold: 2})
	defer h.close()
	ep := &balancer.Endpoint{Address: ln.Addr().String()}
	h.add(ep)
	h.mu.Lock()
	st := h.eps[ep] // what round hands to check
	h.mu.Unlock()
	h.remove(ep) // the balancer drops the endpoint mid-round

	if err := h.check(ep.Address, st); err != nil {
		t.Fatalf("check against a serving health server: %v", err)
	}
	h.mu.Lock()
	leaked := st.conn
	h.mu.Unlock()
	if leaked != nil {
		_ = leaked.Close()
		t.Fatal("the check kept a connection for an endpoint already removed")
	}
}
