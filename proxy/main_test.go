package proxy_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// svcDef is one backend virtual service of the test node "app" and the virtual node
// that provides it.
type svcDef struct {
	name     string   // virtual service name
	node     string   // provider virtual node
	port     int      // its listener port and (static) endpoint port
	proto    string   // listener protocol; "" is http
	listener string   // extra listener fields in YAML flow style, e.g. "timeout: {...}"
	routes   []string // route specs in YAML flow style; set: a virtual router provides the service
}

// meshDef describes a test mesh: node "app" (listener appPort) with the services as
// its backends.
type meshDef struct {
	egress   string // DROP_ALL (default) or ALLOW_ALL
	appPort  int
	services []svcDef
}

func (m meshDef) yaml() string {
	var b strings.Builder
	egress := m.egress
	if egress == "" {
		egress = "DROP_ALL"
	}
	appPort := m.appPort
	if appPort == 0 {
		appPort = 1 // the ingress app is unused by this test; nothing listens there
	}
	fmt.Fprintf(&b, "mesh:\n  meshName: t\n  spec: {egressFilter: {type: %s}}\n", egress)
	fmt.Fprintf(&b, "virtualNodes:\n  - virtualNodeName: app\n    spec:\n      listeners: [{portMapping: {port: %d, protocol: http}}]\n", appPort)
	fmt.Fprintf(&b, "      serviceDiscovery: {static: {endpoints: [\"127.0.0.1:%d\"]}}\n", appPort)
	if len(m.services) > 0 {
		b.WriteString("      backends:\n")
		for _, s := range m.services {
			fmt.Fprintf(&b, "        - virtualService: {virtualServiceName: %s}\n", s.name)
		}
	}
	for _, s := range m.services {
		extra := ""
		if s.listener != "" {
			extra = ", " + s.listener
		}
		fmt.Fprintf(&b, "  - virtualNodeName: %s\n    spec:\n      listeners: [{portMapping: {port: %d, protocol: %s}%s}]\n", s.node, s.port, s.protoOr(), extra)
		fmt.Fprintf(&b, "      serviceDiscovery: {static: {endpoints: [\"127.0.0.1:%d\"]}}\n", s.port)
	}
	if len(m.services) > 0 {
		b.WriteString("virtualServices:\n")
		for _, s := range m.services {
			if len(s.routes) > 0 {
				fmt.Fprintf(&b, "  - virtualServiceName: %s\n    spec: {provider: {virtualRouter: {virtualRouterName: %s-router}}}\n", s.name, s.node)
			} else {
				fmt.Fprintf(&b, "  - virtualServiceName: %s\n    spec: {provider: {virtualNode: {virtualNodeName: %s}}}\n", s.name, s.node)
			}
		}
	}
	var routers, routes strings.Builder
	for _, s := range m.services {
		if len(s.routes) == 0 {
			continue
		}
		fmt.Fprintf(&routers, "  - virtualRouterName: %s-router\n    spec: {listeners: [{portMapping: {port: 80, protocol: %s}}]}\n", s.node, s.protoOr())
		for i, r := range s.routes {
			fmt.Fprintf(&routes, "  - routeName: %s-r%d\n    virtualRouterName: %s-router\n    spec: %s\n", s.node, i, s.node, r)
		}
	}
	if routers.Len() > 0 {
		b.WriteString("virtualRouters:\n" + routers.String() + "routes:\n" + routes.String())
	}
	return b.String()
}

func (s svcDef) protoOr() string {
	if s.proto == "" {
		return "http"
	}
	return s.proto
}

// echoInfo is what echoHandler reports about the request it received.
type echoInfo struct {
	Name    string
	Method  string
	Host    string
	Proto   string
	Path    string
	Header  http.Header
	Trailer http.Header
	Body    string
	BodyLen int64
}

// echoHandler answers with a JSON echoInfo of the request, naming itself.
func echoHandler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		info := echoInfo{Name: name, Method: r.Method, Host: r.Host, Proto: r.Proto, Path: r.URL.RequestURI(),
			Header: r.Header, Trailer: r.Trailer, Body: string(body), BodyLen: int64(len(body))}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Upstream", name)
		_ = json.NewEncoder(w).Encode(info)
	})
}

// getEcho sends req with c and decodes the echoInfo, failing on a non-200 answer.
func getEcho(t *testing.T, c *http.Client, req *http.Request) echoInfo {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s %s: status %d (%s): %s", req.Method, req.URL, resp.StatusCode, resp.Header.Get("X-Meshd-Error"), body)
	}
	var info echoInfo
	if err := json.Unmarshal(body, &info); err != nil {
		t.Fatalf("decode echo: %v: %q", err, body)
	}
	return info
}

func newReq(t *testing.T, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// rawConn is a client connection for hand-written requests, with a deadline so a
// stuck exchange fails the test instead of hanging it.
type rawConn struct {
	net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { _ = c.Close() })
	return &rawConn{Conn: c, br: bufio.NewReader(c)}
}

func (c *rawConn) send(t *testing.T, s string) {
	t.Helper()
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// read reads one response to a request with method, body included.
func (c *rawConn) read(t *testing.T, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	_ = resp.Body.Close()
	return resp, string(body)
}

// expectClosed asserts the server closes the connection with no further bytes.
func (c *rawConn) expectClosed(t *testing.T) {
	t.Helper()
	b, err := c.br.ReadByte()
	if err == nil {
		t.Fatalf("connection still open: read %q", b)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("connection not closed: %v", err)
	}
}

// start brings up one meshd node "app" for def.
func (m meshDef) start(t *testing.T) (*proxy.Server, *http.Client) {
	t.Helper()
	srv := testutil.StartMeshd(t, "app", m.yaml())
	return srv, testutil.HTTPClient(t, srv.EgressAddr())
}
