package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

func TestGracefulDrain(t *testing.T) {
	t.Run("http1", func(t *testing.T) { testDrain(t, false) })
	t.Run("h2c", func(t *testing.T) { testDrain(t, true) })
}

// testDrain holds 20 requests at the upstream, over 20 HTTP/1.1 connections or one
// h2c connection, while meshd shuts down.
func testDrain(t *testing.T, h2c bool) {
	const n = 20
	held := startHeld(t, n)
	srv, client := meshDef{services: []svcDef{{name: "slow.t.local", node: "slow", port: held.Port}}}.start(t)
	if h2c {
		client = testutil.H2CClient(t, srv.EgressAddr())
	}
	adminClient := testutil.HTTPClient(t, srv.AdminAddr())

	results := make([]<-chan result, n)
	for i := range results {
		results[i] = asyncGet(client, fmt.Sprintf("http://slow.t.local/r%d", i))
	}
	held.waitArrived(t, n)

	shutdown := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		shutdown <- srv.Shutdown(ctx)
	}()

	eventually(t, "/ready to fail while draining", func() bool {
		resp, err := adminClient.Get("http://admin/ready")
		if err != nil {
			t.Fatalf("admin during drain: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	eventually(t, "new connections to be refused", func() bool {
		c, err := net.Dial("tcp", srv.EgressAddr())
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned %v with %d requests in flight", err, n)
	default:
	}

	held.releaseAll()
	for i, ch := range results {
		if r := wait(t, ch); r.err != nil || r.status != 200 {
			t.Fatalf("request %d: status %d (%v)", i, r.status, r.err)
		}
	}
	select {
	case err := <-shutdown:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Shutdown did not return after the requests completed")
	}
	if c, err := net.Dial("tcp", srv.AdminAddr()); err == nil {
		c.Close()
		t.Fatal("admin still accepting after Shutdown")
	}
}
