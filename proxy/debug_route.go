package proxy

import (
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/meshd/meshd/router"
)

// routeDebug is the answer of GET /debug/route.
type routeDebug struct {
	Version  string              `json:"version"`
	Listener string              `json:"listener"`
	Request  routeDebugRequest   `json:"request"`
	Service  string              `json:"service,omitempty"`
	Routes   []router.RouteCheck `json:"routes,omitempty"`
	Matched  string              `json:"matched,omitempty"`
	Targets  []routeDebugTarget  `json:"targets,omitempty"`
	// Outcome is what the proxy would do: "route", or the x-meshd-error code it would
	// answer with (no_listener, egress_denied, no_route), or "passthrough".
	Outcome string `json:"outcome"`
	Detail  string `json:"detail,omitempty"`
}

type routeDebugRequest struct {
	Host    string            `json:"host,omitempty"`
	Port    int               `json:"port,omitempty"`
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Scheme  string            `json:"scheme"`
	GRPC    bool              `json:"grpc,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
}

type routeDebugTarget struct {
	Cluster   string   `json:"cluster"`
	Weight    uint32   `json:"weight"`
	Percent   float64  `json:"percent"`
	Endpoints []string `json:"endpoints"`
}

// debugHeaders is a router.HeaderGetter over the header=name:value query parameters.
type debugHeaders map[string]string

func (h debugHeaders) Get(name string) (string, bool) {
	v, ok := h[strings.ToLower(name)]
	return v, ok
}

// handleDebugRoute answers which route a request would take, on the snapshot in force,
// with the reason each earlier route did not match:
//
//	GET /debug/route?host=backend.shop.local&path=/cart&method=POST&header=x-canary:1
//
// Parameters: listener (egress, the default, or ingress), host (egress; may carry
// :port), port (ingress listener port, or the egress port when host has none), path
// (default /), method (default GET), scheme (default http), header=name:value (repeat).
// A content-type header starting with application/grpc makes the request gRPC. Nothing
// is sent anywhere.
func (s *Server) handleDebugRoute(w http.ResponseWriter, r *http.Request) {
	snap := s.snap.Load()
	if snap == nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "no config applied yet"})
		return
	}
	q := r.URL.Query()
	in := routeDebugRequest{
		Host: q.Get("host"), Method: q.Get("method"), Path: q.Get("path"), Scheme: q.Get("scheme"),
		Headers: map[string]string{},
	}
	if in.Method == "" {
		in.Method = http.MethodGet
	}
	if in.Path == "" {
		in.Path = "/"
	}
	if in.Scheme == "" {
		in.Scheme = "http"
	}
	if p := q.Get("port"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 || n > 65535 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "port " + strconv.Quote(p) + ": want 1-65535"})
			return
		}
		in.Port = n
	}
	for _, kv := range q["header"] {
		k, v, ok := strings.Cut(kv, ":")
		if !ok || strings.TrimSpace(k) == "" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "header " + strconv.Quote(kv) + ": want name:value"})
			return
		}
		// A repeated name is matched as the live path matches a repeated header: every
		// value, joined with ",".
		name, val := strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)
		if prev, seen := in.Headers[name]; seen {
			val = prev + "," + val
		}
		in.Headers[name] = val
	}
	in.GRPC = strings.HasPrefix(in.Headers["content-type"], "application/grpc")
	out := routeDebug{Version: snap.Version, Listener: q.Get("listener")}
	if out.Listener == "" {
		out.Listener = "egress"
	}

	var svc *router.Service
	switch out.Listener {
	case "ingress":
		if in.Port == 0 {
			in.Port = snap.localNodePort
		}
		svc = snap.Table.Ingress(in.Port)
		if svc == nil {
			out.Request, out.Outcome = in, codeNoListener
			out.Detail = "node " + snap.Node + " has no listener on port " + strconv.Itoa(in.Port)
			writeJSON(w, http.StatusOK, out)
			return
		}
	case "egress":
		host, port := splitHostPort(in.Host)
		if port != 0 {
			in.Port = port
		} else if in.Port == 0 {
			in.Port = 80
		}
		svc = snap.Table.Egress(host, in.Port)
		if svc == nil {
			out.Request = in
			if snap.egressAllowAll && host != "" {
				out.Outcome = "passthrough"
				out.Detail = "not a backend of node " + snap.Node + "; egressFilter ALLOW_ALL forwards to " + net.JoinHostPort(host, strconv.Itoa(in.Port))
			} else {
				out.Outcome = codeEgressDenied
				out.Detail = strconv.Quote(host) + " is not a backend of node " + snap.Node + " and the mesh egressFilter is DROP_ALL"
			}
			writeJSON(w, http.StatusOK, out)
			return
		}
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "listener " + strconv.Quote(out.Listener) + ": want egress or ingress"})
		return
	}
	out.Request, out.Service = in, svc.Name
	rr := router.Request{
		Authority: in.Host, Method: in.Method, Path: in.Path, Scheme: in.Scheme, Port: in.Port,
		GRPC: in.GRPC, Header: debugHeaders(in.Headers),
	}
	out.Routes = svc.Explain(&rr)
	if n := len(out.Routes); n == 0 || !out.Routes[n-1].Matched {
		out.Outcome = codeNoRoute
		out.Detail = "no route of service " + svc.Name + " matched"
		writeJSON(w, http.StatusOK, out)
		return
	}
	rt := svc.Match(&rr)
	out.Matched, out.Outcome = rt.Name, "route"
	var total uint64
	for _, t := range rt.Targets {
		total += uint64(t.Weight)
	}
	for _, t := range rt.Targets {
		dt := routeDebugTarget{Cluster: t.Cluster, Weight: t.Weight, Endpoints: []string{}}
		if total > 0 {
			dt.Percent = float64(t.Weight) * 100 / float64(total)
		}
		if c := snap.clusters[t.Cluster]; c != nil {
			for _, ep := range c.bal.Snapshot() {
				dt.Endpoints = append(dt.Endpoints, ep.Address)
			}
		}
		out.Targets = append(out.Targets, dt)
	}
	writeJSON(w, http.StatusOK, out)
}
