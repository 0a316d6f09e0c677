package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestErrorResponsesReported runs a target that answers every other request with 404
// and one that answers only 404: error responses are counted by status class, their
// latency is reported apart, and an all-error run shows no 0.000 latencies.
func TestErrorResponsesReported(t *testing.T) {
	var n atomic.Int64
	mixed := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%2 == 0 {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte("ok"))
	}))
	defer mixed.Close()
	notFound := httptest.NewServer(http.NotFoundHandler())
	defer notFound.Close()

	phases := []Phase{{Name: "fixed-100", Rate: 100, Connections: 1, Duration: 200 * time.Millisecond}}
	rep, err := Compare(context.Background(), Plan{Target: mixed.URL + "/", Rounds: 1, Phases: phases})
	if err != nil {
		t.Fatal(err)
	}
	r := rep.Results[0]
	if r.Requests != 20 || r.ErrorResponses != 10 || r.StatusClasses["2xx"] != 10 || r.StatusClasses["4xx"] != 10 {
		t.Errorf("requests %d, error responses %d, classes %v; want 20, 10, 2xx=10 4xx=10", r.Requests, r.ErrorResponses, r.StatusClasses)
	}
	if r.DurationHistogram.Count != 10 || r.ErrorDurationHistogram == nil || r.ErrorDurationHistogram.Count != 10 {
		t.Errorf("success histogram %d, error histogram %+v; want 10 each", r.DurationHistogram.Count, r.ErrorDurationHistogram)
	}
	if r.ErrorP50US == nil || *r.ErrorP50US <= 0 || r.P50US <= 0 {
		t.Errorf("p50 %v µs, error p50 %v µs: want both > 0", r.P50US, r.ErrorP50US)
	}
	var tab bytes.Buffer
	if err := WriteTable(&tab, rep, true); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tab.String(), "10 of 20 responses (2xx=10, 4xx=10); error latency p50") {
		t.Errorf("report lacks the error responses line:\n%s", tab.String())
	}

	// All 404 (a --target is measured as it answers, without the scenarios' smoke test).
	rep404, err := Compare(context.Background(), Plan{Target: notFound.URL + "/", Rounds: 1, Phases: phases})
	if err != nil {
		t.Fatal(err)
	}
	tab.Reset()
	if err := WriteTable(&tab, rep404, false); err != nil {
		t.Fatal(err)
	}
	out := tab.String()
	if strings.Contains(out, "0.000") {
		t.Errorf("all-404 table shows 0.000 latencies:\n%s", out)
	}
	if !strings.Contains(out, "target: 20 of 20 responses (4xx=20); error latency p50") || !strings.Contains(out, "no successful response") {
		t.Errorf("all-404 table does not say so:\n%s", out)
	}
	var js bytes.Buffer
	if err := WriteJSON(&js, rep404); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Results []struct {
			ErrorResponses         uint64            `json:"errorResponses"`
			StatusClasses          map[string]uint64 `json:"statusClasses"`
			ErrorDurationHistogram *FortioHistogram  `json:"errorDurationHistogram"`
			ErrorP99US             *float64          `json:"error_p99_us"`
		} `json:"results"`
	}
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	b := back.Results[0]
	if b.ErrorResponses != 20 || b.StatusClasses["4xx"] != 20 || b.ErrorDurationHistogram == nil || b.ErrorDurationHistogram.Count != 20 || b.ErrorP99US == nil {
		t.Errorf("JSON error fields: %+v", b)
	}
}

func TestStatusClass(t *testing.T) {
	for _, c := range []struct {
		code  int
		proto string
		want  string
	}{{200, "h1", "2xx"}, {204, "h2c", "2xx"}, {302, "h1", "3xx"}, {404, "h1", "4xx"}, {503, "h1", "5xx"}, {0, "grpc", "2xx"}} {
		if got := statusClass(c.code, c.proto); got != c.want {
			t.Errorf("statusClass(%d, %s) = %s, want %s", c.code, c.proto, got, c.want)
		}
	}
}
