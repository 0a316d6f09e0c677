package canary

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Counts is what the callers' sidecars recorded for the requests sent to one side (the
// canary, or the primary targets together): counters, summed across the fleet.
type Counts struct {
	Requests float64
	// Errors are 5xx answers and gRPC calls that did not end OK.
	Errors float64
	// Buckets is the request duration histogram: upper bound (seconds) → cumulative count.
	Buckets map[float64]float64
}

// Sub is c − prev: the requests of one interval.
func (c Counts) Sub(prev Counts) Counts {
	out := Counts{Requests: c.Requests - prev.Requests, Errors: c.Errors - prev.Errors, Buckets: map[float64]float64{}}
	for le, n := range c.Buckets {
		out.Buckets[le] = n - prev.Buckets[le]
	}
	return out
}

// ErrorRate is Errors / Requests (0 without requests).
func (c Counts) ErrorRate() float64 {
	if c.Requests <= 0 {
		return 0
	}
	return c.Errors / c.Requests
}

// Quantile is the q-quantile of the duration histogram, the upper bound of the bucket it
// falls in (as a histogram can tell it), or NaN without requests.
func (c Counts) Quantile(q float64) float64 {
	les := make([]float64, 0, len(c.Buckets))
	for le := range c.Buckets {
		les = append(les, le)
	}
	sort.Float64s(les)
	if len(les) == 0 {
		return math.NaN()
	}
	total := c.Buckets[les[len(les)-1]]
	if total <= 0 {
		return math.NaN()
	}
	rank := q * total
	for _, le := range les {
		if c.Buckets[le] >= rank {
			return le
		}
	}
	return math.Inf(1)
}

// Sides are the counts of the canary and of the primary (every other target).
type Sides struct{ Canary, Primary Counts }

// Sub is s − prev, side by side.
func (s Sides) Sub(prev Sides) Sides {
	return Sides{Canary: s.Canary.Sub(prev.Canary), Primary: s.Primary.Sub(prev.Primary)}
}

// clusterNode is the virtual node of a meshd cluster name: a node (port) cluster is
// named after the node, one that originates TLS for a service "<node>@<service>".
func clusterNode(cluster string) string {
	node, _, _ := strings.Cut(cluster, "@")
	return node
}

// Read adds up, from the Prometheus text expositions in, the requests the callers sent
// to canary and to primaries (meshd_cluster_requests_total, _grpc_calls_total and
// _request_duration_seconds by the cluster's node).
func Read(in []io.Reader, canary string, primaries []string) (Sides, error) {
	s := Sides{Canary: Counts{Buckets: map[float64]float64{}}, Primary: Counts{Buckets: map[float64]float64{}}}
	isPrimary := map[string]bool{}
	for _, p := range primaries {
		isPrimary[p] = true
	}
	side := func(m *dto.Metric) *Counts {
		for _, l := range m.GetLabel() {
			if l.GetName() == "cluster" {
				switch n := clusterNode(l.GetValue()); {
				case n == canary:
					return &s.Canary
				case isPrimary[n]:
					return &s.Primary
				}
			}
		}
		return nil
	}
	label := func(m *dto.Metric, name string) string {
		for _, l := range m.GetLabel() {
			if l.GetName() == name {
				return l.GetValue()
			}
		}
		return ""
	}
	for i, r := range in {
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := p.TextToMetricFamilies(r)
		if err != nil {
			return Sides{}, fmt.Errorf("metrics source %d: %w", i+1, err)
		}
		if f := fams["meshd_cluster_requests_total"]; f != nil {
			for _, m := range f.GetMetric() {
				if c := side(m); c != nil {
					v := m.GetCounter().GetValue()
					c.Requests += v
					if label(m, "code_class") == "5xx" {
						c.Errors += v
					}
				}
			}
		}
		if f := fams["meshd_cluster_grpc_calls_total"]; f != nil {
			for _, m := range f.GetMetric() {
				// A gRPC error answered with HTTP 5xx is already an error by its class.
				if c := side(m); c != nil && label(m, "grpc_result") == "error" {
					c.Errors += m.GetCounter().GetValue()
				}
			}
		}
		if f := fams["meshd_cluster_request_duration_seconds"]; f != nil {
			for _, m := range f.GetMetric() {
				if c := side(m); c != nil {
					h := m.GetHistogram()
					for _, b := range h.GetBucket() {
						if !math.IsInf(b.GetUpperBound(), 1) { // the sample count is +Inf's
							c.Buckets[b.GetUpperBound()] += float64(b.GetCumulativeCount())
						}
					}
					c.Buckets[math.Inf(1)] += float64(h.GetSampleCount())
				}
			}
		}
	}
	return s, nil
}

// Scrape fetches every URL's exposition and Reads them. A URL that fails fails the
// scrape: a step judged on part of the fleet could promote a canary a missing sidecar
// saw failing.
func Scrape(ctx context.Context, client *http.Client, urls []string, canary string, primaries []string) (Sides, error) {
	var rs []io.Reader
	for _, u := range urls {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return Sides{}, fmt.Errorf("--metrics %s: %w", u, err)
		}
		resp, err := client.Do(req)
		if err != nil {
			return Sides{}, fmt.Errorf("--metrics %s: %w", u, err)
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		resp.Body.Close()
		if err != nil {
			return Sides{}, fmt.Errorf("--metrics %s: %w", u, err)
		}
		if resp.StatusCode != http.StatusOK {
			return Sides{}, fmt.Errorf("--metrics %s: status %s", u, resp.Status)
		}
		rs = append(rs, strings.NewReader(string(body)))
	}
	return Read(rs, canary, primaries)
}
