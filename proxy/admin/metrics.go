package admin

import (
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/internal/h2"
	"github.com/meshd/meshd/proxy/state"
	"github.com/meshd/meshd/proxy/upstream"
	"github.com/meshd/meshd/resilience"
	"github.com/meshd/meshd/router"
	"github.com/meshd/meshd/telemetry"
)

// The Prometheus exposition (GET /stats/prometheus, /metrics, /stats?format=prometheus).
//
// Nothing here is on the request path: the request path keeps its atomic adds on fields
// bound at compile time (telemetry.HTTPStats, resilience.Counters, upstream.L4Stats), and
// a collector reads them when a scraper asks, emitting const metrics. docs/metrics.md
// lists every series; the table below is the one place they are defined, and a test
// checks that the page names each of them.

// metricType is how a series is exposed.
type metricType uint8

const (
	counter metricType = iota
	gauge
	histogram
)

func (t metricType) String() string {
	return [...]string{"counter", "gauge", "histogram"}[t]
}

// scope is what one series of a family describes; it decides which App Mesh stats tags
// the series carries (ENABLE_ENVOY_STATS_TAGS).
type scope uint8

const (
	scopeServer scope = iota
	scopeListener
	scopeRoute
	scopeCluster
	scopeEndpoint
)

// metricDef is one metric family meshd exports.
type metricDef struct {
	Name   string
	Type   metricType
	Help   string
	Labels []string
	// Detailed families are exported only at the detailed metrics level.
	Detailed bool
	// Envoy families carry Envoy's names and labels (dashboards built for App Mesh's
	// Envoy keep working).
	Envoy bool
	scope scope
}

// Label sets, in the mesh's names.
var (
	routeLabels    = []string{"virtual_service", "route"}
	gwRouteLabels  = []string{"virtual_gateway", "gateway_route"}
	clusterLabels  = []string{"virtual_node", "cluster"}
	endpointLabels = []string{"virtual_node", "cluster", "address"}
	listenerLabels = []string{"listener"}
	envoyCluster   = []string{"envoy_cluster_name"}
	envoyHTTP      = []string{"envoy_http_conn_manager_prefix"}
)

// App Mesh's stats tags (ENABLE_ENVOY_STATS_TAGS=1): every series gets the mesh and the
// local virtual node; route series also get their virtual service.
const (
	tagMesh           = "appmesh_mesh"
	tagVirtualNode    = "appmesh_virtual_node"
	tagVirtualService = "appmesh_virtual_service"
)

func with(base []string, extra ...string) []string {
	return append(append([]string(nil), base...), extra...)
}

// metricFamilies are the metric families, in the order docs/metrics.md lists them.
type metricFamilies struct {
	configApplies, configPersistErrors, configInfo, configApplied          *metricDef
	accessLogLines                                                         *metricDef
	egressDropped, passConns, passActive, passSent, passReceived           *metricDef
	lsRequests, lsByCode, lsDuration, lsInFlight, lsNoRoute, lsRateLimited *metricDef
	lsFirstReqTimeouts                                                     *metricDef
	lsConnsOpen, lsConnsRejected, lsConnsShed, lsFDExhausted, lsOverloadRq *metricDef
	ovActive, ovEntered, ovHeap, adminReserve, parked                      *metricDef
	lsAuthzAllowed, lsAuthzDenied                                          *metricDef
	rtRequests, rtByCode, rtDuration, rtRetries, rtBudget, rtRetryOverflow *metricDef
	rtTimeouts, rtRateLimited, rtMirror                                    *metricDef
	gwRequests, gwByCode, gwDuration, gwGRPC                               *metricDef
	clRequests, clByCode, clDuration, clInFlight, clPending, clConns       *metricDef
	clRetries, clBudget, clRetryOverflow, clRetriesActive, clTimeouts      *metricDef
	clGRPC                                                                 *metricDef
	clNoHealthy, clPoolOverflow, clEndpoints, clHealthy                    *metricDef
	clRamping, clHashFallbacks, clCookies                                  *metricDef
	clProtocolErrors                                                       *metricDef
	clEjectActive, clEjections, clEjectOverflow                            *metricDef
	clBreakerState, clBreakerTrips, clBreakerRejected, clHCPass, clHCFail  *metricDef
	clTCPConns, clTCPActive, clTCPRejected, clTCPConnectFail, clTCPIdle    *metricDef
	clTCPSent, clTCPReceived                                               *metricDef
	epInFlight, epRequests, epFailures, epHealthy, epEjected               *metricDef
	evRqTotal, evRqXX, evRq, evRqTime, evRqActive, evCxActive              *metricDef
	evHealthy, evMembers, evRetry, evRetryOverflow, evPendingOverflow      *metricDef
	evTimeout, evEjectActive, evEjectEnforced, evHCSuccess, evHCFailure    *metricDef
	evCxRx, evCxTx                                                         *metricDef
	evDsRqTotal, evDsRqXX, evDsRqActive, evDsRqTime                        *metricDef
	h2Conns, h2Streams, h2Refused, h2ProtoErrs, h2StreamErrs, h2HeaderBig  *metricDef
	h2GoAwaySent, h2GoAwayRecv, h2Flood                                    *metricDef
	tlsHandshakes, tlsExpiry, tlsReloads, tlsRejects, tlsPlaintext         *metricDef
	all                                                                    []*metricDef
}

func newMetricFamilies() *metricFamilies {
	f := &metricFamilies{}
	def := func(p **metricDef, sc scope, name string, t metricType, help string, labels []string) *metricDef {
		d := &metricDef{Name: name, Type: t, Help: help, Labels: labels, scope: sc, Envoy: strings.HasPrefix(name, "envoy_")}
		*p = d
		f.all = append(f.all, d)
		return d
	}
	// The config in force and its applies.
	def(&f.configApplies, scopeServer, "meshd_config_applies_total", counter, "Config applies by result (applied, rejected), from every source.", []string{"result"})
	def(&f.configPersistErrors, scopeServer, "meshd_config_persist_errors_total", counter, "Applied configs that could not be written to --persist.", nil)
	def(&f.configInfo, scopeServer, "meshd_config_info", gauge, "The config in force: 1, with its version (the /config ETag).", []string{"version"})
	def(&f.configApplied, scopeServer, "meshd_config_last_applied_timestamp_seconds", gauge, "When the config in force was applied (Unix time).", nil)
	def(&f.accessLogLines, scopeServer, "meshd_access_log_lines_total", counter, "Access log lines by file and result: written, or dropped (queue full, write failed).", []string{"path", "result"})
	// HTTP/2 connections by side (ingress, egress: downstream; upstream: every cluster's).
	side := []string{"side"}
	def(&f.h2Conns, scopeServer, "meshd_http2_connections_total", counter, "HTTP/2 connections served (ingress, egress) or dialled (upstream).", side)
	def(&f.h2Streams, scopeServer, "meshd_http2_streams_total", counter, "HTTP/2 streams opened.", side)
	def(&f.h2Refused, scopeServer, "meshd_http2_refused_streams_total", counter, "HTTP/2 streams meshd refused (REFUSED_STREAM: over the concurrent stream limit).", side)
	def(&f.h2ProtoErrs, scopeServer, "meshd_http2_protocol_errors_total", counter, "HTTP/2 connections closed for a protocol violation by the peer (GOAWAY).", side)
	def(&f.h2StreamErrs, scopeServer, "meshd_http2_stream_errors_total", counter, "HTTP/2 streams reset for a protocol violation by the peer.", side)
	def(&f.h2HeaderBig, scopeServer, "meshd_http2_header_overflow_total", counter, "HTTP/2 header blocks over the header list size or field count limit.", side)
	def(&f.h2GoAwaySent, scopeServer, "meshd_http2_goaway_sent_total", counter, "GOAWAY frames meshd sent.", side)
	def(&f.h2GoAwayRecv, scopeServer, "meshd_http2_goaway_received_total", counter, "GOAWAY frames meshd received.", side)
	def(&f.h2Flood, scopeServer, "meshd_http2_flood_closed_total", counter, "HTTP/2 connections a flood defence closed (GOAWAY ENHANCE_YOUR_CALM), by defence.", []string{"side", "defence"})
	// TLS (tls.go): handshakes by side, the certificate sources of the tls blocks.
	def(&f.tlsHandshakes, scopeServer, "meshd_tls_handshakes_total", counter, "TLS handshakes by side (client: a cluster originating TLS; server: a listener terminating it) and result (ok, resumed, error, verify_error, verify_san, no_certificate).", []string{"side", "cluster", "listener", "result"})
	def(&f.tlsExpiry, scopeServer, "meshd_tls_certificate_expiry_timestamp_seconds", gauge, "When the certificate a TLS source serves now expires (Unix time).", []string{"source"})
	def(&f.tlsReloads, scopeServer, "meshd_tls_certificate_reloads_total", counter, "New certificates or trust bundles a TLS source took after its first.", []string{"source"})
	def(&f.tlsRejects, scopeServer, "meshd_tls_certificate_rejects_total", counter, "New certificates or trust bundles a TLS source refused (the previous ones kept serving).", []string{"source"})
	def(&f.tlsPlaintext, scopeServer, "meshd_tls_permissive_plaintext_connections_total", counter, "Connections a PERMISSIVE listener served in plaintext (callers still to move to TLS before the listener can be STRICT).", []string{"listener"})
	// Overload (--overload-heap, --overload-connections) and the admin listener's fd reserve.
	def(&f.ovActive, scopeServer, "meshd_overload_active", gauge, "1 while meshd is past an overload watermark and sheds load, else 0.", nil)
	def(&f.ovEntered, scopeServer, "meshd_overload_entered_total", counter, "Times meshd went past an overload watermark.", nil)
	def(&f.ovHeap, scopeServer, "meshd_overload_heap_bytes", gauge, "The last heap sample the heap watermark was checked against (only with --overload-heap).", nil)
	def(&f.adminReserve, scopeServer, "meshd_admin_fd_reserve", gauge, "File descriptors the admin listener holds in reserve for when the process has none left.", nil)
	def(&f.parked, scopeServer, "meshd_downstream_connections_parked", gauge, "Idle HTTP/1.1 keep-alive connections parked without a goroutine or buffers (past the upstream hold; Linux).", nil)
	// Egress L4 outside any cluster.
	def(&f.egressDropped, scopeServer, "meshd_egress_tcp_dropped_total", counter, "Egress connections closed because they matched no backend and the egressFilter is DROP_ALL.", nil)
	def(&f.passConns, scopeServer, "meshd_passthrough_tcp_connections_total", counter, "Egress connections relayed to their original destination (ALLOW_ALL).", nil)
	def(&f.passActive, scopeServer, "meshd_passthrough_tcp_connections_active", gauge, "Egress passthrough connections open now.", nil)
	def(&f.passSent, scopeServer, "meshd_passthrough_tcp_sent_bytes_total", counter, "Bytes relayed from the app to passthrough destinations.", nil)
	def(&f.passReceived, scopeServer, "meshd_passthrough_tcp_received_bytes_total", counter, "Bytes relayed from passthrough destinations to the app.", nil)
	// Listeners (ingress, egress).
	def(&f.lsRequests, scopeListener, "meshd_listener_requests_total", counter, "HTTP requests served by the listener, by status class (none: no status was sent).", with(listenerLabels, "code_class"))
	def(&f.lsByCode, scopeListener, "meshd_listener_requests_by_code_total", counter, "HTTP requests served by the listener, by status code (the common codes only).", with(listenerLabels, "code")).Detailed = true
	def(&f.lsDuration, scopeListener, "meshd_listener_request_duration_seconds", histogram, "HTTP request duration on the listener, head read to last response byte.", listenerLabels).Detailed = true
	def(&f.lsInFlight, scopeListener, "meshd_listener_requests_in_flight", gauge, "HTTP requests in progress on the listener.", listenerLabels)
	def(&f.lsFirstReqTimeouts, scopeListener, "meshd_listener_first_request_timeouts_total", counter, "HTTP connections closed because their first request head was not complete within the first-request timeout (--first-request-timeout).", listenerLabels)
	def(&f.lsConnsOpen, scopeListener, "meshd_listener_connections_open", gauge, "Downstream connections open on the listener now (egress: with its IPv6 twin).", listenerLabels)
	def(&f.lsConnsRejected, scopeListener, "meshd_listener_connections_rejected_total", counter, "Connections closed at accept, by reason: limit (--max-connections or --max-listener-connections reached and no idle keep-alive connection to shed), overload (past an overload watermark).", with(listenerLabels, "reason"))
	def(&f.lsConnsShed, scopeListener, "meshd_listener_idle_connections_shed_total", counter, "Idle keep-alive connections meshd closed to make room: for a new connection at a connection limit, or out of file descriptors.", listenerLabels)
	def(&f.lsFDExhausted, scopeListener, "meshd_listener_accept_fd_exhausted_total", counter, "Accepts that failed for want of file descriptors (EMFILE, ENFILE); each sheds idle connections and backs off.", listenerLabels)
	def(&f.lsOverloadRq, scopeListener, "meshd_listener_overload_rejected_requests_total", counter, "Requests answered 503 overloaded while past an overload watermark.", listenerLabels)
	def(&f.lsNoRoute, scopeListener, "meshd_listener_no_route_total", counter, "Requests meshd answered itself for want of a route (no_route, egress_denied, no_listener).", listenerLabels)
	def(&f.lsRateLimited, scopeListener, "meshd_listener_rate_limited_total", counter, "Requests refused with 429 by an ingress listener's rateLimit, by listener port.", with(listenerLabels, "port"))
	def(&f.lsAuthzAllowed, scopeListener, "meshd_listener_authz_allowed_total", counter, "Requests (tcp: connections) an ingress listener's authorization allowed, by listener port.", with(listenerLabels, "port"))
	def(&f.lsAuthzDenied, scopeListener, "meshd_listener_authz_denied_total", counter, "Requests (tcp: connections) an ingress listener's authorization denied (403 authz_denied, or closed), by listener port and reason (policy: the caller's identity is not allowed; no_identity: the caller has no verified SPIFFE ID).", with(listenerLabels, "port", "reason"))
	// Routes.
	def(&f.rtRequests, scopeRoute, "meshd_route_requests_total", counter, "HTTP requests on the route, by status class (none: no status was sent).", with(routeLabels, "code_class"))
	def(&f.rtByCode, scopeRoute, "meshd_route_requests_by_code_total", counter, "HTTP requests on the route, by status code (the common codes only).", with(routeLabels, "code"))
	def(&f.rtDuration, scopeRoute, "meshd_route_request_duration_seconds", histogram, "HTTP request duration on the route, head read to last response byte.", routeLabels).Detailed = true
	def(&f.rtRetries, scopeRoute, "meshd_route_retries_total", counter, "Retries of the route's requests that the retry budget admitted.", routeLabels)
	def(&f.rtBudget, scopeRoute, "meshd_route_retries_budget_exhausted_total", counter, "Retries of the route's requests refused because the cluster's retry budget was spent.", routeLabels)
	def(&f.rtRetryOverflow, scopeRoute, "meshd_route_retries_overflow_total", counter, "Retries of the route's requests refused by the cluster's absolute retry limit (retryBudget.maxRetries).", routeLabels)
	def(&f.rtTimeouts, scopeRoute, "meshd_route_timeouts_total", counter, "The route's requests answered 504 (or DEADLINE_EXCEEDED) by meshd's timeouts.", routeLabels)
	def(&f.rtRateLimited, scopeRoute, "meshd_route_rate_limited_total", counter, "The route's requests refused with 429 by a rateLimit (the listener's or the route's).", routeLabels)
	def(&f.rtMirror, scopeRoute, "meshd_route_mirror_requests_total", counter, "The route's requests sampled for its mirror, by result: sent (the mirror answered, any status), skipped_body (body not kept whole), skipped_overflow (the mirror cluster's bound of copies in flight), failed (no response).", with(routeLabels, "result"))
	// Gateway routes (meshd run --gateway).
	def(&f.gwRequests, scopeListener, "meshd_gateway_route_requests_total", counter, "HTTP requests a gateway route matched, by status class (none: no status was sent).", with(gwRouteLabels, "code_class"))
	def(&f.gwByCode, scopeListener, "meshd_gateway_route_requests_by_code_total", counter, "HTTP requests a gateway route matched, by status code (the common codes only).", with(gwRouteLabels, "code"))
	def(&f.gwDuration, scopeListener, "meshd_gateway_route_request_duration_seconds", histogram, "HTTP request duration of a gateway route's requests, head read to last response byte.", gwRouteLabels).Detailed = true
	def(&f.gwGRPC, scopeListener, "meshd_gateway_route_grpc_calls_total", counter, "gRPC calls a gateway route matched, by grpc-status: ok (0) or error (any other, or none).", with(gwRouteLabels, "grpc_result"))
	// Clusters: a target virtual node (port), or the local app (local:<port>).
	def(&f.clRequests, scopeCluster, "meshd_cluster_requests_total", counter, "HTTP requests sent to the cluster, by final status class (none: no status was sent).", with(clusterLabels, "code_class"))
	def(&f.clByCode, scopeCluster, "meshd_cluster_requests_by_code_total", counter, "HTTP requests sent to the cluster, by final status code (the common codes only).", with(clusterLabels, "code"))
	def(&f.clDuration, scopeCluster, "meshd_cluster_request_duration_seconds", histogram, "HTTP request duration to the cluster, retries included, head read to last response byte.", clusterLabels)
	def(&f.clInFlight, scopeCluster, "meshd_cluster_requests_in_flight", gauge, "Attempts in progress to the cluster's endpoints.", clusterLabels)
	def(&f.clPending, scopeCluster, "meshd_cluster_requests_pending", gauge, "HTTP/1.1 requests waiting for a connectionPool slot.", clusterLabels)
	def(&f.clConns, scopeCluster, "meshd_cluster_connections_active", gauge, "HTTP/1.1 upstream connections open to the cluster, pooled idle ones included.", clusterLabels)
	def(&f.clRetries, scopeCluster, "meshd_cluster_retries_total", counter, "Retries to the cluster that its retry budget admitted.", clusterLabels)
	def(&f.clBudget, scopeCluster, "meshd_cluster_retries_budget_exhausted_total", counter, "Retries refused because the cluster's retry budget was spent.", clusterLabels)
	def(&f.clRetryOverflow, scopeCluster, "meshd_cluster_retries_overflow_total", counter, "Retries refused by the cluster's absolute retry limit (retryBudget.maxRetries).", clusterLabels)
	def(&f.clRetriesActive, scopeCluster, "meshd_cluster_retries_in_flight", gauge, "Retries holding a slot of the cluster's retry budget now.", clusterLabels).Detailed = true
	def(&f.clGRPC, scopeCluster, "meshd_cluster_grpc_calls_total", counter, "gRPC calls to the cluster by grpc-status: ok (0) or error (any other, or none).", with(clusterLabels, "grpc_result"))
	def(&f.clTimeouts, scopeCluster, "meshd_cluster_timeouts_total", counter, "Requests to the cluster answered 504 (or DEADLINE_EXCEEDED) by meshd's timeouts.", clusterLabels)
	def(&f.clNoHealthy, scopeCluster, "meshd_cluster_no_healthy_upstream_total", counter, "Requests answered 503 because the cluster had no endpoint to pick.", clusterLabels)
	def(&f.clProtocolErrors, scopeCluster, "meshd_cluster_upstream_protocol_errors_total", counter, "Requests answered 502 upstream_protocol_error: the upstream's response was malformed or out of bounds (oversized head, too many fields, 1xx flood, ambiguous framing, bad chunk).", clusterLabels)
	def(&f.clPoolOverflow, scopeCluster, "meshd_cluster_pool_overflow_total", counter, "Requests answered 503 at once by a connectionPool limit, by limit (max_connections, max_pending_requests, max_requests).", with(clusterLabels, "limit"))
	def(&f.clEndpoints, scopeCluster, "meshd_cluster_endpoints", gauge, "Endpoints in the cluster's current set.", clusterLabels)
	def(&f.clHealthy, scopeCluster, "meshd_cluster_endpoints_healthy", gauge, "Endpoints available to pick: passing health checks and not ejected.", clusterLabels)
	def(&f.clRamping, scopeCluster, "meshd_cluster_endpoints_slow_start", gauge, "Endpoints whose weight is ramping up (loadBalancing.slowStart).", clusterLabels)
	def(&f.clHashFallbacks, scopeCluster, "meshd_cluster_hash_fallbacks_total", counter, "RING_HASH picks whose hashed endpoint was unavailable, so the key went to the next endpoint on the ring.", clusterLabels)
	def(&f.clCookies, scopeCluster, "meshd_cluster_affinity_cookies_generated_total", counter, "Affinity cookies meshd generated for requests that came without one (loadBalancing.hash.cookie).", clusterLabels)
	def(&f.clEjectActive, scopeCluster, "meshd_cluster_ejections_active", gauge, "Endpoints ejected by outlier detection now.", clusterLabels)
	def(&f.clEjections, scopeCluster, "meshd_cluster_ejections_total", counter, "Ejections by outlier detection.", clusterLabels)
	def(&f.clEjectOverflow, scopeCluster, "meshd_cluster_ejections_overflow_total", counter, "Ejections that maxEjectionPercent prevented.", clusterLabels)
	def(&f.clBreakerState, scopeCluster, "meshd_cluster_breaker_state", gauge, "The circuit breaker's state: 0 closed, 1 half-open, 2 open.", clusterLabels)
	def(&f.clBreakerTrips, scopeCluster, "meshd_cluster_breaker_trips_total", counter, "Times the circuit breaker opened.", clusterLabels)
	def(&f.clBreakerRejected, scopeCluster, "meshd_cluster_breaker_rejected_total", counter, "Requests the open (or half-open, full) circuit breaker refused.", clusterLabels)
	def(&f.clHCPass, scopeCluster, "meshd_cluster_health_check_passes_total", counter, "Active health checks that passed (one per endpoint and round).", clusterLabels)
	def(&f.clHCFail, scopeCluster, "meshd_cluster_health_check_failures_total", counter, "Active health checks that failed (one per endpoint and round).", clusterLabels)
	def(&f.clTCPConns, scopeCluster, "meshd_cluster_tcp_connections_total", counter, "L4 connections (opaque TCP, TLS passthrough) routed to the cluster.", clusterLabels)
	def(&f.clTCPActive, scopeCluster, "meshd_cluster_tcp_connections_active", gauge, "L4 connections to the cluster open now (dialing included).", clusterLabels)
	def(&f.clTCPRejected, scopeCluster, "meshd_cluster_tcp_connections_rejected_total", counter, "L4 connections closed at once by connectionPool.tcp.maxConnections.", clusterLabels)
	def(&f.clTCPConnectFail, scopeCluster, "meshd_cluster_tcp_connect_failures_total", counter, "Failed L4 connect attempts (each retry counts).", clusterLabels)
	def(&f.clTCPIdle, scopeCluster, "meshd_cluster_tcp_idle_timeouts_total", counter, "L4 connections closed by the idle timeout.", clusterLabels)
	def(&f.clTCPSent, scopeCluster, "meshd_cluster_tcp_sent_bytes_total", counter, "L4 bytes relayed from downstream to the cluster.", clusterLabels)
	def(&f.clTCPReceived, scopeCluster, "meshd_cluster_tcp_received_bytes_total", counter, "L4 bytes relayed from the cluster to downstream.", clusterLabels)
	// Endpoints (detailed level only: the address label grows with the endpoint set).
	def(&f.epInFlight, scopeEndpoint, "meshd_endpoint_requests_in_flight", gauge, "Attempts in progress to the endpoint.", endpointLabels).Detailed = true
	def(&f.epRequests, scopeEndpoint, "meshd_endpoint_requests_total", counter, "Attempts sent to the endpoint.", endpointLabels).Detailed = true
	def(&f.epFailures, scopeEndpoint, "meshd_endpoint_failures_total", counter, "Attempts to the endpoint that failed (connect failure, reset, timeout, 5xx).", endpointLabels).Detailed = true
	def(&f.epHealthy, scopeEndpoint, "meshd_endpoint_healthy", gauge, "1 when the endpoint passes its health checks.", endpointLabels).Detailed = true
	def(&f.epEjected, scopeEndpoint, "meshd_endpoint_ejected", gauge, "1 when outlier detection has ejected the endpoint.", endpointLabels).Detailed = true
	// Envoy's names (App Mesh dashboards, the CloudWatch agent's App Mesh scrape config).
	def(&f.evRqTotal, scopeCluster, "envoy_cluster_upstream_rq_total", counter, "Envoy cluster upstream_rq_total: HTTP requests sent to the cluster.", envoyCluster)
	def(&f.evRqXX, scopeCluster, "envoy_cluster_upstream_rq_xx", counter, "Envoy cluster upstream_rq_<N>xx: requests by final status class.", with(envoyCluster, "envoy_response_code_class"))
	def(&f.evRq, scopeCluster, "envoy_cluster_upstream_rq", counter, "Envoy cluster upstream_rq_<code>: requests by final status code (the common codes only).", with(envoyCluster, "envoy_response_code"))
	def(&f.evRqTime, scopeCluster, "envoy_cluster_upstream_rq_time", histogram, "Envoy cluster upstream_rq_time: request duration in milliseconds (buckets up to 10000).", envoyCluster)
	def(&f.evRqActive, scopeCluster, "envoy_cluster_upstream_rq_active", gauge, "Envoy cluster upstream_rq_active: attempts in progress.", envoyCluster)
	def(&f.evCxActive, scopeCluster, "envoy_cluster_upstream_cx_active", gauge, "Envoy cluster upstream_cx_active: upstream connections open (HTTP/1.1 and L4).", envoyCluster)
	def(&f.evHealthy, scopeCluster, "envoy_cluster_membership_healthy", gauge, "Envoy cluster membership_healthy: endpoints available to pick.", envoyCluster)
	def(&f.evMembers, scopeCluster, "envoy_cluster_membership_total", gauge, "Envoy cluster membership_total: endpoints in the set.", envoyCluster)
	def(&f.evRetry, scopeCluster, "envoy_cluster_upstream_rq_retry", counter, "Envoy cluster upstream_rq_retry: retries admitted.", envoyCluster)
	def(&f.evRetryOverflow, scopeCluster, "envoy_cluster_upstream_rq_retry_overflow", counter, "Envoy cluster upstream_rq_retry_overflow: retries refused by the retry budget or its maxRetries.", envoyCluster)
	def(&f.evPendingOverflow, scopeCluster, "envoy_cluster_upstream_rq_pending_overflow", counter, "Envoy cluster upstream_rq_pending_overflow: requests refused by a connectionPool limit.", envoyCluster)
	def(&f.evTimeout, scopeCluster, "envoy_cluster_upstream_rq_timeout", counter, "Envoy cluster upstream_rq_timeout: requests that timed out.", envoyCluster)
	def(&f.evEjectActive, scopeCluster, "envoy_cluster_outlier_detection_ejections_active", gauge, "Envoy cluster outlier_detection.ejections_active: endpoints ejected now.", envoyCluster)
	def(&f.evEjectEnforced, scopeCluster, "envoy_cluster_outlier_detection_ejections_enforced_total", counter, "Envoy cluster outlier_detection.ejections_enforced_total: ejections.", envoyCluster)
	def(&f.evHCSuccess, scopeCluster, "envoy_cluster_health_check_success", counter, "Envoy cluster health_check.success: health checks passed.", envoyCluster)
	def(&f.evHCFailure, scopeCluster, "envoy_cluster_health_check_failure", counter, "Envoy cluster health_check.failure: health checks failed.", envoyCluster)
	def(&f.evCxRx, scopeCluster, "envoy_cluster_upstream_cx_rx_bytes_total", counter, "Envoy cluster upstream_cx_rx_bytes_total: L4 bytes received from the cluster.", envoyCluster)
	def(&f.evCxTx, scopeCluster, "envoy_cluster_upstream_cx_tx_bytes_total", counter, "Envoy cluster upstream_cx_tx_bytes_total: L4 bytes sent to the cluster.", envoyCluster)
	def(&f.evDsRqTotal, scopeListener, "envoy_http_downstream_rq_total", counter, "Envoy http.<ingress|egress>.downstream_rq_total: HTTP requests on the listener.", envoyHTTP)
	def(&f.evDsRqXX, scopeListener, "envoy_http_downstream_rq_xx", counter, "Envoy http.<ingress|egress>.downstream_rq_<N>xx: requests by status class.", with(envoyHTTP, "envoy_response_code_class"))
	def(&f.evDsRqActive, scopeListener, "envoy_http_downstream_rq_active", gauge, "Envoy http.<ingress|egress>.downstream_rq_active: requests in progress.", envoyHTTP)
	def(&f.evDsRqTime, scopeListener, "envoy_http_downstream_rq_time", histogram, "Envoy http.<ingress|egress>.downstream_rq_time: request duration in milliseconds (buckets up to 10000).", envoyHTTP).Detailed = true
	return f
}

// envoyBucketsMS are Envoy's default histogram bounds (ms) that meshd's latency buckets
// can answer exactly: Envoy's larger bounds (30 s and up) fall past meshd's last bound
// (10 s), so only +Inf follows 10000.
var envoyBucketsMS = [...]float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000}

// envoyBucketIndex maps each Envoy bound to the index of the same bound in
// telemetry.LatencyBuckets.
var envoyBucketIndex = func() (idx [len(envoyBucketsMS)]int) {
	for i, ms := range envoyBucketsMS {
		idx[i] = -1
		for j, s := range telemetry.LatencyBuckets {
			if math.Abs(s*1000-ms) < 1e-9 {
				idx[i] = j
			}
		}
		if idx[i] < 0 {
			panic(fmt.Sprintf("admin: Envoy bucket %vms is not a bound of telemetry.LatencyBuckets", ms))
		}
	}
	return idx
}()

// collector reads meshd's counters at scrape time. It is unchecked (Describe sends
// nothing): the series follow the config in force.
type collector struct {
	api   *API
	f     *metricFamilies
	descs map[*metricDef]*prometheus.Desc
	// noVS are the route families' descs without appmesh_virtual_service, for the
	// node's own ingress routes, which belong to no virtual service (tags on only).
	noVS     map[*metricDef]*prometheus.Desc
	detailed bool
	tags     bool
}

func newCollector(api *API) *collector {
	c := &collector{api: api, f: newMetricFamilies(), descs: map[*metricDef]*prometheus.Desc{},
		noVS: map[*metricDef]*prometheus.Desc{}, detailed: api.DetailedMetrics, tags: api.EnvoyStatsTags}
	for _, d := range c.f.all {
		labels := d.Labels
		if c.tags {
			labels = with(labels, tagMesh, tagVirtualNode)
			if d.scope == scopeRoute {
				c.noVS[d] = prometheus.NewDesc(d.Name, d.Help, labels, nil)
				labels = append(labels, tagVirtualService)
			}
		}
		c.descs[d] = prometheus.NewDesc(d.Name, d.Help, labels, nil)
	}
	return c
}

func (c *collector) Describe(chan<- *prometheus.Desc) {}

// metricsHandler serves the Prometheus text format from a private registry: meshd's
// collector, the process collector and the Go runtime collector.
func (s *API) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(s), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// emitter sends const metrics, adding the App Mesh tags when they are on.
type emitter struct {
	c          *collector
	ch         chan<- prometheus.Metric
	mesh, node string
}

// series is the desc and label values of one series of d: lv, then the App Mesh tags
// when they are on.
func (e *emitter) series(d *metricDef, lv []string) (*prometheus.Desc, []string) {
	if !e.c.tags {
		return e.c.descs[d], lv
	}
	out := append(append(make([]string, 0, len(lv)+3), lv...), e.mesh, e.node)
	if d.scope == scopeRoute {
		if strings.HasPrefix(lv[0], "ingress:") { // the node's own listener: no virtual service
			return e.c.noVS[d], out
		}
		out = append(out, lv[0])
	}
	return e.c.descs[d], out
}

func (e *emitter) emit(d *metricDef, v float64, lv ...string) {
	if d.Detailed && !e.c.detailed {
		return
	}
	vt := prometheus.GaugeValue
	if d.Type == counter {
		vt = prometheus.CounterValue
	}
	desc, vals := e.series(d, lv)
	m, err := prometheus.NewConstMetric(desc, vt, v, vals...)
	if err != nil {
		m = prometheus.NewInvalidMetric(desc, err)
	}
	e.ch <- m
}

// used emits a counter once it is not zero (Envoy's used-only view: outcome and event
// counters appear with their first increment).
func (e *emitter) used(d *metricDef, v uint64, lv ...string) {
	if v != 0 {
		e.emit(d, float64(v), lv...)
	}
}

func (e *emitter) histogram(d *metricDef, count uint64, sum float64, buckets map[float64]uint64, lv ...string) {
	if d.Detailed && !e.c.detailed {
		return
	}
	desc, vals := e.series(d, lv)
	m, err := prometheus.NewConstHistogram(desc, count, sum, buckets, vals...)
	if err != nil {
		m = prometheus.NewInvalidMetric(desc, err)
	}
	e.ch <- m
}

// httpView is one plain read of a telemetry.HTTPStats.
type httpView struct {
	inFlight                                            int64
	classes                                             [6]uint64
	codes                                               [len(telemetry.StatusCodes)]uint64
	buckets                                             [len(telemetry.LatencyBuckets) + 1]uint64
	sumMicros                                           uint64
	timeouts, rateLimited, overflow, noRoute, noHealthy uint64
	protocolErrors                                      uint64
	grpc                                                [2]uint64
}

func readHTTP(s *telemetry.HTTPStats) (v httpView) {
	if s == nil {
		return v
	}
	v.inFlight = s.InFlight.Load()
	for i := range s.Classes {
		v.classes[i] = s.Classes[i].Load()
	}
	for i := range s.Codes {
		v.codes[i] = s.Codes[i].Load()
	}
	for i := range s.Buckets {
		v.buckets[i] = s.Buckets[i].Load()
	}
	v.sumMicros = s.SumMicros.Load()
	v.timeouts, v.rateLimited, v.overflow = s.Timeouts.Load(), s.RateLimited.Load(), s.Overflow.Load()
	v.noRoute, v.noHealthy = s.NoRoute.Load(), s.NoHealthy.Load()
	v.protocolErrors = s.ProtocolErrors.Load()
	v.grpc[0], v.grpc[1] = s.GRPC[0].Load(), s.GRPC[1].Load()
	return v
}

func (v *httpView) requests() (n uint64) {
	for _, c := range v.classes {
		n += c
	}
	return n
}

// seconds is the histogram in seconds on meshd's bounds (cumulative).
func (v *httpView) seconds() (count uint64, sum float64, buckets map[float64]uint64) {
	buckets = make(map[float64]uint64, len(telemetry.LatencyBuckets))
	for i, le := range telemetry.LatencyBuckets {
		count += v.buckets[i]
		buckets[le] = count
	}
	count += v.buckets[len(telemetry.LatencyBuckets)]
	return count, float64(v.sumMicros) / 1e6, buckets
}

// millis is the histogram in milliseconds on Envoy's bounds (cumulative).
func (v *httpView) millis() (count uint64, sum float64, buckets map[float64]uint64) {
	cum := make([]uint64, len(v.buckets))
	for i, b := range v.buckets {
		count += b
		cum[i] = count
	}
	buckets = make(map[float64]uint64, len(envoyBucketsMS))
	for i, ms := range envoyBucketsMS {
		buckets[ms] = cum[envoyBucketIndex[i]]
	}
	return count, float64(v.sumMicros) / 1e3, buckets
}

// classLabel is meshd's code_class for HTTPStats.Classes[i].
func classLabel(i int) string {
	if i == 0 {
		return "none"
	}
	return strconv.Itoa(i) + "xx"
}

// requests emits the by-class and by-code families of v (used only).
func (e *emitter) requests(v *httpView, byClass, byCode *metricDef, lv ...string) {
	n := len(lv)
	lv = append(lv, "")
	for i, c := range v.classes {
		lv[n] = classLabel(i)
		e.used(byClass, c, lv...)
	}
	for i, c := range v.codes {
		lv[n] = strconv.Itoa(telemetry.StatusCodes[i])
		e.used(byCode, c, lv...)
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	api := c.api
	e := &emitter{c: c, ch: ch, node: api.Node}
	f := c.f
	snap := api.State.Load()
	if snap != nil {
		e.node = snap.Node()
		if cfg := snap.Config(); cfg != nil {
			e.mesh = cfg.Mesh.MeshName
		}
	}

	rs := api.State.ReloadStats()
	e.emit(f.configApplies, float64(rs.Applied), "applied")
	e.emit(f.configApplies, float64(rs.Rejected), "rejected")
	e.emit(f.configPersistErrors, float64(rs.PersistErrors))
	if snap != nil {
		e.emit(f.configInfo, 1, snap.Version())
		e.emit(f.configApplied, float64(snap.AppliedAt().UnixNano())/1e9)
	}
	if api.AccessLogs != nil {
		for _, a := range api.AccessLogs() {
			e.emit(f.accessLogLines, float64(a.Written), a.Path, "written")
			e.emit(f.accessLogLines, float64(a.Dropped), a.Path, "dropped")
		}
	}
	// HTTP/2 series exist once their counter moved: a sidecar that never sees HTTP/2, or
	// a flood, exports none of them (every series is a paid metric somewhere).
	for sd, h := range api.HTTP2 {
		e.used(f.h2Conns, h.Conns.Load(), sd)
		e.used(f.h2Streams, h.Streams.Load(), sd)
		e.used(f.h2Refused, h.RefusedStreams.Load(), sd)
		e.used(f.h2ProtoErrs, h.ProtocolErrors.Load(), sd)
		e.used(f.h2StreamErrs, h.StreamErrors.Load(), sd)
		e.used(f.h2HeaderBig, h.HeaderTooLarge.Load(), sd)
		e.used(f.h2GoAwaySent, h.GoAwaySent.Load(), sd)
		e.used(f.h2GoAwayRecv, h.GoAwayReceived.Load(), sd)
		for _, fl := range h2.Floods() {
			e.used(f.h2Flood, h.Flood(fl), sd, fl.String())
		}
	}
	if api.L4 != nil {
		v := api.L4.View()
		e.used(f.egressDropped, uint64(v.Dropped))
		if p := v.Passthrough; p != nil {
			e.used(f.passConns, uint64(p.Accepted))
			e.emit(f.passActive, float64(p.Active))
			e.used(f.passSent, uint64(p.BytesSent))
			e.used(f.passReceived, uint64(p.BytesReceived))
		}
	}

	c.collectListener(e, "ingress", api.IngressStats)
	c.collectListener(e, "egress", api.EgressStats)
	for _, kind := range []string{"ingress", "egress"} {
		if n := api.FirstRequestTimeouts[kind]; n != nil {
			e.used(c.f.lsFirstReqTimeouts, n.Load(), kind)
		}
	}
	c.collectTLS(e, snap)
	c.collectConns(e)
	if snap == nil {
		return
	}
	if ls := snap.ListenerLimits(); len(ls) > 0 {
		for port, ll := range ls {
			e.used(f.lsRateLimited, ll.Counters().RateLimited.Load(), "ingress", strconv.Itoa(port))
		}
	}
	for port, a := range snap.Authorizations() {
		ac, p := a.Counters(), strconv.Itoa(port)
		e.used(f.lsAuthzAllowed, ac.Allowed.Load(), "ingress", p)
		e.used(f.lsAuthzDenied, ac.DeniedPolicy.Load(), "ingress", p, "policy")
		e.used(f.lsAuthzDenied, ac.DeniedNoIdentity.Load(), "ingress", p, "no_identity")
	}
	for _, rt := range snap.Table().Routes() {
		if p := snap.Policy(rt); p != nil {
			c.collectRoute(e, rt, p)
		}
	}
	if gw := snap.Gateway(); gw != nil {
		for _, gr := range gw.Routes {
			c.collectGatewayRoute(e, gw.Name, gr.Name, snap.GatewayRouteStats(gr.Name))
		}
	}
	names := make([]string, 0, len(snap.Clusters()))
	for name := range snap.Clusters() {
		names = append(names, name)
	}
	sort.Strings(names)
	envoy := envoyNames(e.mesh, snap)
	for _, name := range names {
		cl := snap.Cluster(name)
		c.collectCluster(e, cl, envoy[cl])
	}
}

func (c *collector) collectListener(e *emitter, name string, st *telemetry.HTTPStats) {
	if st == nil {
		return
	}
	f := c.f
	v := readHTTP(st)
	e.requests(&v, f.lsRequests, f.lsByCode, name)
	e.emit(f.lsInFlight, float64(v.inFlight), name)
	e.used(f.lsNoRoute, v.noRoute, name)
	if c.detailed {
		count, sum, b := v.seconds()
		e.histogram(f.lsDuration, count, sum, b, name)
	}
	// Envoy: http.<ingress|egress>.downstream_rq_*
	e.emit(f.evDsRqTotal, float64(v.requests()), name)
	for i := 1; i < len(v.classes); i++ {
		e.used(f.evDsRqXX, v.classes[i], name, strconv.Itoa(i))
	}
	e.emit(f.evDsRqActive, float64(v.inFlight), name)
	if c.detailed {
		count, sum, b := v.millis()
		e.histogram(f.evDsRqTime, count, sum, b, name)
	}
}

func (c *collector) collectRoute(e *emitter, rt *router.Route, p *state.RoutePolicy) {
	f := c.f
	v := readHTTP(p.Stats())
	vs, name := rt.Service, rt.Name
	e.requests(&v, f.rtRequests, f.rtByCode, vs, name)
	if c.detailed {
		count, sum, b := v.seconds()
		e.histogram(f.rtDuration, count, sum, b, vs, name)
	}
	rc := p.Counters()
	e.used(f.rtRetries, rc.Retries.Load(), vs, name)
	e.used(f.rtBudget, rc.RetryBudgetExhausted.Load(), vs, name)
	e.used(f.rtRetryOverflow, rc.OverflowMaxRetries.Load(), vs, name)
	e.used(f.rtTimeouts, v.timeouts, vs, name)
	e.used(f.rtRateLimited, v.rateLimited, vs, name)
	if ms := p.MirrorStats(); ms != nil {
		for _, r := range MirrorResults(ms) {
			e.emit(f.rtMirror, float64(r.V), vs, name, r.Name)
		}
	}
}

// collectGatewayRoute exports one gateway route's request statistics.
func (c *collector) collectGatewayRoute(e *emitter, gateway, name string, st *telemetry.HTTPStats) {
	if st == nil {
		return
	}
	f := c.f
	v := readHTTP(st)
	e.requests(&v, f.gwRequests, f.gwByCode, gateway, name)
	if c.detailed {
		count, sum, b := v.seconds()
		e.histogram(f.gwDuration, count, sum, b, gateway, name)
	}
	e.used(f.gwGRPC, v.grpc[0], gateway, name, "ok")
	e.used(f.gwGRPC, v.grpc[1], gateway, name, "error")
}

// MirrorResult is one of a route's mirror counters, by its result label.
type MirrorResult struct {
	Name string
	V    uint64
}

// MirrorResults lists a route's mirror counters by result, in the order
// docs/metrics.md names them.
func MirrorResults(ms *state.MirrorStats) []MirrorResult {
	return []MirrorResult{
		{"sent", ms.Sent.Load()},
		{"skipped_body", ms.SkippedBody.Load()},
		{"skipped_overflow", ms.SkippedOverflow.Load()},
		{"failed", ms.Failed.Load()},
	}
}

// envoyClusterName is the name App Mesh's Envoy gives the cluster: for a backend
// virtual node cds_egress_<mesh>_<virtualNode>_<protocol>_<port>, for the local app
// cds_ingress_<mesh>_<node>_self_redirect_<protocol>_<port>.
func envoyClusterName(mesh string, ref router.ClusterRef) string {
	port := strconv.Itoa(ref.Port)
	if ref.Local {
		return "cds_ingress_" + mesh + "_" + ref.Node + "_self_redirect_" + ref.Protocol + "_" + port
	}
	return "cds_egress_" + mesh + "_" + ref.Node + "_" + ref.Protocol + "_" + port
}

// collectCluster emits cl's series; envoy is its Envoy cluster name (envoyNames).
func (c *collector) collectCluster(e *emitter, cl *upstream.Cluster, envoy string) {
	f := c.f
	ref := cl.Ref()
	node, name := ref.Node, ref.Name
	l := cl.Listener()
	rc := cl.Counters().Snapshot()
	bal := cl.Balancer()
	l4 := cl.L4()
	tcp := ref.Protocol == config.ProtoTCP
	l4Seen := tcp || l4.Accepted.Load() != 0 || l4.Rejected.Load() != 0

	// Membership and resilience: every cluster.
	e.emit(f.clEndpoints, float64(bal.Len()), node, name)
	e.emit(f.clHealthy, float64(bal.Available()), node, name)
	if bal.TickEvery() > 0 { // only clusters with slowStart: the series budget is counted
		e.emit(f.clRamping, float64(bal.RampingEndpoints()), node, name)
	}
	if h := bal.HashOn(); h != nil {
		e.emit(f.clHashFallbacks, float64(bal.HashFallbacks()), node, name)
		if h.Cookie != "" {
			e.emit(f.clCookies, float64(h.CookiesGenerated()), node, name)
		}
	}
	e.emit(f.evMembers, float64(bal.Len()), envoy)
	e.emit(f.evHealthy, float64(bal.Available()), envoy)
	e.emit(f.evEjectActive, float64(rc.OutlierEjectionsActive), envoy)
	if l != nil && l.OutlierDetection != nil {
		e.emit(f.clEjectActive, float64(rc.OutlierEjectionsActive), node, name)
		e.emit(f.evEjectEnforced, float64(rc.OutlierEjections), envoy)
	}
	e.used(f.clEjections, rc.OutlierEjections, node, name)
	e.used(f.clEjectOverflow, rc.OutlierEjectionsOverflow, node, name)
	if br := cl.Breaker(); br != nil {
		e.emit(f.clBreakerState, breakerGauge(br.State()), node, name)
	}
	e.used(f.clBreakerTrips, rc.BreakerOpened, node, name)
	e.used(f.clBreakerRejected, rc.BreakerRejected, node, name)
	if l != nil && l.HealthCheck != nil {
		e.emit(f.evHCSuccess, float64(rc.HealthChecksPassed), envoy)
		e.emit(f.evHCFailure, float64(rc.HealthChecksFailed), envoy)
	}
	e.used(f.clHCPass, rc.HealthChecksPassed, node, name)
	e.used(f.clHCFail, rc.HealthChecksFailed, node, name)
	var l4Active int64
	if l4Seen {
		l4Active = l4.Active.Load()
		e.used(f.clTCPConns, uint64(l4.Accepted.Load()), node, name)
		e.emit(f.clTCPActive, float64(l4Active), node, name)
		e.used(f.clTCPRejected, uint64(l4.Rejected.Load()), node, name)
		e.used(f.clTCPConnectFail, uint64(l4.ConnectFailures.Load()), node, name)
		e.used(f.clTCPIdle, uint64(l4.IdleTimeouts.Load()), node, name)
		e.used(f.clTCPSent, uint64(l4.BytesSent.Load()), node, name)
		e.used(f.clTCPReceived, uint64(l4.BytesReceived.Load()), node, name)
		e.emit(f.evCxRx, float64(l4.BytesReceived.Load()), envoy)
		e.emit(f.evCxTx, float64(l4.BytesSent.Load()), envoy)
	}
	e.emit(f.evCxActive, float64(cl.OpenConns()+l4Active), envoy)
	if c.detailed {
		for _, ep := range bal.Snapshot() {
			e.emit(f.epInFlight, float64(ep.InFlight), node, name, ep.Address)
			e.used(f.epRequests, ep.Requests, node, name, ep.Address)
			e.used(f.epFailures, ep.Failures, node, name, ep.Address)
			e.emit(f.epHealthy, boolGauge(ep.Healthy), node, name, ep.Address)
			e.emit(f.epEjected, boolGauge(ep.Ejected), node, name, ep.Address)
		}
	}
	if tcp {
		return // no HTTP request reaches a tcp cluster
	}

	// HTTP requests.
	v := readHTTP(cl.Stats())
	e.requests(&v, f.clRequests, f.clByCode, node, name)
	count, sum, b := v.seconds()
	e.histogram(f.clDuration, count, sum, b, node, name)
	inFlight := float64(bal.InFlight())
	e.emit(f.clInFlight, inFlight, node, name)
	if cl.Shared() {
		e.emit(f.clPending, float64(cl.Pending()), node, name)
	}
	e.emit(f.clConns, float64(cl.OpenConns()), node, name)
	e.used(f.clRetries, rc.Retries, node, name)
	e.used(f.clBudget, rc.RetryBudgetExhausted, node, name)
	e.used(f.clRetryOverflow, rc.OverflowMaxRetries, node, name)
	if c.detailed {
		e.emit(f.clRetriesActive, float64(cl.Budget().Outstanding()), node, name)
	}
	e.used(f.clTimeouts, v.timeouts, node, name)
	e.used(f.clGRPC, v.grpc[0], node, name, "ok")
	e.used(f.clGRPC, v.grpc[1], node, name, "error")
	e.used(f.clNoHealthy, v.noHealthy, node, name)
	e.used(f.clProtocolErrors, v.protocolErrors, node, name)
	e.used(f.clPoolOverflow, rc.OverflowMaxConnections, node, name, "max_connections")
	e.used(f.clPoolOverflow, rc.OverflowMaxPendingRequests, node, name, "max_pending_requests")
	e.used(f.clPoolOverflow, rc.OverflowMaxRequests, node, name, "max_requests")

	// Envoy: cluster.<name>.upstream_rq_*
	e.emit(f.evRqTotal, float64(v.requests()), envoy)
	for i := 1; i < len(v.classes); i++ {
		e.used(f.evRqXX, v.classes[i], envoy, strconv.Itoa(i))
	}
	for i, n := range v.codes {
		e.used(f.evRq, n, envoy, strconv.Itoa(telemetry.StatusCodes[i]))
	}
	count, sum, b = v.millis()
	e.histogram(f.evRqTime, count, sum, b, envoy)
	e.emit(f.evRqActive, inFlight, envoy)
	e.emit(f.evRetry, float64(rc.Retries), envoy)
	e.emit(f.evRetryOverflow, float64(rc.RetryBudgetExhausted+rc.OverflowMaxRetries), envoy)
	e.emit(f.evPendingOverflow, float64(rc.OverflowMaxConnections+rc.OverflowMaxPendingRequests+rc.OverflowMaxRequests), envoy)
	e.emit(f.evTimeout, float64(v.timeouts), envoy)
}

// breakerGauge is meshd_cluster_breaker_state's value: 0 closed, 1 half-open, 2 open.
func breakerGauge(s resilience.BreakerState) float64 {
	switch s {
	case resilience.BreakerHalfOpen:
		return 1
	case resilience.BreakerOpen:
		return 2
	default:
		return 0
	}
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
