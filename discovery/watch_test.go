package discovery

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// scriptDNS answers from a table the test changes; every lookup is recorded with the
// (fake) time it happened.
type scriptDNS struct {
	mu    sync.Mutex
	ips   map[string][]netip.Addr
	srvs  map[string][]SRV
	ttl   time.Duration
	err   error // returned instead of an answer when set
	calls []time.Time
}

func (d *scriptDNS) set(f func(d *scriptDNS)) { d.mu.Lock(); f(d); d.mu.Unlock() }

func (d *scriptDNS) LookupIP(_ context.Context, name, _ string) ([]netip.Addr, time.Duration, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, time.Now())
	if d.err != nil {
		return nil, 0, d.err
	}
	a, ok := d.ips[name]
	if !ok {
		return nil, 0, ErrNXDomain
	}
	return slices.Clone(a), d.ttl, nil
}

func (d *scriptDNS) LookupSRV(_ context.Context, name string) ([]SRV, time.Duration, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, time.Now())
	if d.err != nil {
		return nil, 0, d.err
	}
	s, ok := d.srvs[name]
	if !ok {
		if _, any := d.ips[name]; any {
			return nil, d.ttl, nil // the name exists with no SRV record
		}
		return nil, 0, ErrNXDomain
	}
	return slices.Clone(s), d.ttl, nil
}

func ips(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, v := range s {
		out[i] = netip.MustParseAddr(v)
	}
	return out
}

// sink collects pushed sets.
type sink struct {
	mu   sync.Mutex
	sets [][]Endpoint
}

func (s *sink) push(eps []Endpoint) { s.mu.Lock(); s.sets = append(s.sets, eps); s.mu.Unlock() }
func (s *sink) last() []Endpoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sets) == 0 {
		return nil
	}
	return s.sets[len(s.sets)-1]
}
func (s *sink) count() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.sets) }

func epAddrs(eps []Endpoint) []string {
	out := make([]string, len(eps))
	for i, e := range eps {
		out[i] = e.Address
	}
	return out
}

// TestWatchFollowsTTLWithinBounds: re-resolution follows the answer's TTL clamped to
// [MinTTL, MaxTTL], and a change of address reaches the subscriber as a complete set.
func TestWatchFollowsTTLWithinBounds(t *testing.T) {
	for _, tc := range []struct {
		name string
		ttl  time.Duration
		want time.Duration
	}{
		{"TTL 0 waits the floor", 0, 5 * time.Second},
		{"TTL within bounds", 20 * time.Second, 20 * time.Second},
		{"TTL 1h waits the ceiling", time.Hour, 60 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				d := &scriptDNS{ips: map[string][]netip.Addr{"svc": ips("10.0.0.1")}, ttl: tc.ttl}
				r := NewRegistry(WatchOptions{DNS: d, Rand: func() uint64 { return 0 }})
				defer r.Close()
				var s sink
				sub := r.Watch(Spec{Name: "svc", Record: RecordA, Port: 80}, s.push)
				defer sub.Stop()
				<-sub.Ready()
				if got := epAddrs(s.last()); !slices.Equal(got, []string{"10.0.0.1:80"}) {
					t.Fatalf("first set %v", got)
				}
				d.set(func(d *scriptDNS) { d.ips["svc"] = ips("10.0.0.2", "10.0.0.3") })
				time.Sleep(tc.want * 3 / 2)
				synctest.Wait()
				if got := epAddrs(s.last()); !slices.Equal(got, []string{"10.0.0.2:80", "10.0.0.3:80"}) {
					t.Fatalf("after the TTL: %v", got)
				}
				d.mu.Lock()
				gap := d.calls[1].Sub(d.calls[0])
				d.mu.Unlock()
				// Rand 0 is the low end of the ±10% jitter.
				if lo := tc.want - tc.want/10; gap != lo {
					t.Errorf("re-resolved after %v, want %v (the clamped TTL less 10%% jitter)", gap, lo)
				}
			})
		})
	}
}

// TestWatchKeepsLastGoodOnFailure: a failing resolver (timeout, SERVFAIL) keeps the last
// good set, counts the failures, backs off, and the set follows again once it answers.
func TestWatchKeepsLastGoodOnFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &scriptDNS{ips: map[string][]netip.Addr{"svc": ips("10.0.0.1")}, ttl: 5 * time.Second}
		r := NewRegistry(WatchOptions{DNS: d})
		defer r.Close()
		var s sink
		spec := Spec{Name: "svc", Record: RecordA, Port: 80}
		sub := r.Watch(spec, s.push)
		defer sub.Stop()
		<-sub.Ready()
		d.set(func(d *scriptDNS) { d.err = errors.New("i/o timeout") })
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		if got := epAddrs(s.last()); !slices.Equal(got, []string{"10.0.0.1:80"}) || s.count() != 1 {
			t.Fatalf("during the outage: %d pushes, last %v", s.count(), got)
		}
		st, _ := r.Status(spec)
		if st.Failures < 3 || st.LastError == "" || st.Endpoints != 1 {
			t.Fatalf("status during the outage: %+v", st)
		}
		d.set(func(d *scriptDNS) { d.err = nil; d.ips["svc"] = ips("10.0.0.9") })
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		if got := epAddrs(s.last()); !slices.Equal(got, []string{"10.0.0.9:80"}) {
			t.Fatalf("after the outage: %v", got)
		}
		if st, _ := r.Status(spec); st.LastError != "" {
			t.Fatalf("status after the outage still says %q", st.LastError)
		}
	})
}

// TestWatchNXDomainGrace: a name that stops existing keeps its set for the grace
// period, then the set empties; when the name comes back, so do its endpoints.
func TestWatchNXDomainGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &scriptDNS{ips: map[string][]netip.Addr{"svc": ips("10.0.0.1")}, ttl: 5 * time.Second}
		r := NewRegistry(WatchOptions{DNS: d, NXDomainGrace: 30 * time.Second})
		defer r.Close()
		var s sink
		sub := r.Watch(Spec{Name: "svc", Record: RecordA, Port: 80}, s.push)
		defer sub.Stop()
		<-sub.Ready()
		time.Sleep(time.Second)
		d.set(func(d *scriptDNS) { delete(d.ips, "svc") })
		time.Sleep(25 * time.Second) // the first NXDOMAIN comes ≤ 5.5 s in; the grace runs 30 s from it
		synctest.Wait()
		if got := s.last(); len(got) != 1 {
			t.Fatalf("within the grace: %v, want the last set kept", got)
		}
		time.Sleep(20 * time.Second)
		synctest.Wait()
		if got := s.last(); len(got) != 0 {
			t.Fatalf("past the grace: %v, want an empty set", got)
		}
		d.set(func(d *scriptDNS) { d.ips["svc"] = ips("10.0.0.2") })
		time.Sleep(70 * time.Second)
		synctest.Wait()
		if got := epAddrs(s.last()); !slices.Equal(got, []string{"10.0.0.2:80"}) {
			t.Fatalf("after the name came back: %v", got)
		}
	})
}

// TestWatchNeverResolvedName: a name that never resolves leaves the set unknown (no
// push), makes Ready close after the first attempt, and heals when the name appears.
func TestWatchNeverResolvedName(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &scriptDNS{ips: map[string][]netip.Addr{}, ttl: 5 * time.Second}
		r := NewRegistry(WatchOptions{DNS: d})
		defer r.Close()
		var s sink
		sub := r.Watch(Spec{Name: "later", Record: RecordA, Port: 80}, s.push)
		defer sub.Stop()
		<-sub.Ready()
		if s.count() != 0 {
			t.Fatalf("a set was pushed for a name that does not exist: %v", s.last())
		}
		d.set(func(d *scriptDNS) { d.ips["later"] = ips("10.0.0.5") })
		time.Sleep(5 * time.Second) // back-off after the first failure is 1 s, then 2 s
		synctest.Wait()
		if got := epAddrs(s.last()); !slices.Equal(got, []string{"10.0.0.5:80"}) {
			t.Fatalf("after the name appeared: %v", got)
		}
	})
}

// TestWatchShared: subscribers of one Spec share a watcher (one lookup per interval); a
// late subscriber gets the known set at once; the watcher stops with its last
// subscriber.
func TestWatchShared(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &scriptDNS{ips: map[string][]netip.Addr{"svc": ips("10.0.0.1")}, ttl: 10 * time.Second}
		r := NewRegistry(WatchOptions{DNS: d})
		defer r.Close()
		spec := Spec{Name: "svc", Record: RecordA, Port: 80}
		var a, b sink
		sa := r.Watch(spec, a.push)
		<-sa.Ready()
		sb := r.Watch(spec, b.push)
		if b.count() != 1 {
			t.Fatal("a late subscriber did not get the known set at once")
		}
		time.Sleep(35 * time.Second)
		synctest.Wait()
		d.mu.Lock()
		n := len(d.calls)
		d.mu.Unlock()
		if n != 4 { // at 0, ~10, ~20, ~30 s
			t.Errorf("%d lookups in 35 s for two subscribers, want 4 (one watcher)", n)
		}
		sa.Stop()
		sb.Stop()
		sb.Stop()
		if _, ok := r.Status(spec); ok {
			t.Error("the watcher outlived its last subscriber")
		}
	})
}

// TestWatchRecords: SRV records give ports and weights (lowest priority only is the
// client's job); Cloud Map's SRV-or-A falls back to A at the listener port; logical DNS
// (LOADBALANCER) keeps the answer's first address; ipPreference applies to each.
func TestWatchRecords(t *testing.T) {
	d := &scriptDNS{
		ips: map[string][]netip.Addr{
			"a.svc":  ips("10.0.0.3", "10.0.0.1", "fd00::1"),
			"cm.svc": ips("10.0.0.7"),
			"srv":    nil,
		},
		srvs: map[string][]SRV{
			"srv": {{Target: "t1", Port: 8001, Weight: 3, Addrs: ips("10.0.1.1")}, {Target: "t2", Port: 8002, Weight: 0, Addrs: ips("10.0.1.2", "fd00::2")}},
		},
		ttl: 5 * time.Second,
	}
	for _, tc := range []struct {
		spec Spec
		want []Endpoint
	}{
		{Spec{Name: "srv", Record: RecordSRV}, []Endpoint{{"10.0.1.1:8001", 3}, {"10.0.1.2:8002", 1}, {"[fd00::2]:8002", 1}}},
		{Spec{Name: "srv", Record: RecordSRV, IPPreference: IPv6Only}, []Endpoint{{"[fd00::2]:8002", 1}}},
		{Spec{Name: "cm.svc", Record: RecordSRVOrA, Port: 9000}, []Endpoint{{"10.0.0.7:9000", 1}}},
		{Spec{Name: "a.svc", Record: RecordA, Port: 80, Logical: true}, []Endpoint{{"10.0.0.3:80", 1}}},
		{Spec{Name: "a.svc", Record: RecordA, Port: 80, Logical: true, IPPreference: IPv6Preferred}, []Endpoint{{"[fd00::1]:80", 1}}},
		{Spec{Name: "a.svc", Record: RecordA, Port: 80, IPPreference: IPv4Preferred, Weight: 4}, []Endpoint{{"10.0.0.1:80", 4}, {"10.0.0.3:80", 4}}},
		{Spec{Name: "a.svc", Record: RecordA, Port: 80}, []Endpoint{{"10.0.0.1:80", 1}, {"10.0.0.3:80", 1}, {"[fd00::1]:80", 1}}},
	} {
		t.Run(tc.spec.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := NewRegistry(WatchOptions{DNS: d})
				defer r.Close()
				var s sink
				sub := r.Watch(tc.spec, s.push)
				defer sub.Stop()
				<-sub.Ready()
				if got := s.last(); !slices.Equal(got, tc.want) {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			})
		})
	}
}
