package proxy_test

import (
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/meshd/meshd/internal/testutil"
)

// connectionPool.tcp.maxConnections holds across a reload that rebuilds the cluster (a
// listener setting changed): the connection opened before it still counts, so a new
// one beyond the limit is rejected rather than admitted by the successor's fresh gauge.
func TestL4MaxConnectionsHoldsAcrossReload(t *testing.T) {
	a := tcpServer(t, echo)
	m := l4Mesh{Egress: "DROP_ALL", App: 1, A: a, B: testutil.ClosedPort(t), Web: testutil.ClosedPort(t), WA: 1, WB: 0,
		AEndpoints: fmt.Sprintf(`"127.0.0.1:%d"`, a), AListener: ", connectionPool: {tcp: {maxConnections: 1}}"}
	srv, seam := m.start(t)
	seam.set("10.99.0.1:7000")
	first := dialTCP(t, srv.EgressAddr())
	if _, err := first.Write([]byte("1")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(first, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	before := srv.Snapshot().Version()

	m.AListener += ", timeout: {tcp: {idle: {unit: s, value: 600}}}" // rebuilds db-a
	yaml := testutil.Render(t, l4MeshTmpl, m)
	if _, err := srv.Apply(context.Background(), testutil.ParseConfig(t, yaml), "t"); err != nil {
		t.Fatal(err)
	}
	if srv.Snapshot().Version() == before {
		t.Fatal("the reload did not change the config")
	}
	waitL4(t, srv, func(p clustersPage) bool { return p.l4("db-a").Active == 1 })

	second := dialTCP(t, srv.EgressAddr())
	expectEOF(t, second)
	waitL4(t, srv, func(p clustersPage) bool { return p.l4("db-a").Rejected == 1 && p.l4("db-a").Active == 1 })
	// The first connection still relays.
	if _, err := first.Write([]byte("2")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(first, make([]byte, 1)); err != nil {
		t.Fatalf("the connection opened before the reload: %v", err)
	}
}
