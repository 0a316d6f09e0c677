package proxy

import (
	"fmt"
	"runtime/metrics"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/meshd/meshd/proxy/admin"
	"github.com/meshd/meshd/proxy/forward"
	"github.com/meshd/meshd/resilience"
)

// ConnLimits bound meshd's downstream connections and its heap, and say where meshd
// sheds load instead of running out of file descriptors or memory. App Mesh's
// connectionPool limits are another thing: they bound a cluster's UPSTREAM connections
// and requests.
type ConnLimits struct {
	// MaxConnections bounds the open downstream connections of the data-plane listeners
	// together (ingress, egress and its IPv6 twin; the admin listener is not counted).
	// At the bound an idle keep-alive connection is closed to make room for a new one;
	// with none idle the new one is closed at once (counted). 0: DefaultMaxConnections
	// of the process's RLIMIT_NOFILE; negative: no bound.
	MaxConnections int
	// MaxListenerConnections bounds each listener's open connections the same way
	// (egress and its IPv6 twin together). 0: no bound of its own (MaxConnections
	// applies); negative is refused.
	MaxListenerConnections int
	// OverloadHeapBytes is the heap in use (runtime/metrics
	// /memory/classes/heap/objects:bytes, sampled every OverloadSample) at which meshd
	// sheds load: new connections are closed at accept, new requests answered 503
	// overloaded, responses say Connection: close; it stops when the heap is back under
	// 90% of it. 0: off.
	OverloadHeapBytes uint64
	// OverloadConnections is the number of open downstream connections at which meshd
	// sheds load the same way (sampled too; it stops under 90% of it). 0: off.
	OverloadConnections int
	// OverloadSample is how often the overload watermarks are checked, on Options.Clock.
	// Default DefaultOverloadSample.
	OverloadSample time.Duration
	// UpstreamHold is how long an idle HTTP/1.1 client keeps the upstream connection of
	// its last request before it goes back to the endpoint's pool. Default
	// forward.DefaultUpstreamHold.
	UpstreamHold time.Duration
	// UpstreamIdlePerEndpoint bounds the idle connections an endpoint's pool keeps.
	// Default upstream.DefaultMaxIdlePerEndpoint.
	UpstreamIdlePerEndpoint int
}

const (
	// FDOverhead is what DefaultMaxConnections leaves of RLIMIT_NOFILE for everything
	// but the data plane's connections: the listeners, the admin API and its reserve,
	// config files and watchers, DNS, access logs, health checks.
	FDOverhead = 64
	// adminFDReserve is how many descriptors the admin listener keeps in reserve for
	// when the process is out of them.
	adminFDReserve = 8
	// DefaultOverloadSample is ConnLimits.OverloadSample's default.
	DefaultOverloadSample = time.Second
	// minDefaultConnections is DefaultMaxConnections' floor for tiny fd limits.
	minDefaultConnections = 16
)

// DefaultMaxConnections is the bound of downstream connections meshd takes by default
// under an fd limit of nofile: each downstream connection may hold an upstream one
// while its request is in flight, so half of what FDOverhead leaves. Then the data plane
// stops at its connection bound before the process reaches the fd limit, and the admin
// API keeps its room.
func DefaultMaxConnections(nofile uint64) int {
	if nofile <= FDOverhead+2*minDefaultConnections {
		return minDefaultConnections
	}
	n := (nofile - FDOverhead) / 2
	if n > 1<<30 {
		n = 1 << 30
	}
	return int(n)
}

// NoFileLimit is the process's RLIMIT_NOFILE soft limit (Go raises it to the hard limit
// at start); 0 if it cannot be read.
func NoFileLimit() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	return rl.Cur
}

// check refuses what cannot be honoured, naming the field and its value.
func (l *ConnLimits) check() error {
	switch {
	case l.MaxListenerConnections < 0:
		return fmt.Errorf("proxy: Options.Limits.MaxListenerConnections %d: want >= 0 (0: no bound of its own)", l.MaxListenerConnections)
	case l.OverloadConnections < 0:
		return fmt.Errorf("proxy: Options.Limits.OverloadConnections %d: want >= 0 (0: off)", l.OverloadConnections)
	case l.OverloadSample < 0:
		return fmt.Errorf("proxy: Options.Limits.OverloadSample %s: want > 0 (0: the default %s)", l.OverloadSample, DefaultOverloadSample)
	case l.UpstreamHold < 0:
		return fmt.Errorf("proxy: Options.Limits.UpstreamHold %s: want > 0 (0: the default %s)", l.UpstreamHold, forward.DefaultUpstreamHold)
	case l.UpstreamIdlePerEndpoint < 0:
		return fmt.Errorf("proxy: Options.Limits.UpstreamIdlePerEndpoint %d: want > 0 (0: the default)", l.UpstreamIdlePerEndpoint)
	}
	return nil
}

// total is MaxConnections resolved: 0 means no bound.
func (l *ConnLimits) total() int {
	switch {
	case l.MaxConnections < 0:
		return 0
	case l.MaxConnections == 0:
		if n := NoFileLimit(); n > 0 {
			return DefaultMaxConnections(n)
		}
		return 0
	}
	return l.MaxConnections
}

// overload is the state of the overload watermarks.
type overload struct {
	heapMax uint64
	connMax int
	active  atomic.Bool
	entered atomic.Uint64 // times meshd entered overload
	heap    atomic.Uint64 // the last sample
	stop    chan struct{}
	done    chan struct{}
}

// startOverload starts sampling the watermarks when one is set.
func (s *Server) startOverload() {
	o := &s.over
	if o.heapMax == 0 && o.connMax == 0 {
		return
	}
	clock := s.opts.Clock
	if clock == nil {
		clock = resilience.SystemClock{}
	}
	every := s.opts.Limits.OverloadSample
	if every <= 0 {
		every = DefaultOverloadSample
	}
	o.stop, o.done = make(chan struct{}), make(chan struct{})
	ticks, stopTicks := clock.NewTicker(every)
	go func() {
		defer close(o.done)
		defer stopTicks()
		sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		for {
			select {
			case <-o.stop:
				return
			case <-ticks:
				metrics.Read(sample)
				var heap uint64
				if sample[0].Value.Kind() == metrics.KindUint64 {
					heap = sample[0].Value.Uint64()
				}
				s.overloadSample(heap, s.conns.Len())
			}
		}
	}()
}

func (s *Server) stopOverload() {
	if o := &s.over; o.stop != nil {
		close(o.stop)
		<-o.done
		o.stop = nil
	}
}

// overloadSample moves the overload state on one sample of the heap and the open
// connections. Past a watermark meshd sheds (Env.Overloaded: 503 and Connection: close;
// the accept loops close new connections); idle keep-alive connections are left to
// come back and get their 503 (a well-formed answer, where a close would leave the
// client guessing), their keep-alive ends with it. It stops shedding once both are under 90% of their watermarks, so the state
// does not flap at the edge.
func (s *Server) overloadSample(heap uint64, conns int) {
	o := &s.over
	o.heap.Store(heap)
	highHeap := o.heapMax > 0 && heap >= o.heapMax
	highConns := o.connMax > 0 && conns >= o.connMax
	if !o.active.Load() {
		if !highHeap && !highConns {
			return
		}
		o.active.Store(true)
		o.entered.Add(1)
		s.log.Warn("overloaded: shedding load (new connections closed, new requests answered 503, keep-alive off)",
			"heap_bytes", heap, "heap_watermark", o.heapMax, "connections", conns, "connection_watermark", o.connMax)
	} else if (o.heapMax == 0 || heap < o.heapMax-o.heapMax/10) && (o.connMax == 0 || 10*conns < 9*o.connMax) {
		o.active.Store(false)
		s.log.Info("overload over: serving normally again", "heap_bytes", heap, "connections", conns)
	}
}

// connStats are the listeners' connection counters for the admin API.
func (s *Server) connStats() map[string]admin.ConnStats {
	out := make(map[string]admin.ConnStats, 2)
	for _, k := range []forward.Kind{forward.Ingress, forward.Egress} {
		l := &s.limits[k]
		out[k.String()] = admin.ConnStats{
			Open: l.Open(), Max: l.Max, Rejected: l.Rejected.Load(), Overload: l.Overload.Load(),
			IdleShed: l.IdleShed.Load(), FDExhausted: l.FDExhausted.Load(),
			OverloadRequests: s.env.OverloadRejected[k].Load(),
		}
	}
	return out
}

// overloadStats is the overload state for the admin API.
func (s *Server) overloadStats() admin.OverloadStats {
	o := &s.over
	return admin.OverloadStats{
		Active: o.active.Load(), Entered: o.entered.Load(), HeapBytes: o.heap.Load(),
		HeapWatermark: o.heapMax, ConnectionWatermark: o.connMax, MaxConnections: s.conns.Max,
		AdminFDReserve: s.reserve.Held(), Parked: s.ParkedConns(),
	}
}
