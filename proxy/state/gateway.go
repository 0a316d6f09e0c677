package state

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/router"
	"github.com/meshd/meshd/telemetry"
)

// gatewayState is what a gateway's snapshot holds beyond a node's: its compiled gateway
// routes and listeners, and the readiness its health check answers report.
type gatewayState struct {
	routes *router.Gateway
	ready  func() bool
	// stats are the gateway routes' request statistics by name, carried over from the
	// previous snapshot by name so that a reload does not reset them; byIndex holds the
	// same by router.GatewayRoute.Index, for the request path.
	stats   map[string]*telemetry.HTTPStats
	byIndex []*telemetry.HTTPStats
}

// GatewayRouteStats are gateway route name's request statistics (nil when the snapshot
// serves no gateway or it has no such route).
func (s *Snapshot) GatewayRouteStats(name string) *telemetry.HTTPStats {
	if s == nil || s.gw == nil {
		return nil
	}
	return s.gw.stats[name]
}

// GatewayStatsOf are the request statistics of gr, a route of this snapshot's
// Gateway() (nil for a route of another snapshot's gateway).
func (s *Snapshot) GatewayStatsOf(gr *router.GatewayRoute) *telemetry.HTTPStats {
	if s == nil || s.gw == nil || gr == nil {
		return nil
	}
	if i := gr.Index; i >= 0 && i < len(s.gw.routes.Routes) && s.gw.routes.Routes[i] == gr {
		return s.gw.byIndex[i]
	}
	return nil
}

// Gateway is the virtual gateway the snapshot serves (its gateway routes and
// listeners), nil for a node's snapshot.
func (s *Snapshot) Gateway() *router.Gateway {
	if s == nil || s.gw == nil {
		return nil
	}
	return s.gw.routes
}

// GatewayReady reports whether a gateway's health check answers "healthy": the server
// is ready (Options.Ready), not draining and not failed by the admin.
func (s *Snapshot) GatewayReady() bool {
	return s.gw == nil || s.gw.ready == nil || s.gw.ready()
}

// CompileGateway turns cfg into a Snapshot for the virtual gateway name. A gateway
// forwards as a sidecar's egress does, so it is compiled as one: a virtual node of its
// own (never written to the config) whose backends are the target virtual services of
// its gateway routes, with the gateway's backendDefaults and logging, goes through
// Compile. That gives the gateway the targets' route tables (virtual router routes,
// weighted targets, retries, timeouts), their clusters (outlier detection, breakers,
// connection pools, TLS origination by the gateway's client policy), the policies and
// the access log, carried over across reloads as a node's are. The gateway's listener
// tls blocks are loaded as a node's listeners' are. Errors name the gateway's fields
// (virtualGateways[i]...), never the stand-in node's.
func CompileGateway(ctx context.Context, cfg *config.Config, name, source string, prev *Snapshot, opts Options) (_ *Snapshot, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	sp, err := GatewayStandIn(cfg, name)
	if err != nil {
		return nil, err
	}
	ni, standIn, gw := sp.Node, sp.NodeName, &cfg.VirtualGateways[sp.Gateway]
	s, err := Compile(ctx, sp.Config, standIn, source, prev, opts)
	if err != nil {
		return nil, sp.Rename(err)
	}
	defer func() {
		if err != nil {
			s.Retire(prev)
		}
	}()
	// The listeners' tls blocks, loaded by the node's code on a stand-in with the
	// gateway's listeners (port, protocol, tls: nothing else of them is read there).
	lisCfg := *cfg
	lis := make([]config.Listener, len(gw.Spec.Listeners))
	for i, l := range gw.Spec.Listeners {
		lis[i] = config.Listener{PortMapping: l.PortMapping, TLS: l.TLS}
	}
	lisCfg.VirtualNodes = append(slices.Clip(cfg.VirtualNodes), config.VirtualNode{VirtualNodeName: standIn, Spec: config.VirtualNodeSpec{Listeners: lis}})
	tls, err := compileListenerTLS(ctx, &lisCfg, ni, prev, opts.TLS)
	if err != nil {
		return nil, sp.Rename(err)
	}
	s.tls = tls
	s.config = cfg
	s.version = cfg.Digest()
	s.node = name
	s.localNodePort = 0
	s.gw = &gatewayState{routes: sp.Routes, ready: opts.Ready, stats: make(map[string]*telemetry.HTTPStats, len(sp.Routes.Routes)),
		byIndex: make([]*telemetry.HTTPStats, len(sp.Routes.Routes))}
	for i, rt := range sp.Routes.Routes {
		st := prev.GatewayRouteStats(rt.Name)
		if st == nil {
			st = new(telemetry.HTTPStats)
		}
		s.gw.stats[rt.Name] = st
		s.gw.byIndex[i] = st
	}
	return s, nil
}

// StandIn is a virtual gateway as meshd compiles it: Config is the config with a
// stand-in virtual node (at index Node, named NodeName) whose backends are the targets
// of the gateway's routes, with the gateway's backendDefaults and logging, and the
// target nodes' listeners carrying the gateway's connectionPool by protocol; Routes are
// the gateway's compiled routes. `meshd validate --gateway` checks the stand-in as it
// checks a node.
type StandIn struct {
	Config   *config.Config
	Node     int
	NodeName string
	Gateway  int // the gateway's index in the config
	Routes   *router.Gateway
}

// GatewayStandIn builds the stand-in of virtual gateway name of cfg (validated).
func GatewayStandIn(cfg *config.Config, name string) (*StandIn, error) {
	gi := slices.IndexFunc(cfg.VirtualGateways, func(g config.VirtualGateway) bool { return g.VirtualGatewayName == name })
	if gi < 0 {
		return nil, fmt.Errorf("gateway %q: no virtual gateway of that name in the config", name)
	}
	gw := &cfg.VirtualGateways[gi]
	routes, err := router.CompileGateway(cfg, name)
	if err != nil {
		return nil, err
	}
	standIn := name
	for cfg.VirtualNode(standIn) != nil {
		standIn += "~gateway"
	}
	var backends []config.Backend
	seen := map[string]bool{}
	for _, rt := range routes.Routes {
		if !seen[rt.Service] {
			seen[rt.Service] = true
			backends = append(backends, config.Backend{VirtualService: &config.VirtualServiceBackend{VirtualServiceName: rt.Service}})
		}
	}
	pools, err := gatewayPools(gi, gw)
	if err != nil {
		return nil, err
	}
	synth := *cfg
	ni := len(cfg.VirtualNodes)
	synth.VirtualNodes = append(withGatewayPools(cfg.VirtualNodes, pools), config.VirtualNode{
		VirtualNodeName: standIn,
		Spec:            config.VirtualNodeSpec{Backends: backends, BackendDefaults: gw.Spec.BackendDefaults, Logging: gw.Spec.Logging},
	})
	return &StandIn{Config: &synth, Node: ni, NodeName: standIn, Gateway: gi, Routes: routes}, nil
}

// Rename names the gateway's fields in an error about the stand-in node.
func (sp *StandIn) Rename(err error) error {
	return gatewayError(err, sp.Node, sp.Gateway, sp.NodeName, sp.Routes.Name)
}

// gatewayPools are the connectionPool blocks of the gateway's listeners by protocol.
// App Mesh applies a gateway listener's pool to the gateway's connections toward its
// targets; meshd does so for the clusters that speak the listener's protocol, so two
// listeners of one protocol with different pools cannot both hold and are refused.
func gatewayPools(gi int, gw *config.VirtualGateway) (map[string]*config.ConnectionPool, error) {
	pools := map[string]*config.ConnectionPool{}
	from := map[string]int{}
	for j, l := range gw.Spec.Listeners {
		if l.ConnectionPool == nil {
			continue
		}
		proto := l.PortMapping.Protocol
		if old, ok := pools[proto]; ok && !reflect.DeepEqual(old, l.ConnectionPool) {
			return nil, &config.Errors{List: []config.FieldError{{Path: fmt.Sprintf("virtualGateways[%d].spec.listeners[%d].connectionPool", gi, j),
				Msg: fmt.Sprintf("meshd applies a gateway listener's connectionPool to the gateway's %s clusters, and listeners[%d] (also %s) sets a different one: make them equal", proto, from[proto], proto)}}}
		}
		pools[proto], from[proto] = l.ConnectionPool, j
	}
	return pools, nil
}

// withGatewayPools returns nodes with the listeners of each protocol the gateway has a
// pool for taking that pool (copies: cfg is shared and never changed), so the clusters
// the gateway builds toward them carry the gateway's limits.
func withGatewayPools(nodes []config.VirtualNode, pools map[string]*config.ConnectionPool) []config.VirtualNode {
	out := slices.Clone(nodes)
	if len(pools) == 0 {
		return slices.Clip(out)
	}
	for i := range out {
		ls := slices.Clone(out[i].Spec.Listeners)
		for j := range ls {
			if p := pools[ls[j].PortMapping.Protocol]; p != nil {
				ls[j].ConnectionPool = p
			}
		}
		out[i].Spec.Listeners = ls
	}
	return slices.Clip(out)
}

// gatewayError names the gateway's fields in an error about the stand-in node: its
// index ni becomes the gateway's gi, its name the gateway's.
func gatewayError(err error, ni, gi int, standIn, name string) error {
	from, to := fmt.Sprintf("virtualNodes[%d]", ni), fmt.Sprintf("virtualGateways[%d]", gi)
	var fe *config.Errors
	if errors.As(err, &fe) {
		out := &config.Errors{List: slices.Clone(fe.List)}
		for i := range out.List {
			out.List[i].Path = strings.Replace(out.List[i].Path, from, to, 1)
			out.List[i].Msg = strings.ReplaceAll(out.List[i].Msg, from, to)
		}
		return out
	}
	msg := strings.ReplaceAll(err.Error(), from, to)
	msg = strings.ReplaceAll(msg, fmt.Sprintf("virtual node %q", standIn), fmt.Sprintf("virtual gateway %q", name))
	msg = strings.ReplaceAll(msg, fmt.Sprintf("node %q", standIn), fmt.Sprintf("virtual gateway %q", name))
	return &renamedError{msg: msg, err: err}
}

// renamedError is err with its message in the gateway's names; errors.Is and As see err.
type renamedError struct {
	msg string
	err error
}

func (e *renamedError) Error() string { return e.msg }
func (e *renamedError) Unwrap() error { return e.err }
