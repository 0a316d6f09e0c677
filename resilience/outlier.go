package resilience

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/meshd/meshd/telemetry"
)

// DefaultMaxEjectionDuration caps baseEjectionDuration × times ejected, as Envoy's
// max_ejection_time does (App Mesh has no field for it).
const DefaultMaxEjectionDuration = 300 * time.Second

// OutlierConfig is a listener's outlierDetection. The proxy converts config durations
// with config.Duration.D.
type OutlierConfig struct {
	// MaxServerErrors within one Interval eject an endpoint; ≥ 1.
	MaxServerErrors int64
	// Interval is the counting window, and how long an endpoint must stay in before one
	// past ejection is forgiven; > 0.
	Interval time.Duration
	// BaseEjectionDuration × times ejected is how long an ejection lasts; > 0.
	BaseEjectionDuration time.Duration
	// MaxEjectionPercent of the cluster's endpoints may be ejected at once; 0..100.
	MaxEjectionPercent int
	// MaxEjectionDuration caps an ejection; 0 means the larger of
	// DefaultMaxEjectionDuration and BaseEjectionDuration.
	MaxEjectionDuration time.Duration
}

func (c *OutlierConfig) validate() error {
	switch {
	case c.MaxServerErrors < 1:
		return fmt.Errorf("outlierDetection.maxServerErrors %d: want ≥ 1", c.MaxServerErrors)
	case c.Interval <= 0:
		return fmt.Errorf("outlierDetection.interval %v: want > 0", c.Interval)
	case c.BaseEjectionDuration <= 0:
		return fmt.Errorf("outlierDetection.baseEjectionDuration %v: want > 0", c.BaseEjectionDuration)
	case c.MaxEjectionPercent < 0 || c.MaxEjectionPercent > 100:
		return fmt.Errorf("outlierDetection.maxEjectionPercent %d: want 0..100", c.MaxEjectionPercent)
	case c.MaxEjectionDuration < 0:
		return fmt.Errorf("outlierDetection maxEjectionDuration %v: want ≥ 0", c.MaxEjectionDuration)
	}
	if c.MaxEjectionDuration == 0 {
		c.MaxEjectionDuration = max(DefaultMaxEjectionDuration, c.BaseEjectionDuration)
	}
	return nil
}

// Result is the outcome of one attempt to one endpoint, as the proxy reports it when the
// attempt ends.
type Result struct {
	// Status is the HTTP status received, or 0 if none was.
	Status int
	// Err is true when the exchange failed: no response (connect failure, reset,
	// timeout) or a response cut short.
	Err bool
	// LocalOrigin is true when meshd itself observed the failure (connect failure, reset,
	// timeout) rather than receiving a 5xx; it selects which error counter is bumped.
	LocalOrigin bool
}

// Failed reports whether r counts against the endpoint: any error, or a 5xx status.
func (r Result) Failed() bool { return r.Err || (r.Status >= 500 && r.Status <= 599) }

// OutlierDetector ejects endpoints of one cluster that return too many server errors
// (App Mesh's outlierDetection). An endpoint with MaxServerErrors failures inside one
// Interval is ejected for BaseEjectionDuration × the number of times it has been ejected
// (capped), unless that would put more than MaxEjectionPercent of the endpoints out.
// Each Interval an endpoint spends in service after an ejection forgives one past
// ejection, as Envoy does. Ejected endpoints return on their own: Sweep returns them.
//
// The window is fixed, anchored at the first failure after the previous window ended:
// cheap and exact for the common reading "N errors within interval"; errors spread over
// two windows may go uncounted where a sliding window would count them.
//
// Concurrency: one mutex per detector, taken only for failed results, Sweep, Update and
// queries. Successful results, the overwhelming majority, return before the lock and cost
// nothing; failures are rare enough that a short critical section (a map lookup and a
// few field writes) is cheaper and simpler than per-endpoint atomics that would have to
// coordinate the cross-endpoint maxEjectionPercent check anyway. Record may be called
// from any goroutine; Sweep and Update are meant for the cluster's serialized control
// goroutine but are safe anywhere.
//
// A nil *OutlierDetector is valid and does nothing (outlierDetection not configured).
type OutlierDetector struct {
	counters *Counters
	log      *slog.Logger
	cluster  string

	mu     sync.Mutex
	cfg    OutlierConfig
	hosts  map[string]*hostState
	active int // ejected now
}

type hostState struct {
	errors       int64
	windowStart  time.Time
	ejected      bool
	until        time.Time // end of the current ejection
	times        int64     // ejections not yet forgiven
	healthySince time.Time // start of the current stretch in service (after an ejection)
}

// NewOutlierDetector validates cfg and returns a detector for cluster with no endpoints;
// call Update with the endpoint set. counters may be nil; log may be nil.
func NewOutlierDetector(cluster string, cfg OutlierConfig, counters *Counters, log *slog.Logger) (*OutlierDetector, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("cluster %s: %w", cluster, err)
	}
	return &OutlierDetector{
		counters: orNew(counters),
		log:      telemetry.OrDiscard(log),
		cluster:  cluster,
		cfg:      cfg,
		hosts:    map[string]*hostState{},
	}, nil
}

// SetConfig replaces the configuration (a reload that changed outlierDetection).
// Ejections in progress keep their end time; counting restarts under the new window.
func (d *OutlierDetector) SetConfig(cfg OutlierConfig) error {
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("cluster %s: %w", d.cluster, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cfg = cfg
	for _, h := range d.hosts {
		h.errors = 0
	}
	return nil
}

// Update sets the cluster's endpoint addresses (the complete set, as discovery pushes
// it). New addresses start in service; removed ones are forgotten, ejected or not.
// maxEjectionPercent is computed over this set. Results for addresses not in the set are
// ignored.
func (d *OutlierDetector) Update(hosts []string) {
	if d == nil {
		return
	}
	keep := make(map[string]struct{}, len(hosts))
	for _, h := range hosts {
		keep[h] = struct{}{}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for addr, h := range d.hosts {
		if _, ok := keep[addr]; !ok {
			if h.ejected {
				d.active--
				d.counters.OutlierEjectionsActive.Add(-1)
			}
			delete(d.hosts, addr)
		}
	}
	for addr := range keep {
		if d.hosts[addr] == nil {
			d.hosts[addr] = &hostState{}
		}
	}
}

// Add starts tracking host (in service) if it is not tracked yet; Remove forgets it,
// ejected or not. They let a caller that learns endpoints one at a time (balancer
// hooks) keep the set without building it whole for Update. Nil-safe.
func (d *OutlierDetector) Add(host string) {
	if d == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.hosts[host] == nil {
		d.hosts[host] = &hostState{}
	}
}

// Remove forgets host; see Add.
func (d *OutlierDetector) Remove(host string) {
	if d == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if h := d.hosts[host]; h != nil {
		if h.ejected {
			d.active--
			d.counters.OutlierEjectionsActive.Add(-1)
		}
		delete(d.hosts, host)
	}
}

// Record feeds the result of one attempt to host, ended at now. It reports whether this
// result ejected host, so the caller can ask the cluster's control goroutine to rebuild
// its picker. Successes return at once without locking; Record allocates nothing.
// Failures of an endpoint that is ejected (until Sweep returns it) are ignored: they come
// from attempts that began before the ejection.
func (d *OutlierDetector) Record(host string, r Result, now time.Time) (ejected bool) {
	if d == nil || !r.Failed() {
		return false
	}
	if r.LocalOrigin {
		d.counters.OutlierErrorsLocal.Add(1)
	} else {
		d.counters.OutlierErrorsUpstream.Add(1)
	}
	d.mu.Lock()
	h := d.hosts[host]
	if h == nil || h.ejected {
		// Unknown (removed) endpoint, or an attempt that began before the ejection.
		d.mu.Unlock()
		return false
	}
	if h.errors == 0 || now.Sub(h.windowStart) >= d.cfg.Interval {
		h.windowStart = now
		h.errors = 0
	}
	h.errors++
	if h.errors < d.cfg.MaxServerErrors {
		d.mu.Unlock()
		return false
	}
	h.errors = 0
	if 100*(d.active+1) > d.cfg.MaxEjectionPercent*len(d.hosts) {
		d.mu.Unlock()
		d.counters.OutlierEjectionsOverflow.Add(1)
		return false
	}
	h.times++
	dur := d.cfg.MaxEjectionDuration
	if h.times <= int64(dur/d.cfg.BaseEjectionDuration) {
		dur = d.cfg.BaseEjectionDuration * time.Duration(h.times)
	}
	h.ejected = true
	h.until = now.Add(dur)
	d.active++
	times := h.times
	d.mu.Unlock()

	d.counters.OutlierEjections.Add(1)
	d.counters.OutlierEjectionsActive.Add(1)
	// Ejections are rare and operators want to see each one.
	d.log.Info("outlier ejected", "cluster", d.cluster, "endpoint", host, "times", times, "duration", dur)
	return true
}

// Ejected reports whether host is ejected at now (an ejection whose time is up counts as
// over even before Sweep runs).
func (d *OutlierDetector) Ejected(host string, now time.Time) bool {
	if d == nil {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	h := d.hosts[host]
	return h != nil && h.ejected && now.Before(h.until)
}

// Sweep returns to service every endpoint whose ejection ended by now, appending their
// addresses (in no particular order) to dst, and forgives one past ejection of each
// endpoint that has stayed in service for a whole Interval. The caller runs it on a
// ticker (every Interval, or more often for punctual returns) from the cluster's control
// goroutine and rebuilds the picker when the result is longer than dst.
func (d *OutlierDetector) Sweep(now time.Time, dst []string) []string {
	if d == nil {
		return dst
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for addr, h := range d.hosts {
		switch {
		case h.ejected && !now.Before(h.until):
			h.ejected = false
			h.errors = 0
			h.healthySince = now
			d.active--
			d.counters.OutlierEjectionsActive.Add(-1)
			dst = append(dst, addr)
		case !h.ejected && h.times > 0 && now.Sub(h.healthySince) >= d.cfg.Interval:
			h.times--
			h.healthySince = now
		}
	}
	return dst
}

// EjectedHosts appends the addresses ejected at now to dst (in no particular order), for
// building a picker from scratch and for the admin /clusters page.
func (d *OutlierDetector) EjectedHosts(now time.Time, dst []string) []string {
	if d == nil {
		return dst
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for addr, h := range d.hosts {
		if h.ejected && now.Before(h.until) {
			dst = append(dst, addr)
		}
	}
	return dst
}

// TimesEjected reports how many past ejections of host are not yet forgiven (the
// multiplier of its next ejection minus one).
func (d *OutlierDetector) TimesEjected(host string) int64 {
	if d == nil {
		return 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if h := d.hosts[host]; h != nil {
		return h.times
	}
	return 0
}
