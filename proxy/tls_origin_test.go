package proxy_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
	meshtls "github.com/meshd/meshd/tls"
)

// The other sidecar, in these tests, is a Go TLS server with a certificate of the mesh
// CA: meshd (node app) originates TLS to it under node app's client policy.

// originPKI is a mesh CA and the files of the nodes' certificates in a temporary
// directory.
type originPKI struct {
	t   *testing.T
	ca  *meshtls.CA
	dir string
}

func newOriginPKI(t *testing.T) *originPKI {
	t.Helper()
	ca, err := meshtls.NewCA(meshtls.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	return &originPKI{t: t, ca: ca, dir: dir}
}

// issue writes node's certificate, valid from now for ttl (0: a day), and returns its
// file source.
func (k *originPKI) issue(node string, now time.Time, ttl time.Duration) *meshtls.FileSource {
	k.t.Helper()
	wc, err := k.ca.Issue(meshtls.WorkloadRequest{Mesh: "shop", Node: node, Now: now, TTL: ttl})
	if err != nil {
		k.t.Fatal(err)
	}
	certPath, keyPath, err := meshtls.WriteWorkload(k.dir, node, wc)
	if err != nil {
		k.t.Fatal(err)
	}
	return k.source(meshtls.FileOptions{CertificateChain: certPath, PrivateKey: keyPath, Now: func() time.Time { return now }})
}

func (k *originPKI) trust() *meshtls.FileSource {
	k.t.Helper()
	return k.source(meshtls.FileOptions{TrustChain: filepath.Join(k.dir, "ca.crt")})
}

func (k *originPKI) source(o meshtls.FileOptions) *meshtls.FileSource {
	k.t.Helper()
	s, err := meshtls.NewFileSource(o)
	if err != nil {
		k.t.Fatal(err)
	}
	k.t.Cleanup(func() { _ = s.Close() })
	return s
}

// serverTLS is the other sidecar's server configuration: its certificate, and with
// trust the callers' certificates required and verified (mTLS).
func serverTLS(t *testing.T, cert, trust *meshtls.FileSource, protos ...string) *tls.Config {
	t.Helper()
	o := meshtls.ServerOptions{Certificate: cert, NextProtos: protos}
	if trust != nil {
		o.Trust = trust
	}
	cfg, err := meshtls.NewServerConfig(o)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// tlsSeen is what the TLS upstream answers about the connection a request came on.
type tlsSeen struct {
	Proto, SNI, ALPN, Peer string
	Resumed                bool
}

func describeTLS(proto string, cs *tls.ConnectionState) tlsSeen {
	s := tlsSeen{Proto: proto, SNI: cs.ServerName, ALPN: cs.NegotiatedProtocol, Resumed: cs.DidResume}
	if len(cs.PeerCertificates) > 0 && len(cs.PeerCertificates[0].URIs) > 0 {
		s.Peer = cs.PeerCertificates[0].URIs[0].String()
	}
	return s
}

// startTLSUpstream serves HTTP/1.1 and HTTP/2 over TLS with cfg; each answer is the
// JSON tlsSeen of its connection; ?close=1 closes the connection after the answer.
func startTLSUpstream(t *testing.T, cfg *tls.Config) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, TLSConfig: cfg.Clone(), ErrorLog: log.New(io.Discard, "", 0),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Get("close") == "1" {
				w.Header().Set("Connection", "close")
			}
			_ = json.NewEncoder(w).Encode(describeTLS(r.Proto, r.TLS))
		})}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetHTTP2(true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.ServeTLS(ln, "", "")
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// originMeshTmpl: node app calls backend.shop.local (node backend, the TLS upstream),
// plain.shop.local (node plain, a plaintext upstream, enforce: false) and
// other.shop.local (node other, a plaintext upstream whose port the defaults' ports
// leave out). backendDefaults originate TLS with app's certificate.
const originMeshTmpl = `
mesh: {meshName: shop, spec: {egressFilter: {type: DROP_ALL}}}
virtualNodes:
  - virtualNodeName: app
    spec:
      listeners: [{portMapping: {port: {{.App}}, protocol: {{.Proto}}}}]
      backendDefaults:
        clientPolicy:
          tls:
            ports: [{{.Port}}]
            certificate: {file: {certificateChain: {{.Dir}}/app.crt, privateKey: {{.Dir}}/app.key}}
            validation:
              trust: {file: {certificateChain: {{.Dir}}/ca.crt}}
              subjectAlternativeNames: {match: {exact: [{{.SAN}}]}}
      backends:
        - virtualService: {virtualServiceName: backend.shop.local}
        - virtualService:
            virtualServiceName: plain.shop.local
            clientPolicy: {tls: {enforce: false, validation: {trust: {file: {certificateChain: {{.Dir}}/ca.crt}}}}}
        - virtualService: {virtualServiceName: other.shop.local}
  - virtualNodeName: backend
    spec:
      listeners: [{portMapping: {port: {{.Port}}, protocol: {{.Proto}}}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:{{.Port}}"]}}
  - virtualNodeName: plain
    spec:
      listeners: [{portMapping: {port: {{.Plain}}, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:{{.Plain}}"]}}
  - virtualNodeName: other
    spec:
      listeners: [{portMapping: {port: {{.Other}}, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:{{.Other}}"]}}
virtualServices:
  - {virtualServiceName: backend.shop.local, spec: {provider: {virtualNode: {virtualNodeName: backend}}}}
  - {virtualServiceName: plain.shop.local, spec: {provider: {virtualNode: {virtualNodeName: plain}}}}
  - {virtualServiceName: other.shop.local, spec: {provider: {virtualNode: {virtualNodeName: other}}}}
`

type originMesh struct {
	Dir, Proto, SAN         string
	App, Port, Plain, Other int
}

// tlsLog is a JSON log, safe for concurrent use.
type tlsLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *tlsLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *tlsLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startOrigin starts meshd for node app on m, logging to the returned log.
func startOrigin(t *testing.T, m originMesh, opts proxy.Options) (*proxy.Server, *tlsLog) {
	t.Helper()
	if m.Proto == "" {
		m.Proto = "http"
	}
	if m.SAN == "" {
		m.SAN = "spiffe://shop/backend"
	}
	if m.App == 0 {
		m.App = 1
	}
	if m.Plain == 0 {
		m.Plain = testutil.StartHTTP(t, echoHandler("plain")).Port
	}
	if m.Other == 0 {
		m.Other = testutil.StartHTTP(t, echoHandler("other")).Port
	}
	lg := &tlsLog{}
	opts.Node = "app"
	opts.Logger = slog.New(slog.NewJSONHandler(lg, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return testutil.StartMeshdOpts(t, opts, testutil.Render(t, originMeshTmpl, m)), lg
}

func getSeen(t *testing.T, c *http.Client, url string) tlsSeen {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s: %s", url, resp.StatusCode, resp.Header.Get(proxy.HeaderError), b)
	}
	var s tlsSeen
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("GET %s: %q: %v", url, b, err)
	}
	return s
}

// TestTLSOriginHTTP1: an HTTP/1.1 app request to a backend whose client policy
// enforces TLS leaves meshd over mTLS: the upstream sees the virtual service name as
// SNI, ALPN http/1.1 and node app's certificate; a second connection resumes the
// session. enforce: false and a port outside ports stay plaintext. /stats and
// /stats/prometheus count the handshakes; the certificate sources are exported.
func TestTLSOriginHTTP1(t *testing.T) {
	k := newOriginPKI(t)
	now := time.Now()
	k.issue("app", now, 0)
	port := startTLSUpstream(t, serverTLS(t, k.issue("backend", now, 0), k.trust()))
	srv, _ := startOrigin(t, originMesh{Dir: k.dir, Port: port}, proxy.Options{})
	c := testutil.HTTPClient(t, srv.EgressAddr())

	first := getSeen(t, c, "http://backend.shop.local/?close=1")
	second := getSeen(t, c, "http://backend.shop.local/")
	want := tlsSeen{Proto: "HTTP/1.1", SNI: "backend.shop.local", ALPN: "http/1.1", Peer: "spiffe://shop/app"}
	if first != want {
		t.Errorf("first connection: the upstream saw %+v, want %+v", first, want)
	}
	want.Resumed = true
	if second != want {
		t.Errorf("second connection: the upstream saw %+v, want %+v (resumed)", second, want)
	}
	for _, host := range []string{"plain.shop.local", "other.shop.local"} {
		info := getEcho(t, c, newReq(t, "GET", "http://"+host+"/", nil))
		if info.Name != strings.TrimSuffix(host, ".shop.local") {
			t.Errorf("%s (plaintext) reached %q", host, info.Name)
		}
	}

	_, stats := adminGet(t, srv, "/stats")
	for _, line := range []string{
		"cluster.backend@backend.shop.local.ssl.handshake: 2\n",
		"cluster.backend@backend.shop.local.ssl.session_reused: 1\n",
		"cluster.backend@backend.shop.local.ssl.fail_verify_error: 0\n",
		"tls.certificate_rejects: 0\n",
		"server.days_until_first_cert_expiring: 0\n", // a day's certificate: 0 whole days left
	} {
		if !bytes.Contains(stats, []byte(line)) {
			t.Errorf("/stats lacks %q", line)
		}
	}
	if bytes.Contains(stats, []byte("cluster.plain.ssl")) || bytes.Contains(stats, []byte("cluster.other.ssl")) {
		t.Error("/stats has ssl counters for plaintext clusters")
	}
	f := scrape(t, srv, "")
	hs := lbls{"side": "client", "cluster": "backend@backend.shop.local", "listener": ""}
	for result, v := range map[string]float64{"ok": 1, "resumed": 1} {
		hs["result"] = result
		f.expect(t, "meshd_tls_handshakes_total", hs, v)
	}
	hs["result"] = "verify_error"
	f.absent(t, "meshd_tls_handshakes_total", hs)
	src := lbls{"source": "file " + filepath.Join(k.dir, "app.crt")}
	if exp := f.value(t, "meshd_tls_certificate_expiry_timestamp_seconds", src); exp < float64(now.Add(23*time.Hour).Unix()) {
		t.Errorf("app.crt expires at %v, want a day from now", exp)
	}
	f.expect(t, "meshd_tls_certificate_reloads_total", src, 0)
	f.expect(t, "meshd_tls_certificate_rejects_total", lbls{"source": "file trust " + filepath.Join(k.dir, "ca.crt")}, 0)
	if n := len(f["envoy_cluster_upstream_rq_total"].GetMetric()); n != 4 { // backend@, plain, other, local
		t.Errorf("%d Envoy cluster series, want 4", n)
	}
}

// TestTLSOriginHTTP2AndGRPC: h2c and gRPC app traffic to backends whose listener speaks
// http2 or grpc leaves meshd over TLS with ALPN h2, and is served by an HTTP/2 server
// and a grpc-go server with TLS credentials.
func TestTLSOriginHTTP2AndGRPC(t *testing.T) {
	k := newOriginPKI(t)
	now := time.Now()
	k.issue("app", now, 0)
	backend := k.issue("backend", now, 0)

	t.Run("http2", func(t *testing.T) {
		port := startTLSUpstream(t, serverTLS(t, backend, k.trust()))
		srv, _ := startOrigin(t, originMesh{Dir: k.dir, Port: port, Proto: "http2"}, proxy.Options{})
		got := getSeen(t, testutil.H2CClient(t, srv.EgressAddr()), "http://backend.shop.local/")
		if want := (tlsSeen{Proto: "HTTP/2.0", SNI: "backend.shop.local", ALPN: "h2", Peer: "spiffe://shop/app"}); got != want {
			t.Errorf("the upstream saw %+v, want %+v", got, want)
		}
		// An HTTP/1.1 app reaches the HTTP/2 upstream over the same TLS.
		if got := getSeen(t, testutil.HTTPClient(t, srv.EgressAddr()), "http://backend.shop.local/"); got.ALPN != "h2" || got.Proto != "HTTP/2.0" {
			t.Errorf("from an HTTP/1.1 client the upstream saw %+v", got)
		}
	})

	t.Run("grpc", func(t *testing.T) {
		var mu sync.Mutex
		var seen []tlsSeen
		record := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if p, ok := peer.FromContext(ctx); ok {
				if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
					mu.Lock()
					seen = append(seen, describeTLS("grpc", &ti.State))
					mu.Unlock()
				}
			}
			return h(ctx, req)
		}
		up := testutil.StartGRPC(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, health.NewServer()) },
			grpc.Creds(credentials.NewTLS(serverTLS(t, backend, k.trust()))), grpc.UnaryInterceptor(record))
		srv, _ := startOrigin(t, originMesh{Dir: k.dir, Port: up.Port, Proto: "grpc"}, proxy.Options{})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := healthpb.NewHealthClient(grpcDial(t, srv.EgressAddr(), "backend.shop.local")).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("Check through meshd: %v %v", resp, err)
		}
		mu.Lock()
		defer mu.Unlock()
		if want := (tlsSeen{Proto: "grpc", SNI: "backend.shop.local", ALPN: "h2", Peer: "spiffe://shop/app"}); len(seen) != 1 || seen[0] != want {
			t.Errorf("the gRPC server saw %+v, want [%+v]", seen, want)
		}
	})
}

// TestTLSOriginRefused: an upstream whose certificate comes from another CA, one whose
// SANs are outside the client policy's list, and one whose certificate has expired are
// refused: the app gets 503 with x-meshd-error upstream_connect_failure, the reason is
// logged at warn once, and the failure is counted by result.
func TestTLSOriginRefused(t *testing.T) {
	k, other := newOriginPKI(t), newOriginPKI(t)
	now := time.Now()
	k.issue("app", now, 0)
	cases := []struct {
		name   string
		cert   *meshtls.FileSource
		san    string
		result string
		envoy  string
		reason string
	}{
		{"another CA", other.issue("backend", now, 0), "", "verify_error", "fail_verify_error", "is not signed by a trusted CA"},
		{"SAN outside the list", k.issue("backend", now, 0), "spiffe://shop/payments", "verify_san", "fail_verify_san",
			"match none of subjectAlternativeNames [spiffe://shop/payments]"},
		{"expired", k.issue("old", now.Add(-3*time.Hour), time.Hour), "", "verify_error", "fail_verify_error", "server certificate spiffe://shop/old expired at"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			port := startTLSUpstream(t, serverTLS(t, tc.cert, nil))
			srv, lg := startOrigin(t, originMesh{Dir: k.dir, Port: port, SAN: tc.san}, proxy.Options{})
			c := testutil.HTTPClient(t, srv.EgressAddr())
			for range 3 {
				resp, err := c.Get("http://backend.shop.local/")
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 503 || resp.Header.Get(proxy.HeaderError) != "upstream_connect_failure" || !strings.Contains(string(body), tc.reason) {
					t.Fatalf("status %d %s=%q body %q; want 503 upstream_connect_failure saying %q", resp.StatusCode,
						proxy.HeaderError, resp.Header.Get(proxy.HeaderError), body, tc.reason)
				}
			}
			warns := 0
			for _, line := range strings.Split(lg.String(), "\n") {
				if strings.Contains(line, `"level":"WARN"`) && strings.Contains(line, "upstream tls handshake failed") {
					warns++
					if !strings.Contains(line, tc.reason) || !strings.Contains(line, `"cluster":"backend@backend.shop.local"`) {
						t.Errorf("the warning does not say why or where: %s", line)
					}
				}
			}
			if warns != 1 {
				t.Errorf("%d warnings for 9 failed handshakes within a period, want 1", warns)
			}
			// A failed handshake is a connect failure: App Mesh's default retry policy (2
			// retries on connection errors) tries each request 3 times.
			f := scrape(t, srv, "")
			f.expect(t, "meshd_tls_handshakes_total", lbls{"side": "client", "cluster": "backend@backend.shop.local", "listener": "", "result": tc.result}, 9)
			_, stats := adminGet(t, srv, "/stats")
			if line := "cluster.backend@backend.shop.local.ssl." + tc.envoy + ": 9\n"; !bytes.Contains(stats, []byte(line)) {
				t.Errorf("/stats lacks %q", line)
			}
		})
	}
}

// TestTLSOriginTCP: a tcp backend under a client policy is relayed over TLS (no ALPN):
// bytes go both ways and half-closes propagate through close_notify.
func TestTLSOriginTCP(t *testing.T) {
	k := newOriginPKI(t)
	now := time.Now()
	k.issue("app", now, 0)
	cfg := serverTLS(t, k.issue("backend", now, 0), k.trust())
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan tlsSeen, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			return
		}
		cs := tc.ConnectionState()
		seen <- describeTLS("tcp", &cs)
		_, _ = io.Copy(tc, tc) // echo until the client's close_notify
		_ = tc.CloseWrite()
	})
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	port := ln.Addr().(*net.TCPAddr).Port
	srv, seam := startL4Meshd(t, testutil.Render(t, originMeshTmpl, originMesh{Dir: k.dir, Port: port, Proto: "tcp", SAN: "spiffe://shop/backend",
		App: 1, Plain: 1, Other: 1}))
	seam.set("127.0.0.1:" + strconv.Itoa(port))
	c := dialTCP(t, srv.EgressAddr())
	if _, err := io.WriteString(c, "over tls\n"); err != nil {
		t.Fatal(err)
	}
	if got := readLine(t, c); got != "over tls" {
		t.Fatalf("echo %q", got)
	}
	_ = c.CloseWrite()
	if rest, err := io.ReadAll(c); len(rest) != 0 || err != nil {
		t.Fatalf("after the half-close: %q, %v; want EOF", rest, err)
	}
	if got, want := <-seen, (tlsSeen{Proto: "tcp", SNI: "backend.shop.local", ALPN: "", Peer: "spiffe://shop/app"}); got != want {
		t.Errorf("the TLS server saw %+v, want %+v", got, want)
	}
	p := waitL4(t, srv, func(p clustersPage) bool { return p.l4("backend@backend.shop.local").Active == 0 })
	if v := p.l4("backend@backend.shop.local"); v.Accepted != 1 || v.BytesSent != 9 || v.BytesReceived != 9 {
		t.Errorf("L4 counters %+v", v)
	}
}

// TestTLSOriginClientCertificateRefused: a server that does not accept node app's
// certificate (its trust is another CA) refuses it after meshd's TLS 1.3 handshake is
// done, at the first read: the app gets 503 upstream_connect_failure saying so, over
// HTTP/1.1 and HTTP/2 alike, as the same refusal in TLS 1.2 (a failed handshake) does.
func TestTLSOriginClientCertificateRefused(t *testing.T) {
	k, other := newOriginPKI(t), newOriginPKI(t)
	now := time.Now()
	k.issue("app", now, 0)
	port := startTLSUpstream(t, serverTLS(t, k.issue("backend", now, 0), other.trust()))
	for _, proto := range []string{"http", "http2"} {
		srv, _ := startOrigin(t, originMesh{Dir: k.dir, Port: port, Proto: proto}, proxy.Options{})
		c := testutil.HTTPClient(t, srv.EgressAddr())
		// Several connections: the alert and the reset that follows it race meshd's
		// first writes (HTTP/2 writes its preface and the request at once); the alert
		// must win every time.
		for i := range 5 {
			resp, err := c.Get("http://backend.shop.local/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 503 || resp.Header.Get(proxy.HeaderError) != "upstream_connect_failure" ||
				!strings.Contains(string(body), "the server refused meshd's TLS client certificate") {
				t.Errorf("%s, request %d: status %d %s=%q body %q; want 503 upstream_connect_failure naming the refused certificate", proto, i,
					resp.StatusCode, proxy.HeaderError, resp.Header.Get(proxy.HeaderError), body)
			}
		}
	}
}

// TestTLSOriginReloadPolicy: a reload that changes a client policy (here its SAN list)
// rebuilds the cluster it covers, which dials under the new policy at once; the
// handshake counters carry over.
func TestTLSOriginReloadPolicy(t *testing.T) {
	k := newOriginPKI(t)
	now := time.Now()
	k.issue("app", now, 0)
	port := startTLSUpstream(t, serverTLS(t, k.issue("backend", now, 0), k.trust()))
	m := originMesh{Dir: k.dir, Port: port, SAN: "spiffe://shop/payments", App: 1,
		Plain: testutil.StartHTTP(t, echoHandler("plain")).Port, Other: testutil.StartHTTP(t, echoHandler("other")).Port}
	srv, _ := startOrigin(t, m, proxy.Options{})
	c := testutil.HTTPClient(t, srv.EgressAddr())
	resp, err := c.Get("http://backend.shop.local/")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("SAN outside the list: %d, want 503", resp.StatusCode)
	}
	m.SAN, m.Proto = "spiffe://shop/backend", "http"
	if _, err := srv.Apply(context.Background(), testutil.ParseConfig(t, testutil.Render(t, originMeshTmpl, m)), "test"); err != nil {
		t.Fatal(err)
	}
	if got := getSeen(t, c, "http://backend.shop.local/"); got.SNI != "backend.shop.local" || got.Peer != "spiffe://shop/app" {
		t.Errorf("after the reload the upstream saw %+v", got)
	}
	f := scrape(t, srv, "")
	hs := lbls{"side": "client", "cluster": "backend@backend.shop.local", "listener": ""}
	hs["result"] = "verify_san"
	f.expect(t, "meshd_tls_handshakes_total", hs, 3)
	hs["result"] = "ok"
	f.expect(t, "meshd_tls_handshakes_total", hs, 1)
}
