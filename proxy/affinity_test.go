package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

// whoUpstreams starts n HTTP upstreams that answer with their own port in X-Who.
func whoUpstreams(t *testing.T, n int, h2c bool) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		var up *testutil.Upstream
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("X-Who", r.Host+"@"+strconv.Itoa(up.Port))
			_, _ = io.WriteString(w, "ok\n")
		})
		if h2c {
			up = testutil.StartH2C(t, h)
		} else {
			up = testutil.StartHTTP(t, h)
		}
		ports[i] = up.Port
	}
	return ports
}

// lbMesh is node "app" with backend svc.t.local on node "svc" (static endpoints ports,
// listener protocol proto) whose spec carries lb (YAML flow, e.g. "{policy: RING_HASH,
// ...}").
func lbMesh(ports []int, proto, lb string) string { return lbMeshListener(ports, proto, "", lb) }

// lbMeshListener is lbMesh with listenerExtra (YAML flow fields) on svc's listener.
func lbMeshListener(ports []int, proto, listenerExtra, lb string) string {
	if listenerExtra != "" {
		listenerExtra = ", " + listenerExtra
	}
	var eps []string
	for _, p := range ports {
		eps = append(eps, fmt.Sprintf("%q", fmt.Sprintf("127.0.0.1:%d", p)))
	}
	return fmt.Sprintf(`mesh: {meshName: t, spec: {egressFilter: {type: DROP_ALL}}}
virtualNodes:
  - virtualNodeName: app
    spec:
      listeners: [{portMapping: {port: 1, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:1"]}}
      backends: [{virtualService: {virtualServiceName: svc.t.local}}]
  - virtualNodeName: svc
    spec:
      listeners: [{portMapping: {port: 8080, protocol: %s}%s}]
      serviceDiscovery: {static: {endpoints: [%s]}}
      loadBalancing: %s
virtualServices:
  - virtualServiceName: svc.t.local
    spec: {provider: {virtualNode: {virtualNodeName: svc}}}
`, proto, listenerExtra, strings.Join(eps, ", "), lb)
}

// who sends one request and returns the upstream port that answered.
func who(t *testing.T, client *http.Client, req *http.Request) (string, *http.Response) {
	t.Helper()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d (%s)", resp.StatusCode, resp.Header.Get("X-Meshd-Error"))
	}
	w := resp.Header.Get("X-Who")
	return w[strings.IndexByte(w, '@')+1:], resp
}

func userReq(t *testing.T, user string) *http.Request {
	t.Helper()
	req, err := http.NewRequest("GET", "http://svc.t.local:8080/", nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.Header.Set("X-User", user)
	}
	return req
}

// stickiness sends rounds requests for each user and fails unless every user stays on
// one endpoint; it returns each user's endpoint.
func stickiness(t *testing.T, client *http.Client, users []string, rounds int) map[string]string {
	t.Helper()
	got := map[string]string{}
	for r := range rounds {
		for _, u := range users {
			w, _ := who(t, client, userReq(t, u))
			if r == 0 {
				got[u] = w
			} else if got[u] != w {
				t.Fatalf("user %s moved from %s to %s at request %d", u, got[u], w, r)
			}
		}
	}
	return got
}

func distinct(m map[string]string) int {
	set := map[string]bool{}
	for _, v := range m {
		set[v] = true
	}
	return len(set)
}

// TestAffinityHeader: RING_HASH and MAGLEV on a header keep each user on one endpoint
// across 100 requests (HTTP/1.1 and HTTP/2 clients), users spread over the endpoints,
// and a request without the header is served (least request).
func TestAffinityHeader(t *testing.T) {
	users := []string{"ann", "bob", "cid", "dee", "eve", "fay", "gus", "hal"}
	for _, pol := range []string{"RING_HASH", "MAGLEV"} {
		t.Run(pol, func(t *testing.T) {
			ports := whoUpstreams(t, 4, false)
			srv := testutil.StartMeshd(t, "app", lbMesh(ports, "http", "{policy: "+pol+", hash: {header: X-User}}"))
			h1 := stickiness(t, testutil.HTTPClient(t, srv.EgressAddr()), users, 100)
			if distinct(h1) < 2 {
				t.Errorf("8 users all on one endpoint: %v", h1)
			}
			h2 := stickiness(t, testutil.H2CClient(t, srv.EgressAddr()), users, 20)
			for u := range h1 {
				if h1[u] != h2[u] {
					t.Errorf("user %s: HTTP/1.1 on %s, HTTP/2 on %s", u, h1[u], h2[u])
				}
			}
			seen := map[string]bool{}
			client := testutil.HTTPClient(t, srv.EgressAddr())
			for range 40 {
				w, _ := who(t, client, userReq(t, ""))
				seen[w] = true
			}
			if len(seen) < 2 {
				t.Errorf("requests without the header all went to %v", seen)
			}
		})
	}
}

// TestAffinityHeaderH2Upstream: the bridge (HTTP/1.1 client, HTTP/2 upstream) hashes too.
func TestAffinityHeaderH2Upstream(t *testing.T) {
	ports := whoUpstreams(t, 3, true)
	srv := testutil.StartMeshd(t, "app", lbMesh(ports, "http2", "{policy: RING_HASH, hash: {header: x-user}}"))
	// 24 users: with 6 all landed on one of the 3 endpoints about once in 243 runs
	// (3 × (1/3)^6), as a -race run here did once; with 24, about once in 10^11.
	var users []string
	for i := range 24 {
		users = append(users, fmt.Sprintf("user%d", i))
	}
	got := stickiness(t, testutil.HTTPClient(t, srv.EgressAddr()), users, 10)
	if distinct(got) < 2 {
		t.Errorf("all users on one endpoint: %v", got)
	}
}

// TestAffinityCookie: a client without the cookie gets one (Set-Cookie with the
// configured name, path and Max-Age) and, sending it back, stays on one endpoint for
// 100 requests; different clients spread.
// TestAffinityCookieAttributes: secure and sameSite shape the generated cookie.
func TestAffinityCookieAttributes(t *testing.T) {
	ports := whoUpstreams(t, 2, false)
	srv := testutil.StartMeshd(t, "app", lbMesh(ports, "http", "{policy: MAGLEV, hash: {cookie: {name: aff, secure: true, sameSite: Strict}}}"))
	for _, c := range []*http.Client{testutil.HTTPClient(t, srv.EgressAddr()), testutil.H2CClient(t, srv.EgressAddr())} {
		_, resp := who(t, c, userReq(t, ""))
		if sc := resp.Header.Get("Set-Cookie"); !strings.HasPrefix(sc, "aff=") || !strings.HasSuffix(sc, "; Path=/; HttpOnly; Secure; SameSite=Strict") {
			t.Errorf("Set-Cookie %q, want Path=/; HttpOnly; Secure; SameSite=Strict", sc)
		}
	}
}

func TestAffinityCookie(t *testing.T) {
	ports := whoUpstreams(t, 4, false)
	srv := testutil.StartMeshd(t, "app", lbMesh(ports, "http", "{policy: RING_HASH, hash: {cookie: {name: meshd-aff, ttl: {unit: s, value: 600}, path: /}}}"))
	ends := map[string]string{}
	for c := range 8 {
		client := testutil.HTTPClient(t, srv.EgressAddr())
		jar, _ := cookiejar.New(nil)
		client.Jar = jar
		first, resp := who(t, client, userReq(t, ""))
		sc := resp.Header.Get("Set-Cookie")
		if !strings.HasPrefix(sc, "meshd-aff=") || !strings.Contains(sc, "Max-Age=600") || !strings.Contains(sc, "Path=/") {
			t.Fatalf("client %d: Set-Cookie %q", c, sc)
		}
		for i := range 100 {
			w, resp := who(t, client, userReq(t, ""))
			if w != first {
				t.Fatalf("client %d request %d: %s, first on %s", c, i, w, first)
			}
			if resp.Header.Get("Set-Cookie") != "" {
				t.Fatalf("client %d got a second cookie", c)
			}
		}
		ends[strconv.Itoa(c)] = first
	}
	if distinct(ends) < 2 {
		t.Errorf("8 clients all on one endpoint: %v", ends)
	}
	scrape(t, srv, "").expect(t, "meshd_cluster_affinity_cookies_generated_total", lbls{"virtual_node": "svc", "cluster": "svc"}, 8)
	// HTTP/2 front end: generates the cookie too, and honours one sent.
	h2 := testutil.H2CClient(t, srv.EgressAddr())
	_, resp := who(t, h2, userReq(t, ""))
	sc := resp.Header.Get("Set-Cookie")
	if !strings.HasPrefix(sc, "meshd-aff=") {
		t.Fatalf("HTTP/2: Set-Cookie %q", sc)
	}
	var first string
	for i := range 30 {
		req := userReq(t, "")
		req.Header.Set("Cookie", "other=1; "+sc[:strings.IndexByte(sc, ';')])
		w, resp := who(t, h2, req)
		if i == 0 {
			first = w
		} else if w != first {
			t.Fatalf("HTTP/2 with the cookie moved from %s to %s", first, w)
		}
		if resp.Header.Get("Set-Cookie") != "" {
			t.Fatal("HTTP/2: a cookie was generated for a request that had one")
		}
	}
}

// sourceClient is an HTTP client whose connections come from local IP ip.
func sourceClient(t *testing.T, addr, ip string) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
			return d.DialContext(ctx, "tcp", addr)
		},
		DisableKeepAlives: true, // every request a new connection: affinity is not the connection's
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// TestAffinitySourceIP: each client address stays on one endpoint across 100 requests,
// each on a new connection.
func TestAffinitySourceIP(t *testing.T) {
	ports := whoUpstreams(t, 4, false)
	srv := testutil.StartMeshd(t, "app", lbMesh(ports, "http", "{policy: MAGLEV, hash: {sourceIp: true}}"))
	ends := map[string]string{}
	for i := 1; i <= 8; i++ {
		ip := "127.0.0." + strconv.Itoa(i+10)
		client := sourceClient(t, srv.EgressAddr(), ip)
		for r := range 100 {
			w, _ := who(t, client, userReq(t, ""))
			if r == 0 {
				ends[ip] = w
			} else if w != ends[ip] {
				t.Fatalf("%s moved from %s to %s at request %d", ip, ends[ip], w, r)
			}
		}
	}
	if distinct(ends) < 2 {
		t.Errorf("8 source addresses all on one endpoint: %v", ends)
	}
}

// TestAffinityEndpointRemoved: a reload that removes one of five endpoints moves only
// the users that were on it (RING_HASH); they move to the remaining endpoints.
func TestAffinityEndpointRemoved(t *testing.T) {
	ports := whoUpstreams(t, 5, false)
	lb := "{policy: RING_HASH, hash: {header: x-user}}"
	srv := testutil.StartMeshd(t, "app", lbMesh(ports, "http", lb))
	var users []string
	for i := range 60 {
		users = append(users, "user-"+strconv.Itoa(i))
	}
	client := testutil.HTTPClient(t, srv.EgressAddr())
	before := stickiness(t, client, users, 2)
	gone := strconv.Itoa(ports[2])
	if _, err := srv.Apply(context.Background(), testutil.ParseConfig(t, lbMesh(append(append([]int{}, ports[:2]...), ports[3:]...), "http", lb)), "test"); err != nil {
		t.Fatal(err)
	}
	after := stickiness(t, client, users, 2)
	movedOwn := 0
	for _, u := range users {
		switch {
		case before[u] == gone:
			movedOwn++
			if after[u] == gone {
				t.Errorf("user %s still on removed %s", u, gone)
			}
		case after[u] != before[u]:
			t.Errorf("user %s moved from %s to %s, though its endpoint stayed", u, before[u], after[u])
		}
	}
	if movedOwn == 0 {
		t.Errorf("no user was on the removed endpoint %s: %v", gone, before)
	}
}

// TestAffinityFallbackOnEjection: when a user's endpoint starts failing, its requests
// still succeed (the retry avoids it), outlier detection ejects it, and from then on its
// users go to another endpoint while every other user stays where it was (RING_HASH).
func TestAffinityFallbackOnEjection(t *testing.T) {
	var failPort atomic.Int64
	ports := make([]int, 4)
	for i := range ports {
		var up *testutil.Upstream
		up = testutil.StartHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Who", "svc@"+strconv.Itoa(up.Port))
			if failPort.Load() == int64(up.Port) {
				w.WriteHeader(503)
				return
			}
			_, _ = io.WriteString(w, "ok\n")
		}))
		ports[i] = up.Port
	}
	od := "outlierDetection: {maxServerErrors: 1, interval: {unit: s, value: 10}, baseEjectionDuration: {unit: s, value: 30}, maxEjectionPercent: 50}"
	srv := testutil.StartMeshd(t, "app", lbMeshListener(ports, "http", od, "{policy: RING_HASH, hash: {header: x-user}}"))
	client := testutil.HTTPClient(t, srv.EgressAddr())
	var users []string
	for i := range 40 {
		users = append(users, "u"+strconv.Itoa(i))
	}
	before := stickiness(t, client, users, 1)
	bad := before[users[0]]
	p, _ := strconv.Atoi(bad)
	failPort.Store(int64(p))
	after := stickiness(t, client, users, 3) // every request 200: who fails the test otherwise
	for _, u := range users {
		switch {
		case before[u] == bad && after[u] == bad:
			t.Errorf("user %s still on the failing %s", u, bad)
		case before[u] != bad && after[u] != before[u]:
			t.Errorf("user %s moved from %s to %s, though its endpoint is healthy", u, before[u], after[u])
		}
	}
	state, _ := endpointState(t, srv, "svc")
	if !state["127.0.0.1:"+bad][1] {
		t.Errorf("the failing endpoint is not ejected: %v", state)
	}
	// Every request of the failing endpoint's users after its ejection passed over it on
	// the ring: its first one's retry, then all of them.
	nBad := 0
	for _, u := range users {
		if before[u] == bad {
			nBad++
		}
	}
	scrape(t, srv, "").expect(t, "meshd_cluster_hash_fallbacks_total", lbls{"virtual_node": "svc", "cluster": "svc"}, float64(3*nBad))
}
