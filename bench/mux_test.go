package bench

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startHTTPUtil runs the Go relay (ServeHTTPUtil) in process in front of upstream.
func startHTTPUtil(t *testing.T, upstream string, upstreamH2C bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeHTTPUtil(ctx, ln, upstream, upstreamH2C) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("httputil: %v", err)
		}
	})
	return ln.Addr().String()
}

// Multiplexed h2c and gRPC load, straight to the upstream and through the Go relay:
// every request answered, and the streams of a connection really in flight together
// (the client's count of open streams per connection, and for the upstream itself
// the most requests its handler held at once on one connection). The upstream holds
// each request 2 ms, so that a closed loop keeps all of a connection's streams open.
func TestRunMultiplexed(t *testing.T) {
	const conns, streams = 2, 8
	stats := &UpstreamStats{}
	up := startUpstream(t, UpstreamConfig{BodySize: 100, Stats: stats, Stall: func(uint64) time.Duration { return 2 * time.Millisecond }})
	relayH1 := startHTTPUtil(t, up, false)
	relayH2C := startHTTPUtil(t, up, true)
	for _, tc := range []struct {
		name    string
		proto   Proto
		addr    string
		direct  bool
		h2Up    bool // the upstream is reached over h2c
		reqBody int
	}{
		{"h2c/direct", H2C, up, true, true, 0},
		{"h2c/direct/post", H2C, up, true, true, 1000},
		{"h2c/go-httputil", H2C, relayH1, false, false, 0},
		{"grpc/direct", GRPC, up, true, true, 10},
		{"grpc/go-httputil", GRPC, relayH2C, false, true, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stats.MaxStreams.Store(0)
			before := stats.H2Requests.Load()
			closed, err := Run(context.Background(), LoadSpec{Addr: tc.addr, Proto: tc.proto, Connections: conns, Streams: streams,
				Duration: 150 * time.Millisecond, ReqBody: tc.reqBody, Timeout: 2 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if closed.Responses() == 0 || closed.ErrorCount() != 0 {
				t.Fatalf("closed loop: %d responses, errors %v", closed.Responses(), closed.Errors)
			}
			if closed.PeakStreams != streams {
				t.Errorf("closed loop: at most %d streams in flight on a connection, want %d", closed.PeakStreams, streams)
			}
			if served := stats.H2Requests.Load() - before; tc.h2Up && served < closed.Responses() {
				t.Errorf("upstream answered %d h2c requests, the client counted %d responses", served, closed.Responses())
			}
			if tc.direct && stats.MaxStreams.Load() < 2 {
				t.Errorf("upstream saw at most %d concurrent streams on a connection, want > 1", stats.MaxStreams.Load())
			}
			t.Logf("closed loop: %d responses (%.0f/s), client peak %d streams/connection, upstream peak %d",
				closed.Responses(), closed.Rate(), closed.PeakStreams, stats.MaxStreams.Load())

			// Open loop: the rate is spread over conns × streams slots, and every
			// scheduled request is sent and answered.
			open, err := Run(context.Background(), LoadSpec{Addr: tc.addr, Proto: tc.proto, Connections: conns, Streams: streams,
				Rate: 400, Duration: 125 * time.Millisecond, ReqBody: tc.reqBody, Timeout: 2 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if open.Responses() != 50 || open.ErrorCount() != 0 || open.Latency.Count() != 50 {
				t.Errorf("open loop: %d responses, %d latencies, errors %v; want 50 and none", open.Responses(), open.Latency.Count(), open.Errors)
			}
			ok := 200
			if tc.proto == GRPC {
				ok = 0 // gRPC status OK
			}
			if open.RetCodes[ok] != 50 {
				t.Errorf("open loop: codes %v, want 50 × %d", open.RetCodes, ok)
			}
		})
	}
}

// gRPC failures count by status code: a method the upstream does not serve is
// UNIMPLEMENTED, nothing listening is UNAVAILABLE.
func TestGRPCErrorsByCode(t *testing.T) {
	up := startUpstream(t, UpstreamConfig{BodySize: 10})
	res, err := Run(context.Background(), LoadSpec{Addr: up, Proto: GRPC, Path: "/meshbench.Bench/Nope", Connections: 1, Streams: 2,
		Rate: 100, Duration: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 0 || res.Errors["grpc_UNIMPLEMENTED"] != 20 || len(res.Errors) != 1 {
		t.Errorf("unknown method: ok %d errors %v, want 20 grpc_UNIMPLEMENTED", res.OK, res.Errors)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	res, err = Run(context.Background(), LoadSpec{Addr: addr, Proto: GRPC, Connections: 1, Rate: 50, Duration: 200 * time.Millisecond, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 0 || res.ErrorCount() != 10 || res.Errors[grpcUnavailable] == 0 {
		t.Errorf("nothing listening: ok %d errors %v, want 10 errors, grpc_UNAVAILABLE among them", res.OK, res.Errors)
	}
}

// An h2c stream that gets no answer by its deadline is reset and counted as a
// timeout; the connection's other streams go on.
func TestMuxStreamTimeout(t *testing.T) {
	up := startUpstream(t, UpstreamConfig{BodySize: 10, Stall: func(n uint64) time.Duration {
		if n == 20 {
			return 5 * time.Second
		}
		return 0
	}})
	res, err := Run(context.Background(), LoadSpec{Addr: up, Proto: H2C, Connections: 1, Streams: 4, Rate: 200,
		Duration: 500 * time.Millisecond, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors[ErrTimeout] != 1 || res.OK != 99 {
		t.Errorf("ok %d errors %v, want 99 and one timeout", res.OK, res.Errors)
	}
}

func TestStreamsNeedMultiplexing(t *testing.T) {
	_, err := Run(context.Background(), LoadSpec{Addr: "127.0.0.1:1", Proto: H1, Connections: 1, Streams: 2, Duration: time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "one request at a time") {
		t.Errorf("h1 with 2 streams: %v", err)
	}
}

// Bodies larger than a frame and than the server's windows: request DATA waits for
// WINDOW_UPDATE, responses come in many frames.
func TestMuxLargeBodies(t *testing.T) {
	stats := &UpstreamStats{}
	up := startUpstream(t, UpstreamConfig{BodySize: 100_000, Stats: stats})
	res, err := Run(context.Background(), LoadSpec{Addr: up, Proto: H2C, Connections: 1, Streams: 8,
		Duration: 300 * time.Millisecond, ReqBody: 300_000, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Responses() == 0 || res.ErrorCount() != 0 || stats.H2Requests.Load() < res.Responses() {
		t.Errorf("%d responses (upstream %d), errors %v", res.Responses(), stats.H2Requests.Load(), res.Errors)
	}
	t.Logf("%d responses, peak %d streams", res.Responses(), res.PeakStreams)
}

// nginx ends each HTTP/2 connection with GOAWAY after 20 requests here: the streams it
// did not take are sent again on a new connection, so none fails.
func TestMuxGoAwayNginx(t *testing.T) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		t.Skip("nginx not installed (apt-get install nginx-light)")
	}
	up := startUpstream(t, UpstreamConfig{BodySize: 63})
	dir := t.TempDir()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg := NginxConfig(dir, port, up, H2C)
	for _, d := range []string{"http2_max_requests", "keepalive_requests"} {
		cfg = strings.ReplaceAll(cfg, d+" 1000000;", d+" 20;")
	}
	p, err := writeFile(dir, "nginx.conf", cfg)
	if err != nil {
		t.Fatal(err)
	}
	proc, err := StartProc(ProcSpec{Name: "nginx", Argv: []string{bin, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", p}, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer proc.Stop()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	if err := proc.WaitReady(context.Background(), startTimeout, dialCheck(addr)); err != nil {
		t.Fatal(err)
	}
	res, err := Run(context.Background(), LoadSpec{Addr: addr, Proto: H2C, Connections: 2, Streams: 8,
		Duration: 300 * time.Millisecond, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK < 200 || res.ErrorCount() != 0 {
		t.Errorf("ok %d errors %v; want over 200 (10 connections ended by GOAWAY) and none", res.OK, res.Errors)
	}
}
