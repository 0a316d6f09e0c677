package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	meshtls "github.com/meshd/meshd/tls"
)

// TLS-hop scenarios: the two-hop scenarios with mutual TLS on the hop between the two
// proxies (the egress proxy originates it with the client workload's certificate, the
// ingress proxy terminates it and requires a certificate of the mesh CA). The client's
// and the upstream's legs stay plaintext, as an app and its sidecar talk on loopback.
const (
	ScenarioMeshd2HopTLS   = "meshd-2hop-tls"
	ScenarioHAProxy2HopTLS = "haproxy-2hop-tls"
)

// TLSFlag is the command-line flag that adds each two-hop scenario's TLS twin
// (WithTLSTwins).
const TLSFlag = "--tls"

// tlsTwins maps each plaintext two-hop scenario to its TLS-hop twin.
var tlsTwins = map[string]string{ScenarioMeshd2Hop: ScenarioMeshd2HopTLS, ScenarioHAProxy2Hop: ScenarioHAProxy2HopTLS}

// IsTLSHop says whether scenario carries mutual TLS between its two proxies.
func IsTLSHop(scenario string) bool {
	return scenario == ScenarioMeshd2HopTLS || scenario == ScenarioHAProxy2HopTLS
}

// WithTLSTwins returns list with each two-hop scenario followed by its TLS twin
// (meshd-2hop, meshd-2hop-tls, ...), so that one interleaved run measures each peer
// with and without TLS on the same hop: the TLS hop's cost is the difference, free of
// the drift between two runs. A twin already in the list is not added again. The
// error says when list has no two-hop scenario, which --tls would leave unchanged.
func WithTLSTwins(list []string) ([]string, error) {
	var out []string
	added := false
	for _, s := range list {
		if slices.Contains(out, s) {
			continue
		}
		out = append(out, s)
		if twin, ok := tlsTwins[s]; ok {
			added = true
			if !slices.Contains(list, twin) {
				out = append(out, twin)
			}
		}
		if IsTLSHop(s) {
			added = true
		}
	}
	if !added {
		return nil, fmt.Errorf("%s applies to the two-hop scenarios (%s, %s), and none is in %s", TLSFlag,
			ScenarioMeshd2Hop, ScenarioHAProxy2Hop, strings.Join(list, ","))
	}
	return out, nil
}

// Identities of the TLS hop: the mesh's trust domain and the two workloads, the
// virtual nodes of MeshdConfig.
const (
	tlsMesh       = "bench"
	tlsClientNode = "client"
	tlsServerNode = "upstream"
)

// TLSFiles are the certificates of the TLS hop, issued by a mesh CA made for the run
// (meshtls.NewCA), in PEM files.
type TLSFiles struct {
	CA string // the CA certificate: the trust of both sides
	// Client is the egress proxy's workload (spiffe://bench/client); Server the ingress
	// proxy's (spiffe://bench/upstream, DNS SAN MeshdHost, the name both clients send
	// as SNI, so that HAProxy can check it with verifyhost).
	Client, Server TLSWorkload
}

// TLSWorkload is one workload's certificate in the forms the proxies read.
type TLSWorkload struct {
	ID   string // SPIFFE ID
	Cert string // the chain: leaf, then the CA
	Key  string // the key (PKCS #8)
	PEM  string // chain and key in one file, as HAProxy's crt wants them
}

// WriteTLSFiles creates a mesh CA and issues the two workloads' certificates into
// dir (created if needed). The CA's key stays in memory: nothing else is issued.
func WriteTLSFiles(dir string) (*TLSFiles, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("tls dir %s: %w", dir, err)
	}
	ca, err := meshtls.NewCA(meshtls.CAOptions{CommonName: "meshbench mesh CA", Validity: 7 * 24 * time.Hour})
	if err != nil {
		return nil, err
	}
	f := &TLSFiles{CA: filepath.Join(dir, "ca.crt")}
	if err := os.WriteFile(f.CA, ca.CertPEM(), 0o644); err != nil {
		return nil, fmt.Errorf("write %s: %w", f.CA, err)
	}
	for _, w := range []struct {
		node string
		dns  []string
		out  *TLSWorkload
	}{{tlsClientNode, nil, &f.Client}, {tlsServerNode, []string{MeshdHost}, &f.Server}} {
		wc, err := ca.Issue(meshtls.WorkloadRequest{Mesh: tlsMesh, Node: w.node, DNSNames: w.dns, TTL: 24 * time.Hour})
		if err != nil {
			return nil, fmt.Errorf("issue %s: %w", w.node, err)
		}
		certPath, keyPath, err := meshtls.WriteWorkload(dir, w.node, wc)
		if err != nil {
			return nil, fmt.Errorf("write %s certificate: %w", w.node, err)
		}
		pemPath := filepath.Join(dir, w.node+".pem")
		if err := os.WriteFile(pemPath, append(slices.Clone(wc.ChainPEM), wc.KeyPEM...), 0o600); err != nil {
			return nil, fmt.Errorf("write %s: %w", pemPath, err)
		}
		*w.out = TLSWorkload{ID: wc.ID.String(), Cert: certPath, Key: keyPath, PEM: pemPath}
	}
	return f, nil
}

// hopALPN is the protocol on the hop between the two proxies: h2 for grpc (both
// peers forward gRPC as HTTP/2), HTTP/1.1 otherwise (h2c clients are bridged to
// HTTP/1.1 upstreams, as in the one-hop scenarios).
func hopALPN(p Proto) string {
	if p == GRPC {
		return "h2"
	}
	return "http/1.1"
}

// TLSHop is what the harness checked and counted on a TLS-hop scenario's middle hop.
type TLSHop struct {
	Scenario string `json:"scenario"`
	// Addr is the ingress proxy's TLS listener.
	Addr string `json:"addr"`
	// Version, CipherSuite, KeyExchange and ALPN were negotiated by the harness's probe
	// (Go's crypto/tls client with its defaults and the client certificate) with the
	// ingress proxy: the server chooses these in TLS 1.3, so they are what the egress
	// proxy gets too, but for the key exchange, which needs both sides to support it.
	Version     string `json:"version"`
	CipherSuite string `json:"cipherSuite"`
	KeyExchange string `json:"keyExchange"`
	ALPN        string `json:"alpn"`
	// Handshakes is what the ingress proxy's handshake counter rose by from the end of
	// the harness's probes to the end of the measurements: the egress proxy's
	// handshakes (smoke requests and warm-ups included). Connection reuse keeps it near
	// the number of connections the egress proxy opened.
	Handshakes uint64 `json:"handshakes"`
	// HandshakesFrom names the counter.
	HandshakesFrom string `json:"handshakesFrom"`
}

// probeTLSHop checks that the middle hop at addr really is mutual TLS before a TLS
// scenario is measured: a plaintext request and a TLS client without a certificate
// must be refused, and a client with the client workload's certificate must complete
// a handshake verifying the server's certificate against the CA and negotiating alpn.
func probeTLSHop(ctx context.Context, addr, alpn string, files *TLSFiles) (*TLSHop, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	roots := x509.NewCertPool()
	caPEM, err := os.ReadFile(files.CA)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", files.CA, err)
	}
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s holds no certificate", files.CA)
	}
	// A request the peer answers when it (wrongly) accepts the connection: an HTTP/1.1
	// GET, or for an h2 hop the client preface with an empty SETTINGS frame, which an
	// HTTP/2 server answers with its SETTINGS.
	hello := []byte("GET / HTTP/1.1\r\nHost: " + MeshdHost + "\r\n\r\n")
	if alpn == "h2" {
		hello = append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 4, 0, 0, 0, 0, 0)
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("middle hop %s: %w", addr, err)
	}
	answer, err := exchange(ctx, raw, hello)
	raw.Close()
	if err == nil && !isTLSRefusal(answer) {
		return nil, fmt.Errorf("middle hop %s answered a plaintext request: %q", addr, answer)
	}

	base := &tls.Config{RootCAs: roots, ServerName: MeshdHost, NextProtos: []string{alpn}}
	anon, err := (&tls.Dialer{Config: base}).DialContext(ctx, "tcp", addr)
	if err == nil {
		// In TLS 1.3 the server judges the client's certificate after the client's
		// handshake is done: its refusal is an alert at the first read.
		answer, err = exchange(ctx, anon, hello)
		anon.Close()
		if err == nil {
			return nil, fmt.Errorf("middle hop %s accepted a TLS client without a certificate: it answered %q", addr, answer)
		}
	}

	pair, err := tls.LoadX509KeyPair(files.Client.Cert, files.Client.Key)
	if err != nil {
		return nil, fmt.Errorf("client certificate: %w", err)
	}
	cfg := base.Clone()
	cfg.Certificates = []tls.Certificate{pair}
	c, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("middle hop %s: TLS handshake with the client certificate: %w", addr, err)
	}
	defer c.Close()
	st := c.(*tls.Conn).ConnectionState()
	if st.NegotiatedProtocol != alpn {
		return nil, fmt.Errorf("middle hop %s negotiated ALPN %q, want %q", addr, st.NegotiatedProtocol, alpn)
	}
	return &TLSHop{Addr: addr, Version: tls.VersionName(st.Version), CipherSuite: tls.CipherSuiteName(st.CipherSuite),
		KeyExchange: st.CurveID.String(), ALPN: st.NegotiatedProtocol}, nil
}

// checkHop probes in's middle hop (probeTLSHop) and reads its handshake counter
// after the probes.
func checkHop(ctx context.Context, in *instance, files *TLSFiles) error {
	hop, err := probeTLSHop(ctx, in.hop.addr, in.hop.alpn, files)
	if err != nil {
		return err
	}
	if in.hop.before, err = in.hop.handshakes(ctx); err != nil {
		return fmt.Errorf("%s: TLS handshakes on the middle hop: %w", in.name, err)
	}
	hop.Scenario, hop.HandshakesFrom = in.name, in.hop.counter
	in.hop.report = hop
	return nil
}

// exchange writes hello on c and reads what comes back within 2 s: the bytes, or the
// error (EOF, reset, a TLS alert) when nothing came.
func exchange(ctx context.Context, c net.Conn, hello []byte) ([]byte, error) {
	deadline := time.Now().Add(2 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.SetDeadline(deadline)
	if _, err := c.Write(hello); err != nil {
		return nil, err
	}
	buf := make([]byte, 512)
	n, err := io.ReadAtLeast(c, buf, 1)
	if n > 0 {
		return buf[:n], nil
	}
	return nil, err
}

// isTLSRefusal says whether a TLS server's answer to plaintext: nothing (the read
// failed), or 400 (Go's crypto/tls and meshd's STRICT listeners answer an HTTP
// request so).
func isTLSRefusal(answer []byte) bool {
	s := string(answer)
	return strings.HasPrefix(s, "HTTP/1.0 400 ") || strings.HasPrefix(s, "HTTP/1.1 400 ")
}

// meshdListenerHandshakes sums the listener.<name>.ssl.handshake counters on a
// sidecar's /stats.
func meshdListenerHandshakes(ctx context.Context, admin string) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/stats", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("GET /stats: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET /stats: %s", resp.Status)
	}
	var sum uint64
	found := false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), ": ")
		if !ok || !strings.HasPrefix(name, "listener.") || !strings.HasSuffix(name, ".ssl.handshake") {
			continue
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/stats line %q: %w", sc.Text(), err)
		}
		sum += n
		found = true
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("GET /stats: %w", err)
	}
	if !found {
		return 0, errors.New("/stats has no listener.*.ssl.handshake counter")
	}
	return sum, nil
}

// haproxyInfo returns the field of `show info` on HAProxy's stats socket at addr.
func haproxyInfo(ctx context.Context, addr, field string) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, fmt.Errorf("haproxy stats socket: %w", err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := io.WriteString(c, "show info\n"); err != nil {
		return 0, fmt.Errorf("haproxy stats socket: %w", err)
	}
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+": "); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("haproxy show info %s: %w", field, err)
			}
			return n, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("haproxy show info: %w", err)
	}
	return 0, fmt.Errorf("haproxy show info has no %s", field)
}
