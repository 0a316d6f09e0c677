package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

// TestH2MidBodyTimeoutStreamNotReused: a request whose deadline fires mid-body (its
// timer's goroutine cancels the attempt and detaches it from the stream's context)
// must not hand its stream to the next request on the connection while that goroutine
// may still be at work. Eight clients share one h2c connection, half of their requests
// time out mid-body and half are clean, so freed streams are taken at once; under
// -race (as CI runs) a reuse races with the timer's detach (found by CI in
// TestFaultMatrix h2c/slow-body). Every answer must also be right: the clean ones
// whole, the timed-out ones cut or 504.
func TestH2MidBodyTimeoutStreamNotReused(t *testing.T) {
	port := tcpServer(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			switch {
			case strings.HasPrefix(line, "GET /slow "):
				// A head and a byte, then nothing until meshd gives up on it.
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nx")
				_, _ = io.Copy(io.Discard, br)
				return
			case line == "\r\n":
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}
		}
	})
	srv, _ := meshDef{services: []svcDef{{name: "slow.t.local", node: "slow", port: port,
		listener: "timeout: {http: {perRequest: {unit: ms, value: 20}}}"}}}.start(t)
	// One connection: net/http opens another only past the 100 streams meshd allows.
	c := testutil.H2CClient(t, srv.EgressAddr())
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for i := range 15 {
				path := "/ok"
				if i%2 == 0 {
					path = "/slow"
				}
				req, _ := http.NewRequest("GET", "http://slow.t.local"+path, nil)
				resp, err := c.Do(req)
				if err != nil {
					errs <- fmt.Errorf("%s: %w", path, err)
					return
				}
				b, rerr := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case path == "/ok" && (resp.StatusCode != 200 || string(b) != "ok" || rerr != nil):
					errs <- fmt.Errorf("/ok: %d %q %v", resp.StatusCode, b, rerr)
					return
				case path == "/slow" && resp.StatusCode == 200 && rerr == nil:
					errs <- fmt.Errorf("/slow: a whole 200 (%q) from a body cut by the timeout", b)
					return
				case path == "/slow" && resp.StatusCode != 200 && resp.StatusCode != 504:
					errs <- fmt.Errorf("/slow: %d, want a cut 200 or 504", resp.StatusCode)
					return
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the clients did not finish in 30 s")
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
