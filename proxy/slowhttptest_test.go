package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
)

// TestSlowHTTPTest runs slowhttptest (the Debian package) against meshd's ingress
// listener in each of its slow-client modes for a bounded time: slow headers
// (slowloris, -H), slow body (R-U-Dead-Yet, -B) and slow read (-X). Meshd here runs
// with short but real bounds (first-request and header timeout, stream idle), so a slow
// client is cut within the run. Meanwhile a normal client probes every 100 ms and must
// be served every time, and slowhttptest must report its connections closed (by meshd:
// its own interval is longer than meshd's bound). Without the binary the test skips,
// except under CI=true, where it fails (.ci/run installs it).
func TestSlowHTTPTest(t *testing.T) {
	bin, err := exec.LookPath("slowhttptest")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("slowhttptest is not installed (CI=true; .ci/run installs the Debian package): %v", err)
		}
		t.Skipf("slowhttptest is not installed (Debian package slowhttptest): %v", err)
	}
	if testing.Short() {
		t.Skip("-short: slowhttptest runs 10 s per mode")
	}
	big := bytes.Repeat([]byte("s"), 1<<20)
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/probe" {
			_, _ = io.WriteString(w, "ok")
			return
		}
		_, _ = w.Write(big)
	}))
	const bound = 2 * time.Second
	srv := testutil.StartMeshdOpts(t, proxy.Options{Node: "app", FirstRequestTimeout: bound, HeaderTimeout: bound, StreamIdle: bound},
		meshDef{appPort: up.Port}.yaml())
	addr := srv.IngressAddr()

	for _, tc := range []struct {
		name string
		args []string
	}{
		// Slowloris: a header line every 3 s; the first-request timeout cuts each
		// connection 2 s after accept.
		{"slow-headers", []string{"-H", "-i", "3"}},
		// A body byte pair every 3 s; the stream idle bound (2 s) cuts it.
		{"slow-body", []string{"-B", "-i", "3", "-s", "8192"}},
		// A 1 MiB response read 5 bytes a second through a tiny window; meshd's write
		// waits at most the stream idle bound.
		{"slow-read", []string{"-X", "-k", "2", "-n", "1", "-z", "5", "-w", "512", "-y", "1024"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := t.TempDir() + "/report"
			args := append([]string{"-c", "100", "-r", "50", "-l", "10", "-p", "3", "-g", "-o", prefix,
				"-u", "http://" + addr + "/"}, tc.args...)
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, args...)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out

			probeCtx, stopProbes := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			var probes, failures int
			var firstFailure string
			wg.Go(func() {
				client := testutil.HTTPClient(t, addr)
				client.Timeout = 5 * time.Second
				tick := time.NewTicker(100 * time.Millisecond)
				defer tick.Stop()
				for i := 0; i < 600; i++ { // at most 60 s of probes
					select {
					case <-probeCtx.Done():
						return
					case <-tick.C:
					}
					probes++
					resp, err := client.Get("http://app.t.local/probe")
					if err == nil {
						b, rerr := io.ReadAll(resp.Body)
						_ = resp.Body.Close()
						if rerr == nil && resp.StatusCode == 200 && string(b) == "ok" {
							continue
						}
						err = &probeError{resp.StatusCode, string(b), rerr}
					}
					failures++
					if firstFailure == "" {
						firstFailure = err.Error()
					}
				}
			})
			// meshd's side: how many downstream connections it holds, sampled while
			// slowhttptest runs (which never closes one itself before its time limit).
			var peak, afterPeak int
			sampled := make(chan struct{})
			go func() {
				defer close(sampled)
				tick := time.NewTicker(100 * time.Millisecond)
				defer tick.Stop()
				for i := 0; i < 600; i++ {
					select {
					case <-probeCtx.Done():
						return
					case <-tick.C:
					}
					n := proxy.OpenConns(srv)
					if n > peak {
						peak, afterPeak = n, n
					}
					afterPeak = min(afterPeak, n)
				}
			}()
			runErr := cmd.Run()
			stopProbes()
			wg.Wait()
			<-sampled
			if ctx.Err() != nil {
				t.Fatalf("slowhttptest did not end within 40 s:\n%s", tail(out.String()))
			}
			if runErr != nil {
				t.Logf("slowhttptest: %v", runErr)
			}
			if probes < 20 || failures > 0 {
				t.Errorf("the normal client: %d of %d probes failed (first: %s)", failures, probes, firstFailure)
			}
			closed, connected := slowReport(t, prefix+".csv")
			allClosed := strings.Contains(out.String(), "No open connections left")
			t.Logf("slowhttptest: %d connections closed, %d connected in its last report, all closed: %v; meshd held up to %d connections, then %d; %d probes served",
				closed, connected, allClosed, peak, afterPeak, probes)
			// slowhttptest ends early when every connection it opened was closed (by
			// meshd: it closes none itself); in slow-read mode it still counts a
			// connection whose unread bytes it reads 5 a second as connected after
			// meshd closed it, so meshd's own count tells.
			if peak < 50 {
				t.Errorf("meshd held at most %d connections: slowhttptest's 100 did not reach it:\n%s", peak, tail(out.String()))
			}
			if !allClosed && afterPeak > 5 {
				t.Errorf("meshd still held %d of slowhttptest's connections at its end (%d closed by its count):\n%s", afterPeak, closed, tail(out.String()))
			}
		})
	}
}

type probeError struct {
	status int
	body   string
	err    error
}

func (e *probeError) Error() string {
	return "status " + strconv.Itoa(e.status) + " body " + strconv.Quote(e.body) + " read error " + errString(e.err)
}

func errString(err error) string {
	if err == nil {
		return "none"
	}
	return err.Error()
}

// slowReport reads slowhttptest's CSV (Seconds,Closed,Pending,Connected,...): the most
// connections it saw closed, and how many were connected in its last row.
func slowReport(t *testing.T, path string) (closed, connected int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("slowhttptest wrote no report: %v", err)
	}
	defer f.Close()
	rows, err := csv.NewReader(bufio.NewReader(f)).ReadAll()
	if err != nil || len(rows) < 2 {
		t.Fatalf("slowhttptest's report %s: %v (%d rows)", path, err, len(rows))
	}
	for _, row := range rows[1:] {
		if len(row) < 4 {
			continue
		}
		c, _ := strconv.Atoi(strings.TrimSpace(row[1]))
		closed = max(closed, c)
		connected, _ = strconv.Atoi(strings.TrimSpace(row[3]))
	}
	return closed, connected
}

func tail(s string) string {
	if len(s) > 2000 {
		return s[len(s)-2000:]
	}
	return s
}
