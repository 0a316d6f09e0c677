// Package admin is meshd's admin API (Envoy's paths where they exist): readiness and
// server state, the config in force and the control endpoint that replaces it (PUT
// /config with ETag/If-Match, dry runs, history), /debug/route, /clusters, /stats and
// the Prometheus exposition /stats/prometheus (also /metrics; metrics.go).
// It runs on its own listener through net/http; nothing on the request path imports it.
package admin

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/balancer"
	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/internal/h2"
	"github.com/meshd/meshd/proxy/forward"
	"github.com/meshd/meshd/proxy/l4"
	"github.com/meshd/meshd/proxy/state"
	"github.com/meshd/meshd/proxy/upstream"
	"github.com/meshd/meshd/resilience"
	"github.com/meshd/meshd/router"
	"github.com/meshd/meshd/telemetry"
	meshtls "github.com/meshd/meshd/tls"
)

// API serves the admin endpoints. Set its fields before Handler; it only reads them.
type API struct {
	State *state.Holder
	// Node and Version are reported by /server_info.
	Node, Version string
	// Token, when set, is the bearer token the config and debug endpoints require.
	Token string
	// RequireIfMatch makes PUT /config answer 428 without If-Match.
	RequireIfMatch bool
	// Ready reports whether the server is listening and not draining; Draining whether
	// it drains; Started when it started listening (zero: not yet).
	Ready, Draining func() bool
	Started         func() time.Time
	// L4 is the server-wide L4 front end, for its egress counters on /clusters.
	L4 *l4.Server
	// LogLevel is the process logger's level, shown and changed by /logging (nil: the
	// level is not the server's to change).
	LogLevel *slog.LevelVar
	// AccessLogs lists the open access log files with their line counts (nil: none).
	AccessLogs func() []AccessLogStat
	// IngressStats and EgressStats are the listeners' request statistics, exported by
	// /stats/prometheus (nil: not exported).
	IngressStats, EgressStats *telemetry.HTTPStats
	// HTTP2 are the HTTP/2 connection events by side: "ingress", "egress" (downstream
	// connections of each listener) and "upstream" (every cluster's), on /stats and
	// /stats/prometheus (nil: not exported).
	HTTP2 map[string]*h2.Counters
	// FirstRequestTimeouts count, by listener kind ("ingress", "egress"), the HTTP
	// connections closed for not completing their first request head in time, on /stats
	// and /stats/prometheus (nil: not exported).
	FirstRequestTimeouts map[string]*atomic.Uint64
	// DetailedMetrics adds the detailed level's series to /stats/prometheus: per
	// endpoint (an address label), latency per route and per listener, codes per
	// listener (docs/metrics.md).
	DetailedMetrics bool
	// EnvoyStatsTags adds App Mesh's stats tags to every series (appmesh_mesh,
	// appmesh_virtual_node; appmesh_virtual_service on route series), as Envoy does
	// with ENABLE_ENVOY_STATS_TAGS=1.
	EnvoyStatsTags bool
	// TLSSources lists the certificate sources of the tls blocks in force
	// (meshtls.Loader.Stats), for /stats and /stats/prometheus (nil: none).
	TLSSources func() []meshtls.Stats
	// TLSListeners returns the TLS handshake counters of the listeners that terminate
	// TLS, by listener name ("ingress:8443"), for /stats (listener.<name>.ssl.*) and
	// /stats/prometheus (meshd_tls_handshakes_total{side="server"}) (nil: none).
	TLSListeners func() map[string]*meshtls.HandshakeStats
	// TLSPlaintext returns, per PERMISSIVE listener ("ingress:<port>"), the connections
	// it served in plaintext: the callers still to move to TLS before it can be STRICT.
	TLSPlaintext func() map[string]uint64
	// Conns returns the data-plane listeners' connection counters by listener kind, and
	// Overload the overload state, for /stats and /stats/prometheus (nil: none).
	Conns    func() map[string]ConnStats
	Overload func() OverloadStats

	// HealthCheckFailed is set by POST /healthcheck/fail and cleared by
	// /healthcheck/ok: while set, /ready answers 503 and /server_info says DRAINING (as
	// Envoy's), the listeners keep serving. The owner's Ready must honour it.
	HealthCheckFailed *atomic.Bool
	// Quit starts the drain and exit of POST /quitquitquit (as SIGTERM).
	Quit func()
	// DrainListeners stops the listeners accepting and drains their connections, the
	// process staying up (POST /drain_listeners); graceful first fails readiness for the
	// drain grace while they keep serving.
	DrainListeners func(graceful bool)
	// Listeners lists the bound listeners for /listeners (nil: none).
	Listeners func() []ListenerInfo
	// Defaults are the process-wide settings /config_dump shows beside the config.
	Defaults map[string]any
	// CommandLineOptions are /server_info's command_line_options (Envoy's field: the
	// options the process runs with).
	CommandLineOptions map[string]any
}

// Handler serves the admin API. It runs on its own listener (127.0.0.1:9901 by
// default) through net/http: none of it is on the request path. A path registered for
// POST answers another method with 405 and Allow (net/http's mux).
func (s *API) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, e := range s.endpoints() {
		h := e.h
		if e.guarded {
			h = s.guarded(h)
		}
		mux.HandleFunc(e.pattern, h)
	}
	return mux
}

// endpoints is the admin API, in the order /help lists it.
func (s *API) endpoints() []endpoint {
	metrics := s.metricsHandler()
	stats := func(w http.ResponseWriter, r *http.Request) {
		switch f := r.URL.Query().Get("format"); f {
		case "prometheus": // Envoy's other spelling
			metrics.ServeHTTP(w, r)
		case "json":
			s.handleStats(w, r)
		case "", "text":
			s.handleStatsText(w, r)
		default:
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "format " + strconv.Quote(f) + ": want text, json or prometheus"})
		}
	}
	eps := []endpoint{
		{"GET /help", "this list", false, s.handleHelp},
		{"GET /ready", "200 LIVE when serving; 503 and the state otherwise", false, s.handleReady},
		{"GET /server_info", "state (LIVE, DRAINING, INITIALIZING, PRE_INITIALIZING), version, uptime, command line options", false, s.handleServerInfo},
		{"GET /config", "the config in force, its version (ETag) and source", true, s.handleConfig},
		{"PUT /config", "replace the config (If-Match: the ETag of GET /config)", true, s.handlePutConfig},
		{"POST /config/validate", "dry run of PUT /config", true, s.handleValidateConfig},
		{"GET /config/history", "the last apply attempts", true, s.handleConfigHistory},
		{"GET /config_dump", "the config in force with meshd's effective defaults, routes and clusters", true, s.handleConfigDump},
		{"GET /debug/route", "which route a request would take, and why (?host=&path=&header=name:value)", true, s.handleDebugRoute},
		{"GET /clusters", "clusters, endpoints, health, ejection, breakers", false, s.handleClusters},
		{"GET /listeners", "the bound listeners (?format=json)", false, s.handleListeners},
		{"GET /stats", "counters as name: value lines (?format=json, ?format=prometheus)", false, stats},
		{"GET /stats/prometheus", "the Prometheus exposition", false, metrics.ServeHTTP},
		{"GET /metrics", "the Prometheus exposition", false, metrics.ServeHTTP},
		{"GET /logging", "the log level", false, s.handleLogging},
		{"POST /logging", "change the log level (?level=debug)", true, s.handleSetLogging},
	}
	if s.HealthCheckFailed != nil {
		eps = append(eps,
			endpoint{"POST /healthcheck/fail", "fail /ready and server_info (DRAINING) while the listeners keep serving", true, s.handleHealthcheckFail},
			endpoint{"POST /healthcheck/ok", "undo /healthcheck/fail", true, s.handleHealthcheckOK})
	}
	if s.DrainListeners != nil {
		eps = append(eps, endpoint{"POST /drain_listeners", "stop accepting and drain the listeners; the process stays up (?graceful)", true, s.handleDrainListeners})
	}
	if s.Quit != nil {
		eps = append(eps, endpoint{"POST /quitquitquit", "drain and exit 0, as SIGTERM", true, s.handleQuit})
	}
	return eps
}

func (s *API) handleReady(w http.ResponseWriter, _ *http.Request) {
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
func (s *API) state() string {
	switch {
	case s.Draining():
		return "DRAINING"
	case s.HealthCheckFailed != nil && s.HealthCheckFailed.Load() && !s.Started().IsZero():
		// Envoy reports a server whose health checks were failed by the admin as
		// DRAINING, so the App Mesh health check (grep LIVE) fails too.
		return "DRAINING"
	case s.Ready():
		return "LIVE"
	case s.State.Load() != nil:
		return "INITIALIZING"
	default:
		return "PRE_INITIALIZING"
	}
}

// serverInfo is /server_info: Envoy's fields where meshd has the same meaning, and
// meshd's own (node as a name, config_version).
type serverInfo struct {
	State         string `json:"state"`
	Version       string `json:"version"`
	Node          string `json:"node"`
	ConfigVersion string `json:"config_version,omitempty"`
	// Envoy prints durations as protobuf's JSON does ("123s"). meshd has no hot
	// restart, so the epochs are one.
	UptimeCurrentEpoch string         `json:"uptime_current_epoch"`
	UptimeAllEpochs    string         `json:"uptime_all_epochs"`
	HotRestartVersion  string         `json:"hot_restart_version"`
	HealthCheckFailed  bool           `json:"health_check_failed"`
	CommandLineOptions map[string]any `json:"command_line_options"`
}

func (s *API) handleServerInfo(w http.ResponseWriter, _ *http.Request) {
	info := serverInfo{State: s.state(), Version: s.Version, Node: s.Node, UptimeCurrentEpoch: "0s",
		HotRestartVersion: "disabled", CommandLineOptions: s.CommandLineOptions}
	if info.CommandLineOptions == nil {
		info.CommandLineOptions = map[string]any{}
	}
	if snap := s.State.Load(); snap != nil {
		info.ConfigVersion = snap.Version()
	}
	if started := s.Started(); !started.IsZero() {
		info.UptimeCurrentEpoch = strconv.FormatInt(int64(time.Since(started).Seconds()), 10) + "s"
	}
	info.UptimeAllEpochs = info.UptimeCurrentEpoch
	if s.HealthCheckFailed != nil {
		info.HealthCheckFailed = s.HealthCheckFailed.Load()
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
	Reloads      state.ReloadStats `json:"reloads"`
	LastRejected *state.Attempt    `json:"lastRejected,omitempty"`
	Config       any               `json:"config"`
	// EffectiveRetryPolicies shows each route's retry policy, App Mesh's default included.
	EffectiveRetryPolicies map[string]EffectiveRetryPolicy `json:"effectiveRetryPolicies"`
}

// handleConfig answers the config in force with its version as the ETag, which a
// writer sends back as If-Match on PUT /config.
func (s *API) handleConfig(w http.ResponseWriter, _ *http.Request) {
	snap := s.State.Load()
	if snap == nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "no config applied yet"})
		return
	}
	view := configView{
		Version: snap.Version(), Source: snap.Source(), AppliedAt: snap.AppliedAt(), Node: snap.Node(),
		Reloads: s.State.ReloadStats(), Config: snap.Config(), EffectiveRetryPolicies: effectiveRetryPolicies(snap),
	}
	if a, ok := s.State.LastRejected(); ok {
		view.LastRejected = &a
	}
	w.Header().Set("ETag", state.ETag(snap.Version()))
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
	L4              *upstream.L4View          `json:"l4,omitempty"` // opaque TCP / TLS passthrough (l4.go)
	// TLS is the cluster's TLS origination (a client policy covers it); absent for
	// plaintext clusters (tls.go).
	TLS *ClusterTLSView `json:"tls,omitempty"`
	// Discovery is the state of each DNS name the cluster follows: when it was last
	// resolved, the failures since (the last good set is kept), the next resolution.
	Discovery []discovery.Status `json:"discovery,omitempty"`
	// NoEndpoints says why a cluster has no endpoint, when it has none.
	NoEndpoints string `json:"noEndpoints,omitempty"`
}

func (s *API) handleClusters(w http.ResponseWriter, _ *http.Request) {
	snap := s.State.Load()
	if snap == nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "no config applied yet"})
		return
	}
	out := make([]clusterView, 0, len(snap.Clusters()))
	for _, c := range snap.Clusters() {
		ref := c.Ref()
		lb := ref.LBPolicy
		if lb == "" {
			lb = "LEAST_REQUEST"
		}
		out = append(out, clusterView{
			Name: ref.Name, Node: ref.Node, Port: ref.Port, Protocol: ref.Protocol, Local: ref.Local,
			LBPolicy: lb, OpenConnections: c.OpenConns(), PendingRequests: c.Pending(), Endpoints: c.Balancer().Snapshot(),
			Resilience: resilienceView(c), L4: c.L4().View(), Discovery: c.DiscoveryStatus(), TLS: clusterTLSView(c),
		})
		if cv := &out[len(out)-1]; len(cv.Endpoints) == 0 {
			cv.NoEndpoints = noEndpointsReason(cv.Discovery)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	writeJSON(w, http.StatusOK, map[string]any{"version": snap.Version(), "clusters": out, "egressL4": s.L4.View()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// statsView is GET /stats: every resilience counter, per cluster, per route and per
// ingress listener (docs/resilience.md#counters names them). /stats/prometheus exports
// the same values with the request statistics (docs/metrics.md).
type statsView struct {
	Version   string                                 `json:"version"`
	Clusters  map[string]resilience.CountersSnapshot `json:"clusters"`
	Routes    map[string]resilience.CountersSnapshot `json:"routes"`
	Listeners map[string]resilience.CountersSnapshot `json:"listeners,omitempty"`
	// Authorization counts the verdicts of each ingress listener's authorization, by
	// "ingress:<port>"; absent when no listener has one.
	Authorization map[string]AuthzView `json:"authorization,omitempty"`
	// Mirrors counts each mirrored route's sampled requests by result, by route key;
	// absent when no route has a mirror.
	Mirrors map[string]map[string]uint64 `json:"mirrors,omitempty"`
}

// AuthzView is one listener's authorization counters on /stats.
type AuthzView struct {
	Allowed          uint64 `json:"allowed"`
	DeniedPolicy     uint64 `json:"deniedPolicy"`
	DeniedNoIdentity uint64 `json:"deniedNoIdentity"`
}

func authzView(a *state.ListenerAuthz) AuthzView {
	c := a.Counters()
	return AuthzView{Allowed: c.Allowed.Load(), DeniedPolicy: c.DeniedPolicy.Load(), DeniedNoIdentity: c.DeniedNoIdentity.Load()}
}

// handleStatsText serves GET /stats as Envoy does: one "name: value" line per counter,
// sorted by name (cluster.<cluster>.*, route.<service>/<route>.*, listener.<kind>.*).
func (s *API) handleStatsText(w http.ResponseWriter, _ *http.Request) {
	snap := s.State.Load()
	if snap == nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "no config applied yet"})
		return
	}
	var lines []string
	add := func(prefix string, c resilience.CountersSnapshot, st *telemetry.HTTPStats) {
		b, _ := json.Marshal(c)
		var m map[string]json.Number
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		_ = d.Decode(&m)
		for k, v := range m {
			lines = append(lines, prefix+k+": "+v.String())
		}
		if st != nil {
			for class := 1; class <= 5; class++ {
				lines = append(lines, prefix+"rq_"+strconv.Itoa(class)+"xx: "+strconv.FormatUint(st.Classes[class].Load(), 10))
			}
			lines = append(lines, prefix+"rq_active: "+strconv.FormatInt(st.InFlight.Load(), 10))
		}
	}
	for name, c := range snap.Clusters() {
		add("cluster."+name+".", c.Counters().Snapshot(), c.Stats())
	}
	zero := new(telemetry.HTTPStats) // a route's before its first request
	for _, p := range snap.Policies() {
		if p != nil {
			st := p.StatsIfAny()
			if st == nil {
				st = zero
			}
			add("route."+p.Key()+".", p.Counters().Snapshot(), st)
			if ms := p.MirrorStats(); ms != nil {
				for _, r := range MirrorResults(ms) {
					lines = append(lines, "route."+p.Key()+".mirror_"+r.Name+": "+strconv.FormatUint(r.V, 10))
				}
			}
		}
	}
	for port, ll := range snap.ListenerLimits() {
		add("listener.ingress:"+strconv.Itoa(port)+".", ll.Counters().Snapshot(), nil)
	}
	for port, a := range snap.Authorizations() {
		v, prefix := authzView(a), "listener.ingress:"+strconv.Itoa(port)+"."
		lines = append(lines, prefix+"authz_allowed: "+strconv.FormatUint(v.Allowed, 10),
			prefix+"authz_denied_policy: "+strconv.FormatUint(v.DeniedPolicy, 10),
			prefix+"authz_denied_no_identity: "+strconv.FormatUint(v.DeniedNoIdentity, 10))
	}
	for _, kind := range []string{"ingress", "egress"} {
		st := s.IngressStats
		if kind == "egress" {
			st = s.EgressStats
		}
		if st != nil {
			for class := 1; class <= 5; class++ {
				lines = append(lines, "listener."+kind+".downstream_rq_"+strconv.Itoa(class)+"xx: "+strconv.FormatUint(st.Classes[class].Load(), 10))
			}
			lines = append(lines, "listener."+kind+".downstream_rq_active: "+strconv.FormatInt(st.InFlight.Load(), 10))
		}
		if n := s.FirstRequestTimeouts[kind]; n != nil {
			lines = append(lines, "listener."+kind+".downstream_cx_first_request_timeout: "+strconv.FormatUint(n.Load(), 10))
		}
	}
	for side, c := range s.HTTP2 {
		for _, kv := range http2Counters(c) {
			lines = append(lines, "http2."+side+"."+kv.name+": "+strconv.FormatUint(kv.v, 10))
		}
	}
	lines = append(lines, s.tlsStatsLines(snap, time.Now())...)
	lines = append(lines, s.connStatsLines()...)
	sort.Strings(lines)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, strings.Join(lines, "\n")+"\n")
}

type namedCount struct {
	name string
	v    uint64
}

// http2Counters lists an HTTP/2 side's counters by their /stats names (Envoy's
// http2.* names where Envoy has one).
func http2Counters(c *h2.Counters) []namedCount {
	out := []namedCount{
		{"cx_total", c.Conns.Load()},
		{"streams_total", c.Streams.Load()},
		{"rx_reset_refused", c.RefusedStreams.Load()},
		{"rx_messaging_error", c.ProtocolErrors.Load()},
		{"rx_stream_error", c.StreamErrors.Load()},
		{"header_overflow", c.HeaderTooLarge.Load()},
		{"goaway_sent", c.GoAwaySent.Load()},
		{"goaway_received", c.GoAwayReceived.Load()},
	}
	for _, f := range h2.Floods() {
		out = append(out, namedCount{f.String(), c.Flood(f)})
	}
	return out
}

// handleStats serves GET /stats?format=json from the snapshot in force. It runs on the admin
// listener, off the request path.
func (s *API) handleStats(w http.ResponseWriter, _ *http.Request) {
	snap := s.State.Load()
	if snap == nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "no config applied yet"})
		return
	}
	v := statsView{
		Version:  snap.Version(),
		Clusters: make(map[string]resilience.CountersSnapshot, len(snap.Clusters())),
		Routes:   map[string]resilience.CountersSnapshot{},
	}
	for name, c := range snap.Clusters() {
		v.Clusters[name] = c.Counters().Snapshot()
	}
	for _, p := range snap.Policies() {
		if p != nil {
			v.Routes[p.Key()] = p.Counters().Snapshot()
			if ms := p.MirrorStats(); ms != nil {
				if v.Mirrors == nil {
					v.Mirrors = map[string]map[string]uint64{}
				}
				m := map[string]uint64{}
				for _, r := range MirrorResults(ms) {
					m[r.Name] = r.V
				}
				v.Mirrors[p.Key()] = m
			}
		}
	}
	if ls := snap.ListenerLimits(); len(ls) > 0 {
		v.Listeners = make(map[string]resilience.CountersSnapshot, len(ls))
		for port, ll := range ls {
			v.Listeners["ingress:"+strconv.Itoa(port)] = ll.Counters().Snapshot()
		}
	}
	if as := snap.Authorizations(); len(as) > 0 {
		v.Authorization = make(map[string]AuthzView, len(as))
		for port, a := range as {
			v.Authorization["ingress:"+strconv.Itoa(port)] = authzView(a)
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
func resilienceView(c *upstream.Cluster) *ClusterResilienceView {
	v := &ClusterResilienceView{
		Panic:              c.Balancer().Panic(),
		AvailableEndpoints: c.Balancer().Available(),
		RetriesInFlight:    c.Budget().Outstanding(),
		Counters:           c.Counters().Snapshot(),
	}
	if br := c.Breaker(); br != nil {
		v.Breaker = br.State().String()
	}
	return v
}

// effectiveRetryPolicies spells out the retry policy in force for each route, App
// Mesh's hidden default included, for GET /config (keys "<service>/<route>", sorted
// by encoding/json).
func effectiveRetryPolicies(s *state.Snapshot) map[string]EffectiveRetryPolicy {
	out := make(map[string]EffectiveRetryPolicy, len(s.Policies()))
	for _, p := range s.Policies() {
		if p != nil {
			out[p.Key()] = EffectiveRetryPolicy{RetryView: p.Retry().View(), Default: p.Default()}
		}
	}
	return out
}

// EffectiveRetryPolicy is one route's retry policy as /config shows it.
type EffectiveRetryPolicy struct {
	resilience.RetryView
	// Default is true when the route sets no retryPolicy and App Mesh's default applies.
	Default bool `json:"default,omitempty"`
}

// authorized checks the bearer token when one is configured, answering 401 itself.
// Both sides are hashed first so the comparison takes the same time whatever the
// length or content of the presented token.
func (s *API) authorized(w http.ResponseWriter, r *http.Request) bool {
	if s.Token == "" {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	a, b := sha256.Sum256([]byte(strings.TrimSpace(got))), sha256.Sum256([]byte(s.Token))
	if ok && subtle.ConstantTimeCompare(a[:], b[:]) == 1 {
		return true
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="meshd-admin"`)
	writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "a valid bearer token is required (Authorization: Bearer TOKEN)"})
	return false
}

// guarded wraps a handler of the config and debug endpoints with the token check.
func (s *API) guarded(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.authorized(w, r) {
			h(w, r)
		}
	}
}

// applyAnswer is the body of a successful PUT /config or POST /config/validate.
type applyAnswer struct {
	Version   string    `json:"version"`
	Result    string    `json:"result"`
	Source    string    `json:"source,omitempty"`
	AppliedAt time.Time `json:"appliedAt,omitzero"`
}

// rejectAnswer is the body of a rejected PUT /config or POST /config/validate: every
// problem found, each with its field path, line and value where known.
type rejectAnswer struct {
	Error   string              `json:"error"`
	Stage   string              `json:"stage,omitempty"`
	Version string              `json:"version,omitempty"` // the version in force (412)
	Errors  []state.ConfigError `json:"errors,omitempty"`
}

// readConfigBody reads a request body up to config.MaxConfigSize, answering 413
// itself when it is larger.
func readConfigBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, config.MaxConfigSize))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeJSON(w, http.StatusRequestEntityTooLarge, rejectAnswer{
				Error: fmt.Sprintf("config is larger than the %d byte limit", config.MaxConfigSize)})
			return nil, false
		}
		writeJSON(w, http.StatusBadRequest, rejectAnswer{Error: "reading the request body: " + err.Error()})
		return nil, false
	}
	return body, true
}

// handlePutConfig applies the request body (YAML or JSON, as the config file) and
// answers the new version with its ETag; 400 with every error when it is rejected;
// 412 when If-Match names another version; 428 when If-Match is required and absent.
func (s *API) handlePutConfig(w http.ResponseWriter, r *http.Request) {
	ifMatch := r.Header.Get("If-Match")
	if ifMatch == "" && s.RequireIfMatch {
		writeJSON(w, http.StatusPreconditionRequired, rejectAnswer{
			Error: "If-Match is required: GET /config, then PUT with If-Match set to its ETag"})
		return
	}
	body, ok := readConfigBody(w, r)
	if !ok {
		return
	}
	snap, err := s.State.ApplyDocument(r.Context(), state.ApplyRequest{Data: body, Source: adminSource(r), IfMatch: ifMatch})
	if err != nil {
		s.writeRejection(w, err)
		return
	}
	w.Header().Set("ETag", state.ETag(snap.Version()))
	writeJSON(w, http.StatusOK, applyAnswer{Version: snap.Version(), Result: state.ResultApplied, Source: snap.Source(), AppliedAt: snap.AppliedAt()})
}

// handleValidateConfig is a dry run of PUT /config: 200 with the version the config
// would have, or 400 with every error. Nothing is applied.
func (s *API) handleValidateConfig(w http.ResponseWriter, r *http.Request) {
	body, ok := readConfigBody(w, r)
	if !ok {
		return
	}
	snap, err := s.State.ApplyDocument(r.Context(), state.ApplyRequest{Data: body, Source: adminSource(r), DryRun: true})
	if err != nil {
		s.writeRejection(w, err)
		return
	}
	writeJSON(w, http.StatusOK, applyAnswer{Version: snap.Version(), Result: state.ResultValid})
}

func (s *API) writeRejection(w http.ResponseWriter, err error) {
	var rej *state.RejectedError
	if !errors.As(err, &rej) {
		writeJSON(w, http.StatusInternalServerError, rejectAnswer{Error: err.Error()})
		return
	}
	ans := rejectAnswer{Error: "config rejected at " + rej.Stage + "; the config in force keeps serving", Stage: rej.Stage, Errors: state.ConfigErrors(rej.Err)}
	status := http.StatusBadRequest
	if errors.Is(err, state.ErrVersionMismatch) {
		status = http.StatusPreconditionFailed
		if snap := s.State.Load(); snap != nil {
			ans.Version = snap.Version()
			w.Header().Set("ETag", state.ETag(snap.Version()))
		}
	}
	writeJSON(w, status, ans)
}

func adminSource(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return "admin:" + r.Method + " " + r.URL.Path + " from " + host
}

// historyView is the body of GET /config/history.
type historyView struct {
	state.ReloadStats
	Attempts []state.Attempt `json:"attempts"`
}

func (s *API) handleConfigHistory(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, historyView{ReloadStats: s.State.ReloadStats(), Attempts: s.State.History()})
}

// routeDebug is the answer of GET /debug/route.
type routeDebug struct {
	Version  string              `json:"version"`
	Listener string              `json:"listener"`
	Request  routeDebugRequest   `json:"request"`
	Service  string              `json:"service,omitempty"`
	Routes   []router.RouteCheck `json:"routes,omitempty"`
	Matched  string              `json:"matched,omitempty"`
	Targets  []routeDebugTarget  `json:"targets,omitempty"`
	// Outcome is what the proxy would do: "route", or the x-meshd-error code it would
	// answer with (no_listener, egress_denied, no_route), or "passthrough".
	Outcome string `json:"outcome"`
	Detail  string `json:"detail,omitempty"`
}

type routeDebugRequest struct {
	Host    string            `json:"host,omitempty"`
	Port    int               `json:"port,omitempty"`
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Scheme  string            `json:"scheme"`
	GRPC    bool              `json:"grpc,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
}

type routeDebugTarget struct {
	Cluster   string   `json:"cluster"`
	Weight    uint32   `json:"weight"`
	Percent   float64  `json:"percent"`
	Endpoints []string `json:"endpoints"`
}

// debugHeaders is a router.HeaderGetter over the header=name:value query parameters.
type debugHeaders map[string]string

func (h debugHeaders) Get(name string) (string, bool) {
	v, ok := h[strings.ToLower(name)]
	return v, ok
}

// handleDebugRoute answers which route a request would take, on the snapshot in force,
// with the reason each earlier route did not match:
//
//	GET /debug/route?host=backend.shop.local&path=/cart&method=POST&header=x-canary:1
//
// Parameters: listener (egress, the default, or ingress), host (egress; may carry
// :port), port (ingress listener port, or the egress port when host has none), dst (the
// original destination ip:port iptables would report), path
// (default /), method (default GET), scheme (default http), header=name:value (repeat).
// A content-type header starting with application/grpc makes the request gRPC. Nothing
// is sent anywhere.
func (s *API) handleDebugRoute(w http.ResponseWriter, r *http.Request) {
	snap := s.State.Load()
	if snap == nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "no config applied yet"})
		return
	}
	q := r.URL.Query()
	in := routeDebugRequest{
		Host: q.Get("host"), Method: q.Get("method"), Path: q.Get("path"), Scheme: q.Get("scheme"),
		Headers: map[string]string{},
	}
	if in.Method == "" {
		in.Method = http.MethodGet
	}
	if in.Path == "" {
		in.Path = "/"
	}
	if in.Scheme == "" {
		in.Scheme = "http"
	}
	if p := q.Get("port"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 || n > 65535 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "port " + strconv.Quote(p) + ": want 1-65535"})
			return
		}
		in.Port = n
	}
	for _, kv := range q["header"] {
		k, v, ok := strings.Cut(kv, ":")
		if !ok || strings.TrimSpace(k) == "" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "header " + strconv.Quote(kv) + ": want name:value"})
			return
		}
		// A repeated name is matched as the live path matches a repeated header: every
		// value, joined with ",".
		name, val := strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)
		if prev, seen := in.Headers[name]; seen {
			val = prev + "," + val
		}
		in.Headers[name] = val
	}
	in.GRPC = strings.HasPrefix(in.Headers["content-type"], "application/grpc")
	out := routeDebug{Version: snap.Version(), Listener: q.Get("listener")}
	if out.Listener == "" {
		out.Listener = "egress"
	}

	kind := forward.Egress
	switch out.Listener {
	case "ingress":
		kind = forward.Ingress
	case "egress":
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "listener " + strconv.Quote(out.Listener) + ": want egress or ingress"})
		return
	}
	// dst is the original destination iptables would report (egress: the fallback when
	// the host names no backend; ingress: the node listener port).
	var orig netip.AddrPort
	if v := q.Get("dst"); v != "" {
		ap, err := netip.ParseAddrPort(v)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "dst " + strconv.Quote(v) + ": want ip:port"})
			return
		}
		orig = ap
	}
	local := in.Port
	if kind == forward.Ingress && local == 0 {
		local = int(orig.Port())
	}
	rr := router.Request{
		Authority: in.Host, Method: in.Method, Path: in.Path, Scheme: in.Scheme, Port: in.Port,
		GRPC: in.GRPC, Header: debugHeaders(in.Headers),
	}
	if kind == forward.Egress && in.Port != 0 {
		if _, p := forward.SplitHostPort(in.Host); p == 0 {
			rr.Port = in.Port
		}
	}
	// The same resolution as live traffic, without building a passthrough cluster.
	d := forward.Resolve(snap, nil, kind, &rr, local, orig, rand.Uint64())
	in.Port = rr.Port
	out.Request = in
	if d.Service != nil {
		out.Service = d.Service.Name
		out.Routes = d.Service.Explain(&rr)
	}
	if d.Route == nil {
		out.Outcome, out.Detail = d.Code, strings.TrimSuffix(strings.TrimPrefix(d.Msg, "meshd: "), "\n")
		writeJSON(w, http.StatusOK, out)
		return
	}
	rt := d.Route
	out.Matched, out.Outcome = rt.Name, "route"
	var total uint64
	for _, t := range rt.Targets {
		total += uint64(t.Weight)
	}
	for _, t := range rt.Targets {
		dt := routeDebugTarget{Cluster: t.Cluster, Weight: t.Weight, Endpoints: []string{}}
		if total > 0 {
			dt.Percent = float64(t.Weight) * 100 / float64(total)
		}
		if c := snap.Cluster(t.Cluster); c != nil {
			for _, ep := range c.Balancer().Snapshot() {
				dt.Endpoints = append(dt.Endpoints, ep.Address)
			}
		}
		out.Targets = append(out.Targets, dt)
	}
	writeJSON(w, http.StatusOK, out)
}

// noEndpointsReason says why a cluster whose endpoints all come from DNS has none.
func noEndpointsReason(st []discovery.Status) string {
	if len(st) == 0 {
		return "no endpoints configured"
	}
	var parts []string
	for _, s := range st {
		switch {
		case s.LastError != "" && !s.Resolved:
			parts = append(parts, s.Spec+": not resolved yet: "+s.LastError)
		case s.LastError != "":
			parts = append(parts, s.Spec+": "+s.LastError)
		case !s.Resolved:
			parts = append(parts, s.Spec+": first resolution in progress")
		default:
			parts = append(parts, s.Spec+": resolved to no address")
		}
	}
	return strings.Join(parts, "; ")
}

// handleLogging answers the log level in force, in Envoy's /logging shape.
func (s *API) handleLogging(w http.ResponseWriter, _ *http.Request) {
	if s.LogLevel == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "the log level is not managed by this server"})
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = fmt.Fprintf(w, "active loggers:\n  meshd: %s\n", telemetry.LevelName(s.LogLevel.Level()))
}

// handleSetLogging changes the log level: POST /logging?level=debug (any Envoy level
// name; Envoy's per-logger form name=level is accepted for the one logger "meshd" or
// any name, all loggers being one).
func (s *API) handleSetLogging(w http.ResponseWriter, r *http.Request) {
	if s.LogLevel == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "the log level is not managed by this server"})
		return
	}
	q := r.URL.Query()
	v := q.Get("level")
	if v == "" {
		for _, vs := range q { // Envoy's /logging?<logger>=<level>
			if len(vs) > 0 {
				v = vs[0]
				break
			}
		}
	}
	lv, err := telemetry.ParseLevel(v)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	s.LogLevel.Set(lv)
	s.handleLogging(w, r)
}

// AccessLogStat is one access log file's line counts.
type AccessLogStat struct {
	Path             string
	Written, Dropped uint64
}
