package meshtls_test

import (
	"crypto/tls"
	"errors"
	"testing"
	"time"

	meshtls "github.com/meshd/meshd/tls"
)

// TestHandshakeStatsClassify: real handshakes over 127.0.0.1 end in each of the
// results HandshakeStats counts, on the side that saw them: a full handshake, a resumed
// one, a server of another CA, a SAN outside the list, an expired server certificate, a
// client without a certificate where the server requires one, and no protocol in
// common.
func TestHandshakeStatsClassify(t *testing.T) {
	ca, other := newCA(t), newCA(t)
	back := newNode(t, ca, "shop", "backend")
	front := newNode(t, ca, "shop", "frontend")
	foreign := newNode(t, other, "shop", "backend")

	server := mustServer(t, meshtls.ServerOptions{Certificate: back.cert})
	mtlsServer := mustServer(t, meshtls.ServerOptions{Certificate: back.cert, Trust: back.trust})
	foreignServer := mustServer(t, meshtls.ServerOptions{Certificate: foreign.cert})
	h1only := mustServer(t, meshtls.ServerOptions{Certificate: back.cert, NextProtos: []string{"http/1.1"}})
	later := func() time.Time { return back.wc.Cert.NotAfter.Add(time.Hour) }

	cache := tls.NewLRUClientSessionCache(4)
	client := func(o meshtls.ClientOptions) *tls.Config {
		o.ServerName, o.Trust = "backend.shop.local", front.trust
		return mustClient(t, o)
	}
	resuming := client(meshtls.ClientOptions{SessionCache: cache})
	cases := []struct {
		name           string
		server, client *tls.Config
		serverSide     bool // the result is the server's verdict
		want           meshtls.HandshakeResult
	}{
		{"full", server, resuming, false, meshtls.HandshakeOK},
		{"resumed", server, resuming, false, meshtls.HandshakeResumed},
		{"another CA", foreignServer, client(meshtls.ClientOptions{}), false, meshtls.HandshakeVerifyError},
		{"SAN outside the list", server, client(meshtls.ClientOptions{SubjectAltNames: []string{"spiffe://shop/other"}}), false, meshtls.HandshakeVerifySAN},
		{"expired", server, client(meshtls.ClientOptions{Now: later}), false, meshtls.HandshakeVerifyError},
		{"no client certificate", mtlsServer, client(meshtls.ClientOptions{}), true, meshtls.HandshakeNoCertificate},
		{"no protocol in common", h1only, client(meshtls.ClientOptions{NextProtos: []string{"h2"}}), false, meshtls.HandshakeError},
	}
	var total meshtls.HandshakeStats
	for _, c := range cases {
		r := handshake(t, c.server, c.client)
		var st meshtls.HandshakeStats
		var got meshtls.HandshakeResult
		if c.serverSide {
			got = st.Handshake(r.server.DidResume, r.serverErr)
		} else {
			err := r.clientErr
			if err != nil && r.client.HandshakeComplete {
				err = nil // a failure after the handshake (the read) is not the handshake's
			}
			got = st.Handshake(r.client.DidResume, err)
		}
		total.Handshake(r.client.DidResume, r.clientErr)
		if got != c.want || st.Count(c.want) != 1 {
			t.Errorf("%s: counted %s (server %v, client %v), want %s", c.name, got, r.serverErr, r.clientErr, c.want)
		}
	}
	if s, f := total.Successes(), total.Failures(); s != 2 || f != 5 {
		t.Errorf("client side: %d successes, %d failures; want 2 and 5", s, f)
	}
	if total.Count(meshtls.HandshakeResumed) != 1 {
		t.Errorf("client side: %d resumed, want 1", total.Count(meshtls.HandshakeResumed))
	}
}

// TestHandshakeResultNames: every result has a Prometheus label and an Envoy counter
// name of its own.
func TestHandshakeResultNames(t *testing.T) {
	labels, envoy := map[string]bool{}, map[string]bool{}
	for _, r := range meshtls.HandshakeResults() {
		if l := r.String(); l == "unknown" || labels[l] {
			t.Errorf("result %d: label %q", r, l)
		} else {
			labels[l] = true
		}
		if e := r.EnvoyName(); e == "unknown" || envoy[e] {
			t.Errorf("result %d: Envoy name %q", r, e)
		} else {
			envoy[e] = true
		}
	}
	if got := meshtls.ClassifyHandshake(false, errors.New("read: connection reset by peer")); got != meshtls.HandshakeError {
		t.Errorf("a reset counts as %s", got)
	}
}
