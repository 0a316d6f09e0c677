package intercept

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

func prefixes(t testing.TB, s string) []netip.Prefix {
	t.Helper()
	ps, err := ParsePrefixes(s)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

// every returns lo, lo+step, ... up to hi.
func every(lo, hi, step int) []int {
	var out []int
	for p := lo; p <= hi; p += step {
		out = append(out, p)
	}
	return out
}

func goldenConfigs(t testing.TB) map[string]Config {
	many := Defaults()
	many.AppPorts = []int{9080, 8080, 8443, 8080}
	many.IgnoredUIDs = []int{1337, 0}
	many.IgnoredGIDs = []int{1338}
	many.EgressIgnoredPorts = []int{22, 5432, 6379, 6380, 6381, 6382}
	many.EgressIgnoredIPs = append(MetadataIPs(), prefixes(t, "10.0.0.0/8,192.168.1.7,2001:db8::/32,fd00::1")...)

	return map[string]Config{
		"many": many,
		// 20 scattered app ports plus a run, 17 ignored ports: past the 15-slot
		// multiport limit, so the lists must split instead of losing ports.
		"split": {
			AppPorts:           append(every(3000, 3038, 2), every(7000, 7010, 1)...),
			IgnoredUIDs:        []int{1337},
			EgressIgnoredPorts: every(100, 132, 2),
		},
		"nothing-ignored": {
			AppPorts:    []int{8080},
			IgnoredUIDs: []int{1337},
		},
		"egress-only": Defaults(),
	}
}

func TestRulesGolden(t *testing.T) {
	for name, cfg := range goldenConfigs(t) {
		if err := cfg.Validate(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, fam := range []Family{IPv4, IPv6} {
			file := filepath.Join("testdata", name+"-"+strings.ToLower(fam.String())+".golden")
			got := Rules(cfg, fam)
			if *update {
				if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("%s differs from Rules output (go test -update rewrites it):\n--- got\n%s--- want\n%s", file, got, want)
			}
		}
	}
}

// TestRulesNeverExceedMultiportLimit checks the property the golden files show by
// example: every port appears in exactly one rule and no rule exceeds 15 slots.
func TestRulesNeverExceedMultiportLimit(t *testing.T) {
	for _, ports := range [][]int{nil, {1}, every(1, 15, 1), every(1, 31, 2), every(1, 100, 3), every(1, 65535, 1), append(every(10, 40, 2), every(500, 600, 1)...)} {
		lists := multiportLists(ports)
		seen := map[int]int{}
		for _, l := range lists {
			slots := 0
			for item := range strings.SplitSeq(l, ",") {
				lo, hi, isRange := strings.Cut(item, ":")
				a, _ := parsePort(lo)
				b := a
				slots++
				if isRange {
					b, _ = parsePort(hi)
					slots++
				}
				for p := a; p <= b; p++ {
					seen[p]++
				}
			}
			if slots > maxMultiportSlots {
				t.Errorf("%q uses %d slots", l, slots)
			}
		}
		for _, p := range ports {
			if seen[p] != 1 {
				t.Errorf("port %d appears %d times in %q", p, seen[p], lists)
			}
		}
		if len(seen) != len(uniqueSorted(ports)) {
			t.Errorf("rules cover %d ports, want %d", len(seen), len(uniqueSorted(ports)))
		}
	}
}

func TestRulesFamilySeparation(t *testing.T) {
	cfg := Defaults()
	cfg.EgressIgnoredIPs = prefixes(t, "10.1.2.3,fd00::7")
	v4, v6 := Rules(cfg, IPv4), Rules(cfg, IPv6)
	if !strings.Contains(v4, "-d 10.1.2.3/32 ") || strings.Contains(v4, "fd00::7") {
		t.Errorf("IPv4 rules hold the wrong prefixes:\n%s", v4)
	}
	if !strings.Contains(v6, "-d fd00::7/128 ") || strings.Contains(v6, "10.1.2.3") {
		t.Errorf("IPv6 rules hold the wrong prefixes:\n%s", v6)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want string // substring of the error; "" means valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"zero ports mean defaults", func(c *Config) { c.IngressPort, c.EgressPort = 0, 0 }, ""},
		{"gid only", func(c *Config) { c.IgnoredUIDs, c.IgnoredGIDs = nil, []int{1337} }, ""},
		{"no owner", func(c *Config) { c.IgnoredUIDs = nil }, "IgnoredUIDs: at least one"},
		{"app port is ingress port", func(c *Config) { c.AppPorts = []int{80, 15000} }, "AppPorts[1]: 15000 is one of meshd's own ports"},
		{"app port out of range", func(c *Config) { c.AppPorts = []int{70000} }, "AppPorts[0]: port 70000 out of range"},
		{"same listener ports", func(c *Config) { c.EgressPort = 15000 }, "EgressPort: 15000 is also the IngressPort"},
		{"bad ignored port", func(c *Config) { c.EgressIgnoredPorts = []int{0} }, "EgressIgnoredPorts[0]: port 0"},
		{"negative uid", func(c *Config) { c.IgnoredUIDs = []int{-1} }, "IgnoredUIDs[0]: -1"},
		{"invalid prefix", func(c *Config) { c.EgressIgnoredIPs = []netip.Prefix{{}} }, "EgressIgnoredIPs[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Defaults()
			tt.edit(&cfg)
			err := cfg.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestParsePorts(t *testing.T) {
	tests := []struct {
		in      string
		want    []int
		wantErr string
	}{
		{"", nil, ""},
		{"8080", []int{8080}, ""},
		{" 8080 , 9090,", []int{8080, 9090}, ""},
		{"100-103", []int{100, 101, 102, 103}, ""},
		{"100:101", []int{100, 101}, ""},
		{"http", nil, `port "http": not a number`},
		{"0", nil, `port "0": out of range`},
		{"65536", nil, `port "65536": out of range`},
		{"10-5", nil, `port range "10-5": end is below start`},
		{"10-x", nil, `port range "10-x": not a number`},
	}
	for _, tt := range tests {
		got, err := ParsePorts(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParsePorts(%q) error %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !equalInts(got, tt.want) {
			t.Errorf("ParsePorts(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestParsePrefixesAndIDs(t *testing.T) {
	ps, err := ParsePrefixes("169.254.170.2, 10.1.2.3/8,fd00:ec2::254,2001:db8::1/32")
	if err != nil {
		t.Fatal(err)
	}
	want := "[169.254.170.2/32 10.0.0.0/8 fd00:ec2::254/128 2001:db8::/32]"
	if got := fmtPrefixes(ps); got != want {
		t.Errorf("ParsePrefixes = %s, want %s", got, want)
	}
	for _, bad := range []string{"10.0.0.300", "10.0.0.0/33", "fe80::1%eth0", "host.example"} {
		if _, err := ParsePrefixes(bad); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("ParsePrefixes(%q) error %v, want one quoting the input", bad, err)
		}
	}
	ids, err := ParseIDs("1337, 0")
	if err != nil || !equalInts(ids, []int{1337, 0}) {
		t.Errorf("ParseIDs = %v, %v", ids, err)
	}
	for _, bad := range []string{"envoy", "-1", "4294967295"} {
		if _, err := ParseIDs(bad); err == nil {
			t.Errorf("ParseIDs(%q) accepted", bad)
		}
	}
}

func fmtPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return "[" + strings.Join(s, " ") + "]"
}

func TestApplyScript(t *testing.T) {
	cfg := Defaults()
	cfg.AppPorts = []int{8080}
	fresh := applyScript(cfg, IPv4, parseSave(""))
	if fresh != Rules(cfg, IPv4) {
		t.Errorf("on an empty table apply must install exactly the printed rules:\n%s\nvs\n%s", fresh, Rules(cfg, IPv4))
	}
	// Installed state as iptables-save prints it, with a foreign rule, a duplicate jump
	// and a stale jump to our chain.
	saved := `# Generated by iptables-save
*filter
-A INPUT -j MESHD_EGRESS
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:MESHD_INGRESS - [0:0]
:MESHD_EGRESS - [0:0]
:FOREIGN - [0:0]
-A PREROUTING -p tcp -m addrtype ! --src-type LOCAL -j MESHD_INGRESS
-A OUTPUT -d 10.9.9.9/32 -j ACCEPT
-A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j MESHD_EGRESS
-A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j MESHD_EGRESS
-A OUTPUT -p tcp -j MESHD_EGRESS
-A FOREIGN -j RETURN
COMMIT
`
	got := applyScript(cfg, IPv4, parseSave(saved))
	for _, want := range []string{
		"-D OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j MESHD_EGRESS\n",
		"-D OUTPUT -p tcp -j MESHD_EGRESS\n",
	} {
		if strings.Count(got, want) != 1 {
			t.Errorf("script should contain %q once:\n%s", want, got)
		}
	}
	if strings.Contains(got, "-A PREROUTING") || strings.Contains(got, "-A OUTPUT") || strings.Contains(got, "FOREIGN") || strings.Contains(got, "10.9.9.9") {
		t.Errorf("script re-adds present jumps or touches foreign rules:\n%s", got)
	}
	clean := cleanScript(parseSave(saved))
	wantClean := `*nat
-D PREROUTING -p tcp -m addrtype ! --src-type LOCAL -j MESHD_INGRESS
-D OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j MESHD_EGRESS
-D OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j MESHD_EGRESS
-D OUTPUT -p tcp -j MESHD_EGRESS
:MESHD_INGRESS - [0:0]
:MESHD_EGRESS - [0:0]
-X MESHD_INGRESS
-X MESHD_EGRESS
COMMIT
`
	if clean != wantClean {
		t.Errorf("cleanScript:\n%s\nwant\n%s", clean, wantClean)
	}
	if s := cleanScript(parseSave("*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j ACCEPT\nCOMMIT\n")); s != "" {
		t.Errorf("cleanScript without meshd rules = %q, want empty", s)
	}
	// Removing the app ports removes the inbound jump.
	egressOnly := applyScript(Defaults(), IPv4, parseSave(saved))
	if !strings.Contains(egressOnly, "-D PREROUTING -p tcp -m addrtype ! --src-type LOCAL -j MESHD_INGRESS\n") {
		t.Errorf("egress-only apply keeps the inbound jump:\n%s", egressOnly)
	}
}

func TestOwners(t *testing.T) {
	dump := `*nat
:APPMESH_EGRESS - [0:0]
-A APPMESH_EGRESS -m owner --uid-owner 1337 -j RETURN
-A APPMESH_EGRESS -m owner --gid-owner 1338 -j RETURN
-A APPMESH_EGRESS -m owner ! --uid-owner 5 -j RETURN
-A APPMESH_EGRESS -p tcp -j REDIRECT --to-ports 15001
COMMIT
`
	uids, gids, found := Owners(dump)
	if !found || !equalInts(uids, []int{1337}) || !equalInts(gids, []int{1338}) {
		t.Errorf("Owners = %v %v %v", uids, gids, found)
	}
	if _, _, found := Owners("*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"); found {
		t.Error("Owners found a chain in a table without one")
	}
}

func FuzzParsePorts(f *testing.F) {
	for _, s := range []string{"", "80", "1-65535", "80,443,8000:8010", ",,", "-", "1:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ports, err := ParsePorts(s)
		if err != nil {
			return
		}
		for _, p := range ports {
			if p < 1 || p > 65535 {
				t.Fatalf("ParsePorts(%q) returned port %d", s, p)
			}
		}
		for _, l := range multiportLists(ports) {
			if l == "" {
				t.Fatalf("empty multiport list for %q", s)
			}
		}
	})
}

func FuzzParsePrefixes(f *testing.F) {
	for _, s := range []string{"", "10.0.0.1", "10.0.0.0/8,::1", "fd00::/8", "1.2.3.4/32,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := ParsePrefixes(s)
		if err != nil {
			return
		}
		cfg := Defaults()
		cfg.EgressIgnoredIPs = ps
		if err := cfg.Validate(); err != nil {
			t.Fatalf("ParsePrefixes(%q) produced an invalid config: %v", s, err)
		}
		for _, fam := range []Family{IPv4, IPv6} {
			for line := range strings.Lines(Rules(cfg, fam)) {
				if !strings.HasPrefix(line, "*nat") && !strings.HasPrefix(line, ":MESHD_") &&
					!strings.HasPrefix(line, "-A ") && line != "COMMIT\n" {
					t.Fatalf("ParsePrefixes(%q): unexpected restore line %q", s, line)
				}
			}
		}
	})
}
