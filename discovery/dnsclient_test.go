package discovery

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/discovery/dnstest"
	"github.com/miekg/dns"
)

// soa is the SOA of the test zone: negative answers are cached min(30, 15) = 15s.
const soa = "test. 30 IN SOA ns.test. admin.test. 1 60 60 60 15"

// newClient is a Client that asks the given servers in order, with a short timeout and
// one round, so a test that goes wrong fails fast.
func newClient(t *testing.T, timeout time.Duration, servers ...*dnstest.Server) *Client {
	t.Helper()
	var addrs []string
	for _, s := range servers {
		addrs = append(addrs, s.Addr())
	}
	cfg, err := ClientConfigFor(addrs)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Timeout, cfg.Attempts = timeout, 1
	return NewClient(cfg)
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestLookupIP(t *testing.T) {
	s := dnstest.Start(t)
	s.Set("test.", dns.TypeSOA, soa)
	s.Set("both.test.", dns.TypeA, "both.test. 30 IN A 127.0.0.3", "both.test. 10 IN A 127.0.0.2", "both.test. 30 IN A 127.0.0.3")
	s.Set("both.test.", dns.TypeAAAA, "both.test. 20 IN AAAA 2001:db8::2")
	s.Set("v4.test.", dns.TypeA, "v4.test. 40 IN A 127.0.0.4")
	s.Set("v6.test.", dns.TypeAAAA, "v6.test. 50 IN AAAA 2001:db8::6")
	s.Set("alias.test.", dns.TypeCNAME, "alias.test. 3 IN CNAME both.test.")
	s.Set("nosoa.example.", dns.TypeA, "nosoa.example. 40 IN A 127.0.0.5")
	c := newClient(t, time.Second, s)

	tests := []struct {
		name, pref string
		want       []netip.Addr
		ttl        time.Duration
	}{
		// Both families: the TTL is the smallest over A and AAAA; duplicates go.
		{"both.test.", "", addrs("127.0.0.2", "127.0.0.3", "2001:db8::2"), 10 * time.Second},
		{"both.test.", IPv4Preferred, addrs("127.0.0.2", "127.0.0.3", "2001:db8::2"), 10 * time.Second},
		{"both.test.", IPv6Preferred, addrs("127.0.0.2", "127.0.0.3", "2001:db8::2"), 10 * time.Second},
		{"both.test.", IPv4Only, addrs("127.0.0.2", "127.0.0.3"), 10 * time.Second},
		{"both.test.", IPv6Only, addrs("2001:db8::2"), 20 * time.Second},
		// One family present: the other half of a "both" lookup is NODATA and adds nothing.
		{"v4.test.", "", addrs("127.0.0.4"), 40 * time.Second},
		{"v6.test.", IPv4Preferred, addrs("2001:db8::6"), 50 * time.Second},
		// NODATA: no addresses, no error, the SOA's negative TTL (or 0 without an SOA).
		{"v4.test.", IPv6Only, nil, 15 * time.Second},
		{"v6.test.", IPv4Only, nil, 15 * time.Second},
		{"nosoa.example.", IPv6Only, nil, 0},
		// A CNAME's TTL counts.
		{"alias.test.", IPv4Only, addrs("127.0.0.2", "127.0.0.3"), 3 * time.Second},
		// Names are case-insensitive.
		{"BOTH.Test.", IPv6Only, addrs("2001:db8::2"), 20 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/"+tt.pref, func(t *testing.T) {
			got, ttl, err := c.LookupIP(context.Background(), tt.name, tt.pref)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) || ttl != tt.ttl {
				t.Errorf("LookupIP(%q, %q) = %v, %v; want %v, %v", tt.name, tt.pref, got, ttl, tt.want, tt.ttl)
			}
		})
	}

	// *_ONLY asks for one type only.
	before4, _ := s.QueriesFor("v4.test.", dns.TypeA)
	before6, _ := s.QueriesFor("v4.test.", dns.TypeAAAA)
	if _, _, err := c.LookupIP(context.Background(), "v4.test.", IPv4Only); err != nil {
		t.Fatal(err)
	}
	after4, _ := s.QueriesFor("v4.test.", dns.TypeA)
	after6, _ := s.QueriesFor("v4.test.", dns.TypeAAAA)
	if after4 != before4+1 || after6 != before6 {
		t.Errorf("IPv4_ONLY sent %d A and %d AAAA queries, want 1 and 0", after4-before4, after6-before6)
	}

	// The zone changes at runtime; the next lookup sees it.
	s.Set("v4.test.", dns.TypeA, "v4.test. 7 IN A 127.0.0.44")
	if got, ttl, err := c.LookupIP(context.Background(), "v4.test.", IPv4Only); err != nil || !reflect.DeepEqual(got, addrs("127.0.0.44")) || ttl != 7*time.Second {
		t.Errorf("after the change: %v, %v, %v", got, ttl, err)
	}

	if _, _, err := c.LookupIP(context.Background(), "v4.test.", "IPv5_ONLY"); err == nil || errors.Is(err, ErrNXDomain) || !strings.Contains(err.Error(), "IPv5_ONLY") {
		t.Errorf("unknown preference: err = %v", err)
	}
	for _, bad := range []string{"", ".", strings.Repeat("a", 64) + ".test."} {
		if _, _, err := c.LookupIP(context.Background(), bad, ""); err == nil || errors.Is(err, ErrNXDomain) {
			t.Errorf("LookupIP(%q): err = %v, want a name error", bad, err)
		}
	}
}

func TestLookupSRV(t *testing.T) {
	s := dnstest.Start(t)
	s.Set("test.", dns.TypeSOA, soa)
	const name = "_http._tcp.svc.test."
	s.Set(name, dns.TypeSRV,
		name+" 30 IN SRV 10 60 8080 a.test.",
		name+" 30 IN SRV 10 20 8081 b.test.",
		name+" 30 IN SRV 10 5 8082 a.test.",
		name+" 30 IN SRV 10 1 8083 gone.test.",
		name+" 2 IN SRV 20 100 9090 c.test.", // higher priority value: left out, TTL unused
	)
	// a.test.'s addresses come in the additional section, and differ from the zone's, so
	// the test sees which was used; b.test. is not there and is looked up.
	s.SetAdditional(name, dns.TypeSRV, "a.test. 7 IN A 127.0.0.10", "a.test. 9 IN AAAA 2001:db8::10", "c.test. 1 IN A 127.0.0.12")
	s.Set("a.test.", dns.TypeA, "a.test. 60 IN A 127.0.0.99")
	s.Set("b.test.", dns.TypeA, "b.test. 20 IN A 127.0.0.11")
	s.Set("b.test.", dns.TypeAAAA, "b.test. 25 IN AAAA 2001:db8::11")
	s.Set("c.test.", dns.TypeA, "c.test. 1 IN A 127.0.0.12")
	c := newClient(t, time.Second, s)

	got, ttl, err := c.LookupSRV(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	want := []SRV{
		{Target: "a.test.", Port: 8080, Weight: 60, Priority: 10, Addrs: addrs("127.0.0.10", "2001:db8::10")},
		{Target: "a.test.", Port: 8082, Weight: 5, Priority: 10, Addrs: addrs("127.0.0.10", "2001:db8::10")},
		{Target: "b.test.", Port: 8081, Weight: 20, Priority: 10, Addrs: addrs("127.0.0.11", "2001:db8::11")},
		// A target that does not exist stays, with no addresses; its negative TTL (15s) counts.
		{Target: "gone.test.", Port: 8083, Weight: 1, Priority: 10},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("LookupSRV = %+v\nwant       %+v", got, want)
	}
	if ttl != 7*time.Second { // a.test.'s A record in the additional section
		t.Errorf("TTL = %v, want 7s", ttl)
	}
	for _, q := range []struct {
		name  string
		qtype uint16
		want  int
	}{
		{"a.test.", dns.TypeA, 0}, // from the additional section
		{"a.test.", dns.TypeAAAA, 0},
		{"b.test.", dns.TypeA, 1},
		{"b.test.", dns.TypeAAAA, 1},
		{"c.test.", dns.TypeA, 0}, // priority 20: not used
	} {
		if udp, tcp := s.QueriesFor(q.name, q.qtype); udp+tcp != q.want {
			t.Errorf("%s %s: %d queries, want %d", q.name, dns.TypeToString[q.qtype], udp+tcp, q.want)
		}
	}

	// Every record used counts in the TTL: the SRV records, and the looked-up ones.
	s.Set(name, dns.TypeSRV, name+" 30 IN SRV 0 1 80 b.test.", name+" 3 IN SRV 0 2 81 b.test.")
	s.SetAdditional(name, dns.TypeSRV)
	if got, ttl, err := c.LookupSRV(context.Background(), name); err != nil || ttl != 3*time.Second || len(got) != 2 {
		t.Errorf("SRV TTL 3: %+v, %v, %v", got, ttl, err)
	}
	s.Set(name, dns.TypeSRV, name+" 30 IN SRV 0 1 80 b.test.")
	s.Set("b.test.", dns.TypeAAAA, "b.test. 4 IN AAAA 2001:db8::11")
	if got, ttl, err := c.LookupSRV(context.Background(), name); err != nil || ttl != 4*time.Second || len(got) != 1 || len(got[0].Addrs) != 2 {
		t.Errorf("AAAA TTL 4: %+v, %v, %v", got, ttl, err)
	}

	// "." means no service: no records, no error.
	s.Set(name, dns.TypeSRV, name+" 30 IN SRV 0 0 0 .")
	if got, ttl, err := c.LookupSRV(context.Background(), name); err != nil || len(got) != 0 || ttl != 30*time.Second {
		t.Errorf(`target ".": %+v, %v, %v`, got, ttl, err)
	}

	// A name without SRV records: NODATA, the SOA's TTL.
	if got, ttl, err := c.LookupSRV(context.Background(), "b.test."); err != nil || len(got) != 0 || ttl != 15*time.Second {
		t.Errorf("NODATA: %+v, %v, %v", got, ttl, err)
	}

	// A target whose lookup fails (SERVFAIL) fails the lookup: a partial set is no set.
	s.Set(name, dns.TypeSRV, name+" 30 IN SRV 0 1 80 b.test.", name+" 30 IN SRV 0 1 80 broken.test.")
	s.SetRcode("broken.test.", dns.RcodeServerFailure)
	if got, _, err := c.LookupSRV(context.Background(), name); err == nil || errors.Is(err, ErrNXDomain) || !strings.Contains(err.Error(), "broken.test.") {
		t.Errorf("failing target: %+v, %v; want an error naming broken.test.", got, err)
	}
}

func TestLookupNXDomain(t *testing.T) {
	s := dnstest.Start(t)
	s.Set("test.", dns.TypeSOA, soa)
	s.Set("there.test.", dns.TypeA, "there.test. 5 IN A 127.0.0.2")
	s.SetRcode("there.test.", dns.RcodeNameError) // rcode wins over the zone
	c := newClient(t, time.Second, s)

	for _, name := range []string{"missing.test.", "there.test."} {
		_, _, err := c.LookupIP(context.Background(), name, "")
		if !errors.Is(err, ErrNXDomain) || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), s.Addr()) {
			t.Errorf("LookupIP(%q): err = %v; want ErrNXDomain naming the name and the server", name, err)
		}
		_, _, err = c.LookupSRV(context.Background(), "_x._tcp."+name)
		if !errors.Is(err, ErrNXDomain) {
			t.Errorf("LookupSRV(%q): err = %v; want ErrNXDomain", name, err)
		}
	}
	// NXDOMAIN is authoritative: one query, no other server or round.
	if udp, tcp := s.QueriesFor("missing.test.", dns.TypeA); udp != 1 || tcp != 0 {
		t.Errorf("missing.test. A: %d UDP + %d TCP queries, want 1 UDP", udp, tcp)
	}
}

func TestServerFailureTriesNextServer(t *testing.T) {
	for _, rcode := range []int{dns.RcodeServerFailure, dns.RcodeRefused} {
		t.Run(dns.RcodeToString[rcode], func(t *testing.T) {
			s1, s2 := dnstest.Start(t), dnstest.Start(t)
			s1.FailAll(rcode)
			for _, s := range []*dnstest.Server{s1, s2} {
				s.Set("svc.test.", dns.TypeA, "svc.test. 5 IN A 127.0.0.2")
			}
			c := newClient(t, time.Second, s1, s2)
			got, _, err := c.LookupIP(context.Background(), "svc.test.", IPv4Only)
			if err != nil || !reflect.DeepEqual(got, addrs("127.0.0.2")) {
				t.Fatalf("LookupIP = %v, %v", got, err)
			}
			if s1.Queries() != 1 || s2.Queries() != 1 {
				t.Errorf("queries: %d and %d, want 1 each", s1.Queries(), s2.Queries())
			}

			// Both fail: an error naming each server and its answer, not ErrNXDomain.
			s2.FailAll(rcode)
			_, _, err = c.LookupIP(context.Background(), "svc.test.", IPv4Only)
			if err == nil || errors.Is(err, ErrNXDomain) {
				t.Fatalf("err = %v, want a failure that is not ErrNXDomain", err)
			}
			for _, want := range []string{"svc.test.", s1.Addr(), s2.Addr(), dns.RcodeToString[rcode]} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("err = %v; want it to name %s", err, want)
				}
			}
			s1.Up()
			if _, _, err := c.LookupIP(context.Background(), "svc.test.", IPv4Only); err != nil {
				t.Errorf("after Up: %v", err)
			}
		})
	}
}

func TestDeadServer(t *testing.T) {
	const timeout = 200 * time.Millisecond
	s1, s2 := dnstest.Start(t), dnstest.Start(t)
	s1.Down()
	for _, s := range []*dnstest.Server{s1, s2} {
		s.Set("svc.test.", dns.TypeA, "svc.test. 5 IN A 127.0.0.2")
	}
	c := newClient(t, timeout, s1, s2)
	start := time.Now()
	got, _, err := c.LookupIP(context.Background(), "svc.test.", IPv4Only)
	elapsed := time.Since(start)
	if err != nil || !reflect.DeepEqual(got, addrs("127.0.0.2")) {
		t.Fatalf("LookupIP = %v, %v", got, err)
	}
	// One timeout on the first server, then the second answers at once.
	if elapsed < timeout || elapsed > timeout+time.Second {
		t.Errorf("took %v, want a little over the %v timeout", elapsed, timeout)
	}
	s1.WaitQueries(1)
	if s1.Queries() != 1 || s2.Queries() != 1 {
		t.Errorf("queries: %d and %d, want 1 each", s1.Queries(), s2.Queries())
	}
}

func TestAllServersDown(t *testing.T) {
	const timeout, attempts = 50 * time.Millisecond, 3
	s1, s2 := dnstest.Start(t), dnstest.Start(t)
	s1.Down()
	s2.Down()
	cfg, err := ClientConfigFor([]string{s1.Addr(), s2.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Timeout, cfg.Attempts = timeout, attempts
	c := NewClient(cfg)
	start := time.Now()
	_, _, err = c.LookupIP(context.Background(), "svc.test.", IPv4Only)
	elapsed := time.Since(start)
	if err == nil || errors.Is(err, ErrNXDomain) || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err = %v, want a timeout that is not ErrNXDomain", err)
	}
	for _, want := range []string{"svc.test.", s1.Addr(), s2.Addr()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v; want it to name %s", err, want)
		}
	}
	if min := 2 * attempts * timeout; elapsed < min || elapsed > min+time.Second {
		t.Errorf("took %v, want a little over %v (%d rounds over 2 servers)", elapsed, min, attempts)
	}
	// Every server is asked once per round. (The servers count what they received;
	// wait for any packet still on its way before comparing.)
	s1.WaitQueries(attempts)
	s2.WaitQueries(attempts)
	if s1.Queries() != attempts || s2.Queries() != attempts {
		t.Errorf("queries: %d and %d, want %d each", s1.Queries(), s2.Queries(), attempts)
	}

	// No server at all.
	if _, _, err := NewClient(ClientConfig{}).LookupIP(context.Background(), "svc.test.", ""); err == nil || errors.Is(err, ErrNXDomain) {
		t.Errorf("no servers: err = %v", err)
	}
}

func TestTruncatedAnswerRetriesOverTCP(t *testing.T) {
	s := dnstest.Start(t)
	var a, aaaa []string
	var wantA, wantAAAA []netip.Addr
	for i := range 60 {
		a = append(a, fmt.Sprintf("big.test. 5 IN A 127.0.1.%d", i))
		wantA = append(wantA, netip.AddrFrom4([4]byte{127, 0, 1, byte(i)}))
	}
	for i := range 100 { // 100 × 28 bytes: more than the 1232-byte EDNS0 buffer
		aaaa = append(aaaa, fmt.Sprintf("big.test. 5 IN AAAA 2001:db8::%x", i))
		wantAAAA = append(wantAAAA, netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", i)))
	}
	s.Set("big.test.", dns.TypeA, a...)
	s.Set("big.test.", dns.TypeAAAA, aaaa...)
	s.SetTruncated("big.test.", true) // the A answer would fit: force TC
	c := newClient(t, time.Second, s)

	got, _, err := c.LookupIP(context.Background(), "big.test.", IPv4Only)
	if err != nil || !reflect.DeepEqual(got, wantA) {
		t.Fatalf("forced TC: got %d addresses (%v), want all 60", len(got), err)
	}
	if udp, tcp := s.QueriesFor("big.test.", dns.TypeA); udp != 1 || tcp != 1 {
		t.Errorf("A: %d UDP and %d TCP queries, want 1 each", udp, tcp)
	}

	s.SetTruncated("big.test.", false) // the AAAA answer does not fit on its own
	got, _, err = c.LookupIP(context.Background(), "big.test.", IPv6Only)
	if err != nil || !reflect.DeepEqual(got, wantAAAA) {
		t.Fatalf("too big for UDP: got %d addresses (%v), want all 100", len(got), err)
	}
	if udp, tcp := s.QueriesFor("big.test.", dns.TypeAAAA); udp != 1 || tcp != 1 {
		t.Errorf("AAAA: %d UDP and %d TCP queries, want 1 each", udp, tcp)
	}
}

func TestSearchList(t *testing.T) {
	s := dnstest.Start(t)
	s.Set("test.", dns.TypeSOA, soa)
	s.Set("svc.ns.test.", dns.TypeA, "svc.ns.test. 5 IN A 127.0.0.2")
	s.Set("other.test.", dns.TypeA, "other.test. 5 IN A 127.0.0.3")
	s.Set("_http._tcp.svc.ns.test.", dns.TypeSRV, "_http._tcp.svc.ns.test. 5 IN SRV 0 0 80 svc.ns.test.")
	// v4only.ns.test. has no AAAA; v4only.test. has: a later candidate with records wins.
	s.Set("v4only.ns.test.", dns.TypeA, "v4only.ns.test. 5 IN A 127.0.0.4")
	s.Set("v4only.test.", dns.TypeAAAA, "v4only.test. 5 IN AAAA 2001:db8::4")

	tests := []struct {
		name  string
		ndots int
		want  []netip.Addr
		asked []string // the A queries sent, in order
	}{
		// Fewer dots than ndots: the search domains first, then as is.
		{"svc", 1, addrs("127.0.0.2"), []string{"svc.ns.test."}},
		{"other", 1, addrs("127.0.0.3"), []string{"other.ns.test.", "other.test."}},
		{"svc.ns", 2, addrs("127.0.0.2"), []string{"svc.ns.ns.test.", "svc.ns.test."}},
		// At least ndots dots: as is first, then the search domains.
		{"svc.ns", 1, addrs("127.0.0.2"), []string{"svc.ns.", "svc.ns.ns.test.", "svc.ns.test."}},
		{"svc.ns.test", 1, addrs("127.0.0.2"), []string{"svc.ns.test."}},
		// Absolute: as is only.
		{"svc.ns.test.", 1, addrs("127.0.0.2"), []string{"svc.ns.test."}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/ndots:%d", tt.name, tt.ndots), func(t *testing.T) {
			c := NewClient(ClientConfig{Servers: []string{s.Addr()}, Search: []string{"ns.test", "test."}, Ndots: tt.ndots, Timeout: time.Second})
			before := counts(s, dns.TypeA, "svc.", "svc.ns.", "svc.ns.test.", "svc.ns.ns.test.", "svc.test.", "other.ns.test.", "other.test.", "other.")
			got, _, err := c.LookupIP(context.Background(), tt.name, IPv4Only)
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("LookupIP(%q) = %v, %v; want %v", tt.name, got, err, tt.want)
			}
			after := counts(s, dns.TypeA, "svc.", "svc.ns.", "svc.ns.test.", "svc.ns.ns.test.", "svc.test.", "other.ns.test.", "other.test.", "other.")
			var asked []string
			for n, k := range after {
				if k != before[n] {
					asked = append(asked, n)
				}
			}
			if !sameSet(asked, tt.asked) {
				t.Errorf("asked %v, want %v", asked, tt.asked)
			}
		})
	}

	c := NewClient(ClientConfig{Servers: []string{s.Addr()}, Search: []string{"ns.test", "test"}, Timeout: time.Second})
	if got, _, err := c.LookupSRV(context.Background(), "_http._tcp.svc"); err != nil || len(got) != 1 || got[0].Target != "svc.ns.test." {
		t.Errorf("LookupSRV(_http._tcp.svc) = %+v, %v", got, err)
	}
	if got, _, err := c.LookupIP(context.Background(), "v4only", IPv6Only); err != nil || !reflect.DeepEqual(got, addrs("2001:db8::4")) {
		t.Errorf("LookupIP(v4only, IPv6_ONLY) = %v, %v; want v4only.test.'s AAAA", got, err)
	}
	if got, ttl, err := c.LookupIP(context.Background(), "svc", IPv6Only); err != nil || len(got) != 0 || ttl != 15*time.Second {
		t.Errorf("LookupIP(svc, IPv6_ONLY) = %v, %v, %v; want NODATA from svc.ns.test.", got, ttl, err)
	}
	_, _, err := c.LookupIP(context.Background(), "nothere", "")
	if !errors.Is(err, ErrNXDomain) {
		t.Fatalf("err = %v, want ErrNXDomain", err)
	}
	for _, cand := range []string{"nothere.ns.test.", "nothere.test.", "nothere."} {
		if !strings.Contains(err.Error(), cand) {
			t.Errorf("err = %v; want it to list %s", err, cand)
		}
	}
	// An absolute name never gets a search domain.
	if _, _, err := c.LookupIP(context.Background(), "svc.", ""); !errors.Is(err, ErrNXDomain) {
		t.Errorf("LookupIP(svc.) err = %v, want ErrNXDomain", err)
	}
}

func counts(s *dnstest.Server, qtype uint16, names ...string) map[string]int {
	m := make(map[string]int)
	for _, n := range names {
		udp, tcp := s.QueriesFor(n, qtype)
		m[n] = udp + tcp
	}
	return m
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := make(map[string]bool)
	for _, s := range a {
		m[s] = true
	}
	for _, s := range b {
		if !m[s] {
			return false
		}
	}
	return true
}

func TestLookupHonoursContext(t *testing.T) {
	s := dnstest.Start(t)
	s.Down()
	cfg := ClientConfig{Servers: []string{s.Addr()}, Timeout: 5 * time.Second, Attempts: 2}
	c := NewClient(cfg)

	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		type result struct{ err error }
		done := make(chan result, 1)
		n := s.Queries()
		go func() {
			_, _, err := c.LookupSRV(ctx, "_http._tcp.svc.test.")
			done <- result{err: err}
		}()
		s.WaitQueries(n + 1) // the query is out, and dropped
		start := time.Now()
		cancel()
		select {
		case r := <-done:
			if !errors.Is(r.err, context.Canceled) || errors.Is(r.err, ErrNXDomain) {
				t.Errorf("err = %v, want context.Canceled", r.err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("returned %v after cancel", d)
			}
		case <-time.After(3 * time.Second):
			t.Fatal("LookupSRV did not return after cancel (the timeout is 5s)")
		}
	})

	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, _, err := c.LookupIP(ctx, "svc.test.", "")
		if d := time.Since(start); d > time.Second {
			t.Errorf("returned after %v, want soon after the 100ms deadline", d)
		}
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrNXDomain) {
			t.Errorf("err = %v, want context.DeadlineExceeded", err)
		}
	})

	t.Run("already done", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		n := s.Queries()
		if _, _, err := c.LookupIP(ctx, "svc.test.", ""); !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
		if s.Queries() != n {
			t.Errorf("sent %d queries with a done context", s.Queries()-n)
		}
	})
}

func TestClientConcurrentUse(t *testing.T) {
	s := dnstest.Start(t)
	s.Set("svc.test.", dns.TypeA, "svc.test. 5 IN A 127.0.0.2")
	s.Set("svc.test.", dns.TypeAAAA, "svc.test. 5 IN AAAA 2001:db8::2")
	c := newClient(t, time.Second, s)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			got, _, err := c.LookupIP(context.Background(), "svc.test.", "")
			if err != nil || len(got) != 2 {
				t.Errorf("LookupIP = %v, %v", got, err)
			}
		})
	}
	wg.Wait()
}

func TestClientConfigFromFile(t *testing.T) {
	write := func(t *testing.T, text string) string {
		path := filepath.Join(t.TempDir(), "resolv.conf")
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}

	path := write(t, `# written by a test
nameserver 127.0.0.1
nameserver ::1
search ns.test test
options ndots:2 timeout:1 attempts:3
`)
	got, err := ClientConfigFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := ClientConfig{
		Servers:  []string{"127.0.0.1:53", "[::1]:53"},
		Search:   []string{"ns.test", "test"},
		Ndots:    2,
		Timeout:  time.Second,
		Attempts: 3,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ClientConfigFromFile = %+v\nwant                  %+v", got, want)
	}

	// resolv.conf's defaults, and glibc's server when there is none.
	got, err = ClientConfigFromFile(write(t, "domain example.test\n"))
	want = ClientConfig{Servers: []string{"127.0.0.1:53"}, Search: []string{"example.test"}, Ndots: 1, Timeout: 5 * time.Second, Attempts: 2}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("defaults: %+v, %v\nwant      %+v", got, err, want)
	}

	if _, err := ClientConfigFromFile(write(t, "nameserver dns.example.test\n")); err == nil || !strings.Contains(err.Error(), "dns.example.test") {
		t.Errorf("a host name as nameserver: err = %v", err)
	}
	missing := filepath.Join(t.TempDir(), "nope")
	if _, err := ClientConfigFromFile(missing); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: err = %v", err)
	}
}

func TestClientConfigFor(t *testing.T) {
	got, err := ClientConfigFor([]string{"127.0.0.1", "127.0.0.1:5353", "::1", "[::1]", "[::1]:5353", "::ffff:127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	want := ClientConfig{
		Servers:  []string{"127.0.0.1:53", "127.0.0.1:5353", "[::1]:53", "[::1]:53", "[::1]:5353", "127.0.0.1:53"},
		Ndots:    1,
		Timeout:  5 * time.Second,
		Attempts: 2,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ClientConfigFor = %+v\nwant            %+v", got, want)
	}

	if _, err := ClientConfigFor(nil); err == nil {
		t.Error("no servers: no error")
	}
	for _, bad := range []string{"", "localhost", "localhost:53", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:x", "127.0.0.1:+53", "[127.0.0.1]:53", "[127.0.0.1]", "1.2.3.4:53:53", "[::1]:", "::1:53:"} {
		_, err := ClientConfigFor([]string{"127.0.0.1", bad})
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", bad)) {
			t.Errorf("ClientConfigFor(%q): err = %v, want an error naming it", bad, err)
		}
	}
}
