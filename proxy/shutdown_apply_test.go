package proxy_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// gateDNS blocks every lookup until release is closed, reporting each call on called;
// then it answers 127.0.0.1.
type gateDNS struct {
	called  chan struct{}
	release chan struct{}
}

func (r *gateDNS) LookupIP(ctx context.Context, _, _ string) ([]netip.Addr, time.Duration, error) {
	select {
	case r.called <- struct{}{}:
	default:
	}
	select {
	case <-r.release:
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, time.Minute, nil
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
}

func (r *gateDNS) LookupSRV(context.Context, string) ([]discovery.SRV, time.Duration, error) {
	return nil, 0, discovery.ErrNXDomain
}

// An apply still compiling when Shutdown retires the config in force must not swap its
// snapshot in afterwards: nothing would close its clusters (their health checkers, pools).
// It is rejected with ErrShutdown and the retired snapshot stays the last one.
func TestApplyMidCompileDuringShutdownIsRejected(t *testing.T) {
	res := &gateDNS{called: make(chan struct{}, 1), release: make(chan struct{})}
	hc := "healthCheck: {protocol: tcp, intervalMillis: 5000, timeoutMillis: 2000, healthyThreshold: 2, unhealthyThreshold: 2}"
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", DNS: res, FirstResolveWait: time.Minute, Clock: newTickClock()}, resMesh([]int{2}, hc, ""))
	before := srv.Snapshot()

	dnsMesh := strings.Replace(resMesh([]int{2}, hc, ""), `static: {endpoints: ["127.0.0.1:2"]}`, `dns: {hostname: svc.internal, responseType: ENDPOINTS}`, 1)
	if dnsMesh == resMesh([]int{2}, hc, "") {
		t.Fatal("test config: the static endpoints were not replaced")
	}
	type result struct {
		snap *proxy.Snapshot
		err  error
	}
	applied := make(chan result, 1)
	go func() {
		snap, err := srv.Apply(context.Background(), testutil.ParseConfig(t, dnsMesh), "t")
		applied <- result{snap, err}
	}()
	select {
	case <-res.called: // the apply is compiling, waiting for the first DNS answer
	case <-time.After(10 * time.Second):
		t.Fatal("the apply never resolved its endpoints")
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	close(res.release)
	r := <-applied
	if !errors.Is(r.err, proxy.ErrShutdown) {
		t.Fatalf("apply finishing after Shutdown: snapshot %v, err %v; want ErrShutdown", r.snap != nil, r.err)
	}
	if srv.Snapshot() != before {
		t.Fatal("an apply swapped its snapshot in after Shutdown")
	}
}
