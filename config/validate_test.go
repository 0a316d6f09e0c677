package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// shop returns a fresh copy of the canonical mesh for a test to change.
func shop(t *testing.T) *Config {
	t.Helper()
	return mustParseFile(t, "testdata/shop.yaml")
}

func ptr[T any](v T) *T { return &v }

// Handy parts of the canonical mesh.
func split(c *Config) *HTTPRoute  { return c.Routes[1].Spec.HTTPRoute }
func canary(c *Config) *HTTPRoute { return c.Routes[0].Spec.HTTPRoute }
func listener0(c *Config) *Listener {
	return &c.VirtualNodes[1].Spec.Listeners[0] // backend-v1, http 9001
}

// toGRPC turns the canonical router and its split route into gRPC ones.
func toGRPC(c *Config) *GRPCRoute {
	c.VirtualRouters[0].Spec.Listeners[0].PortMapping.Protocol = ProtoGRPC
	c.Routes = c.Routes[1:]
	g := &GRPCRoute{Action: c.Routes[0].Spec.HTTPRoute.Action, Match: GRPCRouteMatch{ServiceName: "shop.Backend"}}
	c.Routes[0].Spec.HTTPRoute = nil
	c.Routes[0].Spec.GRPCRoute = g
	return g
}

const (
	sp = "routes[1].spec.httpRoute"          // the split route
	mp = "routes[0].spec.httpRoute.match"    // the canary route's match
	lp = "virtualNodes[1].spec.listeners[0]" // backend-v1's listener
)

func TestValidateRules(t *testing.T) {
	tests := []struct {
		name  string
		mut   func(c *Config)
		path  string
		value string // must appear quoted in the message; "" when the rule has no value
		msg   string
	}{
		// mesh and names
		{"mesh name required", func(c *Config) { c.Mesh.MeshName = "" }, "mesh.meshName", "", "required"},
		{"egress filter type", func(c *Config) { c.Mesh.Spec.EgressFilter.Type = "DENY" }, "mesh.spec.egressFilter.type", "DENY", "ALLOW_ALL, DROP_ALL"},
		{"mesh ip preference", func(c *Config) {
			c.Mesh.Spec.ServiceDiscovery = &MeshServiceDiscovery{IPPreference: "IPv5"}
		}, "mesh.spec.serviceDiscovery.ipPreference", "IPv5", "one of"},
		{"node name required", func(c *Config) { c.VirtualNodes[0].VirtualNodeName = "" }, "virtualNodes[0].virtualNodeName", "", "required"},
		{"name too long", func(c *Config) { c.VirtualNodes[0].VirtualNodeName = strings.Repeat("n", 256) }, "virtualNodes[0].virtualNodeName", strings.Repeat("n", 256), "longer than 255"},
		{"duplicate node", func(c *Config) { c.VirtualNodes[2].VirtualNodeName = "backend-v1" }, "virtualNodes[2].virtualNodeName", "backend-v1", "duplicate"},
		{"duplicate service", func(c *Config) {
			c.VirtualServices = append(c.VirtualServices, c.VirtualServices[0])
		}, "virtualServices[1].virtualServiceName", "backend.shop.local", "duplicate"},
		{"duplicate router", func(c *Config) {
			c.VirtualRouters = append(c.VirtualRouters, c.VirtualRouters[0])
		}, "virtualRouters[1].virtualRouterName", "backend-router", "duplicate"},
		{"route name required", func(c *Config) { c.Routes[0].RouteName = "" }, "routes[0].routeName", "", "required"},
		{"duplicate route in router", func(c *Config) { c.Routes[1].RouteName = "canary-header" }, "routes[1].routeName", "canary-header", `duplicate routeName in virtual router "backend-router"`},
		{"resource meshName differs", func(c *Config) { c.VirtualNodes[0].MeshName = "other" }, "virtualNodes[0].meshName", "other", `mesh.meshName "shop"`},
		{"route meshName differs", func(c *Config) { c.Routes[0].MeshName = "other" }, "routes[0].meshName", "other", "does not match"},

		// references
		{"provider router undefined", func(c *Config) {
			c.VirtualServices[0].Spec.Provider.VirtualRouter.VirtualRouterName = "nope"
		}, "virtualServices[0].spec.provider.virtualRouter.virtualRouterName", "nope", "not defined"},
		{"provider node undefined", func(c *Config) {
			c.VirtualServices[0].Spec.Provider = &VirtualServiceProvider{VirtualNode: &VirtualNodeRef{VirtualNodeName: "ghost"}}
		}, "virtualServices[0].spec.provider.virtualNode.virtualNodeName", "ghost", `virtual node "ghost" is not defined`},
		{"provider both", func(c *Config) {
			c.VirtualServices[0].Spec.Provider.VirtualNode = &VirtualNodeRef{VirtualNodeName: "backend-v1"}
		}, "virtualServices[0].spec.provider", "", "exactly one of virtualNode, virtualRouter"},
		{"route router undefined", func(c *Config) { c.Routes[0].VirtualRouterName = "nope" }, "routes[0].virtualRouterName", "nope", "not defined"},
		{"target node undefined", func(c *Config) { split(c).Action.WeightedTargets[0].VirtualNode = "ghost" }, sp + ".action.weightedTargets[0].virtualNode", "ghost", `virtual node "ghost" is not defined`},
		{"backend service undefined", func(c *Config) {
			c.VirtualNodes[0].Spec.Backends[0].VirtualService.VirtualServiceName = "db.shop.local"
		}, "virtualNodes[0].spec.backends[0].virtualService.virtualServiceName", "db.shop.local", "not defined"},
		{"backend without virtualService", func(c *Config) {
			c.VirtualNodes[0].Spec.Backends[0].VirtualService = nil
		}, "virtualNodes[0].spec.backends[0].virtualService", "", "required"},
		{"target port not a listener", func(c *Config) { split(c).Action.WeightedTargets[0].Port = 9999 }, sp + ".action.weightedTargets[0].port", "9999", `"backend-v1" has no listener on port 9999`},
		{"target with several listeners needs port", func(c *Config) {
			c.VirtualNodes[1].Spec.Listeners = append(c.VirtualNodes[1].Spec.Listeners, Listener{PortMapping: PortMapping{Port: 9011, Protocol: ProtoHTTP}})
		}, sp + ".action.weightedTargets[0].port", "", "has 2 listeners"},
		{"route target needs service discovery", func(c *Config) { c.VirtualNodes[1].Spec.ServiceDiscovery = nil }, "virtualNodes[1].spec.serviceDiscovery", "", "receives traffic (" + sp + ".action.weightedTargets[0].virtualNode)"},
		{"provider node needs service discovery", func(c *Config) {
			c.VirtualServices[0].Spec.Provider = &VirtualServiceProvider{VirtualNode: &VirtualNodeRef{VirtualNodeName: "frontend"}}
			c.VirtualNodes[0].Spec.ServiceDiscovery = nil
		}, "virtualNodes[0].spec.serviceDiscovery", "", "receives traffic"},

		// route kinds and router listeners
		{"no route kind", func(c *Config) { c.Routes[1].Spec.HTTPRoute = nil }, "routes[1].spec", "", "exactly one of httpRoute, http2Route, grpcRoute, tcpRoute"},
		{"two route kinds", func(c *Config) {
			c.Routes[1].Spec.TCPRoute = &TCPRoute{Action: split(c).Action}
		}, "routes[1].spec", "", "exactly one of"},
		{"http2 route on http router", func(c *Config) {
			c.Routes[1].Spec.HTTP2Route, c.Routes[1].Spec.HTTPRoute = c.Routes[1].Spec.HTTPRoute, nil
		}, "routes[1].spec.http2Route", "", `a http2 route does not fit virtual router "backend-router" listener port 80 with protocol "http"`},
		{"tcp route on http router", func(c *Config) {
			c.Routes[1].Spec.TCPRoute, c.Routes[1].Spec.HTTPRoute = &TCPRoute{Action: split(c).Action}, nil
		}, "routes[1].spec.tcpRoute", "", "a tcp route does not fit"},
		{"grpc route on http router", func(c *Config) {
			c.Routes[1].Spec.GRPCRoute, c.Routes[1].Spec.HTTPRoute = &GRPCRoute{Action: split(c).Action}, nil
		}, "routes[1].spec.grpcRoute", "", "a grpc route does not fit"},
		{"http route on grpc router", func(c *Config) {
			c.VirtualRouters[0].Spec.Listeners[0].PortMapping.Protocol = ProtoGRPC
		}, "routes[0].spec.httpRoute", "", "a http route does not fit"},
		{"match port not a router listener", func(c *Config) { split(c).Match.Port = 81 }, sp + ".match.port", "81", `"backend-router" has no listener on port 81`},
		{"router with several listeners needs match port", func(c *Config) {
			c.VirtualRouters[0].Spec.Listeners = append(c.VirtualRouters[0].Spec.Listeners, RouterListener{PortMapping: PortMapping{Port: 81, Protocol: ProtoHTTP}})
		}, mp + ".port", "", "is required: virtual router \"backend-router\" has 2 listeners"},
		{"router without listeners", func(c *Config) { c.VirtualRouters[0].Spec.Listeners = nil }, "virtualRouters[0].spec.listeners", "", "at least one listener"},
		{"router listener protocol", func(c *Config) { c.VirtualRouters[0].Spec.Listeners[0].PortMapping.Protocol = "udp" }, "virtualRouters[0].spec.listeners[0].portMapping.protocol", "udp", "http, http2, grpc, tcp"},

		// weights and counts
		{"weight above 100", func(c *Config) { split(c).Action.WeightedTargets[0].Weight = 101 }, sp + ".action.weightedTargets[0].weight", "101", "0..100"},
		{"negative weight", func(c *Config) { split(c).Action.WeightedTargets[0].Weight = -1 }, sp + ".action.weightedTargets[0].weight", "-1", "0..100"},
		{"all weights zero", func(c *Config) {
			split(c).Action.WeightedTargets[0].Weight, split(c).Action.WeightedTargets[1].Weight = 0, 0
		}, sp + ".action.weightedTargets", "", "weight above 0"},
		{"no targets", func(c *Config) { split(c).Action.WeightedTargets = nil }, sp + ".action.weightedTargets", "0", "1..10"},
		{"eleven targets", func(c *Config) {
			for len(split(c).Action.WeightedTargets) < 11 {
				split(c).Action.WeightedTargets = append(split(c).Action.WeightedTargets, WeightedTarget{VirtualNode: "backend-v1", Weight: 1})
			}
		}, sp + ".action.weightedTargets", "11", "1..10"},
		{"eleven headers", func(c *Config) {
			for i := 0; i < 10; i++ {
				canary(c).Match.Headers = append(canary(c).Match.Headers, HeaderMatch{Name: "h" + strconv.Itoa(i)})
			}
		}, mp + ".headers", "11", "at most 10"},
		{"eleven query parameters", func(c *Config) {
			for i := 0; i < 11; i++ {
				canary(c).Match.QueryParameters = append(canary(c).Match.QueryParameters, QueryParameter{Name: "q"})
			}
		}, mp + ".queryParameters", "11", "at most 10"},
		{"query parameter name", func(c *Config) {
			canary(c).Match.QueryParameters = []QueryParameter{{Match: &QueryParameterMatch{Exact: "x"}}}
		}, mp + ".queryParameters[0].name", "", "required"},
		{"eleven metadata", func(c *Config) {
			g := toGRPC(c)
			for i := 0; i < 11; i++ {
				g.Match.Metadata = append(g.Match.Metadata, HeaderMatch{Name: "m"})
			}
		}, "routes[0].spec.grpcRoute.match.metadata", "11", "at most 10"},
		{"priority above 1000", func(c *Config) { c.Routes[1].Spec.Priority = ptr(1001) }, "routes[1].spec.priority", "1001", "0..1000"},
		{"negative priority", func(c *Config) { c.Routes[1].Spec.Priority = ptr(-1) }, "routes[1].spec.priority", "-1", "0..1000"},

		// listeners
		{"port zero", func(c *Config) { listener0(c).PortMapping.Port = 0 }, lp + ".portMapping.port", "0", "1..65535"},
		{"port too big", func(c *Config) { listener0(c).PortMapping.Port = 70000 }, lp + ".portMapping.port", "70000", "1..65535"},
		{"listener protocol", func(c *Config) { listener0(c).PortMapping.Protocol = "udp" }, lp + ".portMapping.protocol", "udp", "one of http, http2, grpc, tcp"},
		{"duplicate listener port", func(c *Config) {
			c.VirtualNodes[0].Spec.Listeners = append(c.VirtualNodes[0].Spec.Listeners, c.VirtualNodes[0].Spec.Listeners[0])
		}, "virtualNodes[0].spec.listeners[1].portMapping.port", "8080", "another listener"},

		// http matches
		{"prefix and path", func(c *Config) { canary(c).Match.Path = &PathMatch{Exact: "/x"} }, mp, "", "only one of prefix, path"},
		{"neither prefix nor path", func(c *Config) { canary(c).Match.Prefix = "" }, mp, "", "one of prefix, path"},
		{"prefix without slash", func(c *Config) { canary(c).Match.Prefix = "api" }, mp + ".prefix", "api", `start with "/"`},
		{"path exact without slash", func(c *Config) {
			canary(c).Match.Prefix, canary(c).Match.Path = "", &PathMatch{Exact: "x"}
		}, mp + ".path.exact", "x", `start with "/"`},
		{"path exact and regex", func(c *Config) {
			canary(c).Match.Prefix, canary(c).Match.Path = "", &PathMatch{Exact: "/x", Regex: "/y.*"}
		}, mp + ".path", "", "exactly one of exact, regex"},
		{"path regex invalid", func(c *Config) {
			canary(c).Match.Prefix, canary(c).Match.Path = "", &PathMatch{Regex: "/(x"}
		}, mp + ".path.regex", "/(x", "missing closing )"},
		{"path regex not RE2", func(c *Config) {
			canary(c).Match.Prefix, canary(c).Match.Path = "", &PathMatch{Regex: `/(?=x)`}
		}, mp + ".path.regex", "/(?=x)", "RE2"},
		{"header two methods", func(c *Config) { canary(c).Match.Headers[0].Match.Prefix = "x" }, mp + ".headers[0].match", "", "exactly one of exact, prefix, suffix, regex, range"},
		{"header empty method", func(c *Config) { canary(c).Match.Headers[0].Match.Exact = "" }, mp + ".headers[0].match", "", "exactly one of"},
		{"header name", func(c *Config) { canary(c).Match.Headers[0].Name = "" }, mp + ".headers[0].name", "", "required"},
		{"header range", func(c *Config) {
			canary(c).Match.Headers[0].Match = &HeaderMatchMethod{Range: &MatchRange{Start: 5, End: 5}}
		}, mp + ".headers[0].match.range", "start 5, end 5", "start must be less than end"},
		{"header regex", func(c *Config) {
			canary(c).Match.Headers[0].Match = &HeaderMatchMethod{Regex: "a**"}
		}, mp + ".headers[0].match.regex", "a**", "invalid nested repetition operator"},
		{"method", func(c *Config) { canary(c).Match.Method = "FETCH" }, mp + ".method", "FETCH", "GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH"},
		{"scheme", func(c *Config) { canary(c).Match.Scheme = "ftp" }, mp + ".scheme", "ftp", "http, https"},

		// grpc
		{"grpc methodName without serviceName", func(c *Config) {
			g := toGRPC(c)
			g.Match = GRPCRouteMatch{MethodName: "Get"}
		}, "routes[0].spec.grpcRoute.match.methodName", "Get", "requires serviceName"},
		{"grpc metadata regex", func(c *Config) {
			toGRPC(c).Match.Metadata = []HeaderMatch{{Name: "m", Match: &HeaderMatchMethod{Regex: "("}}}
		}, "routes[0].spec.grpcRoute.match.metadata[0].match.regex", "(", "missing closing )"},

		// durations and retries
		{"duration unit", func(c *Config) {
			split(c).Timeout = &HTTPTimeout{PerRequest: &Duration{Unit: "min", Value: 1}}
		}, sp + ".timeout.perRequest.unit", "min", "ms, s"},
		{"negative duration", func(c *Config) {
			split(c).Timeout = &HTTPTimeout{Idle: &Duration{Unit: "s", Value: -1}}
		}, sp + ".timeout.idle.value", "-1", "negative"},
		{"negative maxRetries", func(c *Config) {
			split(c).RetryPolicy = &HTTPRetryPolicy{MaxRetries: -1, PerRetryTimeout: &Duration{Unit: "ms", Value: 100}}
		}, sp + ".retryPolicy.maxRetries", "-1", "negative"},
		{"perRetryTimeout required", func(c *Config) {
			split(c).RetryPolicy = &HTTPRetryPolicy{MaxRetries: 2, HTTPRetryEvents: []string{"server-error"}}
		}, sp + ".retryPolicy.perRetryTimeout", "", "required"},
		{"http retry event", func(c *Config) {
			split(c).RetryPolicy = &HTTPRetryPolicy{MaxRetries: 2, PerRetryTimeout: &Duration{Unit: "s", Value: 1}, HTTPRetryEvents: []string{"server-error", "5xx"}}
		}, sp + ".retryPolicy.httpRetryEvents[1]", "5xx", "server-error, gateway-error, client-error, stream-error"},
		{"tcp retry event", func(c *Config) {
			split(c).RetryPolicy = &HTTPRetryPolicy{MaxRetries: 2, PerRetryTimeout: &Duration{Unit: "s", Value: 1}, TCPRetryEvents: []string{"reset"}}
		}, sp + ".retryPolicy.tcpRetryEvents[0]", "reset", "connection-error"},
		{"grpc retry event", func(c *Config) {
			toGRPC(c).RetryPolicy = &GRPCRetryPolicy{MaxRetries: 1, PerRetryTimeout: &Duration{Unit: "s", Value: 1}, GRPCRetryEvents: []string{"aborted"}}
		}, "routes[0].spec.grpcRoute.retryPolicy.grpcRetryEvents[0]", "aborted", "cancelled, deadline-exceeded, internal, resource-exhausted, unavailable"},
		{"listener timeout block mismatch", func(c *Config) {
			listener0(c).Timeout = &ListenerTimeout{TCP: &TCPTimeout{Idle: &Duration{Unit: "s", Value: 1}}}
		}, lp + ".timeout.tcp", "", `does not fit listener protocol "http"`},

		// health checks
		{"health interval", func(c *Config) { listener0(c).HealthCheck = hc(func(h *HealthCheck) { h.IntervalMillis = 1000 }) }, lp + ".healthCheck.intervalMillis", "1000", "5000..300000"},
		{"health timeout", func(c *Config) { listener0(c).HealthCheck = hc(func(h *HealthCheck) { h.TimeoutMillis = 60001 }) }, lp + ".healthCheck.timeoutMillis", "60001", "2000..60000"},
		{"healthy threshold", func(c *Config) { listener0(c).HealthCheck = hc(func(h *HealthCheck) { h.HealthyThreshold = 1 }) }, lp + ".healthCheck.healthyThreshold", "1", "2..10"},
		{"unhealthy threshold", func(c *Config) { listener0(c).HealthCheck = hc(func(h *HealthCheck) { h.UnhealthyThreshold = 11 }) }, lp + ".healthCheck.unhealthyThreshold", "11", "2..10"},
		{"health protocol", func(c *Config) { listener0(c).HealthCheck = hc(func(h *HealthCheck) { h.Protocol = "icmp" }) }, lp + ".healthCheck.protocol", "icmp", "one of"},
		{"health path for http", func(c *Config) { listener0(c).HealthCheck = hc(func(h *HealthCheck) { h.Path = "" }) }, lp + ".healthCheck.path", "", "required for protocol http"},
		{"health port", func(c *Config) { listener0(c).HealthCheck = hc(func(h *HealthCheck) { h.Port = 65536 }) }, lp + ".healthCheck.port", "65536", "1..65535"},

		// outlier detection
		{"outlier maxServerErrors", func(c *Config) {
			listener0(c).OutlierDetection = od(func(o *OutlierDetection) { o.MaxServerErrors = 0 })
		}, lp + ".outlierDetection.maxServerErrors", "0", "at least 1"},
		{"outlier maxEjectionPercent", func(c *Config) {
			listener0(c).OutlierDetection = od(func(o *OutlierDetection) { o.MaxEjectionPercent = 101 })
		}, lp + ".outlierDetection.maxEjectionPercent", "101", "0..100"},
		{"outlier interval", func(c *Config) { listener0(c).OutlierDetection = od(func(o *OutlierDetection) { o.Interval = nil }) }, lp + ".outlierDetection.interval", "", "required"},
		{"outlier baseEjectionDuration", func(c *Config) {
			listener0(c).OutlierDetection = od(func(o *OutlierDetection) { o.BaseEjectionDuration = nil })
		}, lp + ".outlierDetection.baseEjectionDuration", "", "required"},
		{"outlier interval unit", func(c *Config) {
			listener0(c).OutlierDetection = od(func(o *OutlierDetection) { o.Interval = &Duration{Unit: "h", Value: 1} })
		}, lp + ".outlierDetection.interval.unit", "h", "ms, s"},

		// connection pools
		{"pool block mismatch", func(c *Config) {
			listener0(c).ConnectionPool = &ConnectionPool{TCP: &TCPConnectionPool{MaxConnections: 1}}
		}, lp + ".connectionPool.tcp", "", `does not fit listener protocol "http"`},
		{"pool empty", func(c *Config) { listener0(c).ConnectionPool = &ConnectionPool{} }, lp + ".connectionPool", "", `needs the "http" block`},
		{"pool http maxConnections", func(c *Config) {
			listener0(c).ConnectionPool = &ConnectionPool{HTTP: &HTTPConnectionPool{MaxConnections: 0}}
		}, lp + ".connectionPool.http.maxConnections", "0", "at least 1"},
		{"pool http maxPendingRequests", func(c *Config) {
			listener0(c).ConnectionPool = &ConnectionPool{HTTP: &HTTPConnectionPool{MaxConnections: 1, MaxPendingRequests: -3}}
		}, lp + ".connectionPool.http.maxPendingRequests", "-3", "at least 1"},
		{"pool grpc maxRequests", func(c *Config) {
			listener0(c).PortMapping.Protocol = ProtoGRPC
			listener0(c).ConnectionPool = &ConnectionPool{GRPC: &HTTP2ConnectionPool{}}
		}, lp + ".connectionPool.grpc.maxRequests", "0", "at least 1"},

		// service discovery
		{"discovery none set", func(c *Config) { c.VirtualNodes[1].Spec.ServiceDiscovery = &ServiceDiscovery{} }, "virtualNodes[1].spec.serviceDiscovery", "", "exactly one of dns, awsCloudMap, static"},
		{"discovery two set", func(c *Config) {
			c.VirtualNodes[1].Spec.ServiceDiscovery.DNS = &DNSServiceDiscovery{Hostname: "b.local"}
		}, "virtualNodes[1].spec.serviceDiscovery", "", "exactly one of"},
		{"dns hostname", func(c *Config) {
			c.VirtualNodes[1].Spec.ServiceDiscovery = &ServiceDiscovery{DNS: &DNSServiceDiscovery{}}
		}, "virtualNodes[1].spec.serviceDiscovery.dns.hostname", "", "required"},
		{"dns response type", func(c *Config) {
			c.VirtualNodes[1].Spec.ServiceDiscovery = &ServiceDiscovery{DNS: &DNSServiceDiscovery{Hostname: "b", ResponseType: "ALL"}}
		}, "virtualNodes[1].spec.serviceDiscovery.dns.responseType", "ALL", "LOADBALANCER, ENDPOINTS"},
		{"cloud map namespace", func(c *Config) {
			c.VirtualNodes[1].Spec.ServiceDiscovery = &ServiceDiscovery{AWSCloudMap: &CloudMapServiceDiscovery{ServiceName: "b"}}
		}, "virtualNodes[1].spec.serviceDiscovery.awsCloudMap.namespaceName", "", "required"},
		{"static endpoints empty", func(c *Config) { staticEP(c, nil) }, "virtualNodes[1].spec.serviceDiscovery.static.endpoints", "", "at least one endpoint"},
		{"static endpoint port zero", func(c *Config) { staticEP(c, []StaticEndpoint{{Address: "127.0.0.1:0"}}) }, "virtualNodes[1].spec.serviceDiscovery.static.endpoints[0].address", "127.0.0.1:0", "1..65535"},
		{"static endpoint port too big", func(c *Config) { staticEP(c, []StaticEndpoint{{Address: "h:99999"}}) }, "virtualNodes[1].spec.serviceDiscovery.static.endpoints[0].address", "h:99999", "1..65535"},
		{"static endpoint bad host", func(c *Config) { staticEP(c, []StaticEndpoint{{Address: "bad host:80"}}) }, "virtualNodes[1].spec.serviceDiscovery.static.endpoints[0].address", "bad host:80", "neither an IP address nor a DNS name"},
		{"static endpoint empty host", func(c *Config) { staticEP(c, []StaticEndpoint{{Address: ":80"}}) }, "virtualNodes[1].spec.serviceDiscovery.static.endpoints[0].address", ":80", "host is empty"},
		{"static endpoint too many colons", func(c *Config) { staticEP(c, []StaticEndpoint{{Address: "a:b:c"}}) }, "virtualNodes[1].spec.serviceDiscovery.static.endpoints[0].address", "a:b:c", "not a host[:port]"},
		{"static endpoint weight", func(c *Config) { staticEP(c, []StaticEndpoint{{Address: "h:1", Weight: 1001}}) }, "virtualNodes[1].spec.serviceDiscovery.static.endpoints[0].weight", "1001", "0..1000"},

		// tls
		{"tls mode", func(c *Config) { listener0(c).TLS = &ListenerTLS{Mode: "ON", Certificate: acm()} }, lp + ".tls.mode", "ON", "STRICT, PERMISSIVE, DISABLED"},
		{"tls two certificate sources", func(c *Config) {
			cert := acm()
			cert.File = &TLSFileCertificate{CertificateChain: "c", PrivateKey: "k"}
			listener0(c).TLS = &ListenerTLS{Mode: "STRICT", Certificate: cert}
		}, lp + ".tls.certificate", "", "exactly one of acm, file, sds"},
		{"tls strict without certificate", func(c *Config) { listener0(c).TLS = &ListenerTLS{Mode: "STRICT"} }, lp + ".tls.certificate", "", "required when mode is STRICT"},
		{"tls file key", func(c *Config) {
			listener0(c).TLS = &ListenerTLS{Mode: "STRICT", Certificate: &ListenerTLSCert{File: &TLSFileCertificate{CertificateChain: "c"}}}
		}, lp + ".tls.certificate.file.privateKey", "", "required"},
		{"tls validation trust sources", func(c *Config) {
			listener0(c).TLS = &ListenerTLS{Mode: "STRICT", Certificate: acm(), Validation: &ListenerTLSValidation{Trust: &TLSValidationTrust{}}}
		}, lp + ".tls.validation.trust", "", "exactly one of acm, file, sds"},
		{"client tls trust", func(c *Config) {
			c.VirtualNodes[0].Spec.BackendDefaults = &BackendDefaults{ClientPolicy: &ClientPolicy{TLS: &ClientTLS{}}}
		}, "virtualNodes[0].spec.backendDefaults.clientPolicy.tls.validation.trust", "", "exactly one of"},
		{"client tls port", func(c *Config) {
			c.VirtualNodes[0].Spec.Backends[0].VirtualService.ClientPolicy = &ClientPolicy{TLS: &ClientTLS{
				Ports:      []int{0},
				Validation: ClientTLSValidation{Trust: TLSValidationTrust{SDS: &TLSSDS{SecretName: "ca"}}},
			}}
		}, "virtualNodes[0].spec.backends[0].virtualService.clientPolicy.tls.ports[0]", "0", "1..65535"},

		// extensions and logging
		{"load balancing policy", func(c *Config) {
			c.VirtualNodes[1].Spec.LoadBalancing = &LoadBalancing{Policy: "FASTEST"}
		}, "virtualNodes[1].spec.loadBalancing.policy", "FASTEST", "LEAST_REQUEST, ROUND_ROBIN, RANDOM, RING_HASH, MAGLEV"},
		{"access log path", func(c *Config) {
			c.VirtualNodes[1].Spec.Logging = &Logging{AccessLog: &AccessLog{File: &FileAccessLog{}}}
		}, "virtualNodes[1].spec.logging.accessLog.file.path", "", "required"},
		{"access log unknown operator", func(c *Config) {
			c.VirtualNodes[0].Spec.Logging = accessLog(&AccessLogFormat{Text: "%PROTOCOL% x%FOO%"})
		}, "virtualNodes[0].spec.logging.accessLog.file.format.text", "", "unknown command operator %FOO% at 12"},
		{"access log malformed operator", func(c *Config) {
			c.VirtualNodes[0].Spec.Logging = accessLog(&AccessLogFormat{Text: "[%START_TIME%] %REQ(USER-AGENT"})
		}, "virtualNodes[0].spec.logging.accessLog.file.format.text", "", `malformed command operator %REQ(USER-AGENT at 15: missing ")"`},
		{"access log bad time specifier", func(c *Config) {
			c.VirtualNodes[0].Spec.Logging = accessLog(&AccessLogFormat{Text: "%START_TIME(%Q)%"})
		}, "virtualNodes[0].spec.logging.accessLog.file.format.text", "", "unsupported time specifier %Q"},
		{"access log json value operator", func(c *Config) {
			c.VirtualNodes[0].Spec.Logging = accessLog(&AccessLogFormat{JSON: []JSONFormatField{
				{Key: "code", Value: "%RESPONSE_CODE%"}, {Key: "ua", Value: "%REQ%"},
			}})
		}, "virtualNodes[0].spec.logging.accessLog.file.format.json[1].value", "", "malformed command operator %REQ% at 0: REQ needs a header name"},
		{"gateway access log operator", func(c *Config) {
			addGateway(c)
			c.VirtualGateways[0].Spec.Logging = accessLog(&AccessLogFormat{Text: "%BYTES%"})
		}, "virtualGateways[0].spec.logging.accessLog.file.format.text", "", "unknown command operator %BYTES% at 0"},

		// gateways
		{"gateway listener protocol", func(c *Config) {
			addGateway(c)
			c.VirtualGateways[0].Spec.Listeners[0].PortMapping.Protocol = ProtoTCP
		}, "virtualGateways[0].spec.listeners[0].portMapping.protocol", "tcp", "http, http2, grpc"},
		{"gateway without listeners", func(c *Config) {
			addGateway(c)
			c.VirtualGateways[0].Spec.Listeners = nil
		}, "virtualGateways[0].spec.listeners", "", "at least one listener"},
		{"duplicate gateway", func(c *Config) {
			addGateway(c)
			c.VirtualGateways = append(c.VirtualGateways, c.VirtualGateways[0])
		}, "virtualGateways[1].virtualGatewayName", "ingress", "duplicate"},
		{"gateway route target undefined", func(c *Config) {
			addGateway(c)
			c.GatewayRoutes[0].Spec.HTTPRoute.Action.Target.VirtualService.VirtualServiceName = "ghost.local"
		}, "gatewayRoutes[0].spec.httpRoute.action.target.virtualService.virtualServiceName", "ghost.local", "not defined"},
		{"gateway route gateway undefined", func(c *Config) {
			addGateway(c)
			c.GatewayRoutes[0].VirtualGatewayName = "egress"
		}, "gatewayRoutes[0].virtualGatewayName", "egress", "not defined"},
		{"gateway route name", func(c *Config) {
			addGateway(c)
			c.GatewayRoutes[0].GatewayRouteName = ""
		}, "gatewayRoutes[0].gatewayRouteName", "", "required"},
		{"gateway route kind", func(c *Config) {
			addGateway(c)
			c.GatewayRoutes[0].Spec.HTTPRoute = nil
		}, "gatewayRoutes[0].spec", "", "exactly one of httpRoute, http2Route, grpcRoute"},
		{"gateway route protocol", func(c *Config) {
			addGateway(c)
			c.GatewayRoutes[0].Spec.HTTP2Route, c.GatewayRoutes[0].Spec.HTTPRoute = c.GatewayRoutes[0].Spec.HTTPRoute, nil
		}, "gatewayRoutes[0].spec.http2Route", "", `a http2 route does not fit any listener protocol of virtual gateway "ingress"`},
		{"gateway route match port", func(c *Config) {
			addGateway(c)
			c.GatewayRoutes[0].Spec.HTTPRoute.Match.Port = 8443
		}, "gatewayRoutes[0].spec.httpRoute.match.port", "8443", "no listener on port 8443"},
		{"gateway hostname match", func(c *Config) {
			addGateway(c)
			c.GatewayRoutes[0].Spec.HTTPRoute.Match.Hostname = &HostnameMatch{}
		}, "gatewayRoutes[0].spec.httpRoute.match.hostname", "", "exactly one of exact, suffix"},
		{"gateway rewrite", func(c *Config) {
			addGateway(c)
			c.GatewayRoutes[0].Spec.HTTPRoute.Action.Rewrite = &GatewayHTTPRewrite{Prefix: &GatewayPrefixRewrite{DefaultPrefix: "ON"}}
		}, "gatewayRoutes[0].spec.httpRoute.action.rewrite.prefix.defaultPrefix", "ON", "ENABLED, DISABLED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := shop(t)
			tt.mut(c)
			err := c.Validate()
			if err == nil {
				t.Fatal("Validate accepted it")
			}
			var errs *Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error is %T, want *Errors", err)
			}
			for _, fe := range errs.List {
				if fe.Path != tt.path {
					continue
				}
				msg := fe.Error()
				if !strings.HasPrefix(msg, tt.path+": ") || !strings.Contains(msg, tt.msg) {
					continue
				}
				if tt.value != "" && (fe.Value != tt.value || !strings.Contains(msg, strconv.Quote(tt.value))) {
					continue
				}
				return
			}
			t.Fatalf("no error at %s with value %q and %q; got:\n%v", tt.path, tt.value, tt.msg, err)
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	tests := []struct {
		name string
		mut  func(c *Config)
	}{
		{"same route name in two routers", func(c *Config) {
			r := c.VirtualRouters[0]
			r.VirtualRouterName = "other-router"
			c.VirtualRouters = append(c.VirtualRouters, r)
			rt := c.Routes[0]
			rt.VirtualRouterName = "other-router"
			c.Routes = append(c.Routes, rt)
		}},
		{"resource meshName equal to the mesh", func(c *Config) { c.VirtualNodes[0].MeshName = "shop" }},
		{"cloud map target is left to the runtime", func(c *Config) {
			c.VirtualNodes[1].Spec.ServiceDiscovery = &ServiceDiscovery{AWSCloudMap: &CloudMapServiceDiscovery{NamespaceName: "shop.local", ServiceName: "backend"}}
		}},
		{"dns target", func(c *Config) {
			c.VirtualNodes[1].Spec.ServiceDiscovery = &ServiceDiscovery{DNS: &DNSServiceDiscovery{Hostname: "backend.shop.local", ResponseType: "ENDPOINTS"}}
		}},
		{"static endpoint forms", func(c *Config) {
			staticEP(c, []StaticEndpoint{{Address: "10.0.0.1"}, {Address: "[::1]:9001", Weight: 1000}, {Address: "::1"}, {Address: "backend-v1.shop.local:9001", Weight: 0}})
		}},
		{"several listeners with ports", func(c *Config) {
			c.VirtualNodes[1].Spec.Listeners = append(c.VirtualNodes[1].Spec.Listeners, Listener{PortMapping: PortMapping{Port: 9011, Protocol: ProtoHTTP}})
			split(c).Action.WeightedTargets[0].Port = 9001
			c.VirtualRouters[0].Spec.Listeners = append(c.VirtualRouters[0].Spec.Listeners, RouterListener{PortMapping: PortMapping{Port: 81, Protocol: ProtoTCP}})
			canary(c).Match.Port = 80
			split(c).Match.Port = 80
			c.Routes = append(c.Routes, Route{RouteName: "raw", VirtualRouterName: "backend-router", Spec: RouteSpec{
				TCPRoute: &TCPRoute{Match: &TCPRouteMatch{Port: 81}, Action: RouteAction{WeightedTargets: []WeightedTarget{{VirtualNode: "backend-v2", Weight: 1}}}},
			}})
		}},
		{"match on port alone", func(c *Config) { split(c).Match = HTTPRouteMatch{Port: 80} }},
		{"path match instead of prefix", func(c *Config) { split(c).Match = HTTPRouteMatch{Path: &PathMatch{Regex: `/api/v[0-9]+/.*`}} }},
		{"every header method", func(c *Config) {
			canary(c).Match.Headers = []HeaderMatch{
				{Name: "a"}, {Name: "b", Invert: true, Match: &HeaderMatchMethod{Prefix: "p"}},
				{Name: "c", Match: &HeaderMatchMethod{Suffix: "s"}}, {Name: "d", Match: &HeaderMatchMethod{Regex: "^x+$"}},
				{Name: "e", Match: &HeaderMatchMethod{Range: &MatchRange{Start: 1, End: 2}}},
			}
			canary(c).Match.Method = "PATCH"
			canary(c).Match.Scheme = "https"
		}},
		{"zero weight beside a positive one", func(c *Config) { split(c).Action.WeightedTargets[1].Weight = 0 }},
		{"grpc route with method", func(c *Config) {
			g := toGRPC(c)
			g.Match.MethodName = "Get"
			g.RetryPolicy = &GRPCRetryPolicy{MaxRetries: 0, PerRetryTimeout: &Duration{Unit: "ms", Value: 0}, GRPCRetryEvents: []string{"unavailable"}}
		}},
		{"resilience blocks", func(c *Config) {
			l := listener0(c)
			l.HealthCheck = hc(nil)
			l.OutlierDetection = od(nil)
			l.ConnectionPool = &ConnectionPool{HTTP: &HTTPConnectionPool{MaxConnections: 1}}
			l.Timeout = &ListenerTimeout{HTTP: &HTTPTimeout{PerRequest: &Duration{Unit: "s", Value: 15}}}
			l.TLS = &ListenerTLS{Mode: "DISABLED"}
			c.VirtualNodes[1].Spec.LoadBalancing = &LoadBalancing{Policy: LBRoundRobin}
		}},
		{"gateway", addGateway},
		{"access log formats", func(c *Config) {
			c.VirtualNodes[0].Spec.Logging = accessLog(nil) // Envoy's default format
			c.VirtualNodes[1].Spec.Logging = accessLog(&AccessLogFormat{
				Text: `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% 100%% %START_TIME(%s.%3f)%` + "\n",
			})
			c.VirtualNodes[2].Spec.Logging = accessLog(&AccessLogFormat{JSON: []JSONFormatField{
				{Key: "start", Value: "%START_TIME%"}, {Key: "code", Value: "%RESPONSE_CODE%"}, {Key: "ua", Value: "%REQ(USER-AGENT):64%"},
			}})
		}},
		{"service without provider", func(c *Config) {
			c.VirtualServices = append(c.VirtualServices, VirtualService{VirtualServiceName: "external.example.com"})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := shop(t)
			tt.mut(c)
			if err := c.Validate(); err != nil {
				t.Fatalf("Validate rejected it:\n%v", err)
			}
		})
	}
}

// TestValidateCollectsEverything checks that problems in unrelated places are all
// reported in one pass.
func TestValidateCollectsEverything(t *testing.T) {
	c := shop(t)
	c.Mesh.Spec.EgressFilter.Type = "NONE"
	listener0(c).PortMapping.Port = 0
	split(c).Action.WeightedTargets[0].Weight = 500
	canary(c).Match.Prefix = "x"
	err := c.Validate()
	var errs *Errors
	if !errors.As(err, &errs) || len(errs.List) != 4 {
		t.Fatalf("want 4 errors, got %v", err)
	}
	if lines := strings.Split(err.Error(), "\n"); len(lines) != 4 {
		t.Errorf("Error() should put one problem per line: %q", err.Error())
	}
}

func hc(mut func(*HealthCheck)) *HealthCheck {
	h := &HealthCheck{Protocol: ProtoHTTP, Path: "/ping", IntervalMillis: 5000, TimeoutMillis: 2000, HealthyThreshold: 2, UnhealthyThreshold: 2}
	if mut != nil {
		mut(h)
	}
	return h
}

func od(mut func(*OutlierDetection)) *OutlierDetection {
	o := &OutlierDetection{MaxServerErrors: 5, MaxEjectionPercent: 50,
		Interval: &Duration{Unit: "s", Value: 10}, BaseEjectionDuration: &Duration{Unit: "s", Value: 30}}
	if mut != nil {
		mut(o)
	}
	return o
}

func acm() *ListenerTLSCert {
	return &ListenerTLSCert{ACM: &TLSACMCertificate{CertificateArn: "arn:aws:acm:us-west-2:1:certificate/x"}}
}

func staticEP(c *Config, eps []StaticEndpoint) {
	c.VirtualNodes[1].Spec.ServiceDiscovery = &ServiceDiscovery{Static: &StaticServiceDiscovery{Endpoints: eps}}
}

// accessLog is a logging block writing to stdout in format f (nil: the default).
func accessLog(f *AccessLogFormat) *Logging {
	return &Logging{AccessLog: &AccessLog{File: &FileAccessLog{Path: "/dev/stdout", Format: f}}}
}

func addGateway(c *Config) {
	c.VirtualGateways = append(c.VirtualGateways, VirtualGateway{
		VirtualGatewayName: "ingress",
		Spec:               VirtualGatewaySpec{Listeners: []GatewayListener{{PortMapping: PortMapping{Port: 8080, Protocol: ProtoHTTP}}}},
	})
	c.GatewayRoutes = append(c.GatewayRoutes, GatewayRoute{
		GatewayRouteName:   "to-backend",
		VirtualGatewayName: "ingress",
		Spec: GatewayRouteSpec{HTTPRoute: &GatewayHTTPRoute{
			Match:  GatewayHTTPRouteMatch{Prefix: "/api"},
			Action: GatewayHTTPRouteAction{Target: GatewayTarget{VirtualService: VirtualServiceRef{VirtualServiceName: "backend.shop.local"}}},
		}},
	})
}

func TestValidateEmptyConfig(t *testing.T) {
	err := (&Config{}).Validate()
	if err == nil || err.Error() != "mesh.meshName: name is required" {
		t.Fatalf("empty config: %v", err)
	}
}

func ExampleConfig_Validate() {
	c, err := Parse([]byte(`
mesh: {meshName: shop}
virtualRouters:
  - virtualRouterName: r
    spec: {listeners: [{portMapping: {port: 80, protocol: http}}]}
routes:
  - routeName: a
    virtualRouterName: r
    spec:
      httpRoute:
        match: {prefix: /}
        action: {weightedTargets: [{virtualNode: backend, weight: 1}]}
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(c.Validate())
	// Output: routes[0].spec.httpRoute.action.weightedTargets[0].virtualNode: virtual node "backend" is not defined
}
