package proxy_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshd/meshd/internal/testutil"
	meshtls "github.com/meshd/meshd/tls"
)

// versioned starts a grpc-go server with the health service whose every answer says
// which version served it (response header x-version).
func versioned(t *testing.T, version string) *testutil.Upstream {
	t.Helper()
	hs := health.NewServer()
	t.Cleanup(hs.Shutdown)
	tag := grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		_ = grpc.SetHeader(ctx, metadata.Pairs("x-version", version))
		return h(ctx, req)
	})
	return testutil.StartGRPC(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, hs) }, tag)
}

// TestGatewayGRPCCanary: a grpcRoute of a gateway's grpc listener sends a service's
// calls to a virtual service whose virtual router splits them 80/20 between two
// versions (grpc-go servers); the split holds within a tolerance over a bounded
// number of calls. A call no grpcRoute matches gets UNIMPLEMENTED (meshd's 404
// no_route in gRPC shape).
func TestGatewayGRPCCanary(t *testing.T) {
	v1, v2 := versioned(t, "v1"), versioned(t, "v2")
	yaml := fmt.Sprintf(`
mesh: {meshName: t, spec: {egressFilter: {type: DROP_ALL}}}
virtualNodes:
  - virtualNodeName: v1
    spec: {listeners: [{portMapping: {port: %d, protocol: grpc}}], serviceDiscovery: {static: {endpoints: ["127.0.0.1:%d"]}}}
  - virtualNodeName: v2
    spec: {listeners: [{portMapping: {port: %d, protocol: grpc}}], serviceDiscovery: {static: {endpoints: ["127.0.0.1:%d"]}}}
virtualServices:
  - {virtualServiceName: health.t.local, spec: {provider: {virtualRouter: {virtualRouterName: health}}}}
virtualRouters:
  - {virtualRouterName: health, spec: {listeners: [{portMapping: {port: 50051, protocol: grpc}}]}}
routes:
  - routeName: canary
    virtualRouterName: health
    spec: {grpcRoute: {match: {serviceName: grpc.health.v1.Health}, action: {weightedTargets: [{virtualNode: v1, weight: 80}, {virtualNode: v2, weight: 20}]}}}
virtualGateways:
  - virtualGatewayName: edge
    spec: {listeners: [{portMapping: {port: 8443, protocol: grpc}}]}
gatewayRoutes:
  - gatewayRouteName: health
    virtualGatewayName: edge
    spec: {grpcRoute: {match: {serviceName: grpc.health.v1.Health, metadata: [{name: x-tenant, match: {prefix: acme}}]}, action: {target: {virtualService: {virtualServiceName: health.t.local}}},
      headers: {response: {append: [{name: x-gateway-route, value: "%%ROUTE_NAME%%"}]}}}}
`, v1.Port, v1.Port, v2.Port, v2.Port)
	srv := startGateway(t, "edge", yaml)
	cc := grpcDial(t, srv.GatewayAddrs()[8443], "api.example.com")
	client := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const calls = 400
	seen := map[string]int{}
	tenant := metadata.AppendToOutgoingContext(ctx, "x-tenant", "acme-1")
	for i := 0; i < calls; i++ {
		var md metadata.MD
		resp, err := client.Check(tenant, &healthpb.HealthCheckRequest{}, grpc.Header(&md))
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("call %d: %v %v", i, resp, err)
		}
		seen[strings.Join(md.Get("x-version"), ",")]++
		if gr := md.Get("x-gateway-route"); len(gr) != 1 || gr[0] != "health" {
			t.Fatalf("call %d: x-gateway-route %q, want the gateway route's header rule's [health]", i, gr)
		}
	}
	if seen["v1"]+seen["v2"] != calls {
		t.Fatalf("answers by version %v, want only v1 and v2", seen)
	}
	// 20% of 400 is 80; a binomial's standard deviation there is 8: ±40 is 5 of them.
	if seen["v2"] < 40 || seen["v2"] > 120 {
		t.Fatalf("v2 served %d of %d calls, want about 20%% (40..120)", seen["v2"], calls)
	}
	// Without the metadata the gateway route does not match.
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("a call without x-tenant: %v, want UNIMPLEMENTED (no gateway route)", err)
	}
}

// TestGatewayGRPCHealthCheck: a gateway listener's grpc healthCheck is answered by meshd
// itself (grpc.health.v1.Health/Check: SERVING while ready, NOT_SERVING while the admin's
// /healthcheck/fail holds, the call itself OK either way), counted on no gateway route;
// other calls on the listener are routed as before.
func TestGatewayGRPCHealthCheck(t *testing.T) {
	up := testutil.StartGRPC(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, health.NewServer()) })
	yaml := fmt.Sprintf(`
mesh: {meshName: t}
virtualNodes:
  - virtualNodeName: echo
    spec: {listeners: [{portMapping: {port: %d, protocol: grpc}}], serviceDiscovery: {static: {endpoints: ["127.0.0.1:%d"]}}}
virtualServices:
  - {virtualServiceName: echo.t.local, spec: {provider: {virtualNode: {virtualNodeName: echo}}}}
virtualGateways:
  - virtualGatewayName: edge
    spec: {listeners: [{portMapping: {port: 8080, protocol: grpc}, healthCheck: {protocol: grpc, intervalMillis: 5000, timeoutMillis: 2000, healthyThreshold: 2, unhealthyThreshold: 2}}]}
gatewayRoutes:
  - gatewayRouteName: all
    virtualGatewayName: edge
    spec: {grpcRoute: {match: {serviceName: grpc.reflection.v1.ServerReflection}, action: {target: {virtualService: {virtualServiceName: echo.t.local}}}}}
`, up.Port, up.Port)
	srv := startGateway(t, "edge", yaml)
	cc := grpcDial(t, srv.GatewayAddrs()[8080], "edge.example.com")
	client := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, step := range []struct {
		call string
		want healthpb.HealthCheckResponse_ServingStatus
	}{{"", healthpb.HealthCheckResponse_SERVING}, {"/healthcheck/fail", healthpb.HealthCheckResponse_NOT_SERVING}, {"/healthcheck/ok", healthpb.HealthCheckResponse_SERVING}} {
		if step.call != "" {
			if code, _, body := adminCall(t, srv, "POST", step.call, ""); code != 200 {
				t.Fatalf("POST %s: %d %s", step.call, code, body)
			}
		}
		var md metadata.MD
		resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&md))
		if err != nil || resp.GetStatus() != step.want {
			t.Fatalf("after %q: Check %v %v, want %v", step.call, resp, err, step.want)
		}
		if got := md.Get("x-meshd-error"); len(got) != 1 || got[0] != "health_check" {
			t.Fatalf("after %q: x-meshd-error %q, want meshd's own answer (health_check)", step.call, got)
		}
	}
	// Watch is not the health check: no gateway route matches it.
	w, err := client.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = w.Recv()
	}
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("Watch: %v, want UNIMPLEMENTED (no gateway route)", err)
	}
	if m := scrape(t, srv, ""); m.metric("meshd_gateway_route_requests_total", lbls{"gateway_route": "all"}) != nil {
		t.Errorf("the health checks were counted on gateway route all")
	}
}

// TestGatewayTLS: a gateway listener with tls STRICT terminates TLS (the client
// verifies the gateway's certificate of the mesh CA), and backendDefaults.clientPolicy
// originates mTLS to the target: the upstream sees the virtual service name as SNI and
// the gateway's certificate. A plaintext request on the STRICT listener is answered 400 tls_required, never forwarded.
func TestGatewayTLS(t *testing.T) {
	k := newOriginPKI(t)
	now := time.Now()
	gwc, err := k.ca.Issue(meshtls.WorkloadRequest{Mesh: "shop", Node: "gateway", DNSNames: []string{"gw.shop.example"}, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	crt, key, err := meshtls.WriteWorkload(k.dir, "gateway", gwc)
	if err != nil {
		t.Fatal(err)
	}
	port := startTLSUpstream(t, serverTLS(t, k.issue("backend", now, 0), k.trust()))
	yaml := fmt.Sprintf(`
mesh: {meshName: shop, spec: {egressFilter: {type: DROP_ALL}}}
virtualNodes:
  - virtualNodeName: backend
    spec: {listeners: [{portMapping: {port: %d, protocol: http}}], serviceDiscovery: {static: {endpoints: ["127.0.0.1:%d"]}}}
virtualServices:
  - {virtualServiceName: backend.shop.local, spec: {provider: {virtualNode: {virtualNodeName: backend}}}}
virtualGateways:
  - virtualGatewayName: gw
    spec:
      listeners:
        - portMapping: {port: 443, protocol: http}
          tls: {mode: STRICT, certificate: {file: {certificateChain: %s, privateKey: %s}}}
      backendDefaults:
        clientPolicy:
          tls:
            certificate: {file: {certificateChain: %s, privateKey: %s}}
            validation:
              trust: {file: {certificateChain: %s}}
              subjectAlternativeNames: {match: {exact: [spiffe://shop/backend]}}
gatewayRoutes:
  - gatewayRouteName: b
    virtualGatewayName: gw
    spec: {httpRoute: {match: {prefix: /b}, action: {target: {virtualService: {virtualServiceName: backend.shop.local}}}}}
`, port, port, crt, key, crt, key, filepath.Join(k.dir, "ca.crt"))
	srv := startGateway(t, "gw", yaml)
	addr := srv.GatewayAddrs()[443]
	pool := x509.NewCertPool()
	pool.AddCert(k.ca.Cert)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "gw.shop.example"},
		DialContext:     (&dialTo{addr}).dial,
	}}
	t.Cleanup(c.CloseIdleConnections)
	seen := getSeen(t, c, "https://gw.shop.example/b/x")
	want := tlsSeen{Proto: "HTTP/1.1", SNI: "backend.shop.local", ALPN: "http/1.1", Peer: "spiffe://shop/gateway"}
	if seen != want {
		t.Fatalf("the upstream saw %+v, want %+v", seen, want)
	}
	raw := dialRaw(t, addr)
	raw.send(t, "GET /b/x HTTP/1.1\r\nHost: gw\r\n\r\n")
	if resp, _ := raw.read(t, "GET"); resp.StatusCode != 400 || resp.Header.Get("X-Meshd-Error") != "tls_required" {
		t.Fatalf("plaintext on the STRICT listener: %d %q, want 400 tls_required (never forwarded)", resp.StatusCode, resp.Header.Get("X-Meshd-Error"))
	}
}

// dialTo dials one address whatever the URL names.
type dialTo struct{ addr string }

func (d *dialTo) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	var nd net.Dialer
	return nd.DialContext(ctx, "tcp", d.addr)
}
