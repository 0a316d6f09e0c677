package proxy_test

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/proxy"
	meshtls "github.com/meshd/meshd/tls"
)

// TestCorpusGateways: every virtual gateway and gateway route of the App Mesh corpus
// validates and compiles into what meshd serves (proxy.Server.Apply for the gateway).
// A gateway stands beside stubs of what it names (a virtual service per route target,
// provided by a node listening on the target port; a gateway with the listener a route
// asks for). tls file sources are rewritten to certificates of a mesh CA in a temporary
// directory; an ACM source, which meshd cannot load, is refused naming the field.
func TestCorpusGateways(t *testing.T) {
	dir := corpusDir(t)
	f, err := os.Open(filepath.Join(dir, "MANIFEST.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	keys := corpusKeys(t)
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		cols := strings.Split(sc.Text(), "\t")
		if len(cols) < 2 || (cols[1] != "virtualGateway" && cols[1] != "gatewayRoute") {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(dir, cols[0]))
		if err != nil {
			t.Fatal(err)
		}
		n++
		kind := cols[1]
		t.Run(cols[0], func(t *testing.T) { compileCorpusGateway(t, kind, raw, keys) })
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n != 27 {
		t.Errorf("%d gateway and gateway route specs in the corpus, want 27", n)
	}
}

// corpusKeys writes a certificate, its key and the CA to a temporary directory.
type keyFiles struct{ crt, key, ca string }

func corpusKeys(t *testing.T) keyFiles {
	t.Helper()
	ca, err := meshtls.NewCA(meshtls.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	wc, err := ca.Issue(meshtls.WorkloadRequest{Mesh: "corpus", Node: "gw"})
	if err != nil {
		t.Fatal(err)
	}
	crt, key, err := meshtls.WriteWorkload(dir, "gw", wc)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	return keyFiles{crt, key, caFile}
}

func compileCorpusGateway(t *testing.T, kind string, raw []byte, keys keyFiles) {
	list := "virtualGateways"
	if kind == "gatewayRoute" {
		list = "gatewayRoutes"
	}
	cfg, err := config.Parse([]byte(`{"mesh": {"meshName": "corpus"}, "` + list + `": [` + string(raw) + `]}`))
	if err != nil {
		t.Fatal(err)
	}
	// A resource names its own mesh (yelb's do): the stubs join it.
	if kind == "gatewayRoute" && cfg.GatewayRoutes[0].MeshName != "" {
		cfg.Mesh.MeshName = cfg.GatewayRoutes[0].MeshName
	}
	if kind == "virtualGateway" && cfg.VirtualGateways[0].MeshName != "" {
		cfg.Mesh.MeshName = cfg.VirtualGateways[0].MeshName
	}
	if kind == "gatewayRoute" {
		stubRouteGateway(cfg)
	}
	gw := &cfg.VirtualGateways[0]
	if gw.VirtualGatewayName == "" {
		gw.VirtualGatewayName = "gw"
	}
	acm := false
	for i := range gw.Spec.Listeners {
		if lt := gw.Spec.Listeners[i].TLS; lt != nil {
			acm = acm || rewriteTLSFiles(lt.Certificate, lt.Validation, keys)
		}
	}
	if bd := gw.Spec.BackendDefaults; bd != nil && bd.ClientPolicy != nil && bd.ClientPolicy.TLS != nil {
		ct := bd.ClientPolicy.TLS
		if ct.Certificate != nil && ct.Certificate.File != nil {
			ct.Certificate.File.CertificateChain, ct.Certificate.File.PrivateKey = keys.crt, keys.key
		}
		if ct.Validation.Trust.File != nil {
			ct.Validation.Trust.File.CertificateChain = keys.ca
		}
		acm = acm || ct.Validation.Trust.ACM != nil
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("does not validate: %v", err)
	}
	srv, err := proxy.New(proxy.Options{Gateway: gw.VirtualGatewayName, AdminAddr: "off", DrainTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	_, err = srv.Apply(context.Background(), cfg, "corpus")
	switch {
	case acm && (err == nil || !strings.Contains(err.Error(), "virtualGateways[0].spec.") || !strings.Contains(err.Error(), ".acm")):
		t.Fatalf("an ACM source: %v, want refused naming the gateway's tls field", err)
	case !acm && err != nil:
		t.Fatalf("apply: %v", err)
	}
}

// rewriteTLSFiles points a listener tls block's files at keys; it reports an ACM
// source (kept: meshd refuses it).
func rewriteTLSFiles(c *config.ListenerTLSCert, v *config.ListenerTLSValidation, keys keyFiles) (acm bool) {
	if c != nil {
		acm = c.ACM != nil
		if c.File != nil {
			c.File.CertificateChain, c.File.PrivateKey = keys.crt, keys.key
		}
	}
	if v != nil && v.Trust != nil {
		acm = acm || v.Trust.ACM != nil
		if v.Trust.File != nil {
			v.Trust.File.CertificateChain = keys.ca
		}
	}
	return acm
}

// stubRouteGateway adds what the corpus gateway route of cfg names: its gateway (with
// a listener of the route's protocol on its match.port, else 8080) and its target
// virtual service, provided by a node that listens on the target port (else 8080).
func stubRouteGateway(cfg *config.Config) {
	gr := &cfg.GatewayRoutes[0]
	if gr.GatewayRouteName == "" {
		gr.GatewayRouteName = "route"
	}
	if gr.VirtualGatewayName == "" {
		gr.VirtualGatewayName = "gw"
	}
	proto, port, target := config.ProtoHTTP, 0, &config.GatewayTarget{}
	switch s := &gr.Spec; {
	case s.HTTPRoute != nil:
		port, target = s.HTTPRoute.Match.Port, &s.HTTPRoute.Action.Target
	case s.HTTP2Route != nil:
		proto, port, target = config.ProtoHTTP2, s.HTTP2Route.Match.Port, &s.HTTP2Route.Action.Target
	case s.GRPCRoute != nil:
		proto, port, target = config.ProtoGRPC, s.GRPCRoute.Match.Port, &s.GRPCRoute.Action.Target
	}
	if port == 0 {
		port = 8080
	}
	cfg.VirtualGateways = append(cfg.VirtualGateways, config.VirtualGateway{VirtualGatewayName: gr.VirtualGatewayName,
		Spec: config.VirtualGatewaySpec{Listeners: []config.GatewayListener{{PortMapping: config.PortMapping{Port: port, Protocol: proto}}}}})
	tport := target.Port
	if tport == 0 {
		tport = 8080
	}
	svc := target.VirtualService.VirtualServiceName
	cfg.VirtualNodes = append(cfg.VirtualNodes, config.VirtualNode{VirtualNodeName: "provider", Spec: config.VirtualNodeSpec{
		Listeners:        []config.Listener{{PortMapping: config.PortMapping{Port: tport, Protocol: proto}}},
		ServiceDiscovery: &config.ServiceDiscovery{Static: &config.StaticServiceDiscovery{Endpoints: []config.StaticEndpoint{{Address: "127.0.0.1:1"}}}},
	}})
	cfg.VirtualServices = append(cfg.VirtualServices, config.VirtualService{VirtualServiceName: svc,
		Spec: config.VirtualServiceSpec{Provider: &config.VirtualServiceProvider{VirtualNode: &config.VirtualNodeRef{VirtualNodeName: "provider"}}}})
}
