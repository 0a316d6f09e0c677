package upstream

import (
	"log/slog"
	"net"
	"time"

	"github.com/meshd/meshd/internal/h2"
	"github.com/meshd/meshd/resilience"
	"github.com/meshd/meshd/telemetry"
	meshtls "github.com/meshd/meshd/tls"
)

// Options carries what a cluster needs from the server that builds it.
type Options struct {
	ConnectTimeout time.Duration
	// StreamIdle is the idle timeout of an exchange when neither route nor listener sets one.
	StreamIdle time.Duration
	Dialer     *net.Dialer
	// Clock tells time to resilience decisions; a TickerClock drives the periodic work too.
	Clock resilience.Clock
	Log   *slog.Logger
	// Counters returns the counters a cluster of that name had in the previous
	// snapshot (nil if none), so /stats survives reloads that rebuild a cluster.
	Counters func(name string) *resilience.Counters
	// L4Stats likewise returns that cluster's L4 counters: its active gauge is what
	// connectionPool.tcp.maxConnections limits, and connections opened before a reload
	// that rebuilt the cluster still count against the limit.
	L4Stats func(name string) *L4Stats
	// Stats likewise returns that cluster's request statistics.
	Stats func(name string) *telemetry.HTTPStats
	// HTTP2 receives the connection events of HTTP/2 upstream connections (shared by
	// every cluster of a server); nil: a cluster keeps its own.
	HTTP2 *h2.Counters
	// TLS, when set, makes the cluster originate TLS on every connection it dials (the
	// HTTP/1.1 pools, the HTTP/2 transport, L4 relays, health checks). It is per
	// cluster: state.Compile sets it on its copy of Options for each cluster a client
	// policy covers.
	TLS *TLS
	// TLSStats likewise returns that cluster's TLS handshake counters.
	TLSStats func(name string) *meshtls.HandshakeStats
	// MaxIdlePerEndpoint bounds the idle keep-alive connections an endpoint's pool
	// keeps (a connection put back beyond it is closed); 0: DefaultMaxIdlePerEndpoint.
	MaxIdlePerEndpoint int
}
