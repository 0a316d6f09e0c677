package canary

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// promQueries are the instant queries QueryPrometheus asks: the same counters Read adds
// up from the sidecars' expositions, summed by the labels it needs. selector (e.g.
// `job="meshd"`) narrows every one of them.
func promQueries(selector string) [3]string {
	sel := ""
	if selector != "" {
		sel = "{" + selector + "}"
	}
	return [3]string{
		"sum by (cluster, code_class) (meshd_cluster_requests_total" + sel + ")",
		"sum by (cluster, grpc_result) (meshd_cluster_grpc_calls_total" + sel + ")",
		"sum by (cluster, le) (meshd_cluster_request_duration_seconds_bucket" + sel + ")",
	}
}

// promAnswer is the query API's answer to an instant query.
type promAnswer struct {
	Status    string `json:"status"`
	ErrorType string `json:"errorType"`
	Error     string `json:"error"`
	Data      struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	} `json:"data"`
}

// QueryPrometheus is Read over a Prometheus server's query API (base: its URL, e.g.
// http://prometheus:9090) instead of the sidecars: the fleet's counters as the server last
// scraped them, so a step's counts lag by up to one scrape interval.
func QueryPrometheus(ctx context.Context, client *http.Client, base, selector, canary string, primaries []string) (Sides, error) {
	s := Sides{Canary: Counts{Buckets: map[float64]float64{}}, Primary: Counts{Buckets: map[float64]float64{}}}
	isPrimary := map[string]bool{}
	for _, p := range primaries {
		isPrimary[p] = true
	}
	side := func(cluster string) *Counts {
		switch n := clusterNode(cluster); {
		case n == canary:
			return &s.Canary
		case isPrimary[n]:
			return &s.Primary
		}
		return nil
	}
	for i, q := range promQueries(selector) {
		ans, err := promQuery(ctx, client, base, q)
		if err != nil {
			return Sides{}, err
		}
		for _, r := range ans.Data.Result {
			c := side(r.Metric["cluster"])
			if c == nil {
				continue
			}
			str, _ := r.Value[1].(string)
			v, err := strconv.ParseFloat(str, 64)
			if err != nil {
				return Sides{}, fmt.Errorf("--prometheus %s: query %q: value %q: %w", base, q, str, err)
			}
			switch i {
			case 0:
				c.Requests += v
				if r.Metric["code_class"] == "5xx" {
					c.Errors += v
				}
			case 1:
				if r.Metric["grpc_result"] == "error" {
					c.Errors += v
				}
			case 2:
				le, err := strconv.ParseFloat(r.Metric["le"], 64)
				if err != nil && r.Metric["le"] != "+Inf" {
					return Sides{}, fmt.Errorf("--prometheus %s: bucket le %q: %w", base, r.Metric["le"], err)
				}
				if r.Metric["le"] == "+Inf" {
					le = math.Inf(1)
				}
				c.Buckets[le] += v
			}
		}
	}
	return s, nil
}

func promQuery(ctx context.Context, client *http.Client, base, q string) (*promAnswer, error) {
	u := strings.TrimSuffix(base, "/") + "/api/v1/query?query=" + url.QueryEscape(q)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("--prometheus %s: %w", base, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("--prometheus %s: %w", base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("--prometheus %s: %w", base, err)
	}
	var ans promAnswer
	if err := json.Unmarshal(body, &ans); err != nil {
		return nil, fmt.Errorf("--prometheus %s: query %q: status %s, not a query API answer: %w", base, q, resp.Status, err)
	}
	if ans.Status != "success" {
		return nil, fmt.Errorf("--prometheus %s: query %q: %s: %s", base, q, ans.ErrorType, ans.Error)
	}
	if ans.Data.ResultType != "vector" {
		return nil, fmt.Errorf("--prometheus %s: query %q: result type %q, want vector", base, q, ans.Data.ResultType)
	}
	return &ans, nil
}
