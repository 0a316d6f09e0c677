// Package meshgen writes mesh configs of a chosen size in meshd's layout (JSON), the
// shape of issue 17's scale target: R virtual routers of N HTTP routes each (a prefix
// and a header match per route, two weighted targets), the virtual services they
// provide, their target nodes, and one client node whose backends are every service.
// The config package's tests, the router's benchmarks and meshbench's `--scale`
// scenario all measure the same shape through it. It imports only the standard library
// so any package's tests may use it.
package meshgen

import (
	"bytes"
	"strconv"
)

// Spec is the shape of a generated mesh.
type Spec struct {
	// Routers and RoutesPerRouter: Routers × RoutesPerRouter routes in all.
	Routers, RoutesPerRouter int
	// Client is the name of the node whose backends are every service ("front" if empty).
	Client string
	// ClientPort is the client node's own listener port (9000 if 0).
	ClientPort int
	// UpstreamHost and UpstreamPort are where every target node's endpoints are: the
	// node svcR-vK is found at UpstreamHost (default "127.0.0.1") on UpstreamPort (8080 if
	// 0), the port of its listener.
	UpstreamHost string
	UpstreamPort int
	// WeightV1 is the weight of each route's first target (v1) out of 100; the second
	// (v2) gets the rest. 0 means 90. A reload test rewrites the config with another.
	WeightV1 int
}

// Routes is the number of routes the spec generates.
func (s Spec) Routes() int { return s.Routers * s.RoutesPerRouter }

// Service is the virtual service name of router r.
func Service(r int) string { return "svc" + strconv.Itoa(r) + ".local" }

// Prefix is the path prefix of route i of any router; the trailing slash keeps "/p1/"
// from being a prefix of "/p10/", so exactly one route's prefix matches a request path.
func Prefix(i int) string { return "/p" + strconv.Itoa(i) + "/" }

// HeaderName is the header every route matches on, and HeaderValue(i) its value for
// route i: a request matches route i of router r when its Host is Service(r), its path
// starts with Prefix(i) and it carries HeaderName: HeaderValue(i).
const HeaderName = "x-canary"

// HeaderValue is the header value route i matches exactly.
func HeaderValue(i int) string { return "v" + strconv.Itoa(i) }

// RouteName is the name of route i of router r.
func RouteName(r, i int) string { return "r" + strconv.Itoa(r) + "-" + strconv.Itoa(i) }

// JSON writes the mesh in meshd's layout.
func (s Spec) JSON() []byte {
	client := s.Client
	if client == "" {
		client = "front"
	}
	cport := s.ClientPort
	if cport == 0 {
		cport = 9000
	}
	host := s.UpstreamHost
	if host == "" {
		host = "127.0.0.1"
	}
	uport := s.UpstreamPort
	if uport == 0 {
		uport = 8080
	}
	w1 := s.WeightV1
	if w1 == 0 {
		w1 = 90
	}
	var b bytes.Buffer
	b.Grow(320 * (s.Routes() + 1))
	b.WriteString(`{"mesh": {"meshName": "scale"}, "virtualNodes": [`)
	b.WriteString(`{"virtualNodeName": "` + client + `", "spec": {"listeners": [{"portMapping": {"port": ` + strconv.Itoa(cport) + `, "protocol": "http"}}], "backends": [`)
	for r := range s.Routers {
		if r > 0 {
			b.WriteString(", ")
		}
		b.WriteString(`{"virtualService": {"virtualServiceName": "` + Service(r) + `"}}`)
	}
	b.WriteString(`]}}`)
	for r := range s.Routers {
		for _, v := range []string{"v1", "v2"} {
			b.WriteString(`, {"virtualNodeName": "svc` + strconv.Itoa(r) + `-` + v + `", "spec": {"listeners": [{"portMapping": {"port": ` +
				strconv.Itoa(uport) + `, "protocol": "http"}}], "serviceDiscovery": {"dns": {"hostname": "` + host + `"}}}}`)
		}
	}
	b.WriteString(`], "virtualServices": [`)
	for r := range s.Routers {
		if r > 0 {
			b.WriteString(", ")
		}
		b.WriteString(`{"virtualServiceName": "` + Service(r) + `", "spec": {"provider": {"virtualRouter": {"virtualRouterName": "vr` + strconv.Itoa(r) + `"}}}}`)
	}
	b.WriteString(`], "virtualRouters": [`)
	for r := range s.Routers {
		if r > 0 {
			b.WriteString(", ")
		}
		b.WriteString(`{"virtualRouterName": "vr` + strconv.Itoa(r) + `", "spec": {"listeners": [{"portMapping": {"port": ` + strconv.Itoa(uport) + `, "protocol": "http"}}]}}`)
	}
	b.WriteString(`], "routes": [`)
	for r := range s.Routers {
		rs := strconv.Itoa(r)
		for i := range s.RoutesPerRouter {
			if r > 0 || i > 0 {
				b.WriteString(",\n")
			}
			b.WriteString(`{"routeName": "` + RouteName(r, i) + `", "virtualRouterName": "vr` + rs + `", "spec": {"priority": ` + strconv.Itoa(min(i, 1000)) +
				`, "httpRoute": {"match": {"prefix": "` + Prefix(i) + `", "headers": [{"name": "` + HeaderName + `", "match": {"exact": "` + HeaderValue(i) + `"}}]}, ` +
				`"action": {"weightedTargets": [{"virtualNode": "svc` + rs + `-v1", "weight": ` + strconv.Itoa(w1) + `}, {"virtualNode": "svc` + rs + `-v2", "weight": ` + strconv.Itoa(100-w1) + `}]}}}}`)
		}
	}
	b.WriteString("]}\n")
	return b.Bytes()
}
