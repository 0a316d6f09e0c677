package proxy

import "time"

// ClusterTimeouts returns the listener timeouts (perRequest, idle; 0: none) compiled
// into cluster name of the snapshot in force, for tests that check no default sneaks in.
func ClusterTimeouts(s *Server, name string) (perRequest, idle time.Duration) {
	c := s.snap.Load().clusters[name]
	if c == nil {
		return -1, -1
	}
	return c.perRequest, c.idle
}

// GRPCMessageEncode exposes the grpc-message encoder to the external tests.
var GRPCMessageEncode = grpcMessageEncode
