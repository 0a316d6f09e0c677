package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"
)

// DNS is what a watcher asks; *Client (miekg/dns) is the one meshd uses, and tests may
// pass their own.
type DNS interface {
	LookupIP(ctx context.Context, name, pref string) ([]netip.Addr, time.Duration, error)
	LookupSRV(ctx context.Context, name string) ([]SRV, time.Duration, error)
}

// Record kinds a Spec follows.
const (
	RecordA   = "A"   // A and AAAA, at the Spec's port
	RecordSRV = "SRV" // SRV: each target's addresses at the record's port and weight
	// RecordSRVOrA asks for SRV records and falls back to A/AAAA at the Spec's port
	// when the name has none: how Cloud Map DNS namespaces serve services.
	RecordSRVOrA = "SRV|A"
)

// Spec is one name followed one way. Equal Specs share one watcher.
type Spec struct {
	Name   string // as configured; the client applies the search list
	Record string // RecordA, RecordSRV or RecordSRVOrA
	// Port is the endpoint port for A/AAAA answers (the node's listener port, or a static
	// address's own port).
	Port int
	// IPPreference is App Mesh's (IPv4_ONLY, IPv6_ONLY, IPv4_PREFERRED, IPv6_PREFERRED;
	// "" keeps both families).
	IPPreference string
	// Logical is responseType LOADBALANCER (Envoy's logical DNS): the first address of
	// the answer is the one endpoint, re-resolved like the others.
	Logical bool
	// Weight is each endpoint's weight for A/AAAA answers (a static entry's weight); 0 is 1.
	Weight uint32
}

func (s Spec) String() string {
	out := s.Record + " " + s.Name
	if s.Record != RecordSRV {
		out += ":" + strconv.Itoa(s.Port)
	}
	if s.IPPreference != "" {
		out += " " + s.IPPreference
	}
	if s.Logical {
		out += " LOADBALANCER"
	}
	return out
}

// Defaults of WatchOptions.
const (
	// DefaultMinTTL is the floor of the re-resolution interval: Envoy's default
	// dns_refresh_rate. A name served with TTL 0 is not asked more often than this.
	DefaultMinTTL = 5 * time.Second
	// DefaultMaxTTL is the ceiling: services scale all day, so a long TTL must not keep
	// a removed task in the set for an hour.
	DefaultMaxTTL = 60 * time.Second
	// DefaultNXDomainGrace is how long a name that stopped existing keeps its last set:
	// a service being re-created, or a record deleted and added back, must not empty the
	// cluster for a blip.
	DefaultNXDomainGrace = 30 * time.Second
	// DefaultLookupTimeout bounds one resolution (all servers and attempts).
	DefaultLookupTimeout = 10 * time.Second
	// jitterFraction spreads re-resolutions of many names apart (±10%).
	jitterFraction = 0.1
)

// WatchOptions configures a Registry. Zero values mean the defaults above.
type WatchOptions struct {
	DNS            DNS
	MinTTL, MaxTTL time.Duration
	NXDomainGrace  time.Duration
	LookupTimeout  time.Duration
	Log            *slog.Logger
	// Rand returns uniform bits for the jitter; nil means math/rand/v2.
	Rand func() uint64
}

// Status is a watched name's state, for /clusters.
type Status struct {
	Spec      string    `json:"spec"`
	Resolved  bool      `json:"resolved"` // a set was resolved at least once
	Endpoints int       `json:"endpoints"`
	LastError string    `json:"lastError,omitempty"`
	Failures  uint64    `json:"failures"` // resolutions that failed (the last good set was kept)
	Updated   time.Time `json:"updated,omitzero"`
	Next      time.Time `json:"nextResolve,omitzero"`
}

// Registry runs one watcher goroutine per distinct Spec, shared by every subscriber,
// stopped when the last one leaves. Safe for concurrent use.
type Registry struct {
	opts     WatchOptions
	mu       sync.Mutex
	watchers map[Spec]*watcher
	closed   bool
}

// NewRegistry returns a registry resolving with opts.DNS.
func NewRegistry(opts WatchOptions) *Registry {
	if opts.MinTTL <= 0 {
		opts.MinTTL = DefaultMinTTL
	}
	if opts.MaxTTL <= 0 {
		opts.MaxTTL = DefaultMaxTTL
	}
	opts.MaxTTL = max(opts.MaxTTL, opts.MinTTL)
	if opts.NXDomainGrace <= 0 {
		opts.NXDomainGrace = DefaultNXDomainGrace
	}
	if opts.LookupTimeout <= 0 {
		opts.LookupTimeout = DefaultLookupTimeout
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Rand == nil {
		opts.Rand = rand.Uint64
	}
	return &Registry{opts: opts, watchers: map[Spec]*watcher{}}
}

// Subscription is one subscriber's hold on a watched name.
type Subscription struct {
	r    *Registry
	w    *watcher
	id   int
	once sync.Once
}

// Ready is closed once the name's first resolution attempt ended, successful or not.
func (s *Subscription) Ready() <-chan struct{} { return s.w.ready }

// Stop ends the subscription; the watcher stops with its last subscriber. Safe to call
// twice.
func (s *Subscription) Stop() {
	s.once.Do(func() {
		s.r.mu.Lock()
		w := s.w
		w.mu.Lock()
		delete(w.subs, s.id)
		last := len(w.subs) == 0
		w.mu.Unlock()
		if last && s.r.watchers[w.spec] == w {
			delete(s.r.watchers, w.spec)
		}
		s.r.mu.Unlock()
		if last {
			w.halt()
		}
	})
}

// Watch subscribes push to spec's endpoint sets: complete sets, pushed whenever the set
// changes (an empty set too, when the name is gone past its grace), from the watcher's
// goroutine; the set already known is pushed at once, on the caller's goroutine. push
// must not block for long and must not call back into the registry.
func (r *Registry) Watch(spec Spec, push func([]Endpoint)) *Subscription {
	r.mu.Lock()
	w := r.watchers[spec]
	if w == nil {
		w = newWatcher(r, spec)
		r.watchers[spec] = w
		if !r.closed {
			go w.run()
		} else {
			close(w.ready)
			close(w.done)
		}
	}
	w.mu.Lock()
	w.nextID++
	id := w.nextID
	w.subs[id] = push
	have, cur := w.have, w.last
	w.mu.Unlock()
	r.mu.Unlock()
	if have {
		push(slices.Clone(cur))
	}
	return &Subscription{r: r, w: w, id: id}
}

// Status returns spec's state; false when nothing watches it.
func (r *Registry) Status(spec Spec) (Status, bool) {
	r.mu.Lock()
	w := r.watchers[spec]
	r.mu.Unlock()
	if w == nil {
		return Status{}, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.status, true
}

// Close stops every watcher and waits for them.
func (r *Registry) Close() {
	r.mu.Lock()
	r.closed = true
	ws := make([]*watcher, 0, len(r.watchers))
	for _, w := range r.watchers {
		ws = append(ws, w)
	}
	r.watchers = map[Spec]*watcher{}
	r.mu.Unlock()
	for _, w := range ws {
		w.halt()
	}
}

type watcher struct {
	r    *Registry
	spec Spec

	ctx    context.Context
	cancel context.CancelFunc
	ready  chan struct{}
	done   chan struct{}

	mu     sync.Mutex
	subs   map[int]func([]Endpoint)
	nextID int
	last   []Endpoint
	have   bool
	status Status
}

func newWatcher(r *Registry, spec Spec) *watcher {
	w := &watcher{r: r, spec: spec, ready: make(chan struct{}), done: make(chan struct{}), subs: map[int]func([]Endpoint){}}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	w.status.Spec = spec.String()
	return w
}

func (w *watcher) halt() {
	w.cancel()
	<-w.done
}

// run resolves, pushes a changed set, and sleeps until the next resolution: the answer's
// TTL clamped to [MinTTL, MaxTTL] after a success, a back-off from one second doubling
// up to MaxTTL after a failure, each with ±10% jitter. A failure keeps the last good set;
// NXDOMAIN empties it only once the name has been gone for NXDomainGrace.
func (w *watcher) run() {
	defer close(w.done)
	o := &w.r.opts
	var (
		failStreak int
		goneSince  time.Time
		readyOnce  sync.Once
	)
	for {
		ctx, cancel := context.WithTimeout(w.ctx, o.LookupTimeout)
		eps, ttl, err := w.resolve(ctx)
		cancel()
		if w.ctx.Err() != nil {
			readyOnce.Do(func() { close(w.ready) })
			return
		}
		now := time.Now()
		var wait time.Duration
		w.mu.Lock()
		switch {
		case err == nil:
			failStreak, goneSince = 0, time.Time{}
			w.status.Resolved, w.status.LastError, w.status.Updated = true, "", now
			wait = min(max(ttl, o.MinTTL), o.MaxTTL)
			w.publish(eps)
		default:
			failStreak++
			w.status.Failures++
			w.status.LastError = err.Error()
			wait = min(time.Duration(1<<min(failStreak-1, 16))*time.Second, o.MaxTTL)
			if errors.Is(err, ErrNXDomain) {
				if goneSince.IsZero() {
					goneSince = now
				}
				if w.have && len(w.last) > 0 && now.Sub(goneSince) >= o.NXDomainGrace {
					o.Log.Warn("DNS name gone past its grace; its endpoints are removed", "name", w.spec.Name, "grace", o.NXDomainGrace)
					w.publish(nil)
				} else if w.have && len(w.last) > 0 {
					wait = min(wait, o.NXDomainGrace-now.Sub(goneSince))
				}
			} else {
				goneSince = time.Time{}
			}
			o.Log.Warn("DNS resolution failed; the last good endpoint set is kept", "name", w.spec.Name, "record", w.spec.Record,
				"endpoints", len(w.last), "err", err, "retry_in", wait)
		}
		wait = jitter(wait, o.Rand)
		w.status.Endpoints = len(w.last)
		w.status.Next = now.Add(wait)
		w.mu.Unlock()
		readyOnce.Do(func() { close(w.ready) })
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-w.ctx.Done():
			t.Stop()
			return
		}
	}
}

// publish records eps as the current set and pushes it when it changed. w.mu is held;
// subscribers are called under it, so they see sets in order.
func (w *watcher) publish(eps []Endpoint) {
	if w.have && slices.Equal(w.last, eps) {
		return
	}
	w.last, w.have = eps, true
	for _, push := range w.subs {
		push(slices.Clone(eps))
	}
}

// jitter spreads d by ±10%.
func jitter(d time.Duration, rnd func() uint64) time.Duration {
	span := int64(float64(d) * jitterFraction)
	if span <= 0 {
		return d
	}
	return d - time.Duration(span) + time.Duration(rnd()%uint64(2*span+1))
}

// resolve asks DNS for the spec's set and the answer's TTL.
func (w *watcher) resolve(ctx context.Context) ([]Endpoint, time.Duration, error) {
	s := w.spec
	dns := w.r.opts.DNS
	if s.Record == RecordSRV || s.Record == RecordSRVOrA {
		srvs, ttl, err := dns.LookupSRV(ctx, s.Name)
		if err == nil && len(srvs) > 0 {
			eps := srvEndpoints(srvs, s.IPPreference)
			if len(eps) == 0 {
				return nil, ttl, fmt.Errorf("%s: %d SRV targets, no address allowed by ipPreference %q: %w", s.Name, len(srvs), s.IPPreference, ErrNoAddresses)
			}
			return eps, ttl, nil
		}
		if s.Record == RecordSRV || (err != nil && !errors.Is(err, ErrNXDomain)) {
			if err == nil {
				err = fmt.Errorf("%s: no SRV records: %w", s.Name, ErrNoAddresses)
			}
			return nil, 0, err
		}
		// Cloud Map: no SRV records (or none at all): the A/AAAA records tell.
	}
	addrs, ttl, err := dns.LookupIP(ctx, s.Name, s.IPPreference)
	if err != nil {
		return nil, 0, err
	}
	if s.Logical {
		if kept := keepFamilies(addrs, s.IPPreference); len(kept) > 0 {
			return withWeight(endpointsFor(kept[:1], "", s.Port), s.Weight), ttl, nil
		}
	}
	eps := endpointsFor(addrs, s.IPPreference, s.Port)
	if len(eps) == 0 {
		return nil, ttl, fmt.Errorf("%s: %d addresses, none allowed by ipPreference %q: %w", s.Name, len(addrs), s.IPPreference, ErrNoAddresses)
	}
	return withWeight(eps, s.Weight), ttl, nil
}

func withWeight(eps []Endpoint, w uint32) []Endpoint {
	if w > 1 {
		for i := range eps {
			eps[i].Weight = w
		}
	}
	return eps
}

// srvEndpoints turns SRV records into endpoints: each target address at the record's
// port, weighted by the record's weight (0 is 1), sorted and deduplicated by address
// (the larger weight wins).
func srvEndpoints(srvs []SRV, pref string) []Endpoint {
	byAddr := map[string]uint32{}
	for _, r := range srvs {
		w := max(uint32(r.Weight), 1)
		for _, ep := range endpointsFor(r.Addrs, pref, int(r.Port)) {
			byAddr[ep.Address] = max(byAddr[ep.Address], w)
		}
	}
	out := make([]Endpoint, 0, len(byAddr))
	for a, w := range byAddr {
		out = append(out, Endpoint{Address: a, Weight: w})
	}
	slices.SortFunc(out, func(a, b Endpoint) int { return compareAddr(a.Address, b.Address) })
	return out
}

func compareAddr(a, b string) int {
	pa, ea := netip.ParseAddrPort(a)
	pb, eb := netip.ParseAddrPort(b)
	if ea != nil || eb != nil {
		if a < b {
			return -1
		} else if a > b {
			return 1
		}
		return 0
	}
	return pa.Compare(pb)
}
