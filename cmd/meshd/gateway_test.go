package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// gatewayCfg is mesh m with gateway gw (listener port gwPort, route /app → app.local,
// the default prefix rewrite) in front of node app at appPort.
func gatewayCfg(gwPort, appPort int) string {
	return fmt.Sprintf(`mesh: {meshName: m, spec: {egressFilter: {type: DROP_ALL}}}
virtualNodes:
  - virtualNodeName: app
    spec:
      listeners: [{portMapping: {port: %d, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:%d"]}}
virtualServices:
  - {virtualServiceName: app.local, spec: {provider: {virtualNode: {virtualNodeName: app}}}}
virtualGateways:
  - virtualGatewayName: gw
    spec: {listeners: [{portMapping: {port: %d, protocol: http}}]}
gatewayRoutes:
  - gatewayRouteName: app
    virtualGatewayName: gw
    spec: {httpRoute: {match: {prefix: /app}, action: {target: {virtualService: {virtualServiceName: app.local}}}}}
`, appPort, appPort, gwPort)
}

// TestRunGatewayFromEnvBinary: App Mesh's APPMESH_RESOURCE_ARN naming a virtual
// gateway makes `meshd run` serve it: its listener on --gateway-bind routes /app/x to
// the app as /x with Host app.local.
func TestRunGatewayFromEnvBinary(t *testing.T) {
	app := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", r.Host, r.URL.RequestURI())
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Serve(ln) }()
	t.Cleanup(func() { _ = app.Close() })
	gwPort, admin := freePort(t), freePort(t)
	cfg := filepath.Join(t.TempDir(), "mesh.yaml")
	writeFile(t, cfg, gatewayCfg(gwPort, ln.Addr().(*net.TCPAddr).Port))
	cmd := exec.Command(meshdBinary(t), "run", "-c", cfg, "--gateway-bind", "127.0.0.1", "--admin-addr", fmt.Sprintf("127.0.0.1:%d", admin), "--drain-grace", "0")
	cmd.Env = cleanEnv("APPMESH_RESOURCE_ARN=arn:aws:appmesh:eu-west-1:111122223333:mesh/m/virtualGateway/gw")
	logs := &syncBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("meshd logs:\n%s", logs.String())
		}
	})
	waitReady(t, fmt.Sprintf("http://127.0.0.1:%d/ready", admin))
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/app/x?y=1", gwPort))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "app.local /x?y=1" {
		t.Fatalf("through the gateway: %d %q, want 200 \"app.local /x?y=1\"", resp.StatusCode, body)
	}
}

// TestValidateGateway: meshd validate --gateway compiles what the gateway serves, and
// names the gateway's fields in what it cannot.
func TestValidateGateway(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	writeFile(t, good, gatewayCfg(8080, 9000))
	var out, errb bytes.Buffer
	if code := run([]string{"validate", "-c", good, "--gateway", "gw"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "valid (mesh m") {
		t.Fatalf("valid gateway: code %d, out %q, err %q", code, out.String(), errb.String())
	}
	out.Reset()
	if code := run([]string{"validate", "-c", good, "--gateway", "nope"}, &out, &errb); code != 1 || !strings.Contains(out.String(), `gateway "nope"`) {
		t.Fatalf("unknown gateway: code %d, out %q", code, out.String())
	}
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, strings.Replace(gatewayCfg(8080, 9000), "spec: {listeners: [{portMapping: {port: 8080, protocol: http}}]}",
		"spec: {listeners: [{portMapping: {port: 8080, protocol: http}, tls: {mode: STRICT, certificate: {file: {certificateChain: "+dir+"/none.crt, privateKey: "+dir+"/none.key}}}}]}", 1))
	out.Reset()
	if code := run([]string{"validate", "-c", bad, "--gateway", "gw"}, &out, &errb); code != 1 || !strings.Contains(out.String(), "virtualGateways[0].spec.listeners[0].tls") {
		t.Fatalf("a missing certificate file: code %d, out %q", code, out.String())
	}
	out.Reset()
	if code := run([]string{"validate", "-c", good, "--gateway", "gw", "--node", "app"}, &out, &errb); code != 2 {
		t.Fatalf("--node and --gateway: code %d", code)
	}
}

// TestRunGatewayEnvMeshBinary: the mesh of a gateway's ARN binds as a node's does: a
// config of another mesh stops meshd run (exit 1) naming the variable.
func TestRunGatewayEnvMeshBinary(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "mesh.yaml")
	writeFile(t, cfg, gatewayCfg(freePort(t), 9000)) // mesh m
	code, stderr := runBinary(t, cleanEnv("APPMESH_RESOURCE_ARN=arn:aws:appmesh:eu-west-1:1:mesh/other/virtualGateway/gw"),
		"run", "-c", cfg, "--gateway-bind", "127.0.0.1", "--admin-addr", "127.0.0.1:0", "--drain-grace", "0")
	if code != 1 || !strings.Contains(stderr, "APPMESH_RESOURCE_ARN") || !strings.Contains(stderr, "mesh.meshName") {
		t.Fatalf("exit %d, stderr:\n%s\nwant 1 naming APPMESH_RESOURCE_ARN and mesh.meshName", code, stderr)
	}
}
