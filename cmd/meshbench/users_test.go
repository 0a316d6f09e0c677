package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/meshd/meshd/bench"
)

func TestTargetFlags(t *testing.T) {
	plan, _, err := parsePlan([]string{"--target", "http://a:1/x", "--label", "meshd", "--target-pid", "7", "--baseline", "http://a:2/x", "--host", "svc"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Targets) != 1 || plan.Targets[0].Label != "meshd" || plan.Targets[0].PID != 7 || plan.Targets[0].Host != "svc" || plan.Baseline != "http://a:2/x" {
		t.Errorf("plan: targets %+v baseline %q", plan.Targets, plan.Baseline)
	}
	plan, _, err = parsePlan([]string{"--target", "http://a:1/,label=meshd,cmd=/bin/meshd run -c m.yaml", "--target", "http://a:3/,label=envoy,pid=9,host=h",
		"--target-cmd", "", "--host", "svc"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Targets) != 2 || strings.Join(plan.Targets[0].Cmd, " ") != "/bin/meshd run -c m.yaml" || plan.Targets[0].Host != "svc" ||
		plan.Targets[1].Label != "envoy" || plan.Targets[1].PID != 9 || plan.Targets[1].Host != "h" {
		t.Errorf("targets %+v", plan.Targets)
	}
	plan, _, err = parsePlan([]string{"--target", "http://a:1/", "--target-cmd", "srv --port 1"}, io.Discard)
	if err != nil || strings.Join(plan.Targets[0].Cmd, "|") != "srv|--port|1" {
		t.Errorf("--target-cmd: %+v, %v", plan.Targets, err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--label", "x"}, "--label x: applies to a --target; there is none"},
		{[]string{"--target-pid", "3"}, "--target-pid 3: applies to a --target"},
		{[]string{"--target", "http://a/", "--target", "http://b/", "--label", "x"}, "--label x: with 2 targets it is ambiguous"},
		{[]string{"--target", "http://a/", "--target-pid", "3", "--target-cmd", "x"}, "give one"},
		{[]string{"--target", "http://a/,pid=zz"}, `pid="zz"`},
		{[]string{"--baseline", "http://a/"}, "there is no --target"},
		{[]string{"--host", "h"}, "there is none"},
		{[]string{"--target", "http://a/", "--tls"}, "drop one of them"},
		{[]string{"--target", "http://a/", "--scenarios", "meshd"}, "--scenarios meshd: shapes the built-in scenarios"},
		{[]string{"--target", "http://a/", "--resp-body", "10"}, "--resp-body 10: shapes"},
		{[]string{"--target", "http://a/", "--cpus", "0:1:1"}, "no built-in upstream to pin"},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), c.args, &out, &errb); code != 2 || !strings.Contains(errb.String(), c.want) {
			t.Errorf("run(%q) = %d, stderr %q; want 2 and %q", c.args, code, errb.String(), c.want)
		}
	}
}

func TestRequestFlags(t *testing.T) {
	plan, _, err := parsePlan([]string{"--target", "https://a/", "-H", "X-A: 1", "-H", "X-B:2", "--method", "PUT", "--cacert", "ca.pem"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Headers) != 2 || plan.Headers[1].Name != "X-B" || plan.Headers[1].Value != "2" || plan.Method != "PUT" || plan.CACert != "ca.pem" {
		t.Errorf("plan: headers %+v method %q cacert %q", plan.Headers, plan.Method, plan.CACert)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-H", "nocolon"}, "want 'Name: value'"},
		{[]string{"-H", "Host: x"}, "--host"},
		{[]string{"--method", "A B"}, "not an HTTP method token"},
		{[]string{"--insecure"}, "applies to https targets"},
		{[]string{"--target", "http://a/", "--cacert", "x.pem"}, "applies to https targets"},
		{[]string{"--proto", "grpc", "-H", "X: y"}, "--proto grpc"},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), c.args, &out, &errb); code != 2 || !strings.Contains(errb.String(), c.want) {
			t.Errorf("run(%q) = %d, stderr %q; want 2 and %q", c.args, code, errb.String(), c.want)
		}
	}
}

func TestCompareSubcommand(t *testing.T) {
	dir := t.TempDir()
	var paths []string
	for i, qps := range []float64{1000, 1250} {
		rep := &bench.Report{Harness: "meshbench", Results: []*bench.PhaseResult{{Scenario: "meshd", Phase: "max", ActualQPS: qps, P50US: 100, P99US: 300, Requests: 10}}}
		p := filepath.Join(dir, strconv.Itoa(i)+".json")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := bench.WriteJSON(f, rep); err != nil {
			t.Fatal(err)
		}
		f.Close()
		paths = append(paths, p)
	}
	out := filepath.Join(dir, "cmp")
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), append([]string{"compare", "--out", out}, paths...), &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if s := strings.Join(strings.Fields(stdout.String()), " "); !strings.Contains(s, "meshd max req/s 1000 1250 1.25 +250") {
		t.Errorf("stdout:\n%s", stdout.String())
	}
	for _, f := range []string{"compare.md", "compare.svg", "compare.png"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}
	stderr.Reset()
	if code := run(context.Background(), []string{"compare", paths[0]}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "want two or more") {
		t.Errorf("one report: exit %d, %s", code, stderr.String())
	}
	stderr.Reset()
	if code := run(context.Background(), []string{"compare", paths[0], filepath.Join(dir, "missing.json")}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "missing.json") {
		t.Errorf("missing report: exit %d, %s", code, stderr.String())
	}
}
