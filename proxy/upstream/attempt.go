package upstream

import (
	"context"
	"net/http"
	"time"

	"github.com/meshd/meshd/balancer"
	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/resilience"
	"github.com/meshd/meshd/router"
	"github.com/meshd/meshd/telemetry"
)

// Pick picks an endpoint, avoiding avoid when another is available. An empty cluster
// fails with a NoEndpoint *Error.
func (c *Cluster) Pick(avoid *balancer.Endpoint) (balancer.Result, error) {
	res, err := c.bal.Pick(balancer.PickInfo{Avoid: avoid})
	if err != nil {
		return res, &Error{Kind: NoEndpoint, Err: err}
	}
	return res, nil
}

// AttemptEnd reports one attempt's end: the balancer's Done (in-flight count, totals)
// and, for failures the upstream is to blame for, outlier detection. A failure caused by
// the downstream (blame false) is not held against the endpoint. Ejections are applied
// to the balancer at once: they are rare, and the next pick must not choose the endpoint.
func (c *Cluster) AttemptEnd(res balancer.Result, info balancer.DoneInfo, blame bool) {
	res.Done(info)
	if c.outlier == nil || res.Endpoint == nil {
		return
	}
	failedLocal := blame && info.Err != nil
	if !failedLocal && info.Status < 500 {
		return // successes cost nothing
	}
	r := resilience.Result{Status: info.Status, Err: failedLocal, LocalOrigin: failedLocal}
	if c.outlier.Record(res.Endpoint.Address, r, c.clock.Now()) {
		c.bal.SetEjected(res.Endpoint.Address, true)
	}
}

// Name is the cluster's name ("<node>:<port>" or a passthrough's).
func (c *Cluster) Name() string { return c.ref.Name }

// Ref is the route table's description of the cluster.
func (c *Cluster) Ref() router.ClusterRef { return c.ref }

// Listener is the target node's listener the cluster was built from (nil: none).
func (c *Cluster) Listener() *config.Listener { return c.ref.Listener }

// HTTP2 reports whether the upstream speaks HTTP/2 (listener protocol http2 or grpc).
func (c *Cluster) HTTP2() bool { return c.h2 }

// Shared reports whether HTTP/1.1 connections must go back to the shared pool after
// each exchange (connectionPool.http limits count real use) rather than stay with one
// downstream connection.
func (c *Cluster) Shared() bool { return c.slots != nil }

// Timeouts are the target listener's perRequest and idle timeouts (0: not set).
func (c *Cluster) Timeouts() (perRequest, idle time.Duration) { return c.perRequest, c.idle }

// Balancer is the cluster's endpoint set.
func (c *Cluster) Balancer() *balancer.Cluster { return c.bal }

// Breaker is the cluster's circuit breaker; nil when the listener configures none
// (a nil *resilience.Breaker admits everything).
func (c *Cluster) Breaker() *resilience.Breaker { return c.breaker }

// Budget is the cluster's retry budget.
func (c *Cluster) Budget() *resilience.RetryBudget { return c.budget }

// Counters are the cluster's resilience counters (kept across reloads by name).
func (c *Cluster) Counters() *resilience.Counters { return c.counters }

// Stats are the cluster's request statistics (carried to a successor of the same name).
func (c *Cluster) Stats() *telemetry.HTTPStats { return c.stats }

// L4 are the cluster's L4 counters.
func (c *Cluster) L4() *L4Stats { return c.l4 }

// RoundTripper is the cluster's http.RoundTripper: meshd's HTTP/2 transport for HTTP/2
// upstreams; for HTTP/1.1 upstreams (reached from HTTP/2 clients) meshd's HTTP/1.1
// transport over the endpoints' pools, the connections of the HTTP/1.1 fast path. Its
// request's URL.Host is the endpoint's address.
func (c *Cluster) RoundTripper() http.RoundTripper { return c.rt }

// ContextRoundTripper is a RoundTripper that takes the request's context beside the
// request (both of meshd's transports): the pipeline sends one request per attempt
// under the attempt's context without copying the request for it (WithContext).
type ContextRoundTripper interface {
	RoundTripContext(ctx context.Context, req *http.Request) (*http.Response, error)
}

// EndpointRoundTripper is a ContextRoundTripper that also takes the balancer's pick:
// meshd's HTTP/1.1 transport then takes the connection pool hung on the endpoint, as the
// HTTP/1.1 front end does, instead of looking it up by address under the cluster's
// lock on every request.
type EndpointRoundTripper interface {
	RoundTripEndpoint(ctx context.Context, req *http.Request, ep *balancer.Endpoint) (*http.Response, error)
}

// OpenConns counts the cluster's open HTTP/1.1 upstream connections.
func (c *Cluster) OpenConns() int64 { return c.openConns.Load() }

// Pending counts HTTP/1.1 requests waiting for a connectionPool slot.
func (c *Cluster) Pending() int64 { return c.pending.Load() }

// RunHealthChecks runs one health check round now and waits for it (tests).
func (c *Cluster) RunHealthChecks() { c.health.round() }

// HasEndpoint reports whether addr ("ip:port", as netip.AddrPort formats it) is one of
// the cluster's current endpoints.
func (c *Cluster) HasEndpoint(addr []byte) bool {
	c.poolsMu.RLock()
	_, ok := c.byAddr[string(addr)]
	c.poolsMu.RUnlock()
	return ok
}

// EndpointPool is the keep-alive pool of the endpoint at addr ("ip:port"), the one hung
// on its balancer endpoint; false when addr is not one of the cluster's endpoints.
func (c *Cluster) EndpointPool(addr string) (*Pool, bool) {
	c.poolsMu.RLock()
	p, ok := c.byAddr[addr]
	c.poolsMu.RUnlock()
	return p, ok
}

// Cluster is the cluster the pool belongs to.
func (p *Pool) Cluster() *Cluster { return p.cl }
