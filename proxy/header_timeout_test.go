package proxy_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// TestHeaderTimeout: a request head must be complete within HeaderTimeout of its first
// byte, however the client paces it (slowloris), and meshd answers 408 and closes, so a
// client trickling a head cannot hold a connection and its buffers indefinitely. The
// wait for the first byte is still the keep-alive idle time.
func TestHeaderTimeout(t *testing.T) {
	up := testutil.StartHTTP(t, echoHandler("echo"))
	yaml := meshDef{services: []svcDef{{name: "echo.t.local", node: "echo", port: up.Port}}}.yaml()
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", HeaderTimeout: 300 * time.Millisecond}, yaml)

	t.Run("trickled head is cut off", func(t *testing.T) {
		c := dialRaw(t, srv.EgressAddr())
		c.send(t, "GET / HTTP/1.1\r\nHost: echo.t.local\r\n")
		start := time.Now()
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() { // one header byte every 50ms, at most 3s' worth
			defer close(done)
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for range 60 {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if _, err := c.Write([]byte("X")); err != nil {
					return
				}
			}
		}()
		resp, _ := c.read(t, "GET")
		close(stop)
		<-done
		if resp.StatusCode != http.StatusRequestTimeout {
			t.Fatalf("status %d, want 408", resp.StatusCode)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("cut off after %v, want about the 300ms header timeout", d)
		}
		c.expectClosed(t)
	})

	t.Run("idle before the first byte is not limited by it", func(t *testing.T) {
		c := dialRaw(t, srv.EgressAddr())
		c.send(t, "GET / HTTP/1.1\r\nHost: echo.t.local\r\n\r\n")
		if resp, _ := c.read(t, "GET"); resp.StatusCode != 200 {
			t.Fatalf("first request: %d", resp.StatusCode)
		}
		time.Sleep(400 * time.Millisecond) // idle between requests, longer than HeaderTimeout
		c.send(t, "GET / HTTP/1.1\r\nHost: echo.t.local\r\n\r\n")
		if resp, _ := c.read(t, "GET"); resp.StatusCode != 200 {
			t.Fatalf("request after an idle pause: %d", resp.StatusCode)
		}
	})
}
