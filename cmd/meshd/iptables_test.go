package main

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/meshd/meshd/proxy/intercept"
)

func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func TestIptablesPrint(t *testing.T) {
	metadata := intercept.MetadataIPs()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want intercept.Config
	}{
		{
			name: "defaults",
			args: []string{"--app-ports", "8080"},
			want: intercept.Config{AppPorts: []int{8080}, IngressPort: 15000, EgressPort: 15001, IgnoredUIDs: []int{1337},
				EgressIgnoredPorts: []int{22}, EgressIgnoredIPs: metadata},
		},
		{
			name: "App Mesh environment",
			env: map[string]string{
				"APPMESH_APP_PORTS": "9080,9443", "APPMESH_ENVOY_INGRESS_PORT": "16000", "APPMESH_ENVOY_EGRESS_PORT": "16001",
				"APPMESH_IGNORE_UID": "1000", "APPMESH_IGNORE_GID": "2000", "APPMESH_EGRESS_IGNORED_IP": "10.0.0.0/8,fd00::1",
				"APPMESH_EGRESS_IGNORED_PORTS": "5432", "MESHD_IGNORE_SSH": "false", "MESHD_IGNORE_METADATA": "false",
			},
			want: intercept.Config{AppPorts: []int{9080, 9443}, IngressPort: 16000, EgressPort: 16001, IgnoredUIDs: []int{1000},
				IgnoredGIDs: []int{2000}, EgressIgnoredPorts: []int{5432},
				EgressIgnoredIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::1/128")}},
		},
		{
			name: "flags override environment; meshd's port names win over App Mesh's",
			args: []string{"--app-ports", "80", "--ignore-ssh=false"},
			env:  map[string]string{"APPMESH_APP_PORTS": "9080", "MESHD_INGRESS_PORT": "17000", "APPMESH_ENVOY_INGRESS_PORT": "16000"},
			want: intercept.Config{AppPorts: []int{80}, IngressPort: 17000, EgressPort: 15001, IgnoredUIDs: []int{1337},
				EgressIgnoredIPs: metadata},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := iptablesMain(append([]string{"print"}, tt.args...), &out, &errb, envMap(tt.env)); code != 0 {
				t.Fatalf("code %d, stderr %s", code, errb.String())
			}
			want := "# IPv4: iptables-restore --noflush\n" + intercept.Rules(tt.want, intercept.IPv4) +
				"# IPv6: ip6tables-restore --noflush\n" + intercept.Rules(tt.want, intercept.IPv6)
			if out.String() != want {
				t.Errorf("print:\n%s\nwant\n%s", out.String(), want)
			}
			for _, fam := range []intercept.Family{intercept.IPv4, intercept.IPv6} {
				out.Reset()
				args := append([]string{"print", "--family", fmt.Sprint(int(fam))}, tt.args...)
				if code := iptablesMain(args, &out, &errb, envMap(tt.env)); code != 0 || out.String() != intercept.Rules(tt.want, fam) {
					t.Errorf("print --family %d: code %d\n%s", fam, code, out.String())
				}
			}
		})
	}
}

func TestIptablesErrors(t *testing.T) {
	tests := []struct {
		args []string
		env  map[string]string
		want []string
	}{
		{nil, nil, []string{"usage: meshd iptables print|apply|clean"}},
		{[]string{"flush"}, nil, []string{`unknown action "flush"`}},
		{[]string{"print", "extra"}, nil, []string{`unexpected argument "extra"`}},
		{[]string{"print"}, map[string]string{"APPMESH_APP_PORTS": "http"}, []string{`--app-ports="http" (env APPMESH_APP_PORTS)`, "not a number"}},
		{[]string{"print", "--proxy-egress-port", "99999"}, nil, []string{`--proxy-egress-port="99999" (flag)`}},
		{[]string{"print"}, map[string]string{"APPMESH_EGRESS_IGNORED_IP": "10.0.0.300"}, []string{`--egress-ignored-ips="10.0.0.300" (env APPMESH_EGRESS_IGNORED_IP)`}},
		{[]string{"print"}, map[string]string{"APPMESH_IGNORE_UID": "envoy"}, []string{`--ignored-uid="envoy" (env APPMESH_IGNORE_UID)`}},
		{[]string{"print", "--ignore-ssh", "maybe"}, nil, []string{`--ignore-ssh="maybe" (flag): want true or false`}},
		{[]string{"print", "--backend", "iptables"}, nil, []string{`--backend="iptables"`}},
		{[]string{"print", "--ipv6", "sometimes"}, nil, []string{`--ipv6="sometimes"`}},
		{[]string{"print", "--family", "5"}, nil, []string{`--family="5"`}},
		{[]string{"print", "--ignored-uid", ""}, nil, []string{"--ignored-uid (env APPMESH_IGNORE_UID): IgnoredUIDs: at least one"}},
		{[]string{"print", "--app-ports", "15001"}, nil, []string{"--app-ports (env APPMESH_APP_PORTS): AppPorts[0]: 15001 is one of meshd's own ports"}},
	}
	for _, tt := range tests {
		var out, errb bytes.Buffer
		code := iptablesMain(tt.args, &out, &errb, envMap(tt.env))
		if code != 2 {
			t.Errorf("%v %v: code %d, want 2", tt.args, tt.env, code)
		}
		for _, w := range tt.want {
			if !strings.Contains(errb.String(), w) {
				t.Errorf("%v %v: stderr %q lacks %q", tt.args, tt.env, errb.String(), w)
			}
		}
	}
}

// TestIptablesApplyCleanInNetns runs the command end to end against the real iptables
// binaries inside a network namespace it creates. Root only; the namespace-level
// behaviour (interception, foreign rules) is tested in proxy/intercept.
func TestIptablesApplyCleanInNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("MESHD_REQUIRE_NETNS") != "" {
			t.Fatal("MESHD_REQUIRE_NETNS is set but the test is not running as root")
		}
		t.Skip("needs root to create a network namespace and install iptables rules")
	}
	ns := fmt.Sprintf("meshd-cmd-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	save := func() string {
		out, err := exec.Command("ip", "netns", "exec", ns, "iptables-save", "-t", "nat").CombinedOutput()
		if err != nil {
			t.Fatalf("iptables-save: %v %s", err, out)
		}
		return string(out)
	}
	env := envMap(map[string]string{"APPMESH_APP_PORTS": "8080", "MESHD_NETNS": ns})
	for range 2 {
		var out, errb bytes.Buffer
		if code := iptablesMain([]string{"apply", "--ipv6", "on"}, &out, &errb, env); code != 0 {
			t.Fatalf("apply: code %d: %s", code, errb.String())
		}
		if !strings.Contains(errb.String(), "interception rules applied") {
			t.Errorf("apply logged %q", errb.String())
		}
	}
	if d := save(); strings.Count(d, "-j MESHD_EGRESS") != 1 || !strings.Contains(d, "--dports 8080 -j REDIRECT --to-ports 15000") {
		t.Errorf("after two applies:\n%s", d)
	}
	var out, errb bytes.Buffer
	if code := iptablesMain([]string{"clean", "--netns", ns}, &out, &errb, envMap(nil)); code != 0 {
		t.Fatalf("clean: code %d: %s", code, errb.String())
	}
	if d := save(); strings.Contains(d, "MESHD") {
		t.Errorf("after clean:\n%s", d)
	}
}
