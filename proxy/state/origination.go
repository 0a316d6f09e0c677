package state

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/proxy/upstream"
	"github.com/meshd/meshd/router"
	meshtls "github.com/meshd/meshd/tls"
)

// backendTLS is the client policy tls block in effect for one backend virtual service:
// its own clientPolicy.tls, else backendDefaults.clientPolicy.tls (App Mesh: a
// backend's policy replaces the defaults).
type backendTLS struct {
	plan   *meshtls.ClientPlan
	client *meshtls.Client
}

// origination is node vn's TLS origination: the policy in effect for each backend
// service (by lower-case name without a trailing dot, as the router keys them).
type origination map[string]*backendTLS

func serviceKey(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) }

// compileOrigination plans and loads the client policy tls blocks of node vn, the
// virtual node at index idx of cfg. Plans are checked first (no I/O); then every policy
// that enforces TLS is loaded through loader, once per block (the defaults serve every
// backend without a policy of its own). Errors are *config.Errors naming the field.
func compileOrigination(ctx context.Context, cfg *config.Config, idx int, loader *meshtls.Loader) (origination, error) {
	plans, order, err := clientPlans(cfg, idx)
	if err != nil {
		return nil, err
	}
	out := origination{}
	loaded := map[*meshtls.ClientPlan]*meshtls.Client{}
	for _, k := range order {
		p := plans[k]
		if p == nil || !p.Enforce {
			continue
		}
		cl, ok := loaded[p]
		if !ok {
			if loader == nil {
				return nil, &config.Errors{List: []config.FieldError{{Path: p.Path, Msg: "TLS origination is not available in this build"}}}
			}
			var err error
			if cl, err = loader.Client(ctx, p); err != nil {
				return nil, err
			}
			loaded[p] = cl
		}
		out[k] = &backendTLS{plan: p, client: cl}
	}
	return out, nil
}

// EnforcedClientPlans are the client policies that originate TLS for the backends of
// cfg's virtual node at index idx, each once, in backend order: the ones Compile loads
// (`meshd validate --node` reads their files the same way). A policy no backend uses
// (defaults every backend overrides) is not among them. Errors are *config.Errors
// naming the field.
func EnforcedClientPlans(cfg *config.Config, idx int) ([]*meshtls.ClientPlan, error) {
	plans, order, err := clientPlans(cfg, idx)
	if err != nil {
		return nil, err
	}
	var out []*meshtls.ClientPlan
	for _, k := range order {
		if p := plans[k]; p != nil && p.Enforce && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// clientPlans plans the client policy tls block in effect for each backend service of
// node idx (by serviceKey; nil: no tls block), and the services in backend order, so
// that the first error is always the same. A plan is shared by the backends it serves.
func clientPlans(cfg *config.Config, idx int) (map[string]*meshtls.ClientPlan, []string, error) {
	vn := &cfg.VirtualNodes[idx]
	spec := fmt.Sprintf("virtualNodes[%d].spec", idx)
	var problems []config.FieldError
	plan := func(path string, cp *config.ClientPolicy) *meshtls.ClientPlan {
		if cp == nil || cp.TLS == nil {
			return nil
		}
		p, err := meshtls.PlanClient(path+".tls", cp.TLS)
		if err != nil {
			var fe *config.Errors
			if errors.As(err, &fe) {
				problems = append(problems, fe.List...)
			} else {
				problems = append(problems, config.FieldError{Path: path + ".tls", Msg: err.Error()})
			}
			return nil
		}
		return p
	}
	var defaults *meshtls.ClientPlan
	if bd := vn.Spec.BackendDefaults; bd != nil {
		defaults = plan(spec+".backendDefaults.clientPolicy", bd.ClientPolicy)
	}
	plans := map[string]*meshtls.ClientPlan{}
	var order []string
	for j, b := range vn.Spec.Backends {
		vs := b.VirtualService
		if vs == nil {
			continue
		}
		p := plan(fmt.Sprintf("%s.backends[%d].virtualService.clientPolicy", spec, j), vs.ClientPolicy)
		if vs.ClientPolicy == nil || vs.ClientPolicy.TLS == nil {
			p = defaults
		}
		if k := serviceKey(vs.VirtualServiceName); !slices.Contains(order, k) {
			plans[k] = p // the first backend of a name is the one the router serves
			order = append(order, k)
		}
	}
	if len(problems) > 0 {
		return nil, nil, &config.Errors{List: problems}
	}
	return plans, order, nil
}

// ownCluster is router.Options.OwnCluster: a service whose policy originates TLS to the
// target's port reaches it through a cluster of its own (its SNI, its certificates).
// The port is the target listener's: the backend port the connection goes to.
func (o origination) ownCluster(service string, target router.ClusterRef) bool {
	b := o[serviceKey(service)]
	return b != nil && b.client.AppliesTo(target.Port)
}

// forCluster is the TLS origination of the cluster ref (one of its own, Service set),
// and the identity of its policy for the carry-over (the plan without its field path);
// nil, nil for a cluster that originates no TLS.
func (o origination) forCluster(ref router.ClusterRef) (*upstream.TLS, *meshtls.ClientPlan, error) {
	if ref.Service == "" {
		return nil, nil, nil
	}
	b := o[serviceKey(ref.Service)]
	if b == nil {
		return nil, nil, fmt.Errorf("cluster %s: no client policy for virtual service %s", ref.Name, ref.Service)
	}
	cfg, err := b.client.Config(ref.Service)
	if err != nil {
		return nil, nil, &config.Errors{List: []config.FieldError{{Path: b.plan.Path, Value: ref.Service, Msg: err.Error()}}}
	}
	id := *b.plan
	id.Path = ""
	return &upstream.TLS{Config: cfg, Policy: b.plan.Path}, &id, nil
}

// sameOrigination reports whether a cluster carried over keeps the TLS policy it was
// built with: a cluster dialling with an old policy's certificates or trust must not
// survive a reload that changed them.
func sameOrigination(a, b *meshtls.ClientPlan) bool {
	return reflect.DeepEqual(a, b)
}
