// Package testutil holds helpers for loopback integration tests: a meshd Server started
// from a YAML string, upstream HTTP/1.1, h2c and gRPC servers on 127.0.0.1:0 whose
// accepted connections are counted, and config templates rendered with their ports.
//
// Every helper registers its cleanup with t.Cleanup and waits for the goroutines it
// started, so tests can run under go.uber.org/goleak.
package testutil

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/proxy"
	"google.golang.org/grpc"
)

// Render executes the text/template tmpl with data (typically a struct or map of upstream
// ports) and fails the test on a template error.
func Render(t testing.TB, tmpl string, data any) string {
	t.Helper()
	tp, err := template.New("config").Option("missingkey=error").Parse(tmpl)
	if err != nil {
		t.Fatalf("parse config template: %v", err)
	}
	var b strings.Builder
	if err := tp.Execute(&b, data); err != nil {
		t.Fatalf("render config template: %v", err)
	}
	return b.String()
}

// ParseConfig parses and validates a YAML config, failing the test on error.
func ParseConfig(t testing.TB, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("parse config: %v\n%s", err, yaml)
	}
	return cfg
}

// StartMeshd starts a meshd Server for node from a YAML config, with ingress, egress
// and admin listeners on 127.0.0.1:0. The server is shut down at cleanup (a second
// Shutdown after the test's own is harmless).
func StartMeshd(t testing.TB, node, yaml string) *proxy.Server {
	t.Helper()
	return StartMeshdOpts(t, proxy.Options{Node: node}, yaml)
}

// StartMeshdOpts is StartMeshd with explicit options; empty addresses become
// 127.0.0.1:0 and DrainTimeout defaults to 10s so a stuck test fails instead of hanging.
func StartMeshdOpts(t testing.TB, opts proxy.Options, yaml string) *proxy.Server {
	t.Helper()
	if opts.IngressAddr == "" {
		opts.IngressAddr = "127.0.0.1:0"
	}
	if opts.EgressAddr == "" {
		opts.EgressAddr = "127.0.0.1:0"
	}
	if opts.AdminAddr == "" {
		opts.AdminAddr = "127.0.0.1:0"
	}
	if opts.DrainTimeout == 0 {
		opts.DrainTimeout = 10 * time.Second
	}
	srv, err := proxy.New(opts)
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	if _, err := srv.Apply(context.Background(), ParseConfig(t, yaml), "test"); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("meshd Shutdown: %v", err)
		}
	})
	return srv
}

// CountingListener counts the connections it accepted and tracks the open ones so
// they can be closed at cleanup (hijacked and HTTP/2 connections are not closed by
// http.Server.Close).
type CountingListener struct {
	net.Listener
	accepted atomic.Int64

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// Listen opens a CountingListener on 127.0.0.1:0.
func Listen(t testing.TB) *CountingListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	return &CountingListener{Listener: ln, conns: make(map[net.Conn]struct{})}
}

// Accept counts and tracks each accepted connection.
func (l *CountingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.accepted.Add(1)
	tc := &trackedConn{Conn: c, l: l}
	l.mu.Lock()
	l.conns[tc] = struct{}{}
	l.mu.Unlock()
	return tc, nil
}

// Accepted is the number of connections accepted so far.
func (l *CountingListener) Accepted() int64 { return l.accepted.Load() }

// Open is the number of accepted connections not closed yet.
func (l *CountingListener) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// CloseAll closes every accepted connection that is still open.
func (l *CountingListener) CloseAll() {
	l.mu.Lock()
	conns := make([]net.Conn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// Port is the listening port.
func (l *CountingListener) Port() int { return l.Addr().(*net.TCPAddr).Port }

type trackedConn struct {
	net.Conn
	l    *CountingListener
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// Upstream is a server started for a test.
type Upstream struct {
	Listener *CountingListener
	Addr     string // 127.0.0.1:port
	Port     int
}

// Accepted is the number of connections the upstream accepted.
func (u *Upstream) Accepted() int64 { return u.Listener.Accepted() }

// StartHTTP serves h over HTTP/1.1 on 127.0.0.1:0 until cleanup. configure, when not
// nil, may adjust the http.Server (timeouts, keep-alive) before it starts.
func StartHTTP(t testing.TB, h http.Handler, configure ...func(*http.Server)) *Upstream {
	t.Helper()
	ln := Listen(t)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	for _, f := range configure {
		f(srv)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("upstream serve: %v", err)
		}
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		ln.CloseAll()
		<-done
	})
	return &Upstream{Listener: ln, Addr: ln.Addr().String(), Port: ln.Port()}
}

// StartH2C serves h over HTTP/2 with prior knowledge (h2c: no TLS, no upgrade) on
// 127.0.0.1:0 until cleanup, using net/http's unencrypted HTTP/2 support.
func StartH2C(t testing.TB, h http.Handler) *Upstream {
	t.Helper()
	return StartHTTP(t, h, func(s *http.Server) {
		s.Protocols = new(http.Protocols)
		s.Protocols.SetUnencryptedHTTP2(true)
	})
}

// StartGRPC starts a grpc.Server (built with opts) on 127.0.0.1:0 after register has
// added its services; cleanup stops it.
func StartGRPC(t testing.TB, register func(*grpc.Server), opts ...grpc.ServerOption) *Upstream {
	t.Helper()
	ln := Listen(t)
	gs := grpc.NewServer(opts...)
	register(gs)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = gs.Serve(ln)
	}()
	t.Cleanup(func() {
		gs.Stop()
		<-done
	})
	return &Upstream{Listener: ln, Addr: ln.Addr().String(), Port: ln.Port()}
}

// HTTPClient returns a client with its own transport (so tests do not share pooled
// connections) that sends every request to addr whatever the URL says, as an app would
// behind iptables REDIRECT. Idle connections close at cleanup.
func HTTPClient(t testing.TB, addr string) *http.Client {
	t.Helper()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
		DisableCompression:    true,
		MaxIdleConnsPerHost:   16,
		ResponseHeaderTimeout: 10 * time.Second,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// H2CClient returns an HTTP/2 prior-knowledge (h2c) client that dials addr for every
// request.
func H2CClient(t testing.TB, addr string) *http.Client {
	t.Helper()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
		Protocols:          new(http.Protocols),
		DisableCompression: true,
	}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// StartRaw accepts TCP connections on 127.0.0.1:0 and runs handle on each in its own
// goroutine, for upstreams that must misbehave or frame responses by hand. The
// connection is closed when handle returns; cleanup closes the listener and every open
// connection and waits for the handlers.
func StartRaw(t testing.TB, handle func(net.Conn)) *Upstream {
	t.Helper()
	ln := Listen(t)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		ln.CloseAll()
		wg.Wait()
	})
	return &Upstream{Listener: ln, Addr: ln.Addr().String(), Port: ln.Port()}
}

// ClosedPort returns a loopback port nothing listens on, for endpoints whose connect
// must fail. The port stays bound (a socket bound without listen, so a connect to it is
// refused) until the test ends: a port that was only bound and released can be handed
// to another test's listener, or be picked as the source port of a connect to itself
// (a TCP self-connect that succeeds), and then the "refusing" endpoint answers. Both
// were seen as rare failures of outlier tests under CI's parallel load.
func ClosedPort(t testing.TB) int {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	// No SO_REUSEADDR: the kernel then treats the port as taken for every other bind,
	// and never picks it as an ephemeral port.
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("bind: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	return sa.(*syscall.SockaddrInet4).Port
}
