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
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/proxy/admin"
	"github.com/meshd/meshd/proxy/forward"
	"github.com/meshd/meshd/proxy/http1"
	"github.com/meshd/meshd/proxy/http2"
	"github.com/meshd/meshd/proxy/l4"
	"github.com/meshd/meshd/proxy/listen"
	"github.com/meshd/meshd/proxy/state"
	"github.com/meshd/meshd/proxy/upstream"
	"github.com/meshd/meshd/resilience"
	"github.com/meshd/meshd/telemetry"
	"github.com/meshd/meshd/telemetry/accesslog"
)

// Options configures a Server. Zero values mean the documented defaults.
type Options struct {
	// Node is the virtual node this sidecar serves. Required.
	Node string
	// IngressAddr is where redirected inbound traffic arrives. Default ":15000".
	IngressAddr string
	// EgressAddr is where the app's outbound traffic arrives (iptables REDIRECT or
	// HTTP_PROXY). Default "127.0.0.1:15001": loopback only, so meshd is never an open
	// proxy for the network.
	EgressAddr string
	// AdminAddr serves /ready, /config, /clusters, /server_info. Default "127.0.0.1:9901";
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
	// MaxReplayBody bounds the request body kept so that a retry can send it again, for
	// every protocol; a larger body is retried only when none of it was sent. Default
	// 64 KiB.
	MaxReplayBody int
	// DrainGrace is how long Shutdown keeps accepting and serving as usual after /ready
	// started failing (Envoy's drain sequence): an app still calling out while it shuts
	// down is not refused, and load balancers see the failing readiness first. Then the
	// listeners close and in-flight requests drain. Default 0 (no grace).
	DrainGrace time.Duration
}

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
	api   admin.API

	started  atomic.Pointer[time.Time]
	ready    atomic.Bool
	unready  atomic.Bool // Shutdown began: /ready fails (the drain grace may still serve)
	draining atomic.Bool // listeners closed: connections finish their request and close

	ingress, egress net.Listener
	egress6         net.Listener // IPv6 loopback egress; nil when not bound
	adminSrv        *http.Server
	adminLn         net.Listener

	conns  listen.Tracker
	ctx    context.Context // ends when Shutdown closes the listeners
	cancel context.CancelFunc
	loopWG sync.WaitGroup
	reaper upstream.Reaper // closes idle pooled upstream connections

	// DNS watcher registries by resolver set (registryFor).
	regMu      sync.Mutex
	registries map[string]*discovery.Registry

	// Access log writers by path and format (accessLog), closed when no snapshot in force
	// uses them.
	logMu sync.Mutex
	logs  map[string]*accesslog.Writer
}

// New returns a Server that has no config yet: Apply one before Start.
func New(opts Options) (*Server, error) {
	if opts.Node == "" {
		return nil, errors.New("proxy: Options.Node is required (the virtual node this sidecar serves)")
	}
	opts.setDefaults()
	if err := checkAdminExposure(opts); err != nil {
		return nil, err
	}
	if opts.MaxReplayBody < 0 {
		return nil, fmt.Errorf("proxy: Options.MaxReplayBody %d: want >= 0 (0: the default %d)", opts.MaxReplayBody, forward.DefaultMaxReplayBody)
	}
	s := &Server{opts: opts, log: opts.Logger, dialer: &net.Dialer{KeepAlive: 30 * time.Second}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	cluster := upstream.Options{
		ConnectTimeout: opts.ConnectTimeout,
		StreamIdle:     opts.StreamIdle,
		Dialer:         s.dialer,
		Clock:          opts.Clock,
		Log:            s.log,
	}
	s.state = state.Holder{
		Node:        opts.Node,
		Options:     state.Options{Registry: s.registryFor, FirstResolveWait: opts.FirstResolveWait, Cluster: cluster},
		Log:         s.log,
		PersistPath: opts.PersistPath,
		OnSwap: func(prev, next *Snapshot) {
			s.drainRemovedListeners(prev, next)
			s.closeUnusedLogs(next)
		},
	}
	s.state.Options.AccessLog = s.accessLog
	passOpts := cluster
	passOpts.Dialer = s.selfGuardDialer()
	s.pass = forward.Passthrough{Options: passOpts, IsSelf: s.isSelf}
	s.env = forward.Env{
		State:         &s.state,
		Passthrough:   &s.pass,
		KeepAliveIdle: opts.KeepAliveIdle,
		StreamIdle:    opts.StreamIdle,
		HeaderTimeout: opts.HeaderTimeout,
		MaxReplayBody: opts.MaxReplayBody,
		Draining:      &s.draining,
		Log:           s.log,
	}
	s.l4 = l4.Server{Env: &s.env, ConnectTimeout: opts.ConnectTimeout, Dialer: passOpts.Dialer}
	s.h2in = http2.New(&s.env, forward.Ingress)
	s.h2out = http2.New(&s.env, forward.Egress)
	s.api = admin.API{
		State: &s.state, Node: opts.Node, Version: opts.Version, Token: opts.AdminToken,
		RequireIfMatch: opts.RequireIfMatch, L4: &s.l4, LogLevel: opts.LogLevel,
		Ready:    s.Ready,
		Draining: s.unready.Load,
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
	var err error
	if s.ingress, err = net.Listen("tcp", s.opts.IngressAddr); err != nil {
		return fmt.Errorf("ingress listener %s: %w", s.opts.IngressAddr, err)
	}
	if s.egress, err = net.Listen("tcp", s.opts.EgressAddr); err != nil {
		_ = s.ingress.Close()
		return fmt.Errorf("egress listener %s: %w", s.opts.EgressAddr, err)
	}
	if err := s.StartAdmin(); err != nil {
		_ = s.ingress.Close()
		_ = s.egress.Close()
		return err
	}
	s.loopWG.Add(2)
	for _, h := range []*http2.Server{s.h2in, s.h2out} {
		go func() {
			defer s.loopWG.Done()
			h.Serve()
		}()
	}
	s.startEgress6()
	s.accept(s.ingress, forward.Ingress)
	s.accept(s.egress, forward.Egress)
	s.reaper.Start(s.sweepIdle)
	s.ready.Store(true)
	s.log.Info("meshd listening", "node", s.opts.Node, "ingress", s.ingress.Addr().String(),
		"egress", s.egress.Addr().String(), "admin", s.AdminAddr())
	return nil
}

// accept runs ln's accept loop on a goroutine that Shutdown joins.
func (s *Server) accept(ln net.Listener, kind forward.Kind) {
	s.loopWG.Add(1)
	go func() {
		defer s.loopWG.Done()
		listen.AcceptLoop(s.ctx, ln, kind.String(), &s.conns,
			func(c net.Conn) netip.AddrPort { return listen.OriginalDst(c, s.opts.OriginalDst) },
			func(tc *listen.Conn) { s.serveConn(tc, kind) }, s.log)
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
	s.adminLn = ln
	s.adminSrv = &http.Server{Handler: s.api.Handler(), ReadHeaderTimeout: 10 * time.Second}
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

// Ready reports whether the server has a config, is listening, and is not shutting down.
func (s *Server) Ready() bool { return s.ready.Load() && !s.unready.Load() }

// Shutdown drains, as Envoy does: /ready fails at once; for Options.DrainGrace (bounded
// by ctx) the listeners keep accepting and serving as usual; then they stop accepting,
// idle connections close, in-flight requests finish (their connections then close),
// and after ctx or the drain timeout whatever remains is closed. The admin listener
// closes last.
func (s *Server) Shutdown(ctx context.Context) error { return s.Drain(ctx, s.opts.DrainGrace) }

// Drain is Shutdown with the given grace instead of Options.DrainGrace (meshd run skips
// the grace on SIGINT, an interactive stop). ctx ending cuts the grace short too.
func (s *Server) Drain(ctx context.Context, grace time.Duration) error {
	s.unready.Store(true)
	if g := grace; g > 0 && s.ingress != nil {
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
		s.conns.Each(func(c *listen.Conn) { _ = c.Close() })
		_ = s.h2in.Close()
		_ = s.h2out.Close()
		<-done
	}
	if s.adminSrv != nil {
		_ = s.adminSrv.Close()
	}
	s.loopWG.Wait()
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
	return err
}

// accessLog returns the writer of a node's logging.accessLog.file: the one already open
// for the same path and format (a reload keeps writing where it wrote), else a new one.
// A format that does not compile or a file that cannot be opened is an error, which
// rejects the config: an access log the config asks for is never quietly not written.
func (s *Server) accessLog(f *config.FileAccessLog) (telemetry.Observer, error) {
	var text string
	var kvs []accesslog.KV
	if f.Format != nil {
		text = f.Format.Text
		for _, kv := range f.Format.JSON {
			kvs = append(kvs, accesslog.KV{Key: kv.Key, Value: kv.Value})
		}
	}
	key := f.Path + "\x00" + text + "\x00" + fmt.Sprint(kvs)
	s.logMu.Lock()
	defer s.logMu.Unlock()
	if w := s.logs[key]; w != nil {
		return w, nil
	}
	fm, err := accesslog.Compile(text, kvs)
	if err != nil {
		return nil, fmt.Errorf("format: %w", err)
	}
	w, err := accesslog.Open(f.Path, fm, accesslog.Options{Log: s.log})
	if err != nil {
		return nil, err
	}
	if s.logs == nil {
		s.logs = map[string]*accesslog.Writer{}
	}
	s.logs[key] = w
	s.log.Info("access log open", "path", f.Path)
	return w, nil
}

// closeUnusedLogs closes the access log writers the snapshot in force (next; nil: none)
// does not use, draining what they queued.
func (s *Server) closeUnusedLogs(next *Snapshot) {
	used := map[telemetry.Observer]bool{}
	if next != nil {
		for _, o := range next.Observers() {
			used[o] = true
		}
	}
	s.logMu.Lock()
	var closing []*accesslog.Writer
	for k, w := range s.logs {
		if !used[w] {
			closing = append(closing, w)
			delete(s.logs, k)
		}
	}
	s.logMu.Unlock()
	for _, w := range closing {
		if err := w.Close(); err != nil {
			s.log.Warn("access log close", "err", err)
		}
	}
}

// registryFor returns the DNS watcher registry for a config's resolvers (none:
// /etc/resolv.conf), made on first use and kept until Shutdown. Options.DNS and
// Options.DNSResolvers win over the config's resolvers.
func (s *Server) registryFor(configured []string) *discovery.Registry {
	servers := configured
	if len(s.opts.DNSResolvers) > 0 || s.opts.DNS != nil {
		servers = s.opts.DNSResolvers
	}
	key := strings.Join(servers, ",")
	s.regMu.Lock()
	defer s.regMu.Unlock()
	if r := s.registries[key]; r != nil {
		return r
	}
	dns := s.opts.DNS
	if dns == nil {
		var cfg discovery.ClientConfig
		var err error
		if len(servers) > 0 {
			cfg, err = discovery.ClientConfigFor(servers)
		} else if cfg, err = discovery.ClientConfigFromFile(s.opts.ResolvConf); err != nil {
			s.log.Warn("no usable resolver configuration; DNS names are asked of 127.0.0.1:53", "file", s.opts.ResolvConf, "err", err)
			cfg, err = discovery.ClientConfigFor([]string{"127.0.0.1:53"})
		}
		if err != nil { // validated config and flags: a programming error
			s.log.Error("DNS resolvers unusable; asking 127.0.0.1:53", "resolvers", servers, "err", err)
			cfg, _ = discovery.ClientConfigFor([]string{"127.0.0.1:53"})
		}
		dns = discovery.NewClient(cfg)
	}
	r := discovery.NewRegistry(discovery.WatchOptions{DNS: dns, MinTTL: s.opts.DNSMinTTL, MaxTTL: s.opts.DNSMaxTTL,
		NXDomainGrace: s.opts.DNSNXDomainGrace, Log: s.log})
	if s.registries == nil {
		s.registries = map[string]*discovery.Registry{}
	}
	s.registries[key] = r
	return r
}

// serveConn tells the connection's protocol from its first bytes and hands it to the
// front end that serves it. It owns tc and closes it.
func (s *Server) serveConn(tc *listen.Conn, kind forward.Kind) {
	defer s.conns.Untrack(tc)
	defer tc.Close()
	if t, ok := tc.Conn.(*net.TCPConn); ok {
		_ = t.SetNoDelay(true)
	}
	tc.SetIdleTimeout(s.opts.KeepAliveIdle)
	br := listen.GetReader(tc)
	proto, sni, err := s.classifyConn(tc, br, kind)
	if err != nil {
		listen.PutReader(br)
		return
	}
	switch proto {
	case listen.TLS, listen.Opaque:
		s.l4.Serve(tc, br, kind, sni)
	case listen.HTTP2:
		// The HTTP/2 server drains with GOAWAY; the idle wake-up must not touch it, and
		// its own timeouts apply. The reader is not pooled afterwards (http2.ServeConn).
		tc.SetBusy(true)
		tc.SetIdleTimeout(0)
		_ = tc.Conn.SetDeadline(time.Time{})
		if kind == forward.Ingress {
			s.h2in.ServeConn(tc, br)
		} else {
			s.h2out.ServeConn(tc, br)
		}
	default:
		http1.Serve(&s.env, tc, br, kind)
		// Close before pooling: no read of tc through br can be pending afterwards (an
		// HTTP/2 upstream's body writer stops reading the request body first).
		_ = tc.Close()
		listen.PutReader(br)
	}
}

// classifyConn decides how serveConn serves a new connection: L7 (HTTP1 or HTTP2) or L4
// (TLS with sni, or Opaque), using the original destination read at accept. Ingress
// uses the target listener's protocol: tcp is L4 without sniffing, anything else is HTTP
// (told apart from h2c by SniffH2). Egress connections that were not redirected are
// HTTP as well (meshd as HTTP_PROXY). Redirected egress connections are sniffed, except
// on ports that only tcp backends serve, where a server-first protocol must not wait for
// the sniff timeout.
func (s *Server) classifyConn(tc *listen.Conn, br *bufio.Reader, kind forward.Kind) (listen.Protocol, []byte, error) {
	snap := s.state.Load()
	if kind == forward.Ingress {
		port := snap.IngressPort(int(tc.Orig.Port()))
		if svc := snap.Table().Ingress(port); svc != nil && svc.Protocol == config.ProtoTCP {
			return listen.Opaque, nil, nil
		}
		return sniffHTTP(br)
	}
	if !tc.Orig.IsValid() {
		// Not redirected: an app using meshd as its HTTP proxy (HTTP_PROXY). There is no
		// destination to relay opaque bytes to, so the HTTP server answers whatever comes.
		return sniffHTTP(br)
	}
	if l4.TCPOnlyPort(snap, int(tc.Orig.Port())) {
		return listen.Opaque, nil, nil
	}
	// The timer's idle deadline is applied first, so that the Conn reads below keep the
	// shorter sniff deadline instead of replacing it.
	tc.Timer.Refresh(tc.Conn)
	timeout := s.opts.sniffTimeout()
	p, sni, err := listen.Sniff(br, func() { _ = tc.Conn.SetReadDeadline(time.Now().Add(timeout)) })
	tc.SetIdleTimeout(s.opts.KeepAliveIdle) // the next Read or Write re-applies the idle deadline
	tc.Timer.Forget()
	_ = tc.Conn.SetReadDeadline(time.Time{})
	return p, sni, err
}

func sniffHTTP(br *bufio.Reader) (listen.Protocol, []byte, error) {
	isH2, err := listen.SniffH2(br)
	if isH2 {
		return listen.HTTP2, nil, err
	}
	return listen.HTTP1, nil, err
}

// sniffTimeout is Options.SniffTimeout with its default.
func (o *Options) sniffTimeout() time.Duration {
	if o.SniffTimeout > 0 {
		return o.SniffTimeout
	}
	return DefaultSniffTimeout
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
// HTTP/2 connections are not closed (net/http offers no per-connection GOAWAY); their
// in-flight streams finish and new streams get 404 no_listener.
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
	n := 0
	s.conns.Each(func(c *listen.Conn) {
		la, _ := c.LocalAddr().(*net.TCPAddr)
		if la == nil || la.Port != ia.Port || !(ia.IP.IsUnspecified() || ia.IP.Equal(la.IP)) {
			return // an egress connection
		}
		port := int(c.Orig.Port())
		gone := false
		if port == 0 {
			gone = prev.IngressPort(0) != next.IngressPort(0)
		} else {
			gone = before[port] && !after[port]
		}
		if gone {
			c.Drain.Store(true)
			c.WakeIfIdle()
			n++
		}
	})
	if n > 0 {
		s.log.Info("draining connections of removed listeners", "connections", n)
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

// isSelf reports whether host:port is one of meshd's own listeners, which an ALLOW_ALL
// passthrough must never connect to (it would loop until file descriptors run out).
func (s *Server) isSelf(host string, port int) bool {
	for _, l := range []net.Listener{s.ingress, s.egress, s.egress6} {
		if l == nil {
			continue
		}
		ta, ok := l.Addr().(*net.TCPAddr)
		if !ok || ta.Port != port {
			continue
		}
		if host == "localhost" {
			return true
		}
		ip := net.ParseIP(host)
		if ip != nil && (ip.IsLoopback() || ip.IsUnspecified() || ta.IP.Equal(ip)) {
			return true
		}
	}
	return false
}

// selfGuardDialer is s's dialer with a Control hook that refuses to connect to any of
// meshd's own listener addresses, checked on the address the name resolved to: names
// isSelf cannot judge (any name that resolves to meshd) would otherwise loop back into
// meshd, one connection per hop, until file descriptors run out. The refusal surfaces
// as upstream.ErrSelfLoop, answered 508 (forward.Status).
func (s *Server) selfGuardDialer() *net.Dialer {
	d := *s.dialer
	d.Control = func(_, address string, _ syscall.RawConn) error {
		dst, err := netip.ParseAddrPort(address)
		if err != nil {
			return nil
		}
		if isOwnAddr(s.listenerAddrs(), dst, localAddrs) {
			return fmt.Errorf("%s: %w", address, upstream.ErrSelfLoop)
		}
		return nil
	}
	return &d
}

// listenerAddrs are the bound addresses of meshd's proxy listeners.
func (s *Server) listenerAddrs() []netip.AddrPort {
	var out []netip.AddrPort
	for _, l := range []net.Listener{s.ingress, s.egress, s.egress6} {
		if l == nil {
			continue
		}
		if ta, ok := l.Addr().(*net.TCPAddr); ok {
			out = append(out, ta.AddrPort())
		}
	}
	return out
}

// isOwnAddr reports whether dst reaches one of the listeners at own. A listener bound
// to an unspecified address (0.0.0.0, ::) is reached on its port at any local address:
// loopback, unspecified, or one of local()'s interface addresses (asked only then).
func isOwnAddr(own []netip.AddrPort, dst netip.AddrPort, local func() []netip.Addr) bool {
	ip := dst.Addr().Unmap()
	for _, l := range own {
		if l.Port() != dst.Port() {
			continue
		}
		lip := l.Addr().Unmap()
		if !lip.IsUnspecified() {
			if lip == ip {
				return true
			}
			continue
		}
		if ip.IsLoopback() || ip.IsUnspecified() {
			return true
		}
		for _, a := range local() {
			if a.Unmap() == ip {
				return true
			}
		}
	}
	return false
}

// localAddrs lists the host's interface addresses.
func localAddrs() []netip.Addr {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr())
		}
	}
	return out
}

// checkAdminExposure refuses an admin listener reachable from other hosts without a
// token: PUT /config on it would let anyone on the network reroute the node's traffic.
func checkAdminExposure(o Options) error {
	if o.AdminAddr == "off" || o.AdminToken != "" || isLoopbackAddr(o.AdminAddr) {
		return nil
	}
	return fmt.Errorf("proxy: admin address %q is not a loopback address, so the admin API needs a token: "+
		"set Options.AdminToken (meshd run: --admin-token-file or MESHD_ADMIN_TOKEN), or bind the admin listener to 127.0.0.1", o.AdminAddr)
}

// isLoopbackAddr reports whether host:port binds only loopback interfaces. An empty
// host (all interfaces) and names other than "localhost" are not loopback.
func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// The types and values below keep the package's API as it was before the data plane
// was split into rooms; they are the rooms' own.
type (
	Snapshot      = state.Snapshot
	Attempt       = state.Attempt
	ConfigError   = state.ConfigError
	RejectedError = state.RejectedError
	ReloadStats   = state.ReloadStats
	ApplyRequest  = state.ApplyRequest
	L4View        = upstream.L4View
	EgressL4View  = l4.EgressL4View
)

const (
	HistorySize       = state.HistorySize
	StagePrecondition = state.StagePrecondition
	StageParse        = state.StageParse
	StageValidate     = state.StageValidate
	StageCompile      = state.StageCompile
	ResultApplied     = state.ResultApplied
	ResultRejected    = state.ResultRejected
	ResultValid       = state.ResultValid
	// HeaderError names the header on every response meshd generates itself.
	HeaderError = forward.HeaderError
	// HeaderLimit names the connection-pool limit that made meshd answer 503.
	HeaderLimit = forward.HeaderLimit
	// DefaultSniffTimeout is how long an egress connection may stay silent before meshd
	// treats it as a server-first protocol (MySQL, SMTP, ...) and relays it as opaque TCP.
	DefaultSniffTimeout = listen.DefaultSniffTimeout
)

var (
	ErrVersionMismatch = state.ErrVersionMismatch
	ErrShutdown        = state.ErrShutdown
)

// ETag is the HTTP entity tag of a config version.
func ETag(version string) string { return state.ETag(version) }

// WriteFileAtomic replaces path with data atomically (state.WriteFileAtomic).
func WriteFileAtomic(path string, data []byte) error { return state.WriteFileAtomic(path, data) }
