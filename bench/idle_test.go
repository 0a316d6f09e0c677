package bench

import (
	"bytes"
	"context"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// serveFixed answers every request on ln with resp until the test ends; close, when
// set, closes each connection after its first answer.
func serveFixed(t *testing.T, resp string, closeAfterOne bool) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			go func() {
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if bytes.Contains(buf[:n], []byte("\r\n\r\n")) {
						if _, err := io.WriteString(c, resp); err != nil || closeAfterOne {
							c.Close()
							return
						}
					}
				}
			}()
		}
	}()
	return ln
}

// TestOpenIdleAndCheck: clients opened through a real upstream stay open and are all
// answered again; an answer other than 200 fails the opening, naming it; a server that
// closed the idle connections fails every second request, counted.
func TestOpenIdleAndCheck(t *testing.T) {
	ctx := context.Background()
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	uctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ServeUpstream(uctx, up, UpstreamConfig{BodySize: 63}) }()
	defer func() { cancel(); <-done }()

	const n = 100 // more than idleDialers: the workers take several each
	ic, err := OpenIdle(ctx, up.Addr().String(), "up", n, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer ic.Close()
	if ic.Len() != n {
		t.Fatalf("%d connections, want %d", ic.Len(), n)
	}
	ok, failed, err := ic.Check(ctx, "up", 5*time.Second)
	if ok != n || failed != 0 || err != nil {
		t.Fatalf("second requests: %d ok, %d failed (%v), want %d ok", ok, failed, err, n)
	}

	notFound := serveFixed(t, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", false)
	if _, err := OpenIdle(ctx, notFound.Addr().String(), "x", 3, 5*time.Second); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("opening against a 404 server: %v, want an error naming the answer", err)
	}

	once := serveFixed(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true)
	ic2, err := OpenIdle(ctx, once.Addr().String(), "x", 5, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer ic2.Close()
	ok, failed, err = ic2.Check(ctx, "x", 5*time.Second)
	if ok != 0 || failed != 5 || err == nil {
		t.Fatalf("second requests on closed connections: %d ok, %d failed (%v), want 5 failed with the first error", ok, failed, err)
	}
}

func TestIdleFigures(t *testing.T) {
	if err := CheckIdleConns(0, 20000); err == nil || !strings.Contains(err.Error(), "--idle-conns 0") {
		t.Errorf("0 connections: %v", err)
	}
	if err := CheckIdleConns(10000, 10000); err == nil || !strings.Contains(err.Error(), "RLIMIT_NOFILE is 10000") {
		t.Errorf("10,000 connections under a 10,000 fd limit: %v", err)
	}
	if err := CheckIdleConns(10000, 20000); err != nil {
		t.Errorf("10,000 connections under 20,000: %v", err)
	}
	if got := perConnKiB(10<<20, 10<<20+10000*4096, 10000); got != 4 {
		t.Errorf("per connection %v KiB, want 4", got)
	}
	if got := perConnKiB(20<<20, 10<<20, 100); got != 0 {
		t.Errorf("RSS that fell: %v KiB per connection, want 0", got)
	}
	var b bytes.Buffer
	if err := WriteIdleTable(&b, []IdleResult{
		{Scenario: ScenarioMeshd, Conns: 10000, RSSStart: 20 << 20, RSSIdle: 54 << 20, PerConnKiB: 3.5, Answered: 9999, Failed: 1, Err: "connection 7: EOF"},
		{Scenario: ScenarioHAProxy, Skipped: "haproxy not found on PATH"},
	}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"meshd", "20.0 MiB", "54.0 MiB", "3.5 KiB", "9999/10000", "first failure: connection 7: EOF", "haproxy    skipped: haproxy not found on PATH"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

// TestIdleHAProxyConfig: room for the clients, the fd limit given, and haproxy (when
// installed) accepts the configuration.
func TestIdleHAProxyConfig(t *testing.T) {
	cfg := idleHAProxyConfig(12345, "127.0.0.1:8080", 10000, 20000)
	for _, want := range []string{"maxconn 10256", "ulimit-n 20000", "no strict-limits", "bind 127.0.0.1:12345", "server up 127.0.0.1:8080"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skip("haproxy not on PATH")
	}
	path, err := writeFile(t.TempDir(), "haproxy.cfg", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateHAProxy(context.Background(), bin, path); err != nil {
		t.Fatalf("haproxy -c: %v", err)
	}
}

// TestRunIdleMeshd: the whole measurement against a real meshd with a few clients.
func TestRunIdleMeshd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs meshd")
	}
	meshd, why := buildMeshd(t)
	if meshd == "" {
		t.Skip(why)
	}
	sp := selfPlan(t)
	var progress bytes.Buffer
	rs, err := RunIdle(context.Background(), IdlePlan{Conns: 50, Self: sp.Self, SelfEnv: sp.SelfEnv, Meshd: meshd,
		Scenarios: []string{ScenarioMeshd}, Settle: 1500 * time.Millisecond, Timeout: 10 * time.Second, WorkDir: t.TempDir(), Progress: &progress})
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	if len(rs) != 1 {
		t.Fatalf("results %+v", rs)
	}
	r := rs[0]
	if r.Answered != 50 || r.Failed != 0 || r.Err != "" || r.RSSStart == 0 || r.RSSIdle == 0 {
		t.Fatalf("result %+v, want 50 answered and both RSS readings", r)
	}
	if !strings.Contains(progress.String(), "opening 50 idle keep-alive connections") {
		t.Errorf("progress:\n%s", progress.String())
	}
	if _, err := RunIdle(context.Background(), IdlePlan{Conns: 5, Self: sp.Self, SelfEnv: sp.SelfEnv, Meshd: meshd,
		Scenarios: []string{ScenarioEnvoy}, WorkDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "measures meshd and haproxy") {
		t.Errorf("an envoy scenario: %v", err)
	}
}
