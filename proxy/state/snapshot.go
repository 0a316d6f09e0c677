// Package state turns a config into what the data plane serves: compile(config, node,
// previous) builds an immutable Snapshot (the routing table, the clusters, each route's
// compiled policy), and a Holder publishes it with an atomic swap through the apply
// pipeline (preconditions, parse, validate, compile, swap, history, persistence).
//
// A request loads the Snapshot in force once and finishes on it; a reload builds the
// next one off the request path, carrying over by name what must survive it (clusters
// with their pools, health and ejections; route and listener counters; token buckets).
package state

import (
	"context"
	"fmt"
	"net"
	"reflect"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/proxy/upstream"
	"github.com/meshd/meshd/resilience"
	"github.com/meshd/meshd/router"
	"github.com/meshd/meshd/telemetry"
	meshtls "github.com/meshd/meshd/tls"
)

// Snapshot is everything one request needs, compiled from one config and never mutated
// after Compile returns (the atomics inside counters and balancers aside). Callers see
// it through methods only, so nothing they hold can change it.
type Snapshot struct {
	config    *config.Config
	version   string
	node      string
	source    string
	appliedAt time.Time
	table     *router.Table

	clusters map[string]*upstream.Cluster
	// policies holds each route's compiled policy, indexed by router.Route.ID.
	policies  []*RoutePolicy
	listeners map[int]*ListenerLimit // ingress listener rate limits by port
	authz     map[int]*ListenerAuthz // ingress listener authorization policies by port
	tls       map[int]*listenerTLS   // ingress listeners that terminate TLS, by port
	clock     resilience.Clock

	// observers get every finished L7 request (the node's access log).
	observers []telemetry.Observer

	// clusterTLS is the client policy (without its field path) each cluster that
	// originates TLS was built with: part of a cluster's identity across reloads.
	clusterTLS map[string]*meshtls.ClientPlan
	// mirrorSlots counts the copies in flight to each mirror cluster, by cluster name
	// (mirror.go).
	mirrorSlots map[string]*atomic.Int64

	// gw is the virtual gateway the snapshot serves (CompileGateway); nil for a node.
	gw *gatewayState

	egressAllowAll bool
	// localNodePort is the node's only listener port, used by the ingress listener when a
	// connection arrived without an original destination (no iptables redirect); 0 when
	// the node has several listeners (or none).
	localNodePort int
}

// Config is the config the snapshot was compiled from. Read only: it is shared.
func (s *Snapshot) Config() *config.Config { return s.config }

// Version is the config's digest, the ETag of the admin API.
func (s *Snapshot) Version() string { return s.version }

// Node is the virtual node the snapshot serves.
func (s *Snapshot) Node() string { return s.node }

// Source says where the config came from (file:PATH, url:URL, admin:...).
func (s *Snapshot) Source() string { return s.source }

// AppliedAt is when the snapshot was compiled.
func (s *Snapshot) AppliedAt() time.Time { return s.appliedAt }

// Table is the snapshot's routing table (immutable).
func (s *Snapshot) Table() *router.Table { return s.table }

// Cluster returns the cluster called name, nil if the snapshot has none.
func (s *Snapshot) Cluster(name string) *upstream.Cluster { return s.clusters[name] }

// Clusters returns the snapshot's clusters by name. The map is shared: read only.
func (s *Snapshot) Clusters() map[string]*upstream.Cluster { return s.clusters }

// Policy returns rt's compiled policy; nil for a route outside the table (passthrough),
// which is neither retried nor limited.
func (s *Snapshot) Policy(rt *router.Route) *RoutePolicy {
	if rt.ID < len(s.policies) && s.table.Routes()[rt.ID] == rt {
		return s.policies[rt.ID]
	}
	return nil
}

// Policies lists every route's policy, in route ID order (admin views).
func (s *Snapshot) Policies() []*RoutePolicy { return s.policies }

// ListenerLimits are the ingress listeners' rate limits by port (admin views).
func (s *Snapshot) ListenerLimits() map[int]*ListenerLimit { return s.listeners }

// Observers get every finished L7 request served on the snapshot (shared: read only).
func (s *Snapshot) Observers() []telemetry.Observer { return s.observers }

// EgressAllowAll reports whether the mesh's egressFilter is ALLOW_ALL.
func (s *Snapshot) EgressAllowAll() bool { return s.egressAllowAll }

// IngressPort is the node listener an ingress connection was addressed to: its
// original destination port (local), else the node's only listener; 0 when neither
// says. It is the one place the rule lives.
func (s *Snapshot) IngressPort(local int) int {
	if local != 0 {
		return local
	}
	return s.localNodePort
}

// Options carries what Compile needs from the server.
type Options struct {
	// Registry returns the registry that follows DNS names for a config whose
	// mesh.spec.serviceDiscovery.dnsResolvers are the given ones (none: the default).
	Registry func(resolvers []string) *discovery.Registry
	// FirstResolveWait bounds how long Compile waits for the first answer of the names a
	// new cluster follows, so a new config serves at once when DNS answers; a name that
	// has not resolved by then leaves its cluster empty (503 no_healthy_upstream) until
	// it does. Default 2s.
	FirstResolveWait time.Duration
	Cluster          upstream.Options
	// AccessLog opens (or returns the one already open for the same path and format)
	// the writer of a node's logging.accessLog.file. An error rejects the config: an
	// access log the config asks for is never quietly not written. Nil: access logs are
	// refused with an error naming the field.
	AccessLog func(f *config.FileAccessLog) (telemetry.Observer, error)
	// TLS loads the certificate sources of the node's listener and client policy tls
	// blocks; its owner (proxy.Server) closes it. Nil: tls blocks that need a source are
	// refused with an error naming the field.
	TLS *meshtls.Loader
	// Ready reports whether the server is ready; a gateway's listener health checks
	// answer 200 while it is, 503 otherwise (CompileGateway). Nil: always.
	Ready func() bool
}

// DefaultFirstResolveWait is Options.FirstResolveWait's default.
const DefaultFirstResolveWait = 2 * time.Second

// Compile turns cfg into a Snapshot for node. The node's listener and client policy tls
// blocks are planned and loaded first (opts.TLS; a plan meshd cannot honour or a source
// that does not load rejects the config, naming the field; a listener whose tls block,
// protocol and mesh did not change keeps prev's loaded one); a backend service whose
// policy originates TLS to a target gets a cluster of its own for it
// ("<target>@<service>", SNI the service name). Clusters whose definition, discovery
// plan and TLS policy did not change are carried over from prev (with their connection
// pools, endpoint state, counters and the names they follow). New clusters start
// following their names; Compile waits for the first answers at most FirstResolveWait,
// and a name that does not resolve is no error: its cluster stays empty until it does.
// Compile does not change prev: on error, the clusters it built are closed and prev
// serves on untouched.
func Compile(ctx context.Context, cfg *config.Config, node, source string, prev *Snapshot, opts Options) (*Snapshot, error) {
	return compile(ctx, cfg, nil, node, source, prev, opts)
}

// compile is Compile with cfg's version from version when the caller computes it (nil:
// computed here); Holder.Apply computes it beside the compile.
func compile(ctx context.Context, cfg *config.Config, version func() string, node, source string, prev *Snapshot, opts Options) (_ *Snapshot, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	idx := slices.IndexFunc(cfg.VirtualNodes, func(vn config.VirtualNode) bool { return vn.VirtualNodeName == node })
	if idx < 0 {
		return nil, fmt.Errorf("node %q: no virtual node of that name in the config", node)
	}
	vn := &cfg.VirtualNodes[idx]
	lisTLS, err := compileListenerTLS(ctx, cfg, idx, prev, opts.TLS)
	if err != nil {
		return nil, fmt.Errorf("virtual node %q: %w", node, err)
	}
	orig, err := compileOrigination(ctx, cfg, idx, opts.TLS)
	if err != nil {
		return nil, err
	}
	table, err := router.CompileWith(cfg, node, router.Options{OwnCluster: orig.ownCluster})
	if err != nil {
		return nil, fmt.Errorf("compile routes for node %q: %w", node, err)
	}
	if version == nil {
		version = cfg.Digest
	}
	clock := opts.Cluster.Clock
	if clock == nil {
		clock = resilience.SystemClock{}
	}
	s := &Snapshot{
		config:    cfg,
		node:      node,
		source:    source,
		appliedAt: time.Now(),
		table:     table,
		clusters:  make(map[string]*upstream.Cluster),
		clock:     clock,
		tls:       lisTLS,

		clusterTLS: make(map[string]*meshtls.ClientPlan),
	}
	defer func() {
		if err != nil {
			s.Retire(prev) // closes what this compile built, never prev's clusters
		}
	}()
	if err := s.compilePolicies(vn, prev); err != nil {
		return nil, err
	}
	if err := s.compileAuthz(cfg, vn, prev); err != nil {
		return nil, err
	}
	if lg := vn.Spec.Logging; lg != nil && lg.AccessLog != nil && lg.AccessLog.File != nil {
		if opts.AccessLog == nil {
			return nil, fmt.Errorf("virtual node %q: spec.logging.accessLog.file: access logs are not available in this build", node)
		}
		o, err := opts.AccessLog(lg.AccessLog.File)
		if err != nil {
			return nil, fmt.Errorf("virtual node %q: spec.logging.accessLog.file.path %q: %w", node, lg.AccessLog.File.Path, err)
		}
		s.observers = append(s.observers, o)
	}
	if f := cfg.Mesh.Spec.EgressFilter; f != nil && f.Type == config.EgressAllowAll {
		s.egressAllowAll = true
	}
	if len(vn.Spec.Listeners) == 1 {
		s.localNodePort = vn.Spec.Listeners[0].PortMapping.Port
	}
	copts := opts.Cluster
	copts.Counters = prev.clusterCounters
	copts.L4Stats = prev.clusterL4Stats
	copts.Stats = prev.clusterStats
	copts.TLSStats = prev.clusterTLSStats
	meshPref := ""
	var resolvers []string
	if sd := cfg.Mesh.Spec.ServiceDiscovery; sd != nil {
		meshPref, resolvers = sd.IPPreference, sd.DNSResolvers
	}
	reg := opts.Registry(resolvers)
	var waits []<-chan struct{}
	for _, ref := range table.Clusters() {
		plan, err := planFor(ref, meshPref)
		if err != nil {
			return nil, fmt.Errorf("cluster %q: %w", ref.Name, err)
		}
		tlsOrigin, tlsID, err := orig.forCluster(ref)
		if err != nil {
			return nil, err
		}
		var c *upstream.Cluster
		if prev != nil {
			if old := prev.clusters[ref.Name]; old != nil && sameClusterDef(old.Ref(), ref) && old.Plan().Equal(plan) && old.Registry() == reg &&
				sameOrigination(prev.clusterTLS[ref.Name], tlsID) {
				c = old // it keeps following its names: same names, same way
			}
		}
		if tlsID != nil {
			s.clusterTLS[ref.Name] = tlsID
		}
		if c == nil {
			o := copts
			o.TLS = tlsOrigin
			if prev != nil {
				if old := prev.clusters[ref.Name]; old != nil {
					o.Known = old.Balancer().Addresses()
				}
			}
			c = upstream.New(ref, o)
			c.Follow(reg, plan)
			waits = append(waits, c.Resolved()...)
			for _, w := range plan.Warnings {
				telemetry.OrDiscard(copts.Log).Warn("service discovery setting ignored", "cluster", ref.Name, "detail", w)
			}
		}
		s.clusters[ref.Name] = c
	}
	s.compileMirrors(prev)
	waitFirstAnswers(ctx, waits, opts.FirstResolveWait)
	s.version = version()
	return s, nil
}

// planFor is the discovery plan of a cluster: the local app for an ingress cluster,
// else the target node's serviceDiscovery at the listener port.
func planFor(ref router.ClusterRef, meshPref string) (discovery.Plan, error) {
	if ref.Local {
		return discovery.Plan{Fixed: []discovery.Endpoint{{Address: net.JoinHostPort("127.0.0.1", strconv.Itoa(ref.Port)), Weight: 1}}}, nil
	}
	return discovery.PlanFor(ref.Discovery, ref.Port, meshPref)
}

// waitFirstAnswers waits until every channel is closed, wait passes (0: the default) or
// ctx ends, whichever is first.
func waitFirstAnswers(ctx context.Context, chans []<-chan struct{}, wait time.Duration) {
	if len(chans) == 0 {
		return
	}
	if wait <= 0 {
		wait = DefaultFirstResolveWait
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	for _, ch := range chans {
		select {
		case <-ch:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// sameClusterDef reports whether a cluster can be carried over unchanged: same target,
// protocol, balancing and listener settings. Endpoints may differ; they are updated.
func sameClusterDef(a, b router.ClusterRef) bool {
	return a.Name == b.Name && a.Node == b.Node && a.Port == b.Port && a.Protocol == b.Protocol &&
		a.Local == b.Local && a.LBPolicy == b.LBPolicy && a.Service == b.Service && reflect.DeepEqual(a.Listener, b.Listener) &&
		reflect.DeepEqual(a.LB, b.LB)
}

// Retire releases what s holds that next no longer uses: clusters that were not carried
// over close their idle upstream connections. Connections in use finish their request
// and are closed when returned. A nil s does nothing; a nil next retires everything.
func (s *Snapshot) Retire(next *Snapshot) {
	if s == nil {
		return
	}
	for name, c := range s.clusters {
		if next == nil || next.clusters[name] != c {
			c.Close()
		}
	}
}

// clusterCounters returns the counters of s's cluster name, nil if s has none.
func (s *Snapshot) clusterCounters(name string) *resilience.Counters {
	if s == nil {
		return nil
	}
	if c := s.clusters[name]; c != nil {
		return c.Counters()
	}
	return nil
}

// clusterStats returns the request statistics of s's cluster name, nil if none.
func (s *Snapshot) clusterStats(name string) *telemetry.HTTPStats {
	if s == nil {
		return nil
	}
	if c := s.clusters[name]; c != nil {
		return c.Stats()
	}
	return nil
}

// clusterTLSStats returns the TLS handshake counters of s's cluster name, nil if none.
func (s *Snapshot) clusterTLSStats(name string) *meshtls.HandshakeStats {
	if s == nil {
		return nil
	}
	if c := s.clusters[name]; c != nil {
		return c.TLSStats()
	}
	return nil
}

// clusterL4Stats returns the L4 counters of s's cluster name, nil if none.
func (s *Snapshot) clusterL4Stats(name string) *upstream.L4Stats {
	if s == nil {
		return nil
	}
	if c := s.clusters[name]; c != nil {
		return c.L4()
	}
	return nil
}

// NodeListenerPorts lists the node's listener ports in s.
func (s *Snapshot) NodeListenerPorts() map[int]bool {
	ports := map[int]bool{}
	if s == nil || s.config == nil {
		return ports
	}
	if vn := s.config.VirtualNode(s.node); vn != nil {
		for _, l := range vn.Spec.Listeners {
			ports[l.PortMapping.Port] = true
		}
	}
	return ports
}
