//go:build linux

package testutil

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/netnstest"
)

var netnsSeq atomic.Int64

// NetnsPair is an app namespace and a peer namespace joined by a veth pair, with
// addresses that exist only inside them:
// app 10.200.0.1/24 fd20::1/64 <-> peer 10.200.0.2/24 fd20::2/64.
type NetnsPair struct {
	App, Peer string
}

// Addresses of a NetnsPair.
const (
	NetnsAppIP   = "10.200.0.1"
	NetnsPeerIP  = "10.200.0.2"
	NetnsAppIP6  = "fd20::1"
	NetnsPeerIP6 = "fd20::2"
)

// NewNetnsPair creates the namespaces (deleted at cleanup) after netnstest.RequireNetns.
func NewNetnsPair(t testing.TB) *NetnsPair {
	t.Helper()
	netnstest.RequireNetns(t)
	id := fmt.Sprintf("%d-%d", os.Getpid(), netnsSeq.Add(1))
	n := &NetnsPair{App: "meshd-e2e-app-" + id, Peer: "meshd-e2e-peer-" + id}
	for _, ns := range []string{n.App, n.Peer} {
		netnstest.Sh(t, "ip", "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v %s", ns, err, out)
			}
		})
	}
	netnstest.Sh(t, "ip", "-n", n.App, "link", "add", "va", "type", "veth", "peer", "name", "vp", "netns", n.Peer)
	netnstest.Sh(t, "ip", "-n", n.App, "addr", "add", NetnsAppIP+"/24", "dev", "va")
	netnstest.Sh(t, "ip", "-n", n.App, "addr", "add", NetnsAppIP6+"/64", "dev", "va", "nodad")
	netnstest.Sh(t, "ip", "-n", n.Peer, "addr", "add", NetnsPeerIP+"/24", "dev", "vp")
	netnstest.Sh(t, "ip", "-n", n.Peer, "addr", "add", NetnsPeerIP6+"/64", "dev", "vp", "nodad")
	for _, ns := range []string{n.App, n.Peer} {
		netnstest.Sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	netnstest.Sh(t, "ip", "-n", n.App, "link", "set", "va", "up")
	netnstest.Sh(t, "ip", "-n", n.Peer, "link", "set", "vp", "up")
	return n
}

// ListenIn opens a TCP listener in ns; it is closed at cleanup.
func ListenIn(t testing.TB, ns, network, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := netnstest.InNetns(ns, 0, 0, func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	}); err != nil {
		t.Fatalf("listen %s %s in %s: %v", network, addr, ns, err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// DialIn connects from ns as uid/gid (0: root) to addr.
func DialIn(ctx context.Context, ns string, uid, gid int, addr string) (net.Conn, error) {
	var c net.Conn
	err := netnstest.InNetns(ns, uid, gid, func() (err error) {
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}
