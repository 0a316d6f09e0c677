package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	"github.com/meshd/meshd/proxy/forward"
	"github.com/meshd/meshd/telemetry"
)

// CloudWatch without an agent sidecar: every interval, one line per upstream cluster and
// listener in CloudWatch's Embedded Metric Format (EMF), written to stdout or a file that
// the awslogs driver or FireLens already ship; CloudWatch extracts the metrics from the
// log lines, no agent needed. The set is small and fixed (docs/metrics.md#cloudwatch).

// emfMetrics are the metrics of each line: deltas over the interval, and the average
// latency of the requests in it.
var emfMetrics = []emfMetric{
	{"Requests", "Count"}, {"Responses4xx", "Count"}, {"Responses5xx", "Count"},
	{"LocalErrors", "Count"}, {"Retries", "Count"}, {"LatencyAverage", "Milliseconds"},
}

type emfMetric struct{ Name, Unit string }

// emfTotals are one series' counters at the last flush.
type emfTotals struct{ requests, xx4, xx5, local, retries, micros uint64 }

func totalsOf(st *telemetry.HTTPStats) emfTotals {
	var t emfTotals
	for i := range st.Classes {
		t.requests += st.Classes[i].Load()
	}
	t.xx4, t.xx5 = st.Classes[4].Load(), st.Classes[5].Load()
	t.local = st.Timeouts.Load() + st.RateLimited.Load() + st.Overflow.Load() + st.NoRoute.Load() + st.NoHealthy.Load()
	t.retries, t.micros = st.Retries.Load(), st.SumMicros.Load()
	return t
}

// emfWriter writes the EMF lines; run owns it.
type emfWriter struct {
	w    io.Writer
	last map[string]emfTotals
}

// flush writes one line per series with what changed since the last flush (a series
// with no request in the interval is skipped: CloudWatch bills per metric that reports).
func (e *emfWriter) flush(now time.Time, mesh, node string, series map[string]*telemetry.HTTPStats) error {
	names := make([]string, 0, len(series))
	for n := range series {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	for _, name := range names {
		cur := totalsOf(series[name])
		prev := e.last[name]
		e.last[name] = cur
		d := emfTotals{cur.requests - prev.requests, cur.xx4 - prev.xx4, cur.xx5 - prev.xx5, cur.local - prev.local, cur.retries - prev.retries, cur.micros - prev.micros}
		if d.requests == 0 {
			continue
		}
		kind, id := "Cluster", name
		if len(name) > 9 && name[:9] == "listener:" {
			kind, id = "Listener", name[9:]
		}
		line := map[string]any{
			"_aws": map[string]any{
				"Timestamp": now.UnixMilli(),
				"CloudWatchMetrics": []any{map[string]any{
					"Namespace":  "meshd",
					"Dimensions": [][]string{{"Mesh", "VirtualNode", kind}},
					"Metrics":    emfMetrics,
				}},
			},
			"Mesh": mesh, "VirtualNode": node, kind: id,
			"Requests": d.requests, "Responses4xx": d.xx4, "Responses5xx": d.xx5, "LocalErrors": d.local, "Retries": d.retries,
			"LatencyAverage": float64(d.micros) / float64(d.requests) / 1000,
		}
		b, err := json.Marshal(line)
		if err != nil {
			return err
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	if buf.Len() == 0 {
		return nil
	}
	_, err := e.w.Write(buf.Bytes())
	return err
}

// startEMF starts the EMF goroutine when Options.CloudWatchEMF names a destination;
// Shutdown stops it after a last flush.
func (s *Server) startEMF() error {
	dest := s.opts.CloudWatchEMF
	if dest == "" {
		return nil
	}
	var w io.Writer
	var closer io.Closer
	switch dest {
	case "stdout", "/dev/stdout":
		w = os.Stdout
	case "stderr", "/dev/stderr":
		w = os.Stderr
	default:
		f, err := os.OpenFile(dest, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return fmt.Errorf("cloudwatch EMF output %s: %w", dest, err)
		}
		w, closer = f, f
	}
	every := s.opts.CloudWatchEMFInterval
	if every <= 0 {
		every = time.Minute
	}
	e := &emfWriter{w: w, last: map[string]emfTotals{}}
	s.emfStop, s.emfDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(s.emfDone)
		if closer != nil {
			defer closer.Close()
		}
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case now := <-t.C:
				s.flushEMF(e, now)
			case <-s.emfStop:
				s.flushEMF(e, time.Now())
				return
			}
		}
	}()
	return nil
}

func (s *Server) flushEMF(e *emfWriter, now time.Time) {
	snap := s.state.Load()
	if snap == nil {
		return
	}
	series := map[string]*telemetry.HTTPStats{
		"listener:ingress": s.env.ListenerStats(forward.Ingress), "listener:egress": s.env.ListenerStats(forward.Egress),
	}
	for name, c := range snap.Clusters() {
		series[name] = c.Stats()
	}
	if err := e.flush(now, snap.Config().Mesh.MeshName, snap.Node(), series); err != nil {
		s.log.Warn("cloudwatch EMF write failed", "err", err)
	}
}

func (s *Server) stopEMF() {
	if s.emfStop != nil {
		close(s.emfStop)
		<-s.emfDone
		s.emfStop = nil
	}
}
