package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/telemetry/tracing"
)

// rawUpstream answers every HTTP/1.1 request head it reads with a fixed 63-byte
// response, allocating nothing per request, so a benchmark's allocations are meshd's.
func rawUpstream(tb testing.TB) (addr string, stop func()) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	body := bytes.Repeat([]byte("x"), 63)
	resp := []byte(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", len(body), body))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				br := bufio.NewReaderSize(c, 16<<10)
				for {
					// Read one head: lines until the empty one (requests have no body here).
					for {
						line, err := br.ReadSlice('\n')
						if err != nil {
							return
						}
						if len(line) == 2 {
							break
						}
					}
					if _, err := c.Write(resp); err != nil {
						return
					}
				}
			}(c)
		}
	}()
	return ln.Addr().String(), func() { ln.Close(); <-done }
}

func benchServer(tb testing.TB, upstream string, opts Options) *Server {
	tb.Helper()
	return benchServerProto(tb, upstream, "http", opts)
}

// benchServerProto is benchServer with the upstream node's listener speaking proto.
// lb, when given, is the upstream node's loadBalancing (YAML flow).
func benchServerProto(tb testing.TB, upstream, proto string, opts Options, lb ...string) *Server {
	tb.Helper()
	_, port, _ := net.SplitHostPort(upstream)
	lbLine := ""
	if len(lb) > 0 {
		lbLine = "\n      loadBalancing: " + lb[0]
	}
	yaml := fmt.Sprintf(`mesh: {meshName: bench, spec: {egressFilter: {type: DROP_ALL}}}
virtualNodes:
  - virtualNodeName: client
    spec:
      listeners: [{portMapping: {port: 18080, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:18080"]}}
      backends: [{virtualService: {virtualServiceName: upstream.bench.local}}]
  - virtualNodeName: upstream
    spec:
      listeners: [{portMapping: {port: %s, protocol: %s}}]
      serviceDiscovery: {static: {endpoints: [%q]}}%s
virtualServices:
  - virtualServiceName: upstream.bench.local
    spec: {provider: {virtualNode: {virtualNodeName: upstream}}}
`, port, proto, upstream, lbLine)
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		tb.Fatal(err)
	}
	opts.Node, opts.IngressAddr, opts.EgressAddr, opts.AdminAddr = "client", "127.0.0.1:0", "127.0.0.1:0", "off"
	s, err := New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := s.Apply(context.Background(), cfg, "bench"); err != nil {
		tb.Fatal(err)
	}
	if err := s.Start(); err != nil {
		tb.Fatal(err)
	}
	return s
}

// BenchmarkForwardH1 measures one keep-alive HTTP/1.1 request relayed by meshd's
// egress listener over loopback: client → meshd → upstream and back. The client and
// upstream allocate nothing per request, so allocs/op are meshd's.
func BenchmarkForwardH1(b *testing.B) {
	benchForwardH1(b, Options{})
}

// BenchmarkForwardH1Traced is BenchmarkForwardH1 with tracing on (a telemetry/tracing
// Tracer exporting through the batch span processor to a no-op exporter). sampled:
// every request is (root ratio 1): a server span and a client span per request,
// traceparent written upstream. unsampled: none is (ratio 0): what tracing on costs the
// requests it does not record.
func BenchmarkForwardH1Traced(b *testing.B) {
	for _, c := range []struct {
		name  string
		ratio float64
	}{{"sampled", 1}, {"unsampled", 0}} {
		b.Run(c.name, func(b *testing.B) {
			tr, err := tracing.New(context.Background(), tracing.Config{SampleRatio: c.ratio, Exporter: tracetest.NewNoopExporter()})
			if err != nil {
				b.Fatal(err)
			}
			defer tr.Shutdown(context.Background())
			benchForwardH1(b, Options{Tracer: tr})
		})
	}
}

func benchForwardH1(b *testing.B, opts Options) {
	benchForwardH1Variant(b, opts, "", "")
}

// BenchmarkForwardH1Affinity is BenchmarkForwardH1 to a RING_HASH cluster keyed on a
// header or the source IP: the key's hashing and the ring's pick must allocate nothing.
func BenchmarkForwardH1Affinity(b *testing.B) {
	b.Run("header", func(b *testing.B) {
		benchForwardH1Variant(b, Options{}, "{policy: RING_HASH, hash: {header: x-user}}", "X-User: bench-user\r\n")
	})
	b.Run("sourceIp", func(b *testing.B) {
		benchForwardH1Variant(b, Options{}, "{policy: MAGLEV, hash: {sourceIp: true}}", "")
	})
}

// benchForwardH1Variant is the loop of BenchmarkForwardH1; lb is the upstream node's
// loadBalancing ("": none), hdr more request fields ("Name: value\r\n").
func benchForwardH1Variant(b *testing.B, opts Options, lb, hdr string) {
	up, stop := rawUpstream(b)
	defer stop()
	var s *Server
	if lb == "" {
		s = benchServer(b, up, opts)
	} else {
		s = benchServerProto(b, up, "http", opts, lb)
	}
	defer s.Shutdown(context.Background())

	c, err := net.Dial("tcp", s.EgressAddr())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := []byte("GET /bench HTTP/1.1\r\nHost: upstream.bench.local\r\nUser-Agent: bench\r\nAccept: */*\r\n" + hdr + "\r\n")
	br := bufio.NewReaderSize(c, 16<<10)
	roundTrip := func() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		var cl int
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				b.Fatal(err)
			}
			if len(line) == 2 {
				break
			}
			if bytes.HasPrefix(line, []byte("Content-Length: ")) {
				cl = 0
				for _, ch := range line[16 : len(line)-2] {
					cl = cl*10 + int(ch-'0')
				}
			}
		}
		if _, err := br.Discard(cl); err != nil {
			b.Fatal(err)
		}
	}
	for range 100 {
		roundTrip()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		roundTrip()
	}
}
