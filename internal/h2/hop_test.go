package h2

import (
	"io"
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

// TestTrailerFieldsMatchH1: what the encoded trailers leave out (notTrailerField, and
// what encodeHeader drops from any section) is what internal/h1 drops from HTTP/1.1
// trailers (h1.TrailerField).
func TestTrailerFieldsMatchH1(t *testing.T) {
	names := []string{"te", "trailer", "upgrade", "connection", "keep-alive", "proxy-connection",
		"transfer-encoding", "proxy-authenticate", "proxy-authorization", "host", "content-length",
		"grpc-status", "grpc-message", "x-checksum", "content-type", "server-timing", "tee", "trailers"}
	for _, name := range names {
		dropped := notTrailerField(http.CanonicalHeaderKey(name)) || isConnectionHeader(name) || name == "host"
		if want := !h1.TrailerField(http.CanonicalHeaderKey(name)); dropped != want {
			t.Errorf("%s: left out of trailers %v, internal/h1 leaves it out %v", name, dropped, want)
		}
	}
}

// TestTrailersLeaveOutFraming: a handler's trailers reach the client without the fields
// a trailer section must not carry.
func TestTrailersLeaveOutFraming(t *testing.T) {
	trailer := serveTrailers(t, func(w http.ResponseWriter) {
		w.Header().Set("Trailer", "X-Sum, Proxy-Authorization, Content-Length, Te")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("body"))
		w.Header().Set("X-Sum", "42")
		w.Header().Set("Proxy-Authorization", "Basic c2VjcmV0")
		w.Header().Set("Content-Length", "4")
		w.Header().Set("Te", "trailers")
		w.Header().Set(http.TrailerPrefix+"Proxy-Authenticate", "Basic")
		w.Header().Set(http.TrailerPrefix+"X-Late", "1")
	})
	if trailer.Get("X-Sum") != "42" || trailer.Get("X-Late") != "1" {
		t.Fatalf("trailers %v, want X-Sum and X-Late", trailer)
	}
	for _, name := range []string{"Proxy-Authorization", "Proxy-Authenticate", "Content-Length", "Te"} {
		if v := trailer.Get(name); v != "" {
			t.Errorf("trailer %s reached the client: %q", name, v)
		}
	}
}

// TestRequestTrailersLeaveOutFraming: the client's request trailers reach the server
// without the fields a trailer section must not carry.
func TestRequestTrailersLeaveOutFraming(t *testing.T) {
	got := make(chan http.Header, 1)
	_, addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		got <- r.Trailer.Clone()
		w.WriteHeader(http.StatusNoContent)
	}), Limits{})
	tr := &Transport{Dial: dialer()}
	defer tr.Close()
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", "http://"+addr+"/", pr)
	// ContentLength 0 with a body: an unknown length, as net/http reads it.
	req.Trailer = http.Header{"X-Sum": nil, "Proxy-Authorization": nil, "Te": nil}
	go func() {
		_, _ = pw.Write([]byte("body"))
		req.Trailer.Set("X-Sum", "42")
		req.Trailer.Set("Proxy-Authorization", "Basic c2VjcmV0")
		req.Trailer.Set("Te", "trailers")
		pw.Close()
	}()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	h := <-got
	if h.Get("X-Sum") != "42" {
		t.Fatalf("trailers %v, want X-Sum", h)
	}
	for _, name := range []string{"Proxy-Authorization", "Te"} {
		if v := h.Get(name); v != "" {
			t.Errorf("request trailer %s reached the server: %q", name, v)
		}
	}
}

// TestTrailerNamesOnce: a trailer set under two spellings of one name, or both announced
// and "Trailer:"-prefixed, leaves as one field, the announced one's value winning, as
// when the trailers were gathered in a map keyed by the canonical name.
func TestTrailerNamesOnce(t *testing.T) {
	trailer := serveTrailers(t, func(w http.ResponseWriter) {
		w.Header().Set("Trailer", "X-Sum")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("body"))
		w.Header()[http.TrailerPrefix+"x-sum"] = []string{"prefixed"}
		w.Header().Set("X-Sum", "announced")
		w.Header()[http.TrailerPrefix+"X-Dup"] = []string{"a"}
		w.Header()[http.TrailerPrefix+"x-dup"] = []string{"b"}
		w.Header()[http.TrailerPrefix+"Grpc-Status"] = []string{"0"}
		// The Kelvin sign folds to k in Unicode, not in ASCII: this invalid name is
		// another field, which the encoder drops, never a replacement of X-Ok's value.
		w.Header()[http.TrailerPrefix+"X-Ok"] = []string{"good"}
		w.Header()[http.TrailerPrefix+"X-O\u212a"] = []string{"bad"}
	})
	if v := trailer["X-Sum"]; len(v) != 1 || v[0] != "announced" {
		t.Errorf("X-Sum trailer %q, want one field, announced", v)
	}
	if v := trailer["X-Dup"]; len(v) != 1 || (v[0] != "a" && v[0] != "b") {
		t.Errorf("X-Dup trailer %q, want one field", v)
	}
	if v := trailer["Grpc-Status"]; len(v) != 1 || v[0] != "0" {
		t.Errorf("Grpc-Status trailer %q, want 0", v)
	}
	if v := trailer["X-Ok"]; len(v) != 1 || v[0] != "good" {
		t.Errorf("X-Ok trailer %q, want good alone", v)
	}
}

// serveTrailers serves one GET with handler and returns the trailers the client got.
func serveTrailers(t *testing.T, handler func(http.ResponseWriter)) http.Header {
	t.Helper()
	_, addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { handler(w) }), Limits{})
	resp, err := stdClient().Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.Trailer
}
