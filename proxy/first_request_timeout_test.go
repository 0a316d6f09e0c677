package proxy_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
	meshtls "github.com/meshd/meshd/tls"
)

// firstRequestTO is the first-request timeout of the tests below: short, so that the
// tests wait little, and far from the keep-alive idle (1h) they must not fall back on.
const firstRequestTO = 300 * time.Millisecond

// TestFirstRequestTimeout: a connection must complete its first request head within
// FirstRequestTimeout of accept, whatever the protocol (HAProxy's timeout http-request):
// silent connections, a partial HTTP/1.1 head, an h2c preface alone and half a HEADERS
// block are all closed (408 where an HTTP/1.1 head began; GOAWAY for HTTP/2) and
// counted, while a normal client is served and a kept-alive connection waits for its
// next request up to the keep-alive idle.
func TestFirstRequestTimeout(t *testing.T) {
	up := testutil.StartHTTP(t, echoHandler("echo"))
	yaml := meshDef{services: []svcDef{{name: "echo.t.local", node: "echo", port: up.Port}}}.yaml()
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", FirstRequestTimeout: firstRequestTO, KeepAliveIdle: time.Hour}, yaml)
	client := testutil.HTTPClient(t, srv.EgressAddr())

	// A normal client keeps being served while the hostile connections wait.
	stop := make(chan struct{})
	served := make(chan error, 1)
	go func() {
		var err error
		defer func() { served <- err }()
		for i := 0; i < 200; i++ { // bounded: at most 200 requests, 20ms apart
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			resp, rerr := client.Get("http://echo.t.local/")
			if rerr != nil {
				err = rerr
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				err = errors.New("normal client: status " + resp.Status)
				return
			}
		}
	}()

	t.Run("silent connection to egress", func(t *testing.T) {
		expectCutOff(t, dialRaw(t, srv.EgressAddr()))
	})
	t.Run("silent connection to ingress", func(t *testing.T) {
		expectCutOff(t, dialRaw(t, srv.IngressAddr()))
	})
	t.Run("partial HTTP/1.1 head gets 408", func(t *testing.T) {
		c := dialRaw(t, srv.EgressAddr())
		start := time.Now()
		c.send(t, "GET / HTTP/1.1\r\nHost: echo.t.local\r\n")
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, _ := c.read(t, "GET")
		if resp.StatusCode != http.StatusRequestTimeout {
			t.Fatalf("status %d, want 408", resp.StatusCode)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("answered after %v, want about the %v first-request timeout (not the 30s header timeout)", d, firstRequestTO)
		}
		c.expectClosed(t)
	})
	t.Run("h2c preface only gets GOAWAY", func(t *testing.T) {
		c := dialRaw(t, srv.EgressAddr())
		c.send(t, http2.ClientPreface)
		expectGoAway(t, c)
	})
	t.Run("h2c half HEADERS block gets GOAWAY", func(t *testing.T) {
		c := dialRaw(t, srv.EgressAddr())
		c.send(t, http2.ClientPreface)
		fr := http2.NewFramer(c, c.br)
		if err := fr.WriteSettings(); err != nil {
			t.Fatal(err)
		}
		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "echo.t.local"}, {":path", "/"}} {
			_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		// No END_HEADERS: the block waits for a CONTINUATION that never comes.
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true}); err != nil {
			t.Fatal(err)
		}
		expectGoAway(t, c)
	})
	t.Run("keep-alive after the first request is not bound by it", func(t *testing.T) {
		c := dialRaw(t, srv.EgressAddr())
		c.send(t, "GET / HTTP/1.1\r\nHost: echo.t.local\r\n\r\n")
		if resp, _ := c.read(t, "GET"); resp.StatusCode != http.StatusOK {
			t.Fatalf("first request: %d", resp.StatusCode)
		}
		time.Sleep(3 * firstRequestTO)
		c.send(t, "GET / HTTP/1.1\r\nHost: echo.t.local\r\n\r\n")
		if resp, _ := c.read(t, "GET"); resp.StatusCode != http.StatusOK {
			t.Fatalf("request after an idle pause longer than the first-request timeout: %d", resp.StatusCode)
		}
	})
	t.Run("h2c connection after its first request is not bound by it", func(t *testing.T) {
		h2c := testutil.H2CClient(t, srv.EgressAddr())
		for i := range 2 {
			resp, err := h2c.Get("http://echo.t.local/")
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("request %d: %d", i, resp.StatusCode)
			}
			time.Sleep(3 * firstRequestTO)
		}
	})

	close(stop)
	if err := <-served; err != nil {
		t.Fatalf("normal client while hostile connections waited: %v", err)
	}

	_, statsB := adminGet(t, srv, "/stats")
	stats := string(statsB)
	for _, want := range []string{
		"listener.egress.downstream_cx_first_request_timeout: 4\n",
		"listener.ingress.downstream_cx_first_request_timeout: 1\n",
	} {
		if !strings.Contains(stats, want) {
			t.Errorf("/stats lacks %q", want)
		}
	}
	_, promB := adminGet(t, srv, "/stats/prometheus")
	prom := string(promB)
	for _, want := range []string{
		`meshd_listener_first_request_timeouts_total{listener="egress"} 4`,
		`meshd_listener_first_request_timeouts_total{listener="ingress"} 1`,
	} {
		if !strings.Contains(prom, want) {
			t.Errorf("/stats/prometheus lacks %q", want)
		}
	}
}

// expectCutOff: the connection, which sent nothing, is open a while before the
// first-request timeout and closed by meshd (EOF, no bytes) soon after it.
func expectCutOff(t *testing.T, c *rawConn) {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(firstRequestTO / 3))
	if _, err := c.br.ReadByte(); !isNetTimeout(err) {
		t.Fatalf("before the timeout: %v, want the connection still open", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := c.br.ReadByte()
	if err == nil {
		t.Fatalf("read %q, want the connection closed with nothing sent", b)
	}
	if isNetTimeout(err) {
		t.Fatalf("connection still open %v after accept", time.Since(start))
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("closed after %v, want about the %v first-request timeout", d, firstRequestTO)
	}
}

// expectGoAway reads the server's frames until its GOAWAY (stream 0: no request was
// accepted), then expects the connection closed.
func expectGoAway(t *testing.T, c *rawConn) {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	fr := http2.NewFramer(io.Discard, c.br)
	for i := 0; ; i++ {
		if i == 20 {
			t.Fatal("no GOAWAY in 20 frames")
		}
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading frames: %v, want GOAWAY", err)
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			if ga.LastStreamID != 0 {
				t.Errorf("GOAWAY last stream %d, want 0", ga.LastStreamID)
			}
			break
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("GOAWAY after %v, want about the %v first-request timeout", d, firstRequestTO)
	}
	c.expectClosed(t)
}

func isNetTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestFirstRequestTimeoutRefused: a negative FirstRequestTimeout is refused, naming it.
func TestFirstRequestTimeoutRefused(t *testing.T) {
	_, err := proxy.New(proxy.Options{Node: "app", FirstRequestTimeout: -time.Second})
	if err == nil || !strings.Contains(err.Error(), "FirstRequestTimeout -1s") {
		t.Fatalf("New: %v, want the negative FirstRequestTimeout refused", err)
	}
}

// TestFirstRequestTimeoutTLS: on a listener that terminates TLS, the first-request
// timeout starts when the handshake ends (the handshake has its own timeout): a client
// slow to start its handshake is still served, one that completes it and then sends
// nothing (HTTP/1.1) or only the h2 preface is cut off after the timeout.
func TestFirstRequestTimeoutTLS(t *testing.T) {
	p := newPKI(t)
	p.write("app", meshtls.WorkloadRequest{DNSNames: []string{appServerName}})
	up := testutil.StartHTTP(t, echoHandler("app"))
	srv, _ := startTLSMeshd(t, tlsNodeYAML(up.Port, "http", p.listenerTLS("STRICT", false), ""),
		proxy.Options{FirstRequestTimeout: firstRequestTO, KeepAliveIdle: time.Hour})

	handshake := func(t *testing.T, protos []string, wait time.Duration) *rawConn {
		t.Helper()
		c := dialRaw(t, srv.IngressAddr())
		time.Sleep(wait)
		tc := tls.Client(c.Conn, p.client(protos))
		_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
		if err := tc.Handshake(); err != nil {
			t.Fatalf("handshake: %v", err)
		}
		_ = tc.SetDeadline(time.Time{})
		return &rawConn{Conn: tc, br: bufio.NewReader(tc)}
	}

	t.Run("a slow handshake does not eat the first request's time", func(t *testing.T) {
		c := handshake(t, []string{"http/1.1"}, 2*firstRequestTO)
		c.send(t, "GET / HTTP/1.1\r\nHost: "+appServerName+"\r\n\r\n")
		if resp, _ := c.read(t, "GET"); resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, want 200", resp.StatusCode)
		}
	})
	t.Run("HTTP/1.1 silent after the handshake", func(t *testing.T) {
		expectCutOff(t, handshake(t, []string{"http/1.1"}, 0))
	})
	t.Run("h2 preface only after the handshake", func(t *testing.T) {
		c := handshake(t, []string{"h2"}, 0)
		c.send(t, http2.ClientPreface)
		expectGoAway(t, c)
	})
}
