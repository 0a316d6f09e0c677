package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// idleClient is a keep-alive client of the parking tests.
type idleClient struct {
	c  net.Conn
	br *bufio.Reader
}

func (cl *idleClient) get(host string) error {
	_ = cl.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(cl.c, "GET /a HTTP/1.1\r\nHost: "+host+"\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(cl.br, nil)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return err
}

// openIdle opens n keep-alive clients to addr, each answered once, 32 at a time.
func openIdle(t *testing.T, addr, host string, n int) []*idleClient {
	t.Helper()
	cls := make([]*idleClient, n)
	t.Cleanup(func() {
		for _, cl := range cls {
			if cl != nil {
				_ = cl.c.Close()
			}
		}
	})
	err := parallel(n, func(i int) error {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			return err
		}
		cls[i] = &idleClient{c: c, br: bufio.NewReaderSize(c, 512)}
		return cls[i].get(host)
	})
	if err != nil {
		t.Fatalf("opening %d idle clients: %v", n, err)
	}
	return cls
}

// parallel runs f(0..n-1) on 32 goroutines and returns the first error.
func parallel(n int, f func(i int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		next  int
		first error
	)
	for range min(32, n) {
		wg.Go(func() {
			for {
				mu.Lock()
				i := next
				next++
				stop := i >= n || first != nil
				mu.Unlock()
				if stop {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("client %d: %w", i, err)
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return first
}

// raiseNoFile lifts the test process's soft fd limit to its hard limit (a client and
// meshd's side of each connection are both in this process).
func raiseNoFile(t *testing.T, need uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur < need && lim.Max >= need {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
	}
	if lim.Cur < need {
		t.Skipf("RLIMIT_NOFILE %d, need %d", lim.Cur, need)
	}
}

func TestParkMeasure(t *testing.T) {
	if os.Getenv("PARK_MEASURE") == "" {
		t.Skip("measurement")
	}
	const n = 5000
	raiseNoFile(t, 3*n)
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	yaml := meshDef{services: []svcDef{{name: "echo.t.local", node: "echo", port: up.Port}}}.yaml()
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", Limits: proxy.ConnLimits{UpstreamHold: 20 * time.Millisecond, MaxConnections: -1}}, yaml)
	_ = openIdle(t, srv.EgressAddr(), "echo.t.local", n)
	time.Sleep(2 * time.Second)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("goroutines %d parked %d heapInuse %d MiB stackInuse %d MiB", runtime.NumGoroutine(), srv.ParkedConns(), ms.HeapInuse>>20, ms.StackInuse>>20)
	f, _ := os.Create("/tmp/x/heap.prof")
	_ = pprof.Lookup("heap").WriteTo(f, 0)
	f.Close()
	_ = context.Background()
}
