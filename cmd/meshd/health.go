package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// meshd health and meshd wait-ready ask a running meshd's admin API, for images without
// curl or wget: the container health check (App Mesh's `curl -s
// http://localhost:9901/server_info | grep state | grep -q LIVE`) and an app's
// entrypoint that must start after the proxy.

// adminFlags finds the admin listener the way meshd run binds it: --admin-addr,
// MESHD_ADMIN_ADDR, App Mesh's ENVOY_ADMIN_ACCESS_PORT and ENVOY_ADMIN_ACCESS_ENABLE_IPV6.
func adminFlags(fs *flag.FlagSet) (addr *string, errs []envErr) {
	def, errs := adminAddrDefault()
	return fs.String("admin-addr", def, "meshd's admin address (env MESHD_ADMIN_ADDR, or App Mesh's ENVOY_ADMIN_ACCESS_PORT)"), errs
}

// dialAddr is where to reach an admin bound to addr: a wildcard bind is reached on
// loopback.
func dialAddr(addr string) (string, error) {
	if addr == "" || addr == "off" {
		return "", errors.New("the admin listener is off (--admin-addr off): there is nothing to ask")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("--admin-addr %q: %w", addr, err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port), nil
}

// adminClient reaches the admin without any proxy the environment names: the admin is
// local, and meshd's own egress may be HTTP_PROXY.
var adminClient = &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}

// probeLive asks /server_info once: nil when the state is LIVE, else the reason.
func probeLive(ctx context.Context, addr string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/server_info", nil)
	if err != nil {
		return err
	}
	resp, err := adminClient.Do(req)
	if err != nil {
		return fmt.Errorf("admin %s: %w", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return fmt.Errorf("admin %s: /server_info: %w", addr, err)
	}
	var info struct {
		State             string `json:"state"`
		HealthCheckFailed bool   `json:"health_check_failed"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &info) != nil {
		return fmt.Errorf("admin %s: /server_info answered %s: %.200q", addr, resp.Status, body)
	}
	if info.State != "LIVE" {
		if info.HealthCheckFailed {
			return fmt.Errorf("state %s (POST /healthcheck/ok undoes /healthcheck/fail)", info.State)
		}
		return fmt.Errorf("state %s", info.State)
	}
	return nil
}

func cmdHealth(args []string, _, stderr io.Writer) int {
	fs := flag.NewFlagSet("meshd health", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr, errs := adminFlags(fs)
	timeout := fs.Duration("timeout", 2*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if !flagSet(fs, "admin-addr") && len(errs) > 0 {
		fmt.Fprintln(stderr, "meshd health:", errs[0])
		return 2
	}
	target, err := dialAddr(*addr)
	if err != nil {
		fmt.Fprintln(stderr, "meshd health:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := probeLive(ctx, target); err != nil {
		fmt.Fprintln(stderr, "meshd health: not live:", err)
		return 1
	}
	return 0
}

func cmdWaitReady(args []string, _, stderr io.Writer) int {
	fs := flag.NewFlagSet("meshd wait-ready", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr, errs := adminFlags(fs)
	timeout := fs.Duration("timeout", time.Minute, "give up after this long (exit 1)")
	interval := fs.Duration("interval", 250*time.Millisecond, "time between two asks")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if !flagSet(fs, "admin-addr") && len(errs) > 0 {
		fmt.Fprintln(stderr, "meshd wait-ready:", errs[0])
		return 2
	}
	if *interval <= 0 || *timeout <= 0 {
		fmt.Fprintf(stderr, "meshd wait-ready: --timeout %v, --interval %v: want > 0\n", *timeout, *interval)
		return 2
	}
	target, err := dialAddr(*addr)
	if err != nil {
		fmt.Fprintln(stderr, "meshd wait-ready:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	t := time.NewTicker(*interval)
	defer t.Stop()
	for {
		pctx, pcancel := context.WithTimeout(ctx, max(*interval, time.Second))
		err := probeLive(pctx, target)
		pcancel()
		if err == nil {
			return 0
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(stderr, "meshd wait-ready: not ready after %v: %v\n", *timeout, strings.TrimPrefix(err.Error(), "meshd: "))
			return 1
		case <-t.C:
		}
	}
}
