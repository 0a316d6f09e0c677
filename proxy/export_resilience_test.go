package proxy

// Test seams for the resilience integration tests (package proxy_test): run the
// periodic work of every cluster now instead of waiting for its ticker, so tests drive
// time with a fake Options.Clock.

// SweepOutliers returns ejected endpoints whose time is up, in every cluster.
func SweepOutliers(s *Server) {
	for _, c := range s.snap.Load().clusters {
		c.sweepOutliers()
	}
}

// RunHealthChecks runs one health check round in every cluster and waits for it.
func RunHealthChecks(s *Server) {
	for _, c := range s.snap.Load().clusters {
		c.health.round()
	}
}
