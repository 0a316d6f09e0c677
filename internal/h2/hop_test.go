package h2

import (
	"net/http"
	"testing"

	"golang.org/x/net/http2/hpack"

	"github.com/meshd/meshd/internal/h1"
)

// TestDecoderHopMatchesH1: a request field the proxy's removal pass would remove
// (h1.HopByHop) is either refused by the decoder (connection-specific, RFC 9113 §8.2.2)
// or noted in headerBlock.hop, which lets the proxy skip that pass when it is not set
// (responseWriter.RequestHopFree); any other field leaves hop unset. The decoder's list
// is written out by hand, so this keeps it in step with internal/h1's.
func TestDecoderHopMatchesH1(t *testing.T) {
	names := []string{"te", "trailer", "upgrade", "connection", "keep-alive", "proxy-connection",
		"transfer-encoding", "proxy-authenticate", "proxy-authorization", "host", "content-length",
		"content-type", "x-forwarded-for", "authorization", "accept", "trailers", "tee", "upgrades",
		"x-connection", "proxy-auth", "user-agent", "cookie", "grpc-timeout"}
	for _, name := range names {
		value := "v"
		switch name {
		case "te":
			value = "trailers"
		case "content-length":
			value = "0"
		}
		var b headerBlock
		b.reset(false, false, 0, 0)
		b.emit(hpack.HeaderField{Name: name, Value: value})
		canon := http.CanonicalHeaderKey(name)
		hop := h1.HopByHop(canon)
		switch {
		case hop && b.err == "" && !b.hop:
			t.Errorf("%s: h1.HopByHop names it, the decoder neither refused it nor noted it", name)
		case !hop && b.hop:
			t.Errorf("%s: noted as hop-by-hop, h1.HopByHop does not name it", name)
		case !hop && b.err != "":
			t.Errorf("%s: refused (%s), though not hop-by-hop", name, b.err)
		}
	}
}
