package listen

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// clientHello captures the first TLS record a real crypto/tls client sends with cfg.
func clientHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	c, s := net.Pipe()
	var wg sync.WaitGroup
	wg.Go(func() {
		// The handshake fails once the capturing side closes; only its first record matters.
		_ = tls.Client(c, cfg).Handshake()
		_ = c.Close()
	})
	defer wg.Wait()
	defer s.Close()
	_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(s, hdr); err != nil {
		t.Fatalf("read record header: %v", err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(s, body); err != nil {
		t.Fatalf("read record: %v", err)
	}
	return append(hdr, body...)
}

// sniffInput delivers chunks through a net.Pipe (each Write blocks until read, so a
// chunk of one byte is one Read for the sniffer) with delay between chunks, closes the
// writing side afterwards when closeAfter is set, and sniffs with the given timeout.
func sniffInput(t *testing.T, chunks [][]byte, delay time.Duration, closeAfter bool, timeout time.Duration) (Protocol, string, error) {
	t.Helper()
	client, server := net.Pipe()
	var wg sync.WaitGroup
	wg.Go(func() {
		for i, ch := range chunks {
			if i > 0 && delay > 0 {
				time.Sleep(delay) // simulates a slow client; nothing waits on it
			}
			if _, err := client.Write(ch); err != nil {
				return
			}
		}
		if closeAfter {
			_ = client.Close()
		}
	})
	t.Cleanup(func() {
		_ = client.Close()
		_ = server.Close()
		wg.Wait()
	})
	br := bufio.NewReaderSize(server, readBufSize)
	arms := 0
	p, sni, err := Sniff(br, func() {
		arms++
		_ = server.SetReadDeadline(time.Now().Add(timeout))
	})
	if arms == 0 {
		t.Error("sniff never armed a deadline")
	}
	// Sniffing consumes nothing: everything read so far is still buffered, in order.
	var sent []byte
	for _, ch := range chunks {
		sent = append(sent, ch...)
	}
	if got, _ := br.Peek(br.Buffered()); !bytes.HasPrefix(sent, got) {
		t.Errorf("buffered %q is not a prefix of what was sent", got)
	}
	return p, string(sni), err
}

func bytesEach(s []byte) [][]byte {
	out := make([][]byte, len(s))
	for i := range s {
		out[i] = s[i : i+1]
	}
	return out
}

func TestSniff(t *testing.T) {
	withSNI := clientHello(t, &tls.Config{ServerName: "Payments.Mesh.Local", MinVersion: tls.VersionTLS12})
	noSNI := clientHello(t, &tls.Config{InsecureSkipVerify: true})
	ipSNI := clientHello(t, &tls.Config{ServerName: "10.1.2.3", InsecureSkipVerify: true}) // RFC 6066: no IP literals in SNI
	tls12 := clientHello(t, &tls.Config{ServerName: "old.example", MaxVersion: tls.VersionTLS12})
	cases := []struct {
		name    string
		in      string
		proto   Protocol
		sni     string
		comment string
	}{
		{"http11 get", "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", HTTP1, "", ""},
		{"http10 short", "GET / HTTP/1.0\r\n\r\n", HTTP1, "", ""},
		{"post bare lf", "POST /p HTTP/1.1\nHost: a\n\n", HTTP1, "", ""},
		{"extension method", "PROPFIND /d HTTP/1.1\r\n\r\n", HTTP1, "", ""},
		{"absolute form", "GET http://svc:8080/a HTTP/1.1\r\n\r\n", HTTP1, "", ""},
		{"h2 preface", string(http2Preface), HTTP2, "", ""},
		{"h2 preface then frames", string(http2Preface) + "\x00\x00\x00\x04\x00\x00\x00\x00\x00", HTTP2, "", ""},
		{"broken preface", "PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", Opaque, "", ""},
		{"redis inline", "PING\r\n", Opaque, "", ""},
		{"redis inline get", "GET key\r\n", Opaque, "", "no HTTP version"},
		{"redis resp", "*1\r\n$4\r\nPING\r\n", Opaque, "", ""},
		{"lowercase method", "get / HTTP/1.1\r\n\r\n", Opaque, "", ""},
		{"http/2 text version", "GET / HTTP/2.0\r\n\r\n", Opaque, "", ""},
		{"ctl in target", "GET /a\x01b HTTP/1.1\r\n", Opaque, "", ""},
		{"postgres startup", "\x00\x00\x00\x08\x04\xd2\x16\x2f", Opaque, "", ""},
		{"tls with sni", string(withSNI), TLS, "Payments.Mesh.Local", ""},
		{"tls without sni", string(noSNI), TLS, "", ""},
		{"tls ip server name", string(ipSNI), TLS, "", ""},
		{"tls 1.2 only", string(tls12), TLS, "old.example", ""},
		{"0x16 not tls", "\x16\x07\x00\x00\x10hello", Opaque, "", ""},
		{"tls zero length record", "\x16\x03\x01\x00\x00", Opaque, "", ""},
	}
	for _, c := range cases {
		for _, mode := range []string{"whole", "byte-at-a-time"} {
			t.Run(c.name+"/"+mode, func(t *testing.T) {
				chunks := [][]byte{[]byte(c.in)}
				if mode != "whole" {
					chunks = bytesEach([]byte(c.in))
				}
				p, sni, err := sniffInput(t, chunks, 0, false, 5*time.Second)
				if err != nil {
					t.Fatalf("sniff: %v", err)
				}
				if p != c.proto || sni != c.sni {
					t.Errorf("Sniff(%q) = %v %q, want %v %q", c.in, p, sni, c.proto, c.sni)
				}
			})
		}
	}
}

func TestSniffTimeouts(t *testing.T) {
	hello := clientHello(t, &tls.Config{ServerName: "db.mesh.local"})
	const short = 30 * time.Millisecond
	cases := []struct {
		name   string
		chunks [][]byte
		close  bool
		proto  Protocol
		sni    string
	}{
		// A server-first Protocol (MySQL, SMTP): the client waits for the greeting.
		{"silent client", nil, false, Opaque, ""},
		// A slow HTTP client that stalls mid request line is still HTTP.
		{"stalled request line", [][]byte{[]byte("GET /sl")}, false, HTTP1, ""},
		{"stalled after method", [][]byte{[]byte("DELETE ")}, false, HTTP1, ""},
		// A stalled TLS record header is no TLS to route by; a stalled ClientHello is TLS
		// without SNI.
		{"stalled record header", [][]byte{[]byte("\x16\x03\x01")}, false, Opaque, ""},
		{"stalled client hello", [][]byte{hello[:40]}, false, TLS, ""},
		// A client that gives up before finishing a request line does not speak HTTP.
		{"eof mid line", [][]byte{[]byte("ABC")}, true, Opaque, ""},
		{"eof mid hello", [][]byte{hello[:60]}, true, TLS, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			p, sni, err := sniffInput(t, c.chunks, 0, c.close, short)
			if err != nil {
				t.Fatalf("sniff: %v", err)
			}
			if p != c.proto || sni != c.sni {
				t.Errorf("got %v %q, want %v %q", p, sni, c.proto, c.sni)
			}
			if !c.close && time.Since(start) < short {
				t.Errorf("decided after %v, before the %v timeout", time.Since(start), short)
			}
		})
	}
	t.Run("eof before any byte", func(t *testing.T) {
		if _, _, err := sniffInput(t, nil, 0, true, time.Second); err == nil {
			t.Error("want the connection error")
		}
	})
}

// TestSniffSlowClient: every byte resets the sniff timeout, so a client slower than the
// timeout overall but faster per byte is classified by what it sends, not cut short.
func TestSniffSlowClient(t *testing.T) {
	const timeout = 400 * time.Millisecond
	hello := clientHello(t, &tls.Config{ServerName: "slow.mesh.local"})
	for _, c := range []struct {
		in    []byte
		proto Protocol
		sni   string
	}{
		{[]byte("GET /slow HTTP/1.1\r\n\r\n"), HTTP1, ""},
		{append(hello[:0:0], hello...), TLS, "slow.mesh.local"},
	} {
		// A handful of chunks spread over more than the timeout in total.
		n := len(c.in)
		chunks := [][]byte{c.in[:5], c.in[5 : n/3], c.in[n/3 : 2*n/3], c.in[2*n/3:]}
		start := time.Now()
		p, sni, err := sniffInput(t, chunks, timeout/3, false, timeout)
		if err != nil {
			t.Fatal(err)
		}
		if p != c.proto || sni != c.sni {
			t.Errorf("got %v %q after %v, want %v %q", p, sni, time.Since(start), c.proto, c.sni)
		}
		if time.Since(start) < timeout {
			t.Errorf("input took %v, less than the %v timeout: the test proves nothing", time.Since(start), timeout)
		}
	}
}

func TestClientHelloSNINoAlloc(t *testing.T) {
	rec := clientHello(t, &tls.Config{ServerName: "svc.mesh.local"})
	allocs := testing.AllocsPerRun(100, func() {
		if string(clientHelloSNI(rec[recordHeaderLen:])) != "svc.mesh.local" {
			t.Fatal("wrong SNI")
		}
	})
	if allocs != 0 {
		t.Errorf("clientHelloSNI allocates %v times", allocs)
	}
}

func TestClientHelloSNITruncated(t *testing.T) {
	rec := clientHello(t, &tls.Config{ServerName: "svc.mesh.local"})
	h := rec[recordHeaderLen:]
	full := string(clientHelloSNI(h))
	for i := range h {
		got := string(clientHelloSNI(h[:i]))
		if got != "" && got != full {
			t.Fatalf("prefix of %d bytes: SNI %q, want %q or none", i, got, full)
		}
	}
}

func FuzzClientHelloSNI(f *testing.F) {
	f.Add(clientHello(f, &tls.Config{ServerName: "a.b"})[recordHeaderLen:])
	f.Add(clientHello(f, &tls.Config{InsecureSkipVerify: true})[recordHeaderLen:])
	f.Add([]byte{1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, h []byte) {
		sni := clientHelloSNI(h)
		if len(sni) > 255 {
			t.Fatalf("SNI of %d bytes", len(sni))
		}
		for _, c := range sni {
			if c <= ' ' || c >= 0x7f {
				t.Fatalf("SNI %q has a byte that is no DNS name's", sni)
			}
		}
	})
}

// FuzzClassifyRequestLine checks that a decision never changes as more bytes arrive:
// the sniffer decides on a prefix and must agree with what the whole input says.
func FuzzClassifyRequestLine(f *testing.F) {
	for _, s := range []string{"GET / HTTP/1.1\r\n", string(http2Preface), "PING\r\n", "POST /x HTTP/1.0\n", "PRI * HTTP/1.1\r\n"} {
		f.Add([]byte(s), uint(3))
	}
	f.Fuzz(func(t *testing.T, b []byte, cut uint) {
		if len(b) == 0 {
			return
		}
		k := int(cut%uint(len(b))) + 1
		early := classifyRequestLine(b[:k])
		if early == lineUndecided {
			return
		}
		if full := classifyRequestLine(b); full != early {
			t.Fatalf("%q: prefix %q says %v, whole says %v", b, b[:k], early, full)
		}
	})
}
