package proxy_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

func healthyOf(t *testing.T, srv *proxy.Server, addr string) bool {
	st, _ := endpointState(t, srv, "svc")
	v, ok := st[addr]
	if !ok {
		t.Fatalf("endpoint %s not in /clusters: %v", addr, st)
	}
	return v[0]
}

// TestBackgroundHealthChecksProtocols: the cluster's own health checker (no test seam
// calls it) checks over http2, grpc (grpc.health.v1) and tcp, on healthCheck.port rather
// than the traffic port, and its verdicts follow the injected clock's ticks.
func TestBackgroundHealthChecksProtocols(t *testing.T) {
	type checkTarget struct {
		port    int
		checks  func() int64
		setFail func(bool)
	}
	cases := map[string]func(t *testing.T) checkTarget{
		"http2": func(t *testing.T) checkTarget {
			var fail atomic.Bool
			var n atomic.Int64
			up := testutil.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/health" || r.ProtoMajor != 2 {
					w.WriteHeader(400)
					return
				}
				n.Add(1)
				if fail.Load() {
					w.WriteHeader(503)
				}
			}))
			return checkTarget{up.Port, n.Load, fail.Store}
		},
		"grpc": func(t *testing.T) checkTarget {
			hs := health.NewServer()
			var n atomic.Int64
			up := testutil.StartGRPC(t, func(s *grpc.Server) {
				healthpb.RegisterHealthServer(s, &countingHealth{HealthServer: hs, n: &n})
			})
			return checkTarget{up.Port, n.Load, func(f bool) {
				st := healthpb.HealthCheckResponse_SERVING
				if f {
					st = healthpb.HealthCheckResponse_NOT_SERVING
				}
				hs.SetServingStatus("", st)
			}}
		},
		"tcp": func(t *testing.T) checkTarget {
			ln := testutil.Listen(t)
			port := ln.Port()
			var mu sync.Mutex
			closed := false
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					_ = c.Close()
				}
			}()
			t.Cleanup(func() {
				_ = ln.Close()
				<-done
			})
			return checkTarget{port, ln.Accepted, func(f bool) {
				mu.Lock()
				defer mu.Unlock()
				if f && !closed {
					closed = true
					_ = ln.Close() // connects are refused from now on
				}
			}}
		},
	}
	for proto, start := range cases {
		t.Run(proto, func(t *testing.T) {
			hc := start(t)
			var trafficHealthHits atomic.Int64
			traffic := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/health" {
					trafficHealthHits.Add(1)
				}
			}))
			clk := newTickClock()
			path := ""
			if proto == "http2" {
				path = "path: /health, "
			}
			spec := fmt.Sprintf("healthCheck: {protocol: %s, %sport: %d, intervalMillis: 5000, timeoutMillis: 2000, healthyThreshold: 2, unhealthyThreshold: 2}", proto, path, hc.port)
			srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", Clock: clk}, resMesh([]int{traffic.Port}, spec, ""))
			addr := traffic.Addr
			eventually(t, "the control goroutine's ticker", func() bool { return clk.liveTickers() == 1 })

			advanceUntil(t, clk, 5*time.Second, "a background check on the health port", func() bool { return hc.checks() >= 1 })
			if !healthyOf(t, srv, addr) {
				t.Fatal("a passing endpoint was marked unhealthy")
			}
			hc.setFail(true)
			advanceUntil(t, clk, 5*time.Second, "the endpoint to turn unhealthy", func() bool { return !healthyOf(t, srv, addr) })
			if proto != "tcp" {
				hc.setFail(false)
				advanceUntil(t, clk, 5*time.Second, "the endpoint to turn healthy again", func() bool { return healthyOf(t, srv, addr) })
			}
			if trafficHealthHits.Load() != 0 {
				t.Errorf("health checks went to the traffic port (%d), not healthCheck.port", trafficHealthHits.Load())
			}
		})
	}
}

// countingHealth counts the Check calls it passes on.
type countingHealth struct {
	healthpb.HealthServer
	n *atomic.Int64
}

func (c *countingHealth) Check(ctx context.Context, r *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	c.n.Add(1)
	return c.HealthServer.Check(ctx, r)
}
