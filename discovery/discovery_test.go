package discovery

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/meshd/meshd/config"
)

func static(eps ...config.StaticEndpoint) *config.StaticServiceDiscovery {
	return &config.StaticServiceDiscovery{Endpoints: eps}
}

func TestStatic(t *testing.T) {
	tests := []struct {
		name string
		in   []config.StaticEndpoint
		port int
		want []Endpoint
	}{
		{"ipv4 with port", []config.StaticEndpoint{{Address: "10.0.0.1:8080"}}, 80,
			[]Endpoint{{"10.0.0.1:8080", 1}}},
		{"ipv4 without port takes default", []config.StaticEndpoint{{Address: "10.0.0.1"}}, 80,
			[]Endpoint{{"10.0.0.1:80", 1}}},
		{"ipv6 bracketed with port", []config.StaticEndpoint{{Address: "[::1]:80"}}, 9,
			[]Endpoint{{"[::1]:80", 1}}},
		{"ipv6 bare takes default", []config.StaticEndpoint{{Address: "2001:db8::1"}}, 443,
			[]Endpoint{{"[2001:db8::1]:443", 1}}},
		{"ipv6 bracketed without port", []config.StaticEndpoint{{Address: "[2001:db8::1]"}}, 443,
			[]Endpoint{{"[2001:db8::1]:443", 1}}},
		{"ipv6 canonicalised", []config.StaticEndpoint{{Address: "[2001:0db8:0000::0001]:80"}}, 1,
			[]Endpoint{{"[2001:db8::1]:80", 1}}},
		{"ipv4-mapped unmapped", []config.StaticEndpoint{{Address: "[::ffff:10.1.2.3]:80"}}, 1,
			[]Endpoint{{"10.1.2.3:80", 1}}},
		{"zone kept", []config.StaticEndpoint{{Address: "[fe80::1%eth0]:80"}}, 1,
			[]Endpoint{{"[fe80::1%eth0]:80", 1}}},
		{"weights and order kept", []config.StaticEndpoint{
			{Address: "10.0.0.2:80", Weight: 3}, {Address: "10.0.0.1:80"}, {Address: "10.0.0.1:81", Weight: 1}}, 1,
			[]Endpoint{{"10.0.0.2:80", 3}, {"10.0.0.1:80", 1}, {"10.0.0.1:81", 1}}},
		{"max weight", []config.StaticEndpoint{{Address: "10.0.0.1", Weight: 1<<32 - 1}}, 80,
			[]Endpoint{{"10.0.0.1:80", 1<<32 - 1}}},
		{"port bounds", []config.StaticEndpoint{{Address: "10.0.0.1:1"}, {Address: "10.0.0.1:65535"}}, 0,
			[]Endpoint{{"10.0.0.1:1", 1}, {"10.0.0.1:65535", 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Static(static(tt.in...), tt.port)
			if err != nil {
				t.Fatalf("Static: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Static = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestStaticErrors(t *testing.T) {
	tests := []struct {
		name string
		sd   *config.StaticServiceDiscovery
		port int
		want []string // substrings of the error
	}{
		{"nil", nil, 80, []string{"serviceDiscovery.static"}},
		{"empty list", static(), 80, []string{"serviceDiscovery.static.endpoints", "empty"}},
		{"empty address", static(config.StaticEndpoint{}), 80, []string{"endpoints[0].address", "empty"}},
		{"hostname", static(config.StaticEndpoint{Address: "svc.local:80"}), 80,
			[]string{`endpoints[0].address "svc.local:80"`, "not an IP literal"}},
		{"bare hostname", static(config.StaticEndpoint{Address: "10.0.0.1"}, config.StaticEndpoint{Address: "backend"}), 80,
			[]string{`endpoints[1].address "backend"`}},
		{"port not a number", static(config.StaticEndpoint{Address: "10.0.0.1:http"}), 80,
			[]string{`"10.0.0.1:http"`, "not a number"}},
		{"port zero", static(config.StaticEndpoint{Address: "10.0.0.1:0"}), 80, []string{`"10.0.0.1:0"`, "outside 1-65535"}},
		{"port too big", static(config.StaticEndpoint{Address: "10.0.0.1:65536"}), 80, []string{`"10.0.0.1:65536"`, "outside"}},
		{"no port and no default", static(config.StaticEndpoint{Address: "10.0.0.1"}), 0,
			[]string{`"10.0.0.1"`, "listener port 0"}},
		{"bracketed ipv4", static(config.StaticEndpoint{Address: "[10.0.0.1]:80"}), 80, []string{`"[10.0.0.1]:80"`}},
		{"bracketed ipv4 no port", static(config.StaticEndpoint{Address: "[10.0.0.1]"}), 80, []string{`"[10.0.0.1]"`, "brackets"}},
		{"zone with port unbracketed", static(config.StaticEndpoint{Address: "fe80::1%eth0]:80"}), 80, []string{`"fe80::1%eth0]:80"`}},
		{"unbalanced bracket", static(config.StaticEndpoint{Address: "[::1"}), 80, []string{`"[::1"`}},
		{"trailing colon", static(config.StaticEndpoint{Address: "10.0.0.1:"}), 80, []string{`"10.0.0.1:"`}},
		{"negative weight", static(config.StaticEndpoint{Address: "10.0.0.1:80", Weight: -1}), 80,
			[]string{"endpoints[0].weight -1", "negative"}},
		{"weight too big", static(config.StaticEndpoint{Address: "10.0.0.1:80", Weight: 1 << 32}), 80,
			[]string{"endpoints[0].weight 4294967296"}},
		{"duplicate after default port", static(config.StaticEndpoint{Address: "10.0.0.1"}, config.StaticEndpoint{Address: "10.0.0.1:80"}), 80,
			[]string{`endpoints[1].address "10.0.0.1:80"`, "duplicate of endpoints[0]"}},
		{"duplicate ipv6 spelled differently", static(config.StaticEndpoint{Address: "[::1]:80"}, config.StaticEndpoint{Address: "[0::1]:80"}), 80,
			[]string{"duplicate"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Static(tt.sd, tt.port)
			if err == nil {
				t.Fatalf("Static = %v, want error", got)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestPlanFor(t *testing.T) {
	ep := func(a string, w uint32) Endpoint { return Endpoint{Address: a, Weight: w} }
	tests := []struct {
		name     string
		sd       *config.ServiceDiscovery
		meshPref string
		want     Plan
		warn     string
	}{
		{"static IPs are fixed", &config.ServiceDiscovery{Static: static(config.StaticEndpoint{Address: "10.0.0.1"}, config.StaticEndpoint{Address: "10.0.0.2:81", Weight: 3})}, "",
			Plan{Fixed: []Endpoint{ep("10.0.0.1:9080", 1), ep("10.0.0.2:81", 3)}}, ""},
		{"static hostnames are followed", &config.ServiceDiscovery{Static: static(config.StaticEndpoint{Address: "10.0.0.1"}, config.StaticEndpoint{Address: "db.internal:5432", Weight: 2}, config.StaticEndpoint{Address: "cache"})}, IPv4Only,
			Plan{Fixed: []Endpoint{ep("10.0.0.1:9080", 1)}, Names: []Spec{
				{Name: "db.internal", Record: RecordA, Port: 5432, IPPreference: IPv4Only, Weight: 2},
				{Name: "cache", Record: RecordA, Port: 9080, IPPreference: IPv4Only, Weight: 1}}}, ""},
		{"dns endpoints, mesh preference as fallback", &config.ServiceDiscovery{DNS: &config.DNSServiceDiscovery{Hostname: "svc.ns"}}, IPv6Preferred,
			Plan{Names: []Spec{{Name: "svc.ns", Record: RecordA, Port: 9080, IPPreference: IPv6Preferred}}}, ""},
		{"dns node preference wins", &config.ServiceDiscovery{DNS: &config.DNSServiceDiscovery{Hostname: "svc.ns", IPPreference: IPv4Only}}, IPv6Preferred,
			Plan{Names: []Spec{{Name: "svc.ns", Record: RecordA, Port: 9080, IPPreference: IPv4Only}}}, ""},
		{"dns loadbalancer is logical", &config.ServiceDiscovery{DNS: &config.DNSServiceDiscovery{Hostname: "lb.ns", ResponseType: "LOADBALANCER"}}, "",
			Plan{Names: []Spec{{Name: "lb.ns", Record: RecordA, Port: 9080, Logical: true}}}, ""},
		{"dns IP literal is fixed, not asked of DNS", &config.ServiceDiscovery{DNS: &config.DNSServiceDiscovery{Hostname: "10.0.0.7"}}, "",
			Plan{Fixed: []Endpoint{ep("10.0.0.7:9080", 1)}}, ""},
		{"dns IPv6 literal is fixed", &config.ServiceDiscovery{DNS: &config.DNSServiceDiscovery{Hostname: "fd00::7", IPPreference: IPv6Only}}, "",
			Plan{Fixed: []Endpoint{ep("[fd00::7]:9080", 1)}}, ""},
		{"dns literal of a family the preference excludes is left to the resolver", &config.ServiceDiscovery{DNS: &config.DNSServiceDiscovery{Hostname: "fd00::7"}}, IPv4Only,
			Plan{Names: []Spec{{Name: "fd00::7", Record: RecordA, Port: 9080, IPPreference: IPv4Only}}}, ""},
		{"dns SRV", &config.ServiceDiscovery{DNS: &config.DNSServiceDiscovery{Hostname: "_http._tcp.svc", RecordType: "SRV"}}, "",
			Plan{Names: []Spec{{Name: "_http._tcp.svc", Record: RecordSRV}}}, ""},
		{"cloud map through its DNS namespace", &config.ServiceDiscovery{AWSCloudMap: &config.CloudMapServiceDiscovery{NamespaceName: "shop.local", ServiceName: "cart",
			Attributes: []config.CloudMapAttribute{{Key: "stage", Value: "canary"}}}}, "",
			Plan{Names: []Spec{{Name: "cart.shop.local", Record: RecordSRVOrA, Port: 9080}}}, "stage=canary"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PlanFor(tt.sd, 9080, tt.meshPref)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(tt.want) {
				t.Fatalf("plan %+v, want %+v", got, tt.want)
			}
			if tt.warn == "" && len(got.Warnings) > 0 || tt.warn != "" && (len(got.Warnings) != 1 || !strings.Contains(got.Warnings[0], tt.warn)) {
				t.Errorf("warnings %q, want one naming %q", got.Warnings, tt.warn)
			}
		})
	}
	for _, bad := range []struct {
		name string
		sd   *config.ServiceDiscovery
		port int
		want string
	}{
		{"nil", nil, 80, "serviceDiscovery: not set"},
		{"no kind", &config.ServiceDiscovery{}, 80, "none of dns, awsCloudMap, static"},
		{"dns empty hostname", &config.ServiceDiscovery{DNS: &config.DNSServiceDiscovery{}}, 80, "serviceDiscovery.dns.hostname: empty"},
		{"dns bad preference", &config.ServiceDiscovery{DNS: &config.DNSServiceDiscovery{Hostname: "a.test", IPPreference: "IPV4"}}, 80, `serviceDiscovery.dns.ipPreference "IPV4"`},
		{"dns bad port", &config.ServiceDiscovery{DNS: &config.DNSServiceDiscovery{Hostname: "a.test"}}, 0, "listener port 0"},
		{"static bad", &config.ServiceDiscovery{Static: static(config.StaticEndpoint{Address: "a b:1"})}, 80, `endpoints[0].address "a b:1"`},
	} {
		t.Run(bad.name, func(t *testing.T) {
			if _, err := PlanFor(bad.sd, bad.port, ""); err == nil || !strings.Contains(err.Error(), bad.want) {
				t.Fatalf("error %v, want one containing %q", err, bad.want)
			}
		})
	}
}

func TestEndpointsForPreference(t *testing.T) {
	addrs := func(ss ...string) []netip.Addr {
		var out []netip.Addr
		for _, s := range ss {
			out = append(out, netip.MustParseAddr(s))
		}
		return out
	}
	names := func(eps []Endpoint) []string {
		var out []string
		for _, e := range eps {
			out = append(out, e.Address)
		}
		return out
	}
	mixed := addrs("2001:db8::2", "10.0.0.2", "2001:db8::1", "10.0.0.1", "10.0.0.2")
	tests := []struct {
		pref string
		in   []netip.Addr
		want []string
	}{
		{"", mixed, []string{"10.0.0.1:80", "10.0.0.2:80", "[2001:db8::1]:80", "[2001:db8::2]:80"}},
		{IPv4Only, mixed, []string{"10.0.0.1:80", "10.0.0.2:80"}},
		{IPv6Only, mixed, []string{"[2001:db8::1]:80", "[2001:db8::2]:80"}},
		{IPv4Preferred, mixed, []string{"10.0.0.1:80", "10.0.0.2:80"}},
		{IPv6Preferred, mixed, []string{"[2001:db8::1]:80", "[2001:db8::2]:80"}},
		{IPv4Preferred, addrs("2001:db8::1"), []string{"[2001:db8::1]:80"}},
		{IPv6Preferred, addrs("10.0.0.9"), []string{"10.0.0.9:80"}},
		{IPv4Only, addrs("2001:db8::1"), nil},
		{IPv6Only, addrs("10.0.0.1"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.pref+"/"+strings.Join(names(endpointsFor(tt.in, "", 80)), ","), func(t *testing.T) {
			got := endpointsFor(append([]netip.Addr(nil), tt.in...), tt.pref, 80)
			if g := names(got); !reflect.DeepEqual(g, tt.want) {
				t.Fatalf("endpointsFor(%s) = %v, want %v", tt.pref, g, tt.want)
			}
			for _, e := range got {
				if e.Weight != 1 {
					t.Fatalf("weight %d, want 1", e.Weight)
				}
			}
		})
	}
}

// FuzzStaticAddress checks that whatever the parser accepts comes out canonical: a valid
// ip:port that parses back to itself.
func FuzzStaticAddress(f *testing.F) {
	for _, s := range []string{"10.0.0.1", "10.0.0.1:80", "[::1]:80", "::1", "[::1]", "[fe80::1%eth0]:443",
		"::ffff:1.2.3.4", "host:80", "[10.0.0.1]", "1.2.3.4:65536", ":80", "[]:80", "[::1]:+80", "1.2.3.4:080"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, err := parseStaticAddress(s, 8080)
		if err != nil {
			_, serr := Static(static(config.StaticEndpoint{Address: s}), 8080)
			if serr == nil || !strings.Contains(serr.Error(), fmt.Sprintf("%q", s)) {
				t.Fatalf("Static error %v for %q does not name it", serr, s)
			}
			return
		}
		ap, perr := netip.ParseAddrPort(out)
		if perr != nil {
			t.Fatalf("%q -> %q, which does not parse: %v", s, out, perr)
		}
		if ap.Port() == 0 || ap.Addr().Is4In6() {
			t.Fatalf("%q -> %q: not canonical", s, out)
		}
		again, err := parseStaticAddress(out, 1)
		if err != nil || again != out {
			t.Fatalf("%q -> %q -> %q, %v: not a fixed point", s, out, again, err)
		}
	})
}
