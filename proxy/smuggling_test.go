package proxy_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is a raw HTTP/1.1 upstream that records exactly the bytes meshd sent it, in
// the order it read them, and answers each complete request it can frame with 200 "ok".
// A request it cannot frame (meshd aborted it part-way) is recorded as far as it got.
type recorder struct {
	mu  sync.Mutex
	log []byte
}

func (r *recorder) reset() {
	r.mu.Lock()
	r.log = r.log[:0]
	r.mu.Unlock()
}

func (r *recorder) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]byte(nil), r.log...)
}

// serve reads requests from c: each byte read is appended to the log as it arrives.
func (r *recorder) serve(c net.Conn) {
	br := bufio.NewReader(teeFunc{c, func(p []byte) {
		r.mu.Lock()
		r.log = append(r.log, p...)
		r.mu.Unlock()
	}})
	for {
		if err := skipRequest(br); err != nil {
			return
		}
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
			return
		}
	}
}

type teeFunc struct {
	r    io.Reader
	note func([]byte)
}

func (t teeFunc) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 {
		t.note(p[:n])
	}
	return n, err
}

// skipRequest reads one request (head and Content-Length or chunked body). It frames
// only what meshd writes (CRLF lines, one framing field), not arbitrary input.
func skipRequest(br *bufio.Reader) error {
	cl, chunked := 0, false
	for first := true; ; first = false {
		line, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			if first {
				return errors.New("empty request line")
			}
			break
		}
		name, value, _ := strings.Cut(line, ":")
		switch strings.ToLower(name) {
		case "content-length":
			cl, _ = strconv.Atoi(strings.TrimSpace(value))
		case "transfer-encoding":
			chunked = true
		}
	}
	if !chunked {
		_, err := br.Discard(cl)
		return err
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		size, err := strconv.ParseInt(strings.TrimRight(line, "\r\n"), 16, 64)
		if err != nil {
			return err
		}
		if size == 0 {
			for { // trailers up to the empty line
				l, err := br.ReadString('\n')
				if err != nil {
					return err
				}
				if l == "\r\n" {
					return nil
				}
			}
		}
		if _, err := br.Discard(int(size) + 2); err != nil {
			return err
		}
	}
}

// normalizeUp replaces what differs between runs in what the upstream saw: the request
// id meshd generates.
var requestIDValue = regexp.MustCompile(`(?m)^X-Request-Id: [0-9a-f-]{36}\r$`)

func normalizeUp(b []byte) string {
	return requestIDValue.ReplaceAllString(string(b), "X-Request-Id: ID\r")
}

// smuggleRow is one hostile or ambiguous request sent as raw bytes.
type smuggleRow struct {
	name string
	in   string // raw bytes; {H} is the Host (the service's name)
	// status are the statuses of the responses the client gets, in order.
	status []int
	// code is the x-meshd-error of the last response ("" : none).
	code string
	// closed: meshd closes the connection after the last response; otherwise a
	// follow-up request on the same connection must be served.
	closed bool
	// up is exactly what the upstream receives ("" : nothing); {P} expands to the
	// X-Forwarded-Proto line meshd adds, {ID} to the request id line.
	up string
	// upIngress replaces up on the ingress listener when it differs there.
	upIngress *string
	// in2 is sent 100 ms after in (a body whose bad part arrives late); upAlt is what
	// the upstream may see instead of up (whether meshd had flushed the head yet).
	in2, upAlt string
	// egress / ingress only (both when neither is set).
	egressOnly, ingressOnly bool
}

func strp(s string) *string { return &s }

// TestSmugglingTable sends hostile and ambiguous HTTP/1.1 requests through real sockets
// to meshd's egress and ingress listeners, with an upstream that records every byte it
// receives. Each row asserts the statuses the client gets, whether meshd closes the
// connection, and exactly what the upstream saw: nothing, or the normalized request.
// docs/security.md summarizes the table.
func TestSmugglingTable(t *testing.T) {
	rec := &recorder{}
	up := tcpServer(t, func(c *net.TCPConn) { rec.serve(c) })
	const host = "smug.t.local"
	srv, _ := meshDef{appPort: up, services: []svcDef{{name: host, node: "smug", port: up}}}.start(t)

	const xff = "X-Forwarded-For: 127.0.0.1\r\n"
	const tail = xff + "X-Forwarded-Proto: http\r\nX-Request-Id: ID\r\n"
	get := func(path string, fields ...string) string {
		return "GET " + path + " HTTP/1.1\r\nHost: {H}\r\n" + strings.Join(fields, "") + "\r\n"
	}
	// upGet is the upstream's view of a plain GET meshd forwarded: the fields the client
	// sent that survive, then the forwarding fields.
	upGet := func(path string, fields ...string) string {
		return "GET " + path + " HTTP/1.1\r\nHost: {H}\r\n" + strings.Join(fields, "") + tail + "\r\n"
	}
	rows := []smuggleRow{
		{name: "baseline", in: get("/"), status: []int{200}, up: upGet("/")},

		// Framing: RFC 9112 §6.1, §6.3. Anything two parsers could read differently is
		// refused before a byte goes upstream, and the connection closes (its framing is
		// unknown).
		{name: "cl-and-te", in: "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "te-and-cl", in: "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "te-chunked-not-last", in: "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
			status: []int{501}, code: "bad_request", closed: true},
		{name: "te-chunked-twice-one-field", in: "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "te-duplicated-fields", in: "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "te-second-field-other-coding", in: "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
			status: []int{501}, code: "bad_request", closed: true},
		{name: "te-xchunked", in: "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
			status: []int{501}, code: "bad_request", closed: true},
		{name: "te-chunked-identity", in: "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
			status: []int{501}, code: "bad_request", closed: true},
		{name: "te-empty-list-element", in: "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "te-quoted", in: "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		// Whitespace around a field value is OWS (RFC 9110 §5.5): " chunked" is chunked,
		// and the body is re-framed by meshd, not passed through.
		{name: "te-leading-ows", in: "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: \t chunked \r\n\r\n3;ext=1\r\nabc\r\n0\r\n\r\n",
			status: []int{200},
			up:     "POST / HTTP/1.1\r\nHost: {H}\r\n" + tail + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"},
		{name: "te-case", in: "POST / HTTP/1.1\r\nHost: {H}\r\ntransfer-encoding: CHUNKED\r\n\r\n0\r\n\r\n",
			status: []int{200},
			up:     "POST / HTTP/1.1\r\nHost: {H}\r\n" + tail + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{name: "te-space-before-colon", in: "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "te-http10", in: "POST / HTTP/1.0\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "cl-differing", in: "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "cl-identical-repeated", in: "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "cl-list", in: "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 3, 3\r\n\r\nabc",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "cl-plus", in: "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: +3\r\n\r\nabc",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "cl-minus", in: "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: -3\r\n\r\nabc",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "cl-hex", in: "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 0x3\r\n\r\nabc",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "cl-inner-space", in: "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 1 2\r\n\r\nabc",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "cl-overflow", in: "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 99999999999999999999\r\n\r\nabc",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "cl-surrounding-ows", in: "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length:  3 \r\n\r\nabc",
			status: []int{200},
			up:     "POST / HTTP/1.1\r\nHost: {H}\r\n" + tail + "Content-Length: 3\r\n\r\nabc"},
		// A chunked body is validated as it streams, re-framed chunk by chunk; a bad
		// chunk line that arrives with the head is found before the head is flushed,
		// so nothing goes upstream (a later one leaves the upstream an unfinished
		// request on a connection meshd then closes: never a second request).
		{name: "chunk-size-overflow", in: "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\nGET /smuggled HTTP/1.1\r\nHost: {H}\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "chunk-size-hex-prefix", in: "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "chunk-ext-bare-semicolon", in: "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n3;\r\nabc\r\n0\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "chunk-ext-dropped", in: "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n3;a=b;c=\"d\\\"e\"\r\nabc\r\n0;last\r\n\r\n",
			status: []int{200},
			up:     "POST / HTTP/1.1\r\nHost: {H}\r\n" + tail + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"},
		{name: "chunk-bare-lf", in: "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "chunk-bad-late", in: "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
			in2:    "zz\r\nGET /smuggled HTTP/1.1\r\nHost: {H}\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true,
			// The head and first chunk wait in meshd's 16 KiB upstream buffer: nothing
			// left; were they flushed, the upstream would see them and a close.
			upAlt: "POST / HTTP/1.1\r\nHost: {H}\r\n" + tail + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"},
		{name: "chunk-data-overrun", in: "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},

		// Header syntax: RFC 9112 §2.2, §5; RFC 9110 §5.5.
		{name: "bare-lf-request-line", in: "GET / HTTP/1.1\nHost: {H}\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "bare-lf-field", in: "GET / HTTP/1.1\r\nHost: {H}\nX-A: 1\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "bare-lf-end", in: "GET / HTTP/1.1\r\nHost: {H}\r\n\n",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "obs-fold", in: "GET / HTTP/1.1\r\nHost: {H}\r\nX-A: 1\r\n 2\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "obs-fold-tab", in: "GET / HTTP/1.1\r\nHost: {H}\r\nX-A: 1\r\n\t2\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "space-before-colon", in: "GET / HTTP/1.1\r\nHost: {H}\r\nX-A : 1\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "nul-in-value", in: "GET / HTTP/1.1\r\nHost: {H}\r\nX-A: a\x00b\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "cr-in-value", in: "GET / HTTP/1.1\r\nHost: {H}\r\nX-A: a\rb\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "ctl-in-value", in: "GET / HTTP/1.1\r\nHost: {H}\r\nX-A: a\x01b\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "name-invalid-char", in: "GET / HTTP/1.1\r\nHost: {H}\r\nX(A): 1\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "name-nonascii", in: "GET / HTTP/1.1\r\nHost: {H}\r\nX-\xc3\xa9: 1\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "name-empty", in: "GET / HTTP/1.1\r\nHost: {H}\r\n: 1\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "no-colon", in: "GET / HTTP/1.1\r\nHost: {H}\r\nX-A\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "request-line-double-space", in: "GET  / HTTP/1.1\r\nHost: {H}\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "http-version-2", in: "GET / HTTP/2.0\r\nHost: {H}\r\n\r\n",
			status: []int{505}, code: "bad_request", closed: true},
		{name: "http-version-lower", in: "GET / http/1.1\r\nHost: {H}\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "request-line-too-long", in: "GET /" + strings.Repeat("a", 61<<10) + " HTTP/1.1\r\nHost: {H}\r\n\r\n",
			status: []int{414}, code: "bad_request", closed: true},
		{name: "header-section-too-large", in: get("/", strings.Repeat("X-Pad: "+strings.Repeat("p", 1000)+"\r\n", 62)),
			status: []int{431}, code: "bad_request", closed: true},
		{name: "too-many-fields", in: get("/", strings.Repeat("X-A: 1\r\n", 100)),
			status: []int{431}, code: "bad_request", closed: true},

		// Authority: RFC 9112 §3.2.
		{name: "missing-host", in: "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "duplicate-host", in: "GET / HTTP/1.1\r\nHost: {H}\r\nHost: other.example\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "duplicate-host-same", in: "GET / HTTP/1.1\r\nHost: {H}\r\nHost: {H}\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "host-invalid", in: "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "host-with-userinfo", in: "GET / HTTP/1.1\r\nHost: user@{H}\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		// The absolute-form target's authority wins over Host (RFC 9112 §3.2.2), for
		// routing and for what the upstream sees: one authority, never two.
		{name: "absolute-form-overrides-host", in: "GET http://{H}/p?q=1 HTTP/1.1\r\nHost: other.example\r\n\r\n",
			status: []int{200}, up: upGet("/p?q=1")},
		{name: "absolute-form-other-host-egress", in: "GET http://other.example/p HTTP/1.1\r\nHost: {H}\r\n\r\n",
			status: []int{404}, code: "egress_denied", egressOnly: true},
		{name: "absolute-form-other-host-ingress", in: "GET http://other.example/p HTTP/1.1\r\nHost: {H}\r\n\r\n",
			status: []int{200}, ingressOnly: true,
			up: "GET /p HTTP/1.1\r\nHost: other.example\r\n" + tail + "\r\n"},
		{name: "absolute-form-userinfo", in: "GET http://u@{H}/ HTTP/1.1\r\nHost: {H}\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},
		{name: "absolute-form-no-host", in: "GET http://{H}/ HTTP/1.1\r\n\r\n",
			status: []int{400}, code: "bad_request", closed: true},

		// HTTP/1.0: persistent only with keep-alive (RFC 9112 §9.3); upstream it is 1.1.
		{name: "http10-keep-alive", in: "GET / HTTP/1.0\r\nHost: {H}\r\nConnection: keep-alive\r\n\r\n",
			status: []int{200}, up: upGet("/")},
		{name: "http10-close", in: "GET / HTTP/1.0\r\nHost: {H}\r\n\r\n",
			status: []int{200}, closed: true, up: upGet("/")},

		// Upgrades and methods meshd does not implement.
		{name: "connect", in: "CONNECT {H}:443 HTTP/1.1\r\nHost: {H}:443\r\n\r\n",
			status: []int{405}, code: "bad_request", closed: true},
		// h2c upgrade: ignored, the request served as HTTP/1.1 (RFC 9113 §3.1), and
		// neither Upgrade nor HTTP2-Settings (named in Connection) goes upstream.
		{name: "upgrade-h2c", in: get("/", "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"),
			status: []int{200}, up: upGet("/")},
		// WebSocket: relayed as an upgrade; this upstream does not switch, so the
		// client gets its 200, and meshd does not keep a connection whose protocol
		// the client may already have switched.
		{name: "upgrade-websocket-refused-upstream", in: get("/ws", "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"),
			status: []int{200},
			up:     upGet("/ws", "Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nConnection: upgrade\r\n")},
		// Upgrade without Connection: upgrade is not an upgrade (RFC 9110 §7.8).
		{name: "upgrade-without-connection", in: get("/", "Upgrade: websocket\r\n"),
			status: []int{200}, up: upGet("/")},

		// Hop-by-hop: Connection and what it names, and the fixed list, never go upstream.
		{name: "connection-named-fields", in: get("/", "Connection: X-Secret, keep-alive\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: 2\r\n"),
			status: []int{200}, up: upGet("/", "X-Kept: 2\r\n")},
		{name: "connection-names-forwarding-field", in: get("/", "Connection: X-Forwarded-For, X-Request-Id\r\nX-Forwarded-For: 6.6.6.6\r\nX-Request-Id: spoof\r\n"),
			status: []int{200}, up: upGet("/")},
		{name: "connection-names-host-cl", in: "POST / HTTP/1.1\r\nHost: {H}\r\nConnection: Host, Content-Length\r\nContent-Length: 3\r\n\r\nabc",
			status: []int{200}, up: "POST / HTTP/1.1\r\nHost: {H}\r\n" + tail + "Content-Length: 3\r\n\r\nabc"},
		{name: "hop-by-hop-fields", in: get("/", "TE: trailers, deflate\r\nProxy-Authorization: Basic c2VjcmV0\r\nProxy-Connection: keep-alive\r\nKeep-Alive: 5\r\nTrailer: X-T\r\nX-Kept: 1\r\n"),
			status: []int{200}, up: upGet("/", "X-Kept: 1\r\nTE: trailers\r\n")},
		{name: "connection-close", in: get("/", "Connection: close\r\n"),
			status: []int{200}, closed: true, up: upGet("/")},

		// Forwarding fields from outside (headers.go's rules, docs/security.md):
		// X-Forwarded-For is appended to; X-Forwarded-Proto is kept on egress (the
		// local app states it) and replaced on ingress (the network peer is not
		// trusted to); X-Request-Id is kept; X-Meshd-Peer-Identity is removed
		// (ingress sets it from the verified TLS peer only); other X-Meshd-* and
		// X-Envoy-* fields pass through untouched: meshd acts on none of them.
		{name: "forwarding-fields-from-outside",
			in: get("/", "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Request-Id: abc\r\nX-Meshd-Peer-Identity: spiffe://t/evil\r\n"+
				"X-Meshd-Error: fake\r\nX-Envoy-Max-Retries: 10\r\nX-Envoy-Upstream-Rq-Timeout-Ms: 1\r\nX-Forwarded-For: 7.7.7.7\r\n"),
			status: []int{200},
			up: "GET / HTTP/1.1\r\nHost: {H}\r\nX-Forwarded-For: 6.6.6.6, 7.7.7.7, 127.0.0.1\r\nX-Forwarded-Proto: https\r\nX-Request-Id: abc\r\n" +
				"X-Meshd-Error: fake\r\nX-Envoy-Max-Retries: 10\r\nX-Envoy-Upstream-Rq-Timeout-Ms: 1\r\n\r\n",
			upIngress: strp("GET / HTTP/1.1\r\nHost: {H}\r\nX-Forwarded-For: 6.6.6.6, 7.7.7.7, 127.0.0.1\r\nX-Request-Id: abc\r\n" +
				"X-Meshd-Error: fake\r\nX-Envoy-Max-Retries: 10\r\nX-Envoy-Upstream-Rq-Timeout-Ms: 1\r\nX-Forwarded-Proto: http\r\n\r\n")},

		// Pipelining: requests after a rejected one are never served nor forwarded.
		{name: "pipelined-after-rejected",
			in:     get("/a") + "GET /b HTTP/1.1\r\nHost: {H}\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx" + get("/c"),
			status: []int{200, 400}, code: "bad_request", closed: true, up: upGet("/a")},
		{name: "pipelined-after-bad-chunk",
			in:     get("/a") + "POST /b HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n" + get("/c"),
			status: []int{200, 400}, code: "bad_request", closed: true, up: upGet("/a")},
		// A body's bytes are the body: "GET /c" inside a Content-Length body is never a
		// request.
		{name: "request-inside-body",
			in:     "POST /a HTTP/1.1\r\nHost: {H}\r\nContent-Length: 39\r\n\r\n" + "GET /c HTTP/1.1\r\nHost: {H}\r\n\r\n",
			status: []int{200},
			up:     "POST /a HTTP/1.1\r\nHost: {H}\r\n" + tail + "Content-Length: 39\r\n\r\nGET /c HTTP/1.1\r\nHost: {H}\r\n\r\n"},
		{name: "pipelined-ok", in: get("/a") + get("/b") + get("/c"),
			status: []int{200, 200, 200}, up: upGet("/a") + upGet("/b") + upGet("/c")},
	}
	print := os.Getenv("MESHD_SMUGGLE_PRINT") != ""
	for _, kind := range []string{"egress", "ingress"} {
		addr := srv.EgressAddr()
		if kind == "ingress" {
			addr = srv.IngressAddr()
		}
		for _, row := range rows {
			if (row.egressOnly && kind != "egress") || (row.ingressOnly && kind != "ingress") {
				continue
			}
			t.Run(kind+"/"+row.name, func(t *testing.T) {
				expand := strings.NewReplacer("{H}", host).Replace
				want := row.up
				if kind == "ingress" && row.upIngress != nil {
					want = *row.upIngress
				}
				want = expand(want)
				rec.reset()
				got := runSmuggleRow(t, addr, expand(row.in), expand(row.in2), expand(get("/after")), row)
				if print {
					t.Logf("responses %v closed=%v upstream:\n%s", got.status, got.closed, normalizeUp(rec.bytes()))
				}
				if fmt.Sprint(got.status) != fmt.Sprint(row.status) {
					t.Errorf("statuses %v, want %v", got.status, row.status)
				}
				if got.code != row.code {
					t.Errorf("x-meshd-error %q, want %q", got.code, row.code)
				}
				if got.closed != row.closed {
					t.Errorf("closed after the last response: %v, want %v", got.closed, row.closed)
				}
				if !row.closed {
					want += expand(upGet("/after"))
				}
				// What was forwarded reached the upstream before the client's answer; a
				// request meshd aborted part-way may still be in the upstream's socket.
				alt := want
				if row.upAlt != "" {
					alt = expand(row.upAlt)
				}
				var seen string
				for range 200 {
					if seen = normalizeUp(rec.bytes()); seen == want || seen == alt {
						break
					}
					time.Sleep(5 * time.Millisecond)
				}
				if seen != want && seen != alt {
					t.Errorf("the upstream saw:\n%q\nwant:\n%q", seen, want)
				}
			})
		}
	}
}

type smuggleResult struct {
	status []int
	code   string
	closed bool
}

// runSmuggleRow writes in, reads the responses, then learns whether meshd closed the
// connection: a closing row must end in EOF; otherwise the follow-up request must be
// served on the same connection.
func runSmuggleRow(t *testing.T, addr, in, in2, followUp string, row smuggleRow) smuggleResult {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, in); err != nil {
		t.Fatalf("write: %v", err)
	}
	if in2 != "" {
		time.Sleep(100 * time.Millisecond)
		if _, err := io.WriteString(c, in2); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	var res smuggleResult
	br := bufio.NewReader(c)
	for range row.status {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("after %v: reading a response: %v", res.status, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		res.status = append(res.status, resp.StatusCode)
		res.code = resp.Header.Get("x-meshd-error")
	}
	if row.closed {
		rest, err := io.ReadAll(br)
		if err != nil {
			t.Fatalf("after the responses: %v (want EOF)", err)
		}
		if len(rest) > 0 {
			t.Fatalf("after the responses: %q (want EOF)", clip(rest))
		}
		res.closed = true
		return res
	}
	if _, err := io.WriteString(c, followUp); err != nil {
		t.Fatalf("follow-up write: %v", err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			res.closed = true
			return res
		}
		t.Fatalf("follow-up: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !bytes.Equal(body, []byte("ok")) {
		t.Fatalf("follow-up: %d %q", resp.StatusCode, body)
	}
	return res
}
