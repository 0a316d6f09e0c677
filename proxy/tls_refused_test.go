package proxy_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/internal/testutil"
)

// TestTLSConfigRefusedNotPlaintext: applying a config in which the served node's
// listener asks for STRICT TLS with certificate files that do not load is refused,
// naming the field and the file, and the config in force keeps serving: never
// plaintext where the config asks for TLS.
func TestTLSConfigRefusedNotPlaintext(t *testing.T) {
	up := testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	def := meshDef{services: []svcDef{{name: "s.t.local", node: "s", port: up.Port, proto: "http", routes: []string{
		`{httpRoute: {match: {prefix: /}, action: {weightedTargets: [{virtualNode: s, weight: 1}]}}}`}}}}
	srv, c := def.start(t)
	before := srv.Snapshot().Version()

	yaml := strings.Replace(def.yaml(), "  - virtualNodeName: app\n    spec:\n      listeners: [{portMapping: {port: ",
		"  - virtualNodeName: app\n    spec:\n      listeners: [{tls: {mode: STRICT, certificate: {file: {certificateChain: /c.crt, privateKey: /c.key}}}, portMapping: {port: ", 1)
	if yaml == def.yaml() {
		t.Fatalf("the test could not put a tls block on node app's listener:\n%s", yaml)
	}
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	_, err = srv.Apply(context.Background(), cfg, "test")
	if err == nil || !strings.Contains(err.Error(), "virtualNodes[0].spec.listeners[0].tls.certificate.file") || !strings.Contains(err.Error(), "/c.crt") {
		t.Fatalf("apply: %v, want a refusal naming the certificate field and file", err)
	}
	if srv.Snapshot().Version() != before {
		t.Fatal("the refused config replaced the one in force")
	}
	resp, err := c.Get("http://s.t.local/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("after the refusal: %d", resp.StatusCode)
	}
}
