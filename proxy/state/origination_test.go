package state

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/discovery"
	meshtls "github.com/meshd/meshd/tls"
)

// originMesh: node front has backends a.local, b.local, c.local and d.local, all
// provided by node back (listener 8080). backendDefaults enforce TLS; b.local turns it
// off (enforce: false), c.local narrows it to a port back does not listen on, d.local
// has a policy of its own with a SAN list.
const originMesh = `
mesh: {meshName: shop}
virtualNodes:
  - virtualNodeName: front
    spec:
      listeners: [{portMapping: {port: 9000, protocol: http}}]
      backendDefaults:
        clientPolicy:
          tls:
            certificate: {file: {certificateChain: DIR/front.crt, privateKey: DIR/front.key}}
            validation: {trust: {file: {certificateChain: DIR/ca.crt}}}
      backends:
        - virtualService: {virtualServiceName: a.local}
        - virtualService:
            virtualServiceName: b.local
            clientPolicy: {tls: {enforce: false, validation: {trust: {file: {certificateChain: DIR/ca.crt}}}}}
        - virtualService:
            virtualServiceName: c.local
            clientPolicy: {tls: {ports: [9999], validation: {trust: {file: {certificateChain: DIR/ca.crt}}}}}
        - virtualService:
            virtualServiceName: d.local
            clientPolicy: {tls: {validation: {trust: {file: {certificateChain: DIR/ca.crt}}, subjectAlternativeNames: {match: {exact: [SAN]}}}}}
  - virtualNodeName: back
    spec:
      listeners: [{portMapping: {port: 8080, protocol: PROTO}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:8080"]}}
virtualServices:
  - {virtualServiceName: a.local, spec: {provider: {virtualNode: {virtualNodeName: back}}}}
  - {virtualServiceName: b.local, spec: {provider: {virtualNode: {virtualNodeName: back}}}}
  - {virtualServiceName: c.local, spec: {provider: {virtualNode: {virtualNodeName: back}}}}
  - {virtualServiceName: d.local, spec: {provider: {virtualNode: {virtualNodeName: back}}}}
`

// originFiles writes a mesh CA and front's certificate into a temporary directory.
func originFiles(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ca, err := meshtls.NewCA(meshtls.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	wc, err := ca.Issue(meshtls.WorkloadRequest{Mesh: "shop", Node: "front"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := meshtls.WriteWorkload(dir, "front", wc); err != nil {
		t.Fatal(err)
	}
	return dir
}

func originConfig(t *testing.T, dir, san, proto string) *config.Config {
	t.Helper()
	y := strings.NewReplacer("DIR", dir, "SAN", san, "PROTO", proto).Replace(originMesh)
	cfg, err := config.Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func originOptions(t *testing.T) Options {
	t.Helper()
	ld := meshtls.NewLoader(meshtls.LoaderOptions{Mesh: "shop"})
	t.Cleanup(func() { _ = ld.Close() })
	return Options{Registry: func([]string) *discovery.Registry { return nil }, TLS: ld}
}

func compileT(t *testing.T, cfg *config.Config, prev *Snapshot, opts Options) *Snapshot {
	t.Helper()
	s, err := Compile(context.Background(), cfg, "front", "test", prev, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestCompileOrigination: a backend whose policy (its own, else backendDefaults)
// enforces TLS for the target's port reaches it through a cluster of its own that
// originates TLS with the service's name as SNI and ALPN for the target's protocol;
// enforce: false and ports that miss the target's port share the plaintext cluster.
func TestCompileOrigination(t *testing.T) {
	dir := originFiles(t)
	opts := originOptions(t)
	for _, tc := range []struct{ proto, alpn string }{{"http", "http/1.1"}, {"grpc", "h2"}, {"tcp", ""}} {
		s := compileT(t, originConfig(t, dir, "spiffe://shop/back", tc.proto), nil, opts)
		defer s.Retire(nil)
		for _, name := range []string{"back@a.local", "back@d.local"} {
			c := s.Cluster(name)
			if c == nil || c.TLSConfig() == nil {
				t.Fatalf("%s: cluster %s missing or without TLS (clusters %v)", tc.proto, name, s.Clusters())
			}
			cfg := c.TLSConfig()
			svc := strings.TrimPrefix(name, "back@")
			if cfg.ServerName != svc || strings.Join(cfg.NextProtos, ",") != tc.alpn {
				t.Errorf("%s: cluster %s: SNI %q, ALPN %v; want %s, %q", tc.proto, name, cfg.ServerName, cfg.NextProtos, svc, tc.alpn)
			}
			// a.local has backendDefaults' certificate; d.local's own policy, which
			// replaces the defaults, has none.
			if hasCert := cfg.GetClientCertificate != nil; hasCert != (svc == "a.local") {
				t.Errorf("%s: cluster %s presents a client certificate: %v", tc.proto, name, hasCert)
			}
		}
		shared := s.Cluster("back")
		if shared == nil || shared.TLSConfig() != nil {
			t.Fatalf("%s: the shared cluster back (b.local: enforce false; c.local: ports [9999]) is %v", tc.proto, shared)
		}
		for svc, want := range map[string]string{"a.local": "back@a.local", "b.local": "back", "c.local": "back", "d.local": "back@d.local"} {
			if got := s.Table().Egress(svc, 0).Routes[0].Targets[0].Cluster; got != want {
				t.Errorf("%s: %s reaches cluster %s, want %s", tc.proto, svc, got, want)
			}
		}
	}
}

// TestCompileOriginationCarryOver: a reload with the same policies keeps the TLS
// clusters (and their pools); one that changes a policy rebuilds that service's cluster
// only, keeping its handshake counters.
func TestCompileOriginationCarryOver(t *testing.T) {
	dir := originFiles(t)
	opts := originOptions(t)
	s1 := compileT(t, originConfig(t, dir, "spiffe://shop/back", "http"), nil, opts)
	s1.Cluster("back@d.local").TLSStats().Handshake(false, nil)
	s2 := compileT(t, originConfig(t, dir, "spiffe://shop/back", "http"), s1, opts)
	s1.Retire(s2)
	for _, name := range []string{"back", "back@a.local", "back@d.local"} {
		if s2.Cluster(name) != s1.Cluster(name) {
			t.Errorf("unchanged config: cluster %s was rebuilt", name)
		}
	}
	s3 := compileT(t, originConfig(t, dir, "spiffe://shop/back-v2", "http"), s2, opts)
	s2.Retire(s3)
	defer s3.Retire(nil)
	if s3.Cluster("back@d.local") == s2.Cluster("back@d.local") {
		t.Error("d.local's SAN list changed, and its cluster was carried over with the old policy")
	}
	if s3.Cluster("back@a.local") != s2.Cluster("back@a.local") || s3.Cluster("back") != s2.Cluster("back") {
		t.Error("clusters whose policy did not change were rebuilt")
	}
	if got := s3.Cluster("back@d.local").TLSStats().Successes(); got != 1 {
		t.Errorf("the rebuilt cluster's handshake counters: %d successes, want the 1 carried over", got)
	}
}

// TestCompileOriginationErrors: a source that does not load, a plan meshd cannot
// honour, and a build without a loader reject the config naming the field.
func TestCompileOriginationErrors(t *testing.T) {
	dir := originFiles(t)
	opts := originOptions(t)
	cases := []struct {
		name string
		edit func(*config.Config)
		opts Options
		path string
	}{
		{"missing trust file", func(c *config.Config) {
			c.VirtualNodes[0].Spec.BackendDefaults.ClientPolicy.TLS.Validation.Trust.File.CertificateChain = filepath.Join(dir, "nope.crt")
		}, opts, "virtualNodes[0].spec.backendDefaults.clientPolicy.tls.validation.trust.file.certificateChain"},
		{"acm trust", func(c *config.Config) {
			tr := &c.VirtualNodes[0].Spec.Backends[3].VirtualService.ClientPolicy.TLS.Validation.Trust
			tr.File, tr.ACM = nil, &config.TLSACMTrust{CertificateAuthorityArns: []string{"arn:aws:acm-pca:x"}}
		}, opts, "virtualNodes[0].spec.backends[3].virtualService.clientPolicy.tls.validation.trust.acm"},
		// The first backend that enforces TLS (a.local, under the defaults) is named.
		{"no loader", func(*config.Config) {}, Options{Registry: opts.Registry}, "virtualNodes[0].spec.backendDefaults.clientPolicy.tls"},
	}
	for _, tc := range cases {
		cfg := originConfig(t, dir, "spiffe://shop/back", "http")
		tc.edit(cfg)
		_, err := Compile(context.Background(), cfg, "front", "test", nil, tc.opts)
		var fe *config.Errors
		if !errors.As(err, &fe) || !strings.Contains(err.Error(), tc.path) {
			t.Errorf("%s: %v, want a *config.Errors naming %s", tc.name, err, tc.path)
		}
	}
}
