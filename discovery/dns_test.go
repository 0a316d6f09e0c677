package discovery

import (
	"context"
	"errors"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/miekg/dns"
)

// testZone is what the in-test DNS server knows: FQDN → A and AAAA answers. Answers
// repeat an address and come unsorted on purpose.
var testZone = map[string]struct{ a, aaaa []string }{
	"mixed.meshd.test.": {a: []string{"10.0.0.2", "10.0.0.1", "10.0.0.2"}, aaaa: []string{"2001:db8::2", "2001:db8::1"}},
	"v4.meshd.test.":    {a: []string{"192.0.2.7"}},
	"v6.meshd.test.":    {aaaa: []string{"2001:db8::7"}},
}

// startDNS runs a real miekg/dns server on a loopback UDP port and returns a resolver
// that sends every query there.
func startDNS(t *testing.T) *net.Resolver {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, NotifyStartedFunc: func() { close(started) }}
	srv.Handler = dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Authoritative = true
		name := strings.ToLower(q.Question[0].Name)
		rec, ok := testZone[name]
		if !ok {
			m.Rcode = dns.RcodeNameError
		}
		hdr := func(t uint16) dns.RR_Header {
			return dns.RR_Header{Name: q.Question[0].Name, Rrtype: t, Class: dns.ClassINET, Ttl: 5}
		}
		switch q.Question[0].Qtype {
		case dns.TypeA:
			for _, s := range rec.a {
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: net.ParseIP(s)})
			}
		case dns.TypeAAAA:
			for _, s := range rec.aaaa {
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: net.ParseIP(s)})
			}
		}
		if err := w.WriteMsg(m); err != nil {
			t.Errorf("dns write: %v", err)
		}
	})
	done := make(chan error, 1)
	go func() { done <- srv.ActivateAndServe() }()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("dns server: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("dns server did not start")
	}
	t.Cleanup(func() {
		if err := srv.Shutdown(); err != nil {
			t.Errorf("dns shutdown: %v", err)
		}
		<-done
	})
	addr := pc.LocalAddr().String()
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", addr)
		},
	}
}

func TestResolveDNS(t *testing.T) {
	r := startDNS(t)
	tests := []struct {
		host, pref string
		want       []string
	}{
		{"mixed.meshd.test.", "", []string{"10.0.0.1:8080", "10.0.0.2:8080", "[2001:db8::1]:8080", "[2001:db8::2]:8080"}},
		{"mixed.meshd.test.", IPv4Only, []string{"10.0.0.1:8080", "10.0.0.2:8080"}},
		{"mixed.meshd.test.", IPv6Only, []string{"[2001:db8::1]:8080", "[2001:db8::2]:8080"}},
		{"mixed.meshd.test.", IPv4Preferred, []string{"10.0.0.1:8080", "10.0.0.2:8080"}},
		{"mixed.meshd.test.", IPv6Preferred, []string{"[2001:db8::1]:8080", "[2001:db8::2]:8080"}},
		{"v4.meshd.test.", "", []string{"192.0.2.7:8080"}},
		{"v4.meshd.test.", IPv6Preferred, []string{"192.0.2.7:8080"}},
		{"v6.meshd.test.", IPv4Preferred, []string{"[2001:db8::7]:8080"}},
	}
	for _, tt := range tests {
		t.Run(tt.host+"/"+tt.pref, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			sd := &config.ServiceDiscovery{DNS: &config.DNSServiceDiscovery{Hostname: tt.host, IPPreference: tt.pref}}
			got, err := Resolve(ctx, sd, 8080, r)
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			var addrs []string
			for _, e := range got {
				if e.Weight != 1 {
					t.Errorf("%s: weight %d, want 1", e.Address, e.Weight)
				}
				addrs = append(addrs, e.Address)
			}
			if !reflect.DeepEqual(addrs, tt.want) {
				t.Fatalf("Resolve = %v, want %v", addrs, tt.want)
			}
		})
	}
}

func TestResolveDNSErrors(t *testing.T) {
	r := startDNS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	_, err := Resolve(ctx, &config.ServiceDiscovery{DNS: &config.DNSServiceDiscovery{Hostname: "v6.meshd.test.", IPPreference: IPv4Only}}, 80, r)
	if !errors.Is(err, ErrNoAddresses) || !strings.Contains(err.Error(), `"v6.meshd.test."`) {
		t.Errorf("IPv4_ONLY on an IPv6-only name: %v, want ErrNoAddresses naming the host", err)
	}

	_, err = Resolve(ctx, &config.ServiceDiscovery{DNS: &config.DNSServiceDiscovery{Hostname: "missing.meshd.test."}}, 80, r)
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound || !strings.Contains(err.Error(), `serviceDiscovery.dns.hostname "missing.meshd.test."`) {
		t.Errorf("unknown name: %v, want a wrapped not-found *net.DNSError naming the host", err)
	}
}

func TestDNSSourceIsReusable(t *testing.T) {
	r := startDNS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src, err := NewSource(&config.ServiceDiscovery{DNS: &config.DNSServiceDiscovery{Hostname: "v4.meshd.test."}}, 80, r)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		got, err := src.Endpoints(ctx)
		if err != nil || len(got) != 1 || got[0].Address != "192.0.2.7:80" {
			t.Fatalf("resolution %d: %v, %v", i, got, err)
		}
	}
}
