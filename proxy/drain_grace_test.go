package proxy_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// TestShutdownDrainGrace: Shutdown follows Envoy's drain sequence. /ready fails at
// once, while for DrainGrace the listeners keep accepting and serving as usual (an app
// still calling out while it shuts down is not refused); when the grace ends (here:
// ctx, so the test needs no clock) the listeners close.
func TestShutdownDrainGrace(t *testing.T) {
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	srv, err := proxy.New(proxy.Options{Node: "app", IngressAddr: "127.0.0.1:0", EgressAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		DrainGrace: time.Hour, DrainTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Apply(context.Background(), testutil.ParseConfig(t, resMesh([]int{up.Port}, "", "")), "test"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	get := func(c *http.Client) (int, error) {
		resp, err := c.Get("http://svc.t.local/")
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := get(testutil.HTTPClient(t, srv.EgressAddr())); err != nil || code != 200 {
		t.Fatalf("before shutdown: %d %v", code, err)
	}
	ctx, endGrace := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Shutdown(ctx) })
	defer func() { endGrace(); wg.Wait() }()

	admin := "http://" + srv.AdminAddr()
	for deadline := time.Now().Add(5 * time.Second); ; {
		resp, err := http.Get(admin + "/ready")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 503 {
			if !strings.Contains(string(body), "DRAINING") {
				t.Fatalf("/ready during the grace: %q, want DRAINING", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("/ready still answers 200 after Shutdown began")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A new connection during the grace is accepted and served.
	if code, err := get(testutil.HTTPClient(t, srv.EgressAddr())); err != nil || code != 200 {
		t.Fatalf("a new connection during the drain grace: %d %v", code, err)
	}
	endGrace()
	wg.Wait()
	if _, err := get(testutil.HTTPClient(t, srv.EgressAddr())); err == nil {
		t.Fatal("the egress listener still accepts after the drain")
	}
}

// TestFirstConfigRejectedLog: a config rejected while nothing is in force yet says so;
// "the previous config keeps serving" is only said when there is one.
func TestFirstConfigRejectedLog(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(&lockedWriter{w: &buf, mu: &mu}, nil))
	srv, err := proxy.New(proxy.Options{Node: "app", AdminAddr: "off", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.ApplyDocument(context.Background(), proxy.ApplyRequest{Data: []byte("mesh: {"), Source: "test"}); err == nil {
		t.Fatal("a malformed config was applied")
	}
	mu.Lock()
	first := buf.String()
	buf.Reset()
	mu.Unlock()
	if strings.Contains(first, "previous config keeps serving") || !strings.Contains(first, "no config is in force yet") {
		t.Fatalf("first rejection logged %q", first)
	}
	if _, err := srv.Apply(context.Background(), testutil.ParseConfig(t, resMesh([]int{1}, "", "")), "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.ApplyDocument(context.Background(), proxy.ApplyRequest{Data: []byte("mesh: {"), Source: "test"}); err == nil {
		t.Fatal("a malformed config was applied")
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(buf.String(), "previous config keeps serving") {
		t.Fatalf("rejection with a config in force logged %q", buf.String())
	}
	_ = srv.Shutdown(context.Background())
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
