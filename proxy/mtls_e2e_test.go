package proxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
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

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
	"github.com/meshd/meshd/proxy/state"
	meshtls "github.com/meshd/meshd/tls"
)

// Two meshd sidecars in this process, on loopback, with mutual TLS between them, as
// issue 13 asks: a client app sends plaintext to sidecar A's egress (node front, whose
// client policy originates mTLS with front's certificate and accepts only back's), A
// sends it over mTLS to sidecar B's ingress (node back, whose listener terminates TLS
// and requires a client certificate of the mesh CA with a listed SAN), and B hands it
// in plaintext to its app. Every certificate comes from a mesh CA in t.TempDir().

// backHost is the virtual service node back provides, the SNI A sends and a DNS SAN of
// back's certificate (so a crypto/tls client can verify B by name).
const backHost = "back.t.local"

// backCluster is A's cluster for back: a TLS cluster of its own, <target>@<service>.
const backCluster = "back@" + backHost

// The callers of back in mtlsMesh, each a sidecar of its own when a test starts it:
// front (sidecar A), stranger (a second node whose certificate B's tls accepts),
// foreign (listed by B, but its certificate comes from another CA) and intruder (a
// certificate of the mesh CA whose SAN B does not list).
var mtlsCallers = []string{"front", "stranger", "foreign", "intruder"}

// backSANs are the client SANs B's listener accepts: not intruder.
var backSANs = []string{"spiffe://t/front", "spiffe://t/stranger", "spiffe://t/foreign"}

// mtlsMesh renders the one config both sidecars run: the callers with a client policy
// (mTLS, trust the mesh CA, SAN spiffe://t/back) and back, whose listener (protocol
// proto, tls mode) serves the app at 127.0.0.1:app and whose endpoint, as its callers
// see it, is B's ingress.
type mtlsMesh struct {
	p       *pki
	proto   string // back's listener protocol
	mode    string // back's tls mode: STRICT or PERMISSIVE
	app     int    // back's listener port: its app's port
	ingress int    // B's ingress port
	authz   string // back's listener authorization block in YAML flow style; "" none
	logPath string // back's access log
}

// backLogFormat is B's access log line: the path, the protocol and TLS of the A→B hop,
// the caller's verified SPIFFE ID, the status.
const backLogFormat = "%REQ(:PATH)% %PROTOCOL% %DOWNSTREAM_TLS_VERSION% %DOWNSTREAM_PEER_URI_SAN% %RESPONSE_CODE%"

func (m *mtlsMesh) yaml() string {
	var b strings.Builder
	b.WriteString("mesh: {meshName: t, spec: {egressFilter: {type: DROP_ALL}}}\nvirtualNodes:\n")
	for _, node := range mtlsCallers {
		crt, key := m.p.files(node)
		fmt.Fprintf(&b, `  - virtualNodeName: %s
    spec:
      listeners: [{portMapping: {port: 1, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:1"]}}
      backendDefaults:
        clientPolicy:
          tls:
            certificate: {file: {certificateChain: %q, privateKey: %q}}
            validation:
              trust: {file: {certificateChain: %q}}
              subjectAlternativeNames: {match: {exact: ["spiffe://t/back"]}}
      backends: [{virtualService: {virtualServiceName: %s}}]
`, node, crt, key, m.p.caFile, backHost)
	}
	crt, key := m.p.files("back")
	authz := ""
	if m.authz != "" {
		authz = "\n          authorization: " + m.authz
	}
	fmt.Fprintf(&b, `  - virtualNodeName: back
    spec:
      listeners:
        - portMapping: {port: %d, protocol: %s}
          tls:
            mode: %s
            certificate: {file: {certificateChain: %q, privateKey: %q}}
            validation:
              trust: {file: {certificateChain: %q}}
              subjectAlternativeNames: {match: {exact: [%s]}}%s
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:%d"]}}
      logging: {accessLog: {file: {path: %q, format: {text: %q}}}}
virtualServices:
  - {virtualServiceName: %s, spec: {provider: {virtualNode: {virtualNodeName: back}}}}
`, m.app, m.proto, m.mode, crt, key, m.p.caFile, `"`+strings.Join(backSANs, `", "`)+`"`, authz, m.ingress, m.logPath, backLogFormat, backHost)
	return b.String()
}

// startSidecar starts meshd for node with yaml, its log (debug level) in the returned
// buffer, certificate files re-read 20 ms after they change.
func startSidecar(t *testing.T, node, yaml string) (*proxy.Server, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	opts := proxy.Options{Node: node, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	opts.TLS.Debounce = 20 * time.Millisecond
	return testutil.StartMeshdOpts(t, opts, yaml), logs
}

// newMTLSMesh issues back's certificate (with backHost as a DNS SAN) and front's, in a
// new mesh CA's directory.
func newMTLSMesh(t *testing.T, proto, mode string) *mtlsMesh {
	t.Helper()
	p := newPKI(t)
	p.write("back", meshtls.WorkloadRequest{DNSNames: []string{backHost}})
	p.write("front", meshtls.WorkloadRequest{})
	return &mtlsMesh{p: p, proto: proto, mode: mode, logPath: filepath.Join(t.TempDir(), "back-access.log")}
}

// startB starts sidecar B for node back in front of the app on port app. B's ingress
// port is known once it listens: the config B starts with names back's own app port
// as back's endpoint, which only back's callers use; the callers get the real one.
func (m *mtlsMesh) startB(t *testing.T, app int) (*proxy.Server, *logBuffer) {
	t.Helper()
	m.app, m.ingress = app, app
	b, logs := startSidecar(t, "back", m.yaml())
	port, err := strconv.Atoi(b.IngressAddr()[strings.LastIndexByte(b.IngressAddr(), ':')+1:])
	if err != nil {
		t.Fatal(err)
	}
	m.ingress = port
	return b, logs
}

// startCaller starts the sidecar of caller node (front is A).
func (m *mtlsMesh) startCaller(t *testing.T, node string) (*proxy.Server, *logBuffer) {
	t.Helper()
	return startSidecar(t, node, m.yaml())
}

// bStats are B's listener's TLS counters.
func (m *mtlsMesh) bStats(t *testing.T, b *proxy.Server) *state.ListenerTLSStats {
	t.Helper()
	st := b.Snapshot().ListenerTLSStats(m.app)
	if st == nil {
		t.Fatalf("B has no TLS counters for its listener on port %d", m.app)
	}
	return st
}

// clusterTLS are A's TLS counters of its cluster to back.
func clusterTLS(t *testing.T, a *proxy.Server) *meshtls.HandshakeStats {
	t.Helper()
	c := a.Snapshot().Cluster(backCluster)
	if c == nil || c.TLSStats() == nil {
		t.Fatalf("A has no TLS cluster %s", backCluster)
	}
	return c.TLSStats()
}

// peerIdentityHeader is the header B sets, for its app, to the caller's verified SPIFFE
// ID (and strips from whatever arrives).
const peerIdentityHeader = "X-Meshd-Peer-Identity"

// expectIdentity checks the caller identity header B's app got: exactly want, once;
// none when want is "".
func expectIdentity(t *testing.T, info echoInfo, want string) {
	t.Helper()
	got := info.Header.Values(peerIdentityHeader)
	if want == "" && len(got) != 0 || want != "" && (len(got) != 1 || got[0] != want) {
		t.Errorf("the app got %s %q, want %q", peerIdentityHeader, got, want)
	}
}

// backApp is B's HTTP application: it counts what reaches it and answers with the
// echoInfo of the request. /close answers with a body delimited by the end of the
// connection: B then closes A's connection after the response (and A its client's), so
// the next request through A opens a new A→B connection.
func backApp(hits *atomic.Int64) http.Handler {
	echo := echoHandler("back")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path != "/close" {
			echo.ServeHTTP(w, r)
			return
		}
		conn, bw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = bw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nclosed")
		_ = bw.Flush()
	})
}

// getVia sends GET url with c, with the header fields hdr (name, value; an empty value
// is left out), and returns the status, the x-meshd-error and the body.
func getVia(t *testing.T, c *http.Client, url string, hdr ...string) (int, string, string) {
	t.Helper()
	req := newReq(t, "GET", url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] != "" {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: body: %v", url, err)
	}
	return resp.StatusCode, resp.Header.Get(proxy.HeaderError), string(body)
}

// expectPlaintextRefused sends a plaintext HTTP/1.1 request straight to B's STRICT
// ingress: B answers 400 tls_required and closes, and B's app sees nothing of it.
func expectPlaintextRefused(t *testing.T, b *proxy.Server, hits func() int64) {
	t.Helper()
	before := hits()
	rc := dialRaw(t, b.IngressAddr())
	rc.send(t, "GET /plain HTTP/1.1\r\nHost: "+backHost+"\r\n\r\n")
	resp, body := rc.read(t, "GET")
	if resp.StatusCode != 400 || resp.Header.Get(proxy.HeaderError) != "tls_required" {
		t.Errorf("plaintext to B: %d %s=%q %q, want 400 tls_required", resp.StatusCode, proxy.HeaderError, resp.Header.Get(proxy.HeaderError), body)
	}
	rc.expectClosed(t)
	if n := hits() - before; n != 0 {
		t.Errorf("a plaintext request to B's STRICT listener reached the app (%d requests)", n)
	}
}

// expectHandshakes checks both ends of the A→B hop counted successful handshakes and
// no failed one, through the getters and on /stats in Envoy's names.
func (m *mtlsMesh) expectHandshakes(t *testing.T, a, b *proxy.Server) {
	t.Helper()
	if st := m.bStats(t, b); st.Handshakes.Successes() == 0 || st.Handshakes.Failures() != 0 {
		t.Errorf("B's listener: %d handshakes, %d failed; want some, none failed", st.Handshakes.Successes(), st.Handshakes.Failures())
	}
	if st := clusterTLS(t, a); st.Successes() == 0 || st.Failures() != 0 {
		t.Errorf("A's cluster %s: %d handshakes, %d failed; want some, none failed", backCluster, st.Successes(), st.Failures())
	}
	checkStat(t, b, "listener.ingress:"+strconv.Itoa(m.app)+".ssl.handshake", func(v int) bool { return v > 0 })
	checkStat(t, a, "cluster."+backCluster+".ssl.handshake", func(v int) bool { return v > 0 })
}

// checkStat finds name on srv's /stats and checks its value.
func checkStat(t *testing.T, srv *proxy.Server, name string, ok func(int) bool) {
	t.Helper()
	_, stats := adminGet(t, srv, "/stats")
	sc := bufio.NewScanner(strings.NewReader(string(stats)))
	for sc.Scan() {
		k, v, found := strings.Cut(sc.Text(), ": ")
		if !found || k != name {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || !ok(n) {
			t.Errorf("/stats: %s: %s", name, v)
		}
		return
	}
	t.Errorf("/stats has no %s", name)
}

// expectAccessLog checks B's access log: one line per request, in any order (a line is
// written once its response is sent), each over TLS 1.3 from front's verified identity
// with protocol proto.
func (m *mtlsMesh) expectAccessLog(t *testing.T, proto string, paths ...string) {
	t.Helper()
	want := make([]string, len(paths))
	for i, path := range paths {
		want[i] = path + " " + proto + " TLSv1.3 spiffe://t/front 200"
	}
	m.expectLogLines(t, want...)
}

// expectLogLines checks B's access log holds exactly the lines want, in any order.
func (m *mtlsMesh) expectLogLines(t *testing.T, want ...string) {
	t.Helper()
	got := readLines(t, m.logPath, len(want))
	slices.Sort(got)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		t.Errorf("B's access log %q, want %q in any order", got, want)
	}
}

// TestMTLSTwoSidecars: client app → A (egress, client policy mTLS) → B (ingress STRICT,
// mTLS) → app, over HTTP/1.1, HTTP/2 (h2c to A, ALPN h2 from A to B's http2 listener)
// and gRPC (grpc-go client and server: unary and a bidirectional stream). The app gets
// the answer through both sidecars, with front's verified SPIFFE ID in the caller
// identity header; B's access log shows the hop was TLS 1.3 in the listener's protocol
// from that identity; both ends counted handshakes; a plaintext request straight to B
// is refused and never reaches the app.
func TestMTLSTwoSidecars(t *testing.T) {
	t.Run("http1", func(t *testing.T) {
		m := newMTLSMesh(t, "http", "STRICT")
		var hits atomic.Int64
		app := testutil.StartHTTP(t, backApp(&hits))
		b, _ := m.startB(t, app.Port)
		a, _ := m.startCaller(t, "front")
		c := testutil.HTTPClient(t, a.EgressAddr())
		for _, path := range []string{"/one", "/two?q=1"} {
			info := getEcho(t, c, newReq(t, "GET", "http://"+backHost+path, nil))
			if info.Name != "back" || info.Path != path || info.Proto != "HTTP/1.1" || info.Header.Get("X-Forwarded-Proto") != "https" {
				t.Errorf("the app got %s %s %s X-Forwarded-Proto %q, want back's app, %s over HTTP/1.1 from B's TLS", info.Name, info.Proto, info.Path,
					info.Header.Get("X-Forwarded-Proto"), path)
			}
			expectIdentity(t, info, "spiffe://t/front")
		}
		info := getEcho(t, c, newReq(t, "POST", "http://"+backHost+"/post", strings.NewReader("a body")))
		if info.Method != "POST" || info.Body != "a body" {
			t.Errorf("POST reached the app as %s %q", info.Method, info.Body)
		}
		m.expectAccessLog(t, "HTTP/1.1", "/one", "/two?q=1", "/post")
		m.expectHandshakes(t, a, b)
		expectPlaintextRefused(t, b, hits.Load)
		if n := hits.Load(); n != 3 {
			t.Errorf("the app got %d requests, want the 3 sent through A", n)
		}
	})

	t.Run("http2", func(t *testing.T) {
		m := newMTLSMesh(t, "http2", "STRICT")
		var hits atomic.Int64
		app := testutil.StartH2C(t, backApp(&hits))
		b, _ := m.startB(t, app.Port)
		a, _ := m.startCaller(t, "front")
		if got := a.Snapshot().Cluster(backCluster).TLSConfig().NextProtos; len(got) != 1 || got[0] != "h2" {
			t.Errorf("A's cluster for an http2 listener offers ALPN %q, want [h2]", got)
		}
		c := testutil.H2CClient(t, a.EgressAddr())
		for _, path := range []string{"/h2", "/h2-again"} {
			req := newReq(t, "POST", "http://"+backHost+path, strings.NewReader(strings.Repeat("x", 100<<10)))
			info := getEcho(t, c, req)
			if info.Proto != "HTTP/2.0" || info.Path != path || info.BodyLen != 100<<10 || info.Header.Get("X-Forwarded-Proto") != "https" {
				t.Errorf("the app got %s %s with %d bytes, X-Forwarded-Proto %q", info.Proto, info.Path, info.BodyLen, info.Header.Get("X-Forwarded-Proto"))
			}
			expectIdentity(t, info, "spiffe://t/front")
		}
		m.expectAccessLog(t, "HTTP/2", "/h2", "/h2-again")
		m.expectHandshakes(t, a, b)
		if st := clusterTLS(t, a); st.Successes() != 1 {
			t.Errorf("A made %d TLS connections to B for two HTTP/2 requests, want 1 (multiplexed)", st.Successes())
		}
		expectPlaintextRefused(t, b, hits.Load)
	})

	t.Run("grpc", func(t *testing.T) {
		m := newMTLSMesh(t, "grpc", "STRICT")
		var (
			mu   sync.Mutex
			seen []string // each call's method and caller identity, as the app saw them
		)
		app := testutil.StartGRPC(t, func(*grpc.Server) {}, grpc.ForceServerCodec(rawCodec{}),
			grpc.UnknownServiceHandler(func(srv any, ss grpc.ServerStream) error {
				method, _ := grpc.MethodFromServerStream(ss)
				md, _ := metadata.FromIncomingContext(ss.Context())
				mu.Lock()
				seen = append(seen, method+" "+strings.Join(md.Get(peerIdentityHeader), ","))
				mu.Unlock()
				return echoStreams(srv, ss)
			}))
		b, _ := m.startB(t, app.Port)
		a, _ := m.startCaller(t, "front")
		cc := grpcDial(t, a.EgressAddr(), backHost)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		force := grpc.ForceCodec(rawCodec{})

		in, out := msgPattern(7, 64<<10), []byte(nil)
		if err := cc.Invoke(ctx, echoUnary, &in, &out, force); err != nil || string(out) != string(in) {
			t.Fatalf("unary through A and B: %d bytes back, %v", len(out), err)
		}
		stream, err := cc.NewStream(ctx, bidiStreamDesc, echoChat, force)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			msg := msgPattern(i, 1000+i)
			if err := stream.SendMsg(&msg); err != nil {
				t.Fatalf("chat send %d: %v", i, err)
			}
			var got []byte
			if err := stream.RecvMsg(&got); err != nil || string(got) != string(msg) {
				t.Fatalf("chat message %d: %d bytes back, %v", i, len(got), err)
			}
		}
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if err := stream.RecvMsg(new([]byte)); err != io.EOF {
			t.Fatalf("chat end: %v, want io.EOF (status OK)", err)
		}
		calls := func() int64 {
			mu.Lock()
			defer mu.Unlock()
			return int64(len(seen))
		}
		mu.Lock()
		if want := []string{echoUnary + " spiffe://t/front", echoChat + " spiffe://t/front"}; !slices.Equal(seen, want) {
			t.Errorf("the app saw the calls %q, want %q (with the caller's identity)", seen, want)
		}
		mu.Unlock()
		m.expectAccessLog(t, "HTTP/2", echoUnary, echoChat)
		m.expectHandshakes(t, a, b)
		expectPlaintextRefused(t, b, calls)
	})
}

// TestMTLSRefused: B refuses a caller whose certificate comes from another CA and one
// whose SAN is not in its listener's subjectAlternativeNames, at the handshake: the
// caller's app gets 503 with x-meshd-error upstream_connect_failure saying its
// certificate was refused (TLS 1.3: the refusal is an alert at the caller's first
// read) and its sidecar counts the retries; B logs each refusal with its reason and
// counts it; nothing reaches B's app.
func TestMTLSRefused(t *testing.T) {
	m := newMTLSMesh(t, "http", "STRICT")
	other := newPKI(t)
	if _, _, err := meshtls.WriteWorkload(m.p.dir, "foreign", other.cert("foreign", meshtls.WorkloadRequest{})); err != nil {
		t.Fatal(err)
	}
	m.p.write("intruder", meshtls.WorkloadRequest{})
	var hits atomic.Int64
	app := testutil.StartHTTP(t, backApp(&hits))
	b, bLog := m.startB(t, app.Port)
	listener := "listener.ingress:" + strconv.Itoa(m.app)

	for _, tc := range []struct {
		caller string
		result meshtls.HandshakeResult
		stat   string
		why    string
	}{
		{"foreign", meshtls.HandshakeVerifyError, ".ssl.fail_verify_error", "client certificate spiffe://t/foreign (issuer"},
		{"intruder", meshtls.HandshakeVerifySAN, ".ssl.fail_verify_san", "client certificate SANs [spiffe://t/intruder] match none of subjectAlternativeNames"},
	} {
		t.Run(tc.caller, func(t *testing.T) {
			caller, _ := m.startCaller(t, tc.caller)
			status, code, body := getVia(t, testutil.HTTPClient(t, caller.EgressAddr()), "http://"+backHost+"/")
			if status != 503 || code != "upstream_connect_failure" || !strings.Contains(body, "the server refused meshd's TLS client certificate") {
				t.Errorf("%s through its sidecar: %d %s=%q %q; want 503 upstream_connect_failure saying the certificate was refused",
					tc.caller, status, proxy.HeaderError, code, body)
			}
			line := bLog.waitLog(t, "tls: handshake failed", "reason="+tc.result.String(), tc.why)
			if !strings.Contains(line, "mode=STRICT") {
				t.Errorf("B's log line does not say the listener's mode: %s", line)
			}
			// One request, tried 3 times: App Mesh's default retry policy retries
			// connection errors twice, and a refused certificate is one.
			waitStats(t, b, m.app, func(st *state.ListenerTLSStats) bool { return st.Handshakes.Count(tc.result) == 3 })
			checkStat(t, b, listener+tc.stat, func(v int) bool { return v == 3 })
			checkStat(t, caller, "cluster."+backCluster+".retries", func(v int) bool { return v == 2 })
		})
	}
	if st := m.bStats(t, b); st.Handshakes.Successes() != 0 {
		t.Errorf("B completed %d handshakes, want none", st.Handshakes.Successes())
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("refused callers reached B's app %d times", n)
	}
}

// TestMTLSPermissive: B's listener in PERMISSIVE mode, with validation, serves A over
// mTLS and a plaintext client on the same port: the app sees https and front's
// identity from A (B's access log: TLS 1.3 from front), http and no identity from the
// plain client, though it sent one; B counted one of each (on /stats too).
func TestMTLSPermissive(t *testing.T) {
	m := newMTLSMesh(t, "http", "PERMISSIVE")
	var hits atomic.Int64
	app := testutil.StartHTTP(t, backApp(&hits))
	b, _ := m.startB(t, app.Port)
	a, _ := m.startCaller(t, "front")

	info := getEcho(t, testutil.HTTPClient(t, a.EgressAddr()), newReq(t, "GET", "http://"+backHost+"/tls", nil))
	if got := info.Header.Get("X-Forwarded-Proto"); got != "https" {
		t.Errorf("through A: X-Forwarded-Proto %q, want https", got)
	}
	expectIdentity(t, info, "spiffe://t/front")
	// A plaintext caller has no identity, whatever it claims.
	req := newReq(t, "GET", "http://"+backHost+"/plain", nil)
	req.Header.Set(peerIdentityHeader, "spiffe://t/front")
	info = getEcho(t, testutil.HTTPClient(t, b.IngressAddr()), req)
	if got := info.Header.Get("X-Forwarded-Proto"); got != "http" {
		t.Errorf("plaintext: X-Forwarded-Proto %q, want http", got)
	}
	expectIdentity(t, info, "")
	m.expectLogLines(t, "/tls HTTP/1.1 TLSv1.3 spiffe://t/front 200", "/plain HTTP/1.1 - - 200")
	waitStats(t, b, m.app, func(st *state.ListenerTLSStats) bool {
		return st.Handshakes.Successes() == 1 && st.Plaintext.Load() == 1 && st.Handshakes.Failures() == 0
	})
	if n := clusterTLS(t, a).Successes(); n != 1 {
		t.Errorf("A's cluster counted %d handshakes, want 1", n)
	}
	listener := "listener.ingress:" + strconv.Itoa(m.app)
	checkStat(t, b, listener+".ssl.handshake", func(v int) bool { return v == 1 })
	checkStat(t, b, listener+".permissive_plaintext_connections", func(v int) bool { return v == 1 })
}

// serialOf is the serial of the certificate a tls.Certificate holds.
func serialOf(t *testing.T, c *tls.Certificate) string {
	t.Helper()
	leaf := c.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			t.Fatal(err)
		}
	}
	return leaf.SerialNumber.String()
}

// bServes handshakes with B's ingress as front (a new connection, no session to
// resume) and returns the serial of the certificate B presented.
func (m *mtlsMesh) bServes(t *testing.T, b *proxy.Server, front *meshtls.WorkloadCert) string {
	t.Helper()
	cfg := &tls.Config{RootCAs: m.p.pool, ServerName: backHost, NextProtos: []string{"http/1.1"}, Certificates: []tls.Certificate{tlsCert(t, front)}}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", b.IngressAddr())
	if err != nil {
		t.Fatalf("TLS handshake with B: %v", err)
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// TestMTLSRotationUnderLoad: while 4 clients send requests through A to B (bounded in
// count and time; two on kept-alive connections, two whose every request ends its A→B
// connection, so handshakes go on throughout), B's and A's certificate files are
// replaced with new ones of the same CA: no request fails, both sidecars load the new
// pair (logged, counted, the expiry exported), handshakes after it succeed, a new
// connection to B is served B's new certificate and A's next handshake presents its
// new one.
func TestMTLSRotationUnderLoad(t *testing.T) {
	m := newMTLSMesh(t, "http", "STRICT")
	var hits atomic.Int64
	app := testutil.StartHTTP(t, backApp(&hits))
	b, bLog := m.startB(t, app.Port)
	a, aLog := m.startCaller(t, "front")
	oldBack := m.bServes(t, b, m.p.cert("front", meshtls.WorkloadRequest{}))

	const workers, maxPerWorker = 4, 2000
	var (
		done, failures atomic.Int64
		firstErr       atomic.Value
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		c := testutil.HTTPClient(t, a.EgressAddr())
		url := "http://" + backHost + "/kept"
		if w%2 == 0 {
			url = "http://" + backHost + "/close"
		}
		wg.Go(func() {
			for range maxPerWorker {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get(url)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d %s", resp.StatusCode, resp.Header.Get(proxy.HeaderError))
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
	stopped := false
	stopLoad := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	defer stopLoad()
	// waitDone waits until n requests are done, at most until deadline; it reports
	// whether they were.
	waitDone := func(n int64, deadline time.Time) bool {
		for done.Load() < n {
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(5 * time.Millisecond)
		}
		return true
	}
	if !waitDone(40, time.Now().Add(10*time.Second)) {
		stopLoad()
		t.Fatalf("only %d requests done before the rotation (%d failed, the first: %v)", done.Load(), failures.Load(), firstErr.Load())
	}
	// A day and a half instead of a day: the new pair is told apart by its expiry too.
	newBack := m.p.write("back", meshtls.WorkloadRequest{DNSNames: []string{backHost}, TTL: 36 * time.Hour})
	newFront := m.p.write("front", meshtls.WorkloadRequest{TTL: 36 * time.Hour})
	backCrt, _ := m.p.files("back")
	frontCrt, _ := m.p.files("front")
	bLog.waitLog(t, "tls: new certificate material loaded", backCrt)
	aLog.waitLog(t, "tls: new certificate material loaded", frontCrt)
	mark, bMark, aMark := done.Load(), m.bStats(t, b).Handshakes.Successes(), clusterTLS(t, a).Successes()
	// Load after the rotation: 40 more requests, or 3 s of it on a slow machine.
	waitDone(mark+40, time.Now().Add(3*time.Second))
	stopLoad()

	if n := failures.Load(); n > 0 {
		t.Errorf("%d of %d requests failed during the rotation, the first: %v", n, done.Load(), firstErr.Load())
	}
	if done.Load() == mark {
		t.Fatal("no request was done after the rotation")
	}
	if n := hits.Load(); n != done.Load() {
		t.Errorf("the app got %d requests, the clients sent %d", n, done.Load())
	}
	if m.bStats(t, b).Handshakes.Successes() == bMark || clusterTLS(t, a).Successes() == aMark {
		t.Errorf("no A→B connection was made after the rotation (B: %d handshakes, A: %d)", bMark, aMark)
	}
	if st := m.bStats(t, b); st.Handshakes.Failures() != 0 {
		t.Errorf("B counted %d failed handshakes", st.Handshakes.Failures())
	}
	if st := clusterTLS(t, a); st.Failures() != 0 {
		t.Errorf("A counted %d failed handshakes", st.Failures())
	}
	// A new connection (no session to resume) gets B's new certificate.
	if got := m.bServes(t, b, newFront); got != newBack.Cert.SerialNumber.String() || got == oldBack {
		t.Errorf("a handshake with B after the rotation got serial %s, want the new %s (old %s)", got, newBack.Cert.SerialNumber, oldBack)
	}
	// A presents what its client configuration hands crypto/tls at a full handshake.
	cert, err := a.Snapshot().Cluster(backCluster).TLSConfig().GetClientCertificate(&tls.CertificateRequestInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if got := serialOf(t, cert); got != newFront.Cert.SerialNumber.String() {
		t.Errorf("A's next handshake presents serial %s, want the new %s", got, newFront.Cert.SerialNumber)
	}
	for _, s := range []struct {
		srv  *proxy.Server
		file string
		wc   *meshtls.WorkloadCert
	}{{b, backCrt, newBack}, {a, frontCrt, newFront}} {
		f := scrape(t, s.srv, "")
		src := lbls{"source": "file " + s.file}
		f.expect(t, "meshd_tls_certificate_reloads_total", src, 1)
		f.expect(t, "meshd_tls_certificate_rejects_total", src, 0)
		f.expect(t, "meshd_tls_certificate_expiry_timestamp_seconds", src, float64(s.wc.Cert.NotAfter.Unix()))
	}
	t.Logf("%d requests, %d after both sidecars loaded the new certificates", done.Load(), done.Load()-mark)
}

// TestMTLSExpiredCertificate: B's certificate file replaced by an expired one (same CA)
// is rejected, with an error line naming the file and the expiry; B keeps serving the
// previous certificate: requests through A on new A→B connections pass, and a new
// connection to B is served the previous serial.
func TestMTLSExpiredCertificate(t *testing.T) {
	m := newMTLSMesh(t, "http", "STRICT")
	var hits atomic.Int64
	app := testutil.StartHTTP(t, backApp(&hits))
	b, bLog := m.startB(t, app.Port)
	a, _ := m.startCaller(t, "front")
	c := testutil.HTTPClient(t, a.EgressAddr())
	front := m.p.cert("front", meshtls.WorkloadRequest{})
	good := m.bServes(t, b, front)
	if status, code, body := getVia(t, c, "http://"+backHost+"/close"); status != 200 || body != "closed" {
		t.Fatalf("before: %d %s %q", status, code, body)
	}

	m.p.write("back", meshtls.WorkloadRequest{DNSNames: []string{backHost}, Now: time.Now().Add(-48 * time.Hour), TTL: time.Hour})
	backCrt, _ := m.p.files("back")
	line := bLog.waitLog(t, "level=ERROR", "tls: new certificate material rejected; the previous one keeps serving", backCrt, "expired at")
	if !strings.Contains(line, "serving=spiffe://t/back") {
		t.Errorf("the rejection does not say what keeps serving: %s", line)
	}
	// /close ends each A→B connection: every request here is a new one.
	for i := range 3 {
		if status, code, body := getVia(t, c, "http://"+backHost+"/close"); status != 200 || body != "closed" {
			t.Fatalf("request %d after the expired certificate: %d %s %q", i, status, code, body)
		}
	}
	if got := m.bServes(t, b, front); got != good {
		t.Errorf("B serves serial %s after rejecting the expired certificate, want the previous %s", got, good)
	}
	if st := m.bStats(t, b); st.Handshakes.Failures() != 0 {
		t.Errorf("B counted %d failed handshakes", st.Handshakes.Failures())
	}
	f := scrape(t, b, "")
	f.expect(t, "meshd_tls_certificate_rejects_total", lbls{"source": "file " + backCrt}, 1)
}

// TestMTLSAuthorization: B's listener allows caller node front only. Over HTTP/1.1 and
// gRPC, front's sidecar (A) gets through and B's app sees front's verified identity,
// not the one the client app forged; stranger's sidecar, whose certificate B's tls
// accepts, is denied (403 authz_denied; gRPC PERMISSION_DENIED), forging front's
// identity or not, and nothing of it reaches the app; B logs and counts both.
func TestMTLSAuthorization(t *testing.T) {
	const allowFront = "{allow: [{callers: [front]}]}"
	t.Run("http1", func(t *testing.T) {
		m := newMTLSMesh(t, "http", "STRICT")
		m.authz = allowFront
		m.p.write("stranger", meshtls.WorkloadRequest{})
		var hits atomic.Int64
		app := testutil.StartHTTP(t, backApp(&hits))
		b, bLog := m.startB(t, app.Port)
		a, _ := m.startCaller(t, "front")
		stranger, _ := m.startCaller(t, "stranger")

		req := newReq(t, "GET", "http://"+backHost+"/allowed", nil)
		req.Header.Set(peerIdentityHeader, "spiffe://t/admin")
		expectIdentity(t, getEcho(t, testutil.HTTPClient(t, a.EgressAddr()), req), "spiffe://t/front")

		sc := testutil.HTTPClient(t, stranger.EgressAddr())
		for _, forged := range []string{"", "spiffe://t/front"} {
			status, code, body := getVia(t, sc, "http://"+backHost+"/denied", peerIdentityHeader, forged)
			if status != 403 || code != "authz_denied" || !strings.Contains(body, "spiffe://t/stranger") {
				t.Errorf("stranger (forged identity %q): %d %s=%q %q, want 403 authz_denied naming the caller", forged, status, proxy.HeaderError, code, body)
			}
		}
		if n := hits.Load(); n != 1 {
			t.Errorf("the app got %d requests, want front's one", n)
		}
		bLog.waitLog(t, "authorization denied", "caller=spiffe://t/stranger", "path=/denied")
		listener := "listener.ingress:" + strconv.Itoa(m.app)
		checkStat(t, b, listener+".authz_allowed", func(v int) bool { return v == 1 })
		checkStat(t, b, listener+".authz_denied_policy", func(v int) bool { return v == 2 })
		checkStat(t, b, listener+".authz_denied_no_identity", func(v int) bool { return v == 0 })
	})

	t.Run("grpc", func(t *testing.T) {
		m := newMTLSMesh(t, "grpc", "STRICT")
		m.authz = allowFront
		m.p.write("stranger", meshtls.WorkloadRequest{})
		var (
			mu   sync.Mutex
			seen []string
		)
		app := testutil.StartGRPC(t, func(*grpc.Server) {}, grpc.ForceServerCodec(rawCodec{}),
			grpc.UnknownServiceHandler(func(srv any, ss grpc.ServerStream) error {
				md, _ := metadata.FromIncomingContext(ss.Context())
				mu.Lock()
				seen = append(seen, strings.Join(md.Get(peerIdentityHeader), ","))
				mu.Unlock()
				return echoStreams(srv, ss)
			}))
		m.startB(t, app.Port)
		a, _ := m.startCaller(t, "front")
		stranger, _ := m.startCaller(t, "stranger")
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		force := grpc.ForceCodec(rawCodec{})
		forged := metadata.AppendToOutgoingContext(ctx, peerIdentityHeader, "spiffe://t/front")

		in, out := []byte("hello"), []byte(nil)
		if err := grpcDial(t, a.EgressAddr(), backHost).Invoke(metadata.AppendToOutgoingContext(ctx, peerIdentityHeader, "spiffe://t/admin"),
			echoUnary, &in, &out, force); err != nil || string(out) != "hello" {
			t.Fatalf("front's call: %q %v", out, err)
		}
		sc := grpcDial(t, stranger.EgressAddr(), backHost)
		for _, c := range []context.Context{ctx, forged} {
			err := sc.Invoke(c, echoUnary, &in, &out, force)
			if st, _ := status.FromError(err); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "spiffe://t/stranger") {
				t.Errorf("stranger's unary call: %v, want PERMISSION_DENIED naming the caller", err)
			}
			stream, err := sc.NewStream(c, bidiStreamDesc, echoChat, force)
			if err == nil {
				err = stream.RecvMsg(new([]byte))
			}
			if st, _ := status.FromError(err); st.Code() != codes.PermissionDenied {
				t.Errorf("stranger's stream: %v, want PERMISSION_DENIED", err)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if want := []string{"spiffe://t/front"}; !slices.Equal(seen, want) {
			t.Errorf("the app saw calls with identities %q, want %q", seen, want)
		}
	})
}
