package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/meshd/meshd/config"
)

// TestIdleReaper: the Server's reaper goroutine closes pooled upstream connections that
// sat idle for the maximum age, so a connection the upstream server closed does not
// linger in the pool. It is started by Start and joined by Shutdown (goleak).
func TestIdleReaper(t *testing.T) {
	closed := make(chan struct{}, 4)
	addr := serveConns(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			if _, err := http.ReadRequest(br); err != nil {
				closed <- struct{}{} // meshd closed its end
				return
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	_, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	cfg, err := config.Parse([]byte(fmt.Sprintf(`mesh: {meshName: t, spec: {egressFilter: {type: DROP_ALL}}}
virtualNodes:
  - virtualNodeName: app
    spec:
      listeners: [{portMapping: {port: 1, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:1"]}}
      backends: [{virtualService: {virtualServiceName: svc.t.local}}]
  - virtualNodeName: svc
    spec:
      listeners: [{portMapping: {port: %d, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:%d"]}}
virtualServices:
  - virtualServiceName: svc.t.local
    spec: {provider: {virtualNode: {virtualNodeName: svc}}}
`, port, port)))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Node: "app", IngressAddr: "127.0.0.1:0", EgressAddr: "127.0.0.1:0", AdminAddr: "off", EgressAddr6: "off"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(context.Background(), cfg, "test"); err != nil {
		t.Fatal(err)
	}
	s.reaper.Every, s.reaper.MaxAge = 20*time.Millisecond, 100*time.Millisecond
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())

	c, err := net.Dial("tcp", s.EgressAddr())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc.t.local\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	c.Close()
	// The upstream connection went back to the pool; the reaper must close it.
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the idle upstream connection was not closed by the reaper")
	}
	// discard counts the connection out just after closing it.
	for deadline := time.Now().Add(5 * time.Second); s.state.Load().Cluster("svc").OpenConns() != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("open upstream connections = %d after the sweep, want 0", s.state.Load().Cluster("svc").OpenConns())
		}
		time.Sleep(time.Millisecond)
	}
}
