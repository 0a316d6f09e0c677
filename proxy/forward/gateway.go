package forward

import (
	"strconv"
	"strings"

	"github.com/meshd/meshd/proxy/state"
	"github.com/meshd/meshd/router"
)

// GRPCHealthCheckPath is the gRPC health checking protocol's Check method, which a
// gateway listener with a grpc healthCheck answers itself.
const GRPCHealthCheckPath = "/grpc.health.v1.Health/Check"

// The serving status of a grpc.health.v1.HealthCheckResponse (its enum's numbers).
const (
	GRPCServing    = 1
	GRPCNotServing = 2
)

// GRPCHealthMessage is the length-prefixed gRPC message of a HealthCheckResponse with
// status st: the protobuf of field 1 (varint), framed uncompressed.
func GRPCHealthMessage(st uint8) []byte {
	return []byte{0, 0, 0, 0, 2, 0x08, st}
}

// resolveGateway routes one request that arrived on listener port of the virtual
// gateway snap serves: meshd's own answer to the listener's health check; else the
// first gateway route that matches, whose rewrites (path, Host) apply; then the target
// virtual service routes the rewritten request with its own routes, as a sidecar's
// egress would (Table.Egress: the stand-in node's backends are the targets). A
// rewrite allocates its strings: the gateway pays for what it changes.
func resolveGateway(snap *state.Snapshot, gw *router.Gateway, rr *router.Request, port int, rnd uint64) Decision {
	l := gw.Listeners[port]
	if l == nil {
		return Decision{Status: 404, Code: CodeNoListener,
			Msg: "meshd: gateway " + gw.Name + " has no listener on port " + strconv.Itoa(port) + "\n"}
	}
	rr.Port = port
	if l.HealthPath != "" && (rr.Method == "GET" || rr.Method == "HEAD") {
		if p, _, _ := strings.Cut(rr.Path, "?"); p == l.HealthPath {
			if snap.GatewayReady() {
				return Decision{Status: 200, Code: CodeHealthCheck, Msg: "OK\n"}
			}
			return Decision{Status: 503, Code: CodeHealthCheck, Msg: "meshd: gateway " + gw.Name + " is not ready\n"}
		}
	}
	if l.GRPCHealth && rr.GRPC && rr.Path == GRPCHealthCheckPath {
		if snap.GatewayReady() {
			return Decision{Status: 200, Code: CodeHealthCheck, GRPCHealth: GRPCServing, Msg: "SERVING\n"}
		}
		return Decision{Status: 503, Code: CodeHealthCheck, GRPCHealth: GRPCNotServing, Msg: "NOT_SERVING\n"}
	}
	gr := gw.Match(port, rr)
	if gr == nil {
		return Decision{Status: 404, Code: CodeNoRoute,
			Msg: "meshd: no gateway route of " + gw.Name + " matched " + rr.Method + " " + rr.Path + " on port " + strconv.Itoa(port) + "\n"}
	}
	d := gatewayTarget(snap, gr, rr, port, rnd)
	// Counted on the gateway route whatever became of the request from here.
	d.Gateway, d.GatewayStats = gr, snap.GatewayStatsOf(gr)
	return d
}

// gatewayTarget routes a request gateway route gr matched: its rewrites, then the
// target service's routes.
func gatewayTarget(snap *state.Snapshot, gr *router.GatewayRoute, rr *router.Request, port int, rnd uint64) Decision {
	svc := snap.Table().Egress(gr.Service, 0)
	if svc == nil {
		return Decision{Status: 503, Code: CodeNoRoute, Msg: "meshd: gateway route " + gr.Name + ": virtual service " + gr.Service + " is not compiled\n"}
	}
	var d Decision
	if p, changed := gr.RewritePath(rr.Path); changed {
		rr.Path, d.Path = p, p
	}
	if gr.HostRewrite {
		rr.Authority, d.Host = gr.Service, gr.Service
	}
	rr.Port = gr.Port
	if rr.Port == 0 && len(svc.Ports) == 1 {
		rr.Port = svc.Ports[0]
	}
	rt := svc.Match(rr)
	if rt == nil {
		return Decision{Service: svc, Status: 404, Code: CodeNoRoute,
			Msg: "meshd: gateway route " + gr.Name + " sent " + rr.Method + " " + rr.Path + " to " + svc.Name + ", and no route of it matched\n"}
	}
	t := rt.PickTarget(rnd)
	if t == nil {
		return Decision{Service: svc, Route: rt, Status: 503, Code: CodeNoEndpoint, Msg: "meshd: route " + rt.Name + " has no target with weight > 0\n"}
	}
	c := snap.Cluster(t.Cluster)
	if c == nil {
		return Decision{Status: 503, Code: CodeNoEndpoint, Msg: "meshd: cluster " + t.Cluster + " is not built\n"}
	}
	d.Service, d.Route, d.Cluster, d.Policy, d.IngressPort = svc, rt, c, snap.Policy(rt), port
	return d
}
