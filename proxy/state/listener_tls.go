package state

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync/atomic"

	"github.com/meshd/meshd/config"
	meshtls "github.com/meshd/meshd/tls"
)

// listenerTLS is the loaded tls block of one node listener, with what it was loaded
// from, so that the next compile can carry it over unchanged, and its counters.
type listenerTLS struct {
	plan  *meshtls.ListenerPlan
	proto string
	lis   *meshtls.Listener
	stats *ListenerTLSStats
}

// ListenerTLSStats count the TLS of one ingress listener port. They are carried across
// reloads while the port keeps terminating TLS, whatever else its tls block changes.
type ListenerTLSStats struct {
	// Handshakes counts the handshakes by result (meshtls.HandshakeStats: /stats
	// listener.ingress:<port>.ssl.*, meshd_tls_handshakes_total{side="server"}).
	Handshakes meshtls.HandshakeStats
	// Plaintext counts the connections a PERMISSIVE listener served in plaintext: the
	// callers still to move to TLS before the listener can be STRICT.
	Plaintext atomic.Uint64
}

// ListenerTLS is the TLS that the node listener on port terminates: its mode (STRICT or
// PERMISSIVE), its server configuration (which reads the certificate and trust sources
// at every handshake, so rotation needs no new snapshot) and the mesh name callers'
// SPIFFE IDs are read against. Nil when that listener serves plaintext (no tls block, or
// mode DISABLED) or the node has no listener on port.
func (s *Snapshot) ListenerTLS(port int) *meshtls.Listener {
	if t := s.tls[port]; t != nil {
		return t.lis
	}
	return nil
}

// ListenerTLSStats are the counters of the node listener on port that terminates TLS;
// nil when ListenerTLS(port) is.
func (s *Snapshot) ListenerTLSStats(port int) *ListenerTLSStats {
	if t := s.tls[port]; t != nil {
		return t.stats
	}
	return nil
}

// TLSListeners are the counters of every node listener that terminates TLS, by port.
func (s *Snapshot) TLSListeners() map[int]*ListenerTLSStats {
	out := make(map[int]*ListenerTLSStats, len(s.tls))
	for port, t := range s.tls {
		out[port] = t.stats
	}
	return out
}

// compileListenerTLS loads the tls blocks of node vn's listeners (vn is
// cfg.VirtualNodes[idx]) through loader. A listener whose plan, protocol and mesh did
// not change keeps prev's loaded listener (and with it the server configuration's
// session ticket keys). An error names the field: a plan meshd cannot honour, or a
// source that does not load (a missing or expired file, an SPIFFE secret the agent does
// not offer).
func compileListenerTLS(ctx context.Context, cfg *config.Config, idx int, prev *Snapshot, loader *meshtls.Loader) (map[int]*listenerTLS, error) {
	vn := &cfg.VirtualNodes[idx]
	out := map[int]*listenerTLS{}
	var errs []error
	for j, l := range vn.Spec.Listeners {
		path := fmt.Sprintf("virtualNodes[%d].spec.listeners[%d].tls", idx, j)
		plan, err := meshtls.PlanListener(path, l.TLS)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if plan.Mode == meshtls.ModeDisabled {
			continue
		}
		port, proto := l.PortMapping.Port, l.PortMapping.Protocol
		stats := &ListenerTLSStats{}
		if prev != nil {
			if old := prev.tls[port]; old != nil {
				if old.proto == proto && old.lis.Mesh == cfg.Mesh.MeshName && reflect.DeepEqual(old.plan, plan) {
					out[port] = old
					continue
				}
				stats = old.stats
			}
		}
		if loader == nil {
			errs = append(errs, &config.Errors{List: []config.FieldError{{Path: path + ".mode", Value: plan.Mode,
				Msg: "TLS termination is not available in this build (no certificate loader)"}}})
			continue
		}
		lis, err := loader.Listener(ctx, plan)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// The loader's mesh is fixed when it is made; the config in force names the
		// mesh whose SPIFFE IDs callers carry (Identity.Node).
		lis.Mesh = cfg.Mesh.MeshName
		if proto == config.ProtoTCP {
			// Opaque TCP has no application protocol to agree on: a client offering h2
			// must not be told the app speaks it.
			c := lis.Config.Clone()
			c.NextProtos = nil
			lis.Config = c
		}
		out[port] = &listenerTLS{plan: plan, proto: proto, lis: lis, stats: stats}
	}
	if len(errs) > 0 {
		return nil, joinConfigErrors(errs)
	}
	return out, nil
}

// joinConfigErrors merges the *config.Errors among errs into one, so the apply
// pipeline reports every field; anything else is joined as is.
func joinConfigErrors(errs []error) error {
	all := &config.Errors{}
	var other []error
	for _, err := range errs {
		var ce *config.Errors
		if errors.As(err, &ce) {
			all.List = append(all.List, ce.List...)
			continue
		}
		other = append(other, err)
	}
	if len(other) == 0 {
		return all
	}
	if len(all.List) > 0 {
		other = append(other, all)
	}
	return errors.Join(other...)
}
