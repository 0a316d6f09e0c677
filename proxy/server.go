// Package proxy is meshd's data plane: listeners (ingress, egress, admin), protocol
// sniffing, HTTP/1.1 and HTTP/2 forwarding, upstream connection pools, and the
// compiled config snapshot with its atomic swap.
//
// Concurrency: one goroutine per downstream connection (plus, for HTTP/2, the x/net
// server's per-stream goroutines). Each request loads the current *Snapshot once and
// finishes on it; Apply compiles a new one off the hot path and swaps it atomically.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/resilience"
	"github.com/meshd/meshd/telemetry"
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
	// Resolver resolves dns service discovery hostnames. Default net.DefaultResolver.
	Resolver discovery.Resolver
	Logger   *slog.Logger
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
	// limits); nil means the system clock. Tests inject a fake one; when it also
	// implements TickerClock it drives the clusters' periodic outlier sweeps and health
	// check rounds too.
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
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	o.Logger = telemetry.OrDiscard(o.Logger)
}

type listenerKind uint8

const (
	kindIngress listenerKind = iota + 1
	kindEgress
)

func (k listenerKind) String() string {
	if k == kindIngress {
		return "ingress"
	}
	return "egress"
}

// Server is one meshd sidecar. Create it with New, Apply a config, Start it, and
// Shutdown it; all methods are safe for concurrent use.
type Server struct {
	opts   Options
	log    *slog.Logger
	dialer *net.Dialer

	snap    atomic.Pointer[Snapshot]
	applyMu sync.Mutex
	// swapMu orders an apply's swap against Shutdown's final retire: shut is set and the
	// snapshot in force retired under it, and an apply stores its snapshot under it only
	// while shut is false, so no snapshot is stored after Shutdown retired the last one.
	// It is not applyMu so that Shutdown does not wait for an apply's compile (DNS).
	swapMu  sync.Mutex
	shut    bool
	reload  reloadState // apply history and counters (reload.go)
	started time.Time

	ready    atomic.Bool
	draining atomic.Bool

	ingress, egress net.Listener
	egress6         net.Listener // IPv6 loopback egress (l4.go); nil when not bound
	l4              l4Server     // egress L4 counters outside clusters (l4.go)
	admin           *http.Server
	adminLn         net.Listener

	// HTTP/2 (h2c prior knowledge) is served by net/http: one server per listener
	// kind, fed the sniffed connections through an in-memory listener.
	h2in, h2out   *http.Server
	h2inL, h2outL *connListener

	connMu sync.Mutex
	conns  map[*trackedConn]struct{}
	connWG sync.WaitGroup
	loopWG sync.WaitGroup

	passthrough passCache  // ALLOW_ALL egress destinations, by host:port (resolve.go)
	reaper      idleReaper // closes idle pooled upstream connections (cluster.go)
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
	s := &Server{
		opts:   opts,
		log:    opts.Logger,
		dialer: &net.Dialer{KeepAlive: 30 * time.Second},
		conns:  make(map[*trackedConn]struct{}),
	}
	s.h2in, s.h2inL = s.newH2Server(kindIngress)
	s.h2out, s.h2outL = s.newH2Server(kindEgress)
	return s, nil
}

// Snapshot returns the config snapshot in force, or nil before the first Apply.
func (s *Server) Snapshot() *Snapshot { return s.snap.Load() }

// Apply validates and compiles cfg and swaps it in, through the same pipeline as
// ApplyDocument (history, counters, persistence, listener drain). On any error the
// snapshot in force keeps serving and a *RejectedError is returned (unwrapping to a
// *config.Errors for validation failures).
func (s *Server) Apply(ctx context.Context, cfg *config.Config, source string) (*Snapshot, error) {
	return s.apply(ctx, cfg, ApplyRequest{Source: source})
}

// Start binds the ingress, egress and admin listeners and starts serving. A config must
// have been applied. Binding errors are returned and nothing is left running.
func (s *Server) Start() error {
	if s.snap.Load() == nil {
		return errors.New("proxy: Start before any config was applied")
	}
	s.started = time.Now()
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
	s.loopWG.Add(4)
	for _, h := range []struct {
		srv *http.Server
		ln  *connListener
	}{{s.h2in, s.h2inL}, {s.h2out, s.h2outL}} {
		go func() {
			defer s.loopWG.Done()
			_ = h.srv.Serve(h.ln)
		}()
	}
	s.startEgress6()
	go s.acceptLoop(s.ingress, kindIngress)
	go s.acceptLoop(s.egress, kindEgress)
	s.reaper.start(s.sweepIdle)
	s.ready.Store(true)
	s.log.Info("meshd listening", "node", s.opts.Node, "ingress", s.ingress.Addr().String(),
		"egress", s.egress.Addr().String(), "admin", s.AdminAddr())
	return nil
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
	s.admin = &http.Server{Handler: s.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
	s.loopWG.Add(1)
	go func() {
		defer s.loopWG.Done()
		if err := s.admin.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin listener stopped", "err", err)
		}
	}()
	return nil
}

// IngressAddr, EgressAddr and AdminAddr report the bound addresses (useful with port 0).
func (s *Server) IngressAddr() string { return addrString(s.ingress) }
func (s *Server) EgressAddr() string  { return addrString(s.egress) }
func (s *Server) AdminAddr() string   { return addrString(s.adminLn) }

func addrString(l net.Listener) string {
	if l == nil {
		return ""
	}
	return l.Addr().String()
}

// Ready reports whether the server has a config, is listening, and is not draining.
func (s *Server) Ready() bool { return s.ready.Load() && !s.draining.Load() }

// Shutdown drains: /ready fails, listeners stop accepting, idle connections close,
// in-flight requests finish (their connections then close), and after ctx or the
// drain timeout whatever remains is closed. The admin listener closes last.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	if s.ingress != nil {
		_ = s.ingress.Close()
	}
	if s.egress != nil {
		_ = s.egress.Close()
	}
	if s.egress6 != nil {
		_ = s.egress6.Close()
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.DrainTimeout)
	defer cancel()
	// HTTP/2 connections get GOAWAY and finish their open streams.
	var h2wg sync.WaitGroup
	for _, srv := range []*http.Server{s.h2in, s.h2out} {
		h2wg.Add(1)
		go func() {
			defer h2wg.Done()
			_ = srv.Shutdown(ctx)
		}()
	}
	defer h2wg.Wait()
	s.connMu.Lock()
	for c := range s.conns {
		c.wakeIfIdle()
	}
	s.connMu.Unlock()

	done := make(chan struct{})
	go func() { s.connWG.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("drain: %d connections still open after the drain timeout: %w", s.openConns(), ctx.Err())
		s.connMu.Lock()
		for c := range s.conns {
			_ = c.Close()
		}
		s.connMu.Unlock()
		_ = s.h2in.Close()
		_ = s.h2out.Close()
		<-done
	}
	if s.admin != nil {
		_ = s.admin.Close()
	}
	s.loopWG.Wait()
	s.swapMu.Lock()
	s.shut = true
	if snap := s.snap.Load(); snap != nil {
		snap.retire(nil)
	}
	s.swapMu.Unlock()
	s.reaper.halt()
	s.passthrough.closeAll()
	return err
}

func (s *Server) compileOptions() compileOptions {
	return compileOptions{
		resolver:       s.opts.Resolver,
		connectTimeout: s.opts.ConnectTimeout,
		streamIdle:     s.opts.StreamIdle,
		dialer:         s.dialer,
		clock:          s.opts.Clock,
		log:            s.log,
	}
}

func (s *Server) openConns() int {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	return len(s.conns)
}

func (s *Server) acceptLoop(ln net.Listener, kind listenerKind) {
	defer s.loopWG.Done()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.draining.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and similar: back off instead of spinning, keep serving.
			if backoff == 0 {
				backoff = 5 * time.Millisecond
			} else if backoff < time.Second {
				backoff *= 2
			}
			s.log.Error("accept failed", "listener", kind.String(), "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		tc := s.track(c)
		if tc == nil {
			_ = c.Close()
			continue
		}
		go s.serveConn(tc, kind)
	}
}

// trackedConn is a downstream connection the server can wake or close when draining.
type trackedConn struct {
	net.Conn
	s     *Server
	state atomic.Int32 // connIdle or connActive
	timer deadlineTimer
	orig  netip.AddrPort // original destination (iptables REDIRECT); zero if none
	// drain is set when the listener the connection was addressed to went away in a
	// reload: its next read between requests ends the connection (reload.go).
	drain atomic.Bool
}

const (
	connIdle int32 = iota
	connActive
)

// Read and Write keep the deadline at last activity + idle, so a stalled peer is cut off.
func (c *trackedConn) Read(p []byte) (int, error) {
	if c.drain.Load() && c.state.Load() == connIdle {
		return 0, io.EOF
	}
	c.timer.refresh(c.Conn)
	return c.Conn.Read(p)
}

func (c *trackedConn) Write(p []byte) (int, error) {
	c.timer.refresh(c.Conn)
	return c.Conn.Write(p)
}

// setIdle switches the timeout (keep-alive idle between requests, stream idle within
// one); the next Read or Write applies it.
func (c *trackedConn) setIdle(d time.Duration) { c.timer.idle = d }

// wakeIfIdle makes a connection that waits for its next request give up now. It shuts
// the read side rather than moving the deadline, which the connection's own goroutine
// may be refreshing at the same moment.
func (c *trackedConn) wakeIfIdle() {
	if c.state.Load() != connIdle {
		return
	}
	if cr, ok := c.Conn.(interface{ CloseRead() error }); ok {
		_ = cr.CloseRead()
		return
	}
	_ = c.Conn.Close()
}

func (s *Server) track(c net.Conn) *trackedConn {
	// The original destination is read before the connection is published, so the
	// reload drain (another goroutine) may read tc.orig without a race.
	tc := &trackedConn{Conn: c, s: s, orig: s.originalDst(c)}
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if s.draining.Load() {
		return nil
	}
	s.conns[tc] = struct{}{}
	s.connWG.Add(1)
	return tc
}

func (s *Server) untrack(tc *trackedConn) {
	s.connMu.Lock()
	delete(s.conns, tc)
	s.connMu.Unlock()
	s.connWG.Done()
}

// splitHostPort splits "host[:port]" without allocating; port is 0 when absent or
// malformed. IPv6 literals keep their brackets off.
func splitHostPort(hostport string) (host string, port int) {
	host = hostport
	if len(host) > 0 && host[0] == '[' {
		end := -1
		for i := 1; i < len(host); i++ {
			if host[i] == ']' {
				end = i
				break
			}
		}
		if end < 0 {
			return hostport, 0
		}
		rest := host[end+1:]
		host = host[1:end]
		if len(rest) > 1 && rest[0] == ':' {
			port = atoiPort(rest[1:])
		}
		return host, port
	}
	for i := len(host) - 1; i >= 0; i-- {
		if host[i] == ':' {
			// More than one colon without brackets: an IPv6 literal with no port.
			for j := 0; j < i; j++ {
				if host[j] == ':' {
					return hostport, 0
				}
			}
			return host[:i], atoiPort(host[i+1:])
		}
	}
	return host, 0
}

func atoiPort(s string) int {
	if len(s) == 0 || len(s) > 5 {
		return 0
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0
		}
		n = n*10 + int(s[i]-'0')
	}
	if n > 65535 {
		return 0
	}
	return n
}

func portString(p int) string { return strconv.Itoa(p) }
