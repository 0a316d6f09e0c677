package proxy_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// silentServer accepts connections and never answers; accepted reports each accept.
// Its connections and listener close at cleanup and its accept goroutine is joined.
func silentServer(t *testing.T) (port int, accepted <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan struct{}, 64)
	var (
		mu   sync.Mutex
		held []net.Conn
		wg   sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
		mu.Lock()
		for _, c := range held {
			_ = c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().(*net.TCPAddr).Port, ch
}

// A reload that replaces a cluster whose health check round is waiting on a silent
// endpoint must not wait for the check's timeout: retiring the cluster cancels the
// round, so the apply (which holds the apply lock) returns promptly.
func TestApplyReplacingClusterMidHealthRoundIsPrompt(t *testing.T) {
	const timeoutMillis = 8000
	port, accepted := silentServer(t)
	clk := newTickClock()
	spec := func(timeout int) string {
		return fmt.Sprintf("healthCheck: {protocol: http, path: /h, intervalMillis: 5000, timeoutMillis: %d, healthyThreshold: 2, unhealthyThreshold: 2}", timeout)
	}
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", Clock: clk}, resMesh([]int{port}, spec(timeoutMillis), ""))
	eventually(t, "the health check ticker", func() bool { return clk.liveTickers() == 1 })
	clk.Advance(5 * time.Second)
	select {
	case <-accepted: // the round's check is connected and waiting for an answer
	case <-time.After(10 * time.Second):
		t.Fatal("the health check round never connected to the endpoint")
	}

	start := time.Now()
	if _, err := srv.Apply(context.Background(), testutil.ParseConfig(t, resMesh([]int{port}, spec(timeoutMillis-1000), "")), "t"); err != nil {
		t.Fatal(err)
	}
	if took, bound := time.Since(start), timeoutMillis*time.Millisecond/2; took >= bound {
		t.Fatalf("apply replacing the cluster took %v, want well under the check timeout (< %v)", took, bound)
	}
}
