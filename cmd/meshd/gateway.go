package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/proxy/state"
	meshtls "github.com/meshd/meshd/tls"
)

// checkServed settles what meshd run serves, a virtual node or a virtual gateway, from
// the command line and the environment: a name given on the command line wins over the
// environment's (whose App Mesh mesh is then not asked for); an environment value that
// does not parse stops run naming it; the ingress and egress flags have nothing to do
// on a gateway and --gateway-bind nothing on a node, so setting them is refused.
func (f *runFlags) checkServed(fs *flag.FlagSet, stderr io.Writer) int {
	nodeCLI, gwCLI := flagSet(fs, "node"), flagSet(fs, "gateway")
	switch {
	case nodeCLI || gwCLI:
		f.nodeEnv = nodeEnv{} // the command line's name: the environment's mesh is not asked for
		if !gwCLI {
			f.gateway = ""
		}
		if !nodeCLI {
			f.node = ""
		}
	case f.nodeEnvErr != nil:
		fmt.Fprintln(stderr, "meshd run:", f.nodeEnvErr)
		return 2
	}
	if f.node != "" && f.gateway != "" {
		fmt.Fprintf(stderr, "meshd run: node %q and gateway %q are both named (--node / MESHD_NODE, --gateway / MESHD_GATEWAY or an App Mesh variable): a meshd serves one of them\n", f.node, f.gateway)
		return 2
	}
	if f.gateway != "" {
		for _, n := range []string{"ingress-port", "egress-port", "ingress-bind", "egress-bind"} {
			if flagSet(fs, n) {
				fmt.Fprintf(stderr, "meshd run: --%s: a gateway has no ingress or egress listener (its listeners are the config's, bound on --gateway-bind)\n", n)
				return 2
			}
		}
	} else if flagSet(fs, "gateway-bind") {
		fmt.Fprintln(stderr, "meshd run: --gateway-bind is for --gateway; a node binds --ingress-bind and --egress-bind")
		return 2
	}
	return 0
}

// warnGatewayEnv names, at start, the environment variables of a sidecar's listeners
// that a gateway does not use, and MESHD_GATEWAY_BIND on a node.
func (f *runFlags) warnGatewayEnv(logger *slog.Logger) {
	vars := []string{"MESHD_INGRESS_PORT", "APPMESH_ENVOY_INGRESS_PORT", "MESHD_EGRESS_PORT", "APPMESH_ENVOY_EGRESS_PORT", "MESHD_INGRESS_BIND", "MESHD_EGRESS_BIND"}
	way := "a gateway binds the listeners of its config on --gateway-bind: unset them"
	if f.gateway == "" {
		vars, way = []string{"MESHD_GATEWAY_BIND"}, "it is for --gateway; a node binds --ingress-bind and --egress-bind: unset it"
	}
	for _, n := range vars {
		if os.Getenv(n) != "" {
			logger.Warn("environment variable not used", "env", n, "detail", way)
		}
	}
}

// validateGatewayTLS reads the certificate and trust files of the gateway's listener
// tls blocks and of the client policy that originates TLS to its targets, as meshd run
// reads them (SDS sources are not dialled: the agent serves the host meshd runs on).
// Errors name the gateway's fields.
func validateGatewayTLS(cfg *config.Config, sp *state.StandIn) error {
	ld := meshtls.NewLoader(meshtls.LoaderOptions{Mesh: cfg.Mesh.MeshName})
	defer ld.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	all := &config.Errors{}
	add := func(err error) error {
		var ce *config.Errors
		if !errors.As(err, &ce) {
			return err
		}
		all.List = append(all.List, ce.List...)
		return nil
	}
	for j, l := range cfg.VirtualGateways[sp.Gateway].Spec.Listeners {
		plan, err := meshtls.PlanListener(fmt.Sprintf("virtualGateways[%d].spec.listeners[%d].tls", sp.Gateway, j), l.TLS)
		if err == nil && plan.Mode != meshtls.ModeDisabled && !usesSDS(plan) {
			_, err = ld.Listener(ctx, plan)
		}
		if err != nil {
			if err := add(err); err != nil {
				return err
			}
		}
	}
	plans, err := state.EnforcedClientPlans(sp.Config, sp.Node)
	if err != nil {
		return sp.Rename(err)
	}
	for _, p := range plans {
		if clientUsesSDS(p) {
			continue
		}
		if _, err := ld.Client(ctx, p); err != nil {
			if err := add(sp.Rename(err)); err != nil {
				return err
			}
		}
	}
	if len(all.List) > 0 {
		return all
	}
	return nil
}
