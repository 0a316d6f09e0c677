package proxy

import (
	"encoding/json"
	"net/http"
	"sort"
	"time"

	"github.com/meshd/meshd/balancer"
)

// adminHandler serves the admin API. It runs on its own listener (127.0.0.1:9901 by
// default) through net/http: none of it is on the request path.
func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", s.handleReady)
	mux.HandleFunc("GET /server_info", s.handleServerInfo)
	mux.HandleFunc("GET /config", s.guarded(s.handleConfig))
	mux.HandleFunc("PUT /config", s.guarded(s.handlePutConfig))
	mux.HandleFunc("POST /config/validate", s.guarded(s.handleValidateConfig))
	mux.HandleFunc("GET /config/history", s.guarded(s.handleConfigHistory))
	mux.HandleFunc("GET /debug/route", s.guarded(s.handleDebugRoute))
	mux.HandleFunc("GET /clusters", s.handleClusters)
	mux.HandleFunc("GET /stats", s.handleStats)
	return mux
}

func (s *Server) handleReady(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !s.Ready() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(s.state() + "\n"))
		return
	}
	_, _ = w.Write([]byte("LIVE\n"))
}

// state uses Envoy's server states, so App Mesh health checks that grep for LIVE in
// /server_info keep working.
func (s *Server) state() string {
	switch {
	case s.draining.Load():
		return "DRAINING"
	case s.ready.Load():
		return "LIVE"
	case s.snap.Load() != nil:
		return "INITIALIZING"
	default:
		return "PRE_INITIALIZING"
	}
}

type serverInfo struct {
	State         string `json:"state"`
	Version       string `json:"version"`
	Node          string `json:"node"`
	ConfigVersion string `json:"config_version,omitempty"`
	UptimeSeconds int64  `json:"uptime_current_epoch"`
}

func (s *Server) handleServerInfo(w http.ResponseWriter, _ *http.Request) {
	info := serverInfo{State: s.state(), Version: s.opts.Version, Node: s.opts.Node}
	if snap := s.snap.Load(); snap != nil {
		info.ConfigVersion = snap.Version
	}
	if !s.started.IsZero() {
		info.UptimeSeconds = int64(time.Since(s.started).Seconds())
	}
	writeJSON(w, http.StatusOK, info)
}

type configView struct {
	Version   string    `json:"version"`
	Source    string    `json:"source"`
	AppliedAt time.Time `json:"appliedAt"`
	Node      string    `json:"node"`
	// Reloads counts applies and rejections; LastRejected is the latest rejected
	// attempt with its errors (the config shown is the one still in force).
	Reloads      ReloadStats `json:"reloads"`
	LastRejected *Attempt    `json:"lastRejected,omitempty"`
	Config       any         `json:"config"`
	// EffectiveRetryPolicies shows each route's retry policy, App Mesh's default included.
	EffectiveRetryPolicies map[string]EffectiveRetryPolicy `json:"effectiveRetryPolicies"`
}

// handleConfig answers the config in force with its version as the ETag, which a
// writer sends back as If-Match on PUT /config.
func (s *Server) handleConfig(w http.ResponseWriter, _ *http.Request) {
	snap := s.snap.Load()
	if snap == nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "no config applied yet"})
		return
	}
	view := configView{
		Version: snap.Version, Source: snap.Source, AppliedAt: snap.AppliedAt, Node: snap.Node,
		Reloads: s.ReloadStats(), Config: snap.Config, EffectiveRetryPolicies: snap.effectiveRetryPolicies(),
	}
	if a, ok := s.LastRejected(); ok {
		view.LastRejected = &a
	}
	w.Header().Set("ETag", ETag(snap.Version))
	writeJSON(w, http.StatusOK, view)
}

type clusterView struct {
	Name            string `json:"name"`
	Node            string `json:"node,omitempty"`
	Port            int    `json:"port,omitempty"`
	Protocol        string `json:"protocol"`
	Local           bool   `json:"local,omitempty"`
	LBPolicy        string `json:"lbPolicy"`
	OpenConnections int64  `json:"openConnections"`
	// PendingRequests are HTTP/1.1 requests waiting for a connectionPool slot
	// (Envoy's upstream_rq_pending_active).
	PendingRequests int64                     `json:"pendingRequests"`
	Endpoints       []balancer.EndpointStatus `json:"endpoints"`
	Resilience      *ClusterResilienceView    `json:"resilience"`   // stats.go
	L4              *L4View                   `json:"l4,omitempty"` // opaque TCP / TLS passthrough (l4.go)
}

func (s *Server) handleClusters(w http.ResponseWriter, _ *http.Request) {
	snap := s.snap.Load()
	if snap == nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "no config applied yet"})
		return
	}
	out := make([]clusterView, 0, len(snap.clusters))
	for _, c := range snap.clusters {
		lb := c.ref.LBPolicy
		if lb == "" {
			lb = "LEAST_REQUEST"
		}
		out = append(out, clusterView{
			Name: c.ref.Name, Node: c.ref.Node, Port: c.ref.Port, Protocol: c.ref.Protocol, Local: c.ref.Local,
			LBPolicy: lb, OpenConnections: c.openConns.Load(), PendingRequests: c.pending.Load(), Endpoints: c.bal.Snapshot(),
			Resilience: c.resilienceView(), L4: c.l4.view(),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	writeJSON(w, http.StatusOK, map[string]any{"version": snap.Version, "clusters": out, "egressL4": s.l4.view()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
