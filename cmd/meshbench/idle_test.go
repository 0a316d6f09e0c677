package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/bench"
)

// TestIdleConnsFlag: --idle-conns makes the plan the idle measurement (meshd and
// haproxy by default, or the --scenarios given), with --idle-settle; the flags of the
// load comparison it replaces are refused, naming them, as are other scenarios and a
// settle without it.
func TestIdleConnsFlag(t *testing.T) {
	var stderr bytes.Buffer
	plan, _, err := parsePlan([]string{"--idle-conns", "10000", "--idle-settle", "8s", "--timeout", "3s"}, &stderr)
	if err != nil {
		t.Fatalf("%v (%s)", err, stderr.String())
	}
	ip := plan.Idle
	if ip == nil || ip.Conns != 10000 || ip.Settle != 8*time.Second || ip.Timeout != 3*time.Second ||
		!slices.Equal(ip.Scenarios, []string{bench.ScenarioMeshd, bench.ScenarioHAProxy}) {
		t.Fatalf("idle plan %+v", ip)
	}
	plan, _, err = parsePlan([]string{"--idle-conns", "5", "--scenarios", "meshd", "--meshd", "/bin/true"}, &stderr)
	if err != nil || plan.Idle == nil || !slices.Equal(plan.Idle.Scenarios, []string{"meshd"}) || plan.Idle.Meshd != "/bin/true" {
		t.Fatalf("--scenarios meshd: %+v, %v", plan.Idle, err)
	}
	if plan, _, err := parsePlan(nil, &stderr); err != nil || plan.Idle != nil {
		t.Fatalf("no --idle-conns: idle plan %+v, %v", plan.Idle, err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--idle-conns", "100", "--rate", "500"}, "--rate 500: shapes the load comparison"},
		{[]string{"--idle-conns", "100", "--proto", "h2c"}, "--proto h2c"},
		{[]string{"--idle-conns", "100", "--target", "http://127.0.0.1:1/"}, "--target"},
		{[]string{"--idle-conns", "100", "--scenarios", "meshd,envoy"}, "--scenarios envoy"},
		{[]string{"--idle-conns", "-3"}, "--idle-conns -3: want > 0"},
		{[]string{"--idle-settle", "3s"}, "--idle-settle 3s: applies to --idle-conns"},
	} {
		_, _, err := parsePlan(c.args, &stderr)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error with %q", c.args, err, c.want)
		}
	}
}
