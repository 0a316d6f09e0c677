package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/resilience"
	"github.com/meshd/meshd/router"
)

// Snapshot is everything one request needs, compiled from one config and never
// mutated after Compile returns. The server publishes it with an atomic pointer; a
// request loads it once and finishes on it even if a newer one is swapped in.
type Snapshot struct {
	Config    *config.Config
	Version   string
	Node      string
	Source    string
	AppliedAt time.Time
	Table     *router.Table

	clusters       map[string]*cluster
	egressAllowAll bool
	// localNodePort is the node's only listener port, used by the ingress listener when a
	// connection arrived without an original destination (no iptables redirect).
	localNodePort int
	// carried are the clusters taken over from the previous snapshot with their new
	// endpoint sets, applied by commit: until the swap, the serving snapshot's clusters
	// stay exactly as they were, so a config rejected late changes nothing.
	carried []carriedCluster
	// res holds per-route retry policies, rate limits and counters (retry.go).
	res *snapResilience
}

type carriedCluster struct {
	c   *cluster
	eps []discovery.Endpoint
}

// commit gives the carried clusters their new endpoint sets, right before the swap.
// Endpoints that stay keep their pools, in-flight counts and health (balancer.Update).
func (s *Snapshot) commit() {
	for _, cc := range s.carried {
		cc.c.bal.Update(cc.eps)
	}
	s.carried = nil
}

// compileOptions carries what compile needs from the server.
type compileOptions struct {
	resolver       discovery.Resolver
	connectTimeout time.Duration
	streamIdle     time.Duration
	dialer         *net.Dialer
	clock          resilience.Clock
	log            *slog.Logger
	// counters returns the counters a cluster of that name had in the previous
	// snapshot (nil if none), so /stats survives reloads that rebuild a cluster.
	counters func(name string) *resilience.Counters
	// l4Stats likewise returns that cluster's L4 counters: its active gauge is what
	// connectionPool.tcp.maxConnections limits, and connections opened before a reload
	// that rebuilt the cluster still count against the limit.
	l4Stats func(name string) *l4Stats
}

// compile turns a validated config into a Snapshot for node. Clusters whose definition
// did not change are carried over from prev (with their connection pools, in-flight
// counts and counters); their endpoint sets are refreshed by commit. compile does not
// change prev: on error, the clusters it built are closed and prev serves on untouched.
func compile(ctx context.Context, cfg *config.Config, node, source string, prev *Snapshot, opts compileOptions) (_ *Snapshot, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var vn *config.VirtualNode
	for i := range cfg.VirtualNodes {
		if cfg.VirtualNodes[i].VirtualNodeName == node {
			vn = &cfg.VirtualNodes[i]
		}
	}
	if vn == nil {
		return nil, fmt.Errorf("node %q: no virtual node of that name in the config", node)
	}
	table, err := router.Compile(cfg, node)
	if err != nil {
		return nil, fmt.Errorf("compile routes for node %q: %w", node, err)
	}
	s := &Snapshot{
		Config:    cfg,
		Version:   cfg.Digest(),
		Node:      node,
		Source:    source,
		AppliedAt: time.Now(),
		Table:     table,
		clusters:  make(map[string]*cluster),
	}
	defer func() {
		if err != nil {
			s.retire(prev) // closes what this compile built, never prev's clusters
		}
	}()
	opts.counters = prev.clusterCounters
	opts.l4Stats = prev.clusterL4Stats
	if s.res, err = compileResilience(cfg, vn, table, prev.resilienceTable(), opts.clock); err != nil {
		return nil, err
	}
	if f := cfg.Mesh.Spec.EgressFilter; f != nil && f.Type == config.EgressAllowAll {
		s.egressAllowAll = true
	}
	if len(vn.Spec.Listeners) == 1 {
		s.localNodePort = vn.Spec.Listeners[0].PortMapping.Port
	}
	for _, ref := range table.Clusters() {
		eps, err := resolveEndpoints(ctx, ref, opts.resolver)
		if err != nil {
			return nil, fmt.Errorf("cluster %q: %w", ref.Name, err)
		}
		var c *cluster
		if prev != nil {
			if old := prev.clusters[ref.Name]; old != nil && sameClusterDef(old.ref, ref) {
				c = old
			}
		}
		if c == nil {
			c = newCluster(ref, opts)
			c.bal.Update(eps)
		} else {
			s.carried = append(s.carried, carriedCluster{c: c, eps: eps})
		}
		s.clusters[ref.Name] = c
	}
	return s, nil
}

func resolveEndpoints(ctx context.Context, ref router.ClusterRef, r discovery.Resolver) ([]discovery.Endpoint, error) {
	if ref.Local {
		return []discovery.Endpoint{{Address: net.JoinHostPort("127.0.0.1", fmt.Sprint(ref.Port)), Weight: 1}}, nil
	}
	return discovery.Resolve(ctx, ref.Discovery, ref.Port, r)
}

// sameClusterDef reports whether a cluster can be carried over unchanged: same target,
// protocol, balancing and listener settings. Endpoints may differ; they are updated.
func sameClusterDef(a, b router.ClusterRef) bool {
	return a.Name == b.Name && a.Node == b.Node && a.Port == b.Port && a.Protocol == b.Protocol &&
		a.Local == b.Local && a.LBPolicy == b.LBPolicy && reflect.DeepEqual(a.Listener, b.Listener)
}

// retire releases what old holds that next no longer uses: clusters that were not
// carried over close their idle upstream connections. Connections in use finish their
// request and are closed when returned.
func (old *Snapshot) retire(next *Snapshot) {
	if old == nil {
		return
	}
	for name, c := range old.clusters {
		if next == nil || next.clusters[name] != c {
			c.close()
		}
	}
}
