package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/meshd/meshd/telemetry/accesslog"
)

// Limits App Mesh enforces (and meshd with it).
const (
	maxNameLen         = 255
	maxWeightedTargets = 10
	maxMatchEntries    = 10 // headers, metadata, queryParameters per match
	maxPriority        = 1000
	maxTargetWeight    = 100
	maxEndpointWeight  = 1000 // static endpoints (extension)
)

// Validate checks c against App Mesh's rules and meshd's own, and returns nil or an
// *Errors holding every problem, each naming its field path and offending value.
// It does not modify c and is safe to call concurrently.
func (c *Config) Validate() error {
	v := &validator{c: c}
	v.index()
	v.mesh()
	for i := range c.VirtualNodes {
		v.virtualNode(root("virtualNodes").at(i), &c.VirtualNodes[i])
	}
	for i := range c.VirtualServices {
		v.virtualService(root("virtualServices").at(i), &c.VirtualServices[i])
	}
	for i := range c.VirtualRouters {
		v.virtualRouter(root("virtualRouters").at(i), &c.VirtualRouters[i])
	}
	for i := range c.Routes {
		v.route(root("routes").at(i), &c.Routes[i])
	}
	for i := range c.VirtualGateways {
		v.virtualGateway(root("virtualGateways").at(i), &c.VirtualGateways[i])
	}
	for i := range c.GatewayRoutes {
		v.gatewayRoute(root("gatewayRoutes").at(i), &c.GatewayRoutes[i])
	}
	v.targetsNeedDiscovery()
	if len(v.errs) == 0 {
		return nil
	}
	c.locate(v.errs)
	return &Errors{List: v.errs}
}

// VirtualNode returns the virtual node named name, or nil. The result points into c.
func (c *Config) VirtualNode(name string) *VirtualNode {
	for i := range c.VirtualNodes {
		if c.VirtualNodes[i].VirtualNodeName == name {
			return &c.VirtualNodes[i]
		}
	}
	return nil
}

// VirtualService returns the virtual service named name, or nil.
func (c *Config) VirtualService(name string) *VirtualService {
	for i := range c.VirtualServices {
		if c.VirtualServices[i].VirtualServiceName == name {
			return &c.VirtualServices[i]
		}
	}
	return nil
}

// VirtualRouter returns the virtual router named name, or nil.
func (c *Config) VirtualRouter(name string) *VirtualRouter {
	for i := range c.VirtualRouters {
		if c.VirtualRouters[i].VirtualRouterName == name {
			return &c.VirtualRouters[i]
		}
	}
	return nil
}

// VirtualGateway returns the virtual gateway named name, or nil.
func (c *Config) VirtualGateway(name string) *VirtualGateway {
	for i := range c.VirtualGateways {
		if c.VirtualGateways[i].VirtualGatewayName == name {
			return &c.VirtualGateways[i]
		}
	}
	return nil
}

// RoutesFor returns the routes of the virtual router named router, in file order
// (the order that breaks ties between equal or absent priorities).
func (c *Config) RoutesFor(router string) []*Route {
	var out []*Route
	for i := range c.Routes {
		if c.Routes[i].VirtualRouterName == router {
			out = append(out, &c.Routes[i])
		}
	}
	return out
}

// GatewayRoutesFor returns the gateway routes of the virtual gateway named gateway,
// in file order.
func (c *Config) GatewayRoutesFor(gateway string) []*GatewayRoute {
	var out []*GatewayRoute
	for i := range c.GatewayRoutes {
		if c.GatewayRoutes[i].VirtualGatewayName == gateway {
			out = append(out, &c.GatewayRoutes[i])
		}
	}
	return out
}

type validator struct {
	c    *Config
	errs []FieldError

	nodes    map[string]*VirtualNode
	services map[string]*VirtualService
	routers  map[string]*VirtualRouter
	gateways map[string]*VirtualGateway
	// targeted records nodes that receive traffic (route targets, service
	// providers), with the path of the first reference, for the serviceDiscovery rule.
	targeted     map[string]string
	targetedList []string
}

func (v *validator) add(path *fpath, value any, format string, args ...any) {
	val := ""
	if value != nil {
		val = fmt.Sprint(value)
	}
	v.errs = append(v.errs, FieldError{Path: path.String(), Value: val, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) index() {
	v.nodes = map[string]*VirtualNode{}
	v.services = map[string]*VirtualService{}
	v.routers = map[string]*VirtualRouter{}
	v.gateways = map[string]*VirtualGateway{}
	v.targeted = map[string]string{}
	for i := range v.c.VirtualNodes {
		n := &v.c.VirtualNodes[i]
		register(v, root("virtualNodes").at(i).f(".virtualNodeName"), n.VirtualNodeName, v.nodes, n)
	}
	for i := range v.c.VirtualServices {
		s := &v.c.VirtualServices[i]
		register(v, root("virtualServices").at(i).f(".virtualServiceName"), s.VirtualServiceName, v.services, s)
	}
	for i := range v.c.VirtualRouters {
		r := &v.c.VirtualRouters[i]
		register(v, root("virtualRouters").at(i).f(".virtualRouterName"), r.VirtualRouterName, v.routers, r)
	}
	for i := range v.c.VirtualGateways {
		g := &v.c.VirtualGateways[i]
		register(v, root("virtualGateways").at(i).f(".virtualGatewayName"), g.VirtualGatewayName, v.gateways, g)
	}
	type key struct{ parent, name string }
	routes := map[key]bool{}
	for i := range v.c.Routes {
		r := &v.c.Routes[i]
		path := root("routes").at(i).f(".routeName")
		if v.checkName(path, r.RouteName) {
			k := key{r.VirtualRouterName, r.RouteName}
			if routes[k] {
				v.add(path, r.RouteName, "duplicate routeName in virtual router %q", r.VirtualRouterName)
			}
			routes[k] = true
		}
	}
	groutes := map[key]bool{}
	for i := range v.c.GatewayRoutes {
		r := &v.c.GatewayRoutes[i]
		path := root("gatewayRoutes").at(i).f(".gatewayRouteName")
		if v.checkName(path, r.GatewayRouteName) {
			k := key{r.VirtualGatewayName, r.GatewayRouteName}
			if groutes[k] {
				v.add(path, r.GatewayRouteName, "duplicate gatewayRouteName in virtual gateway %q", r.VirtualGatewayName)
			}
			groutes[k] = true
		}
	}
}

// register records a resource under its name, reporting empty and duplicate names.
func register[T any](v *validator, path *fpath, name string, seen map[string]*T, res *T) {
	if !v.checkName(path, name) {
		return
	}
	if _, dup := seen[name]; dup {
		v.add(path, name, "duplicate name")
		return
	}
	seen[name] = res
}

func (v *validator) checkName(path *fpath, n string) bool {
	switch {
	case n == "":
		v.add(path, nil, "name is required")
		return false
	case len(n) > maxNameLen:
		v.add(path, n, "name is longer than %d characters", maxNameLen)
		return false
	}
	return true
}

func (v *validator) meshName(path *fpath, m ResourceMeta) {
	if m.MeshName != "" && v.c.Mesh.MeshName != "" && m.MeshName != v.c.Mesh.MeshName {
		v.add(path.f(".meshName"), m.MeshName, "does not match mesh.meshName %q", v.c.Mesh.MeshName)
	}
}

func oneOf(s string, allowed ...string) bool { return slices.Contains(allowed, s) }

func (v *validator) enum(path *fpath, s string, allowed ...string) {
	if !oneOf(s, allowed...) {
		v.add(path, s, "must be one of %s", strings.Join(allowed, ", "))
	}
}

func (v *validator) optEnum(path *fpath, s string, allowed ...string) {
	if s != "" {
		v.enum(path, s, allowed...)
	}
}

func count(set ...bool) int {
	n := 0
	for _, b := range set {
		if b {
			n++
		}
	}
	return n
}

// ---------------------------------------------------------------------------
// Mesh

func (v *validator) mesh() {
	m := &v.c.Mesh
	v.checkName(root("mesh.meshName"), m.MeshName)
	if f := m.Spec.EgressFilter; f != nil {
		v.enum(root("mesh.spec.egressFilter.type"), f.Type, EgressAllowAll, EgressDropAll)
	}
	if sd := m.Spec.ServiceDiscovery; sd != nil {
		v.optEnum(root("mesh.spec.serviceDiscovery.ipPreference"), sd.IPPreference, ipPreferences...)
		for i, r := range sd.DNSResolvers {
			if err := checkResolver(r); err != nil {
				v.add(root("mesh.spec.serviceDiscovery.dnsResolvers").at(i), r, "%v", err)
			}
		}
	}
}

var ipPreferences = []string{"IPv6_PREFERRED", "IPv4_PREFERRED", "IPv4_ONLY", "IPv6_ONLY"}

// ---------------------------------------------------------------------------
// Virtual nodes

var listenerProtocols = []string{ProtoHTTP, ProtoHTTP2, ProtoGRPC, ProtoTCP}

func (v *validator) virtualNode(path *fpath, n *VirtualNode) {
	v.meshName(path, n.ResourceMeta)
	spec := path.f(".spec")
	ports := map[int]bool{}
	for i, l := range n.Spec.Listeners {
		lp := spec.f(".listeners").at(i)
		v.portMapping(lp.f(".portMapping"), l.PortMapping, listenerProtocols)
		if ports[l.PortMapping.Port] {
			v.add(lp.f(".portMapping.port"), l.PortMapping.Port, "port is used by another listener of this node")
		}
		ports[l.PortMapping.Port] = true
		proto := l.PortMapping.Protocol
		if l.ConnectionPool != nil {
			v.connectionPool(lp.f(".connectionPool"), l.ConnectionPool, proto)
		}
		if l.HealthCheck != nil {
			v.healthCheck(lp.f(".healthCheck"), l.HealthCheck)
		}
		if l.OutlierDetection != nil {
			v.outlierDetection(lp.f(".outlierDetection"), l.OutlierDetection)
		}
		if l.Timeout != nil {
			v.listenerTimeout(lp.f(".timeout"), l.Timeout, proto)
		}
		if l.TLS != nil {
			v.listenerTLS(lp.f(".tls"), l.TLS)
		}
		if l.CircuitBreaker != nil {
			if proto == ProtoTCP {
				v.add(lp.f(".circuitBreaker"), nil, "applies to http, http2 and grpc listeners, not %q", proto)
			}
			v.circuitBreaker(lp.f(".circuitBreaker"), l.CircuitBreaker)
		}
		if l.RateLimit != nil {
			if proto == ProtoTCP {
				v.add(lp.f(".rateLimit"), nil, "applies to http, http2 and grpc listeners, not %q", proto)
			}
			v.rateLimit(lp.f(".rateLimit"), l.RateLimit)
		}
		if l.RetryBudget != nil {
			if proto == ProtoTCP {
				v.add(lp.f(".retryBudget"), nil, "applies to http, http2 and grpc listeners, not %q", proto)
			}
			v.retryBudget(lp.f(".retryBudget"), l.RetryBudget)
		}
		if l.Authorization != nil {
			v.authorization(lp.f(".authorization"), n, &n.Spec.Listeners[i])
		}
	}
	if sd := n.Spec.ServiceDiscovery; sd != nil {
		v.serviceDiscovery(spec.f(".serviceDiscovery"), sd)
	}
	for i, b := range n.Spec.Backends {
		bp := spec.f(".backends").at(i)
		if b.VirtualService == nil {
			v.add(bp.f(".virtualService"), nil, "is required")
			continue
		}
		vsName := b.VirtualService.VirtualServiceName
		switch {
		case vsName == "":
			v.add(bp.f(".virtualService.virtualServiceName"), nil, "is required")
		case v.services[vsName] == nil:
			v.add(bp.f(".virtualService.virtualServiceName"), vsName, "virtual service %q is not defined", vsName)
		}
		if cp := b.VirtualService.ClientPolicy; cp != nil {
			v.clientPolicy(bp.f(".virtualService.clientPolicy"), cp)
		}
	}
	if bd := n.Spec.BackendDefaults; bd != nil && bd.ClientPolicy != nil {
		v.clientPolicy(spec.f(".backendDefaults.clientPolicy"), bd.ClientPolicy)
	}
	if lg := n.Spec.Logging; lg != nil {
		v.logging(spec.f(".logging"), lg)
	}
	if lb := n.Spec.LoadBalancing; lb != nil {
		var tcp []int
		for _, l := range n.Spec.Listeners {
			if l.PortMapping.Protocol == ProtoTCP {
				tcp = append(tcp, l.PortMapping.Port)
			}
		}
		v.loadBalancing(spec.f(".loadBalancing"), lb, tcp)
	}
}

func (v *validator) portMapping(path *fpath, pm PortMapping, protocols []string) {
	v.port(path.f(".port"), pm.Port)
	v.enum(path.f(".protocol"), pm.Protocol, protocols...)
}

func (v *validator) port(path *fpath, p int) {
	if p < 1 || p > 65535 {
		v.add(path, p, "port must be 1..65535")
	}
}

func (v *validator) optPort(path *fpath, p int) {
	if p != 0 {
		v.port(path, p)
	}
}

// connectionPool allows exactly the block of the listener's protocol, because Envoy
// (and App Mesh) apply only that one; a mismatched block would silently do nothing.
func (v *validator) connectionPool(path *fpath, cp *ConnectionPool, proto string) {
	set := map[string]bool{
		ProtoHTTP: cp.HTTP != nil, ProtoHTTP2: cp.HTTP2 != nil,
		ProtoGRPC: cp.GRPC != nil, ProtoTCP: cp.TCP != nil,
	}
	for _, p := range listenerProtocols {
		if set[p] && p != proto {
			v.add(path.f("."+p), nil, "connection pool block %q does not fit listener protocol %q", p, proto)
		}
	}
	if count(set[ProtoHTTP], set[ProtoHTTP2], set[ProtoGRPC], set[ProtoTCP]) == 0 {
		v.add(path, nil, "needs the %q block of the listener's protocol", proto)
	}
	if cp.HTTP != nil {
		v.atLeast(path.f(".http.maxConnections"), int64(cp.HTTP.MaxConnections), 1)
		if cp.HTTP.MaxPendingRequests != 0 {
			v.atLeast(path.f(".http.maxPendingRequests"), int64(cp.HTTP.MaxPendingRequests), 1)
		}
	}
	if cp.HTTP2 != nil {
		v.atLeast(path.f(".http2.maxRequests"), int64(cp.HTTP2.MaxRequests), 1)
	}
	if cp.GRPC != nil {
		v.atLeast(path.f(".grpc.maxRequests"), int64(cp.GRPC.MaxRequests), 1)
	}
	if cp.TCP != nil {
		v.atLeast(path.f(".tcp.maxConnections"), int64(cp.TCP.MaxConnections), 1)
	}
}

func (v *validator) atLeast(path *fpath, n, lo int64) {
	if n < lo {
		v.add(path, n, "must be at least %d", lo)
	}
}

func (v *validator) between(path *fpath, n, lo, hi int64) {
	if n < lo || n > hi {
		v.add(path, n, "must be %d..%d", lo, hi)
	}
}

func (v *validator) healthCheck(path *fpath, hc *HealthCheck) {
	v.enum(path.f(".protocol"), hc.Protocol, listenerProtocols...)
	if (hc.Protocol == ProtoHTTP || hc.Protocol == ProtoHTTP2) && hc.Path == "" {
		v.add(path.f(".path"), nil, "is required for protocol %s", hc.Protocol)
	}
	v.optPort(path.f(".port"), hc.Port)
	v.between(path.f(".intervalMillis"), hc.IntervalMillis, 5000, 300000)
	v.between(path.f(".timeoutMillis"), hc.TimeoutMillis, 2000, 60000)
	v.between(path.f(".healthyThreshold"), int64(hc.HealthyThreshold), 2, 10)
	v.between(path.f(".unhealthyThreshold"), int64(hc.UnhealthyThreshold), 2, 10)
	if p := hc.PanicThresholdPercent; p != nil {
		v.between(path.f(".panicThresholdPercent"), int64(*p), 0, 100)
	}
}

// circuitBreaker checks the meshd extension; the numbers mirror resilience.NewBreaker,
// which the proxy calls with the same values.
func (v *validator) circuitBreaker(path *fpath, cb *CircuitBreaker) {
	if cb.ConsecutiveFailures != 0 {
		v.between(path.f(".consecutiveFailures"), cb.ConsecutiveFailures, 1, math.MaxUint32)
	}
	if cb.FailureRatio != 0 && !(cb.FailureRatio > 0 && cb.FailureRatio <= 1) {
		v.add(path.f(".failureRatio"), cb.FailureRatio, "must be in (0, 1]")
	}
	if cb.FailureRatio != 0 && cb.ConsecutiveFailures != 0 {
		v.add(path, nil, "set only one of consecutiveFailures, failureRatio")
	}
	if cb.MinRequests != 0 {
		v.between(path.f(".minRequests"), cb.MinRequests, 1, math.MaxUint32)
		if cb.FailureRatio == 0 {
			v.add(path.f(".minRequests"), cb.MinRequests, "applies only with failureRatio")
		}
	}
	if cb.HalfOpenRequests != 0 {
		v.between(path.f(".halfOpenRequests"), cb.HalfOpenRequests, 1, math.MaxUint32)
	}
	v.duration(path.f(".interval"), cb.Interval)
	v.duration(path.f(".openDuration"), cb.OpenDuration)
}

func (v *validator) retryBudget(path *fpath, rb *RetryBudget) {
	if rb.BudgetPercent != 0 && !(rb.BudgetPercent > 0 && rb.BudgetPercent <= 100) {
		v.add(path.f(".budgetPercent"), rb.BudgetPercent, "must be in (0, 100]")
	}
	if rb.MinRetryConcurrency != 0 {
		v.between(path.f(".minRetryConcurrency"), rb.MinRetryConcurrency, 1, math.MaxInt32)
	}
	if rb.MaxRetries != 0 {
		v.between(path.f(".maxRetries"), rb.MaxRetries, 1, math.MaxInt32)
	}
}

func (v *validator) rateLimit(path *fpath, rl *RateLimit) {
	if !(rl.RequestsPerSecond > 0 && rl.RequestsPerSecond <= 1e9) {
		v.add(path.f(".requestsPerSecond"), rl.RequestsPerSecond, "must be in (0, 1e9]")
	}
	if rl.Burst < 0 || rl.Burst > 1<<30 {
		v.add(path.f(".burst"), rl.Burst, "must be 0..%d (0: one second's worth)", 1<<30)
	}
}

func (v *validator) outlierDetection(path *fpath, od *OutlierDetection) {
	v.atLeast(path.f(".maxServerErrors"), od.MaxServerErrors, 1)
	v.between(path.f(".maxEjectionPercent"), int64(od.MaxEjectionPercent), 0, 100)
	v.requiredDuration(path.f(".interval"), od.Interval)
	v.requiredDuration(path.f(".baseEjectionDuration"), od.BaseEjectionDuration)
}

func (v *validator) requiredDuration(path *fpath, d *Duration) {
	if d == nil {
		v.add(path, nil, "is required")
		return
	}
	v.duration(path, d)
}

func (v *validator) duration(path *fpath, d *Duration) {
	if d == nil {
		return
	}
	v.enum(path.f(".unit"), d.Unit, "ms", "s")
	if d.Value < 0 {
		v.add(path.f(".value"), d.Value, "must not be negative")
	}
}

func (v *validator) httpTimeout(path *fpath, t *HTTPTimeout) {
	if t == nil {
		return
	}
	v.duration(path.f(".perRequest"), t.PerRequest)
	v.duration(path.f(".idle"), t.Idle)
}

func (v *validator) listenerTimeout(path *fpath, t *ListenerTimeout, proto string) {
	blocks := []struct {
		proto string
		set   bool
	}{{ProtoHTTP, t.HTTP != nil}, {ProtoHTTP2, t.HTTP2 != nil}, {ProtoGRPC, t.GRPC != nil}, {ProtoTCP, t.TCP != nil}}
	for _, b := range blocks {
		if b.set && b.proto != proto {
			v.add(path.f("."+b.proto), nil, "timeout block %q does not fit listener protocol %q", b.proto, proto)
		}
	}
	v.httpTimeout(path.f(".http"), t.HTTP)
	v.httpTimeout(path.f(".http2"), t.HTTP2)
	v.httpTimeout(path.f(".grpc"), t.GRPC)
	if t.TCP != nil {
		v.duration(path.f(".tcp.idle"), t.TCP.Idle)
	}
}

func (v *validator) listenerTLS(path *fpath, t *ListenerTLS) {
	v.enum(path.f(".mode"), t.Mode, "STRICT", "PERMISSIVE", "DISABLED")
	if t.Certificate == nil {
		if t.Mode != "DISABLED" {
			v.add(path.f(".certificate"), nil, "is required when mode is %s", t.Mode)
		}
	} else {
		c := t.Certificate
		cp := path.f(".certificate")
		if count(c.ACM != nil, c.File != nil, c.SDS != nil) != 1 {
			v.add(cp, nil, "set exactly one of acm, file, sds")
		}
		if c.ACM != nil && c.ACM.CertificateArn == "" {
			v.add(cp.f(".acm.certificateArn"), nil, "is required")
		}
		v.fileCert(cp.f(".file"), c.File)
		v.sds(cp.f(".sds"), c.SDS)
	}
	if val := t.Validation; val != nil {
		if val.Trust == nil {
			v.add(path.f(".validation.trust"), nil, "is required")
		} else {
			v.trust(path.f(".validation.trust"), val.Trust)
		}
		v.sans(path.f(".validation.subjectAlternativeNames"), val.SubjectAlternativeNames)
	}
}

func (v *validator) fileCert(path *fpath, f *TLSFileCertificate) {
	if f == nil {
		return
	}
	if f.CertificateChain == "" {
		v.add(path.f(".certificateChain"), nil, "is required")
	}
	if f.PrivateKey == "" {
		v.add(path.f(".privateKey"), nil, "is required")
	}
}

func (v *validator) sds(path *fpath, s *TLSSDS) {
	if s != nil && s.SecretName == "" {
		v.add(path.f(".secretName"), nil, "is required")
	}
}

func (v *validator) trust(path *fpath, t *TLSValidationTrust) {
	if count(t.ACM != nil, t.File != nil, t.SDS != nil) != 1 {
		v.add(path, nil, "set exactly one of acm, file, sds")
	}
	if t.ACM != nil && len(t.ACM.CertificateAuthorityArns) == 0 {
		v.add(path.f(".acm.certificateAuthorityArns"), nil, "needs at least one ARN")
	}
	if t.File != nil && t.File.CertificateChain == "" {
		v.add(path.f(".file.certificateChain"), nil, "is required")
	}
	v.sds(path.f(".sds"), t.SDS)
}

func (v *validator) sans(path *fpath, s *SubjectAltNames) {
	if s != nil && len(s.Match.Exact) == 0 {
		v.add(path.f(".match.exact"), nil, "needs at least one name")
	}
}

func (v *validator) clientPolicy(path *fpath, cp *ClientPolicy) {
	t := cp.TLS
	if t == nil {
		return
	}
	tp := path.f(".tls")
	for i, p := range t.Ports {
		v.port(tp.f(".ports").at(i), p)
	}
	if c := t.Certificate; c != nil {
		if count(c.File != nil, c.SDS != nil) != 1 {
			v.add(tp.f(".certificate"), nil, "set exactly one of file, sds")
		}
		v.fileCert(tp.f(".certificate.file"), c.File)
		v.sds(tp.f(".certificate.sds"), c.SDS)
	}
	v.trust(tp.f(".validation.trust"), &t.Validation.Trust)
	v.sans(tp.f(".validation.subjectAlternativeNames"), t.Validation.SubjectAlternativeNames)
}

func (v *validator) logging(path *fpath, lg *Logging) {
	if lg.AccessLog == nil || lg.AccessLog.File == nil {
		return
	}
	f := lg.AccessLog.File
	fp := path.f(".accessLog.file")
	if f.Path == "" {
		v.add(fp.f(".path"), nil, "is required")
	}
	if f.Format != nil {
		if count(len(f.Format.JSON) > 0, f.Format.Text != "") != 1 {
			v.add(fp.f(".format"), nil, "set exactly one of json, text")
		}
		for i, jf := range f.Format.JSON {
			if jf.Key == "" {
				v.add(fp.f(".format.json").at(i).f(".key"), nil, "is required")
			}
		}
		v.accessLogFormat(fp.f(".format"), f.Format)
	}
}

// accessLogFormat checks the command operators of an access log format the way meshd
// will compile them (telemetry/accesslog): the first unknown or malformed one is
// reported at format.text or format.json[i].value.
func (v *validator) accessLogFormat(path *fpath, af *AccessLogFormat) {
	kv := make([]accesslog.KV, len(af.JSON))
	for i, jf := range af.JSON {
		kv[i] = accesslog.KV{Key: jf.Key, Value: jf.Value}
	}
	err := accesslog.Validate(af.Text, kv)
	if err == nil {
		return
	}
	var fe *accesslog.FormatError
	if errors.As(err, &fe) {
		v.add(path.f("."+fe.Field), nil, "%s", fe.Msg)
		return
	}
	v.add(path, nil, "%v", err)
}

func (v *validator) serviceDiscovery(path *fpath, sd *ServiceDiscovery) {
	if count(sd.DNS != nil, sd.AWSCloudMap != nil, sd.Static != nil) != 1 {
		v.add(path, nil, "set exactly one of dns, awsCloudMap, static")
	}
	if d := sd.DNS; d != nil {
		if d.Hostname == "" {
			v.add(path.f(".dns.hostname"), nil, "is required")
		}
		v.optEnum(path.f(".dns.ipPreference"), d.IPPreference, ipPreferences...)
		v.optEnum(path.f(".dns.responseType"), d.ResponseType, "LOADBALANCER", "ENDPOINTS")
		v.optEnum(path.f(".dns.recordType"), d.RecordType, "A", "SRV")
		if d.RecordType == "SRV" && d.ResponseType == "LOADBALANCER" {
			v.add(path.f(".dns.responseType"), d.ResponseType, "LOADBALANCER (one address) cannot be combined with recordType SRV (every record is an endpoint); drop one")
		}
	}
	if cm := sd.AWSCloudMap; cm != nil {
		// Resolved through the namespace's DNS (<serviceName>.<namespaceName>); attribute
		// filtering needs the Cloud Map API, which meshd warns about at start.
		if cm.NamespaceName == "" {
			v.add(path.f(".awsCloudMap.namespaceName"), nil, "is required")
		}
		if cm.ServiceName == "" {
			v.add(path.f(".awsCloudMap.serviceName"), nil, "is required")
		}
		for i, a := range cm.Attributes {
			if a.Key == "" {
				v.add(path.f(".awsCloudMap.attributes").at(i).f(".key"), nil, "is required")
			}
		}
		v.optEnum(path.f(".awsCloudMap.ipPreference"), cm.IPPreference, ipPreferences...)
	}
	if st := sd.Static; st != nil {
		if len(st.Endpoints) == 0 {
			v.add(path.f(".static.endpoints"), nil, "needs at least one endpoint")
		}
		for i, ep := range st.Endpoints {
			epp := path.f(".static.endpoints").at(i)
			if err := checkHostPort(ep.Address); err != nil {
				v.add(epp.f(".address"), ep.Address, "%v", err)
			}
			if ep.Weight < 0 || ep.Weight > maxEndpointWeight {
				v.add(epp.f(".weight"), ep.Weight, "must be 0..%d", maxEndpointWeight)
			}
		}
	}
}

// checkResolver accepts a DNS server address: an IP, or ip:port.
func checkResolver(s string) error {
	if net.ParseIP(strings.Trim(s, "[]")) != nil {
		return nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil || net.ParseIP(host) == nil {
		return fmt.Errorf("want an IP address or ip:port")
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("port %q must be 1..65535", port)
	}
	return nil
}

// checkHostPort accepts "host", "host:port", "[v6]:port" and a bare IPv6 address.
func checkHostPort(addr string) error {
	if addr == "" {
		return fmt.Errorf("address is required")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		if net.ParseIP(addr) != nil {
			return nil
		}
		if strings.Contains(addr, ":") {
			return fmt.Errorf("not a host[:port] address: %w", err)
		}
		host = addr
	} else {
		p, perr := strconv.Atoi(port)
		if perr != nil || p < 1 || p > 65535 {
			return fmt.Errorf("port %q must be 1..65535", port)
		}
	}
	if host == "" {
		return fmt.Errorf("host is empty")
	}
	if net.ParseIP(host) != nil {
		return nil
	}
	for _, r := range host {
		ok := r == '.' || r == '-' || r == '_' ||
			(r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')
		if !ok {
			return fmt.Errorf("host %q is neither an IP address nor a DNS name", host)
		}
	}
	return nil
}

// ---------------------------------------------------------------------------
// Virtual services and routers

func (v *validator) virtualService(path *fpath, s *VirtualService) {
	v.meshName(path, s.ResourceMeta)
	p := s.Spec.Provider
	if p == nil {
		return // App Mesh allows a service without a provider; it has no traffic to route.
	}
	pp := path.f(".spec.provider")
	if count(p.VirtualNode != nil, p.VirtualRouter != nil) != 1 {
		v.add(pp, nil, "set exactly one of virtualNode, virtualRouter")
	}
	if p.VirtualNode != nil {
		n := p.VirtualNode.VirtualNodeName
		np := pp.f(".virtualNode.virtualNodeName")
		switch {
		case n == "":
			v.add(np, nil, "is required")
		case v.nodes[n] == nil:
			v.add(np, n, "virtual node %q is not defined", n)
		default:
			v.target(n, np)
		}
	}
	if p.VirtualRouter != nil {
		r := p.VirtualRouter.VirtualRouterName
		rp := pp.f(".virtualRouter.virtualRouterName")
		switch {
		case r == "":
			v.add(rp, nil, "is required")
		case v.routers[r] == nil:
			v.add(rp, r, "virtual router %q is not defined", r)
		}
	}
}

func (v *validator) target(node string, path *fpath) {
	if _, ok := v.targeted[node]; !ok {
		v.targeted[node] = path.String()
		v.targetedList = append(v.targetedList, node)
	}
}

// targetsNeedDiscovery reports nodes that receive traffic but have no way to find
// their endpoints.
func (v *validator) targetsNeedDiscovery() {
	for _, name := range v.targetedList {
		for i := range v.c.VirtualNodes {
			n := &v.c.VirtualNodes[i]
			if n.VirtualNodeName == name && n.Spec.ServiceDiscovery == nil {
				v.add(root("virtualNodes").at(i).f(".spec.serviceDiscovery"), nil,
					"is required: the node receives traffic (%s)", v.targeted[name])
				break
			}
		}
	}
}

func (v *validator) virtualRouter(path *fpath, r *VirtualRouter) {
	v.meshName(path, r.ResourceMeta)
	if len(r.Spec.Listeners) == 0 {
		v.add(path.f(".spec.listeners"), nil, "needs at least one listener (its protocol decides which routes fit)")
	}
	ports := map[int]bool{}
	for i, l := range r.Spec.Listeners {
		lp := path.f(".spec.listeners").at(i).f(".portMapping")
		v.portMapping(lp, l.PortMapping, listenerProtocols)
		if ports[l.PortMapping.Port] {
			v.add(lp.f(".port"), l.PortMapping.Port, "port is used by another listener of this router")
		}
		ports[l.PortMapping.Port] = true
	}
}

// ---------------------------------------------------------------------------
// Routes

var httpMethods = []string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}

func (v *validator) route(path *fpath, r *Route) {
	v.meshName(path, r.ResourceMeta)
	var router *VirtualRouter
	switch rn := r.VirtualRouterName; {
	case rn == "":
		v.add(path.f(".virtualRouterName"), nil, "is required")
	case v.routers[rn] == nil:
		v.add(path.f(".virtualRouterName"), rn, "virtual router %q is not defined", rn)
	default:
		router = v.routers[rn]
	}
	spec := path.f(".spec")
	if p := r.Spec.Priority; p != nil {
		v.between(spec.f(".priority"), int64(*p), 0, maxPriority)
	}
	s := &r.Spec
	if count(s.HTTPRoute != nil, s.HTTP2Route != nil, s.GRPCRoute != nil, s.TCPRoute != nil) != 1 {
		v.add(spec, nil, "set exactly one of httpRoute, http2Route, grpcRoute, tcpRoute")
	}
	if h := s.HTTPRoute; h != nil {
		v.httpRoute(spec.f(".httpRoute"), h, router, ProtoHTTP)
	}
	if h := s.HTTP2Route; h != nil {
		v.httpRoute(spec.f(".http2Route"), h, router, ProtoHTTP2)
	}
	if g := s.GRPCRoute; g != nil {
		v.grpcRoute(spec.f(".grpcRoute"), g, router)
	}
	if t := s.TCPRoute; t != nil {
		tp := spec.f(".tcpRoute")
		port := 0
		if t.Match != nil {
			port = t.Match.Port
		}
		v.routerListener(tp.f(".match.port"), port, router, ProtoTCP)
		v.action(tp.f(".action"), &t.Action)
		if t.Action.Mirror != nil {
			v.add(tp.f(".action.mirror"), nil, "applies to httpRoute, http2Route and grpcRoute, not tcpRoute (an opaque stream cannot be copied)")
		}
		if t.Timeout != nil {
			v.duration(tp.f(".timeout.idle"), t.Timeout.Idle)
		}
	}
}

// routerListener checks that a route of type proto can be served by router: match.port,
// when set, names one of its listeners; a router with several listeners needs it; and
// the chosen listener's protocol is proto (App Mesh: httpRoute→http, http2Route→http2,
// grpcRoute→grpc, tcpRoute→tcp).
func (v *validator) routerListener(portPath *fpath, port int, router *VirtualRouter, proto string) {
	if port != 0 {
		v.port(portPath, port)
	}
	if router == nil {
		return
	}
	ls := router.Spec.Listeners
	var chosen *PortMapping
	switch {
	case port != 0:
		for i := range ls {
			if ls[i].PortMapping.Port == port {
				chosen = &ls[i].PortMapping
			}
		}
		if chosen == nil {
			v.add(portPath, port, "virtual router %q has no listener on port %d", router.VirtualRouterName, port)
			return
		}
	case len(ls) == 1:
		chosen = &ls[0].PortMapping
	case len(ls) > 1:
		v.add(portPath, nil, "is required: virtual router %q has %d listeners", router.VirtualRouterName, len(ls))
		return
	default:
		return // the router's own error covers a router without listeners
	}
	if chosen.Protocol != proto {
		pp := portPath.String()
		v.add(root(pp[:strings.LastIndex(pp, ".match.port")]), nil,
			"a %s route does not fit virtual router %q listener port %d with protocol %q",
			proto, router.VirtualRouterName, chosen.Port, chosen.Protocol)
	}
}

func (v *validator) httpRoute(path *fpath, h *HTTPRoute, router *VirtualRouter, proto string) {
	m := &h.Match
	mp := path.f(".match")
	v.routerListener(mp.f(".port"), m.Port, router, proto)
	// App Mesh's multiple-listener walkthrough routes on port alone, so a match
	// may leave out both prefix and path when it names a port; it then matches
	// every path.
	if m.Prefix != "" && m.Path != nil {
		v.add(mp, nil, "set only one of prefix, path")
	} else if m.Prefix == "" && m.Path == nil && m.Port == 0 {
		v.add(mp, nil, "set one of prefix, path (use prefix \"/\" to match every path)")
	}
	if m.Prefix != "" && !strings.HasPrefix(m.Prefix, "/") {
		v.add(mp.f(".prefix"), m.Prefix, "must start with \"/\"")
	}
	v.pathMatch(mp.f(".path"), m.Path)
	v.headers(mp.f(".headers"), m.Headers)
	v.optEnum(mp.f(".method"), m.Method, httpMethods...)
	v.optEnum(mp.f(".scheme"), m.Scheme, "http", "https")
	v.queryParams(mp.f(".queryParameters"), m.QueryParameters)
	v.action(path.f(".action"), &h.Action)
	v.mirror(path.f(".action.mirror"), h.Action.Mirror)
	if rp := h.RetryPolicy; rp != nil {
		rpp := path.f(".retryPolicy")
		v.retryCommon(rpp, rp.MaxRetries, rp.PerRetryTimeout)
		v.events(rpp.f(".httpRetryEvents"), rp.HTTPRetryEvents, httpRetryEvents)
		v.events(rpp.f(".tcpRetryEvents"), rp.TCPRetryEvents, tcpRetryEvents)
	}
	v.httpTimeout(path.f(".timeout"), h.Timeout)
	v.headerManipulation(path.f(".headers"), h.Headers)
	if h.RateLimit != nil {
		v.rateLimit(path.f(".rateLimit"), h.RateLimit)
	}
}

var (
	httpRetryEvents = []string{"server-error", "gateway-error", "client-error", "stream-error"}
	grpcRetryEvents = []string{"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}
	tcpRetryEvents  = []string{"connection-error"}
)

func (v *validator) retryCommon(path *fpath, maxRetries int64, perRetry *Duration) {
	if maxRetries < 0 {
		v.add(path.f(".maxRetries"), maxRetries, "must not be negative")
	}
	v.requiredDuration(path.f(".perRetryTimeout"), perRetry)
}

func (v *validator) events(path *fpath, evs []string, allowed []string) {
	for i, e := range evs {
		v.enum(path.at(i), e, allowed...)
	}
}

func (v *validator) pathMatch(path *fpath, p *PathMatch) {
	if p == nil {
		return
	}
	if count(p.Exact != "", p.Regex != "") != 1 {
		v.add(path, nil, "set exactly one of exact, regex")
	}
	if p.Exact != "" && !strings.HasPrefix(p.Exact, "/") {
		v.add(path.f(".exact"), p.Exact, "must start with \"/\"")
	}
	v.regex(path.f(".regex"), p.Regex)
}

func (v *validator) regex(path *fpath, re string) {
	if re == "" {
		return
	}
	if _, err := regexp.Compile(re); err != nil {
		v.add(path, re, "invalid regular expression (RE2 syntax): %v", err)
	}
}

func (v *validator) headers(path *fpath, hs []HeaderMatch) {
	if len(hs) > maxMatchEntries {
		v.add(path, len(hs), "at most %d entries", maxMatchEntries)
	}
	for i := range hs {
		h := &hs[i]
		hp := path.at(i)
		if h.Name == "" {
			v.add(hp.f(".name"), nil, "is required")
		}
		m := h.Match
		if m == nil {
			continue
		}
		if count(m.Exact != "", m.Prefix != "", m.Suffix != "", m.Regex != "", m.Range != nil) != 1 {
			v.add(hp.f(".match"), nil, "set exactly one of exact, prefix, suffix, regex, range")
		}
		v.regex(hp.f(".match.regex"), m.Regex)
		if r := m.Range; r != nil && r.Start >= r.End {
			v.add(hp.f(".match.range"), fmt.Sprintf("start %d, end %d", r.Start, r.End), "start must be less than end")
		}
	}
}

func (v *validator) queryParams(path *fpath, qs []QueryParameter) {
	if len(qs) > maxMatchEntries {
		v.add(path, len(qs), "at most %d entries", maxMatchEntries)
	}
	for i, q := range qs {
		if q.Name == "" {
			v.add(path.at(i).f(".name"), nil, "is required")
		}
	}
}

// targetNode checks a route's reference to a virtual node and one of its listeners (a
// weighted target, a mirror: path is the object holding virtualNode and port) and
// returns the node's listeners; ok is false when the node itself is missing.
func (v *validator) targetNode(path *fpath, name string, port int) (ls []Listener, ok bool) {
	v.optPort(path.f(".port"), port)
	node := v.nodes[name]
	switch {
	case name == "":
		v.add(path.f(".virtualNode"), nil, "is required")
		return nil, false
	case node == nil:
		v.add(path.f(".virtualNode"), name, "virtual node %q is not defined", name)
		return nil, false
	}
	v.target(name, path.f(".virtualNode"))
	ls = node.Spec.Listeners
	if port != 0 {
		found := false
		for _, l := range ls {
			found = found || l.PortMapping.Port == port
		}
		if !found {
			v.add(path.f(".port"), port, "virtual node %q has no listener on port %d", name, port)
		}
	} else if len(ls) > 1 {
		v.add(path.f(".port"), nil, "is required: virtual node %q has %d listeners", name, len(ls))
	}
	return ls, true
}

func (v *validator) action(path *fpath, a *RouteAction) {
	wt := a.WeightedTargets
	wp := path.f(".weightedTargets")
	if len(wt) < 1 || len(wt) > maxWeightedTargets {
		v.add(wp, len(wt), "needs 1..%d weighted targets", maxWeightedTargets)
	}
	positive := false
	for i, t := range wt {
		tp := wp.at(i)
		if t.Weight < 0 || t.Weight > maxTargetWeight {
			v.add(tp.f(".weight"), t.Weight, "must be 0..%d", maxTargetWeight)
		}
		if t.Weight > 0 {
			positive = true
		}
		v.targetNode(tp, t.VirtualNode, t.Port)
	}
	if len(wt) > 0 && !positive {
		v.add(wp, nil, "at least one target needs a weight above 0")
	}
}

func (v *validator) grpcRoute(path *fpath, g *GRPCRoute, router *VirtualRouter) {
	m := &g.Match
	mp := path.f(".match")
	v.routerListener(mp.f(".port"), m.Port, router, ProtoGRPC)
	if m.MethodName != "" && m.ServiceName == "" {
		v.add(mp.f(".methodName"), m.MethodName, "requires serviceName")
	}
	v.headers(mp.f(".metadata"), m.Metadata)
	v.action(path.f(".action"), &g.Action)
	v.mirror(path.f(".action.mirror"), g.Action.Mirror)
	if rp := g.RetryPolicy; rp != nil {
		rpp := path.f(".retryPolicy")
		v.retryCommon(rpp, rp.MaxRetries, rp.PerRetryTimeout)
		v.events(rpp.f(".grpcRetryEvents"), rp.GRPCRetryEvents, grpcRetryEvents)
		v.events(rpp.f(".httpRetryEvents"), rp.HTTPRetryEvents, httpRetryEvents)
		v.events(rpp.f(".tcpRetryEvents"), rp.TCPRetryEvents, tcpRetryEvents)
	}
	v.httpTimeout(path.f(".timeout"), g.Timeout)
	v.headerManipulation(path.f(".headers"), g.Headers)
	if g.RateLimit != nil {
		v.rateLimit(path.f(".rateLimit"), g.RateLimit)
	}
}

// ---------------------------------------------------------------------------
// Virtual gateways and gateway routes

var gatewayProtocols = []string{ProtoHTTP, ProtoHTTP2, ProtoGRPC}

func (v *validator) virtualGateway(path *fpath, g *VirtualGateway) {
	v.meshName(path, g.ResourceMeta)
	spec := path.f(".spec")
	if len(g.Spec.Listeners) == 0 {
		v.add(spec.f(".listeners"), nil, "needs at least one listener")
	}
	ports := map[int]bool{}
	for i, l := range g.Spec.Listeners {
		lp := spec.f(".listeners").at(i)
		v.portMapping(lp.f(".portMapping"), l.PortMapping, gatewayProtocols)
		if ports[l.PortMapping.Port] {
			v.add(lp.f(".portMapping.port"), l.PortMapping.Port, "port is used by another listener of this gateway")
		}
		ports[l.PortMapping.Port] = true
		if l.ConnectionPool != nil {
			v.connectionPool(lp.f(".connectionPool"), l.ConnectionPool, l.PortMapping.Protocol)
		}
		if l.HealthCheck != nil {
			v.healthCheck(lp.f(".healthCheck"), l.HealthCheck)
		}
		if l.TLS != nil {
			v.listenerTLS(lp.f(".tls"), l.TLS)
		}
	}
	if bd := g.Spec.BackendDefaults; bd != nil && bd.ClientPolicy != nil {
		v.clientPolicy(spec.f(".backendDefaults.clientPolicy"), bd.ClientPolicy)
	}
	if lg := g.Spec.Logging; lg != nil {
		v.logging(spec.f(".logging"), lg)
	}
}

func (v *validator) gatewayRoute(path *fpath, r *GatewayRoute) {
	v.meshName(path, r.ResourceMeta)
	var gw *VirtualGateway
	switch gn := r.VirtualGatewayName; {
	case gn == "":
		v.add(path.f(".virtualGatewayName"), nil, "is required")
	case v.gateways[gn] == nil:
		v.add(path.f(".virtualGatewayName"), gn, "virtual gateway %q is not defined", gn)
	default:
		gw = v.gateways[gn]
	}
	spec := path.f(".spec")
	s := &r.Spec
	if p := s.Priority; p != nil {
		v.between(spec.f(".priority"), int64(*p), 0, maxPriority)
	}
	if count(s.HTTPRoute != nil, s.HTTP2Route != nil, s.GRPCRoute != nil) != 1 {
		v.add(spec, nil, "set exactly one of httpRoute, http2Route, grpcRoute")
	}
	for _, h := range []struct {
		name  string
		proto string
		r     *GatewayHTTPRoute
	}{{"httpRoute", ProtoHTTP, s.HTTPRoute}, {"http2Route", ProtoHTTP2, s.HTTP2Route}} {
		if h.r == nil {
			continue
		}
		hp := spec.f("." + h.name)
		m := &h.r.Match
		mp := hp.f(".match")
		v.gatewayListener(mp.f(".port"), m.Port, gw, h.proto)
		if m.Prefix != "" && m.Path != nil {
			v.add(mp, nil, "set only one of prefix, path")
		}
		if m.Prefix != "" && !strings.HasPrefix(m.Prefix, "/") {
			v.add(mp.f(".prefix"), m.Prefix, "must start with \"/\"")
		}
		v.pathMatch(mp.f(".path"), m.Path)
		v.headers(mp.f(".headers"), m.Headers)
		v.optEnum(mp.f(".method"), m.Method, httpMethods...)
		v.hostname(mp.f(".hostname"), m.Hostname)
		v.queryParams(mp.f(".queryParameters"), m.QueryParameters)
		v.gatewayTarget(hp.f(".action.target"), &h.r.Action.Target)
		v.headerManipulation(hp.f(".headers"), h.r.Headers)
		if rw := h.r.Action.Rewrite; rw != nil {
			rp := hp.f(".action.rewrite")
			if rw.Prefix != nil {
				v.optEnum(rp.f(".prefix.defaultPrefix"), rw.Prefix.DefaultPrefix, "ENABLED", "DISABLED")
				if rw.Prefix.Value != "" && !strings.HasPrefix(rw.Prefix.Value, "/") {
					v.add(rp.f(".prefix.value"), rw.Prefix.Value, "must start with \"/\"")
				}
			}
			if rw.Path != nil && !strings.HasPrefix(rw.Path.Exact, "/") {
				v.add(rp.f(".path.exact"), rw.Path.Exact, "must start with \"/\"")
			}
			if rw.Hostname != nil {
				v.enum(rp.f(".hostname.defaultTargetHostname"), rw.Hostname.DefaultTargetHostname, "ENABLED", "DISABLED")
			}
			v.gatewayRewrite(rp, m, rw)
		}
	}
	if g := s.GRPCRoute; g != nil {
		gp := spec.f(".grpcRoute")
		m := &g.Match
		v.gatewayListener(gp.f(".match.port"), m.Port, gw, ProtoGRPC)
		v.hostname(gp.f(".match.hostname"), m.Hostname)
		v.headers(gp.f(".match.metadata"), m.Metadata)
		v.gatewayTarget(gp.f(".action.target"), &g.Action.Target)
		v.headerManipulation(gp.f(".headers"), g.Headers)
		if rw := g.Action.Rewrite; rw != nil {
			v.enum(gp.f(".action.rewrite.defaultTargetHostname"), rw.DefaultTargetHostname, "ENABLED", "DISABLED")
		}
	}
}

// gatewayListener checks a gateway route against its gateway's listeners: match.port,
// when set, must name one; and some listener it can arrive on must speak proto.
func (v *validator) gatewayListener(portPath *fpath, port int, gw *VirtualGateway, proto string) {
	if port != 0 {
		v.port(portPath, port)
	}
	if gw == nil {
		return
	}
	fits, found := false, false
	for _, l := range gw.Spec.Listeners {
		if port != 0 && l.PortMapping.Port != port {
			continue
		}
		found = true
		fits = fits || l.PortMapping.Protocol == proto
	}
	switch {
	case port != 0 && !found:
		v.add(portPath, port, "virtual gateway %q has no listener on port %d", gw.VirtualGatewayName, port)
	case found && !fits:
		pp := portPath.String()
		v.add(root(pp[:strings.LastIndex(pp, ".match.port")]), nil,
			"a %s route does not fit any listener protocol of virtual gateway %q", proto, gw.VirtualGatewayName)
	}
}

func (v *validator) hostname(path *fpath, h *HostnameMatch) {
	if h != nil && count(h.Exact != "", h.Suffix != "") != 1 {
		v.add(path, nil, "set exactly one of exact, suffix")
	}
}

func (v *validator) gatewayTarget(path *fpath, t *GatewayTarget) {
	n := t.VirtualService.VirtualServiceName
	np := path.f(".virtualService.virtualServiceName")
	switch {
	case n == "":
		v.add(np, nil, "is required")
	case v.services[n] == nil:
		v.add(np, n, "virtual service %q is not defined", n)
	}
	v.optPort(path.f(".port"), t.Port)
}
