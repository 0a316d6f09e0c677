package upstream

import "sync/atomic"

// L4Stats counts one cluster's L4 connections (opaque TCP and TLS passthrough). All
// fields are updated atomically from connection goroutines.
type L4Stats struct {
	Accepted        atomic.Int64 // connections routed to the cluster
	Active          atomic.Int64 // open now (dialing included)
	Rejected        atomic.Int64 // closed at once by connectionPool.tcp.maxConnections
	ConnectFailures atomic.Int64 // failed connect attempts (each retry counts)
	IdleTimeouts    atomic.Int64 // closed by timeout.idle
	BytesSent       atomic.Int64 // downstream to upstream
	BytesReceived   atomic.Int64 // upstream to downstream
}

// L4View is the /clusters view of a cluster's L4 counters (Envoy's upstream_cx_*).
type L4View struct {
	Accepted        int64 `json:"accepted"`
	Active          int64 `json:"active"`
	Rejected        int64 `json:"rejected"`
	ConnectFailures int64 `json:"connectFailures"`
	IdleTimeouts    int64 `json:"idleTimeouts"`
	BytesSent       int64 `json:"bytesSent"`
	BytesReceived   int64 `json:"bytesReceived"`
}

// View returns the counters, or nil when the cluster never carried an L4 connection
// (an HTTP cluster's view stays as it was).
func (st *L4Stats) View() *L4View {
	if st.Accepted.Load() == 0 && st.Rejected.Load() == 0 {
		return nil
	}
	return &L4View{
		Accepted: st.Accepted.Load(), Active: st.Active.Load(), Rejected: st.Rejected.Load(),
		ConnectFailures: st.ConnectFailures.Load(), IdleTimeouts: st.IdleTimeouts.Load(),
		BytesSent: st.BytesSent.Load(), BytesReceived: st.BytesReceived.Load(),
	}
}
