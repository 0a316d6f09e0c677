package admin

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshd/meshd/proxy/state"
)

// Envoy's admin calls that runbooks and orchestrators make (docs/admin.md): health check
// failure for a drain from a load balancer, quitquitquit, drain_listeners, config_dump,
// listeners and help.

// ListenerInfo is one bound listener on /listeners.
type ListenerInfo struct {
	Name    string // "ingress", "egress", "egress-ipv6"
	Address string // host:port as bound
}

// endpoint is one admin path: its pattern, what /help says of it, and whether it needs
// the admin token.
type endpoint struct {
	pattern string
	help    string
	guarded bool
	h       http.HandlerFunc
}

func (s *API) handleHealthcheckFail(w http.ResponseWriter, _ *http.Request) {
	s.HealthCheckFailed.Store(true)
	okText(w)
}

func (s *API) handleHealthcheckOK(w http.ResponseWriter, _ *http.Request) {
	s.HealthCheckFailed.Store(false)
	okText(w)
}

// handleQuit answers before the drain starts, as Envoy does: the caller learns the
// request was taken, and the process drains and exits behind it.
func (s *API) handleQuit(w http.ResponseWriter, _ *http.Request) {
	okText(w)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	s.Quit()
}

// handleDrainListeners stops the listeners from accepting and drains their connections,
// leaving the process (and this admin listener) up, as Envoy's /drain_listeners.
// ?graceful first fails readiness for the drain grace while the listeners keep serving.
func (s *API) handleDrainListeners(w http.ResponseWriter, r *http.Request) {
	graceful := false
	for k, vs := range r.URL.Query() {
		switch k {
		case "graceful":
			graceful = true
		case "inboundonly":
			// meshd's ingress and egress share one drain; draining only one is not offered
			// rather than silently draining both.
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "inboundonly: meshd drains every listener; POST /drain_listeners without it, or /healthcheck/fail to take the task out of load balancing while egress keeps serving"})
			return
		default:
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("query parameter %s=%q: want graceful", k, strings.Join(vs, ","))})
			return
		}
	}
	s.DrainListeners(graceful)
	okText(w)
}

func okText(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "OK\n")
}

// handleListeners lists the bound listeners, as Envoy: "name::address" lines, or
// ?format=json with Envoy's listener_statuses shape.
func (s *API) handleListeners(w http.ResponseWriter, r *http.Request) {
	var ls []ListenerInfo
	if s.Listeners != nil {
		ls = s.Listeners()
	}
	switch f := r.URL.Query().Get("format"); f {
	case "", "text":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		var b strings.Builder
		for _, l := range ls {
			b.WriteString(l.Name + "::" + l.Address + "\n")
		}
		_, _ = io.WriteString(w, b.String())
	case "json":
		type sockAddr struct {
			Address   string `json:"address"`
			PortValue int    `json:"port_value"`
		}
		type localAddr struct {
			SocketAddress sockAddr `json:"socket_address"`
		}
		type status struct {
			Name         string    `json:"name"`
			LocalAddress localAddr `json:"local_address"`
		}
		out := struct {
			ListenerStatuses []status `json:"listener_statuses"`
		}{ListenerStatuses: []status{}}
		for _, l := range ls {
			host, port, _ := net.SplitHostPort(l.Address)
			p, _ := strconv.Atoi(port)
			out.ListenerStatuses = append(out.ListenerStatuses, status{Name: l.Name, LocalAddress: localAddr{sockAddr{host, p}}})
		}
		writeJSON(w, http.StatusOK, out)
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "format " + strconv.Quote(f) + ": want text or json"})
	}
}

// configDump is GET /config_dump: the config in force with what meshd applies where the
// config says nothing, so what a route does can be read without knowing the defaults.
type configDump struct {
	Version   string    `json:"version"`
	Source    string    `json:"source"`
	AppliedAt time.Time `json:"appliedAt"`
	Node      string    `json:"node"`
	Config    any       `json:"config"`
	// Defaults are the process-wide settings that apply where the config is silent
	// (connect timeout, drain timeout, idle timeouts, replay bound...).
	Defaults map[string]any `json:"defaults"`
	// Routes are the routes of this node's table with their effective timeouts and
	// retry policy; Clusters the clusters with their effective load balancing.
	Routes   []effectiveRoute   `json:"routes"`
	Clusters []effectiveCluster `json:"clusters"`
}

type effectiveRoute struct {
	Service string `json:"service"`
	Name    string `json:"name"`
	Kind    string `json:"kind"`
	// PerRequestTimeout and IdleTimeout: "0s" is none (meshd adds no hidden default).
	PerRequestTimeout string                `json:"perRequestTimeout"`
	IdleTimeout       string                `json:"idleTimeout"`
	RetryPolicy       *EffectiveRetryPolicy `json:"retryPolicy,omitempty"`
	Targets           []string              `json:"targets"`
}

type effectiveCluster struct {
	Name     string `json:"name"`
	Protocol string `json:"protocol"`
	LBPolicy string `json:"lbPolicy"`
	Local    bool   `json:"local,omitempty"`
	TLS      bool   `json:"tls,omitempty"`
}

func (s *API) handleConfigDump(w http.ResponseWriter, _ *http.Request) {
	snap := s.State.Load()
	if snap == nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "no config applied yet"})
		return
	}
	d := configDump{
		Version: snap.Version(), Source: snap.Source(), AppliedAt: snap.AppliedAt(), Node: snap.Node(),
		Config: snap.Config(), Defaults: s.Defaults, Routes: effectiveRoutes(snap), Clusters: []effectiveCluster{},
	}
	if d.Defaults == nil {
		d.Defaults = map[string]any{}
	}
	for _, c := range snap.Clusters() {
		ref := c.Ref()
		d.Clusters = append(d.Clusters, effectiveCluster{
			Name: ref.Name, Protocol: ref.Protocol, LBPolicy: cmpOr(ref.LBPolicy, "LEAST_REQUEST"), Local: ref.Local, TLS: clusterTLSView(c) != nil,
		})
	}
	slices.SortFunc(d.Clusters, func(a, b effectiveCluster) int { return strings.Compare(a.Name, b.Name) })
	w.Header().Set("ETag", state.ETag(snap.Version()))
	writeJSON(w, http.StatusOK, d)
}

func cmpOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func effectiveRoutes(snap *state.Snapshot) []effectiveRoute {
	out := []effectiveRoute{}
	t := snap.Table()
	if t == nil {
		return out
	}
	for _, rt := range t.Routes() {
		er := effectiveRoute{
			Service: rt.Service, Name: rt.Name, Kind: rt.Kind,
			PerRequestTimeout: rt.PerRequestTimeout.String(), IdleTimeout: rt.IdleTimeout.String(), Targets: []string{},
		}
		if p := snap.Policy(rt); p != nil {
			er.RetryPolicy = &EffectiveRetryPolicy{RetryView: p.Retry().View(), Default: p.Default()}
		}
		for _, tg := range rt.Targets {
			er.Targets = append(er.Targets, tg.Cluster+" weight "+strconv.FormatUint(uint64(tg.Weight), 10))
		}
		out = append(out, er)
	}
	return out
}

// handleHelp lists the admin endpoints, as Envoy's /help does.
func (s *API) handleHelp(w http.ResponseWriter, _ *http.Request) {
	var b strings.Builder
	b.WriteString("admin commands are:\n")
	for _, e := range s.endpoints() {
		line := "  " + e.pattern + ": " + e.help
		if e.guarded {
			line += " (bearer token when one is set)"
		}
		b.WriteString(line + "\n")
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, b.String())
}

// AccessLog wraps an admin handler so that every admin request leaves a line in w
// (Envoy's admin access log, App Mesh's ENVOY_ADMIN_ACCESS_LOG_FILE): time, request
// line, status, bytes sent, duration in ms, user agent, peer. Headers are never written:
// they may carry the admin token.
func AccessLog(h http.Handler, w io.Writer) http.Handler {
	var mu sync.Mutex
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: rw, status: http.StatusOK}
		h.ServeHTTP(rec, r)
		ua, _ := json.Marshal(r.UserAgent())
		line := fmt.Sprintf("[%s] \"%s %s %s\" %d %d %d %s %s\n",
			start.UTC().Format("2006-01-02T15:04:05.000Z"), r.Method, r.URL.RequestURI(), r.Proto,
			rec.status, rec.bytes, time.Since(start).Milliseconds(), ua, r.RemoteAddr)
		mu.Lock()
		_, _ = io.WriteString(w, line)
		mu.Unlock()
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	wrote  bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(p []byte) (int, error) {
	r.wrote = true
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
