package bench

import (
	"net"
	"strconv"
	"testing"
)

// freePort's ports come from below the ephemeral range, where outgoing connections of
// the load generator cannot take them, and are bindable.
func TestFreePortBelowEphemeralRange(t *testing.T) {
	lo, _ := ephemeralRange()
	for i := 0; i < 20; i++ {
		p, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		if p < freePortBase || p >= lo {
			t.Fatalf("freePort() = %d, want a port in [%d, %d)", p, freePortBase, lo)
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d from freePort: %v", p, err)
		}
		ln.Close()
	}
}

// freePort does not hand the same port out twice: the peers of one run are given their
// ports before any of them binds, so a port still free is no proof it is not promised.
func TestFreePortOncePerProcess(t *testing.T) {
	seen := map[int]bool{}
	for i := 0; i < 500; i++ {
		p, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		if seen[p] {
			t.Fatalf("freePort handed out %d twice (call %d)", p, i+1)
		}
		seen[p] = true
	}
}
