package admin

import (
	"sort"
	"strconv"
	"time"

	"github.com/meshd/meshd/proxy/state"
	"github.com/meshd/meshd/proxy/upstream"
	meshtls "github.com/meshd/meshd/tls"
)

// TLS on the admin API: handshake counters of the clusters that originate TLS and of
// the listeners that terminate it (meshtls.HandshakeStats), and the certificate sources
// of the tls blocks (meshtls.Loader.Stats), on /stats, /stats/prometheus and /clusters.

// Sides of meshd_tls_handshakes_total.
const (
	tlsSideClient = "client" // a cluster originating TLS
	tlsSideServer = "server" // a listener terminating TLS
)

// ClusterTLSView is the TLS origination of a cluster on /clusters.
type ClusterTLSView struct {
	// ServerName is the SNI sent: the virtual service name.
	ServerName string `json:"serverName"`
	// ALPN is what the connections offer: the cluster's protocol.
	ALPN []string `json:"alpn,omitempty"`
	// Policy is the client policy's field path.
	Policy string `json:"policy"`
	// Handshakes by result (ok, resumed, error, verify_error, verify_san,
	// no_certificate), the results seen only.
	Handshakes map[string]uint64 `json:"handshakes,omitempty"`
}

func clusterTLSView(c *upstream.Cluster) *ClusterTLSView {
	cfg := c.TLSConfig()
	if cfg == nil {
		return nil
	}
	v := &ClusterTLSView{ServerName: cfg.ServerName, ALPN: cfg.NextProtos, Policy: c.TLSPolicy()}
	st := c.TLSStats()
	for _, r := range meshtls.HandshakeResults() {
		if n := st.Count(r); n != 0 {
			if v.Handshakes == nil {
				v.Handshakes = map[string]uint64{}
			}
			v.Handshakes[r.String()] = n
		}
	}
	return v
}

// sslLines are the handshake counters of st in Envoy's names under prefix
// (cluster.<name>.ssl. or listener.<name>.ssl.): ssl.handshake counts every success,
// resumed ones included; the other names one result each. All of them, zeros too, as
// Envoy lists them.
func sslLines(prefix string, st *meshtls.HandshakeStats) []string {
	out := make([]string, 0, 6)
	for _, r := range meshtls.HandshakeResults() {
		n := st.Count(r)
		if r == meshtls.HandshakeOK {
			n = st.Successes()
		}
		out = append(out, prefix+r.EnvoyName()+": "+strconv.FormatUint(n, 10))
	}
	return out
}

// tlsStatsLines are /stats' TLS lines: per cluster and per listener the ssl.*
// counters; for the certificate sources Envoy's server.days_until_first_cert_expiring
// and the reloads and rejects summed over them (tls.certificate_reloads,
// tls.certificate_rejects; per source on /stats/prometheus).
func (s *API) tlsStatsLines(snap *state.Snapshot, now time.Time) []string {
	var lines []string
	for name, c := range snap.Clusters() {
		if st := c.TLSStats(); st != nil {
			lines = append(lines, sslLines("cluster."+name+".ssl.", st)...)
		}
	}
	if s.TLSListeners != nil {
		for name, st := range s.TLSListeners() {
			lines = append(lines, sslLines("listener."+name+".ssl.", st)...)
		}
	}
	if s.TLSPlaintext != nil {
		for name, n := range s.TLSPlaintext() {
			lines = append(lines, "listener."+name+".permissive_plaintext_connections: "+strconv.FormatUint(n, 10))
		}
	}
	if s.TLSSources != nil {
		srcs := s.TLSSources()
		var reloads, rejects uint64
		var first time.Time
		for _, src := range srcs {
			reloads += src.Reloads
			rejects += src.Rejects
			if !src.NotAfter.IsZero() && (first.IsZero() || src.NotAfter.Before(first)) {
				first = src.NotAfter
			}
		}
		if len(srcs) > 0 {
			lines = append(lines, "tls.certificate_reloads: "+strconv.FormatUint(reloads, 10),
				"tls.certificate_rejects: "+strconv.FormatUint(rejects, 10))
		}
		if !first.IsZero() {
			days := int64(first.Sub(now) / (24 * time.Hour))
			if days < 0 {
				days = 0
			}
			lines = append(lines, "server.days_until_first_cert_expiring: "+strconv.FormatInt(days, 10))
		}
	}
	return lines
}

// collectTLS emits the TLS families: handshakes by side, cluster or listener and result
// (used only), and per certificate source its expiry (sources holding a certificate)
// and its reloads and rejects (always, so an alert on rejects sees the first one).
func (c *collector) collectTLS(e *emitter, snap *state.Snapshot) {
	f := c.f
	if snap != nil {
		names := make([]string, 0, len(snap.Clusters()))
		for name, cl := range snap.Clusters() {
			if cl.TLSStats() != nil {
				names = append(names, name)
			}
		}
		sort.Strings(names)
		for _, name := range names {
			st := snap.Cluster(name).TLSStats()
			for _, r := range meshtls.HandshakeResults() {
				e.used(f.tlsHandshakes, st.Count(r), tlsSideClient, name, "", r.String())
			}
		}
	}
	if c.api.TLSListeners != nil {
		for name, st := range c.api.TLSListeners() {
			for _, r := range meshtls.HandshakeResults() {
				e.used(f.tlsHandshakes, st.Count(r), tlsSideServer, "", name, r.String())
			}
		}
	}
	if c.api.TLSPlaintext != nil {
		for name, n := range c.api.TLSPlaintext() {
			e.emit(f.tlsPlaintext, float64(n), name)
		}
	}
	if c.api.TLSSources == nil {
		return
	}
	for _, src := range c.api.TLSSources() {
		if !src.NotAfter.IsZero() {
			e.emit(f.tlsExpiry, float64(src.NotAfter.UnixNano())/1e9, src.Name)
		}
		e.emit(f.tlsReloads, float64(src.Reloads), src.Name)
		e.emit(f.tlsRejects, float64(src.Rejects), src.Name)
	}
}

// envoyNames are the Envoy cluster names of snap's clusters. A backend reached through
// several services with clusters of their own (client policies originating TLS) would
// give them one App Mesh name; those get "_<service>" after it, so that each series is
// one cluster's. Every other cluster keeps App Mesh's name.
func envoyNames(mesh string, snap *state.Snapshot) map[*upstream.Cluster]string {
	out := make(map[*upstream.Cluster]string, len(snap.Clusters()))
	seen := map[string]int{}
	for _, c := range snap.Clusters() {
		n := envoyClusterName(mesh, c.Ref())
		out[c] = n
		seen[n]++
	}
	for c, n := range out {
		if svc := c.Ref().Service; svc != "" && seen[n] > 1 {
			out[c] = n + "_" + svc
		}
	}
	return out
}
