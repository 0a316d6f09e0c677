// Package proxy is meshd's data plane, composed: it binds the listeners (ingress,
// egress, its IPv6 twin, admin), tells each new connection's protocol from its first
// bytes, and hands it to a protocol front end (proxy/http1, proxy/http2, proxy/l4), all
// of which route through the one pipeline in proxy/forward over the snapshot that
// proxy/state holds and the clusters of proxy/upstream. docs/ARCHITECTURE.md walks one
// request through these rooms.
//
// Concurrency: one goroutine per downstream connection (plus, for HTTP/2, net/http's
// per-stream goroutines). Each request loads the current snapshot once and finishes on
// it; an apply compiles a new one off the request path and swaps it atomically.
package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/internal/h2"
	"github.com/meshd/meshd/proxy/admin"
	"github.com/meshd/meshd/proxy/forward"
	"github.com/meshd/meshd/proxy/http2"
	"github.com/meshd/meshd/proxy/l4"
	"github.com/meshd/meshd/proxy/listen"
	"github.com/meshd/meshd/proxy/state"
	"github.com/meshd/meshd/proxy/upstream"
	"github.com/meshd/meshd/resilience"
	"github.com/meshd/meshd/telemetry"
	"github.com/meshd/meshd/telemetry/accesslog"
	meshtls "github.com/meshd/meshd/tls"
)

// Options configures a Server. Zero values mean the documented defaults.
type Options struct {
	// Node is the virtual node this sidecar serves. Required unless Gateway is set.
	Node string
	// Gateway, instead of Node, is the virtual gateway this meshd serves
	// (docs/gateway.md): its listeners are bound on GatewayAddr, and no ingress or
	// egress listener is.
	Gateway string
	// GatewayAddr is the address the gateway's listeners bind (each on its port).
	// Default DefaultGatewayAddr.
	GatewayAddr string
	// GatewayListen, when set, binds the listener of gateway port port instead (tests
	// bind 127.0.0.1:0).
	GatewayListen func(port int) (net.Listener, error)
	// Mesh, when set, is the only mesh a config may name (mesh.meshName); a config of
	// another mesh is refused at every apply, the first included. MeshFrom says where
	// it came from (named in the refusal).
	Mesh, MeshFrom string
	// IngressAddr is where redirected inbound traffic arrives. Default ":15000".
	IngressAddr string
	// EgressAddr is where the app's outbound traffic arrives (iptables REDIRECT or
	// HTTP_PROXY). Default "127.0.0.1:15001": loopback only, so meshd is never an open
	// proxy for the network.
	EgressAddr string
	// AdminAddr serves /ready, /config, /clusters, /server_info, /stats/prometheus.
	// Default "127.0.0.1:9901";
	// "off" disables it.
	AdminAddr string
	// ConnectTimeout bounds each upstream TCP connect, and the wait for a connection
	// slot when connectionPool limits are reached. Default 5s.
	ConnectTimeout time.Duration
	// DrainTimeout bounds how long Shutdown waits for in-flight requests. Default 20s
	// (App Mesh's LISTENER_DRAIN_WAIT_TIME_S).
	DrainTimeout time.Duration
	// KeepAliveIdle closes a downstream connection idle between requests this long.
	// Default 1h (Envoy's HTTP connection manager default).
	KeepAliveIdle time.Duration
	// StreamIdle aborts a request whose downstream or upstream sends nothing this long
	// while a request is in progress and no route/listener idle timeout is set. Default 5m.
	StreamIdle time.Duration
	// HeaderTimeout bounds an HTTP/1.x request head from its first byte to its end, so a
	// client trickling header bytes cannot hold a connection (slowloris); the wait for
	// the first byte is KeepAliveIdle's. meshd answers 408 and closes. Default 30s.
	HeaderTimeout time.Duration
	// FirstRequestTimeout bounds the time from accept (from the end of the TLS handshake
	// on a listener that terminates TLS) to the first complete request head of an HTTP
	// connection (HTTP/1.1: the head; HTTP/2: preface, SETTINGS and a first complete
	// HEADERS block), HAProxy's timeout http-request: a client that sends nothing, or
	// half a request, must not hold a connection for KeepAliveIdle. Past it HTTP/1.1
	// answers 408 if some of a head arrived (else just closes), HTTP/2 sends GOAWAY; the
	// connection closes and is counted. L4 (tcp listeners, opaque egress) is not bound
	// by it. Default DefaultFirstRequestTimeout (10s); negative is refused.
	FirstRequestTimeout time.Duration
	// DNS resolves the names service discovery follows (dns, awsCloudMap, static
	// hostnames). Default: a miekg/dns client on DNSResolvers, else on the config's
	// mesh.spec.serviceDiscovery.dnsResolvers, else on /etc/resolv.conf. Tests set their own.
	DNS discovery.DNS
	// DNSResolvers ("ip" or "ip:port") override the config's resolvers and
	// /etc/resolv.conf (meshd run --dns-resolver).
	DNSResolvers []string
	// ResolvConf is the resolver configuration file. Default "/etc/resolv.conf".
	ResolvConf string
	// DNSMinTTL and DNSMaxTTL bound the re-resolution interval a name's TTL asks for;
	// DNSNXDomainGrace is how long a name that stopped existing keeps its endpoints.
	// Defaults: discovery.DefaultMinTTL (5s), DefaultMaxTTL (60s), DefaultNXDomainGrace (30s).
	DNSMinTTL, DNSMaxTTL, DNSNXDomainGrace time.Duration
	// FirstResolveWait bounds how long an apply waits for the first answers of the
	// names new clusters follow. Default 2s.
	FirstResolveWait time.Duration
	Logger           *slog.Logger
	// LogLevel, when set, is the Logger's level, which admin /logging shows and
	// POST /logging?level=... changes at run time.
	LogLevel *slog.LevelVar
	// EgressAddr6 is the IPv6 loopback egress listener that ip6tables REDIRECT
	// targets. Default "[::1]:<egress port>" when EgressAddr is on 127.0.0.1; "off"
	// disables it. Failing to bind it is logged, not fatal (the host may lack IPv6).
	EgressAddr6 string
	// SniffTimeout is how long an egress connection may stay silent before it is
	// treated as a server-first protocol and relayed as opaque TCP. Default
	// DefaultSniffTimeout (200ms).
	SniffTimeout time.Duration
	// OriginalDst reads a redirected connection's original destination. Default
	// intercept.OriginalDst (SO_ORIGINAL_DST); tests substitute their own.
	OriginalDst func(*net.TCPConn) (netip.AddrPort, error)
	// Version is reported by /server_info.
	Version string
	// Clock tells time to resilience decisions (outlier ejection, health verdicts, rate
	// limits) and makes the tickers of the clusters' periodic outlier sweeps and health
	// check rounds; nil means the system clock. Tests inject a fake one.
	Clock resilience.Clock
	// AdminToken, when set, is the bearer token the admin API requires for changing
	// the config (PUT /config, POST /config/validate) and for reading it (/config,
	// /config/history, /debug/route). It is required when AdminAddr is not a loopback
	// address: New fails without one.
	AdminToken string
	// RequireIfMatch makes PUT /config answer 428 unless it carries If-Match, so no
	// writer can overwrite a config it has not seen. Default: If-Match is optional.
	RequireIfMatch bool
	// PersistPath, when set, is where each applied config is written (atomically), so
	// a restart while the config source is unreachable can come up serving it.
	PersistPath string
	// ReleaseMemory, when set, hands the memory an applied config's parse and compile
	// (and the config it replaced) left as garbage back to the OS before the apply
	// returns (state.Holder.ReleaseMemory), unless the request says DeferRelease.
	// meshd run sets it, and defers its first config's release until it serves.
	ReleaseMemory bool
	// HTTP2 are the defences of downstream HTTP/2 connections (h2.DefaultLimits when
	// zero, Envoy's edge defaults); the request head bounds (60 KiB, 100 fields) and the
	// idle timeout (KeepAliveIdle) are set by meshd, whatever this says.
	HTTP2 h2.Limits
	// MaxReplayBody bounds the request body kept so that a retry can send it again, for
	// every protocol; a larger body is retried only when none of it was sent. Default
	// 64 KiB.
	MaxReplayBody int
	// CloudWatchEMF, when set ("stdout", "stderr" or a file path), receives every
	// CloudWatchEMFInterval (default 1m) CloudWatch Embedded Metric Format lines with
	// each cluster's and listener's request counts, errors, retries and latency, which
	// the awslogs driver or FireLens ship to CloudWatch with no agent sidecar.
	CloudWatchEMF         string
	CloudWatchEMFInterval time.Duration
	// DrainGrace is how long Shutdown keeps accepting and serving as usual after /ready
	// started failing (Envoy's drain sequence): an app still calling out while it shuts
	// down is not refused, and load balancers see the failing readiness first. Then the
	// listeners close and in-flight requests drain. Default 0 (no grace).
	DrainGrace time.Duration
	// Tracer, when set, traces the proxied HTTP and gRPC requests: a server span per
	// request, a client span per upstream attempt, the trace context propagated
	// upstream (telemetry/tracing builds one; docs/tracing.md). Nil: tracing off, and
	// nothing of it runs on the request path. The caller shuts it down (flushes it)
	// after Shutdown.
	Tracer telemetry.Tracer
	// MetricsLevel chooses the series of the admin /stats/prometheus (and /metrics):
	// MetricsLevelDefault ("" means it) or MetricsLevelDetailed, which adds per-endpoint
	// series (an address label), latency histograms per route and per listener, and
	// status codes per listener (docs/metrics.md). Anything else is an error of New.
	MetricsLevel string
	// EnvoyStatsTags adds App Mesh's stats tags to every exported series: appmesh_mesh,
	// appmesh_virtual_node (this node) and, on route series, appmesh_virtual_service, as
	// App Mesh's Envoy does with ENABLE_ENVOY_STATS_TAGS=1.
	EnvoyStatsTags bool
	// TLS configures the loader of the certificate sources that listener and client
	// policy tls blocks name (the SPIFFE Workload API address for sds sources, the clock).
	// The Server owns the loader: sources are loaded once, shared by every snapshot, and
	// closed by Shutdown.
	TLS meshtls.LoaderOptions
	// AdminAccessLog, when set, is a file that gets a line per admin request (Envoy's
	// admin access log; App Mesh's ENVOY_ADMIN_ACCESS_LOG_FILE), "/dev/stdout" included.
	// A file that cannot be opened fails StartAdmin.
	AdminAccessLog string
	// CommandLineOptions are shown by /server_info as Envoy's command_line_options,
	// beside the ones the server knows itself (drain_time, service_node, mode).
	CommandLineOptions map[string]any
	// TLSHandshakeTimeout bounds the TLS handshake of a connection to a listener that
	// terminates TLS (STRICT, or PERMISSIVE once the first bytes said TLS); a client that
	// has not completed it by then is disconnected (logged at debug, counted). Default
	// DefaultTLSHandshakeTimeout (10s).
	TLSHandshakeTimeout time.Duration
	// Limits bound the downstream connections and the heap, and say where meshd sheds
	// load (limits.go).
	Limits ConnLimits
}

// Metrics levels (Options.MetricsLevel).
const (
	MetricsLevelDefault  = "default"
	MetricsLevelDetailed = "detailed"
)

func (o *Options) setDefaults() {
	if o.IngressAddr == "" {
		o.IngressAddr = ":15000"
	}
	if o.EgressAddr == "" {
		o.EgressAddr = "127.0.0.1:15001"
	}
	if o.AdminAddr == "" {
		o.AdminAddr = "127.0.0.1:9901"
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = 5 * time.Second
	}
	if o.DrainTimeout == 0 {
		o.DrainTimeout = 20 * time.Second
	}
	if o.KeepAliveIdle == 0 {
		o.KeepAliveIdle = time.Hour
	}
	if o.StreamIdle == 0 {
		o.StreamIdle = 5 * time.Minute
	}
	if o.HeaderTimeout == 0 {
		o.HeaderTimeout = 30 * time.Second
	}
	if o.FirstRequestTimeout == 0 {
		o.FirstRequestTimeout = DefaultFirstRequestTimeout
	}
	if o.GatewayAddr == "" {
		o.GatewayAddr = DefaultGatewayAddr
	}
	if o.ResolvConf == "" {
		o.ResolvConf = "/etc/resolv.conf"
	}
	o.Logger = telemetry.OrDiscard(o.Logger)
}

// Server is one meshd sidecar. Create it with New, Apply a config, Start it, and
// Shutdown it; all methods are safe for concurrent use.
type Server struct {
	opts   Options
	log    *slog.Logger
	dialer *net.Dialer

	state state.Holder
	env   forward.Env
	pass  forward.Passthrough
	l4    l4.Server
	h2in  *http2.Server
	h2out *http2.Server
	// h2Counters are the HTTP/2 connection events of the ingress and egress listeners
	// (downstream) and of every cluster's upstream connections, in that order.
	h2Counters [3]*h2.Counters
	api        admin.API

	started  atomic.Pointer[time.Time]
	ready    atomic.Bool
	unready  atomic.Bool // Shutdown began: /ready fails (the drain grace may still serve)
	draining atomic.Bool // listeners closed: connections finish their request and close

	// healthFailed is set by the admin's POST /healthcheck/fail: readiness fails while
	// the listeners keep serving, until /healthcheck/ok.
	healthFailed atomic.Bool
	quitOnce     sync.Once
	quit         chan struct{} // closed by the admin's POST /quitquitquit

	// The listener half of the drain runs once, from Drain or the admin's POST
	// /drain_listeners; a second caller waits for the first's result.
	drainMu   sync.Mutex
	drainDone chan struct{}
	drainErr  error

	ingress, egress net.Listener
	egress6         net.Listener // IPv6 loopback egress; nil when not bound
	adminSrv        *http.Server
	adminLn         net.Listener
	adminLog        *os.File // Options.AdminAccessLog; closed by Drain

	conns  listen.Tracker
	ctx    context.Context // ends when Shutdown closes the listeners
	cancel context.CancelFunc
	loopWG sync.WaitGroup
	reaper upstream.Reaper // closes idle pooled upstream connections
	// parker holds the idle HTTP/1.1 keep-alive connections without their goroutines
	// (listen.Parker; nil where it is not available: they keep their goroutines).
	parker *listen.Parker

	// DNS watcher registries by resolver set (registryFor).
	regMu      sync.Mutex
	registries map[string]*discovery.Registry

	emfStop, emfDone chan struct{} // the CloudWatch EMF goroutine (emf.go)

	// Access log writers by path and format (accessLog), closed when no snapshot in force
	// uses them.
	logMu sync.Mutex
	logs  map[string]*accesslog.Writer

	gw gatewayListeners // the listeners of the virtual gateway served (gateway.go)

	tls   *meshtls.Loader // certificate sources of the tls blocks (Options.TLS)
	tlsIn tlsIngress      // the rate limit of TLS termination's log lines

	limits  [forward.Egress + 1]listen.Limit // the listeners' connection bounds, by Kind
	reserve listen.FDReserve                 // the admin listener's descriptors for when none is left
	over    overload                         // the overload watermarks (limits.go)
}

// New returns a Server that has no config yet: Apply one before Start.
func New(opts Options) (*Server, error) {
	switch {
	case opts.Node == "" && opts.Gateway == "":
		return nil, errors.New("proxy: Options.Node is required (the virtual node this sidecar serves), or Options.Gateway (the virtual gateway)")
	case opts.Node != "" && opts.Gateway != "":
		return nil, fmt.Errorf("proxy: Options.Node %q and Options.Gateway %q are both set: a meshd serves one virtual node or one virtual gateway", opts.Node, opts.Gateway)
	}
	opts.setDefaults()
	if err := checkAdminExposure(opts); err != nil {
		return nil, err
	}
	switch opts.MetricsLevel {
	case "", MetricsLevelDefault, MetricsLevelDetailed:
	default:
		return nil, fmt.Errorf("proxy: Options.MetricsLevel %q: want %q or %q", opts.MetricsLevel, MetricsLevelDefault, MetricsLevelDetailed)
	}
	if opts.MaxReplayBody < 0 {
		return nil, fmt.Errorf("proxy: Options.MaxReplayBody %d: want >= 0 (0: the default %d)", opts.MaxReplayBody, forward.DefaultMaxReplayBody)
	}
	if opts.FirstRequestTimeout < 0 {
		return nil, fmt.Errorf("proxy: Options.FirstRequestTimeout %s: want > 0 (0: the default %s)", opts.FirstRequestTimeout, DefaultFirstRequestTimeout)
	}
	if opts.TLSHandshakeTimeout < 0 {
		return nil, fmt.Errorf("proxy: Options.TLSHandshakeTimeout %s: want > 0 (0: the default %s)", opts.TLSHandshakeTimeout, DefaultTLSHandshakeTimeout)
	}
	if err := opts.Limits.check(); err != nil {
		return nil, err
	}
	s := &Server{opts: opts, log: opts.Logger, dialer: &net.Dialer{KeepAlive: 30 * time.Second}, quit: make(chan struct{})}
	s.conns.Max = opts.Limits.total()
	for k := range s.limits {
		s.limits[k].Max = opts.Limits.MaxListenerConnections
	}
	s.over.heapMax, s.over.connMax = opts.Limits.OverloadHeapBytes, opts.Limits.OverloadConnections
	s.reserve.N = adminFDReserve
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.h2Counters = [3]*h2.Counters{{}, {}, {}}
	if opts.TLS.Logger == nil {
		opts.TLS.Logger = s.log
	}
	s.tls = meshtls.NewLoader(opts.TLS)
	cluster := upstream.Options{
		HTTP2:          s.h2Counters[2],
		ConnectTimeout: opts.ConnectTimeout,
		StreamIdle:     opts.StreamIdle,
		Dialer:         s.dialer,
		Clock:          opts.Clock,
		Log:            s.log,

		MaxIdlePerEndpoint: opts.Limits.UpstreamIdlePerEndpoint,
	}
	s.state = state.Holder{
		Node:          opts.served(),
		Gateway:       opts.Gateway != "",
		Mesh:          opts.Mesh,
		MeshFrom:      opts.MeshFrom,
		Options:       state.Options{Registry: s.registryFor, FirstResolveWait: opts.FirstResolveWait, Cluster: cluster, TLS: s.tls, Ready: s.Ready},
		Log:           s.log,
		PersistPath:   opts.PersistPath,
		ReleaseMemory: opts.ReleaseMemory,
		OnSwap: func(prev, next *Snapshot) {
			s.drainRemovedListeners(prev, next)
			s.syncGateway(next)
			s.closeUnusedLogs(next)
		},
	}
	s.state.Options.AccessLog = s.accessLog
	passOpts := cluster
	passOpts.Dialer = s.selfGuardDialer()
	s.pass = forward.Passthrough{Options: passOpts, IsSelf: s.isSelf}
	s.env = forward.Env{
		State:               &s.state,
		Passthrough:         &s.pass,
		KeepAliveIdle:       opts.KeepAliveIdle,
		StreamIdle:          opts.StreamIdle,
		HeaderTimeout:       opts.HeaderTimeout,
		MaxReplayBody:       opts.MaxReplayBody,
		FirstRequestTimeout: opts.FirstRequestTimeout,
		UpstreamHold:        opts.Limits.UpstreamHold,
		Overloaded:          &s.over.active,
		Draining:            &s.draining,
		Log:                 s.log,
		Tracer:              opts.Tracer,
	}
	s.l4 = l4.Server{Env: &s.env, ConnectTimeout: opts.ConnectTimeout, Dialer: passOpts.Dialer}
	s.h2in = http2.New(&s.env, forward.Ingress, opts.HTTP2, s.h2Counters[0])
	s.h2out = http2.New(&s.env, forward.Egress, opts.HTTP2, s.h2Counters[1])
	s.api = admin.API{
		State: &s.state, Node: opts.served(), Version: opts.Version, Token: opts.AdminToken,
		RequireIfMatch: opts.RequireIfMatch, L4: &s.l4, LogLevel: opts.LogLevel, AccessLogs: s.accessLogStats,
		IngressStats: &s.env.IngressStats, EgressStats: &s.env.EgressStats,
		FirstRequestTimeouts: map[string]*atomic.Uint64{"ingress": &s.env.FirstRequestTimeouts[forward.Ingress], "egress": &s.env.FirstRequestTimeouts[forward.Egress]},
		HTTP2:                map[string]*h2.Counters{"ingress": s.h2Counters[0], "egress": s.h2Counters[1], "upstream": s.h2Counters[2]},
		DetailedMetrics:      opts.MetricsLevel == MetricsLevelDetailed, EnvoyStatsTags: opts.EnvoyStatsTags,
		TLSSources:   s.tls.Stats,
		TLSListeners: s.TLSListenerStats,
		TLSPlaintext: s.TLSPlaintextStats,
		Conns:        s.connStats,
		Overload:     s.overloadStats,
		Ready:        s.Ready,
		Draining:     s.unready.Load,

		HealthCheckFailed:  &s.healthFailed,
		Quit:               func() { s.quitOnce.Do(func() { close(s.quit) }) },
		DrainListeners:     s.drainListenersAsync,
		Listeners:          s.listenerInfo,
		Defaults:           opts.effectiveDefaults(),
		CommandLineOptions: opts.commandLineOptions(),
		Started: func() time.Time {
			if t := s.started.Load(); t != nil {
				return *t
			}
			return time.Time{}
		},
	}
	return s, nil
}

// Snapshot returns the config snapshot in force, or nil before the first Apply.
func (s *Server) Snapshot() *Snapshot { return s.state.Load() }

// Apply validates and compiles cfg and swaps it in, through the same pipeline as
// ApplyDocument (history, counters, persistence, listener drain). On any error the
// snapshot in force keeps serving and a *RejectedError is returned (unwrapping to a
// *config.Errors for validation failures).
func (s *Server) Apply(ctx context.Context, cfg *config.Config, source string) (*Snapshot, error) {
	return s.state.Apply(ctx, cfg, ApplyRequest{Source: source})
}

// ApplyDocument runs the apply pipeline on a document (see state.Holder.ApplyDocument):
// precondition, parse, validate, compile, swap. On any failure the config in force keeps
// serving and a *RejectedError is returned.
func (s *Server) ApplyDocument(ctx context.Context, req ApplyRequest) (*Snapshot, error) {
	return s.state.ApplyDocument(ctx, req)
}

// History returns the last HistorySize apply attempts, newest first.
func (s *Server) History() []Attempt { return s.state.History() }

// LastRejected returns the most recent rejected (non-dry-run) attempt, if any.
func (s *Server) LastRejected() (Attempt, bool) { return s.state.LastRejected() }

// ReloadStats returns the apply counters.
func (s *Server) ReloadStats() ReloadStats { return s.state.ReloadStats() }

// Start binds the ingress, egress and admin listeners and starts serving. A config must
// have been applied. Binding errors are returned and nothing is left running.
func (s *Server) Start() error {
	if s.state.Load() == nil {
		return errors.New("proxy: Start before any config was applied")
	}
	now := time.Now()
	s.started.Store(&now)
	if err := s.startEMF(); err != nil {
		return err
	}
	s.startParker()
	if s.opts.Gateway != "" {
		return s.startGatewayServer()
	}
	var err error
	if s.ingress, err = net.Listen("tcp", s.opts.IngressAddr); err != nil {
		s.stopEMF()
		s.stopParker()
		return fmt.Errorf("ingress listener %s: %w", s.opts.IngressAddr, err)
	}
	if s.egress, err = net.Listen("tcp", s.opts.EgressAddr); err != nil {
		s.stopEMF()
		s.stopParker()
		_ = s.ingress.Close()
		return fmt.Errorf("egress listener %s: %w", s.opts.EgressAddr, err)
	}
	if err := s.StartAdmin(); err != nil {
		s.stopEMF()
		s.stopParker()
		_ = s.ingress.Close()
		_ = s.egress.Close()
		return err
	}
	s.startEgress6()
	s.accept(s.ingress, forward.Ingress)
	s.accept(s.egress, forward.Egress)
	s.reaper.Start(s.sweepIdle)
	s.startOverload()
	s.ready.Store(true)
	s.log.Info("meshd listening", "node", s.opts.Node, "ingress", s.ingress.Addr().String(),
		"egress", s.egress.Addr().String(), "admin", s.AdminAddr(),
		"max_connections", s.conns.Max, "max_listener_connections", s.opts.Limits.MaxListenerConnections, "rlimit_nofile", NoFileLimit())
	return nil
}

// startParker starts the Parker of idle connections; without one (not Linux, or epoll
// refused) idle connections keep their goroutines, which costs memory, not function.
func (s *Server) startParker() {
	p, err := listen.NewParker(s.releaseIdleMemory)
	if err != nil {
		if !errors.Is(err, errors.ErrUnsupported) {
			s.log.Warn("idle keep-alive connections keep a goroutine each (no parking)", "err", err)
		}
		return
	}
	s.parker = p
}

// stopParker stops the Parker of a server that failed to start.
func (s *Server) stopParker() {
	if s.parker != nil {
		s.parker.Close()
	}
}

// releaseIdleMemory returns to the system what a wave of connections going idle freed
// (listen.NewParker's onSettle): their buffers sit in sync.Pools, which the second
// collection after their return empties, and an idle process collects only every two
// minutes; the scavenger then gives back only what exceeds the heap goal. Two
// collections, once per wave of at least listen.SettleMin parked connections, off the
// request path.
func (s *Server) releaseIdleMemory() {
	runtime.GC()
	debug.FreeOSMemory()
	s.log.Debug("idle connections parked; freed memory returned to the system", "parked", s.ParkedConns())
}

// accept runs ln's accept loop on a goroutine that Shutdown joins.
func (s *Server) accept(ln net.Listener, kind forward.Kind) {
	s.loopWG.Add(1)
	go func() {
		defer s.loopWG.Done()
		a := listen.Acceptor{
			Name: kind.String(), Tracker: &s.conns, Limit: &s.limits[kind], Log: s.log, Parker: s.parker,
			OrigDst:    func(c net.Conn) netip.AddrPort { return listen.OriginalDst(c, s.opts.OriginalDst) },
			Serve:      func(tc *listen.Conn) { s.serveConn(tc, kind) },
			Overloaded: s.over.active.Load,
			// Out of descriptors: the idle pooled upstream connections go too (after the
			// idle downstream ones the accept loop sheds itself).
			OnFDExhausted: func() { s.sweepIdle(time.Now(), 0) },
		}
		a.Run(s.ctx, ln)
	}()
}

// StartAdmin binds and serves the admin listener on its own, so that while meshd
// fetches and applies its first config /ready already answers 503 and /server_info
// says PRE_INITIALIZING, rather than the port refusing connections. Start calls it when
// it has not run; calling it twice is harmless. Shutdown closes it.
func (s *Server) StartAdmin() error {
	if s.opts.AdminAddr == "off" || s.adminLn != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.opts.AdminAddr)
	if err != nil {
		return fmt.Errorf("admin listener %s: %w", s.opts.AdminAddr, err)
	}
	h := s.api.Handler()
	if p := s.opts.AdminAccessLog; p != "" {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("admin access log: %w", err)
		}
		s.adminLog = f
		h = admin.AccessLog(h, f)
	}
	// The admin listener keeps descriptors in reserve, so /ready and /stats answer while
	// the data plane is at the process's fd limit.
	s.reserve.Fill()
	ln = &listen.ReservedListener{Listener: ln, Reserve: &s.reserve, Name: "admin", Log: s.log}
	s.adminLn = ln
	s.adminSrv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second,
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateClosed || st == http.StateHijacked {
				s.reserve.Fill()
			}
		}}
	s.loopWG.Add(1)
	go func() {
		defer s.loopWG.Done()
		if err := s.adminSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin listener stopped", "err", err)
		}
	}()
	return nil
}

// IngressAddr, EgressAddr and AdminAddr report the bound addresses (useful with port 0).
func (s *Server) IngressAddr() string { return addrString(s.ingress) }
func (s *Server) EgressAddr() string  { return addrString(s.egress) }
func (s *Server) AdminAddr() string   { return addrString(s.adminLn) }

// EgressAddr6 reports the bound IPv6 egress address, "" when there is none.
func (s *Server) EgressAddr6() string { return addrString(s.egress6) }

func addrString(l net.Listener) string {
	if l == nil {
		return ""
	}
	return l.Addr().String()
}

// Ready reports whether the server has a config, is listening, is not shutting down,
// and its health checks were not failed through the admin's /healthcheck/fail.
func (s *Server) Ready() bool {
	return s.ready.Load() && !s.unready.Load() && !s.healthFailed.Load()
}

// QuitRequested is closed when the admin's POST /quitquitquit asks the process to drain
// and exit; meshd run treats it as SIGTERM. A library user that never reads it keeps
// serving.
func (s *Server) QuitRequested() <-chan struct{} { return s.quit }

// Shutdown drains, as Envoy does: /ready fails at once; for Options.DrainGrace (bounded
// by ctx) the listeners keep accepting and serving as usual; then they stop accepting,
// idle connections close, in-flight requests finish (their connections then close),
// and after ctx or the drain timeout whatever remains is closed. The admin listener
// closes last.
func (s *Server) Shutdown(ctx context.Context) error { return s.Drain(ctx, s.opts.DrainGrace) }

// Drain is Shutdown with the given grace instead of Options.DrainGrace (meshd run skips
// the grace on SIGINT, an interactive stop). ctx ending cuts the grace short too.
func (s *Server) Drain(ctx context.Context, grace time.Duration) error {
	err := s.drainListeners(ctx, grace)
	// After the listeners' connections are gone (or were closed at the drain timeout,
	// unparking them): nothing is parked any more.
	s.stopParker()
	if s.adminSrv != nil {
		_ = s.adminSrv.Close()
	}
	s.loopWG.Wait()
	if s.adminLog != nil {
		_ = s.adminLog.Close()
	}
	s.stopOverload()
	s.reserve.Close()
	s.stopEMF()
	// The mirrors' copies in flight end before their clusters close.
	s.env.Mirrors.Stop()
	s.state.Shutdown()
	s.reaper.Halt()
	s.pass.Cache.CloseAll()
	s.regMu.Lock()
	for _, r := range s.registries {
		r.Close()
	}
	s.registries = nil
	s.regMu.Unlock()
	s.closeUnusedLogs(nil)
	if cerr := s.tls.Close(); cerr != nil {
		s.log.Warn("closing the TLS certificate sources", "err", cerr)
	}
	return err
}

// drainListenersAsync is the admin's POST /drain_listeners: the listener half of the
// drain on a goroutine of its own (Drain waits for it through drainListeners), the admin
// listener and the process staying up.
func (s *Server) drainListenersAsync(graceful bool) {
	grace := time.Duration(0)
	if graceful {
		grace = s.opts.DrainGrace
	}
	s.log.Info("draining the listeners (admin /drain_listeners)", "grace", grace, "timeout", s.opts.DrainTimeout)
	go func() {
		if err := s.drainListeners(context.Background(), grace); err != nil {
			s.log.Warn("drain incomplete", "err", err)
		}
	}()
}

// drainListeners runs the listener half of the drain once: readiness fails, the grace
// passes, the listeners close and their connections drain within the drain timeout. A
// later caller waits for the first's result.
func (s *Server) drainListeners(ctx context.Context, grace time.Duration) error {
	s.drainMu.Lock()
	if done := s.drainDone; done != nil {
		s.drainMu.Unlock()
		<-done // bounded by the first caller's grace and drain timeout
		return s.drainErr
	}
	s.drainDone = make(chan struct{})
	s.drainMu.Unlock()
	s.drainErr = s.closeListeners(ctx, grace)
	close(s.drainDone)
	return s.drainErr
}

func (s *Server) closeListeners(ctx context.Context, grace time.Duration) error {
	s.unready.Store(true)
	if g := grace; g > 0 && (s.ingress != nil || s.opts.Gateway != "") {
		s.log.Info("draining: /ready fails; listeners keep serving for the grace", "grace", g)
		t := time.NewTimer(g)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	s.draining.Store(true)
	s.cancel()
	for _, l := range []net.Listener{s.ingress, s.egress, s.egress6} {
		if l != nil {
			_ = l.Close()
		}
	}
	s.closeGateway()
	ctx, cancel := context.WithTimeout(ctx, s.opts.DrainTimeout)
	defer cancel()
	// HTTP/2 connections get GOAWAY and finish their open streams.
	var h2wg sync.WaitGroup
	for _, srv := range []*http2.Server{s.h2in, s.h2out} {
		h2wg.Go(func() { _ = srv.Shutdown(ctx) })
	}
	defer h2wg.Wait()
	s.conns.Close()
	done := s.conns.Wait()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("drain: %d connections still open after the drain timeout: %w", s.conns.Len(), ctx.Err())
		s.conns.Each(func(c *listen.Conn) { _ = c.CloseNow() })
		_ = s.h2in.Close()
		_ = s.h2out.Close()
		<-done
	}
	return err
}

// listenerInfo lists the bound listeners for the admin's /listeners.
func (s *Server) listenerInfo() []admin.ListenerInfo {
	var out []admin.ListenerInfo
	for _, l := range []struct {
		name string
		ln   net.Listener
	}{{"ingress", s.ingress}, {"egress", s.egress}, {"egress-ipv6", s.egress6}} {
		if l.ln != nil {
			out = append(out, admin.ListenerInfo{Name: l.name, Address: l.ln.Addr().String()})
		}
	}
	addrs := s.GatewayAddrs()
	for _, p := range slices.Sorted(maps.Keys(addrs)) {
		out = append(out, admin.ListenerInfo{Name: "gateway:" + strconv.Itoa(p), Address: addrs[p]})
	}
	return out
}

// effectiveDefaults are the settings /config_dump shows beside the config: what applies
// where the config says nothing.
func (o *Options) effectiveDefaults() map[string]any {
	return map[string]any{
		"connectTimeout":         o.ConnectTimeout.String(),
		"drainTimeout":           o.DrainTimeout.String(),
		"drainGrace":             o.DrainGrace.String(),
		"keepAliveIdle":          o.KeepAliveIdle.String(),
		"streamIdle":             o.StreamIdle.String(),
		"headerTimeout":          o.HeaderTimeout.String(),
		"firstRequestTimeout":    o.FirstRequestTimeout.String(),
		"maxReplayBody":          o.MaxReplayBody,
		"routePerRequestTimeout": "0s (none: App Mesh applied a hidden 15s; meshd applies the route's or listener's timeout only)",
		"lbPolicy":               "LEAST_REQUEST",
		"retryPolicy":            "App Mesh's default where a route sets none (routes[].retryPolicy.default)",
		// The connection limits in force (limits.go): 0 is none or off.
		"maxConnections":          o.Limits.total(),
		"maxListenerConnections":  o.Limits.MaxListenerConnections,
		"overloadHeapBytes":       o.Limits.OverloadHeapBytes,
		"overloadConnections":     o.Limits.OverloadConnections,
		"upstreamHold":            cmp.Or(o.Limits.UpstreamHold, forward.DefaultUpstreamHold).String(),
		"upstreamIdlePerEndpoint": cmp.Or(o.Limits.UpstreamIdlePerEndpoint, upstream.DefaultMaxIdlePerEndpoint),
	}
}

// commandLineOptions are /server_info's command_line_options: the caller's, over what
// the server knows (Envoy's names).
func (o *Options) commandLineOptions() map[string]any {
	m := map[string]any{
		"drain_time":          o.DrainTimeout.String(),
		"service_node":        o.served(),
		"mode":                "Serve",
		"restart_epoch":       0,
		"disable_hot_restart": true,
	}
	for k, v := range o.CommandLineOptions {
		m[k] = v
	}
	return m
}

// sweepIdle closes idle upstream connections older than maxAge at now, in the clusters
// of the snapshot in force and the passthrough ones; the idle reaper calls it.
func (s *Server) sweepIdle(now time.Time, maxAge time.Duration) {
	if snap := s.state.Load(); snap != nil {
		for _, c := range snap.Clusters() {
			c.ReapIdle(now, maxAge)
		}
	}
	s.pass.Cache.ReapIdle(now, maxAge)
}

// drainRemovedListeners closes, once their current request is done, the ingress
// connections addressed to a node listener that next no longer has. meshd's ingress
// is one socket for every node listener (iptables redirects each app port to it), so
// "removing a listener" cannot close a socket: instead each open connection to the
// removed port is marked draining. An idle one is woken and closed now; a busy one
// finishes its request on the snapshot it loaded and is closed when it would wait for
// the next (its last response says Connection: close). New connections to the port get
// 404 no_listener from the new snapshot. A connection without an original destination
// (no iptables) was served by the node's only listener and drains when that changes.
//
// An HTTP/2 connection gets GOAWAY (its last stream id the last stream it took): its
// open streams finish, the client opens new ones on a new connection, and it closes when
// it has none.
func (s *Server) drainRemovedListeners(prev, next *Snapshot) {
	if prev == nil || s.ingress == nil {
		return
	}
	before, after := prev.NodeListenerPorts(), next.NodeListenerPorts()
	removed := false
	for p := range before {
		if !after[p] {
			removed = true
		}
	}
	if !removed && prev.IngressPort(0) == next.IngressPort(0) {
		return
	}
	ia, _ := s.ingress.Addr().(*net.TCPAddr)
	if ia == nil {
		return
	}
	var gone []*listen.Conn
	s.conns.Each(func(c *listen.Conn) {
		la, _ := c.LocalAddr().(*net.TCPAddr)
		if la == nil || la.Port != ia.Port || !(ia.IP.IsUnspecified() || ia.IP.Equal(la.IP)) {
			return // an egress connection
		}
		port := int(c.Orig.Port())
		drain := false
		if port == 0 {
			drain = prev.IngressPort(0) != next.IngressPort(0)
		} else {
			drain = before[port] && !after[port]
		}
		if drain {
			c.Drain.Store(true)
			c.WakeIfIdle()
			gone = append(gone, c)
		}
	})
	// Outside Each: the tracker's lock, which every accept and close takes, must not be
	// held while a GOAWAY is written (or an idle connection closed).
	for _, c := range gone {
		s.h2in.GoAway(c)
	}
	if len(gone) > 0 {
		s.log.Info("draining connections of removed listeners", "connections", len(gone))
	}
}

// startEgress6 binds the IPv6 loopback egress listener that ip6tables REDIRECT targets
// ([::1]:<egress port>), when Options.EgressAddr6 asks for it or by default when the
// egress listener is on 127.0.0.1. A bind failure is logged: without IPv6 there is no
// IPv6 traffic to catch. Start calls it before any accept loop runs.
func (s *Server) startEgress6() {
	addr := s.opts.EgressAddr6
	if addr == "off" {
		return
	}
	if addr == "" {
		ta, ok := s.egress.Addr().(*net.TCPAddr)
		if !ok || !ta.IP.Equal(net.IPv4(127, 0, 0, 1)) {
			return
		}
		addr = net.JoinHostPort("::1", strconv.Itoa(ta.Port))
	}
	ln, err := net.Listen("tcp6", addr)
	if err != nil {
		s.log.Warn("IPv6 egress listener not bound; IPv6 connections redirected by ip6tables will fail", "addr", addr, "err", err)
		return
	}
	s.egress6 = ln
	s.accept(ln, forward.Egress)
}

// ParkedConns is the number of idle keep-alive connections parked without a goroutine
// (listen.Parker).
func (s *Server) ParkedConns() int {
	if s.parker == nil {
		return 0
	}
	return s.parker.Len()
}
