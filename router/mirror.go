package router

import "math"

// Mirror is a route's mirror: the cluster that receives the copies and the share of
// requests copied.
type Mirror struct {
	Cluster string  // as a Target's Cluster
	Percent float64 // (0, 100]
}

// Threshold is the sampling bound of Percent over a uniform 64-bit draw: a request is
// copied when its draw is below it. 100 % copies every draw.
func (m *Mirror) Threshold() uint64 {
	if m.Percent >= 100 {
		return math.MaxUint64
	}
	if m.Percent <= 0 {
		return 0
	}
	return uint64(m.Percent / 100 * (1 << 64))
}
