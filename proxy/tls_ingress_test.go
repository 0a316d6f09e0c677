package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
	"github.com/meshd/meshd/proxy/state"
	meshtls "github.com/meshd/meshd/tls"
)

// httpsClient sends every request to addr over TLS with cfg (ALPN as cfg says).
func httpsClient(t *testing.T, addr string, cfg *tls.Config) *http.Client {
	t.Helper()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
		TLSClientConfig:       cfg,
		ForceAttemptHTTP2:     false,
		DisableCompression:    true,
		ResponseHeaderTimeout: 10 * time.Second,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// h2Client speaks HTTP/2 over TLS to addr: ALPN h2 when cfg offers it; otherwise
// HTTP/2 with prior knowledge over a TLS connection without ALPN (net/http's h2c over a
// connection its dialer encrypted: requests to https URLs go out as http ones, and the
// responses have no TLS state).
func h2Client(t *testing.T, addr string, cfg *tls.Config) *http.Client {
	t.Helper()
	tr := &http.Transport{Protocols: new(http.Protocols), DisableCompression: true, ResponseHeaderTimeout: 10 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	if slices.Contains(cfg.NextProtos, "h2") {
		tr.Protocols.SetHTTP2(true)
		tr.TLSClientConfig = cfg
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		}
		return &http.Client{Transport: tr, Timeout: 20 * time.Second}
	}
	tr.Protocols.SetUnencryptedHTTP2(true)
	tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
		d := tls.Dialer{Config: cfg}
		return d.DialContext(ctx, "tcp", addr)
	}
	return &http.Client{Timeout: 20 * time.Second, Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		r = r.Clone(r.Context())
		r.URL.Scheme = "http"
		return tr.RoundTrip(r)
	})}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestTLSStrictHTTP1: a STRICT listener terminates TLS and serves HTTP/1.1 (ALPN
// http/1.1, and without ALPN) to a plaintext local app, which sees X-Forwarded-Proto
// https; a plaintext HTTP request gets a 400 saying TLS is required, and a TLS client
// that does not trust meshd's certificate fails its handshake; every handshake is
// counted, and shown on /stats (listener.ingress:<port>.ssl.*) and /stats/prometheus
// (meshd_tls_handshakes_total{side="server"}).
func TestTLSStrictHTTP1(t *testing.T) {
	p := newPKI(t)
	p.write("app", meshtls.WorkloadRequest{DNSNames: []string{appServerName}})
	up := testutil.StartHTTP(t, echoHandler("app"))
	srv, _ := startTLSMeshd(t, tlsNodeYAML(up.Port, "http", p.listenerTLS("STRICT", false), ""), proxy.Options{})
	addr := srv.IngressAddr()

	for _, protos := range [][]string{{"http/1.1"}, nil} {
		c := httpsClient(t, addr, p.client(protos))
		resp, err := c.Get("https://" + appServerName + "/hello")
		if err != nil {
			t.Fatalf("ALPN %q: %v", protos, err)
		}
		info := decodeEcho(t, resp)
		if resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 || resp.ProtoMajor != 1 {
			t.Errorf("ALPN %q: %s over %+v, want HTTP/1.1 over TLS >= 1.2", protos, resp.Proto, resp.TLS)
		}
		if info.Path != "/hello" || info.Header.Get("X-Forwarded-Proto") != "https" {
			t.Errorf("ALPN %q: the app got %s with X-Forwarded-Proto %q, want /hello and https", protos, info.Path, info.Header.Get("X-Forwarded-Proto"))
		}
	}

	// Plaintext on a STRICT listener: never served, but told why.
	rc := dialRaw(t, addr)
	rc.send(t, "GET / HTTP/1.1\r\nHost: app\r\n\r\n")
	resp, body := rc.read(t, "GET")
	if resp.StatusCode != 400 || resp.Header.Get("X-Meshd-Error") != "tls_required" || !strings.Contains(body, "requires TLS") {
		t.Errorf("plaintext request: %d %q %q, want 400 tls_required", resp.StatusCode, resp.Header.Get("X-Meshd-Error"), body)
	}
	rc.expectClosed(t)

	// A client that does not trust meshd's certificate.
	other := newPKI(t)
	if _, err := httpsClient(t, addr, other.client(nil)).Get("https://" + appServerName + "/"); err == nil {
		t.Error("a client trusting another CA completed a request")
	}

	waitStats(t, srv, up.Port, func(st *state.ListenerTLSStats) bool {
		return st.Handshakes.Successes() == 2 && st.Handshakes.Count(meshtls.HandshakeError) == 2
	})
	name := "ingress:" + strconv.Itoa(up.Port)
	if st := srv.TLSListenerStats()[name]; st == nil || st.Successes() != 2 {
		t.Errorf("TLSListenerStats: %v, want the listener's counters under %s", srv.TLSListenerStats(), name)
	}
	// The admin API shows the same counters, in Envoy's names and in Prometheus's.
	_, stats := adminGet(t, srv, "/stats")
	for _, line := range []string{
		"listener." + name + ".ssl.handshake: 2\n",
		"listener." + name + ".ssl.connection_error: 2\n",
		"listener." + name + ".ssl.session_reused: 0\n",
		"listener." + name + ".ssl.fail_verify_no_cert: 0\n",
	} {
		if !bytes.Contains(stats, []byte(line)) {
			t.Errorf("/stats lacks %q", line)
		}
	}
	f := scrape(t, srv, "")
	hs := lbls{"side": "server", "cluster": "", "listener": name}
	for result, v := range map[string]float64{"ok": 2, "error": 2} {
		hs["result"] = result
		f.expect(t, "meshd_tls_handshakes_total", hs, v)
	}
	hs["result"] = "verify_error"
	f.absent(t, "meshd_tls_handshakes_total", hs)
}

// decodeEcho reads an echoHandler answer, failing on a non-200.
func decodeEcho(t *testing.T, resp *http.Response) echoInfo {
	t.Helper()
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d (%s): %s", resp.StatusCode, resp.Header.Get("X-Meshd-Error"), b)
	}
	var info echoInfo
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		t.Fatal(err)
	}
	return info
}

// waitStats waits (bounded) until the TLS counters of the listener on port satisfy ok:
// a handshake's counter moves after the client's side of it completed.
func waitStats(t *testing.T, srv *proxy.Server, port int, ok func(*state.ListenerTLSStats) bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		st := srv.Snapshot().ListenerTLSStats(port)
		if st == nil {
			t.Fatalf("no TLS counters for port %d", port)
		}
		if ok(st) {
			return
		}
		if time.Now().After(deadline) {
			var counts []string
			for _, r := range meshtls.HandshakeResults() {
				counts = append(counts, fmt.Sprintf("%s=%d", r, st.Handshakes.Count(r)))
			}
			t.Fatalf("TLS counters of port %d: %s, plaintext %d", port, strings.Join(counts, " "), st.Plaintext.Load())
		}
	}
}

// TestTLSStrictHTTP2: a STRICT http2 listener serves HTTP/2 over TLS to an h2c local
// app: chosen by ALPN h2, and spoken with prior knowledge by a TLS client that offers
// no ALPN (the decrypted bytes are sniffed, as h2c is on a plaintext listener); an
// http listener takes ALPN h2 too and bridges to its HTTP/1.1 app.
func TestTLSStrictHTTP2(t *testing.T) {
	p := newPKI(t)
	p.write("app", meshtls.WorkloadRequest{DNSNames: []string{appServerName}})
	h2app := testutil.StartH2C(t, echoHandler("h2app"))
	srv, _ := startTLSMeshd(t, tlsNodeYAML(h2app.Port, "http2", p.listenerTLS("STRICT", false), ""), proxy.Options{})
	for _, protos := range [][]string{{"h2"}, nil} {
		c := h2Client(t, srv.IngressAddr(), p.client(protos))
		req := newReq(t, "POST", "https://"+appServerName+"/h2", strings.NewReader("body"))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("ALPN %q: %v", protos, err)
		}
		info := decodeEcho(t, resp)
		if resp.ProtoMajor != 2 || (protos != nil && (resp.TLS == nil || resp.TLS.NegotiatedProtocol != "h2")) {
			t.Errorf("ALPN %q: %s, negotiated %+v", protos, resp.Proto, resp.TLS)
		}
		if info.Proto != "HTTP/2.0" || info.Body != "body" || info.Header.Get("X-Forwarded-Proto") != "https" {
			t.Errorf("ALPN %q: the app got %s %q X-Forwarded-Proto %q", protos, info.Proto, info.Body, info.Header.Get("X-Forwarded-Proto"))
		}
	}

	h1app := testutil.StartHTTP(t, echoHandler("h1app"))
	srv1, _ := startTLSMeshd(t, tlsNodeYAML(h1app.Port, "http", p.listenerTLS("STRICT", false), ""), proxy.Options{})
	resp, err := h2Client(t, srv1.IngressAddr(), p.client([]string{"h2"})).Get("https://" + appServerName + "/bridged")
	if err != nil {
		t.Fatal(err)
	}
	if info := decodeEcho(t, resp); resp.ProtoMajor != 2 || info.Proto != "HTTP/1.1" || info.Path != "/bridged" {
		t.Errorf("http listener, ALPN h2: client %s, app %s %s", resp.Proto, info.Proto, info.Path)
	}
}

// TestTLSStrictGRPC: grpc-go over TLS (its credentials, ALPN h2) through a STRICT grpc
// listener to a plaintext gRPC app: unary and a server stream.
func TestTLSStrictGRPC(t *testing.T) {
	p := newPKI(t)
	p.write("app", meshtls.WorkloadRequest{DNSNames: []string{appServerName}})
	hs := health.NewServer()
	up := testutil.StartGRPC(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, hs) })
	t.Cleanup(hs.Shutdown)
	srv, _ := startTLSMeshd(t, tlsNodeYAML(up.Port, "grpc", p.listenerTLS("STRICT", false), ""), proxy.Options{})
	cc, err := grpc.NewClient("passthrough:///"+appServerName,
		grpc.WithTransportCredentials(credentials.NewTLS(p.client(nil))),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", srv.IngressAddr())
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := healthpb.NewHealthClient(cc)
	var peerInfo peer.Peer
	resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&peerInfo))
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Check over TLS: %v %v", resp, err)
	}
	if ti, ok := peerInfo.AuthInfo.(credentials.TLSInfo); !ok || ti.State.NegotiatedProtocol != "h2" {
		t.Errorf("the call did not run over TLS with ALPN h2: %#v", peerInfo.AuthInfo)
	}
	hs.SetServingStatus("svc", healthpb.HealthCheckResponse_SERVING)
	stream, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := stream.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch over TLS: %v %v", m, err)
	}
	hs.SetServingStatus("svc", healthpb.HealthCheckResponse_NOT_SERVING)
	if m, err := stream.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Watch over TLS, second message: %v %v", m, err)
	}
}

// echoTCP is an opaque TCP app that sends greeting first (server-first, "" none),
// then echoes what it reads.
func echoTCP(t *testing.T, greeting string) *testutil.Upstream {
	return testutil.StartRaw(t, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		if greeting != "" {
			if _, err := io.WriteString(c, greeting); err != nil {
				return
			}
		}
		_, _ = io.Copy(c, c)
	})
}

// roundTrip writes msg on c and reads as many bytes back.
func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo: %q %v, want %q", got, err, msg)
	}
}

// TestTLSStrictTCP: a STRICT tcp listener terminates TLS and relays the decrypted bytes
// to the local app both ways (Envoy terminates TLS on tcp listeners too); no ALPN is
// agreed on opaque TCP, even when the client offers h2.
func TestTLSStrictTCP(t *testing.T) {
	p := newPKI(t)
	p.write("app", meshtls.WorkloadRequest{DNSNames: []string{appServerName}})
	up := echoTCP(t, "")
	srv, _ := startTLSMeshd(t, tlsNodeYAML(up.Port, "tcp", p.listenerTLS("STRICT", false), ""), proxy.Options{})
	c, err := tls.Dial("tcp", srv.IngressAddr(), p.client([]string{"h2", "http/1.1"}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if np := c.ConnectionState().NegotiatedProtocol; np != "" {
		t.Errorf("ALPN %q agreed on a tcp listener", np)
	}
	roundTrip(t, c, "hello over tls\n")
	roundTrip(t, c, strings.Repeat("x", 100<<10))
	// The client's close_notify reaches the app as EOF; the app's close comes back as
	// the end of the TLS stream.
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
		t.Errorf("after close_notify: %q %v, want a clean end", b, err)
	}
}

// TestTLSPermissive: a PERMISSIVE listener serves plaintext and TLS clients on one
// port, told apart by their first bytes: HTTP/1.1, h2c and HTTP/2 over TLS on an http
// listener; on a tcp listener TLS, client-first plaintext, and a server-first protocol
// whose client sends nothing until the app's greeting (served as plaintext once the
// sniff timeout passed).
func TestTLSPermissive(t *testing.T) {
	p := newPKI(t)
	p.write("app", meshtls.WorkloadRequest{DNSNames: []string{appServerName}})

	t.Run("http", func(t *testing.T) {
		up := testutil.StartHTTP(t, echoHandler("app"))
		srv, _ := startTLSMeshd(t, tlsNodeYAML(up.Port, "http", p.listenerTLS("PERMISSIVE", false), ""), proxy.Options{})
		addr := srv.IngressAddr()
		for _, c := range []struct {
			name   string
			client *http.Client
			url    string
			tls    bool
		}{
			{"plain HTTP/1.1", testutil.HTTPClient(t, addr), "http://" + appServerName + "/", false},
			{"h2c", testutil.H2CClient(t, addr), "http://" + appServerName + "/", false},
			{"TLS HTTP/1.1", httpsClient(t, addr, p.client([]string{"http/1.1"})), "https://" + appServerName + "/", true},
			{"TLS h2", h2Client(t, addr, p.client([]string{"h2"})), "https://" + appServerName + "/", true},
		} {
			resp, err := c.client.Get(c.url)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			info := decodeEcho(t, resp)
			if (resp.TLS != nil) != c.tls {
				t.Errorf("%s: answered with TLS %v", c.name, resp.TLS != nil)
			}
			want := "http"
			if c.tls {
				want = "https"
			}
			if got := info.Header.Get("X-Forwarded-Proto"); got != want {
				t.Errorf("%s: X-Forwarded-Proto %q, want %q", c.name, got, want)
			}
		}
		waitStats(t, srv, up.Port, func(st *state.ListenerTLSStats) bool {
			return st.Handshakes.Successes() == 2 && st.Plaintext.Load() == 2
		})
		// The plaintext callers are on the admin API: the number to watch before STRICT.
		name := "ingress:" + strconv.Itoa(up.Port)
		if _, stats := adminGet(t, srv, "/stats"); !bytes.Contains(stats, []byte("listener."+name+".permissive_plaintext_connections: 2\n")) {
			t.Errorf("/stats lacks listener.%s.permissive_plaintext_connections: 2", name)
		}
		scrape(t, srv, "").expect(t, "meshd_tls_permissive_plaintext_connections_total", lbls{"listener": name}, 2)
	})

	t.Run("tcp", func(t *testing.T) {
		// A generous sniff timeout for the client-first connections: a TLS client slower
		// than it to send its ClientHello (key generation on a loaded machine) would be
		// taken for a server-first protocol.
		up := echoTCP(t, "")
		srv, _ := startTLSMeshd(t, tlsNodeYAML(up.Port, "tcp", p.listenerTLS("PERMISSIVE", false), ""),
			proxy.Options{SniffTimeout: 10 * time.Second})
		tc, err := tls.Dial("tcp", srv.IngressAddr(), p.client(nil))
		if err != nil {
			t.Fatal(err)
		}
		defer tc.Close()
		roundTrip(t, tc, "over tls")
		pc := dialRaw(t, srv.IngressAddr())
		roundTrip(t, pc, "plain text")

		greeter := echoTCP(t, "220 ready\r\n")
		srv2, _ := startTLSMeshd(t, tlsNodeYAML(greeter.Port, "tcp", p.listenerTLS("PERMISSIVE", false), ""),
			proxy.Options{SniffTimeout: 50 * time.Millisecond})
		sc := dialRaw(t, srv2.IngressAddr())
		line, err := sc.br.ReadString('\n')
		if err != nil || line != "220 ready\r\n" {
			t.Fatalf("server-first app behind PERMISSIVE: %q %v", line, err)
		}
		roundTrip(t, &rawReader{sc}, "EHLO meshd\r\n")
		waitStats(t, srv2, greeter.Port, func(st *state.ListenerTLSStats) bool { return st.Plaintext.Load() == 1 })
	})
}

// rawReader reads a rawConn through its buffered reader.
type rawReader struct{ *rawConn }

func (r *rawReader) Read(p []byte) (int, error) { return r.br.Read(p) }

// TestTLSMutual: a listener with validation asks for and verifies client certificates
// (mTLS): a caller of the mesh CA whose SPIFFE ID is in subjectAlternativeNames is
// served over HTTP/1.1 and HTTP/2, and its verified identity is the connection's peer
// (the access log's %DOWNSTREAM_PEER_URI_SAN%), on a resumed session too; a certificate of another CA, a SAN
// outside the list and no certificate at all are refused at the handshake, each
// logged with its reason and counted.
func TestTLSMutual(t *testing.T) {
	p := newPKI(t)
	p.write("app", meshtls.WorkloadRequest{DNSNames: []string{appServerName}})
	up := testutil.StartHTTP(t, echoHandler("app"))
	logPath := filepath.Join(t.TempDir(), "access.log")
	accessLog := fmt.Sprintf("      logging: {accessLog: {file: {path: %q, format: {text: %q}}}}\n", logPath,
		"%PROTOCOL% %DOWNSTREAM_PEER_URI_SAN% %DOWNSTREAM_TLS_VERSION% %REQUESTED_SERVER_NAME%")
	srv, logs := startTLSMeshd(t, tlsNodeYAML(up.Port, "http", p.listenerTLS("STRICT", true, `"spiffe://t/frontend"`), accessLog), proxy.Options{})
	addr := srv.IngressAddr()
	frontend := tlsCert(t, p.cert("frontend", meshtls.WorkloadRequest{}))

	resp, err := httpsClient(t, addr, p.client([]string{"http/1.1"}, frontend)).Get("https://" + appServerName + "/h1")
	if err != nil {
		t.Fatal(err)
	}
	decodeEcho(t, resp)
	resp, err = h2Client(t, addr, p.client([]string{"h2"}, frontend)).Get("https://" + appServerName + "/h2")
	if err != nil {
		t.Fatal(err)
	}
	decodeEcho(t, resp)
	// A resumed session is verified again and keeps its caller.
	resuming := p.client([]string{"http/1.1"}, frontend)
	resuming.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	for i := range 2 {
		c := httpsClient(t, addr, resuming)
		resp, err := c.Get("https://" + appServerName + "/resumed")
		if err != nil {
			t.Fatal(err)
		}
		decodeEcho(t, resp)
		c.CloseIdleConnections()
		if i == 1 && !resp.TLS.DidResume {
			t.Error("the second connection with a session cache did not resume")
		}
	}
	// A request's line is written after its answer has left, so two connections' lines
	// may come in either order (seen in CI): compared sorted.
	lines := slices.Sorted(slices.Values(readLines(t, logPath, 4)))
	for i, want := range []string{"HTTP/1.1 spiffe://t/frontend TLSv1.3 " + appServerName, "HTTP/1.1 spiffe://t/frontend TLSv1.3 " + appServerName,
		"HTTP/1.1 spiffe://t/frontend TLSv1.3 " + appServerName, "HTTP/2 spiffe://t/frontend TLSv1.3 " + appServerName} {
		if lines[i] != want {
			t.Errorf("access log line %d (sorted): %q, want %q", i+1, lines[i], want)
		}
	}

	other := newPKI(t)
	refused := []struct {
		name   string
		certs  []tls.Certificate
		reason string
		log    string
	}{
		{"another CA", []tls.Certificate{tlsCert(t, other.cert("frontend", meshtls.WorkloadRequest{}))}, "verify_error", "is not signed by a trusted CA"},
		{"SAN outside the list", []tls.Certificate{tlsCert(t, p.cert("intruder", meshtls.WorkloadRequest{}))}, "verify_san", "match none of subjectAlternativeNames"},
		{"no certificate", nil, "no_certificate", "certificate"},
	}
	for _, c := range refused {
		// TLS 1.3 clients finish their side before the server verified them: the refusal
		// arrives as an alert at the first read.
		resp, err := httpsClient(t, addr, p.client([]string{"http/1.1"}, c.certs...)).Get("https://" + appServerName + "/")
		if err == nil {
			resp.Body.Close()
			t.Errorf("%s: served %d", c.name, resp.StatusCode)
			continue
		}
		logs.waitLog(t, "tls: handshake failed", "reason="+c.reason, c.log)
	}
	waitStats(t, srv, up.Port, func(st *state.ListenerTLSStats) bool {
		h := &st.Handshakes
		return h.Successes() == 4 && h.Count(meshtls.HandshakeResumed) == 1 && h.Count(meshtls.HandshakeVerifyError) == 1 &&
			h.Count(meshtls.HandshakeVerifySAN) == 1 && h.Count(meshtls.HandshakeNoCertificate) == 1 && h.Failures() == 3
	})
	if n := len(readLines(t, logPath, 4)); n != 4 {
		t.Errorf("%d access log lines: a refused caller reached the request path", n)
	}
}

// TestTLSRotation: the listener's certificate files are replaced (by rename, as meshd
// ca issue writes them) while clients keep sending requests, half of them on a new
// connection each (a handshake per request), half on kept-alive connections: no request
// fails, and handshakes after the change are served the new certificate, without a
// restart or a new config. The load is bounded in requests and time.
func TestTLSRotation(t *testing.T) {
	p := newPKI(t)
	first := p.write("app", meshtls.WorkloadRequest{DNSNames: []string{appServerName}})
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	srv, logs := startTLSMeshd(t, tlsNodeYAML(up.Port, "http", p.listenerTLS("STRICT", false), ""), proxy.Options{})
	addr := srv.IngressAddr()

	const workers, maxPerWorker = 4, 3000
	var (
		done     atomic.Int64
		failures atomic.Int64
		firstErr atomic.Value
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		c := httpsClient(t, addr, p.client([]string{"http/1.1"}))
		c.Transport.(*http.Transport).DisableKeepAlives = w%2 == 0
		wg.Go(func() {
			for range maxPerWorker {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get("https://" + appServerName + "/")
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
				done.Add(1)
			}
		})
	}
	waitCount := func(n int64) {
		for deadline := time.Now().Add(20 * time.Second); done.Load() < n; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("only %d requests done", done.Load())
			}
		}
	}
	waitCount(50)
	second := p.write("app", meshtls.WorkloadRequest{DNSNames: []string{appServerName}})
	logs.waitLog(t, "tls: new certificate material loaded")
	mark := done.Load()
	waitCount(mark + 50)
	close(stop)
	wg.Wait()

	if n := failures.Load(); n > 0 {
		t.Errorf("%d of %d requests failed during the rotation, the first: %v", n, done.Load(), firstErr.Load())
	}
	c, err := tls.Dial("tcp", addr, p.client(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := c.ConnectionState().PeerCertificates[0].SerialNumber
	if got.Cmp(second.Cert.SerialNumber) != 0 || got.Cmp(first.Cert.SerialNumber) == 0 {
		t.Errorf("a handshake after the rotation got serial %x, want the new %x (old %x)", got, second.Cert.SerialNumber, first.Cert.SerialNumber)
	}
	t.Logf("%d requests, %d after the new certificate was loaded", done.Load(), done.Load()-mark)
}

// TestTLSExpiredCertificate: an expired certificate on disk is never served. At start
// the config is refused, naming the field, the file and the expiry; replacing a good
// certificate with an expired one is rejected with an error line saying so, and the
// good one keeps serving.
func TestTLSExpiredCertificate(t *testing.T) {
	p := newPKI(t)
	expired := meshtls.WorkloadRequest{DNSNames: []string{appServerName}, Now: time.Now().Add(-48 * time.Hour), TTL: time.Hour}
	p.write("app", expired)
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	yaml := tlsNodeYAML(up.Port, "http", p.listenerTLS("STRICT", false), "")

	srv, err := proxy.New(proxy.Options{Node: "app", IngressAddr: "127.0.0.1:0", EgressAddr: "127.0.0.1:0", AdminAddr: "off"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	_, err = srv.Apply(context.Background(), testutil.ParseConfig(t, yaml), "test")
	crt, _ := p.files("app")
	if err == nil || !strings.Contains(err.Error(), "virtualNodes[0].spec.listeners[0].tls.certificate.file") ||
		!strings.Contains(err.Error(), crt) || !strings.Contains(err.Error(), "expired at") {
		t.Fatalf("apply with an expired certificate: %v, want a refusal naming the field, the file and the expiry", err)
	}

	good := p.write("app", meshtls.WorkloadRequest{DNSNames: []string{appServerName}})
	srv2, logs := startTLSMeshd(t, yaml, proxy.Options{})
	p.write("app", expired)
	logs.waitLog(t, "level=ERROR", "tls: new certificate material rejected; the previous one keeps serving", "expired at")
	c, err := tls.Dial("tcp", srv2.IngressAddr(), p.client(nil))
	if err != nil {
		t.Fatalf("after the expired certificate was rejected: %v", err)
	}
	defer c.Close()
	if got := c.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(good.Cert.SerialNumber) != 0 {
		t.Errorf("served serial %x, want the good certificate's %x", got, good.Cert.SerialNumber)
	}
}

// TestTLSHandshakeTimeout: a client that connects to a STRICT listener and sends
// nothing, or stops half way through its ClientHello, is disconnected once the
// handshake timeout passed (long before the keep-alive idle timeout), logged at debug
// and counted.
func TestTLSHandshakeTimeout(t *testing.T) {
	p := newPKI(t)
	p.write("app", meshtls.WorkloadRequest{DNSNames: []string{appServerName}})
	srv, logs := startTLSMeshd(t, tlsNodeYAML(1, "http", p.listenerTLS("STRICT", false), ""),
		proxy.Options{TLSHandshakeTimeout: 100 * time.Millisecond, KeepAliveIdle: time.Hour})
	for i, first := range []string{"", "\x16\x03\x01\x02\x00\x01"} {
		c := dialRaw(t, srv.IngressAddr()) // its own deadline: 10 s
		c.send(t, first)
		c.expectClosed(t)
		waitStats(t, srv, 1, func(st *state.ListenerTLSStats) bool {
			return st.Handshakes.Count(meshtls.HandshakeError) == uint64(i+1)
		})
	}
	logs.waitLog(t, "level=DEBUG", "tls: handshake failed", "reason=timeout")
	if _, err := proxy.New(proxy.Options{Node: "app", TLSHandshakeTimeout: -time.Second}); err == nil || !strings.Contains(err.Error(), "TLSHandshakeTimeout") {
		t.Errorf("a negative handshake timeout: %v", err)
	}
}

// TestTLSDrain: connections idle between requests over TLS, HTTP/1.1 and HTTP/2, are
// woken and closed by a drain (the socket under TLS is shut) instead of holding it to
// the drain timeout; a TCP connection mid-handshake is closed too.
func TestTLSDrain(t *testing.T) {
	p := newPKI(t)
	p.write("app", meshtls.WorkloadRequest{DNSNames: []string{appServerName}})
	up := testutil.StartHTTP(t, echoHandler("app"))
	srv, _ := startTLSMeshd(t, tlsNodeYAML(up.Port, "http", p.listenerTLS("STRICT", false), ""),
		proxy.Options{DrainTimeout: 5 * time.Second})
	addr := srv.IngressAddr()
	h1, err := tls.Dial("tcp", addr, p.client([]string{"http/1.1"}))
	if err != nil {
		t.Fatal(err)
	}
	defer h1.Close()
	_ = h1.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(h1, "GET / HTTP/1.1\r\nHost: app\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(h1)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	decodeEcho(t, resp)
	h2c := h2Client(t, addr, p.client([]string{"h2"}))
	resp, err = h2c.Get("https://" + appServerName + "/")
	if err != nil {
		t.Fatal(err)
	}
	decodeEcho(t, resp)
	half := dialRaw(t, addr)
	half.send(t, "\x16\x03\x01")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with idle TLS connections: %v", err)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Error("the idle HTTP/1.1 TLS connection is still open after the drain")
	}
	half.expectClosed(t)
}

// TestTLSReload: a reload switches a listener's TLS for new connections (STRICT,
// DISABLED, PERMISSIVE), while a connection established over TLS keeps its TLS; a
// listener whose tls block did not change keeps its loaded configuration (session
// tickets stay valid); a reload whose tls block does not load is refused naming the
// field and the file, and the config in force keeps serving.
func TestTLSReload(t *testing.T) {
	p := newPKI(t)
	p.write("app", meshtls.WorkloadRequest{DNSNames: []string{appServerName}})
	up := testutil.StartHTTP(t, echoHandler("app"))
	strict := tlsNodeYAML(up.Port, "http", p.listenerTLS("STRICT", false), "")
	srv, _ := startTLSMeshd(t, strict, proxy.Options{})
	addr := srv.IngressAddr()
	apply := func(yaml string) error {
		_, err := srv.Apply(context.Background(), testutil.ParseConfig(t, yaml), "test")
		return err
	}
	plainOK := func() bool {
		resp, err := testutil.HTTPClient(t, addr).Get("http://" + appServerName + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}
	tlsOK := func() bool {
		resp, err := httpsClient(t, addr, p.client([]string{"http/1.1"})).Get("https://" + appServerName + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}
	kept := httpsClient(t, addr, p.client([]string{"http/1.1"}))
	keptGet := func() {
		t.Helper()
		resp, err := kept.Get("https://" + appServerName + "/kept")
		if err != nil {
			t.Fatalf("kept-alive TLS connection: %v", err)
		}
		decodeEcho(t, resp)
	}
	keptGet()
	lis := srv.Snapshot().ListenerTLS(up.Port)
	if lis == nil || lis.Mode != "STRICT" || lis.Mesh != tlsMesh {
		t.Fatalf("ListenerTLS(%d) = %+v, want STRICT in mesh %s", up.Port, lis, tlsMesh)
	}
	if plainOK() || !tlsOK() {
		t.Fatal("STRICT: want TLS only")
	}

	// An unrelated change keeps the loaded listener.
	if err := apply(strings.Replace(strict, "protocol: http}", "protocol: http}, timeout: {http: {idle: {unit: s, value: 300}}}", 1)); err != nil {
		t.Fatal(err)
	}
	if got := srv.Snapshot().ListenerTLS(up.Port); got != lis {
		t.Error("an unchanged tls block was loaded again")
	}

	if err := apply(tlsNodeYAML(up.Port, "http", "{mode: DISABLED}", "")); err != nil {
		t.Fatal(err)
	}
	if srv.Snapshot().ListenerTLS(up.Port) != nil || !plainOK() || tlsOK() {
		t.Fatal("DISABLED: want plaintext only")
	}
	keptGet() // established under STRICT: still TLS

	if err := apply(tlsNodeYAML(up.Port, "http", p.listenerTLS("PERMISSIVE", false), "")); err != nil {
		t.Fatal(err)
	}
	if !plainOK() || !tlsOK() {
		t.Fatal("PERMISSIVE: want both")
	}

	before := srv.Snapshot().Version()
	bad := tlsNodeYAML(up.Port, "http", `{mode: STRICT, certificate: {file: {certificateChain: /nonexistent/a.crt, privateKey: /nonexistent/a.key}},
        validation: {trust: {file: {certificateChain: /nonexistent/ca.crt}}}}`, "")
	err := apply(bad)
	for _, want := range []string{"virtualNodes[0].spec.listeners[0].tls.certificate.file", "/nonexistent/a.crt"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("a tls block whose files do not exist: %v, want it to name %s", err, want)
		}
	}
	if srv.Snapshot().Version() != before || !plainOK() || !tlsOK() {
		t.Error("the refused config replaced the one in force")
	}
}

// TestTLSWebSocket: an HTTP/1.1 upgrade over a STRICT listener is tunnelled between the
// TLS connection and the plaintext app, messages both ways, a large one included.
func TestTLSWebSocket(t *testing.T) {
	p := newPKI(t)
	p.write("app", meshtls.WorkloadRequest{DNSNames: []string{appServerName}})
	up := testutil.StartHTTP(t, websocket.Handler(func(ws *websocket.Conn) {
		for {
			var msg string
			if websocket.Message.Receive(ws, &msg) != nil || websocket.Message.Send(ws, "echo:"+msg) != nil {
				return
			}
		}
	}))
	srv, _ := startTLSMeshd(t, tlsNodeYAML(up.Port, "http", p.listenerTLS("STRICT", false), ""), proxy.Options{})
	conn, err := tls.Dial("tcp", srv.IngressAddr(), p.client([]string{"http/1.1"}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	cfg, err := websocket.NewConfig("wss://"+appServerName+"/ws", "https://"+appServerName+"/")
	if err != nil {
		t.Fatal(err)
	}
	ws, err := websocket.NewClient(cfg, conn)
	if err != nil {
		t.Fatalf("websocket handshake over TLS through meshd: %v", err)
	}
	defer ws.Close()
	for i, msg := range []string{"one", strings.Repeat("x", 70000), "three"} {
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil || got != "echo:"+msg {
			t.Fatalf("message %d: got %d bytes (%v), want %d", i, len(got), err, len(msg))
		}
	}
}
