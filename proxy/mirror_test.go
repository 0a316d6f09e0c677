package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// mirrorMeshTmpl: node app reaches orders.local through a router whose one route sends
// everything to v1 and, with Percent set, mirrors to v2.
const mirrorMeshTmpl = `
mesh:
  meshName: t
  spec: {egressFilter: {type: DROP_ALL}}
virtualNodes:
  - virtualNodeName: app
    spec:
      listeners: [{portMapping: {port: 1, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:1"]}}
      backends: [{virtualService: {virtualServiceName: orders.local}}]
  - virtualNodeName: v1
    spec:
      listeners: [{portMapping: {port: {{.V1}}, protocol: {{.Proto}}}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:{{.V1}}"]}}
  - virtualNodeName: v2
    spec:
      listeners: [{portMapping: {port: {{.V2}}, protocol: {{.Proto}}}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:{{.V2}}"]}}
virtualServices:
  - virtualServiceName: orders.local
    spec: {provider: {virtualRouter: {virtualRouterName: orders-router}}}
virtualRouters:
  - virtualRouterName: orders-router
    spec: {listeners: [{portMapping: {port: 80, protocol: {{.Proto}}}}]}
routes:
  - routeName: main
    virtualRouterName: orders-router
    spec:
      {{.Kind}}:
        match: {{.Match}}
        action: {weightedTargets: [{virtualNode: v1, weight: 1}]{{if .Percent}}, mirror: {virtualNode: v2, percent: {{.Percent}}}{{end}}}
`

type mirrorMesh struct {
	V1, V2             int
	Proto, Kind, Match string
	Percent            float64
}

func (m mirrorMesh) yaml(t *testing.T) string {
	if m.Proto == "" {
		m.Proto = "http"
	}
	if m.Kind == "" {
		m.Kind = "httpRoute"
	}
	if m.Match == "" {
		m.Match = "{prefix: /}"
	}
	return testutil.Render(t, mirrorMeshTmpl, m)
}

// startMirrorMeshd is testutil.StartMeshd with the mirrors' sampling draw set (nil:
// math/rand) before the server starts.
func startMirrorMeshd(t *testing.T, yaml string, draw func() uint64) *proxy.Server {
	t.Helper()
	srv, err := proxy.New(proxy.Options{Node: "app", IngressAddr: "127.0.0.1:0", EgressAddr: "127.0.0.1:0",
		AdminAddr: "127.0.0.1:0", DrainTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if draw != nil {
		proxy.SetMirrorDraw(srv, draw)
	}
	if _, err := srv.Apply(context.Background(), testutil.ParseConfig(t, yaml), "test"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("meshd Shutdown: %v", err)
		}
	})
	return srv
}

// mirrorRecorder is a mirror target: it records every request it receives, then
// answers at once, after delay, or once gate is closed (a stalled mirror); a request
// whose connection goes away ends its wait.
type mirrorRecorder struct {
	delay time.Duration
	gate  chan struct{}

	mu          sync.Mutex
	got         []echoInfo
	inFlight    int
	maxInFlight int
	answered    atomic.Int64
}

func (m *mirrorRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	m.mu.Lock()
	m.got = append(m.got, echoInfo{Name: "mirror", Method: r.Method, Host: r.Host, Proto: r.Proto, Path: r.URL.RequestURI(),
		Header: r.Header.Clone(), Body: string(body), BodyLen: int64(len(body))})
	m.inFlight++
	m.maxInFlight = max(m.maxInFlight, m.inFlight)
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.inFlight--
		m.mu.Unlock()
	}()
	if m.gate != nil {
		select {
		case <-m.gate:
		case <-r.Context().Done():
			return
		}
	}
	if m.delay > 0 {
		t := time.NewTimer(m.delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
	}
	// A mirror's answer must never reach the client: make it recognisable.
	w.Header().Set("X-Upstream", "mirror")
	w.WriteHeader(http.StatusTeapot)
	_, _ = io.WriteString(w, "from the mirror")
	m.answered.Add(1)
}

func (m *mirrorRecorder) received() []echoInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]echoInfo(nil), m.got...)
}

func (m *mirrorRecorder) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.got)
}

// waitFor polls cond every 10 ms for at most 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// mirrorCounts reads route orders.local/main's mirror counters from /stats?format=json
// (nil when the route has none).
func mirrorCounts(t *testing.T, srv *proxy.Server) map[string]uint64 {
	t.Helper()
	_, b := adminGet(t, srv, "/stats?format=json")
	var v struct {
		Mirrors map[string]map[string]uint64 `json:"mirrors"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("/stats: %v: %.200s", err, b)
	}
	return v.Mirrors["orders.local/main"]
}

func waitCount(t *testing.T, srv *proxy.Server, result string, want uint64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("mirror %s = %d", result, want), func() bool { return mirrorCounts(t, srv)[result] == want })
}

// sendH1 sends n requests (GET /seq/<i>) and checks every answer is v1's 200.
func sendH1(t *testing.T, c *http.Client, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		resp, err := c.Get("http://orders.local/seq/" + strconv.Itoa(i))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-Upstream") != "v1" {
			t.Fatalf("request %d: status %d from %q, want 200 from v1", i, resp.StatusCode, resp.Header.Get("X-Upstream"))
		}
	}
}

// TestMirrorCopiesEveryRequest: at 100 % the mirror gets every request of the route
// over the HTTP/1.1 fast path (method, target, headers, body peeked or read whole, the
// authority with "-shadow"), while the client's answers all come from v1; a body over
// the replay bound or chunked is not copied and is counted skipped_body.
func TestMirrorCopiesEveryRequest(t *testing.T) {
	v1 := testutil.StartHTTP(t, echoHandler("v1"))
	rec := &mirrorRecorder{}
	v2 := testutil.StartHTTP(t, rec)
	srv := startMirrorMeshd(t, mirrorMesh{V1: v1.Port, V2: v2.Port, Percent: 100}.yaml(t), nil)
	c := testutil.HTTPClient(t, srv.EgressAddr())

	type sent struct {
		method, url, path, host string
		body                    []byte
	}
	var reqs []sent
	for round := 0; round < 3; round++ {
		reqs = append(reqs,
			sent{"GET", "http://orders.local/a?x=1", "/a?x=1", "orders.local-shadow", nil},
			sent{"POST", "http://orders.local/b", "/b", "orders.local-shadow", bytes.Repeat([]byte("b"), 1<<10)},
			// Over the 16 KiB read buffer: read whole into a pooled buffer first.
			sent{"PUT", "http://orders.local/c", "/c", "orders.local-shadow", bytes.Repeat([]byte("c"), 40<<10)},
			sent{"DELETE", "http://orders.local:80/d", "/d", "orders.local-shadow:80", nil})
	}
	for i, s := range reqs {
		var body io.Reader
		if s.body != nil {
			body = bytes.NewReader(s.body)
		}
		req := newReq(t, s.method, s.url, body)
		req.Header.Set("X-Seq", strconv.Itoa(i))
		info := getEcho(t, c, req)
		if info.Name != "v1" || info.Method != s.method || info.BodyLen != int64(len(s.body)) {
			t.Fatalf("request %d answered by %s (%s, %d bytes), want v1's echo of %s with %d bytes", i, info.Name, info.Method, info.BodyLen, s.method, len(s.body))
		}
	}
	waitFor(t, "the mirror to receive every request", func() bool { return rec.count() == len(reqs) })
	bySeq := map[string]echoInfo{}
	for _, got := range rec.received() {
		bySeq[got.Header.Get("X-Seq")] = got
	}
	for i, s := range reqs {
		got, ok := bySeq[strconv.Itoa(i)]
		switch {
		case !ok:
			t.Errorf("request %d never reached the mirror", i)
		case got.Method != s.method || got.Path != s.path || got.Host != s.host || got.Body != string(s.body):
			t.Errorf("request %d mirrored as %s %s Host %q with %d bytes, want %s %s Host %q with %d bytes",
				i, got.Method, got.Path, got.Host, got.BodyLen, s.method, s.path, s.host, len(s.body))
		case got.Header.Get("X-Forwarded-For") == "" || got.Header.Get("X-Request-Id") == "":
			t.Errorf("request %d mirrored without the forwarding headers: %v", i, got.Header)
		}
	}
	waitCount(t, srv, "sent", uint64(len(reqs)))

	// Over the replay bound (64 KiB), and chunked (length unknown): v1 gets them, the
	// mirror does not.
	big := bytes.Repeat([]byte("x"), 100<<10)
	if info := getEcho(t, c, newReq(t, "POST", "http://orders.local/big", bytes.NewReader(big))); info.Name != "v1" || info.BodyLen != int64(len(big)) {
		t.Fatalf("big body: %s got %d bytes", info.Name, info.BodyLen)
	}
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write([]byte("chunk one "))
		_, _ = pw.Write([]byte("chunk two"))
		_ = pw.Close()
	}()
	if info := getEcho(t, c, newReq(t, "POST", "http://orders.local/chunked", pr)); info.Name != "v1" || info.Body != "chunk one chunk two" {
		t.Fatalf("chunked body: %s got %q", info.Name, info.Body)
	}
	counts := mirrorCounts(t, srv)
	if counts["skipped_body"] != 2 || counts["sent"] != uint64(len(reqs)) || counts["failed"] != 0 || counts["skipped_overflow"] != 0 {
		t.Errorf("mirror counters %v, want sent %d, skipped_body 2", counts, len(reqs))
	}
	if n := rec.count(); n != len(reqs) {
		t.Errorf("the mirror received %d requests, want %d (the skipped ones are not copied)", n, len(reqs))
	}
	// The Prometheus exposition carries the same counts.
	_, prom := adminGet(t, srv, "/stats/prometheus")
	found := false
	for _, line := range strings.Split(string(prom), "\n") {
		if strings.HasPrefix(line, "meshd_route_mirror_requests_total{") && strings.Contains(line, `result="skipped_body"`) &&
			strings.Contains(line, `route="main"`) && strings.HasSuffix(line, " 2") {
			found = true
		}
	}
	if !found {
		t.Errorf("no meshd_route_mirror_requests_total{route=\"main\",result=\"skipped_body\"} 2 in the exposition")
	}
}

// TestMirrorSampledShare: a 30 % mirror copies 3 requests in 10 with a draw that
// walks the range evenly (exactly 30 of 100), and, with math/rand, a share within 5
// standard deviations of 30 % over 300 requests.
func TestMirrorSampledShare(t *testing.T) {
	t.Run("injected draw", func(t *testing.T) {
		v1 := testutil.StartHTTP(t, echoHandler("v1"))
		rec := &mirrorRecorder{}
		v2 := testutil.StartHTTP(t, rec)
		var n atomic.Uint64
		draw := func() uint64 {
			i := n.Add(1) - 1
			return (i%10)*(math.MaxUint64/10) + math.MaxUint64/20 // 5 %, 15 %, ..., 95 % of the range
		}
		srv := startMirrorMeshd(t, mirrorMesh{V1: v1.Port, V2: v2.Port, Percent: 30}.yaml(t), draw)
		sendH1(t, testutil.HTTPClient(t, srv.EgressAddr()), 100)
		waitCount(t, srv, "sent", 30)
		if got := rec.count(); got != 30 {
			t.Errorf("mirror received %d of 100 requests, want exactly 30", got)
		}
		if n.Load() != 100 {
			t.Errorf("%d draws for 100 requests", n.Load())
		}
	})
	t.Run("math/rand", func(t *testing.T) {
		v1 := testutil.StartHTTP(t, echoHandler("v1"))
		rec := &mirrorRecorder{}
		v2 := testutil.StartHTTP(t, rec)
		srv := startMirrorMeshd(t, mirrorMesh{V1: v1.Port, V2: v2.Port, Percent: 30}.yaml(t), nil)
		const total = 300
		sendH1(t, testutil.HTTPClient(t, srv.EgressAddr()), total)
		// Every sampled request is launched before its client gets the answer: the count
		// of sampled ones is final now, the copies may still be in flight.
		var sampled uint64
		waitFor(t, "the copies to land", func() bool {
			c := mirrorCounts(t, srv)
			sampled = c["sent"] + c["failed"] + c["skipped_overflow"]
			return int(c["sent"]) == rec.count()
		})
		// Binomial(300, 0.3): sd 7.9; [50, 130] is over 5 sd either way.
		if sampled < 50 || sampled > 130 {
			t.Errorf("%d of %d requests mirrored at 30%%, want within [50, 130]", sampled, total)
		}
	})
}

// TestMirrorSlowOrDeadMirror: a mirror that takes 2 s to answer, or one that is down,
// changes neither the client's status nor its pace: all the client's requests are
// answered by v1 before the slow mirror answered any copy, and the dead one's copies
// are counted failed.
func TestMirrorSlowOrDeadMirror(t *testing.T) {
	t.Run("slow", func(t *testing.T) {
		v1 := testutil.StartHTTP(t, echoHandler("v1"))
		rec := &mirrorRecorder{delay: 2 * time.Second}
		v2 := testutil.StartHTTP(t, rec)
		srv := startMirrorMeshd(t, mirrorMesh{V1: v1.Port, V2: v2.Port, Percent: 100}.yaml(t), nil)
		sendH1(t, testutil.HTTPClient(t, srv.EgressAddr()), 20)
		// Had any client request waited for its copy, the mirror would have answered it.
		if a := rec.answered.Load(); a != 0 {
			t.Fatalf("the slow mirror answered %d copies before the client's 20 requests were done", a)
		}
		waitFor(t, "the copies to reach the mirror", func() bool { return rec.count() == 20 })
		waitCount(t, srv, "sent", 20)
	})
	t.Run("dead", func(t *testing.T) {
		v1 := testutil.StartHTTP(t, echoHandler("v1"))
		srv := startMirrorMeshd(t, mirrorMesh{V1: v1.Port, V2: testutil.ClosedPort(t), Percent: 100}.yaml(t), nil)
		sendH1(t, testutil.HTTPClient(t, srv.EgressAddr()), 20)
		waitCount(t, srv, "failed", 20)
		if c := mirrorCounts(t, srv); c["sent"] != 0 {
			t.Errorf("mirror counters %v, want 20 failed and none sent", c)
		}
	})
}

// TestMirrorBoundedInFlight: with a mirror that never answers, at most 64 copies are
// in flight to it; the rest are not copied and are counted skipped_overflow, and the
// client's requests are all answered by v1 meanwhile. Once the mirror answers, the
// slots come back.
func TestMirrorBoundedInFlight(t *testing.T) {
	v1 := testutil.StartHTTP(t, echoHandler("v1"))
	rec := &mirrorRecorder{gate: make(chan struct{})}
	v2 := testutil.StartHTTP(t, rec)
	srv := startMirrorMeshd(t, mirrorMesh{V1: v1.Port, V2: v2.Port, Percent: 100}.yaml(t), nil)
	c := testutil.HTTPClient(t, srv.EgressAddr())
	sendH1(t, c, 80)
	waitFor(t, "64 stalled copies at the mirror", func() bool { return rec.count() == 64 })
	counts := mirrorCounts(t, srv)
	if counts["skipped_overflow"] != 16 || counts["sent"] != 0 || counts["failed"] != 0 {
		t.Errorf("mirror counters %v, want skipped_overflow 16 and nothing finished", counts)
	}
	if n := proxy.MirrorInFlight(srv, "v2"); n != 64 {
		t.Errorf("copies in flight %d, want 64", n)
	}
	rec.mu.Lock()
	peak := rec.maxInFlight
	rec.mu.Unlock()
	if peak > 64 {
		t.Errorf("the mirror saw %d copies at once, over the bound of 64", peak)
	}
	close(rec.gate)
	waitCount(t, srv, "sent", 64)
	waitFor(t, "the slots to come back", func() bool { return proxy.MirrorInFlight(srv, "v2") == 0 })
	sendH1(t, c, 1)
	waitCount(t, srv, "sent", 65)
}

// TestMirrorHTTP2AndGRPC: the HTTP/2 front end copies HTTP/2 requests (an HTTP/1.1
// client to an HTTP/2 service too, through the bridge), and unary gRPC calls, with the
// shadow authority; a client stream over the replay bound is not copied.
func TestMirrorHTTP2AndGRPC(t *testing.T) {
	t.Run("http2", func(t *testing.T) {
		v1 := testutil.StartH2C(t, echoHandler("v1"))
		rec := &mirrorRecorder{}
		v2 := testutil.StartH2C(t, rec)
		srv := startMirrorMeshd(t, mirrorMesh{V1: v1.Port, V2: v2.Port, Proto: "http2", Kind: "http2Route", Percent: 100}.yaml(t), nil)
		body := bytes.Repeat([]byte("h"), 3<<10)
		for i, c := range []*http.Client{testutil.H2CClient(t, srv.EgressAddr()), testutil.HTTPClient(t, srv.EgressAddr())} {
			req := newReq(t, "POST", "http://orders.local/h2?i="+strconv.Itoa(i), bytes.NewReader(body))
			req.Header.Set("X-Seq", strconv.Itoa(i))
			if info := getEcho(t, c, req); info.Name != "v1" || info.Proto != "HTTP/2.0" || info.BodyLen != int64(len(body)) {
				t.Fatalf("client %d: answered by %s over %s with %d bytes", i, info.Name, info.Proto, info.BodyLen)
			}
		}
		waitFor(t, "two copies", func() bool { return rec.count() == 2 })
		for _, got := range rec.received() {
			i := got.Header.Get("X-Seq")
			if got.Method != "POST" || got.Path != "/h2?i="+i || got.Host != "orders.local-shadow" || got.Proto != "HTTP/2.0" || got.Body != string(body) {
				t.Errorf("copy %s: %s %s Host %q %s with %d bytes", i, got.Method, got.Path, got.Host, got.Proto, got.BodyLen)
			}
		}
		waitCount(t, srv, "sent", 2)
	})
	t.Run("grpc", func(t *testing.T) {
		primary := health.NewServer()
		v1 := testutil.StartGRPC(t, func(s *grpc.Server) {
			healthpb.RegisterHealthServer(s, primary)
			reflection.Register(s)
		})
		t.Cleanup(primary.Shutdown)
		var mu sync.Mutex
		var calls []string // method and :authority of each call the mirror received
		note := func(ctx context.Context, method string) {
			md, _ := metadata.FromIncomingContext(ctx)
			mu.Lock()
			calls = append(calls, method+" "+strings.Join(md.Get(":authority"), ","))
			mu.Unlock()
		}
		shadow := health.NewServer()
		shadow.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
		v2 := testutil.StartGRPC(t, func(s *grpc.Server) {
			healthpb.RegisterHealthServer(s, shadow)
			reflection.Register(s)
		}, grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			note(ctx, info.FullMethod)
			return h(ctx, req)
		}), grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			note(ss.Context(), info.FullMethod)
			return h(srv, ss)
		}))
		t.Cleanup(shadow.Shutdown)
		srv := startMirrorMeshd(t, mirrorMesh{V1: v1.Port, V2: v2.Port, Proto: "grpc", Kind: "grpcRoute", Match: "{serviceName: grpc.health.v1.Health}", Percent: 100}.yaml(t), nil)
		cc := grpcDial(t, srv.EgressAddr(), "orders.local")
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		hc := healthpb.NewHealthClient(cc)
		for i := 0; i < 5; i++ {
			// The primary says SERVING, the mirror NOT_SERVING: the answer is the primary's.
			resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
			if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("Check %d: %v %v", i, resp, err)
			}
		}
		waitCount(t, srv, "sent", 5)
		mu.Lock()
		got := append([]string(nil), calls...)
		mu.Unlock()
		if len(got) != 5 {
			t.Fatalf("the mirror received %d calls, want 5: %q", len(got), got)
		}
		for _, c := range got {
			if c != "/grpc.health.v1.Health/Check orders.local-shadow" {
				t.Errorf("mirrored call %q, want Check with authority orders.local-shadow", c)
			}
		}
		// A client stream over the replay bound (a 70 KB message) is not copied.
		cfg := mirrorMesh{V1: v1.Port, V2: v2.Port, Proto: "grpc", Kind: "grpcRoute", Match: "{serviceName: grpc.reflection.v1.ServerReflection}", Percent: 100}
		if _, err := srv.Apply(ctx, testutil.ParseConfig(t, cfg.yaml(t)), "test"); err != nil {
			t.Fatal(err)
		}
		st, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		big := &reflectionpb.ServerReflectionRequest{Host: strings.Repeat("h", 70_000),
			MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{ListServices: "*"}}
		if err := st.Send(big); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); err != nil {
			t.Fatalf("reflection answer: %v", err)
		}
		if err := st.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); err != io.EOF {
			t.Fatalf("end of the reflection stream: %v", err)
		}
		waitCount(t, srv, "skipped_body", 1)
		mu.Lock()
		defer mu.Unlock()
		if len(calls) != 5 {
			t.Errorf("the mirror received %d calls, want still 5: %q", len(calls), calls)
		}
	})
}

// TestMirrorReload: a mirror added by a reload starts copying at once, and one removed
// stops at once; its counters survive both.
func TestMirrorReload(t *testing.T) {
	v1 := testutil.StartHTTP(t, echoHandler("v1"))
	rec := &mirrorRecorder{}
	v2 := testutil.StartHTTP(t, rec)
	m := mirrorMesh{V1: v1.Port, V2: v2.Port}
	srv := startMirrorMeshd(t, m.yaml(t), nil)
	c := testutil.HTTPClient(t, srv.EgressAddr())
	apply := func(m mirrorMesh) {
		t.Helper()
		if _, err := srv.Apply(context.Background(), testutil.ParseConfig(t, m.yaml(t)), "test"); err != nil {
			t.Fatal(err)
		}
	}
	sendH1(t, c, 10)
	if n, counts := rec.count(), mirrorCounts(t, srv); n != 0 || counts != nil {
		t.Fatalf("without a mirror: %d copies, counters %v", n, counts)
	}
	m.Percent = 100
	apply(m)
	sendH1(t, c, 10)
	waitCount(t, srv, "sent", 10)
	if n := rec.count(); n != 10 {
		t.Fatalf("with a mirror: %d copies of 10 requests", n)
	}
	m.Percent = 0
	apply(m)
	sendH1(t, c, 10)
	// A copy is launched before the client's answer: none can still be on its way.
	if n, counts := rec.count(), mirrorCounts(t, srv); n != 10 || counts["sent"] != 10 {
		t.Fatalf("mirror removed: %d copies, counters %v; want 10 from before", n, counts)
	}
}
