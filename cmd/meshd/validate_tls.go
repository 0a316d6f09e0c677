package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/proxy/state"
	meshtls "github.com/meshd/meshd/tls"
)

// validateTLS is what meshd validate checks of the tls blocks: every setting meshd
// cannot honour (meshtls.Unsupported: ACM, SDS secret names a SPIFFE Workload API cannot
// serve), in every virtual node and gateway, is an error naming the field; with --node,
// the certificate and trust files of that node's listeners and of the client policies
// that originate TLS to its backends (state.EnforcedClientPlans: the ones meshd run
// loads) are read as meshd run reads them (a missing, unreadable, mismatched or expired
// file is an error naming the field).
// SDS sources are not dialled: the SPIRE agent serves the node where it runs.
func validateTLS(cfg *config.Config, node string) error {
	if list := meshtls.Unsupported(cfg); len(list) > 0 {
		return &config.Errors{List: list}
	}
	if node == "" {
		return nil
	}
	idx := -1
	for i := range cfg.VirtualNodes {
		if cfg.VirtualNodes[i].VirtualNodeName == node {
			idx = i
		}
	}
	if idx < 0 {
		return nil // router.Compile names the missing node
	}
	ld := meshtls.NewLoader(meshtls.LoaderOptions{Mesh: cfg.Mesh.MeshName})
	defer ld.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	all := &config.Errors{}
	for j, l := range cfg.VirtualNodes[idx].Spec.Listeners {
		plan, err := meshtls.PlanListener(fmt.Sprintf("virtualNodes[%d].spec.listeners[%d].tls", idx, j), l.TLS)
		if err == nil && plan.Mode != meshtls.ModeDisabled && !usesSDS(plan) {
			_, err = ld.Listener(ctx, plan)
		}
		if err != nil {
			var ce *config.Errors
			if !errors.As(err, &ce) {
				return err
			}
			all.List = append(all.List, ce.List...)
		}
	}
	plans, err := state.EnforcedClientPlans(cfg, idx)
	if err != nil {
		return err
	}
	for _, p := range plans {
		if clientUsesSDS(p) {
			continue
		}
		if _, err := ld.Client(ctx, p); err != nil {
			var ce *config.Errors
			if !errors.As(err, &ce) {
				return err
			}
			all.List = append(all.List, ce.List...)
		}
	}
	if len(all.List) > 0 {
		return all
	}
	return nil
}

func usesSDS(p *meshtls.ListenerPlan) bool {
	return (p.Certificate != nil && p.Certificate.SDS != "") || (p.Trust != nil && p.Trust.SDS != "")
}

func clientUsesSDS(p *meshtls.ClientPlan) bool {
	return (p.Certificate != nil && p.Certificate.SDS != "") || p.Trust.SDS != ""
}
