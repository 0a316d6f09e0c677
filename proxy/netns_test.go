//go:build linux

package proxy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
	"github.com/meshd/meshd/proxy/intercept"

	"github.com/meshd/meshd/internal/netnstest"
)

// These tests run meshd behind real iptables rules in network namespaces they create:
// the app namespace holds the app, meshd (a child process running as the ignored UID
// 1337, as in production) and the rules; the peer namespace holds the upstreams. They
// need root; CI sets MESHD_REQUIRE_NETNS=1 so that a missing prerequisite fails.

const (
	childEnv       = "MESHD_NETNS_CHILD_CONFIG"
	meshdUID       = intercept.DefaultIgnoredUID
	netnsAppPort   = 8080
	netnsWebPort   = 80
	netnsDBPort    = 5000
	netnsAdminAddr = "127.0.0.1:9901"
)

// TestNetnsMeshdChild is meshd itself when the parent test re-executes the test binary
// inside the app namespace; otherwise it does nothing. It drops to UID/GID 1337 (every
// thread), serves until its standard input closes, then drains.
func TestNetnsMeshdChild(t *testing.T) {
	yaml := os.Getenv(childEnv)
	if yaml == "" {
		t.Skip("runs only as the meshd child of the netns tests")
	}
	if err := syscall.Setgroups(nil); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setgid(meshdUID); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setuid(meshdUID); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := proxy.New(proxy.Options{Node: "app", IngressAddr: "0.0.0.0:15000", EgressAddr: "127.0.0.1:15001",
		AdminAddr: netnsAdminAddr, DrainTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Apply(context.Background(), cfg, "netns-test"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("READY egress6=%s\n", srv.EgressAddr6())
	_, _ = io.Copy(io.Discard, os.Stdin)
	_ = srv.Shutdown(context.Background())
}

const netnsMesh = `
mesh: {meshName: e2e, spec: {egressFilter: {type: DROP_ALL}}}
virtualNodes:
  - virtualNodeName: app
    spec:
      listeners: [{portMapping: {port: 8080, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["10.200.0.1:8080"]}}
      backends:
        - virtualService: {virtualServiceName: web.e2e.local}
        - virtualService: {virtualServiceName: db.e2e.local}
  - virtualNodeName: web
    spec:
      listeners: [{portMapping: {port: 80, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["10.200.0.2:80"]}}
  - virtualNodeName: db
    spec:
      listeners: [{portMapping: {port: 5000, protocol: tcp}}]
      serviceDiscovery: {static: {endpoints: ["10.200.0.2:5000"]}}
virtualServices:
  - virtualServiceName: web.e2e.local
    spec: {provider: {virtualNode: {virtualNodeName: web}}}
  - virtualServiceName: db.e2e.local
    spec: {provider: {virtualNode: {virtualNodeName: db}}}
`

// startNetnsMeshd runs the child meshd in the app namespace and waits until it listens.
func startNetnsMeshd(t *testing.T, n *testutil.NetnsPair) (egress6 string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", n.App, exe, "-test.run=^TestNetnsMeshdChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+netnsMesh)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	var wg sync.WaitGroup
	ready := make(chan string, 1)
	wg.Go(func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			out.WriteString(line + "\n")
			if rest, ok := strings.CutPrefix(line, "READY egress6="); ok {
				ready <- rest
			}
		}
	})
	t.Cleanup(func() {
		_ = stdin.Close() // the child drains and exits
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("meshd child: %v\n%s%s", err, stderr.String(), out.String())
			}
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("meshd child did not exit")
		}
		wg.Wait()
	})
	select {
	case e6 := <-ready:
		return e6
	case <-time.After(30 * time.Second):
		t.Fatalf("meshd child not ready:\n%s", stderr.String())
	}
	return ""
}

// serveEchoIn serves HTTP in ns on addr, answering with the request headers as JSON.
func serveEchoIn(t *testing.T, ns, addr, name string) {
	t.Helper()
	ln := testutil.ListenIn(t, ns, "tcp", addr)
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(echoInfo{Name: name, Host: r.Host, Path: r.URL.Path, Header: r.Header})
	})}
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(ln) })
	t.Cleanup(func() { _ = srv.Close(); wg.Wait() })
}

// serveTCPEchoIn serves a line protocol in ns: "name\n", then an echo.
func serveTCPEchoIn(t *testing.T, ns, addr, name string) {
	t.Helper()
	ln := testutil.ListenIn(t, ns, "tcp", addr)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_, _ = io.WriteString(c, name+"\n")
				_, _ = io.Copy(c, c)
			})
		}
	})
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
}

// nsHTTP is an HTTP client whose connections are made in ns as uid/gid.
func nsHTTP(t *testing.T, ns string, uid, gid int) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return testutil.DialIn(ctx, ns, uid, gid, addr)
		},
		DisableKeepAlives: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func nsGetEcho(t *testing.T, c *http.Client, url, host string) echoInfo {
	t.Helper()
	req := newReq(t, "GET", url, nil)
	if host != "" {
		req.Host = host
	}
	return getEcho(t, c, req)
}

// nsTCPLine dials addr from ns as uid, reads the greeting line, and checks the echo.
func nsTCPLine(t *testing.T, ns string, uid int, addr string) string {
	t.Helper()
	c, err := testutil.DialIn(context.Background(), ns, uid, uid, addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, ns, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	greeting, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("%s: read greeting: %v", addr, err)
	}
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		t.Fatal(err)
	}
	if got, err := br.ReadString('\n'); err != nil || got != "ping\n" {
		t.Fatalf("%s: echo %q, %v", addr, got, err)
	}
	return strings.TrimSpace(greeting)
}

func nsClusters(t *testing.T, n *testutil.NetnsPair) clustersPage {
	t.Helper()
	resp, err := nsHTTP(t, n.App, 0, 0).Get("http://" + netnsAdminAddr + "/clusters")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var p clustersPage
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		t.Fatal(err)
	}
	return p
}

func natDump(t *testing.T, ns string) string {
	t.Helper()
	var b strings.Builder
	for _, bin := range []string{"iptables-save", "ip6tables-save"} {
		for line := range strings.Lines(netnstest.Sh(t, "ip", "netns", "exec", ns, bin, "-t", "nat")) {
			if !strings.HasPrefix(line, "#") {
				b.WriteString(line)
			}
		}
	}
	return b.String()
}

func TestNetnsTransparentInterception(t *testing.T) {
	n := testutil.NewNetnsPair(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	// Upstreams in the peer namespace; the app in the app namespace.
	serveEchoIn(t, n.Peer, "0.0.0.0:80", "web")
	serveTCPEchoIn(t, n.Peer, "0.0.0.0:5000", "db")
	serveEchoIn(t, n.App, "0.0.0.0:8080", "app")

	runner := intercept.Exec{Prefix: []string{"ip", "netns", "exec", n.App}}
	// A foreign rule that clean must keep.
	foreign := "*nat\n-A OUTPUT -d 10.9.9.9/32 -p tcp -j RETURN\nCOMMIT\n"
	if _, err := runner.Run(ctx, []byte(foreign), "iptables-restore", "--noflush"); err != nil {
		t.Fatal(err)
	}
	before := natDump(t, n.App)
	cfg := intercept.Defaults()
	cfg.AppPorts = []int{netnsAppPort}
	if err := intercept.Apply(ctx, runner, cfg, intercept.Options{IPv6: intercept.IPv6On}); err != nil {
		t.Fatal(err)
	}
	egress6 := startNetnsMeshd(t, n)

	app := nsHTTP(t, n.App, 0, 0)
	webURL := fmt.Sprintf("http://%s:%d/hello", testutil.NetnsPeerIP, netnsWebPort)
	t.Run("http by service IP goes through meshd", func(t *testing.T) {
		info := nsGetEcho(t, app, webURL, "")
		if info.Name != "web" || info.Header.Get("X-Request-Id") == "" {
			t.Errorf("got %+v, want web with meshd's x-request-id", info)
		}
	})
	t.Run("http by name goes through meshd", func(t *testing.T) {
		info := nsGetEcho(t, app, webURL, "web.e2e.local")
		if info.Name != "web" || info.Header.Get("X-Request-Id") == "" {
			t.Errorf("got %+v, want web with meshd's x-request-id", info)
		}
	})
	dbAddr := fmt.Sprintf("%s:%d", testutil.NetnsPeerIP, netnsDBPort)
	t.Run("raw tcp goes through meshd", func(t *testing.T) {
		if got := nsTCPLine(t, n.App, 0, dbAddr); got != "db" {
			t.Fatalf("greeting %q", got)
		}
		if got := nsTCPLine(t, n.App, 0, fmt.Sprintf("[%s]:%d", testutil.NetnsPeerIP6, netnsDBPort)); got != "db" {
			t.Fatalf("IPv6 greeting %q", got)
		}
		if egress6 == "" {
			t.Error("meshd has no IPv6 egress listener")
		}
		var v proxy.L4View
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if v = nsClusters(t, n).l4("db"); v.Accepted == 2 && v.Active == 0 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if v.Accepted != 2 || v.BytesSent < 10 || v.BytesReceived < 16 {
			t.Errorf("/clusters db l4 = %+v, want 2 connections with their bytes", v)
		}
	})
	t.Run("ignored uid goes direct", func(t *testing.T) {
		info := nsGetEcho(t, nsHTTP(t, n.App, meshdUID, meshdUID), webURL, "")
		if info.Name != "web" || info.Header.Get("X-Request-Id") != "" {
			t.Errorf("got %+v, want web reached directly (no x-request-id)", info)
		}
		before := nsClusters(t, n).l4("db").Accepted
		if got := nsTCPLine(t, n.App, meshdUID, dbAddr); got != "db" {
			t.Fatalf("greeting %q", got)
		}
		if after := nsClusters(t, n).l4("db").Accepted; after != before {
			t.Errorf("the ignored uid's tcp connection went through meshd (%d -> %d)", before, after)
		}
	})
	t.Run("inbound arrives through the ingress listener", func(t *testing.T) {
		peer := nsHTTP(t, n.Peer, 0, 0)
		info := nsGetEcho(t, peer, fmt.Sprintf("http://%s:%d/in", testutil.NetnsAppIP, netnsAppPort), "")
		if info.Name != "app" || info.Header.Get("X-Request-Id") == "" {
			t.Errorf("got %+v, want the app with meshd's x-request-id", info)
		}
	})
	t.Run("DROP_ALL closes unknown tcp destinations", func(t *testing.T) {
		serveTCPEchoIn(t, n.Peer, "0.0.0.0:6000", "stranger")
		c, err := testutil.DialIn(ctx, n.App, 0, 0, testutil.NetnsPeerIP+":6000")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if b, err := io.ReadAll(c); len(b) != 0 || err != nil {
			t.Fatalf("got %q, %v; want meshd to close", b, err)
		}
		if d := nsClusters(t, n).EgressL4.Dropped; d < 1 {
			t.Errorf("dropped = %d", d)
		}
	})

	if err := intercept.Clean(ctx, runner, intercept.Options{IPv6: intercept.IPv6On}); err != nil {
		t.Fatal(err)
	}
	after := natDump(t, n.App)
	if strings.Contains(after, "MESHD") || after != before {
		t.Errorf("clean left meshd rules or lost foreign ones:\n--- before\n%s--- after\n%s", before, after)
	}
	// With the rules gone the app reaches the upstream directly.
	if info := nsGetEcho(t, app, webURL, ""); info.Header.Get("X-Request-Id") != "" {
		t.Errorf("after clean the request still went through meshd: %+v", info)
	}
}
