package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

// fdMeshd is a meshd process run under an fd limit (prlimit) for a test.
type fdMeshd struct {
	logs   *syncBuffer
	admin  string // http://127.0.0.1:port
	egress string
	exited chan struct{}
}

func startFDLimited(t *testing.T, nofile int, cfg string, args ...string) *fdMeshd {
	t.Helper()
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skip("prlimit (util-linux) not found")
	}
	bin := meshdBinary(t)
	egress, ingress, admin := freePort(t), freePort(t), freePort(t)
	p := &fdMeshd{logs: &syncBuffer{}, admin: fmt.Sprintf("http://127.0.0.1:%d", admin),
		egress: fmt.Sprintf("127.0.0.1:%d", egress), exited: make(chan struct{})}
	args = append([]string{fmt.Sprintf("--nofile=%d:%d", nofile, nofile), bin, "run", "-c", cfg, "--node", "client",
		"--egress-port", fmt.Sprint(egress), "--ingress-port", fmt.Sprint(ingress), "--ingress-bind", "127.0.0.1",
		"--admin-addr", fmt.Sprintf("127.0.0.1:%d", admin), "--drain-grace", "0", "--drain-timeout", "2s"}, args...)
	cmd := exec.Command(prlimit, args...)
	cmd.Env = os.Environ()
	cmd.Stderr = p.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("meshd logs:\n%s", p.logs.String())
		}
	})
	waitReady(t, p.admin+"/ready")
	return p
}

// stats reads the /stats text lines as numbers.
func (p *fdMeshd) stats(t *testing.T) map[string]int64 {
	t.Helper()
	resp, err := noKeepAlive.Get(p.admin + "/stats")
	if err != nil {
		t.Fatalf("/stats: %v", err)
	}
	defer resp.Body.Close()
	out := map[string]int64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ": ")
		if n, err := strconv.ParseInt(v, 10, 64); ok && err == nil {
			out[k] = n
		}
	}
	return out
}

// noKeepAlive makes each admin request a new connection: the admin listener must
// accept while the process is out of descriptors.
var noKeepAlive = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// readyWatch polls /ready on new connections until stop, counting the answers that
// were not 200 (errors included).
func (p *fdMeshd) readyWatch() (stop func() (ok, bad int64)) {
	var good, bad atomic.Int64
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		for {
			resp, err := noKeepAlive.Get(p.admin + "/ready")
			if err == nil && resp.StatusCode == 200 {
				good.Add(1)
			} else {
				bad.Add(1)
			}
			if err == nil {
				resp.Body.Close()
			}
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond): // polling another process
			}
		}
	}()
	return func() (int64, int64) { close(done); <-finished; return good.Load(), bad.Load() }
}

// keepAliveClient is an HTTP/1.1 client connection that sent one request and idles.
type keepAliveClient struct {
	c  net.Conn
	br *bufio.Reader
}

// get sends one request on a new connection and returns the client with its status (0:
// the connection failed or was closed without an answer).
func getKeepAlive(addr string) (*keepAliveClient, int) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, 0
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	cl := &keepAliveClient{c: c, br: bufio.NewReader(c)}
	if _, err := io.WriteString(c, "GET /x HTTP/1.1\r\nHost: app.local\r\n\r\n"); err != nil {
		return cl, 0
	}
	resp, err := http.ReadResponse(cl.br, &http.Request{Method: "GET"})
	if err != nil {
		return cl, 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return cl, resp.StatusCode
}

// TestFDLimitBinary runs meshd under a low fd limit (prlimit --nofile=256) and opens
// more idle keep-alive clients than fit, as 10,000 idle clients did to a default meshd:
// meshd must not die, /ready must answer 200 throughout (a failed health check kills
// the task), a new client must be served once idle ones are shed, the sheds must be
// counted, and stderr must not fill with accept errors.
func TestFDLimitBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the meshd binary; skipped with -short")
	}
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	cfg := filepath.Join(t.TempDir(), "mesh.yaml")
	writeFile(t, cfg, reloadCfg(up.Port))
	const nofile, clients = 256, 400

	run := func(t *testing.T, p *fdMeshd) map[string]int64 {
		stop := p.readyWatch()
		var open []*keepAliveClient
		defer func() {
			for _, cl := range open {
				_ = cl.c.Close()
			}
		}()
		served, tried := 0, 0
		end := time.Now().Add(60 * time.Second) // bounded: a stuck meshd fails, not hangs, the test
		for ; tried < clients && time.Now().Before(end); tried++ {
			cl, status := getKeepAlive(p.egress)
			if cl != nil {
				open = append(open, cl)
			}
			if status == 200 {
				served++
			}
		}
		// A new client, with every earlier one still connected (idle, or shed and closed
		// by meshd): served in the room of an idle one.
		cl, status := getKeepAlive(p.egress)
		if cl != nil {
			open = append(open, cl)
		}
		good, bad := stop()
		select {
		case <-p.exited:
			t.Fatalf("meshd exited under the fd limit")
		default:
		}
		if status != 200 {
			t.Errorf("a new client after %d idle ones got %d, want 200", clients, status)
		}
		if bad != 0 || good == 0 {
			t.Errorf("/ready: %d answers 200, %d not, want every one 200", good, bad)
		}
		t.Logf("%d of %d clients served (%d tried); /ready answered 200 %d times", served, clients, tried, good)
		if served < clients/2 {
			t.Errorf("only %d of %d clients were served", served, clients)
		}
		st := p.stats(t)
		if n := strings.Count(p.logs.String(), "accept failed"); n > 10 {
			t.Errorf("%d accept failure lines on stderr, want them rate-limited", n)
		}
		return st
	}

	t.Run("default connection bound", func(t *testing.T) {
		// (256 - 64) / 2 = 96 connections: the bound is met long before the fd limit; new
		// clients take the room of idle keep-alive ones.
		p := startFDLimited(t, nofile, cfg)
		st := run(t, p)
		if st["server.downstream_cx_max"] != 96 {
			t.Errorf("server.downstream_cx_max %d, want (256-64)/2 = 96", st["server.downstream_cx_max"])
		}
		if st["listener.egress.downstream_cx_idle_shed"] == 0 {
			t.Errorf("no idle connection shed: %v", st)
		}
		if st["listener.egress.downstream_cx_active"] > 96 {
			t.Errorf("%d egress connections open, over the bound 96", st["listener.egress.downstream_cx_active"])
		}
	})

	t.Run("no connection bound: out of fds", func(t *testing.T) {
		// No bound: accept runs out of descriptors; meshd sheds idle connections and
		// backs off instead of spinning, and the admin listener uses its reserve.
		p := startFDLimited(t, nofile, cfg, "--max-connections", "-1")
		if !strings.Contains(p.logs.String(), "--max-connections is above what the fd limit can back") {
			t.Errorf("no warning about --max-connections -1 under an fd limit")
		}
		st := run(t, p)
		if st["listener.egress.downstream_cx_fd_exhausted"] == 0 || st["listener.egress.downstream_cx_idle_shed"] == 0 {
			t.Errorf("fd exhaustion not shed and counted: %v", st)
		}
	})
}
