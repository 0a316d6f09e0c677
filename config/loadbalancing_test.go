package config

import (
	"errors"
	"strings"
	"testing"
)

// TestValidateLoadBalancing: each bad hash or slowStart value is reported at its field
// path with the value; good shapes pass.
func TestValidateLoadBalancing(t *testing.T) {
	const p = "virtualNodes[1].spec.loadBalancing"
	f := func(v float64) *float64 { return &v }
	bad := []struct {
		name  string
		lb    LoadBalancing
		path  string
		value string
		msg   string
	}{
		{"ring without hash", LoadBalancing{Policy: LBRingHash}, p + ".hash", "", "is required with policy RING_HASH"},
		{"hash with round robin", LoadBalancing{Policy: LBRoundRobin, Hash: &LBHash{SourceIP: true}}, p + ".hash", "set", "only to policy RING_HASH or MAGLEV"},
		{"hash with default", LoadBalancing{Hash: &LBHash{SourceIP: true}}, p + ".hash", "set", "not LEAST_REQUEST"},
		{"two keys", LoadBalancing{Policy: LBMaglev, Hash: &LBHash{Header: "x-user", SourceIP: true}}, p + ".hash", "", "exactly one of"},
		{"no key", LoadBalancing{Policy: LBMaglev, Hash: &LBHash{}}, p + ".hash", "", "exactly one of"},
		{"bad header", LoadBalancing{Policy: LBRingHash, Hash: &LBHash{Header: "x user"}}, p + ".hash.header", "x user", "not a valid header name"},
		{"bad cookie name", LoadBalancing{Policy: LBRingHash, Hash: &LBHash{Cookie: &LBHashCookie{Name: "a=b"}}}, p + ".hash.cookie.name", "a=b", "not a valid cookie name"},
		{"empty cookie name", LoadBalancing{Policy: LBRingHash, Hash: &LBHash{Cookie: &LBHashCookie{}}}, p + ".hash.cookie.name", "", "not a valid cookie name"},
		{"cookie path", LoadBalancing{Policy: LBRingHash, Hash: &LBHash{Cookie: &LBHashCookie{Name: "s", Path: "shop"}}}, p + ".hash.cookie.path", "shop", "must start with /"},
		{"cookie samesite", LoadBalancing{Policy: LBRingHash, Hash: &LBHash{Cookie: &LBHashCookie{Name: "s", SameSite: "strict"}}}, p + ".hash.cookie.sameSite", "strict", "one of"},
		{"cookie samesite none", LoadBalancing{Policy: LBRingHash, Hash: &LBHash{Cookie: &LBHashCookie{Name: "s", SameSite: "None"}}}, p + ".hash.cookie.sameSite", "None", "needs secure"},
		{"cookie ttl", LoadBalancing{Policy: LBRingHash, Hash: &LBHash{Cookie: &LBHashCookie{Name: "s", TTL: &Duration{Unit: "s", Value: -1}}}}, p + ".hash.cookie.ttl.value", "-1", "negative"},
		{"header on tcp", LoadBalancing{Policy: LBRingHash, Hash: &LBHash{Header: "x-user"}}, p + ".hash", "header/cookie", "is tcp"},
		{"slow start with hash", LoadBalancing{Policy: LBMaglev, Hash: &LBHash{SourceIP: true}, SlowStart: &LBSlowStart{Window: &Duration{Unit: "s", Value: 30}}}, p + ".slowStart", "set", "does not apply to policy MAGLEV"},
		{"slow start no window", LoadBalancing{SlowStart: &LBSlowStart{}}, p + ".slowStart.window", "", "is required"},
		{"slow start zero window", LoadBalancing{SlowStart: &LBSlowStart{Window: &Duration{Unit: "s"}}}, p + ".slowStart.window.value", "0", "must be positive"},
		{"aggression", LoadBalancing{SlowStart: &LBSlowStart{Window: &Duration{Unit: "s", Value: 1}, Aggression: f(0)}}, p + ".slowStart.aggression", "0", "> 0"},
		{"min weight", LoadBalancing{SlowStart: &LBSlowStart{Window: &Duration{Unit: "s", Value: 1}, MinWeightPercent: ptr(0)}}, p + ".slowStart.minWeightPercent", "0", "1..100"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			c := shop(t)
			lb := tt.lb
			c.VirtualNodes[1].Spec.LoadBalancing = &lb
			if tt.name == "header on tcp" {
				c.VirtualNodes[1].Spec.Listeners[0].PortMapping.Protocol = ProtoTCP
			}
			var errs *Errors
			if err := c.Validate(); !errors.As(err, &errs) {
				t.Fatalf("Validate = %v, want *Errors", err)
			}
			for _, fe := range errs.List {
				if fe.Path == tt.path && fe.Value == tt.value && strings.Contains(fe.Msg, tt.msg) {
					return
				}
			}
			t.Fatalf("no error at %s with value %q and %q; got:\n%v", tt.path, tt.value, tt.msg, errs)
		})
	}
	for _, lb := range []LoadBalancing{
		{Policy: LBRingHash, Hash: &LBHash{Header: "x-user"}},
		{Policy: LBMaglev, Hash: &LBHash{SourceIP: true}},
		{Policy: LBRingHash, Hash: &LBHash{Cookie: &LBHashCookie{Name: "meshd-affinity", Path: "/shop", TTL: &Duration{Unit: "s", Value: 3600}}}},
		{Policy: LBRoundRobin, SlowStart: &LBSlowStart{Window: &Duration{Unit: "s", Value: 30}, Aggression: f(2), MinWeightPercent: ptr(5)}},
		{SlowStart: &LBSlowStart{Window: &Duration{Unit: "ms", Value: 500}}},
	} {
		c := shop(t)
		c.VirtualNodes[1].Spec.LoadBalancing = &lb
		if err := c.Validate(); err != nil {
			t.Errorf("%+v: %v", lb, err)
		}
	}
}
