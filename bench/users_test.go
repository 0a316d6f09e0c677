package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
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
	if !strings.Contains(out, notFound.URL+"/: 20 of 20 responses (4xx=20); error latency p50") || !strings.Contains(out, "no successful response") {
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

func TestParseTarget(t *testing.T) {
	ok := []struct {
		in   string
		want TargetSpec
	}{
		{"http://a:1/x?y=1,2", TargetSpec{URL: "http://a:1/x?y=1,2"}},
		{"http://a:1/,label=meshd", TargetSpec{URL: "http://a:1/", Label: "meshd"}},
		{"http://a:1/,pid=42,label=envoy,host=svc", TargetSpec{URL: "http://a:1/", Label: "envoy", PID: 42, Host: "svc"}},
		{"http://a:1/,label=m,cmd=/bin/meshd run -c a,b.yaml", TargetSpec{URL: "http://a:1/", Label: "m", Cmd: []string{"/bin/meshd", "run", "-c", "a,b.yaml"}}},
	}
	for _, c := range ok {
		got, err := ParseTarget(c.in)
		if err != nil {
			t.Errorf("ParseTarget(%q): %v", c.in, err)
			continue
		}
		if got.URL != c.want.URL || got.Label != c.want.Label || got.Host != c.want.Host || got.PID != c.want.PID || strings.Join(got.Cmd, "|") != strings.Join(c.want.Cmd, "|") {
			t.Errorf("ParseTarget(%q) = %+v, want %+v", c.in, got, c.want)
		}
	}
	for _, c := range []struct{ in, want string }{
		{",label=x", "no URL"},
		{"http://a/,pid=x", `pid="x"`},
		{"http://a/,pid=-3", `pid="-3"`},
		{"http://a/,label=", "label= is empty"},
		{"http://a/,cmd=", "cmd= is empty"},
		{"http://a/,pid=3,cmd=x", "give one"},
	} {
		if _, err := ParseTarget(c.in); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseTarget(%q) = %v, want error with %q", c.in, err, c.want)
		}
	}
	if err := checkTargets([]TargetSpec{{URL: "http://a/"}, {URL: "http://b/", Label: "http://a/"}}); err == nil {
		t.Error("two rows of one name accepted")
	}
}

// TestCompareSeveralTargets measures, interleaved, a baseline URL, a target whose
// process is named by PID (this test process, which serves it) and one whose
// process meshbench starts (the built-in upstream as a separate process): rows are
// named by label, CPU and RSS are measured for the named processes, and added
// latency is counted from the baseline.
func TestCompareSeveralTargets(t *testing.T) {
	base := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("direct")) }))
	defer base.Close()
	inproc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("in-process")) }))
	defer inproc.Close()
	sp := selfPlan(t)
	for _, e := range sp.SelfEnv {
		k, v, _ := strings.Cut(e, "=")
		t.Setenv(k, v)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	started := TargetSpec{URL: "http://" + addr + "/", Label: "started", Cmd: []string{sp.Self, "internal", "upstream", "--listen", addr, "--body-size", "10"}}
	plan := Plan{Baseline: base.URL + "/", Rounds: 2, Targets: []TargetSpec{
		{URL: inproc.URL + "/p", PID: os.Getpid()}, started,
	}, Phases: []Phase{{Name: "fixed-100", Rate: 100, Connections: 1, Duration: 200 * time.Millisecond}}}
	rep, err := Compare(context.Background(), plan)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 3 {
		t.Fatalf("%d results, want 3", len(rep.Results))
	}
	b, p, s := rep.Results[0], rep.Results[1], rep.Results[2]
	if b.Scenario != ScenarioBaseline || p.Scenario != inproc.URL+"/p" || s.Scenario != "started" || s.URL != started.URL {
		t.Errorf("rows %q %q %q (url %s), want baseline, the URL, started", b.Scenario, p.Scenario, s.Scenario, s.URL)
	}
	for _, r := range []*PhaseResult{b, p, s} {
		if r.Requests != 40 || r.ErrorCount != 0 {
			t.Errorf("%s: %d requests, errors %v; want 40, none", r.Scenario, r.Requests, r.Errors)
		}
	}
	if b.Proxies != 0 || b.AddedP50US != nil {
		t.Errorf("baseline row: %d processes, added p50 %v; want none", b.Proxies, b.AddedP50US)
	}
	for _, r := range []*PhaseResult{p, s} {
		if r.Proxies != 1 || r.ProxyCPUPerRequest <= 0 || r.ProxyPeakRSSBytes == 0 {
			t.Errorf("%s: %d processes, CPU %.1f µs/req, RSS %d: want measured", r.Scenario, r.Proxies, r.ProxyCPUPerRequest, r.ProxyPeakRSSBytes)
		}
		if r.AddedP50US == nil || r.AddedP99US == nil {
			t.Errorf("%s: no added latency over the baseline", r.Scenario)
		}
	}
	var tab bytes.Buffer
	if err := WriteTable(&tab, rep, false); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"baseline", "started", inproc.URL + "/p"} {
		if !strings.Contains(tab.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, tab.String())
		}
	}

	// A dead PID and a command that never listens are refused before any load.
	bad := Plan{Targets: []TargetSpec{{URL: base.URL, PID: 1 << 30}}, Phases: plan.Phases}
	if _, err := Compare(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "pid=") {
		t.Errorf("dead pid: %v", err)
	}
}

// TestHTTPSTargets measures an https server with a certificate of the mesh CA:
// HTTP/1.1 and HTTP/2 (ALPN h2, one-at-a-time and multiplexed) with --cacert, the
// method and headers given, a refused handshake counted as tls errors without the
// CA, and --insecure.
func TestHTTPSTargets(t *testing.T) {
	files, err := WriteTLSFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(files.Server.Cert, files.Server.Key)
	if err != nil {
		t.Fatal(err)
	}
	var protos sync.Map
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		protos.Store(r.Proto, true)
		if r.TLS == nil || r.Method != "PUT" || r.Header.Get("X-Bench") != "a b" || r.Host != MeshdHost {
			http.Error(w, "want PUT over TLS with X-Bench and Host "+MeshdHost, http.StatusBadRequest)
			return
		}
		w.Write([]byte("ok"))
	}))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	defer srv.Close()
	ts := TargetSpec{URL: srv.URL + "/", Host: MeshdHost}
	hdr := []Header{{Name: "X-Bench", Value: "a b"}}
	phase := func(streams int) []Phase {
		return []Phase{{Name: "fixed-100", Rate: 100, Connections: 1, Streams: streams, Duration: 100 * time.Millisecond}}
	}
	for _, c := range []struct {
		proto     Proto
		streams   int
		wantProto string
		rowProto  string
	}{{H1, 1, "HTTP/1.1", "h1+tls"}, {H2C, 1, "HTTP/2.0", "h2"}, {H2C, 4, "HTTP/2.0", "h2"}} {
		protos.Clear()
		rep, err := Compare(context.Background(), Plan{Targets: []TargetSpec{ts}, Proto: c.proto, Method: "PUT", Headers: hdr,
			CACert: files.CA, Rounds: 1, Phases: phase(c.streams)})
		if err != nil {
			t.Fatal(err)
		}
		r := rep.Results[0]
		if r.Requests != 10 || r.StatusClasses["2xx"] != 10 || r.Proto != c.rowProto {
			t.Errorf("%s ×%d: %d requests, classes %v, errors %v, row proto %s; want 10 2xx, %s", c.proto, c.streams, r.Requests, r.StatusClasses, r.Errors, r.Proto, c.rowProto)
		}
		if _, ok := protos.Load(c.wantProto); !ok {
			t.Errorf("%s ×%d: server saw no %s request", c.proto, c.streams, c.wantProto)
		}
	}
	// gRPC over TLS: the built-in upstream's gRPC answer behind a TLS HTTP/2 server.
	u := &upstream{grpcResp: grpcResponse(10)}
	gsrv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		protos.Store("grpc-"+r.Proto, r.TLS != nil)
		u.serveGRPC(w, r)
	}))
	gsrv.EnableHTTP2 = true
	gsrv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	gsrv.StartTLS()
	defer gsrv.Close()
	protos.Clear()
	rep, err := Compare(context.Background(), Plan{Targets: []TargetSpec{{URL: gsrv.URL + "/", Host: MeshdHost}}, Proto: GRPC,
		CACert: files.CA, Rounds: 1, Phases: phase(2)})
	if err != nil {
		t.Fatal(err)
	}
	if r := rep.Results[0]; r.Requests != 10 || r.ErrorCount != 0 || r.Proto != "grpc+tls" {
		t.Errorf("grpc over TLS: %d calls, errors %v, proto %s", r.Requests, r.Errors, r.Proto)
	}
	if v, ok := protos.Load("grpc-HTTP/2.0"); !ok || v != true {
		t.Error("grpc over TLS: server saw no HTTP/2 call over TLS")
	}
	// Without the mesh CA the handshake fails: counted, not measured as served.
	rep, err = Compare(context.Background(), Plan{Targets: []TargetSpec{ts}, Method: "PUT", Headers: hdr, Rounds: 1, Phases: phase(1)})
	if err != nil {
		t.Fatal(err)
	}
	if r := rep.Results[0]; r.Requests != 0 || r.Errors[ErrTLS] == 0 {
		t.Errorf("no CA: %d responses, errors %v; want tls errors only", r.Requests, r.Errors)
	}
	rep, err = Compare(context.Background(), Plan{Targets: []TargetSpec{ts}, Method: "PUT", Headers: hdr, Insecure: true, Rounds: 1, Phases: phase(1)})
	if err != nil {
		t.Fatal(err)
	}
	if r := rep.Results[0]; r.StatusClasses["2xx"] != 10 {
		t.Errorf("--insecure: classes %v errors %v", r.StatusClasses, r.Errors)
	}
}

func TestRequestOptionsChecked(t *testing.T) {
	for _, c := range []struct {
		plan Plan
		want string
	}{
		{Plan{Method: "GE T"}, "not an HTTP method token"},
		{Plan{Headers: []Header{{Name: "X A", Value: "v"}}}, "not a token"},
		{Plan{Headers: []Header{{Name: "X", Value: "a\r\nb: c"}}}, "line break"},
		{Plan{Headers: []Header{{Name: "Host", Value: "x"}}}, "--host"},
		{Plan{Headers: []Header{{Name: "content-length", Value: "3"}}}, "frames requests itself"},
		{Plan{Proto: GRPC, Headers: []Header{{Name: "X", Value: "v"}}}, "--proto grpc"},
		{Plan{CACert: "ca.pem", Target: "http://a/"}, "--cacert ca.pem: applies to https targets"},
		{Plan{Insecure: true}, "--insecure: applies to https targets"},
	} {
		if err := CheckRequestOptions(c.plan); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.plan, err, c.want)
		}
	}
	if err := CheckRequestOptions(Plan{Method: "PURGE", Headers: []Header{{Name: "X-Y", Value: "z"}}, Insecure: true, Target: "https://a/"}); err != nil {
		t.Error(err)
	}
	if h, err := ParseHeader("X-Trace:  abc "); err != nil || h != (Header{"X-Trace", "abc"}) {
		t.Errorf("ParseHeader = %+v, %v", h, err)
	}
	if _, err := ParseHeader("no colon"); err == nil {
		t.Error("ParseHeader accepted a header without ':'")
	}
	if _, err := Compare(context.Background(), Plan{Target: "https://127.0.0.1:1/", CACert: filepath.Join(t.TempDir(), "missing.pem"),
		Phases: []Phase{{Name: "x", Connections: 1, Duration: time.Millisecond}}}); err == nil || !strings.Contains(err.Error(), "--cacert") {
		t.Errorf("missing CA file: %v", err)
	}
}
