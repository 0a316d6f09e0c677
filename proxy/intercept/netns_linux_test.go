//go:build linux

package intercept

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/netnstest"
)

// These tests create their own network namespaces (ip netns), join them with a veth
// pair, install rules with the real iptables binaries inside the app namespace and send
// real TCP connections through them. They need root; CI runs them as root and sets
// MESHD_REQUIRE_NETNS=1 so that a missing prerequisite fails instead of skipping.

var nsSeq atomic.Int64

// testNet is an app namespace and a peer namespace joined by a veth pair:
// app va 10.77.0.1/24 fd77::1/64 <-> peer vp 10.77.0.2,10.77.0.3/24 fd77::2,fd77::3/64.
// The addresses exist only inside these namespaces.
type testNet struct {
	app, peer string
	appRunner Exec
}

func newTestNet(t *testing.T) *testNet {
	t.Helper()
	netnstest.RequireNetns(t)
	id := fmt.Sprintf("%d-%d", os.Getpid(), nsSeq.Add(1))
	n := &testNet{app: "meshd-app-" + id, peer: "meshd-peer-" + id}
	n.appRunner = Exec{Prefix: []string{"ip", "netns", "exec", n.app}}
	for _, ns := range []string{n.app, n.peer} {
		netnstest.Sh(t, "ip", "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v %s", ns, err, out)
			}
		})
	}
	netnstest.Sh(t, "ip", "-n", n.app, "link", "add", "va", "type", "veth", "peer", "name", "vp", "netns", n.peer)
	netnstest.Sh(t, "ip", "-n", n.app, "addr", "add", "10.77.0.1/24", "dev", "va")
	netnstest.Sh(t, "ip", "-n", n.app, "addr", "add", "fd77::1/64", "dev", "va", "nodad")
	netnstest.Sh(t, "ip", "-n", n.peer, "addr", "add", "10.77.0.2/24", "dev", "vp")
	netnstest.Sh(t, "ip", "-n", n.peer, "addr", "add", "10.77.0.3/24", "dev", "vp")
	netnstest.Sh(t, "ip", "-n", n.peer, "addr", "add", "fd77::2/64", "dev", "vp", "nodad")
	netnstest.Sh(t, "ip", "-n", n.peer, "addr", "add", "fd77::3/64", "dev", "vp", "nodad")
	for _, ns := range []string{n.app, n.peer} {
		netnstest.Sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	netnstest.Sh(t, "ip", "-n", n.app, "link", "set", "va", "up")
	netnstest.Sh(t, "ip", "-n", n.peer, "link", "set", "vp", "up")
	return n
}

// creds are per-thread credentials for a dialing goroutine; zero means root.
type creds struct{ uid, gid int }

// serve listens in ns and answers every connection with "name original-destination\n".
// It stops and is joined at test cleanup.
func serve(t *testing.T, ns, network, addr, name string) {
	t.Helper()
	var ln net.Listener
	if err := netnstest.InNetns(ns, 0, 0, func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	}); err != nil {
		t.Fatalf("listen %s %s in %s: %v", network, addr, ns, err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			orig := "-"
			if ap, err := OriginalDst(c.(*net.TCPConn)); err == nil {
				orig = ap.String()
			}
			fmt.Fprintf(c, "%s %s\n", name, orig)
			c.Close()
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
}

// dial connects from ns as c to addr and returns the answering listener's line.
func dial(ns string, c creds, addr string) (string, error) {
	var line string
	err := netnstest.InNetns(ns, c.uid, c.gid, func() error {
		d := net.Dialer{Timeout: 3 * time.Second}
		conn, err := d.Dial("tcp", addr)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(3 * time.Second))
		line, err = bufio.NewReader(conn).ReadString('\n')
		line = strings.TrimSpace(line)
		return err
	})
	return line, err
}

// natDump returns both families' nat tables of backend b in the app namespace, without
// the timestamped comment lines and packet counters.
func (n *testNet) natDump(t *testing.T, b Backend) string {
	t.Helper()
	var out strings.Builder
	for _, bin := range []string{"iptables", "ip6tables"} {
		dump := netnstest.Sh(t, "ip", "netns", "exec", n.app, bin+"-"+string(b)+"-save", "-t", "nat")
		for line := range strings.Lines(dump) {
			if !strings.HasPrefix(line, "#") {
				out.WriteString(line)
			}
		}
	}
	return out.String()
}

// backends returns the iptables backends whose binaries are installed and whose
// kernel side works (some kernels are built without legacy xtables), probed in a
// throwaway namespace so the host's tables are not touched.
func backends(t *testing.T) []Backend {
	t.Helper()
	netnstest.RequireNetns(t)
	probe := fmt.Sprintf("meshd-probe-%d-%d", os.Getpid(), nsSeq.Add(1))
	netnstest.Sh(t, "ip", "netns", "add", probe)
	defer exec.Command("ip", "netns", "del", probe).Run()
	usable := func(b Backend) bool {
		for _, bin := range []string{"iptables", "ip6tables"} {
			if o, err := exec.Command("ip", "netns", "exec", probe, bin+"-"+string(b)+"-save", "-t", "nat").CombinedOutput(); err != nil {
				t.Logf("backend %s not usable here (%s-%s-save: %v %s)", b, bin, b, err, strings.TrimSpace(string(o)))
				return false
			}
		}
		return true
	}
	var out []Backend
	for _, b := range []Backend{BackendNFT, BackendLegacy} {
		if usable(b) {
			out = append(out, b)
		}
	}
	if len(out) == 0 {
		t.Fatal("neither the nf_tables nor the legacy iptables backend works here")
	}
	return out
}

func testConfig(t *testing.T) Config {
	cfg := Config{
		AppPorts:           []int{8080},
		IngressPort:        15000,
		EgressPort:         15001,
		IgnoredUIDs:        []int{1337},
		IgnoredGIDs:        []int{1338},
		EgressIgnoredPorts: []int{22, 5432},
		EgressIgnoredIPs:   prefixes(t, "10.77.0.3,fd77::3,169.254.169.254"),
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestNetnsApplyIdempotentAndCleanLeavesForeignRules(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(string(b), func(t *testing.T) {
			n := newTestNet(t)
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			opts := Options{Backend: b, IPv6: IPv6On}
			// Foreign rules in the chains meshd jumps from, and a foreign chain.
			foreign := "*nat\n:FOREIGN - [0:0]\n-A FOREIGN -p tcp --dport 9999 -j RETURN\n" +
				"-A OUTPUT -p tcp -j FOREIGN\n-A PREROUTING -p udp -j RETURN\nCOMMIT\n"
			for _, bin := range []string{"iptables", "ip6tables"} {
				if _, err := n.appRunner.Run(ctx, []byte(foreign), bin+"-"+string(b)+"-restore", "--noflush"); err != nil {
					t.Fatal(err)
				}
			}
			before := n.natDump(t, b)

			cfg := testConfig(t)
			if err := Apply(ctx, n.appRunner, cfg, opts); err != nil {
				t.Fatal(err)
			}
			first := n.natDump(t, b)
			// The kernel's own rendering of the rules is exactly what Rules prints, which
			// is what lets Apply recognise its jumps.
			for _, fam := range []Family{IPv4, IPv6} {
				for line := range strings.Lines(Rules(cfg, fam)) {
					if strings.HasPrefix(line, "-A ") && !strings.Contains(first, line) {
						t.Errorf("%s rule %q not in iptables-save output:\n%s", fam, line, first)
					}
				}
			}
			if !strings.Contains(first, "-A FOREIGN -p tcp -m tcp --dport 9999 -j RETURN") {
				t.Errorf("apply disturbed the foreign chain:\n%s", first)
			}
			if err := Apply(ctx, n.appRunner, cfg, opts); err != nil {
				t.Fatal(err)
			}
			if second := n.natDump(t, b); second != first {
				t.Errorf("second apply changed the rules:\n--- first\n%s--- second\n%s", first, second)
			}

			// A changed config replaces meshd's rules in place.
			changed := cfg
			changed.AppPorts = nil
			changed.EgressIgnoredPorts = []int{2222}
			if err := Apply(ctx, n.appRunner, changed, opts); err != nil {
				t.Fatal(err)
			}
			third := n.natDump(t, b)
			if strings.Contains(third, "-j "+IngressChain) || strings.Contains(third, "5432") || !strings.Contains(third, "--dports 2222 ") {
				t.Errorf("re-apply with a new config left stale rules:\n%s", third)
			}

			for range 2 { // a second clean finds nothing and succeeds
				if err := Clean(ctx, n.appRunner, opts); err != nil {
					t.Fatal(err)
				}
			}
			after := n.natDump(t, b)
			if strings.Contains(after, "MESHD") {
				t.Errorf("clean left meshd rules:\n%s", after)
			}
			if after != before {
				t.Errorf("clean did not restore the foreign rules exactly:\n--- before\n%s--- after\n%s", before, after)
			}
		})
	}
}

func TestNetnsAutoBackend(t *testing.T) {
	bs := backends(t)
	if len(bs) < 2 {
		t.Skip("needs both iptables-nft and iptables-legacy")
	}
	n := newTestNet(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	// A host whose rules live in the legacy backend: auto must follow them there.
	if _, err := n.appRunner.Run(ctx, []byte("*nat\n-A OUTPUT -d 10.9.9.9/32 -j RETURN\nCOMMIT\n"), "iptables-legacy-restore", "--noflush"); err != nil {
		t.Fatal(err)
	}
	if err := Apply(ctx, n.appRunner, testConfig(t), Options{IPv6: IPv6Off}); err != nil {
		t.Fatal(err)
	}
	if d := n.natDump(t, BackendLegacy); !strings.Contains(d, "-j "+EgressChain) {
		t.Errorf("auto did not install into the legacy backend that holds the host's rules:\n%s", d)
	}
	if d := n.natDump(t, BackendNFT); strings.Contains(d, "MESHD") {
		t.Errorf("auto installed into nft too:\n%s", d)
	}
	// Stale rules in the other backend are cleaned as well.
	if err := Apply(ctx, n.appRunner, testConfig(t), Options{Backend: BackendNFT, IPv6: IPv6Off}); err != nil {
		t.Fatal(err)
	}
	if err := Clean(ctx, n.appRunner, Options{IPv6: IPv6Off}); err != nil {
		t.Fatal(err)
	}
	for _, b := range bs {
		if d := n.natDump(t, b); strings.Contains(d, "MESHD") {
			t.Errorf("clean left meshd rules in %s:\n%s", b, d)
		}
	}
	if d := n.natDump(t, BackendLegacy); !strings.Contains(d, "10.9.9.9") {
		t.Errorf("clean removed a foreign rule:\n%s", d)
	}
}

func TestNetnsInterception(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(string(b), func(t *testing.T) {
			n := newTestNet(t)
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()

			// meshd's listeners and the app's, in the app namespace. A locally generated
			// connection REDIRECTed in OUTPUT arrives on loopback.
			serve(t, n.app, "tcp4", "127.0.0.1:15001", "egress")
			serve(t, n.app, "tcp6", "[::1]:15001", "egress")
			serve(t, n.app, "tcp4", "0.0.0.0:15000", "ingress")
			serve(t, n.app, "tcp6", "[::]:15000", "ingress")
			for _, port := range []string{"8080", "9000"} {
				serve(t, n.app, "tcp4", "0.0.0.0:"+port, "app"+port)
				serve(t, n.app, "tcp6", "[::]:"+port, "app"+port)
			}
			// Upstreams in the peer namespace.
			for _, port := range []string{"80", "22", "5432"} {
				serve(t, n.peer, "tcp4", "0.0.0.0:"+port, "peer"+port)
				serve(t, n.peer, "tcp6", "[::]:"+port, "peer"+port)
			}

			type tc struct {
				name string
				ns   string
				c    creds
				addr string
				want string // listener name, then the original destination when checked
			}
			cases := []tc{
				{"egress v4 redirected", n.app, creds{}, "10.77.0.2:80", "egress 10.77.0.2:80"},
				{"egress v6 redirected", n.app, creds{}, "[fd77::2]:80", "egress [fd77::2]:80"},
				{"uid not ignored redirected", n.app, creds{uid: 4242, gid: 4242}, "10.77.0.2:80", "egress 10.77.0.2:80"},
				{"ignored uid direct", n.app, creds{uid: 1337, gid: 4242}, "10.77.0.2:80", "peer80"},
				{"ignored uid direct v6", n.app, creds{uid: 1337, gid: 4242}, "[fd77::2]:80", "peer80"},
				{"ignored gid direct", n.app, creds{uid: 4242, gid: 1338}, "10.77.0.2:80", "peer80"},
				{"ssh port direct", n.app, creds{}, "10.77.0.2:22", "peer22"},
				{"ignored port direct", n.app, creds{}, "10.77.0.2:5432", "peer5432"},
				{"ignored port direct v6", n.app, creds{}, "[fd77::2]:5432", "peer5432"},
				{"ignored ip direct", n.app, creds{}, "10.77.0.3:80", "peer80"},
				{"ignored ip direct v6", n.app, creds{}, "[fd77::3]:80", "peer80"},
				{"loopback not intercepted", n.app, creds{}, "127.0.0.1:8080", "app8080"},
				{"own address not intercepted", n.app, creds{}, "10.77.0.1:9000", "app9000"},
				{"inbound app port v4", n.peer, creds{}, "10.77.0.1:8080", "ingress 10.77.0.1:8080"},
				{"inbound app port v6", n.peer, creds{}, "[fd77::1]:8080", "ingress [fd77::1]:8080"},
				{"inbound other port", n.peer, creds{}, "10.77.0.1:9000", "app9000"},
			}
			check := func(t *testing.T, cases []tc) {
				for _, c := range cases {
					got, err := dial(c.ns, c.c, c.addr)
					if err != nil {
						t.Errorf("%s: dial %s: %v", c.name, c.addr, err)
						continue
					}
					if !strings.Contains(c.want, " ") {
						got, _, _ = strings.Cut(got, " ")
					}
					if got != c.want {
						t.Errorf("%s: %s answered %q, want %q", c.name, c.addr, got, c.want)
					}
				}
			}

			// Without rules everything is direct.
			check(t, []tc{
				{"before apply", n.app, creds{}, "10.77.0.2:80", "peer80"},
				{"before apply inbound", n.peer, creds{}, "10.77.0.1:8080", "app8080"},
			})
			if err := Apply(ctx, n.appRunner, testConfig(t), Options{Backend: b, IPv6: IPv6On}); err != nil {
				t.Fatal(err)
			}
			check(t, cases)

			if err := Clean(ctx, n.appRunner, Options{Backend: b, IPv6: IPv6On}); err != nil {
				t.Fatal(err)
			}
			check(t, []tc{
				{"after clean", n.app, creds{}, "10.77.0.2:80", "peer80"},
				{"after clean v6", n.app, creds{}, "[fd77::2]:80", "peer80"},
				{"after clean inbound", n.peer, creds{}, "10.77.0.1:8080", "app8080"},
			})
		})
	}
}

func TestNetnsCheckOwner(t *testing.T) {
	n := newTestNet(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := CheckOwner(ctx, n.appRunner, BackendAuto, 4242, 4242); err != nil {
		t.Fatalf("without rules every owner is fine, got %v", err)
	}
	if err := Apply(ctx, n.appRunner, testConfig(t), Options{IPv6: IPv6Off}); err != nil {
		t.Fatal(err)
	}
	if err := CheckOwner(ctx, n.appRunner, BackendAuto, 1337, 4242); err != nil {
		t.Errorf("uid 1337 is exempt, got %v", err)
	}
	if err := CheckOwner(ctx, n.appRunner, BackendAuto, 4242, 1338); err != nil {
		t.Errorf("gid 1338 is exempt, got %v", err)
	}
	if err := CheckOwner(ctx, n.appRunner, BackendAuto, 4242, 4242); !errors.Is(err, ErrNotExempt) {
		t.Errorf("uid 4242 is not exempt, got %v", err)
	}
}
