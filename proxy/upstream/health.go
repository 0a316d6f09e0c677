package upstream

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meshd/meshd/balancer"
	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/resilience"
	"github.com/meshd/meshd/telemetry"
)

// minSweep bounds how often the outlier sweep runs, whatever the configured durations.
const minSweep = 10 * time.Millisecond

// panicThreshold maps the listener's healthCheck.panicThresholdPercent to the
// balancer's option: unset is the default (0), an explicit 0 disables panic (-1).
func panicThreshold(l *config.Listener) int {
	if l == nil || l.HealthCheck == nil || l.HealthCheck.PanicThresholdPercent == nil {
		return 0
	}
	if p := *l.HealthCheck.PanicThresholdPercent; p > 0 {
		return p
	}
	return -1
}

// initResilience builds the cluster's retry budget (retryBudget extension, else the
// defaults), outlier detector, breaker and health checker from the target listener. Config validation guarantees the values are in
// range; a constructor error anyway (a programming error) is logged and the mechanism
// left off rather than failing the whole config.
func (c *Cluster) initResilience(opts Options) {
	c.clock = opts.Clock
	if c.clock == nil {
		c.clock = resilience.SystemClock{}
	}
	c.log = telemetry.OrDiscard(opts.Log)
	if opts.Counters != nil {
		c.counters = opts.Counters(c.ref.Name)
	}
	if c.counters == nil {
		c.counters = new(resilience.Counters)
	}
	if opts.Stats != nil {
		c.stats = opts.Stats(c.ref.Name)
	}
	if c.stats == nil {
		c.stats = new(telemetry.HTTPStats)
	}
	if opts.L4Stats != nil {
		c.l4 = opts.L4Stats(c.ref.Name)
	}
	if c.l4 == nil {
		c.l4 = new(L4Stats)
	}
	l := c.ref.Listener
	var bc resilience.BudgetConfig
	if l != nil && l.RetryBudget != nil {
		bc = resilience.BudgetConfig{
			BudgetPercent:       l.RetryBudget.BudgetPercent,
			MinRetryConcurrency: l.RetryBudget.MinRetryConcurrency,
			MaxRetries:          l.RetryBudget.MaxRetries,
		}
	}
	b, err := resilience.NewRetryBudget(bc, c.counters)
	if err != nil {
		c.log.Error("retryBudget left at its defaults", "cluster", c.ref.Name, "err", err)
		if b, err = resilience.NewRetryBudget(resilience.BudgetConfig{}, c.counters); err != nil {
			panic(err) // the zero BudgetConfig is the documented default and always valid
		}
	}
	c.budget = b
	if l == nil {
		return
	}
	if od := l.OutlierDetection; od != nil {
		cfg := resilience.OutlierConfig{
			MaxServerErrors:      od.MaxServerErrors,
			Interval:             od.Interval.D(),
			BaseEjectionDuration: od.BaseEjectionDuration.D(),
			MaxEjectionPercent:   od.MaxEjectionPercent,
		}
		if d, err := resilience.NewOutlierDetector(c.ref.Name, cfg, c.counters, c.log); err != nil {
			c.log.Error("outlier detection left off", "cluster", c.ref.Name, "err", err)
		} else {
			c.outlier = d
			c.sweepEvery = max(min(cfg.Interval, cfg.BaseEjectionDuration), minSweep)
		}
	}
	if cb := l.CircuitBreaker; cb != nil {
		cfg := resilience.BreakerConfig{
			ConsecutiveFailures: uint32(cb.ConsecutiveFailures),
			FailureRatio:        cb.FailureRatio,
			MinRequests:         uint32(cb.MinRequests),
			Interval:            cb.Interval.D(),
			OpenDuration:        cb.OpenDuration.D(),
			HalfOpenRequests:    uint32(cb.HalfOpenRequests),
		}
		if br, err := resilience.NewBreaker(c.ref.Name, cfg, c.counters, c.log); err != nil {
			c.log.Error("circuit breaker left off", "cluster", c.ref.Name, "err", err)
		} else {
			c.breaker = br
		}
	}
	if hc := l.HealthCheck; hc != nil {
		c.health = newHealthChecker(c, *hc)
	}
}

// startControl starts the cluster's control goroutine when it has periodic work:
// outlier sweeps (returning ejected endpoints when their time is up) and health check
// rounds. close stops and joins it.
func (c *Cluster) startControl() {
	ramp := c.bal.TickEvery()
	if c.outlier == nil && c.health == nil && ramp == 0 {
		return
	}
	c.controlWG.Add(1)
	go func() {
		defer c.controlWG.Done()
		var sweep, check, tick <-chan time.Time
		if ramp > 0 {
			// Slow start: effective weights follow the clock while an endpoint ramps
			// (Tick is a no-op otherwise).
			ch, stop := c.clock.NewTicker(ramp)
			defer stop()
			tick = ch
		}
		if c.outlier != nil {
			ch, stop := c.clock.NewTicker(c.sweepEvery)
			defer stop()
			sweep = ch
		}
		if c.health != nil {
			ch, stop := c.clock.NewTicker(c.health.interval)
			defer stop()
			check = ch
		}
		for {
			select {
			case <-c.stop:
				return
			case <-sweep:
				c.SweepOutliers()
			case <-check:
				c.health.round()
			case <-tick:
				c.bal.Tick()
			}
		}
	}()
}

// sweepOutliers returns endpoints whose ejection is over to the balancer. Called by the
// control goroutine (and by tests through the export seam); safe from any goroutine.
func (c *Cluster) SweepOutliers() {
	if c.outlier == nil {
		return
	}
	for _, addr := range c.outlier.Sweep(c.clock.Now(), nil) {
		c.bal.SetEjected(addr, false)
	}
}

// closeResilience stops what the cluster's resilience state owns (the control
// goroutine, health check connections) and takes its ejections out of the active gauge,
// so counters carried to a successor cluster stay right. The health checker is
// cancelled first: a round in progress would otherwise hold the control goroutine (and
// so this call, which runs under the apply lock) for up to timeoutMillis.
func (c *Cluster) closeResilience() {
	c.health.cancelChecks()
	close(c.stop)
	c.controlWG.Wait()
	c.health.close()
	if c.outlier != nil {
		c.outlier.Update(nil)
	}
}

// healthChecker runs App Mesh's active health checks against every endpoint of one
// cluster. An endpoint starts healthy; unhealthyThreshold failed checks in a row mark it
// unhealthy, healthyThreshold passed ones mark it healthy again. Verdicts go to the
// balancer, whose availability predicate and panic threshold act on them.
//
// Concurrency: add and remove come from balancer hooks (serialized by the balancer);
// round from the cluster's control goroutine or a test seam, serialized by roundMu.
// A nil *healthChecker does nothing.
type healthChecker struct {
	cl       *Cluster
	cfg      config.HealthCheck
	interval time.Duration
	timeout  time.Duration
	client   *http.Client // http and http2 checks
	ctx      context.Context
	cancel   context.CancelFunc

	roundMu sync.Mutex
	mu      sync.Mutex
	eps     map[*balancer.Endpoint]*hcState
}

type hcState struct {
	passes, fails int
	conn          *grpc.ClientConn // grpc checks: one connection per endpoint, reused
	removed       bool             // remove dropped it: a check must not store a conn
}

func newHealthChecker(c *Cluster, cfg config.HealthCheck) *healthChecker {
	h := &healthChecker{
		cl:       c,
		cfg:      cfg,
		interval: time.Duration(cfg.IntervalMillis) * time.Millisecond,
		timeout:  time.Duration(cfg.TimeoutMillis) * time.Millisecond,
		eps:      map[*balancer.Endpoint]*hcState{},
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	if cfg.Protocol == config.ProtoHTTP || cfg.Protocol == config.ProtoHTTP2 {
		tr := &http.Transport{
			DialContext:         c.dialer.DialContext,
			DisableCompression:  true,
			MaxIdleConnsPerHost: 1,
			IdleConnTimeout:     2 * h.interval,
		}
		var p http.Protocols
		switch {
		case c.tls != nil:
			// The cluster's TLS, ALPN narrowed to the check's protocol; the transport
			// takes the connection as it comes (net/http verifies nothing more: the
			// handshake did).
			protos := alpnFor(cfg.Protocol)
			tr.DialTLSContext = func(ctx context.Context, _, addr string) (net.Conn, error) {
				return c.dialCheck(ctx, addr, protos)
			}
			if cfg.Protocol == config.ProtoHTTP2 {
				p.SetHTTP2(true)
			} else {
				p.SetHTTP1(true)
			}
			tr.Protocols = &p
		case cfg.Protocol == config.ProtoHTTP2:
			p.SetUnencryptedHTTP2(true)
			tr.Protocols = &p
		}
		h.client = &http.Client{Transport: tr, Timeout: h.timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	return h
}

func (h *healthChecker) add(ep *balancer.Endpoint) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.eps[ep] == nil {
		h.eps[ep] = &hcState{}
	}
}

func (h *healthChecker) remove(ep *balancer.Endpoint) {
	if h == nil {
		return
	}
	h.mu.Lock()
	var conn *grpc.ClientConn
	if st := h.eps[ep]; st != nil {
		conn, st.conn, st.removed = st.conn, nil, true
	}
	delete(h.eps, ep)
	h.mu.Unlock()
	if conn != nil {
		_ = conn.Close()
	}
}

// cancelChecks ends the checks of a round in progress (they fail fast) and keeps later
// rounds from starting. Safe from any goroutine; close does it too.
func (h *healthChecker) cancelChecks() {
	if h == nil {
		return
	}
	h.cancel()
}

func (h *healthChecker) close() {
	if h == nil {
		return
	}
	h.cancel()
	h.roundMu.Lock() // wait for a round in progress
	defer h.roundMu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, st := range h.eps {
		if st.conn != nil {
			_ = st.conn.Close()
			st.conn = nil
		}
	}
	if h.client != nil {
		h.client.CloseIdleConnections()
	}
}

// round checks every endpoint once, concurrently (each bounded by timeoutMillis), and
// applies the thresholds. It returns when every check has ended.
func (h *healthChecker) round() {
	if h == nil {
		return
	}
	h.roundMu.Lock()
	defer h.roundMu.Unlock()
	if h.ctx.Err() != nil {
		return
	}
	h.mu.Lock()
	type job struct {
		ep *balancer.Endpoint
		st *hcState
		ok bool
	}
	jobs := make([]job, 0, len(h.eps))
	for ep, st := range h.eps {
		jobs = append(jobs, job{ep: ep, st: st})
	}
	h.mu.Unlock()
	var wg sync.WaitGroup
	for i := range jobs {
		wg.Add(1)
		go func(j *job) {
			defer wg.Done()
			j.ok = h.check(j.ep.Address, j.st) == nil
		}(&jobs[i])
	}
	wg.Wait()
	if h.ctx.Err() != nil { // cancelled by close: the failures are ours, not the endpoints'
		return
	}
	for _, j := range jobs {
		h.mu.Lock()
		if h.eps[j.ep] != j.st { // removed meanwhile
			h.mu.Unlock()
			continue
		}
		var verdict, decided bool
		if j.ok {
			h.cl.counters.HealthChecksPassed.Add(1)
			j.st.passes++
			j.st.fails = 0
			if j.st.passes >= h.cfg.HealthyThreshold {
				verdict, decided = true, true
			}
		} else {
			h.cl.counters.HealthChecksFailed.Add(1)
			j.st.fails++
			j.st.passes = 0
			if j.st.fails >= h.cfg.UnhealthyThreshold {
				verdict, decided = false, true
			}
		}
		h.mu.Unlock()
		if decided && h.cl.bal.SetHealthy(j.ep.Address, verdict) {
			h.cl.log.Info("health check verdict changed", "cluster", h.cl.ref.Name, "endpoint", j.ep.Address, "healthy", verdict)
		}
	}
}

// check runs one health check against addr (the port replaced by healthCheck.port when
// set). A nil error is a pass.
func (h *healthChecker) check(addr string, st *hcState) error {
	if h.cfg.Port != 0 {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			addr = net.JoinHostPort(host, strconv.Itoa(h.cfg.Port))
		}
	}
	ctx, cancel := context.WithTimeout(h.ctx, h.timeout)
	defer cancel()
	switch h.cfg.Protocol {
	case config.ProtoHTTP, config.ProtoHTTP2:
		scheme := "http://"
		if h.cl.tls != nil {
			scheme = "https://"
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+addr+h.cfg.Path, nil)
		if err != nil {
			return fmt.Errorf("health check %s: %w", addr, err)
		}
		req.Header.Set("User-Agent", "meshd-health-check")
		resp, err := h.client.Do(req)
		if err != nil {
			return fmt.Errorf("health check %s: %w", addr, err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK { // Envoy's default expected status
			return fmt.Errorf("health check %s: status %d", addr, resp.StatusCode)
		}
		return nil
	case config.ProtoGRPC:
		conn := st.conn
		if conn == nil {
			var err error
			opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
			if h.cl.tls != nil {
				// The cluster's TLS under grpc's feet: grpc speaks HTTP/2 over the
				// connection the dialer returns, which is already the *tls.Conn.
				opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
					return h.cl.dialCheck(ctx, addr, alpnFor(config.ProtoGRPC))
				}))
			}
			conn, err = grpc.NewClient("passthrough:///"+addr, opts...)
			if err != nil {
				return fmt.Errorf("health check %s: %w", addr, err)
			}
			h.mu.Lock()
			if st.removed {
				// The endpoint went while the round ran: this check is its last, and
				// nothing else would close the connection.
				defer conn.Close()
			} else {
				st.conn = conn
			}
			h.mu.Unlock()
		}
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return fmt.Errorf("health check %s: %w", addr, err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("health check %s: %s", addr, resp.GetStatus())
		}
		return nil
	default: // tcp: a connect passes (and the handshake, when the cluster originates TLS)
		conn, err := h.cl.dialCheck(ctx, addr, nil)
		if err != nil {
			return fmt.Errorf("health check %s: %w", addr, err)
		}
		return conn.Close()
	}
}
