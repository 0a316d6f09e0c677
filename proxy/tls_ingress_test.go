package proxy_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
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

// h2Client speaks HTTP/2 over TLS to addr: ALPN h2 when cfg offers it, HTTP/2 with
// prior knowledge over a TLS connection without ALPN otherwise.
func h2Client(t *testing.T, addr string, cfg *tls.Config) *http.Client {
	t.Helper()
	tr := &http2.Transport{
		DialTLSContext: func(ctx context.Context, _, _ string, _ *tls.Config) (net.Conn, error) {
			d := tls.Dialer{Config: cfg}
			return d.DialContext(ctx, "tcp", addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// TestTLSStrictHTTP1: a STRICT listener terminates TLS and serves HTTP/1.1 (ALPN
// http/1.1, and without ALPN) to a plaintext local app, which sees X-Forwarded-Proto
// https; a plaintext HTTP request gets a 400 saying TLS is required, and a TLS client
// that does not trust meshd's certificate fails its handshake; every handshake is
// counted.
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

	waitStats(t, srv, func(st proxy.TLSIngressStats) bool {
		return st.Handshakes == 2 && st.Failures[proxy.TLSFailNotTLS] == 1 && st.Failures[proxy.TLSFailError] == 1
	})
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

// waitStats waits (bounded) until the TLS counters satisfy ok: a handshake's counter
// moves after the client's side of it completed.
func waitStats(t *testing.T, srv *proxy.Server, ok func(proxy.TLSIngressStats) bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		st := srv.TLSIngressStats()
		if ok(st) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("TLS counters %+v", st)
		}
	}
}
