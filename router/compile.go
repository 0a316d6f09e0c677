package router

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshd/meshd/config"
)

// compiler holds the per-Compile lookups. The config's own lookups (config.VirtualNode
// etc.) are not used so that router depends on the model only.
type compiler struct {
	cfg      *config.Config
	nodes    map[string]*config.VirtualNode
	services map[string]*config.VirtualService
	routers  map[string]*config.VirtualRouter
	clusters map[string]ClusterRef
	opts     Options
	// routesOf lists each router's routes (indexes into cfg.Routes, file order), built
	// once: finding them by a scan of every route per router made compiling R routers
	// of N routes cost R×R×N.
	routesOf map[string][]int
}

// Options change how CompileWith builds a table. The zero value is Compile's.
type Options struct {
	// OwnCluster, when set, is asked for every (backend virtual service, target cluster)
	// pair an egress route reaches; true gives the pair a cluster of its own, named
	// "<cluster>@<service>" with ClusterRef.Service set, instead of the cluster that
	// every service reaching the target shares. A client policy that originates TLS
	// needs it: the connections carry the service's name as SNI and its policy's
	// certificates, so they cannot be pooled with another service's.
	OwnCluster func(service string, target ClusterRef) bool
}

// Compile builds node's routing table from cfg, which should have passed config.Validate.
// It is called once per config snapshot, off the request path. Errors name the node,
// backend, service, router, route or field at fault and wrap ErrUnknownReference for a
// name the config does not define. cfg is retained (ClusterRef points into it) and must
// not be mutated afterwards.
func Compile(cfg *config.Config, node string) (*Table, error) {
	return CompileWith(cfg, node, Options{})
}

// CompileWith is Compile with options.
func CompileWith(cfg *config.Config, node string, opts Options) (*Table, error) {
	if cfg == nil {
		return nil, fmt.Errorf("router: compile node %q: nil config", node)
	}
	c := &compiler{
		cfg:      cfg,
		nodes:    make(map[string]*config.VirtualNode, len(cfg.VirtualNodes)),
		services: make(map[string]*config.VirtualService, len(cfg.VirtualServices)),
		routers:  make(map[string]*config.VirtualRouter, len(cfg.VirtualRouters)),
		clusters: make(map[string]ClusterRef),
		opts:     opts,
	}
	for i := range cfg.VirtualNodes {
		c.nodes[cfg.VirtualNodes[i].VirtualNodeName] = &cfg.VirtualNodes[i]
	}
	for i := range cfg.VirtualServices {
		c.services[cfg.VirtualServices[i].VirtualServiceName] = &cfg.VirtualServices[i]
	}
	for i := range cfg.VirtualRouters {
		c.routers[cfg.VirtualRouters[i].VirtualRouterName] = &cfg.VirtualRouters[i]
	}
	vn := c.nodes[node]
	if vn == nil {
		return nil, fmt.Errorf("router: virtualNode %q: %w: not defined in mesh %q", node, ErrUnknownReference, cfg.Mesh.MeshName)
	}
	t := &Table{
		node:    node,
		byHost:  make(map[string]*Service),
		ingress: make(map[int]*Service),
	}
	for i, b := range vn.Spec.Backends {
		if b.VirtualService == nil {
			continue
		}
		name := b.VirtualService.VirtualServiceName
		key := strings.ToLower(strings.TrimSuffix(name, "."))
		if _, dup := t.byHost[key]; dup {
			continue
		}
		s, err := c.service(name)
		if err != nil {
			return nil, fmt.Errorf("router: virtualNode %q: spec.backends[%d].virtualService.virtualServiceName: %w", node, i, err)
		}
		t.services = append(t.services, s)
		t.byHost[key] = s
		t.egressPorts = append(t.egressPorts, s.Ports...)
	}
	t.egressPorts = sortedUnique(t.egressPorts)
	for i := range vn.Spec.Listeners {
		l := &vn.Spec.Listeners[i]
		port := l.PortMapping.Port
		if _, dup := t.ingress[port]; dup {
			return nil, fmt.Errorf("router: virtualNode %q: spec.listeners[%d].portMapping.port %d: duplicate listener port", node, i, port)
		}
		t.ingress[port] = c.ingressService(node, l)
	}
	t.numberRoutes()
	t.clusters = make([]ClusterRef, 0, len(c.clusters))
	for _, cr := range c.clusters {
		t.clusters = append(t.clusters, cr)
	}
	slices.SortFunc(t.clusters, func(a, b ClusterRef) int { return strings.Compare(a.Name, b.Name) })
	return t, nil
}

// numberRoutes gives every route its ID and lists it in t.routes: egress services in
// backend order, then the ingress listeners by ascending port.
func (t *Table) numberRoutes() {
	add := func(s *Service) {
		for _, rt := range s.Routes {
			rt.ID = len(t.routes)
			t.routes = append(t.routes, rt)
		}
	}
	for _, s := range t.services {
		add(s)
	}
	ports := make([]int, 0, len(t.ingress))
	for p := range t.ingress {
		ports = append(ports, p)
	}
	slices.Sort(ports)
	for _, p := range ports {
		add(t.ingress[p])
	}
}

// service compiles one virtual service from its provider.
func (c *compiler) service(name string) (*Service, error) {
	vs := c.services[name]
	if vs == nil {
		return nil, fmt.Errorf("virtualService %q: %w: not defined in the mesh", name, ErrUnknownReference)
	}
	s := &Service{Name: name}
	p := vs.Spec.Provider
	switch {
	case p == nil || (p.VirtualNode == nil && p.VirtualRouter == nil):
		// App Mesh accepts a service without a provider; it is reachable by name but
		// has nowhere to go, so Match returns nil and the proxy answers accordingly.
		return s, nil
	case p.VirtualRouter != nil:
		if err := c.routerService(s, p.VirtualRouter.VirtualRouterName); err != nil {
			return nil, fmt.Errorf("virtualService %q: spec.provider.virtualRouter: %w", name, err)
		}
	default:
		if err := c.nodeService(s, p.VirtualNode.VirtualNodeName); err != nil {
			return nil, fmt.Errorf("virtualService %q: spec.provider.virtualNode: %w", name, err)
		}
	}
	return s, nil
}

// routerService fills s with the virtual router's listener ports and its routes in
// priority order.
func (c *compiler) routerService(s *Service, routerName string) error {
	vr := c.routers[routerName]
	if vr == nil {
		return fmt.Errorf("virtualRouter %q: %w: not defined in the mesh", routerName, ErrUnknownReference)
	}
	for _, l := range vr.Spec.Listeners {
		if s.Protocol == "" {
			s.Protocol = l.PortMapping.Protocol
		}
		s.Ports = append(s.Ports, l.PortMapping.Port)
	}
	s.Ports = sortedUnique(s.Ports)
	type indexed struct {
		i  int
		rt *config.Route
	}
	if c.routesOf == nil {
		c.routesOf = make(map[string][]int, len(c.routers))
		for i := range c.cfg.Routes {
			name := c.cfg.Routes[i].VirtualRouterName
			c.routesOf[name] = append(c.routesOf[name], i)
		}
	}
	rs := make([]indexed, 0, len(c.routesOf[routerName]))
	for _, i := range c.routesOf[routerName] {
		rs = append(rs, indexed{i, &c.cfg.Routes[i]})
	}
	// Lower priority number first; routes without one after every prioritized route;
	// ties keep file order (stable sort).
	slices.SortStableFunc(rs, func(a, b indexed) int {
		pa, pb := a.rt.Spec.Priority, b.rt.Spec.Priority
		switch {
		case pa == nil && pb == nil:
			return 0
		case pa == nil:
			return 1
		case pb == nil:
			return -1
		}
		return cmp.Compare(*pa, *pb)
	})
	s.Routes = slices.Grow(s.Routes, len(rs))
	for _, x := range rs {
		rt, err := c.route(s.Name, x.rt)
		if err != nil {
			return fmt.Errorf("virtualRouter %q: routes[%d] %q: %w", routerName, x.i, x.rt.RouteName, err)
		}
		s.Routes = append(s.Routes, rt)
	}
	s.idx = newPrefixIndex(s.Routes)
	return nil
}

// nodeService fills s for a virtualNode provider: one catch-all route per listener port
// (filtered on that port) plus a final catch-all to the first listener, so a request whose
// port is unknown still routes. A single-listener node gets just the catch-all.
func (c *compiler) nodeService(s *Service, nodeName string) error {
	vn := c.nodes[nodeName]
	if vn == nil {
		return fmt.Errorf("virtualNode %q: %w: not defined in the mesh", nodeName, ErrUnknownReference)
	}
	ls := vn.Spec.Listeners
	if len(ls) == 0 {
		return fmt.Errorf("virtualNode %q: spec.listeners: empty; a provider node needs a listener", nodeName)
	}
	s.Protocol = ls[0].PortMapping.Protocol
	for _, l := range ls {
		s.Ports = append(s.Ports, l.PortMapping.Port)
	}
	s.Ports = sortedUnique(s.Ports)
	synth := func(l *config.Listener, name string, port int) *Route {
		cl := c.addCluster(vn, l, s.Name)
		per, idle := listenerTimeouts(l)
		rt := &Route{
			Name:              name,
			Service:           s.Name,
			Kind:              l.PortMapping.Protocol,
			Targets:           []Target{{Cluster: cl, Weight: 1}},
			PerRequestTimeout: per,
			IdleTimeout:       idle,
			m:                 matcher{kind: synthKind(l.PortMapping.Protocol), port: port},
		}
		if rt.m.kind == kindTCP {
			rt.tcpPrt, rt.m.port = port, 0
		}
		rt.setWeights()
		return rt
	}
	if len(ls) > 1 {
		for i := range ls {
			p := ls[i].PortMapping.Port
			s.Routes = append(s.Routes, synth(&ls[i], "provider:"+nodeName+":"+strconv.Itoa(p), p))
		}
	}
	s.Routes = append(s.Routes, synth(&ls[0], "provider:"+nodeName, 0))
	return nil
}

// ingressService is the node's own listener: one catch-all route to the local app.
func (c *compiler) ingressService(node string, l *config.Listener) *Service {
	port := l.PortMapping.Port
	name := "ingress:" + strconv.Itoa(port)
	cl := "local:" + strconv.Itoa(port)
	c.clusters[cl] = ClusterRef{
		Name:     cl,
		Node:     node,
		Port:     port,
		Protocol: l.PortMapping.Protocol,
		Local:    true,
		Listener: l,
	}
	per, idle := listenerTimeouts(l)
	rt := &Route{
		Name:              name,
		Service:           name,
		Kind:              l.PortMapping.Protocol,
		Targets:           []Target{{Cluster: cl, Weight: 1}},
		PerRequestTimeout: per,
		IdleTimeout:       idle,
		m:                 matcher{kind: synthKind(l.PortMapping.Protocol)},
	}
	rt.setWeights()
	return &Service{Name: name, Protocol: l.PortMapping.Protocol, Ports: []int{port}, Routes: []*Route{rt}}
}

// route compiles one config route for service svc. Errors name the field.
func (c *compiler) route(svc string, cr *config.Route) (*Route, error) {
	sp := &cr.Spec
	n := 0
	for _, set := range []bool{sp.HTTPRoute != nil, sp.HTTP2Route != nil, sp.GRPCRoute != nil, sp.TCPRoute != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, fmt.Errorf("spec: %d of httpRoute, http2Route, grpcRoute, tcpRoute are set; set exactly one", n)
	}
	rt := &Route{Name: cr.RouteName, Service: svc}
	var (
		action *config.RouteAction
		field  string
		err    error
	)
	switch {
	case sp.HTTPRoute != nil, sp.HTTP2Route != nil:
		h, kind := sp.HTTPRoute, kindHTTP
		rt.Kind, field = config.ProtoHTTP, "spec.httpRoute"
		if h == nil {
			h, kind = sp.HTTP2Route, kindHTTP2
			rt.Kind, field = config.ProtoHTTP2, "spec.http2Route"
		}
		if rt.m, err = compileHTTPMatch(&h.Match, field); err != nil {
			return nil, err
		}
		rt.m.kind = kind
		action, rt.HTTPRetry, rt.RateLimit = &h.Action, h.RetryPolicy, h.RateLimit
		rt.Headers = compileHeaderRules(h.Headers, false)
		if h.Timeout != nil {
			rt.PerRequestTimeout, rt.IdleTimeout = h.Timeout.PerRequest.D(), h.Timeout.Idle.D()
		}
	case sp.GRPCRoute != nil:
		g := sp.GRPCRoute
		rt.Kind, field = config.ProtoGRPC, "spec.grpcRoute"
		if rt.m, err = compileGRPCMatch(&g.Match, field); err != nil {
			return nil, err
		}
		action, rt.GRPCRetry, rt.RateLimit = &g.Action, g.RetryPolicy, g.RateLimit
		rt.Headers = compileHeaderRules(g.Headers, false)
		if g.Timeout != nil {
			rt.PerRequestTimeout, rt.IdleTimeout = g.Timeout.PerRequest.D(), g.Timeout.Idle.D()
		}
	default:
		tc := sp.TCPRoute
		rt.Kind, field = config.ProtoTCP, "spec.tcpRoute"
		rt.m.kind = kindTCP
		if tc.Match != nil {
			rt.tcpPrt = tc.Match.Port
		}
		action = &tc.Action
		if tc.Timeout != nil {
			rt.IdleTimeout = tc.Timeout.Idle.D()
		}
	}
	if len(action.WeightedTargets) == 0 {
		return nil, fmt.Errorf("%s.action.weightedTargets: empty", field)
	}
	rt.Targets = make([]Target, 0, len(action.WeightedTargets))
	for i, wt := range action.WeightedTargets {
		f := func() string { return fmt.Sprintf("%s.action.weightedTargets[%d]", field, i) }
		if wt.Weight < 0 || int64(wt.Weight) > 1<<32-1 {
			return nil, fmt.Errorf("%s.weight %d: out of range", f(), wt.Weight)
		}
		cl, err := c.targetCluster(svc, wt)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f(), err)
		}
		rt.Targets = append(rt.Targets, Target{Cluster: cl, Weight: uint32(wt.Weight)})
	}
	if m := action.Mirror; m != nil && rt.Kind != config.ProtoTCP {
		// The mirror's cluster is compiled as a weighted target's, so it exists in the
		// table (and gets a client policy's TLS) like any other.
		cl, err := c.targetCluster(svc, config.WeightedTarget{VirtualNode: m.VirtualNode, Port: m.Port})
		if err != nil {
			return nil, fmt.Errorf("%s.action.mirror: %w", field, err)
		}
		rt.Mirror = &Mirror{Cluster: cl, Percent: m.Percent}
	}
	rt.setWeights()
	return rt, nil
}

// targetCluster resolves a weighted target of service svc to its cluster name,
// registering the cluster.
func (c *compiler) targetCluster(svc string, wt config.WeightedTarget) (string, error) {
	vn := c.nodes[wt.VirtualNode]
	if vn == nil {
		return "", fmt.Errorf("virtualNode %q: %w: not defined in the mesh", wt.VirtualNode, ErrUnknownReference)
	}
	ls := vn.Spec.Listeners
	if wt.Port == 0 {
		switch len(ls) {
		case 0:
			return "", fmt.Errorf("virtualNode %q: has no listener to route to", wt.VirtualNode)
		case 1:
			return c.addCluster(vn, &ls[0], svc), nil
		default:
			return "", fmt.Errorf("virtualNode %q has %d listeners: port must name one", wt.VirtualNode, len(ls))
		}
	}
	for i := range ls {
		if ls[i].PortMapping.Port == wt.Port {
			return c.addCluster(vn, &ls[i], svc), nil
		}
	}
	return "", fmt.Errorf("port %d: %w: virtualNode %q has no listener on it", wt.Port, ErrUnknownReference, wt.VirtualNode)
}

// addCluster registers the cluster through which service svc reaches node vn's
// listener l and returns its name: the node name when the node has a single listener,
// else "node:port"; followed by "@<svc>" when Options.OwnCluster gives the pair a cluster
// of its own.
func (c *compiler) addCluster(vn *config.VirtualNode, l *config.Listener, svc string) string {
	name := vn.VirtualNodeName
	if len(vn.Spec.Listeners) > 1 {
		name += ":" + strconv.Itoa(l.PortMapping.Port)
	}
	lb := ""
	if vn.Spec.LoadBalancing != nil {
		lb = vn.Spec.LoadBalancing.Policy
	}
	ref := ClusterRef{
		Name:      name,
		Node:      vn.VirtualNodeName,
		Port:      l.PortMapping.Port,
		Protocol:  l.PortMapping.Protocol,
		Listener:  l,
		Discovery: vn.Spec.ServiceDiscovery,
		LBPolicy:  lb,
		LB:        vn.Spec.LoadBalancing,
	}
	if c.opts.OwnCluster != nil && c.opts.OwnCluster(svc, ref) {
		ref.Name += "@" + svc
		ref.Service = svc
	}
	if _, ok := c.clusters[ref.Name]; !ok {
		c.clusters[ref.Name] = ref
	}
	return ref.Name
}

func (r *Route) setWeights() {
	r.cum = make([]uint64, len(r.Targets))
	var sum uint64
	for i, t := range r.Targets {
		sum += uint64(t.Weight)
		r.cum[i] = sum
	}
	r.total = sum
}

// synthKind is the matcher kind of a synthetic catch-all route: L4 for a tcp listener,
// otherwise an http matcher with no conditions, so it takes gRPC and plain requests alike.
func synthKind(proto string) routeKind {
	if proto == config.ProtoTCP {
		return kindTCP
	}
	return kindHTTP
}

// listenerTimeouts returns a listener's timeouts for its own protocol.
func listenerTimeouts(l *config.Listener) (perRequest, idle time.Duration) {
	t := l.Timeout
	if t == nil {
		return 0, 0
	}
	var h *config.HTTPTimeout
	switch l.PortMapping.Protocol {
	case config.ProtoHTTP:
		h = t.HTTP
	case config.ProtoHTTP2:
		h = t.HTTP2
	case config.ProtoGRPC:
		h = t.GRPC
	case config.ProtoTCP:
		if t.TCP != nil {
			return 0, t.TCP.Idle.D()
		}
		return 0, 0
	}
	if h == nil {
		return 0, 0
	}
	return h.PerRequest.D(), h.Idle.D()
}
