package proxy

import (
	"time"

	"github.com/meshd/meshd/proxy/forward"
)

// Test seams for the external tests (package proxy_test).

// ClusterTimeouts returns the listener timeouts (perRequest, idle; 0: none) compiled
// into cluster name of the snapshot in force, for tests that check no default sneaks in.
func ClusterTimeouts(s *Server, name string) (perRequest, idle time.Duration) {
	c := s.state.Load().Cluster(name)
	if c == nil {
		return -1, -1
	}
	return c.Timeouts()
}

// GRPCMessageEncode exposes the grpc-message encoder to the external tests.
var GRPCMessageEncode = forward.GRPCMessageEncode

// SweepOutliers returns ejected endpoints whose time is up, in every cluster, now
// instead of waiting for the cluster's ticker, so tests drive time with a fake clock.
func SweepOutliers(s *Server) {
	for _, c := range s.state.Load().Clusters() {
		c.SweepOutliers()
	}
}

// RunHealthChecks runs one health check round in every cluster and waits for it.
func RunHealthChecks(s *Server) {
	for _, c := range s.state.Load().Clusters() {
		c.RunHealthChecks()
	}
}

// OpenConns is the number of downstream connections meshd holds (tracked for the
// drain), for tests that check meshd let go of hostile clients' connections.
func OpenConns(s *Server) int { return s.conns.Len() }
