package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// markWriter collects a process's output and closes seen once it contains mark, so
// a test waits for a line without polling.
type markWriter struct {
	mu   sync.Mutex
	b    bytes.Buffer
	mark string
	seen chan struct{}
	done bool
}

func newMarkWriter(mark string) *markWriter {
	return &markWriter{mark: mark, seen: make(chan struct{})}
}

func (w *markWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.b.Write(p)
	if !w.done && strings.Contains(w.b.String(), w.mark) {
		w.done = true
		close(w.seen)
	}
	return n, err
}

func (w *markWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestDemoBinary runs `meshd demo` as a process: it prints the curl commands for its
// ports, answers the header canary from backend-v2 only, splits the rest about 90/10,
// answers unknown hosts 404 (DROP_ALL) and exits 0 on SIGINT.
func TestDemoBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the meshd binary; skipped with -short")
	}
	bin := meshdBinary(t)
	egress, ingress, admin := freePort(t), freePort(t), freePort(t)
	eg := fmt.Sprintf("127.0.0.1:%d", egress)
	in := fmt.Sprintf("127.0.0.1:%d", ingress)
	ad := fmt.Sprintf("127.0.0.1:%d", admin)
	cmd := exec.Command(bin, "demo", "--egress-port", fmt.Sprint(egress), "--ingress-port", fmt.Sprint(ingress),
		"--ingress-bind", "127.0.0.1", "--admin-addr", ad)
	stdout := newMarkWriter("Ctrl-C stops it.")
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = stdout, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("meshd demo stdout:\n%s\nlogs:\n%s", stdout.String(), logs.String())
		}
	})

	waitReady(t, "http://"+ad+"/ready")
	select {
	case <-stdout.seen:
	case err := <-exited:
		stopped = true
		t.Fatalf("meshd demo exited early: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("meshd demo printed no help within 10s of /ready")
	}
	help := stdout.String()
	for _, want := range []string{
		"curl -s -H 'Host: backend.shop.local' http://" + eg + "/hello",
		"curl -s -x http://" + eg + " http://backend.shop.local/hello",
		"curl -s -H 'Host: backend.shop.local' -H 'x-canary: 1' http://" + eg + "/hello",
		"curl -s http://" + in + "/hello",
		"curl -s -H 'Host: elsewhere.example' http://" + eg + "/",
		"curl -s http://" + ad + "/clusters",
		"curl -s http://" + ad + "/server_info",
	} {
		if !strings.Contains(help, want) {
			t.Errorf("demo help lacks %q", want)
		}
	}

	tr := &http.Transport{MaxIdleConnsPerHost: 4}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	get := func(url, host string, hdr ...string) (int, http.Header, string) {
		t.Helper()
		req, err := http.NewRequest("GET", url, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s (Host %s): %v", url, host, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("GET %s (Host %s): body: %v", url, host, err)
		}
		return resp.StatusCode, resp.Header, string(b)
	}
	answeredBy := func(body string) string { name, _, _ := strings.Cut(body, " "); return name }

	for i := range 20 {
		code, _, body := get("http://"+eg+"/hello", "backend.shop.local", "x-canary", "1")
		if code != 200 || answeredBy(body) != "backend-v2" {
			t.Fatalf("canary request %d: %d %q, want 200 from backend-v2", i, code, body)
		}
	}

	const n = 400
	counts := map[string]int{}
	for range n {
		code, _, body := get("http://"+eg+"/", "backend.shop.local")
		if code != 200 {
			t.Fatalf("split request: %d %q", code, body)
		}
		counts[answeredBy(body)]++
	}
	if counts["backend-v1"]+counts["backend-v2"] != n {
		t.Fatalf("split answered by %v, want only backend-v1 and backend-v2", counts)
	}
	t.Logf("split over %d requests: %v", n, counts)
	// Weight 10 of 100: 40 expected, sd 6; the band is wide enough never to flake.
	if share := float64(counts["backend-v2"]) / n; share < 0.04 || share > 0.18 {
		t.Errorf("backend-v2 share %.3f over %d requests (%v), want within [0.04, 0.18]", share, n, counts)
	}

	if code, _, body := get("http://"+in+"/hello", in); code != 200 || answeredBy(body) != "frontend" {
		t.Errorf("ingress: %d %q, want 200 from the frontend app", code, body)
	}

	code, hdr, body := get("http://"+eg+"/", "elsewhere.example")
	if code != http.StatusNotFound || hdr.Get("x-meshd-error") == "" {
		t.Errorf("unknown host under DROP_ALL: %d, x-meshd-error %q, body %q; want 404 with x-meshd-error", code, hdr.Get("x-meshd-error"), body)
	}
	tr.CloseIdleConnections()

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Fatalf("meshd demo exited with %v after SIGINT", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("meshd demo did not exit within 30s of SIGINT")
	}
	if l := logs.String(); !strings.Contains(l, "stopped") {
		t.Errorf("demo logs lack the drain: %s", l)
	}
}

// TestDemoAppErrorRate: the demo's --v2-error-rate makes that share of the app's answers
// 500s, spread evenly (the canary walkthrough's failing version).
func TestDemoAppErrorRate(t *testing.T) {
	ln, srv, err := startApp("backend-v2", 0.5)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	failed := 0
	for i := 0; i < 20; i++ {
		resp, err := http.Get("http://" + ln.Addr().String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusInternalServerError {
			failed++
		}
	}
	if failed != 10 {
		t.Fatalf("%d of 20 answers failed, want 10", failed)
	}
	var stderr strings.Builder
	if code := run([]string{"demo", "--v2-error-rate", "2"}, io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), "--v2-error-rate 2") {
		t.Fatalf("demo --v2-error-rate 2 = %d: %s", code, stderr.String())
	}
}
