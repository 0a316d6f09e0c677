package proxy

import (
	"net/http"
	"strconv"

	"github.com/meshd/meshd/resilience"
)

// statsView is GET /stats: every resilience counter, per cluster, per route and per
// ingress listener (docs/resilience.md#counters names them). A metrics endpoint will
// export the same values; until then this is where they are read.
type statsView struct {
	Version   string                                 `json:"version"`
	Clusters  map[string]resilience.CountersSnapshot `json:"clusters"`
	Routes    map[string]resilience.CountersSnapshot `json:"routes"`
	Listeners map[string]resilience.CountersSnapshot `json:"listeners,omitempty"`
}

// handleStats serves GET /stats from the snapshot in force. It runs on the admin
// listener, off the request path.
func (s *Server) handleStats(w http.ResponseWriter, _ *http.Request) {
	snap := s.snap.Load()
	if snap == nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "no config applied yet"})
		return
	}
	v := statsView{
		Version:  snap.Version,
		Clusters: make(map[string]resilience.CountersSnapshot, len(snap.clusters)),
		Routes:   map[string]resilience.CountersSnapshot{},
	}
	for name, c := range snap.clusters {
		v.Clusters[name] = c.counters.Snapshot()
	}
	if r := snap.res; r != nil {
		for _, p := range r.routes {
			v.Routes[p.key] = p.counters.Snapshot()
		}
		if len(r.ingress) > 0 {
			v.Listeners = make(map[string]resilience.CountersSnapshot, len(r.ingress))
			for port, ll := range r.ingress {
				v.Listeners["ingress:"+strconv.Itoa(port)] = ll.counters.Snapshot()
			}
		}
	}
	writeJSON(w, http.StatusOK, v)
}

// ClusterResilienceView is the resilience part of a cluster on /clusters.
type ClusterResilienceView struct {
	// Panic is true when too few endpoints are available and picks spread over all.
	Panic bool `json:"panic"`
	// AvailableEndpoints are healthy and not ejected.
	AvailableEndpoints int `json:"availableEndpoints"`
	// Breaker is the circuit breaker state (closed, half-open, open); empty without one.
	Breaker string `json:"breaker,omitempty"`
	// RetriesInFlight are retries holding the cluster's retry budget now.
	RetriesInFlight int64                       `json:"retriesInFlight"`
	Counters        resilience.CountersSnapshot `json:"counters"`
}

// resilienceView is c's part of /clusters; per-endpoint health, ejection and in-flight
// counts are in the endpoint list (balancer.EndpointStatus).
func (c *cluster) resilienceView() *ClusterResilienceView {
	v := &ClusterResilienceView{
		Panic:              c.bal.Panic(),
		AvailableEndpoints: c.bal.Available(),
		RetriesInFlight:    c.budget.Outstanding(),
		Counters:           c.counters.Snapshot(),
	}
	if c.breaker != nil {
		v.Breaker = c.breaker.State().String()
	}
	return v
}

// effectiveRetryPolicies spells out the retry policy in force for each route, App
// Mesh's hidden default included, for GET /config (keys "<service>/<route>", sorted
// by encoding/json).
func (s *Snapshot) effectiveRetryPolicies() map[string]EffectiveRetryPolicy {
	if s == nil || s.res == nil {
		return nil
	}
	out := make(map[string]EffectiveRetryPolicy, len(s.res.routes))
	for _, p := range s.res.routes {
		out[p.key] = EffectiveRetryPolicy{RetryView: p.retry.View(), Default: p.isDefault}
	}
	return out
}

// EffectiveRetryPolicy is one route's retry policy as /config shows it.
type EffectiveRetryPolicy struct {
	resilience.RetryView
	// Default is true when the route sets no retryPolicy and App Mesh's default applies.
	Default bool `json:"default,omitempty"`
}
