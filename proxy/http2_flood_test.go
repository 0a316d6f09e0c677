package proxy_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/meshd/meshd/internal/h2"
	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// TestHTTP2FloodClosedAndCounted: an h2c client that floods meshd with PING frames
// (past the 1000-frame burst) loses its connection with GOAWAY ENHANCE_YOUR_CALM, and
// the defence is counted on /stats and /stats/prometheus; meshd keeps serving others.
func TestHTTP2FloodClosedAndCounted(t *testing.T) {
	up := testutil.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	srv, _ := meshDef{services: []svcDef{
		{name: "h2.t.local", node: "h2", port: up.Port, proto: "http2", routes: []string{
			`{http2Route: {match: {prefix: /}, action: {weightedTargets: [{virtualNode: h2, weight: 1}]}}}`}},
	}}.start(t)

	c, err := net.Dial("tcp", srv.EgressAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fr := http2.NewFramer(c, bufio.NewReader(c))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	_ = fr.WriteSettings()
	go func() {
		for range 1500 {
			if fr.WritePing(false, [8]byte{1}) != nil {
				return
			}
		}
	}()
	var ga *http2.GoAwayFrame
	for ga == nil {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no GOAWAY before the connection ended: %v", err)
		}
		ga, _ = f.(*http2.GoAwayFrame)
	}
	if ga.ErrCode != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("GOAWAY %v, want ENHANCE_YOUR_CALM", ga.ErrCode)
	}

	fams := scrape(t, srv, "")
	found := false
	for _, m := range fams["meshd_http2_flood_closed_total"].GetMetric() {
		l := labelsOf(m)
		if l["side"] == "egress" && l["defence"] == "ping_flood" {
			found = true
			if v := m.GetCounter().GetValue(); v != 1 {
				t.Errorf("meshd_http2_flood_closed_total%v = %v, want 1", l, v)
			}
		}
	}
	if !found {
		t.Errorf("no meshd_http2_flood_closed_total{side=egress,defence=ping_flood}")
	}
	resp, err := http.Get("http://" + srv.AdminAddr() + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "http2.egress.ping_flood: 1\n") {
		t.Errorf("/stats has no http2.egress.ping_flood: 1 line")
	}

	// Others are still served.
	h := testutil.H2CClient(t, srv.EgressAddr())
	r, err := h.Get("http://h2.t.local/")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 200 {
		t.Fatalf("after the flood: %d", r.StatusCode)
	}
}

// TestHTTP2LimitsConfigurable: Options.HTTP2 (meshd run --http2-limits) reaches the
// downstream connections: with max-concurrent-streams=1, meshd advertises 1 and
// refuses a second concurrent stream with REFUSED_STREAM.
func TestHTTP2LimitsConfigurable(t *testing.T) {
	release := make(chan struct{})
	up := testutil.StartH2C(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { <-release }))
	defer close(release)
	yaml := meshDef{services: []svcDef{
		{name: "h2.t.local", node: "h2", port: up.Port, proto: "http2", routes: []string{
			`{http2Route: {match: {prefix: /}, action: {weightedTargets: [{virtualNode: h2, weight: 1}]}}}`}},
	}}.yaml()
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", HTTP2: h2.Limits{MaxConcurrentStreams: 1}}, yaml)

	c, err := net.Dial("tcp", srv.EgressAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fr := http2.NewFramer(c, bufio.NewReader(c))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	_ = fr.WriteSettings()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "h2.t.local"}, {":path", "/"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	block := hb.Bytes()
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block, EndStream: true, EndHeaders: true})
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block, EndStream: true, EndHeaders: true})
	advertised := uint32(0)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if v, ok := f.Value(http2.SettingMaxConcurrentStreams); ok {
				advertised = v
			}
		case *http2.RSTStreamFrame:
			if f.StreamID != 3 || f.ErrCode != http2.ErrCodeRefusedStream {
				t.Fatalf("RST_STREAM %d %v, want stream 3 REFUSED_STREAM", f.StreamID, f.ErrCode)
			}
			if advertised != 1 {
				t.Fatalf("SETTINGS_MAX_CONCURRENT_STREAMS %d, want 1", advertised)
			}
			return
		}
	}
}
