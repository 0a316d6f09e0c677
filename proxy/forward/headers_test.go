package forward

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/textproto"
	"strings"
	"testing"

	"github.com/meshd/meshd/internal/h1"
)

// TestForwardingRulesAgree holds the two representations of the forwarding rules to
// one behaviour: an HTTP/1.1 request forwarded to an HTTP/2 upstream (H1Forwarding then
// H1ToHTTP) carries the same fields as the same request arriving over HTTP/2
// (HTTPForwarding), for every rule of headers.go.
func TestForwardingRulesAgree(t *testing.T) {
	cases := []struct {
		name    string
		fields  string // raw header lines, CRLF-separated, after Host
		ingress bool
		check   map[string]string // field → value both must have ("" : absent); "*" any non-empty
	}{
		{"plain egress", "", false, map[string]string{
			"X-Forwarded-For": "10.1.2.3", "X-Forwarded-Proto": "http", "X-Request-Id": "*"}},
		{"xff appended, repeated fields merged", "X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n", false, map[string]string{
			"X-Forwarded-For": "1.1.1.1, 2.2.2.2, 10.1.2.3"}},
		{"egress keeps the app's proto", "X-Forwarded-Proto: https\r\n", false, map[string]string{"X-Forwarded-Proto": "https"}},
		{"ingress replaces the peer's proto", "X-Forwarded-Proto: https\r\n", true, map[string]string{"X-Forwarded-Proto": "http"}},
		{"request id kept", "X-Request-Id: abc\r\n", false, map[string]string{"X-Request-Id": "abc"}},
		{"hop-by-hop removed", "Connection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nProxy-Authorization: Basic x\r\nUpgrade: h2c\r\n", false,
			map[string]string{"Connection": "", "X-Secret": "", "Keep-Alive": "", "Proxy-Authorization": "", "Upgrade": ""}},
		{"naming a forwarding header in Connection cannot drop meshd's value", "Connection: X-Forwarded-For\r\nX-Forwarded-For: 9.9.9.9\r\n", false,
			map[string]string{"X-Forwarded-For": "10.1.2.3"}},
		{"TE: trailers kept, other TE dropped", "TE: trailers, gzip\r\n", false, map[string]string{"Te": "trailers"}},
		{"other TE dropped", "TE: gzip\r\n", false, map[string]string{"Te": ""}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := "GET / HTTP/1.1\r\nHost: svc\r\n" + tc.fields + "\r\n"
			var req h1.Request
			if err := h1.NewReader(bufio.NewReader(strings.NewReader(raw)), h1.Limits{}).ReadRequest(&req); err != nil {
				t.Fatal(err)
			}
			f := NewH1Forwarding()
			f.Apply(&req, "10.1.2.3", "", tc.ingress, "http")
			fromH1 := H1ToHTTP(req.Headers, f.Extra)

			in, err := textproto.NewReader(bufio.NewReader(strings.NewReader(tc.fields + "\r\n"))).ReadMIMEHeader()
			if err != nil {
				t.Fatal(err)
			}
			fromH2 := HTTPForwarding(http.Header(in), "10.1.2.3", "", tc.ingress, "http")
			for k, want := range tc.check {
				for side, h := range map[string]http.Header{"http1": fromH1, "http2": fromH2} {
					got := strings.Join(h.Values(k), ",")
					switch {
					case want == "*" && got == "":
						t.Errorf("%s: %s missing", side, k)
					case want != "*" && got != want:
						t.Errorf("%s: %s = %q, want %q", side, k, got, want)
					}
				}
			}
		})
	}
}

// TestPeerIdentityHeader: the caller-identity header reaches the application only as
// meshd sets it, on ingress from a verified caller; whatever a request brings in that
// field is removed on both paths (HTTP/1.1 and net/http headers), in any spelling and
// however often, on ingress and egress, and naming it in Connection changes nothing.
func TestPeerIdentityHeader(t *testing.T) {
	const id = "spiffe://shop/frontend"
	cases := []struct {
		name    string
		fields  string
		ingress bool
		peer    string
		want    string // "": absent
	}{
		{"set on ingress", "", true, id, id},
		{"none without a verified caller", "", true, "", ""},
		{"forged, replaced on ingress", "X-Meshd-Peer-Identity: spiffe://shop/admin\r\nx-meshd-peer-identity: spiffe://shop/root\r\n", true, id, id},
		{"forged, dropped on ingress without a verified caller", "X-MESHD-PEER-IDENTITY: spiffe://shop/admin\r\n", true, "", ""},
		{"forged, dropped on egress", "X-Meshd-Peer-Identity: spiffe://shop/admin\r\n", false, "", ""},
		{"never set on egress", "", false, id, ""},
		{"named in Connection", "Connection: X-Meshd-Peer-Identity\r\nX-Meshd-Peer-Identity: spiffe://shop/admin\r\n", true, id, id},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := "GET / HTTP/1.1\r\nHost: svc\r\n" + tc.fields + "\r\n"
			var req h1.Request
			if err := h1.NewReader(bufio.NewReader(strings.NewReader(raw)), h1.Limits{}).ReadRequest(&req); err != nil {
				t.Fatal(err)
			}
			f := NewH1Forwarding()
			f.Apply(&req, "10.1.2.3", tc.peer, tc.ingress, "http")
			var h1Values []string
			for _, hs := range [][]h1.Header{req.Headers, f.Extra} {
				for _, h := range hs {
					if EqualFoldASCII(h.Name, HeaderPeerIdentity) {
						h1Values = append(h1Values, h.Value)
					}
				}
			}
			in, err := textproto.NewReader(bufio.NewReader(strings.NewReader(tc.fields + "\r\n"))).ReadMIMEHeader()
			if err != nil {
				t.Fatal(err)
			}
			sides := map[string][]string{
				"http1":       h1Values,
				"http1→http2": H1ToHTTP(req.Headers, f.Extra).Values(HeaderPeerIdentity),
				"http2":       HTTPForwarding(http.Header(in), "10.1.2.3", tc.peer, tc.ingress, "http").Values(HeaderPeerIdentity),
			}
			for side, got := range sides {
				if (tc.want == "" && len(got) != 0) || (tc.want != "" && (len(got) != 1 || got[0] != tc.want)) {
					t.Errorf("%s: %s = %q, want %q", side, HeaderPeerIdentity, got, tc.want)
				}
			}
		})
	}
}

// TestHopByHopOneList: the net/http path strips exactly the fields the codec's writer
// strips (h1.HopByHop), not a list of its own.
func TestHopByHopOneList(t *testing.T) {
	h := http.Header{}
	for _, k := range []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Type", "X-Custom"} {
		h.Set(k, "v")
	}
	RemoveHopByHop(h)
	if len(h) != 2 || h.Get("Content-Type") == "" || h.Get("X-Custom") == "" {
		t.Fatalf("left %v, want Content-Type and X-Custom only", h)
	}
}

// TestH1ForwardingPeerAllocs: stripping a forged identity and adding the verified one
// costs the HTTP/1.1 path no allocation.
func TestH1ForwardingPeerAllocs(t *testing.T) {
	raw := "GET / HTTP/1.1\r\nHost: svc\r\nX-Request-Id: a\r\nX-Meshd-Peer-Identity: spiffe://shop/admin\r\n\r\n"
	var req h1.Request
	rd := h1.NewReader(bufio.NewReader(strings.NewReader(raw)), h1.Limits{})
	if err := rd.ReadRequest(&req); err != nil {
		t.Fatal(err)
	}
	headers := append([]h1.Header(nil), req.Headers...)
	f := NewH1Forwarding()
	allocs := testing.AllocsPerRun(100, func() {
		req.Headers = append(req.Headers[:0], headers...)
		f.Apply(&req, "10.1.2.3", "spiffe://shop/frontend", true, "https")
	})
	if allocs != 0 {
		t.Fatalf("Apply allocated %v times", allocs)
	}
	if v, ok := req.Get(HeaderPeerIdentity); ok {
		t.Fatalf("the forged identity %q is still there", v)
	}
}

// TestAppendUUID holds the request id's format: a version 4, variant 10 UUID, the bits
// of the two random words in order, lower-case hex.
func TestAppendUUID(t *testing.T) {
	words := [][2]uint64{{0, 0}, {^uint64(0), ^uint64(0)}, {0x0123456789abcdef, 0xfedcba9876543210}, {0xdeadbeefcafef00d, 0x1}}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 10000 {
		words = append(words, [2]uint64{rng.Uint64(), rng.Uint64()})
	}
	for _, w := range words {
		hi := (w[0] &^ (0xf << 12)) | (4 << 12)
		lo := (w[1] &^ (0x3 << 62)) | (0x2 << 62)
		want := fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", hi>>32, (hi>>16)&0xffff, hi&0xffff, lo>>48, lo&(1<<48-1))
		if got := string(appendUUID([]byte("id="), w[0], w[1])); got != "id="+want {
			t.Errorf("appendUUID(%#x, %#x) = %q, want %q", w[0], w[1], got, "id="+want)
		}
		if got := appendUUID(nil, w[0], w[1]); got[14] != '4' || !strings.ContainsRune("89ab", rune(got[19])) {
			t.Errorf("appendUUID(%#x, %#x) = %q: not version 4, variant 10", w[0], w[1], got)
		}
	}
}

// TestSplitHostPort holds the Host splitting routing uses: a port only after the last
// colon of a name or IPv4 address, or after an IPv6 literal's bracket.
func TestSplitHostPort(t *testing.T) {
	for _, tt := range []struct {
		in   string
		host string
		port int
	}{
		{"svc.local", "svc.local", 0},
		{"svc.local:8080", "svc.local", 8080},
		{"10.0.0.1:80", "10.0.0.1", 80},
		{"svc:", "svc", 0},
		{"svc:99999", "svc", 0},
		{"svc:8x", "svc", 0},
		{"::1", "::1", 0},
		{"fe80::1:80", "fe80::1:80", 0},
		{"[::1]:8443", "::1", 8443},
		{"[::1]", "::1", 0},
		{"[::1", "[::1", 0},
		{"", "", 0},
	} {
		if host, port := SplitHostPort(tt.in); host != tt.host || port != tt.port {
			t.Errorf("SplitHostPort(%q) = %q, %d; want %q, %d", tt.in, host, port, tt.host, tt.port)
		}
	}
}
