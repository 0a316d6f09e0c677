package resilience

// DefaultPanicThresholdPercent is Envoy's healthy_panic_threshold default: below 50%
// healthy endpoints, the cluster is in panic.
const DefaultPanicThresholdPercent = 50

// PanicMode reports whether a cluster with healthy of total endpoints available (healthy
// by active checks and not ejected) should ignore availability and spread requests over
// all endpoints. When health checks themselves are broken, or most endpoints are
// ejected, sending everything to the few left (or to none) turns a partial failure into
// a full one; Envoy's panic threshold trades some failed requests for not black-holing
// the service. thresholdPercent ≤ 0 disables panic mode (Envoy's 0%); callers pass
// DefaultPanicThresholdPercent when the config sets none. An empty cluster is not in
// panic (there is nothing to spread over).
func PanicMode(healthy, total, thresholdPercent int) bool {
	if total <= 0 || thresholdPercent <= 0 {
		return false
	}
	return 100*int64(healthy) < int64(thresholdPercent)*int64(total)
}
