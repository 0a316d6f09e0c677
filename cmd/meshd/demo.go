package main

import (
	"context"
	_ "embed"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"text/template"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/proxy"
	"github.com/meshd/meshd/telemetry"
)

// demoMesh is the embedded default: the frontend node calls backend.shop.local, split
// 90/10 between two versions, with a header canary. Ports are filled in at start so
// the demo runs wherever ports are free.
//
//go:embed demo.yaml.tmpl
var demoMesh string

type demoPorts struct{ Frontend, V1, V2 int }

func renderDemo(p demoPorts) ([]byte, error) {
	t, err := template.New("demo").Parse(demoMesh)
	if err != nil {
		return nil, fmt.Errorf("demo template: %w", err)
	}
	var b strings.Builder
	if err := t.Execute(&b, p); err != nil {
		return nil, fmt.Errorf("demo template: %w", err)
	}
	return []byte(b.String()), nil
}

// startApp serves a one-line answer naming the app, standing in for a real service;
// errorRate of its answers (every n-th request, deterministic) are 500s, for the canary
// walkthrough's failing version.
func startApp(name string, errorRate float64) (net.Listener, *http.Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, fmt.Errorf("demo app %s: %w", name, err)
	}
	var served, failed atomic.Int64
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			if errorRate > 0 {
				// The share of failures so far stays at errorRate: fail when it is below.
				n := served.Add(1)
				if float64(failed.Load()) < errorRate*float64(n) {
					failed.Add(1)
					w.WriteHeader(http.StatusInternalServerError)
					fmt.Fprintf(w, "%s failed %s %s (demo --v2-error-rate)\n", name, r.Method, r.URL.Path)
					return
				}
			}
			fmt.Fprintf(w, "%s answered %s %s (x-request-id %s)\n", name, r.Method, r.URL.Path, r.Header.Get("X-Request-Id"))
		}),
	}
	go func() { _ = srv.Serve(ln) }()
	return ln, srv, nil
}

func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("meshd demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f runFlags
	f.register(fs)
	v2Errors := fs.Float64("v2-error-rate", 0, "share of backend-v2's answers that are 500s, 0..1 (the canary walkthrough's failing version, docs/canary.md)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *v2Errors < 0 || *v2Errors > 1 {
		fmt.Fprintf(stderr, "meshd demo: --v2-error-rate %v: want a share in 0..1\n", *v2Errors)
		return 2
	}
	logger, logLevel, err := telemetry.NewLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		fmt.Fprintln(stderr, "meshd demo:", err)
		return 2
	}
	var ports demoPorts
	var servers []*http.Server
	defer func() {
		for _, s := range servers {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = s.Shutdown(ctx)
			cancel()
		}
	}()
	for _, app := range []struct {
		name   string
		port   *int
		errors float64
	}{{"frontend", &ports.Frontend, 0}, {"backend-v1", &ports.V1, 0}, {"backend-v2", &ports.V2, *v2Errors}} {
		ln, srv, err := startApp(app.name, app.errors)
		if err != nil {
			fmt.Fprintln(stderr, "meshd demo:", err)
			return 1
		}
		servers = append(servers, srv)
		*app.port = ln.Addr().(*net.TCPAddr).Port
	}
	raw, err := renderDemo(ports)
	if err != nil {
		fmt.Fprintln(stderr, "meshd demo:", err)
		return 1
	}
	cfg, err := config.Parse(raw)
	if err != nil {
		fmt.Fprintln(stderr, "meshd demo: embedded config:", err)
		return 1
	}
	f.node = "frontend"
	opts, err := f.options(logger, logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "meshd demo:", err)
		return 2
	}
	stopTracing, err := f.startTracing(logger, &opts)
	if err != nil {
		fmt.Fprintln(stderr, "meshd demo:", err)
		return 2
	}
	defer stopTracing()
	return serve(cfg, "embedded demo", opts, logger, nil, func(srv *proxy.Server) {
		printDemoHelp(stdout, srv, ports)
	})
}

func printDemoHelp(w io.Writer, srv *proxy.Server, p demoPorts) {
	eg := srv.EgressAddr()
	in := srv.IngressAddr()
	if strings.HasPrefix(in, "0.0.0.0:") || strings.HasPrefix(in, "[::]:") {
		in = "127.0.0.1:" + in[strings.LastIndexByte(in, ':')+1:]
	}
	fmt.Fprintf(w, `
meshd demo is running as virtual node "frontend" of mesh "shop".
  backend.shop.local -> route "canary-header" (x-canary: 1 -> backend-v2)
                     -> route "split" (backend-v1 90%%, backend-v2 10%%)
  demo apps: frontend 127.0.0.1:%d, backend-v1 127.0.0.1:%d, backend-v2 127.0.0.1:%d

Try:
  curl -s -H 'Host: backend.shop.local' http://%s/hello
  curl -s -x http://%s http://backend.shop.local/hello          # as with HTTP_PROXY
  curl -s -H 'Host: backend.shop.local' -H 'x-canary: 1' http://%s/hello
  for i in $(seq 100); do curl -s -H 'Host: backend.shop.local' http://%s/; done | cut -d' ' -f1 | sort | uniq -c
  curl -s http://%s/hello                                        # ingress -> the local frontend app
  curl -s -H 'Host: elsewhere.example' http://%s/                # egressFilter DROP_ALL -> 404 from meshd
  curl -s http://%s/clusters
  curl -s http://%s/server_info
  curl -s http://%s/stats/prometheus | grep -E '^meshd_(route|cluster)_requests_total'

Ctrl-C stops it.
`, p.Frontend, p.V1, p.V2, eg, eg, eg, eg, in, eg, srv.AdminAddr(), srv.AdminAddr(), srv.AdminAddr())
}
