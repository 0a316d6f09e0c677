package proxy_test

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/proxy"
	meshtls "github.com/meshd/meshd/tls"
)

// TestBodyAcrossEarlyReadDeadline: the read deadline armed for the upstream hold while a
// keep-alive connection waits for its next request is left in place when that request
// comes (it is earlier than the stream idle the request wants: moving it would cost a
// timer move per request), so it fires while the request's body is awaited; meshd then
// moves it to the deadline due and reads on (deadline.Timer.Early). A body that comes
// after the hold has passed is read whole and the request answered, over TLS (the read
// retried through the *tls.Conn, which must survive the timeout) and in plaintext.
func TestBodyAcrossEarlyReadDeadline(t *testing.T) {
	p := newPKI(t)
	p.write("app", meshtls.WorkloadRequest{DNSNames: []string{appServerName}})
	up := testutil.StartHTTP(t, echoHandler("app"))
	const hold = 60 * time.Millisecond
	opts := proxy.Options{Limits: proxy.ConnLimits{UpstreamHold: hold}}
	for _, tc := range []struct {
		name, tlsBlock string
	}{
		{"tls", p.listenerTLS("STRICT", false)},
		{"plaintext", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := startTLSMeshd(t, tlsNodeYAML(up.Port, "http", tc.tlsBlock, ""), opts)
			var c net.Conn
			var err error
			if tc.tlsBlock != "" {
				c, err = tls.Dial("tcp", srv.IngressAddr(), p.client([]string{"http/1.1"}))
			} else {
				c, err = net.Dial("tcp", srv.IngressAddr())
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			br := bufio.NewReader(c)
			roundTrip := func(what, method string) {
				t.Helper()
				resp, err := http.ReadResponse(br, &http.Request{Method: method})
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				info := decodeEcho(t, resp)
				if resp.StatusCode != 200 || info.Method != method {
					t.Fatalf("%s: %d, the app saw %s; want 200 and %s", what, resp.StatusCode, info.Method, method)
				}
			}
			send := func(s string) {
				t.Helper()
				if _, err := io.WriteString(c, s); err != nil {
					t.Fatal(err)
				}
			}
			send("GET /first HTTP/1.1\r\nHost: " + appServerName + "\r\n\r\n")
			roundTrip("first request", "GET")
			// The connection now waits under the hold's deadline; the next head comes at
			// once, its body only after the hold has passed.
			send("POST /late-body HTTP/1.1\r\nHost: " + appServerName + "\r\nContent-Length: 5\r\n\r\n")
			time.Sleep(3 * hold)
			send("hello")
			roundTrip("request whose body came after the hold", "POST")
			send("GET /after HTTP/1.1\r\nHost: " + appServerName + "\r\n\r\n")
			roundTrip("request after it", "GET")
		})
	}
}
