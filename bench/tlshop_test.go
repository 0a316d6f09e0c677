package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestWithTLSTwins(t *testing.T) {
	for _, tc := range []struct {
		in, want []string
		wantErr  bool
	}{
		{in: []string{"direct", "meshd-2hop", "haproxy-2hop"}, want: []string{"direct", "meshd-2hop", "meshd-2hop-tls", "haproxy-2hop", "haproxy-2hop-tls"}},
		{in: []string{"haproxy-2hop-tls", "haproxy-2hop", "meshd"}, want: []string{"haproxy-2hop-tls", "haproxy-2hop", "meshd"}},
		{in: []string{"meshd-2hop-tls"}, want: []string{"meshd-2hop-tls"}},
		{in: []string{"meshd-2hop", "meshd-2hop"}, want: []string{"meshd-2hop", "meshd-2hop-tls"}},
		{in: []string{"direct", "meshd", "haproxy"}, wantErr: true},
	} {
		got, err := WithTLSTwins(tc.in)
		if tc.wantErr {
			if err == nil || !strings.Contains(err.Error(), TLSFlag+" applies to the two-hop scenarios") {
				t.Errorf("WithTLSTwins(%v) = %v, %v; want an error naming %s", tc.in, got, err, TLSFlag)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("WithTLSTwins(%v) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	all := KnownScenarios()
	for _, s := range []string{ScenarioMeshd2HopTLS, ScenarioHAProxy2HopTLS, ScenarioMeshdBaseline, ScenarioHAProxy2Hop} {
		if !slices.Contains(all, s) {
			t.Errorf("KnownScenarios %v lacks %s", all, s)
		}
	}
	if slices.ContainsFunc(AllScenarios(), IsTLSHop) {
		t.Errorf("AllScenarios %v has a TLS-hop scenario, which only --tls adds", AllScenarios())
	}
}

// The certificates meshbench makes: a chain of the run's CA for each side with the
// roles and names the configs rely on.
func TestWriteTLSFiles(t *testing.T) {
	f, err := WriteTLSFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	caPEM, err := os.ReadFile(f.CA)
	if err != nil || !roots.AppendCertsFromPEM(caPEM) {
		t.Fatalf("CA file %s: %v", f.CA, err)
	}
	for _, w := range []struct {
		wl    TLSWorkload
		id    string
		usage x509.ExtKeyUsage
		dns   string
	}{{f.Client, "spiffe://bench/client", x509.ExtKeyUsageClientAuth, ""}, {f.Server, "spiffe://bench/upstream", x509.ExtKeyUsageServerAuth, MeshdHost}} {
		pair, err := tls.LoadX509KeyPair(w.wl.Cert, w.wl.Key)
		if err != nil {
			t.Fatal(err)
		}
		// HAProxy's crt file holds the same pair.
		if combined, err := tls.LoadX509KeyPair(w.wl.PEM, w.wl.PEM); err != nil || !bytes.Equal(combined.Certificate[0], pair.Certificate[0]) {
			t.Errorf("%s: the combined PEM does not hold the pair: %v", w.wl.PEM, err)
		}
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		if w.wl.ID != w.id || len(leaf.URIs) != 1 || leaf.URIs[0].String() != w.id {
			t.Errorf("%s: ID %q, URI SANs %v; want %s", w.wl.Cert, w.wl.ID, leaf.URIs, w.id)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: w.dns, KeyUsages: []x509.ExtKeyUsage{w.usage}}); err != nil {
			t.Errorf("%s does not verify for its role: %v", w.wl.Cert, err)
		}
	}
}

// probeTLSHop measures nothing that is not mutual TLS: a plaintext server and a TLS
// server that takes clients without a certificate are refused, a server requiring
// the CA's client certificate passes, with what was negotiated.
func TestProbeTLSHop(t *testing.T) {
	f, err := WriteTLSFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	serverPair, err := tls.LoadX509KeyPair(f.Server.Cert, f.Server.Key)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		t.Fatal(err)
	}
	clients := x509.NewCertPool()
	clients.AppendCertsFromPEM(caPEM)
	start := func(clientAuth tls.ClientAuthType, h2 bool) string {
		srv := httptest.NewUnstartedServer(ok)
		srv.EnableHTTP2 = h2
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{serverPair}, ClientAuth: clientAuth, ClientCAs: clients}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return srv.Listener.Addr().String()
	}
	plain := httptest.NewServer(ok)
	defer plain.Close()
	ctx := context.Background()

	if _, err := probeTLSHop(ctx, plain.Listener.Addr().String(), "http/1.1", f); err == nil || !strings.Contains(err.Error(), "answered a plaintext request") {
		t.Errorf("plaintext server: %v", err)
	}
	for _, alpn := range []string{"http/1.1", "h2"} {
		if _, err := probeTLSHop(ctx, start(tls.VerifyClientCertIfGiven, alpn == "h2"), alpn, f); err == nil || !strings.Contains(err.Error(), "accepted a TLS client without a certificate") {
			t.Errorf("%s server without client authentication: %v", alpn, err)
		}
		hop, err := probeTLSHop(ctx, start(tls.RequireAndVerifyClientCert, alpn == "h2"), alpn, f)
		if err != nil {
			t.Errorf("%s mTLS server: %v", alpn, err)
			continue
		}
		if hop.Version != "TLS 1.3" || hop.ALPN != alpn || hop.CipherSuite == "" || hop.KeyExchange == "" {
			t.Errorf("%s mTLS server: negotiated %+v", alpn, hop)
		}
	}
	// A server of another CA fails the probe's verification.
	other, err := WriteTLSFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := probeTLSHop(ctx, start(tls.RequireAndVerifyClientCert, false), "http/1.1", other); err == nil || !strings.Contains(err.Error(), "TLS handshake with the client certificate") {
		t.Errorf("server of another CA: %v", err)
	}
	// A closed port is an error, not a pass.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if _, err := probeTLSHop(ctx, addr, "http/1.1", f); err == nil {
		t.Error("a closed port passed the probe")
	}
}

// The TLS-hop scenarios, as the harness starts them, over HTTP/1.1: every request
// answered through two proxies whose middle hop the harness found to be mutual TLS
// (plaintext and certificate-less clients refused) and on which the ingress proxy
// counted the egress proxy's handshakes; the report sets each peer's TLS hop against
// its plaintext twin and meshd against haproxy.
func TestCompareTLSHop(t *testing.T) {
	if testing.Short() {
		t.Skip("starts proxies; skipped in -short")
	}
	meshd, why := buildMeshd(t)
	plan := selfPlan(t)
	plan.Meshd = meshd
	plan.WorkDir = t.TempDir()
	var err error
	plan.Scenarios, err = WithTLSTwins([]string{ScenarioDirect, ScenarioMeshd2Hop, ScenarioHAProxy2Hop})
	if err != nil {
		t.Fatal(err)
	}
	if meshd == "" {
		t.Log(why)
		plan.Scenarios = slices.DeleteFunc(plan.Scenarios, isMeshd)
	}
	_, noHAProxy := exec.LookPath("haproxy")
	plan.Phases = []Phase{{Name: "fixed-200", Rate: 200, Connections: 4, Duration: time.Second, Warmup: 100 * time.Millisecond}}
	rep, err := Compare(context.Background(), plan)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*PhaseResult{}
	for _, r := range rep.Results {
		byName[r.Scenario] = r
	}
	skipped := map[string]string{}
	for _, s := range rep.Skipped {
		skipped[s.Scenario] = s.Reason
	}
	hops := map[string]*TLSHop{}
	for _, h := range rep.TLSHops {
		hops[h.Scenario] = h
	}
	for _, name := range []string{ScenarioMeshd2Hop, ScenarioMeshd2HopTLS, ScenarioHAProxy2Hop, ScenarioHAProxy2HopTLS} {
		t.Run(name, func(t *testing.T) {
			if isMeshd(name) && meshd == "" {
				t.Skip(why)
			}
			if !isMeshd(name) && noHAProxy != nil {
				t.Skip("haproxy not installed (apt-get install haproxy): " + skipped[name])
			}
			r := byName[name]
			if r == nil {
				t.Fatalf("not measured: %s", skipped[name])
			}
			if r.ErrorCount != 0 || r.Requests != 200 || r.Proxies != 2 {
				t.Errorf("requests %d errors %v proxies %d; want 200, none, 2", r.Requests, r.Errors, r.Proxies)
			}
			h := hops[name]
			if !IsTLSHop(name) {
				if h != nil {
					t.Errorf("a plaintext scenario has a TLS hop %+v", h)
				}
				return
			}
			if h == nil {
				t.Fatal("no TLS hop in the report")
			}
			// The egress proxy's connections to the ingress proxy were TLS: at least one
			// handshake beyond the harness's probes, and no more than the requests need.
			if h.Handshakes == 0 || h.Handshakes > r.Requests || h.Version != "TLS 1.3" || h.ALPN != "http/1.1" || h.HandshakesFrom == "" {
				t.Errorf("TLS hop %+v: want TLS 1.3, ALPN http/1.1, and the egress proxy's handshakes counted", h)
			}
		})
	}
	var table bytes.Buffer
	if err := WriteTable(&table, rep, false); err != nil {
		t.Fatal(err)
	}
	var want []string
	if meshd != "" {
		want = append(want, "meshd-2hop-tls: TLS 1.3, ", "meshd-2hop-tls: CPU ")
	}
	if noHAProxy == nil {
		want = append(want, "haproxy-2hop-tls: TLS 1.3, ", "haproxy-2hop-tls: CPU ")
	}
	if meshd != "" && noHAProxy == nil {
		want = append(want, "meshd-2hop / haproxy-2hop: req/s ", "meshd-2hop-tls / haproxy-2hop-tls: req/s ", "CPU the TLS hop adds, meshd / haproxy: ")
	}
	for _, w := range want {
		if !strings.Contains(table.String(), w) {
			t.Errorf("table lacks %q:\n%s", w, table.String())
		}
	}
}
