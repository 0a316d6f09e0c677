package main

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/telemetry/tracing"
)

// TestTracingConfig: what the tracing flags and variables make of tracing.Config.
func TestTracingConfig(t *testing.T) {
	for _, c := range []struct {
		name string
		env  map[string]string
		args []string
		want tracing.Config
	}{
		{"off by default", nil, nil,
			tracing.Config{Protocol: "grpc", SampleRatio: 1, Propagators: tracing.DefaultPropagators, ServiceName: "client"}},
		{"an endpoint turns it on", nil, []string{"--tracing-endpoint", "collector:4317", "--tracing-insecure", "--tracing-sample-ratio", "0.1"},
			tracing.Config{Endpoint: "collector:4317", Protocol: "grpc", Insecure: true, SampleRatio: 0.1, Propagators: tracing.DefaultPropagators, ServiceName: "client"}},
		{"ENABLE_ENVOY_XRAY_TRACING: the ADOT collector's OTLP/gRPC receiver", map[string]string{"ENABLE_ENVOY_XRAY_TRACING": "1"}, nil,
			tracing.Config{Endpoint: "http://localhost:4317", Protocol: "grpc", SampleRatio: 1, Propagators: tracing.DefaultPropagators, ServiceName: "client", XRay: true}},
		{"ENABLE_ENVOY_XRAY_TRACING over OTLP/HTTP", map[string]string{"ENABLE_ENVOY_XRAY_TRACING": "1", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, nil,
			tracing.Config{Endpoint: "http://localhost:4318", Protocol: "http/protobuf", SampleRatio: 1, Propagators: tracing.DefaultPropagators, ServiceName: "client", XRay: true}},
		{"ENABLE_ENVOY_XRAY_TRACING with an endpoint", map[string]string{"ENABLE_ENVOY_XRAY_TRACING": "1", "XRAY_SAMPLING_RATE": "0.05"}, []string{"--tracing-endpoint", "http://adot:4317"},
			tracing.Config{Endpoint: "http://adot:4317", Protocol: "grpc", SampleRatio: 0.05, Propagators: tracing.DefaultPropagators, ServiceName: "client", XRay: true}},
		{"OTEL_EXPORTER_OTLP_ENDPOINT is a base URL for OTLP/HTTP", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c.example:4318/otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, nil,
			tracing.Config{Endpoint: "https://c.example:4318/otlp/v1/traces", Protocol: "http/protobuf", SampleRatio: 1, Propagators: tracing.DefaultPropagators, ServiceName: "client"}},
		{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is used as it is", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://c.example:4318/otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://other:4318", "MESHD_TRACING_PROTOCOL": "http"}, nil,
			tracing.Config{Endpoint: "https://c.example:4318/otlp", Protocol: "http", SampleRatio: 1, Propagators: tracing.DefaultPropagators, ServiceName: "client"}},
		{"propagators", nil, []string{"--tracing-propagators", "xray, b3"},
			tracing.Config{Protocol: "grpc", SampleRatio: 1, Propagators: []string{"xray", "b3"}, ServiceName: "client"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, n := range runFlagEnv {
				t.Setenv(n, "")
			}
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			f := parseRunFlags(t, append([]string{"--node", "client"}, c.args...)...)
			got, err := f.tracingConfig()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got  %+v\nwant %+v", got, c.want)
			}
		})
	}
}

// TestRunTracingBadValues: a bad tracing value stops meshd run at start, naming its flag.
func TestRunTracingBadValues(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "mesh.yaml")
	writeFile(t, cfg, reloadCfg(7000))
	for _, c := range []struct {
		env  map[string]string
		args []string
		flag string
	}{
		{nil, []string{"--tracing-sample-ratio", "2"}, "--tracing-sample-ratio"},
		{nil, []string{"--tracing-sample-ratio", "most"}, "--tracing-sample-ratio"},
		{map[string]string{"XRAY_SAMPLING_RATE": "5%"}, nil, "--tracing-sample-ratio"},
		{nil, []string{"--tracing-protocol", "thrift"}, "--tracing-protocol"},
		{map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, nil, "--tracing-protocol"},
		{nil, []string{"--tracing-endpoint", "collector"}, "--tracing-endpoint"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "grpc://collector:4317"}, nil, "--tracing-endpoint"},
		{nil, []string{"--tracing-propagators", "tracecontext,jaeger"}, "--tracing-propagators"},
	} {
		t.Run(strings.Join(c.args, " ")+fmt.Sprint(c.env), func(t *testing.T) {
			for _, n := range runFlagEnv {
				t.Setenv(n, "")
			}
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			var out, errb bytes.Buffer
			args := append([]string{"run", "-c", cfg, "--node", "client", "--admin-addr", "off"}, c.args...)
			if code := run(args, &out, &errb); code != 2 || !strings.Contains(errb.String(), "meshd run: "+c.flag+" ") {
				t.Fatalf("code %d, stderr %q: want 2 and an error naming %s", code, errb.String(), c.flag)
			}
		})
	}
}

// TestRunBinaryXRayTracing runs meshd as App Mesh would with ENABLE_ENVOY_XRAY_TRACING=1
// (here to an OTLP/HTTP receiver standing in for the ADOT collector): the app gets
// X-Amzn-Trace-Id with an X-Ray trace id (its first 8 hex digits the time), and the span
// of the request reaches the receiver when meshd stops (the queue is flushed after the
// drain, well before the batch timeout would have sent it).
func TestRunBinaryXRayTracing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the meshd binary; skipped with -short")
	}
	var mu sync.Mutex
	var bodies [][]byte
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "not an OTLP/HTTP trace export", http.StatusBadRequest)
			return
		}
		mu.Lock()
		bodies = append(bodies, b)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer recv.Close()

	var seen sync.Map
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	appSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store("x-amzn-trace-id", r.Header.Get("X-Amzn-Trace-Id"))
		seen.Store("traceparent", r.Header.Get("Traceparent"))
	})}
	go func() { _ = appSrv.Serve(app) }()
	defer appSrv.Close()

	cfg := filepath.Join(t.TempDir(), "mesh.yaml")
	writeFile(t, cfg, reloadCfg(app.Addr().(*net.TCPAddr).Port))
	p := startMeshd(t, meshdBinary(t), []string{"ENABLE_ENVOY_XRAY_TRACING=1", "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"MESHD_TRACING_ENDPOINT=" + recv.URL}, "-c", cfg)
	req, _ := http.NewRequest("GET", "http://"+p.egress+"/x", nil)
	req.Host = "app.local"
	start := time.Now().Unix()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("through meshd: %d", resp.StatusCode)
	}
	xr, _ := seen.Load("x-amzn-trace-id")
	tp, _ := seen.Load("traceparent")
	xray, _ := xr.(string)
	var ts, rest, parent, sampled string
	if n, err := fmt.Sscanf(strings.NewReplacer("-", " ", ";", " ", "=", " ").Replace(xray), "Root 1 %s %s Parent %s Sampled %s", &ts, &rest, &parent, &sampled); n != 4 || err != nil {
		t.Fatalf("app got X-Amzn-Trace-Id %q (%v)", xray, err)
	}
	var secs int64
	if _, err := fmt.Sscanf(ts, "%x", &secs); err != nil || secs < start-5 || secs > start+5 {
		t.Errorf("X-Ray trace id time %s, want about %x", ts, start)
	}
	if want := "00-" + ts + rest + "-" + parent + "-01"; tp != want || sampled != "1" {
		t.Errorf("traceparent %q, want %q (the same trace and span)", tp, want)
	}
	mu.Lock()
	early := len(bodies)
	mu.Unlock()
	if early != 0 {
		t.Logf("spans were exported before the shutdown (%d exports)", early)
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	traceID, _ := hex.DecodeString(ts + rest)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		all := bytes.Join(bodies, nil)
		mu.Unlock()
		if bytes.Contains(all, traceID) && bytes.Contains(all, []byte("client")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the request's spans (trace %x, service client) never reached the receiver; logs:\n%s", traceID, p.logs.String())
		}
	}
	if l := p.logs.String(); !strings.Contains(l, "tracing on") {
		t.Errorf("logs do not say tracing is on:\n%s", l)
	}
}
