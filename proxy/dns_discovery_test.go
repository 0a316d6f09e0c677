package proxy_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/meshd/meshd/discovery/dnstest"
	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// namedUpstream serves HTTP on ip:port, answering its name; it counts requests.
type namedUpstream struct {
	name string
	hits atomic.Int64
}

// startOn listens on ip:port (port 0: any) and serves a namedUpstream there.
func startOn(t *testing.T, ip string, port int, name string) (*namedUpstream, int) {
	t.Helper()
	ln, err := net.Listen("tcp", fmt.Sprintf("%s:%d", ip, port))
	if err != nil {
		t.Fatalf("listen %s:%d: %v", ip, port, err)
	}
	u := &namedUpstream{name: name}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		u.hits.Add(1)
		_, _ = io.WriteString(w, name)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return u, ln.Addr().(*net.TCPAddr).Port
}

// dnsMesh is a mesh whose backends find their endpoints through DNS: svc.t.local on
// node "svc" (dns hostname svcName at port), and, when otherName is set, other.t.local
// on node "other" (dns hostname otherName at otherPort).
func dnsMesh(svcDiscovery string, port int, otherDiscovery string, otherPort int) string {
	y := fmt.Sprintf(`mesh: {meshName: t, spec: {egressFilter: {type: DROP_ALL}}}
virtualNodes:
  - virtualNodeName: app
    spec:
      listeners: [{portMapping: {port: 1, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:1"]}}
      backends: [{virtualService: {virtualServiceName: svc.t.local}}, {virtualService: {virtualServiceName: other.t.local}}]
  - virtualNodeName: svc
    spec:
      listeners: [{portMapping: {port: %d, protocol: http}}]
      serviceDiscovery: %s
  - virtualNodeName: other
    spec:
      listeners: [{portMapping: {port: %d, protocol: http}}]
      serviceDiscovery: %s
virtualServices:
  - virtualServiceName: svc.t.local
    spec: {provider: {virtualNode: {virtualNodeName: svc}}}
  - virtualServiceName: other.t.local
    spec: {provider: {virtualNode: {virtualNodeName: other}}}
`, port, svcDiscovery, otherPort, otherDiscovery)
	return y
}

func dnsOpts(d *dnstest.Server) proxy.Options {
	return proxy.Options{Node: "app", DNSResolvers: []string{d.Addr()}, DNSMinTTL: 50 * time.Millisecond,
		DNSMaxTTL: 200 * time.Millisecond, DNSNXDomainGrace: 300 * time.Millisecond, FirstResolveWait: 2 * time.Second}
}

func getBody(c *http.Client, host string) (int, string, string, error) {
	resp, err := c.Get("http://" + host + "/")
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header.Get(proxy.HeaderError), nil
}

func eventuallyDNS(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not happen within 10s", what)
		}
	}
}

// TestDNSEndpointsFollowedUnderLoad: endpoints that appear in DNS join the cluster and
// endpoints that leave it stop getting requests, while clients keep sending: no request
// fails through the changes.
func TestDNSEndpointsFollowedUnderLoad(t *testing.T) {
	a, port := startOn(t, "127.0.0.2", 0, "a")
	b, _ := startOn(t, "127.0.0.3", port, "b")
	d := dnstest.Start(t)
	d.Set("svc.internal.", dns.TypeA, "svc.internal. 0 IN A 127.0.0.2")
	d.Set("other.internal.", dns.TypeA, "other.internal. 0 IN A 127.0.0.2")
	srv := testutil.StartMeshdOpts(t, dnsOpts(d), dnsMesh(`{dns: {hostname: svc.internal.}}`, port, `{dns: {hostname: other.internal.}}`, port))

	var failed, sent atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			c := testutil.HTTPClient(t, srv.EgressAddr())
			for i := 0; i < 5000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				code, _, _, err := getBody(c, "svc.t.local")
				sent.Add(1)
				if err != nil || code != 200 {
					failed.Add(1)
				}
			}
		})
	}
	d.Set("svc.internal.", dns.TypeA, "svc.internal. 0 IN A 127.0.0.2", "svc.internal. 0 IN A 127.0.0.3")
	eventuallyDNS(t, "the new endpoint getting requests", func() bool { return b.hits.Load() > 20 })
	d.Set("svc.internal.", dns.TypeA, "svc.internal. 0 IN A 127.0.0.3")
	// Once the set has moved, a's count stops growing.
	var last int64 = -1
	eventuallyDNS(t, "the removed endpoint getting no more requests", func() bool {
		cur := a.hits.Load()
		still := cur == last
		last = cur
		time.Sleep(300 * time.Millisecond)
		return still && a.hits.Load() == cur
	})
	close(stop)
	wg.Wait()
	if f := failed.Load(); f != 0 {
		t.Fatalf("%d of %d requests failed while the endpoints changed", f, sent.Load())
	}
}

// TestUnresolvedNameServesOtherRoutes: a backend whose name does not resolve does not
// keep meshd from starting or other routes from serving: its route answers 503
// no_healthy_upstream, /clusters says why, and the route heals when the name appears.
// The resolver going down later keeps the last good set.
func TestUnresolvedNameServesOtherRoutes(t *testing.T) {
	_, port := startOn(t, "127.0.0.2", 0, "svc")
	d := dnstest.Start(t)
	d.Set("other.internal.", dns.TypeA, "other.internal. 0 IN A 127.0.0.2")
	srv := testutil.StartMeshdOpts(t, dnsOpts(d), dnsMesh(`{dns: {hostname: later.internal.}}`, port, `{dns: {hostname: other.internal.}}`, port))
	c := testutil.HTTPClient(t, srv.EgressAddr())
	if code, body, _, err := getBody(c, "other.t.local"); err != nil || code != 200 || body != "svc" {
		t.Fatalf("the resolvable route: %d %q %v", code, body, err)
	}
	code, _, xerr, err := getBody(c, "svc.t.local")
	if err != nil || code != 503 || xerr != "no_healthy_upstream" {
		t.Fatalf("the unresolvable route: %d %s %v, want 503 no_healthy_upstream", code, xerr, err)
	}
	if resp, body := adminGet(t, srv, "/ready"); resp.StatusCode != 200 {
		t.Fatalf("/ready %d %s", resp.StatusCode, body)
	}
	if _, body := adminGet(t, srv, "/clusters"); !strings.Contains(string(body), `"noEndpoints"`) || !strings.Contains(string(body), "later.internal.") {
		t.Fatalf("/clusters does not say why svc is empty: %s", body)
	}
	d.Set("later.internal.", dns.TypeA, "later.internal. 0 IN A 127.0.0.2")
	eventuallyDNS(t, "the route healing", func() bool {
		code, _, _, err := getBody(c, "svc.t.local")
		return err == nil && code == 200
	})
	d.Down()
	time.Sleep(500 * time.Millisecond) // several re-resolution intervals fail meanwhile
	if code, _, _, err := getBody(c, "svc.t.local"); err != nil || code != 200 {
		t.Fatalf("with the resolver down: %d %v, want the last good set kept", code, err)
	}
}

// TestNXDomainGraceEmptiesCluster: a name that stops existing keeps its set for the
// grace, then its route answers 503.
func TestNXDomainGraceEmptiesCluster(t *testing.T) {
	_, port := startOn(t, "127.0.0.2", 0, "svc")
	d := dnstest.Start(t)
	d.Set("svc.internal.", dns.TypeA, "svc.internal. 0 IN A 127.0.0.2")
	d.Set("other.internal.", dns.TypeA, "other.internal. 0 IN A 127.0.0.2")
	srv := testutil.StartMeshdOpts(t, dnsOpts(d), dnsMesh(`{dns: {hostname: svc.internal.}}`, port, `{dns: {hostname: other.internal.}}`, port))
	c := testutil.HTTPClient(t, srv.EgressAddr())
	if code, _, _, err := getBody(c, "svc.t.local"); err != nil || code != 200 {
		t.Fatalf("before: %d %v", code, err)
	}
	d.Set("svc.internal.", dns.TypeA) // gone: NXDOMAIN
	eventuallyDNS(t, "the cluster emptying after the grace", func() bool {
		code, _, _, err := getBody(c, "svc.t.local")
		return err == nil && code == 503
	})
}

// TestSRVAndCloudMapDiscovery: SRV records give endpoints their own ports; Cloud Map is
// resolved as <serviceName>.<namespaceName> through DNS (SRV, else A at the listener
// port), attributes accepted with a warning.
func TestSRVAndCloudMapDiscovery(t *testing.T) {
	_, p1 := startOn(t, "127.0.0.2", 0, "srv-a")
	_, p2 := startOn(t, "127.0.0.3", 0, "cm")
	d := dnstest.Start(t)
	d.Set("_http._tcp.svc.internal.", dns.TypeSRV, fmt.Sprintf("_http._tcp.svc.internal. 0 IN SRV 0 5 %d a.internal.", p1))
	d.Set("a.internal.", dns.TypeA, "a.internal. 0 IN A 127.0.0.2")
	d.Set("cart.shop.local.", dns.TypeA, "cart.shop.local. 0 IN A 127.0.0.3")
	y := dnsMesh(`{dns: {hostname: _http._tcp.svc.internal., recordType: SRV}}`, 9999,
		`{awsCloudMap: {namespaceName: shop.local., serviceName: cart, attributes: [{key: stage, value: prod}]}}`, p2)
	srv := testutil.StartMeshdOpts(t, dnsOpts(d), y)
	c := testutil.HTTPClient(t, srv.EgressAddr())
	if code, body, _, err := getBody(c, "svc.t.local"); err != nil || code != 200 || body != "srv-a" {
		t.Fatalf("SRV route: %d %q %v", code, body, err)
	}
	if code, body, _, err := getBody(c, "other.t.local"); err != nil || code != 200 || body != "cm" {
		t.Fatalf("Cloud Map route: %d %q %v", code, body, err)
	}
}
