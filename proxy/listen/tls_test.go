package listen

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// TestStartsTLS: a real ClientHello is TLS, whatever arrives first; plaintext, a lone
// 0x16 and a 0x16 not followed by version 3 are not; a silent client is an error of
// the wait (the caller's deadline).
func TestStartsTLS(t *testing.T) {
	hello := clientHello(t, &tls.Config{ServerName: "a.example", NextProtos: []string{"h2"}})
	for _, c := range []struct {
		name   string
		chunks [][]byte
		want   bool
	}{
		{"ClientHello", [][]byte{hello}, true},
		{"ClientHello byte by byte", [][]byte{hello[:1], hello[1:2], hello[2:]}, true},
		{"HTTP", [][]byte{[]byte("GET / HTTP/1.1\r\n\r\n")}, false},
		{"0x16 then something else", [][]byte{{0x16, 'x', 'y'}}, false},
		{"a lone 0x16", [][]byte{{0x16}}, false},
	} {
		client, server := net.Pipe()
		var wg sync.WaitGroup
		wg.Go(func() {
			for _, ch := range c.chunks {
				if _, err := client.Write(ch); err != nil {
					return
				}
			}
			_ = client.Close()
		})
		br := bufio.NewReader(server)
		arms := 0
		got, err := StartsTLS(br, func() { arms++; _ = server.SetReadDeadline(time.Now().Add(5 * time.Second)) })
		if got != c.want || err != nil || arms == 0 {
			t.Errorf("%s: %v %v (armed %d times), want %v", c.name, got, err, arms, c.want)
		}
		if c.want && br.Buffered() == 0 {
			t.Errorf("%s: the sniffed bytes were consumed", c.name)
		}
		_ = server.Close()
		wg.Wait()
	}

	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	got, err := StartsTLS(bufio.NewReader(server), func() { _ = server.SetReadDeadline(time.Now().Add(20 * time.Millisecond)) })
	if got || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a silent client: %v %v, want the wait's timeout", got, err)
	}
}

// selfSigned is a server certificate for the TLS tests of this package.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "listen"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"listen"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestConnOverTLS: a Conn whose TLS server reads the sniffed bytes through Prefixed
// serves the handshake and the data after it; its Raw and TCP are the socket under TLS,
// and ShutRead, from another goroutine, ends a read blocked in the TLS layer.
func TestConnOverTLS(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Errorf("client: %v", err)
			return
		}
		defer c.Close()
		_, _ = io.WriteString(c, "ping")
		// Wait for the server to shut its read side and close.
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.Copy(io.Discard, c)
	})
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	tracker := &Tracker{}
	tc := &Conn{Conn: nc}
	tracker.Track(tc)
	defer tracker.Untrack(tc)
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(tc)
	if ok, err := StartsTLS(br, func() {}); !ok || err != nil {
		t.Fatalf("StartsTLS: %v %v", ok, err)
	}
	pre, _ := br.Peek(br.Buffered())
	srv := tls.Server(Prefixed(nc, append([]byte(nil), pre...)), &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}})
	if err := srv.Handshake(); err != nil {
		t.Fatal(err)
	}
	tracker.Wrap(tc, srv)
	br.Reset(tc)
	if tc.Raw() != nc || tc.TCP() != nc.(*net.TCPConn) {
		t.Errorf("Raw %T, TCP %v: want the accepted socket", tc.Raw(), tc.TCP())
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "ping" {
		t.Fatalf("decrypted read: %q %v", got, err)
	}
	woken := make(chan error, 1)
	go func() {
		_, err := br.ReadByte()
		woken <- err
	}()
	time.Sleep(10 * time.Millisecond) // let the read block (it is woken either way)
	tracker.Close()                   // wakes tc, idle
	select {
	case err := <-woken:
		if err == nil {
			t.Error("the read after ShutRead returned a byte")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ShutRead did not end a read blocked in the TLS layer")
	}
	_ = tc.Close()
}
