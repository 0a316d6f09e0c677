package proxy

// SetMirrorDraw makes the server sample mirrored requests with draw instead of
// math/rand, for tests that need an exact share. Call it before Start.
func SetMirrorDraw(s *Server, draw func() uint64) { s.env.Mirrors.Draw = draw }

// MirrorInFlight is the number of mirror copies in flight to cluster now.
func MirrorInFlight(s *Server, cluster string) int64 {
	for _, p := range s.state.Load().Policies() {
		if p == nil || p.Mirror() == nil || p.Mirror().Cluster().Name() != cluster {
			continue
		}
		return p.Mirror().InFlight()
	}
	return -1
}
