package h2

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// tcpPair is a connected pair of loopback TCP connections (client, server).
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close(); _ = sc.Close() })
	return cc, sc
}

// serveOne serves sc on s in a goroutine; the channel closes when ServeConn returns.
func serveOne(s *Server, sc net.Conn, info ConnInfo) chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.ServeConn(context.Background(), sc, nil, info)
	}()
	return done
}

func waitConns(t *testing.T, s *Server, n int) {
	t.Helper()
	for i := 0; s.Conns() != n; i++ {
		if i > 500 {
			t.Fatalf("%d connections registered, want %d", s.Conns(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func okHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) })
}

// TestServeConnAfterShutdownCloses: a connection handed to a server that was shut
// down is closed by ServeConn (no reader runs to end a lingering close).
func TestServeConnAfterShutdownCloses(t *testing.T) {
	s := &Server{Handler: okHandler()}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, sc := tcpPair(t)
	s.ServeConn(context.Background(), sc, nil, ConnInfo{})
	if err := sc.SetReadDeadline(time.Now()); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("connection after ServeConn returned: %v, want it closed", err)
	}
}

// TestCloseEndsLinger: a connection closed gracefully (GOAWAY, no stream) lingers
// while its client keeps it open, and Server.Close ends the linger at once.
func TestCloseEndsLinger(t *testing.T) {
	s := &Server{Handler: okHandler()}
	cc, sc := tcpPair(t)
	done := serveOne(s, sc, ConnInfo{})
	if _, err := io.WriteString(cc, clientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(cc, cc)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	waitConns(t, s, 1)
	if n := s.GoAway(func(context.Context) bool { return true }); n != 1 {
		t.Fatalf("GoAway reached %d connections", n)
	}
	_ = cc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var goaway bool
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			if err != io.EOF || !goaway {
				t.Fatalf("after GOAWAY %v: %v, want the half-close's EOF", goaway, err)
			}
			break
		}
		_, ok := f.(*http2.GoAwayFrame)
		goaway = goaway || ok
	}
	select {
	case <-done:
		t.Fatal("ServeConn returned at the half-close: no linger")
	default:
	}
	start := time.Now()
	_ = s.Close()
	select {
	case <-done:
	case <-time.After(lingerTimeout / 2):
		t.Fatalf("ServeConn still lingering %v after Close", time.Since(start))
	}
}

// TestGracefulCloseBeforePreface: a drain that reaches a connection before its client
// preface lingers (a second, not the first request's 10 s) and is not counted as a
// first-request timeout.
func TestGracefulCloseBeforePreface(t *testing.T) {
	s := &Server{Handler: okHandler()}
	var missed atomic.Uint64
	_, sc := tcpPair(t)
	done := serveOne(s, sc, ConnInfo{FirstRequestBy: time.Now().Add(10 * time.Second), FirstRequestTimeouts: &missed})
	waitConns(t, s, 1)
	s.GoAway(func(context.Context) bool { return true })
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the drained connection waited for its first-request deadline")
	}
	if n := missed.Load(); n != 0 {
		t.Fatalf("%d first-request timeouts counted for a drained connection", n)
	}
}

// TestCloseWriteTLS: closeWrite on a TLS connection sends close_notify and then the
// TCP FIN (tls.Conn.CloseWrite alone leaves the socket open until the final close).
func TestCloseWriteTLS(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"h2.test"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	rawC, rawS := tcpPair(t)
	srv := tls.Server(rawS, &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	cli := tls.Client(rawC, &tls.Config{InsecureSkipVerify: true, ServerName: "h2.test"})
	hs := make(chan error, 1)
	go func() { hs <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-hs; err != nil {
		t.Fatal(err)
	}
	if err := closeWrite(srv); err != nil {
		t.Fatal(err)
	}
	_ = rawC.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := cli.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("TLS read after closeWrite: %v, want EOF (close_notify)", err)
	}
	if _, err := rawC.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("TCP read after the close_notify: %v, want EOF (FIN)", err)
	}
}
