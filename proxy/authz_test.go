package proxy_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
	meshtls "github.com/meshd/meshd/tls"
)

// authzYAML is node app's mesh (tlsNodeYAML) with policy as its listener's
// authorization block, and nodes frontend and intruder for the policy to name.
func authzYAML(appPort int, proto, tlsBlock, policy string) string {
	return tlsNodeYAML(appPort, proto, tlsBlock+", authorization: "+policy, "") +
		"  - virtualNodeName: frontend\n  - virtualNodeName: intruder\n"
}

// authzPKI is a mesh CA with node app's listener certificate written, and the client
// certificates of frontend (spiffe://t/frontend) and intruder (spiffe://t/intruder).
func authzPKI(t *testing.T) (p *pki, frontend, intruder tls.Certificate) {
	p = newPKI(t)
	p.write("app", meshtls.WorkloadRequest{DNSNames: []string{appServerName}})
	return p, tlsCert(t, p.cert("frontend", meshtls.WorkloadRequest{})), tlsCert(t, p.cert("intruder", meshtls.WorkloadRequest{}))
}

// countingEcho is echoHandler that counts the requests it served.
func countingEcho(n *atomic.Int64) http.Handler {
	echo := echoHandler("app")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		echo.ServeHTTP(w, r)
	})
}

// TestAuthzHTTP: through a real meshd terminating mTLS, over HTTP/1.1 and HTTP/2, the
// listener's authorization lets frontend do anything and anyone verified read /public/;
// the app sees the caller's verified identity in X-Meshd-Peer-Identity, never the value
// a client sent; anything else is answered 403 authz_denied without reaching the app
// (path tricks included); the verdicts are counted on /stats/prometheus and the
// denials logged at warn once, at debug each.
func TestAuthzHTTP(t *testing.T) {
	p, frontend, intruder := authzPKI(t)
	var reached atomic.Int64
	up := testutil.StartHTTP(t, countingEcho(&reached))
	policy := `{allow: [{callers: [frontend]}, {callers: ["*"], pathPrefixes: [/public/]}]}`
	srv, logs := startTLSMeshd(t, authzYAML(up.Port, "http", p.listenerTLS("STRICT", true), policy), proxy.Options{})
	addr := srv.IngressAddr()
	clients := []struct {
		name   string
		major  int
		client func(cert tls.Certificate) *http.Client
	}{
		{"HTTP/1.1", 1, func(cert tls.Certificate) *http.Client {
			return httpsClient(t, addr, p.client([]string{"http/1.1"}, cert))
		}},
		{"HTTP/2", 2, func(cert tls.Certificate) *http.Client { return h2Client(t, addr, p.client([]string{"h2"}, cert)) }},
	}
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			allowed := func(cert tls.Certificate, method, path, want string) {
				t.Helper()
				req := newReq(t, method, "https://"+appServerName+path, strings.NewReader("body"))
				req.Header.Set("X-Meshd-Peer-Identity", "spiffe://t/admin") // forged
				resp, err := c.client(cert).Do(req)
				if err != nil {
					t.Fatalf("%s %s: %v", method, path, err)
				}
				info := decodeEcho(t, resp)
				if resp.ProtoMajor != c.major {
					t.Errorf("%s %s: answered over %s", method, path, resp.Proto)
				}
				if got := info.Header.Values("X-Meshd-Peer-Identity"); len(got) != 1 || got[0] != want {
					t.Errorf("%s %s: the app saw X-Meshd-Peer-Identity %q, want %q alone", method, path, got, want)
				}
			}
			allowed(frontend, "POST", "/private", "spiffe://t/frontend")
			allowed(intruder, "GET", "/public/x", "spiffe://t/intruder")

			before := reached.Load()
			for _, path := range []string{"/private", "/public/../private", "/public/%2e%2e/private"} {
				resp, err := c.client(intruder).Do(newReq(t, "POST", "https://"+appServerName+path, strings.NewReader("body")))
				if err != nil {
					t.Fatalf("%s: %v", path, err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 403 || resp.Header.Get("X-Meshd-Error") != "authz_denied" || !strings.Contains(string(body), "spiffe://t/intruder") {
					t.Errorf("intruder %s: %d %q %q, want 403 authz_denied naming the caller", path, resp.StatusCode, resp.Header.Get("X-Meshd-Error"), body)
				}
			}
			if n := reached.Load() - before; n != 0 {
				t.Errorf("%d denied requests reached the app", n)
			}
		})
	}

	port := strconv.Itoa(up.Port)
	fams := scrape(t, srv, "")
	for _, s := range []struct {
		name string
		l    lbls
		want float64
	}{
		{"meshd_listener_authz_allowed_total", lbls{"listener": "ingress", "port": port}, 4},
		{"meshd_listener_authz_denied_total", lbls{"listener": "ingress", "port": port, "reason": "policy"}, 6},
	} {
		if got := fams.value(t, s.name, s.l); got != s.want {
			t.Errorf("%s%s = %v, want %v", s.name, s.l, got, s.want)
		}
	}
	logs.waitLog(t, "level=WARN", "authorization denied callers", "denied=1", "caller=spiffe://t/intruder")
	if n := strings.Count(logs.String(), "authorization denied callers"); n != 1 {
		t.Errorf("%d warn lines for 6 denials within a minute, want 1", n)
	}
	if n := strings.Count(logs.String(), "level=DEBUG msg=\"authorization denied\""); n != 6 {
		t.Errorf("%d debug lines for 6 denials, want 6", n)
	}
}

// TestAuthzPermissive: on a PERMISSIVE listener with a policy, plaintext callers (HTTP/1.1
// and h2c) have no identity and are denied even by "*", and are counted as such; a TLS
// caller with a verified identity is allowed by "*".
func TestAuthzPermissive(t *testing.T) {
	p, _, intruder := authzPKI(t)
	var reached atomic.Int64
	up := testutil.StartHTTP(t, countingEcho(&reached))
	srv, _ := startTLSMeshd(t, authzYAML(up.Port, "http", p.listenerTLS("PERMISSIVE", true), `{allow: [{callers: ["*"]}]}`), proxy.Options{})
	addr := srv.IngressAddr()
	for name, c := range map[string]*http.Client{"HTTP/1.1": testutil.HTTPClient(t, addr), "h2c": testutil.H2CClient(t, addr)} {
		resp, err := c.Get("http://" + appServerName + "/")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 403 || resp.Header.Get("X-Meshd-Error") != "authz_denied" || !strings.Contains(string(body), "has none") {
			t.Errorf("plaintext %s: %d %q %q, want 403 authz_denied for want of an identity", name, resp.StatusCode, resp.Header.Get("X-Meshd-Error"), body)
		}
	}
	resp, err := httpsClient(t, addr, p.client(nil, intruder)).Get("https://" + appServerName + "/")
	if err != nil {
		t.Fatal(err)
	}
	if info := decodeEcho(t, resp); info.Header.Get("X-Meshd-Peer-Identity") != "spiffe://t/intruder" {
		t.Errorf("TLS caller: identity %q", info.Header.Get("X-Meshd-Peer-Identity"))
	}
	if reached.Load() != 1 {
		t.Errorf("the app served %d requests, want 1", reached.Load())
	}
	if got := scrape(t, srv, "").value(t, "meshd_listener_authz_denied_total", lbls{"listener": "ingress", "port": strconv.Itoa(up.Port), "reason": "no_identity"}); got != 2 {
		t.Errorf("denied for want of an identity: %v, want 2", got)
	}
}

// TestAuthzGRPC: grpc-go over mTLS through a grpc listener: frontend's call reaches the
// app, which reads frontend's verified identity in its metadata (not the value the
// client forged); intruder's call fails with PERMISSION_DENIED and never reaches it.
func TestAuthzGRPC(t *testing.T) {
	p, frontend, intruder := authzPKI(t)
	var seen atomic.Value
	var calls atomic.Int64
	hs := health.NewServer()
	t.Cleanup(hs.Shutdown)
	up := testutil.StartGRPC(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, hs) },
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			calls.Add(1)
			md, _ := metadata.FromIncomingContext(ctx)
			seen.Store(strings.Join(md.Get("x-meshd-peer-identity"), ","))
			return h(ctx, req)
		}))
	srv, _ := startTLSMeshd(t, authzYAML(up.Port, "grpc", p.listenerTLS("STRICT", true), `{allow: [{callers: [frontend]}]}`), proxy.Options{})
	check := func(cert tls.Certificate) error {
		cc, err := grpc.NewClient("passthrough:///"+appServerName,
			grpc.WithTransportCredentials(credentials.NewTLS(p.client(nil, cert))),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "tcp", srv.IngressAddr())
			}))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, "x-meshd-peer-identity", "spiffe://t/admin")
		_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	if err := check(frontend); err != nil {
		t.Fatalf("frontend: %v", err)
	}
	if got := seen.Load(); got != "spiffe://t/frontend" {
		t.Errorf("the app saw identity %q, want spiffe://t/frontend", got)
	}
	err := check(intruder)
	if st, _ := status.FromError(err); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "spiffe://t/intruder") {
		t.Errorf("intruder: %v, want PERMISSION_DENIED naming the caller", err)
	}
	if calls.Load() != 1 {
		t.Errorf("the app got %d calls, want 1", calls.Load())
	}
}

// TestAuthzTCP: a tcp listener's authorization judges each connection by its caller:
// frontend's is relayed to the app, intruder's is closed before meshd connects to the
// app, so no byte of it arrives there.
func TestAuthzTCP(t *testing.T) {
	p, frontend, intruder := authzPKI(t)
	up := echoTCP(t, "")
	srv, _ := startTLSMeshd(t, authzYAML(up.Port, "tcp", p.listenerTLS("STRICT", true), `{allow: [{callers: [frontend]}]}`), proxy.Options{})
	fc, err := tls.Dial("tcp", srv.IngressAddr(), p.client(nil, frontend))
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	roundTrip(t, fc, "frontend says hello\n")

	ic, err := tls.Dial("tcp", srv.IngressAddr(), p.client(nil, intruder))
	if err != nil {
		t.Fatal(err) // TLS 1.3: the client's side of the handshake completes first
	}
	defer ic.Close()
	_ = ic.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(ic, "intruder says hello\n")
	b, err := io.ReadAll(ic)
	if len(b) != 0 {
		t.Errorf("intruder read %q", b)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("intruder's connection was not closed: %v", err)
	}
	if n := up.Accepted(); n != 1 {
		t.Errorf("the app accepted %d connections, want frontend's alone", n)
	}
	a := srv.Snapshot().Authz(up.Port).Counters()
	if a.Allowed.Load() != 1 || a.DeniedPolicy.Load() != 1 {
		t.Errorf("counters: allowed %d, denied %d; want 1, 1", a.Allowed.Load(), a.DeniedPolicy.Load())
	}
}

// TestAuthzBetweenSidecars: app → meshd (frontend, or intruder) → mTLS → meshd
// (backend, whose listener has an authorization) → app, on loopback. Each caller's
// sidecar originates mTLS with its node's certificate under its client policy; the
// backend's sidecar knows the caller by that certificate: frontend may call anything,
// intruder only /public/. The backend app reads the caller in X-Meshd-Peer-Identity,
// never the value the calling app sent; intruder's app gets the 403 authz_denied.
func TestAuthzBetweenSidecars(t *testing.T) {
	p := newPKI(t)
	p.write("app", meshtls.WorkloadRequest{DNSNames: []string{appServerName, "backend.t.local"}})
	for _, n := range []string{"frontend", "intruder"} {
		p.write(n, meshtls.WorkloadRequest{})
	}
	var reached atomic.Int64
	up := testutil.StartHTTP(t, countingEcho(&reached))
	mesh := func(backendEndpoint string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "mesh: {meshName: %s, spec: {egressFilter: {type: DROP_ALL}}}\nvirtualNodes:\n", tlsMesh)
		fmt.Fprintf(&b, "  - virtualNodeName: app\n    spec:\n      listeners: [{portMapping: {port: %d, protocol: http}, tls: %s, "+
			"authorization: {allow: [{callers: [frontend]}, {callers: [\"*\"], pathPrefixes: [/public/]}]}}]\n", up.Port, p.listenerTLS("STRICT", true))
		fmt.Fprintf(&b, "      serviceDiscovery: {static: {endpoints: [%q]}}\n", backendEndpoint)
		for _, n := range []string{"frontend", "intruder"} {
			crt, key := p.files(n)
			fmt.Fprintf(&b, "  - virtualNodeName: %s\n    spec:\n      backends: [{virtualService: {virtualServiceName: backend.t.local}}]\n", n)
			fmt.Fprintf(&b, "      backendDefaults: {clientPolicy: {tls: {certificate: {file: {certificateChain: %q, privateKey: %q}}, "+
				"validation: {trust: {file: {certificateChain: %q}}, subjectAlternativeNames: {match: {exact: [\"spiffe://%s/app\"]}}}}}}\n",
				crt, key, p.caFile, tlsMesh)
		}
		b.WriteString("virtualServices:\n  - virtualServiceName: backend.t.local\n    spec: {provider: {virtualNode: {virtualNodeName: app}}}\n")
		return b.String()
	}
	backend, _ := startTLSMeshd(t, mesh("127.0.0.1:1"), proxy.Options{})
	callers := map[string]*http.Client{}
	for _, n := range []string{"frontend", "intruder"} {
		srv := testutil.StartMeshdOpts(t, proxy.Options{Node: n}, mesh(backend.IngressAddr()))
		callers[n] = testutil.HTTPClient(t, srv.EgressAddr())
	}
	get := func(caller, path string) (*http.Response, string) {
		t.Helper()
		req := newReq(t, "GET", "http://backend.t.local"+path, nil)
		req.Header.Set("X-Meshd-Peer-Identity", "spiffe://t/admin") // forged by the calling app
		resp, err := callers[caller].Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", caller, path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(body)
	}
	for _, c := range []struct{ caller, path string }{{"frontend", "/private"}, {"intruder", "/public/x"}} {
		resp, body := get(c.caller, c.path)
		if resp.StatusCode != 200 {
			t.Fatalf("%s %s: %d %s", c.caller, c.path, resp.StatusCode, body)
		}
		var info echoInfo
		if err := json.Unmarshal([]byte(body), &info); err != nil {
			t.Fatal(err)
		}
		if got, want := info.Header.Values("X-Meshd-Peer-Identity"), "spiffe://t/"+c.caller; len(got) != 1 || got[0] != want {
			t.Errorf("%s %s: the backend app saw %q, want %q alone", c.caller, c.path, got, want)
		}
	}
	resp, body := get("intruder", "/private")
	if resp.StatusCode != 403 || resp.Header.Get("X-Meshd-Error") != "authz_denied" || !strings.Contains(body, "spiffe://t/intruder") {
		t.Errorf("intruder /private: %d %q %q, want 403 authz_denied", resp.StatusCode, resp.Header.Get("X-Meshd-Error"), body)
	}
	if reached.Load() != 2 {
		t.Errorf("the backend app served %d requests, want 2", reached.Load())
	}
}
