package upstream_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/proxy/upstream"
	"github.com/meshd/meshd/router"
	meshtls "github.com/meshd/meshd/tls"
)

// pki is a mesh CA in a temporary directory, with its trust file.
type pki struct {
	t     *testing.T
	ca    *meshtls.CA
	dir   string
	trust *meshtls.FileSource
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	ca, err := meshtls.NewCA(meshtls.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(p, ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	k := &pki{t: t, ca: ca, dir: dir}
	k.trust = k.source(meshtls.FileOptions{TrustChain: p})
	return k
}

func (k *pki) source(o meshtls.FileOptions) *meshtls.FileSource {
	k.t.Helper()
	s, err := meshtls.NewFileSource(o)
	if err != nil {
		k.t.Fatal(err)
	}
	k.t.Cleanup(func() { _ = s.Close() })
	return s
}

// node issues node's certificate (valid from now for ttl; 0: a day) and returns its
// source.
func (k *pki) node(node string, now time.Time, ttl time.Duration) *meshtls.FileSource {
	k.t.Helper()
	wc, err := k.ca.Issue(meshtls.WorkloadRequest{Mesh: "shop", Node: node, TTL: ttl, Now: now})
	if err != nil {
		k.t.Fatal(err)
	}
	certPath, keyPath, err := meshtls.WriteWorkload(k.dir, node, wc)
	if err != nil {
		k.t.Fatal(err)
	}
	return k.source(meshtls.FileOptions{CertificateChain: certPath, PrivateKey: keyPath, Now: func() time.Time { return now }})
}

// seen is what a TLS test server saw of its connections' handshakes.
type seen struct {
	mu     sync.Mutex
	states []tls.ConnectionState
}

func (s *seen) add(cs tls.ConnectionState) {
	s.mu.Lock()
	s.states = append(s.states, cs)
	s.mu.Unlock()
}

func (s *seen) all() []tls.ConnectionState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]tls.ConnectionState(nil), s.states...)
}

// startTLS serves h over TLS with cfg on 127.0.0.1 (HTTP/2 when the client asks for h2
// in ALPN and cfg offers it, else HTTP/1.1) and records the handshake of every request's
// connection.
func startTLS(t *testing.T, cfg *tls.Config, h http.Handler) (string, *seen) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sn := &seen{}
	rec := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sn.add(*r.TLS)
		h.ServeHTTP(w, r)
	})
	srv := &http.Server{Handler: rec, TLSConfig: cfg.Clone(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: log.New(io.Discard, "", 0)}
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetHTTP2(slices.Contains(cfg.NextProtos, "h2"))
	srv.Protocols = &p
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.ServeTLS(ln, "", "")
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return ln.Addr().String(), sn
}

// tlsCluster is a cluster of protocol with the one endpoint addr, originating TLS with
// client under policy "p".
func tlsCluster(t *testing.T, protocol, addr string, client *tls.Config, o upstream.Options) *upstream.Cluster {
	t.Helper()
	o.Dialer = &net.Dialer{}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = 5 * time.Second
	}
	o.TLS = &upstream.TLS{Config: client, Policy: "p"}
	c := upstream.New(router.ClusterRef{Name: "t@backend.shop.local", Protocol: protocol, Service: "backend.shop.local"}, o)
	c.Follow(nil, discovery.Plan{Fixed: []discovery.Endpoint{{Address: addr}}})
	t.Cleanup(c.Close)
	return c
}

func clientConfig(t *testing.T, o meshtls.ClientOptions) *tls.Config {
	t.Helper()
	if o.ServerName == "" {
		o.ServerName = "backend.shop.local"
	}
	cfg, err := meshtls.NewClientConfig(o)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func serverConfig(t *testing.T, o meshtls.ServerOptions) *tls.Config {
	t.Helper()
	cfg, err := meshtls.NewServerConfig(o)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestTLSOriginH1: an HTTP/1.1 cluster originates mTLS: the server sees the virtual
// service name as SNI, ALPN http/1.1 and the client certificate; the second connection
// (the server closed the first) resumes the session; the cluster counts one full
// handshake and one resumed.
func TestTLSOriginH1(t *testing.T) {
	k := newPKI(t)
	now := time.Now()
	back, front := k.node("backend", now, 0), k.node("frontend", now, 0)
	addr, sn := startTLS(t, serverConfig(t, meshtls.ServerOptions{Certificate: back, Trust: k.trust,
		SubjectAltNames: []string{"spiffe://shop/frontend"}}),
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close") // the next request needs a new connection
			_, _ = io.WriteString(w, r.Proto+" "+r.Host)
		}))
	c := tlsCluster(t, "http", addr, clientConfig(t, meshtls.ClientOptions{Trust: k.trust, Certificate: front,
		SubjectAltNames: []string{"spiffe://shop/backend"}}), upstream.Options{})
	for i := range 2 {
		resp, body := roundTrip(t, c, outReq(t, context.Background(), "GET", addr, "/", nil, 0))
		if resp.StatusCode != 200 || body != "HTTP/1.1 svc.t.local" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	states := sn.all()
	if len(states) != 2 {
		t.Fatalf("the server saw %d handshakes, want 2", len(states))
	}
	for i, cs := range states {
		id, err := meshtls.PeerIdentity(cs)
		if cs.ServerName != "backend.shop.local" || cs.NegotiatedProtocol != "http/1.1" || err != nil || id.String() != "spiffe://shop/frontend" {
			t.Errorf("connection %d: SNI %q, ALPN %q, client %v %v; want backend.shop.local, http/1.1, spiffe://shop/frontend",
				i, cs.ServerName, cs.NegotiatedProtocol, id, err)
		}
	}
	if states[0].DidResume || !states[1].DidResume {
		t.Errorf("resumed: first %v, second %v; want false, true", states[0].DidResume, states[1].DidResume)
	}
	st := c.TLSStats()
	if st.Count(meshtls.HandshakeOK) != 1 || st.Count(meshtls.HandshakeResumed) != 1 || st.Failures() != 0 {
		t.Errorf("counted ok %d, resumed %d, failures %d; want 1, 1, 0", st.Count(meshtls.HandshakeOK), st.Count(meshtls.HandshakeResumed), st.Failures())
	}
	// The fast path's pool hands out the TLS connection too.
	p, ok := c.EndpointPool(addr)
	if !ok {
		t.Fatal("no pool for the endpoint")
	}
	u, err := p.DialNew(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Discard(u)
	if _, ok := u.NetConn.(*tls.Conn); !ok {
		t.Errorf("the pool's connection is a %T, want a *tls.Conn", u.NetConn)
	}
}

// TestTLSOriginH2: an HTTP/2 (and gRPC) cluster offers h2 in ALPN and speaks HTTP/2 over
// TLS through its transport.
func TestTLSOriginH2(t *testing.T) {
	k := newPKI(t)
	back := k.node("backend", time.Now(), 0)
	addr, sn := startTLS(t, serverConfig(t, meshtls.ServerOptions{Certificate: back}),
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, r.Proto) }))
	for _, proto := range []string{"http2", "grpc"} {
		c := tlsCluster(t, proto, addr, clientConfig(t, meshtls.ClientOptions{Trust: k.trust}), upstream.Options{})
		req := outReq(t, context.Background(), "GET", addr, "/", nil, 0)
		req.Proto, req.ProtoMajor, req.ProtoMinor = "HTTP/2.0", 2, 0
		resp, body := roundTrip(t, c, req)
		if resp.StatusCode != 200 || body != "HTTP/2.0" {
			t.Fatalf("%s: %d %q, want 200 HTTP/2.0", proto, resp.StatusCode, body)
		}
		if c.TLSConfig().NextProtos[0] != "h2" || len(c.TLSConfig().NextProtos) != 1 {
			t.Errorf("%s: ALPN %v, want [h2]", proto, c.TLSConfig().NextProtos)
		}
	}
	for i, cs := range sn.all() {
		if cs.NegotiatedProtocol != "h2" || cs.ServerName != "backend.shop.local" {
			t.Errorf("handshake %d: ALPN %q SNI %q", i, cs.NegotiatedProtocol, cs.ServerName)
		}
	}
	// A server that does not speak h2 is refused at the handshake (no protocol in
	// common), not spoken to in the wrong protocol.
	h1only := serverConfig(t, meshtls.ServerOptions{Certificate: back, NextProtos: []string{"http/1.1"}})
	addr1, _ := startTLS(t, h1only, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	c := tlsCluster(t, "http2", addr1, clientConfig(t, meshtls.ClientOptions{Trust: k.trust}), upstream.Options{})
	_, err := c.RoundTripper().RoundTrip(outReq(t, context.Background(), "GET", addr1, "/", nil, 0))
	if upstream.KindOf(err) != upstream.Connect || c.TLSStats().Count(meshtls.HandshakeError) != 1 {
		t.Fatalf("h2 cluster to an HTTP/1.1-only server: %v (kind %d), errors counted %d; want a connect failure", err,
			upstream.KindOf(err), c.TLSStats().Count(meshtls.HandshakeError))
	}
}

// manualClock is a resilience.Clock moved by hand; its tickers never fire.
type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func (m *manualClock) Now() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.now
}

func (m *manualClock) Add(d time.Duration) {
	m.mu.Lock()
	m.now = m.now.Add(d)
	m.mu.Unlock()
}

func (m *manualClock) NewTicker(time.Duration) (<-chan time.Time, func()) { return nil, func() {} }

// logBuf is a JSON slog handler's output, safe for concurrent use.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// lines are the log lines holding every one of subs.
func (l *logBuf) lines(subs ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range strings.Split(l.b.String(), "\n") {
		ok := line != ""
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			n++
		}
	}
	return n
}

// TestTLSOriginRefusals: a server certificate of another CA, one whose SANs are outside
// subjectAlternativeNames, and an expired one fail the connect (a Connect error, which
// retries and outlier detection treat as a connect failure), are counted by result, and
// logged at warn once per cluster and period with the reason; the other failures of the
// period go to debug.
func TestTLSOriginRefusals(t *testing.T) {
	k, other := newPKI(t), newPKI(t)
	now := time.Now()
	foreign := other.node("backend", now, 0)
	back := k.node("backend", now, 0)
	expired := k.node("old", now.Add(-2*time.Hour), time.Hour)
	cases := []struct {
		name   string
		server *meshtls.FileSource
		sans   []string
		want   meshtls.HandshakeResult
		reason string
	}{
		{"another CA", foreign, nil, meshtls.HandshakeVerifyError, "is not signed by a trusted CA"},
		{"SAN outside the list", back, []string{"spiffe://shop/payments"}, meshtls.HandshakeVerifySAN, "match none of subjectAlternativeNames [spiffe://shop/payments]"},
		{"expired", expired, nil, meshtls.HandshakeVerifyError, "server certificate spiffe://shop/old expired at"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr, sn := startTLS(t, serverConfig(t, meshtls.ServerOptions{Certificate: tc.server}),
				http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
			var logs logBuf
			clock := &manualClock{now: now}
			c := tlsCluster(t, "http", addr, clientConfig(t, meshtls.ClientOptions{Trust: k.trust, SubjectAltNames: tc.sans}),
				upstream.Options{Clock: clock, Log: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			fail := func() {
				t.Helper()
				_, err := c.RoundTripper().RoundTrip(outReq(t, context.Background(), "GET", addr, "/", nil, 0))
				var ue *upstream.Error
				if !errors.As(err, &ue) || ue.Kind != upstream.Connect || !strings.Contains(err.Error(), tc.reason) {
					t.Fatalf("err %v, want a connect failure saying %q", err, tc.reason)
				}
			}
			fail()
			fail()
			if n := logs.lines(`"level":"WARN"`, "upstream tls handshake failed", tc.reason, `"result":"`+tc.want.String()+`"`); n != 1 {
				t.Errorf("%d warn lines after two failures, want 1:\n%s", n, logs.b.String())
			}
			if n := logs.lines(`"level":"DEBUG"`, "upstream tls handshake failed"); n != 1 {
				t.Errorf("%d debug lines after two failures, want 1", n)
			}
			clock.Add(31 * time.Second)
			fail()
			if n := logs.lines(`"level":"WARN"`, "upstream tls handshake failed", `"unlogged_since_last":1`); n != 1 {
				t.Errorf("after the period: %d warn lines saying one went unlogged, want 1:\n%s", n, logs.b.String())
			}
			if got := c.TLSStats().Count(tc.want); got != 3 || c.TLSStats().Successes() != 0 {
				t.Errorf("counted %d %s, %d successes; want 3 and 0", got, tc.want, c.TLSStats().Successes())
			}
			if len(sn.all()) != 0 {
				t.Error("a request reached the refused server")
			}
		})
	}
}

// TestTLSOriginRotatedClientCertificate: a client certificate rewritten on disk is the
// one the next new connection presents.
func TestTLSOriginRotatedClientCertificate(t *testing.T) {
	k := newPKI(t)
	now := time.Now()
	back := k.node("backend", now, 0)
	front := k.node("frontend", now, 0)
	addr, sn := startTLS(t, serverConfig(t, meshtls.ServerOptions{Certificate: back, Trust: k.trust}),
		http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Header().Set("Connection", "close") }))
	c := tlsCluster(t, "http", addr, clientConfig(t, meshtls.ClientOptions{Trust: k.trust, Certificate: front,
		SessionCache: noSessions{}}), upstream.Options{})
	roundTrip(t, c, outReq(t, context.Background(), "GET", addr, "/", nil, 0))

	changed := front.Changed()
	wc, err := k.ca.Issue(meshtls.WorkloadRequest{Mesh: "shop", Node: "frontend"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := meshtls.WriteWorkload(k.dir, "frontend", wc); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("the rewritten client certificate was not loaded")
	}
	roundTrip(t, c, outReq(t, context.Background(), "GET", addr, "/", nil, 0))
	states := sn.all()
	if len(states) != 2 {
		t.Fatalf("%d handshakes, want 2", len(states))
	}
	first, second := states[0].PeerCertificates[0], states[1].PeerCertificates[0]
	if first.SerialNumber.Cmp(second.SerialNumber) == 0 || second.SerialNumber.Cmp(wc.Cert.SerialNumber) != 0 {
		t.Errorf("the second connection presented serial %v, want the rotated certificate's %v (first %v)", second.SerialNumber, wc.Cert.SerialNumber, first.SerialNumber)
	}
}

// noSessions is a session cache that keeps nothing: every handshake is full, so the
// client certificate is sent each time.
type noSessions struct{}

func (noSessions) Get(string) (*tls.ClientSessionState, bool) { return nil, false }
func (noSessions) Put(string, *tls.ClientSessionState)        {}

// TestTLSOriginHealthChecks: the active health checks of a cluster that originates TLS
// go over TLS (a listener that requires TLS answers nothing else): http, http2, grpc
// and tcp checks pass against TLS servers, with ALPN for the check's protocol.
func TestTLSOriginHealthChecks(t *testing.T) {
	k := newPKI(t)
	back := k.node("backend", time.Now(), 0)
	scfg := serverConfig(t, meshtls.ServerOptions{Certificate: back})
	httpAddr, sn := startTLS(t, scfg, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ping" {
			w.WriteHeader(404)
		}
	}))
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(scfg)))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	gln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(gln) }()
	t.Cleanup(gs.Stop)

	for _, tc := range []struct {
		proto, addr, alpn string
	}{
		{"http", httpAddr, "http/1.1"},
		{"http2", httpAddr, "h2"},
		{"tcp", httpAddr, ""},
		{"grpc", gln.Addr().String(), "h2"},
	} {
		hc := config.HealthCheck{Protocol: tc.proto, Path: "/ping", IntervalMillis: 60000, TimeoutMillis: 5000, HealthyThreshold: 2, UnhealthyThreshold: 2}
		l := &config.Listener{PortMapping: config.PortMapping{Port: 1, Protocol: "http"}, HealthCheck: &hc}
		o := upstream.Options{Dialer: &net.Dialer{}, ConnectTimeout: 5 * time.Second, Clock: &manualClock{now: time.Now()},
			TLS: &upstream.TLS{Config: clientConfig(t, meshtls.ClientOptions{Trust: k.trust}), Policy: "p"}}
		c := upstream.New(router.ClusterRef{Name: "hc-" + tc.proto, Protocol: "http", Listener: l}, o)
		c.Follow(nil, discovery.Plan{Fixed: []discovery.Endpoint{{Address: tc.addr}}})
		before := len(sn.all())
		c.RunHealthChecks()
		c.RunHealthChecks()
		passed, failed := c.Counters().HealthChecksPassed.Load(), c.Counters().HealthChecksFailed.Load()
		c.Close()
		if passed != 2 || failed != 0 {
			t.Errorf("%s checks over TLS: %d passed, %d failed; want 2 and 0", tc.proto, passed, failed)
		}
		if c.TLSStats().Successes() == 0 {
			t.Errorf("%s checks: no handshake counted", tc.proto)
		}
		if tc.addr == httpAddr && tc.proto != "tcp" { // a tcp check sends no request to record
			states := sn.all()[before:]
			if len(states) == 0 || states[0].NegotiatedProtocol != tc.alpn {
				t.Errorf("%s checks: ALPN %v, want %q", tc.proto, states, tc.alpn)
			}
		}
	}
}
