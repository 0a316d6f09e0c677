package config

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// corpusDir is ../shared/appmesh-corpus next to the repository root.
func corpusDir(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test file")
	}
	repoRoot := filepath.Dir(filepath.Dir(file)) // config/ is one level below the root
	return filepath.Join(repoRoot, "..", "shared", "appmesh-corpus")
}

// corpusKinds maps a MANIFEST kind to the Config list that holds it.
var corpusKinds = map[string]string{
	"mesh":           "mesh",
	"virtualNode":    "virtualNodes",
	"virtualService": "virtualServices",
	"virtualRouter":  "virtualRouters",
	"route":          "routes",
	"virtualGateway": "virtualGateways",
	"gatewayRoute":   "gatewayRoutes",
}

// TestCorpus parses every App Mesh resource of the public examples strictly and
// validates it once stubs exist for the names it refers to. The real App Mesh
// accepted each of them, so a failure here means a rule of ours is wrong.
func TestCorpus(t *testing.T) {
	checked := map[string]int{}
	for _, cf := range corpusFiles(t) {
		t.Run(cf.file, func(t *testing.T) {
			doc := `{"mesh": {"meshName": "corpus"}, "` + cf.list + `": [` + cf.raw + `]}`
			if cf.kind == "mesh" {
				doc = `{"mesh": ` + cf.raw + `}`
			}
			c, err := Parse([]byte(doc))
			if err != nil {
				t.Fatalf("%s (%s) does not parse:\n%v", cf.file, cf.kind, err)
			}
			addStubs(c)
			if err := c.Validate(); err != nil {
				t.Fatalf("%s (%s) does not validate:\n%v", cf.file, cf.kind, err)
			}
			checked[cf.kind]++
		})
	}
	checkCorpusCount(t, checked)
}

// TestCorpusDescribeForm reads every corpus resource as `aws appmesh describe-*`
// prints it (wrapped under its kind, with metadata and status), alone and all of them
// as one >> stream of describe outputs.
func TestCorpusDescribeForm(t *testing.T) {
	checked := map[string]int{}
	for _, cf := range corpusFiles(t) {
		t.Run(cf.file, func(t *testing.T) {
			c, err := Parse([]byte(describeOut(cf.kind, cf.raw)))
			if err != nil {
				t.Fatalf("%s (%s) does not parse as describe output:\n%v", cf.file, cf.kind, err)
			}
			addStubs(c)
			if err := c.Validate(); err != nil {
				t.Fatalf("%s (%s) does not validate:\n%v", cf.file, cf.kind, err)
			}
			checked[cf.kind]++
		})
	}
	checkCorpusCount(t, checked)
}

type corpusFile struct {
	file, kind, list, raw string
}

// corpusFiles lists the corpus resources of MANIFEST.tsv with their JSON.
func corpusFiles(t *testing.T) []corpusFile {
	t.Helper()
	dir := corpusDir(t)
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		// CI checks shared/ out beside the clone, so a missing corpus there is a broken
		// setup, not an optional extra.
		if os.Getenv("CI") != "" {
			t.Fatalf("App Mesh corpus not found at %s, and CI is set: CI must provide ../shared beside the clone", dir)
		}
		t.Skipf("App Mesh corpus not found at %s; the compatibility test needs it (it fails instead when CI is set)", dir)
	}
	f, err := os.Open(filepath.Join(dir, "MANIFEST.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var out []corpusFile
	header := true
	for sc.Scan() {
		if header {
			header = false
			continue
		}
		cols := strings.Split(sc.Text(), "\t")
		if len(cols) < 2 {
			continue
		}
		file, kind := cols[0], cols[1]
		list, ok := corpusKinds[kind]
		if !ok {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, corpusFile{file: file, kind: kind, list: list, raw: string(raw)})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func checkCorpusCount(t *testing.T, checked map[string]int) {
	t.Helper()
	total := 0
	for _, n := range checked {
		total += n
	}
	if total < 100 {
		t.Errorf("only %d corpus files checked (%v); the manifest lists 121", total, checked)
	}
	t.Logf("corpus files validated: %v", checked)
}

// addStubs gives a lone corpus resource a name and the mesh, nodes, services,
// routers and gateways it refers to, shaped so they fit its protocol and ports.
func addStubs(c *Config) {
	// The resource's own meshName, if any, names the mesh.
	for _, m := range []ResourceMeta{
		firstMeta(c.VirtualNodes, func(n VirtualNode) ResourceMeta { return n.ResourceMeta }),
		firstMeta(c.VirtualServices, func(n VirtualService) ResourceMeta { return n.ResourceMeta }),
		firstMeta(c.VirtualRouters, func(n VirtualRouter) ResourceMeta { return n.ResourceMeta }),
		firstMeta(c.Routes, func(n Route) ResourceMeta { return n.ResourceMeta }),
		firstMeta(c.VirtualGateways, func(n VirtualGateway) ResourceMeta { return n.ResourceMeta }),
		firstMeta(c.GatewayRoutes, func(n GatewayRoute) ResourceMeta { return n.ResourceMeta }),
	} {
		if m.MeshName != "" {
			c.Mesh.MeshName = m.MeshName
		}
	}
	if c.Mesh.MeshName == "" {
		c.Mesh.MeshName = "corpus"
	}
	s := &stubber{c: c, nodePorts: map[string]map[int]string{}}
	for i := range c.VirtualNodes {
		n := &c.VirtualNodes[i]
		if n.VirtualNodeName == "" {
			n.VirtualNodeName = "corpus-node"
		}
		for _, b := range n.Spec.Backends {
			if b.VirtualService != nil {
				s.service(b.VirtualService.VirtualServiceName)
			}
		}
	}
	for i := range c.VirtualServices {
		vs := &c.VirtualServices[i]
		if vs.VirtualServiceName == "" {
			vs.VirtualServiceName = "corpus-service"
		}
		if p := vs.Spec.Provider; p != nil {
			if p.VirtualNode != nil {
				s.nodePort(p.VirtualNode.VirtualNodeName, 8080, ProtoHTTP)
			}
			if p.VirtualRouter != nil {
				s.routerPort(p.VirtualRouter.VirtualRouterName, 80, ProtoHTTP)
			}
		}
	}
	for i := range c.VirtualRouters {
		if c.VirtualRouters[i].VirtualRouterName == "" {
			c.VirtualRouters[i].VirtualRouterName = "corpus-router"
		}
	}
	for i := range c.Routes {
		r := &c.Routes[i]
		if r.RouteName == "" {
			r.RouteName = "corpus-route"
		}
		if r.VirtualRouterName == "" {
			r.VirtualRouterName = "corpus-router"
		}
		proto, port, action := routeShape(&r.Spec)
		if port == 0 {
			port = 80
		}
		s.routerPort(r.VirtualRouterName, port, proto)
		if action != nil {
			for _, wt := range action.WeightedTargets {
				p := wt.Port
				if p == 0 {
					p = 8080
				}
				s.nodePort(wt.VirtualNode, p, proto)
			}
		}
	}
	for i := range c.VirtualGateways {
		if c.VirtualGateways[i].VirtualGatewayName == "" {
			c.VirtualGateways[i].VirtualGatewayName = "corpus-gateway"
		}
	}
	for i := range c.GatewayRoutes {
		r := &c.GatewayRoutes[i]
		if r.GatewayRouteName == "" {
			r.GatewayRouteName = "corpus-gateway-route"
		}
		if r.VirtualGatewayName == "" {
			r.VirtualGatewayName = "corpus-gateway"
		}
		proto, port := ProtoHTTP, 0
		var target *GatewayTarget
		switch sp := &r.Spec; {
		case sp.HTTPRoute != nil:
			port, target = sp.HTTPRoute.Match.Port, &sp.HTTPRoute.Action.Target
		case sp.HTTP2Route != nil:
			proto, port, target = ProtoHTTP2, sp.HTTP2Route.Match.Port, &sp.HTTP2Route.Action.Target
		case sp.GRPCRoute != nil:
			proto, port, target = ProtoGRPC, sp.GRPCRoute.Match.Port, &sp.GRPCRoute.Action.Target
		}
		if port == 0 {
			port = 8080
		}
		s.gatewayPort(r.VirtualGatewayName, port, proto)
		if target != nil {
			s.service(target.VirtualService.VirtualServiceName)
		}
	}
	s.flushNodes()
}

func firstMeta[T any](list []T, meta func(T) ResourceMeta) ResourceMeta {
	if len(list) == 0 {
		return ResourceMeta{}
	}
	return meta(list[0])
}

// routeShape returns a route's protocol, match port and action.
func routeShape(s *RouteSpec) (string, int, *RouteAction) {
	switch {
	case s.HTTPRoute != nil:
		return ProtoHTTP, s.HTTPRoute.Match.Port, &s.HTTPRoute.Action
	case s.HTTP2Route != nil:
		return ProtoHTTP2, s.HTTP2Route.Match.Port, &s.HTTP2Route.Action
	case s.GRPCRoute != nil:
		return ProtoGRPC, s.GRPCRoute.Match.Port, &s.GRPCRoute.Action
	case s.TCPRoute != nil:
		port := 0
		if s.TCPRoute.Match != nil {
			port = s.TCPRoute.Match.Port
		}
		return ProtoTCP, port, &s.TCPRoute.Action
	}
	return ProtoHTTP, 0, nil
}

type stubber struct {
	c *Config
	// nodePorts collects the listeners each stub node needs, port → protocol.
	nodePorts map[string]map[int]string
	nodeOrder []string
}

func (s *stubber) service(name string) {
	if name == "" || s.c.VirtualService(name) != nil {
		return
	}
	s.c.VirtualServices = append(s.c.VirtualServices, VirtualService{VirtualServiceName: name})
}

func (s *stubber) nodePort(name string, port int, proto string) {
	if name == "" || s.c.VirtualNode(name) != nil {
		return
	}
	if s.nodePorts[name] == nil {
		s.nodePorts[name] = map[int]string{}
		s.nodeOrder = append(s.nodeOrder, name)
	}
	s.nodePorts[name][port] = proto
}

func (s *stubber) flushNodes() {
	for _, name := range s.nodeOrder {
		n := VirtualNode{VirtualNodeName: name}
		for port, proto := range s.nodePorts[name] {
			n.Spec.Listeners = append(n.Spec.Listeners, Listener{PortMapping: PortMapping{Port: port, Protocol: proto}})
		}
		n.Spec.ServiceDiscovery = &ServiceDiscovery{Static: &StaticServiceDiscovery{
			Endpoints: []StaticEndpoint{{Address: "127.0.0.1"}},
		}}
		s.c.VirtualNodes = append(s.c.VirtualNodes, n)
	}
}

func (s *stubber) routerPort(name string, port int, proto string) {
	r := s.c.VirtualRouter(name)
	if r == nil {
		s.c.VirtualRouters = append(s.c.VirtualRouters, VirtualRouter{VirtualRouterName: name})
		r = &s.c.VirtualRouters[len(s.c.VirtualRouters)-1]
	} else if len(r.Spec.Listeners) > 0 {
		return // a corpus router keeps its own listeners
	}
	r.Spec.Listeners = append(r.Spec.Listeners, RouterListener{PortMapping: PortMapping{Port: port, Protocol: proto}})
}

func (s *stubber) gatewayPort(name string, port int, proto string) {
	if s.c.VirtualGateway(name) != nil {
		return
	}
	s.c.VirtualGateways = append(s.c.VirtualGateways, VirtualGateway{
		VirtualGatewayName: name,
		Spec:               VirtualGatewaySpec{Listeners: []GatewayListener{{PortMapping: PortMapping{Port: port, Protocol: proto}}}},
	})
}
