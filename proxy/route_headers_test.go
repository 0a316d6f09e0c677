package proxy_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/internal/testutil"
)

// headersRoute is a route with the headers extension on every side and kind of rule,
// literal values and variables.
const headersRoute = `{priority: 0, %s: {match: {prefix: /}, action: {weightedTargets: [{virtualNode: %s, weight: 1}]},
  headers: {
    request: {remove: [x-debug], set: [{name: x-env, value: prod}, {name: x-request-id, value: fixed}],
              append: [{name: x-via, value: "%%ROUTE_NAME%%@%%VIRTUAL_SERVICE%%->%%UPSTREAM_CLUSTER%% from %%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%% (%%VIRTUAL_NODE%%) 100%%%%"}]},
    response: {remove: [server], set: [{name: cache-control, value: no-store}], append: [{name: x-served-by, value: "%%ROUTE_NAME%%"}]}}}}`

// echoFields answers with the request fields names, one per line ("Name=v1|v2"), and
// sets the response fields the tests' rules change.
func echoFields(names ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "upstream/1.0")
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("X-Served-By", "upstream")
		for _, n := range names {
			_, _ = io.WriteString(w, n+"="+strings.Join(r.Header.Values(n), "|")+"\n")
		}
	}
}

// fieldsRequest sends a GET of url with the fields kv (name, value, ...) and returns the
// response and its body, failing unless the status is 200.
func fieldsRequest(t *testing.T, c *http.Client, url string, kv ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		req.Header.Add(kv[i], kv[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: status %d (%s) %v: %s", url, resp.StatusCode, resp.Header.Get("X-Meshd-Error"), err, body)
	}
	return resp, string(body)
}

// echoHeaders echoes the fields TestRouteHeaders looks at.
var echoHeaders = echoFields("X-Debug", "X-Env", "X-Request-Id", "X-Via", "X-Keep")

// TestRouteHeaders: a route's header rules change what the upstream gets and what the
// client gets, on the HTTP/1.1 fast path, through the bridge to an HTTP/2 upstream and
// on the HTTP/2 front end alike; variables expand; fields no rule names pass untouched.
func TestRouteHeaders(t *testing.T) {
	h1up := testutil.StartHTTP(t, echoHeaders)
	h2up := testutil.StartH2C(t, echoHeaders)
	route := func(kind, node string) string { return fmt.Sprintf(headersRoute, kind, node) }
	srv, h1client := meshDef{services: []svcDef{
		{name: "h1.t.local", node: "h1svc", port: h1up.Port, routes: []string{route("httpRoute", "h1svc")}},
		{name: "h2.t.local", node: "h2svc", port: h2up.Port, proto: "http2", routes: []string{route("http2Route", "h2svc")}},
	}}.start(t)
	h2client := testutil.H2CClient(t, srv.EgressAddr())

	for _, c := range []struct {
		name, host string
		client     *http.Client
		route      string
	}{
		{"HTTP/1.1 fast path", "h1.t.local", h1client, "h1.t.local"},
		{"HTTP/1.1 client, HTTP/2 upstream", "h2.t.local", h1client, "h2.t.local"},
		{"h2c client, HTTP/1.1 upstream", "h1.t.local", h2client, "h1.t.local"},
		{"h2c client, HTTP/2 upstream", "h2.t.local", h2client, "h2.t.local"},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, got := fieldsRequest(t, c.client, "http://"+c.host+"/x", "X-Debug", "1", "X-Env", "dev", "X-Via", "client", "X-Keep", "kept")
			node := strings.Split(c.host, ".")[0] + "svc" // its route is <node>-r0
			for _, want := range []string{
				"X-Debug=\n",
				"X-Env=prod\n",
				"X-Request-Id=fixed\n",
				"X-Via=client|",
				"|" + node + "-r0@" + c.route + "->" + node + " from 127.0.0.1 (app) 100%\n",
				"X-Keep=kept\n",
			} {
				if !strings.Contains(got, want) {
					t.Errorf("upstream saw:\n%s\nlacking %q", got, want)
				}
			}
			if resp.Header.Get("Server") != "" || resp.Header.Get("Cache-Control") != "no-store" {
				t.Errorf("response Server %q Cache-Control %q, want removed and no-store", resp.Header.Get("Server"), resp.Header.Get("Cache-Control"))
			}
			if v := resp.Header.Values("X-Served-By"); len(v) != 2 || v[0] != "upstream" || v[1] != node+"-r0" {
				t.Errorf("X-Served-By %q, want the upstream's and the route's", v)
			}
		})
	}
}

// TestRouteHeadersValidation: the extension's refusals name the field path and value.
func TestRouteHeadersValidation(t *testing.T) {
	for _, c := range []struct{ headers, want string }{
		{`{request: {set: [{name: host, value: x}]}}`, `routes[0].spec.httpRoute.headers.request.set[0].name: cannot be changed by a route`},
		{`{request: {set: [{name: "bad name", value: x}]}}`, `not a field name`},
		{`{response: {append: [{name: x-a, value: "%NOPE%"}]}}`, `unknown variable %NOPE%`},
		{`{response: {append: [{name: x-a, value: "50%"}]}}`, `without its closing %`},
		{`{request: {remove: [content-length]}}`, `framing is meshd's`},
		{`{request: {}}`, `give set, append or remove`},
		{`{}`, `give request, response or both`},
		{`{request: {remove: [x-meshd-peer-identity]}}`, `verified certificate`},
	} {
		yaml := meshDef{services: []svcDef{{name: "v.t.local", node: "v", port: 8080,
			routes: []string{`{priority: 0, httpRoute: {match: {prefix: /}, action: {weightedTargets: [{virtualNode: v, weight: 1}]}, headers: ` + c.headers + `}}`}}}}.yaml()
		cfg, err := config.Parse([]byte(yaml))
		if err == nil {
			err = cfg.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("headers %s: %v, want %q", c.headers, err, c.want)
		}
	}
}
