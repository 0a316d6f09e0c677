package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/meshd/meshd/internal/rawio"
	"github.com/meshd/meshd/proxy/listen"
	"github.com/meshd/meshd/proxy/state"
	meshtls "github.com/meshd/meshd/tls"
)

// DefaultTLSHandshakeTimeout bounds a TLS handshake on a listener (Options): crypto/tls
// has no timeout of its own, and a client that connects and sends nothing (or stops
// half way) would otherwise hold its goroutine until the keep-alive idle timeout.
const DefaultTLSHandshakeTimeout = 10 * time.Second

// DefaultFirstRequestTimeout is Options.FirstRequestTimeout's default: long enough for a
// client on a slow link to send a request head, short enough that silent connections
// do not pile up (HAProxy's timeout http-request is commonly 10s).
const DefaultFirstRequestTimeout = 10 * time.Second

// tlsHandshakeTimeout is Options.TLSHandshakeTimeout with its default.
func (o *Options) tlsHandshakeTimeout() time.Duration {
	if o.TLSHandshakeTimeout > 0 {
		return o.TLSHandshakeTimeout
	}
	return DefaultTLSHandshakeTimeout
}

// Why a listener's TLS handshake failed, in its log line: the handshake counters'
// result (meshtls.HandshakeResult: error, verify_error, verify_san, no_certificate),
// with the connection errors told apart.
const (
	tlsFailTimeout = "timeout" // not complete within the handshake timeout
	tlsFailClosed  = "closed"  // the client closed or reset the connection
	tlsFailNotTLS  = "not_tls" // a STRICT listener got something else than a ClientHello
)

// tlsFailReasons are the reasons of the log lines, for their rate limit.
var tlsFailReasons = [...]string{tlsFailTimeout, tlsFailClosed, tlsFailNotTLS,
	meshtls.HandshakeError.String(), meshtls.HandshakeVerifyError.String(), meshtls.HandshakeVerifySAN.String(),
	meshtls.HandshakeNoCertificate.String()}

// tlsIngress is when each failure reason last logged at info level.
type tlsIngress struct {
	lastInfo [len(tlsFailReasons)]atomic.Int64 // unix nanos
}

// TLSListenerStats returns the handshake counters of the ingress listeners that
// terminate TLS in the config in force, by listener name ("ingress:<port>"): New makes
// it the admin API's TLSListeners (/stats listener.<name>.ssl.*,
// meshd_tls_handshakes_total{side="server"}).
func (s *Server) TLSListenerStats() map[string]*meshtls.HandshakeStats {
	snap := s.state.Load()
	if snap == nil {
		return nil
	}
	ls := snap.TLSListeners()
	out := make(map[string]*meshtls.HandshakeStats, len(ls))
	for port, st := range ls {
		out["ingress:"+strconv.Itoa(port)] = &st.Handshakes
	}
	return out
}

// TLSPlaintextStats returns, per PERMISSIVE ingress listener of the config in force, the
// connections it served in plaintext (/stats listener.<name>.permissive_plaintext_connections,
// meshd_tls_permissive_plaintext_connections_total): how many callers still speak
// plaintext, the number to watch before switching the listener to STRICT.
func (s *Server) TLSPlaintextStats() map[string]uint64 {
	snap := s.state.Load()
	if snap == nil {
		return nil
	}
	out := map[string]uint64{}
	for port, st := range snap.TLSListeners() {
		if l := snap.ListenerTLS(port); l != nil && l.Mode == meshtls.ModePermissive {
			out["ingress:"+strconv.Itoa(port)] = st.Plaintext.Load()
		}
	}
	return out
}

// terminateTLS serves the TLS of an ingress connection addressed to a listener whose
// tls block (lis) asks for it, on port. STRICT: the handshake, within the handshake
// timeout. PERMISSIVE: the first bytes say whether the client speaks TLS (a tcp
// listener waits for them at most the sniff timeout, as a server-first protocol sends
// nothing; no byte then means plaintext); plaintext is served as is. After a handshake
// tc's connection is the *tls.Conn, br reads the decrypted stream, tc.TLS holds the
// connection state and tc.Peer the client's verified SPIFFE ID (mTLS). proto is the
// protocol ALPN settled (HTTP2 for h2, HTTP1 for http/1.1), zero when the bytes must
// tell. ok false: the connection must close (the handshake failed, logged and counted).
func (s *Server) terminateTLS(tc *listen.Conn, br *bufio.Reader, port int, lis *meshtls.Listener, st *state.ListenerTLSStats, tcp bool) (proto listen.Protocol, ok bool) {
	raw := tc.Conn
	var pre []byte
	if lis.Mode == meshtls.ModePermissive {
		arm := func() {}
		if tcp {
			// The idle deadline is applied first, so that the reads through tc below keep
			// the shorter sniff deadline instead of replacing it.
			tc.Timer.Refresh(raw)
			timeout := s.opts.sniffTimeout()
			arm = func() { _ = raw.SetReadDeadline(time.Now().Add(timeout)) }
		}
		isTLS, err := listen.StartsTLS(br, arm)
		if tcp {
			tc.Timer.Forget()
			_ = raw.SetReadDeadline(time.Time{})
		}
		if err != nil && !(tcp && isTimeout(err)) {
			return 0, false // gone before its first byte
		}
		if !isTLS {
			st.Plaintext.Add(1)
			return 0, true
		}
		// The sniffed bytes go to the TLS server; br is reset over the TLS stream.
		b, _ := br.Peek(br.Buffered())
		pre = bytes.Clone(b)
	}
	_ = raw.SetDeadline(time.Now().Add(s.opts.tlsHandshakeTimeout()))
	// The TLS layer's socket I/O is raw too (internal/rawio).
	tconn := tls.Server(listen.Prefixed(rawio.WrapTCP(raw), pre), lis.Config)
	if err := tconn.Handshake(); err != nil {
		s.handshakeFailed(tc, port, lis, st.Handshakes.Handshake(false, err), err, !tcp)
		return 0, false
	}
	_ = raw.SetDeadline(time.Time{})
	tc.Timer.Forget()
	cs := tconn.ConnectionState()
	st.Handshakes.Handshake(cs.DidResume, nil)
	tc.TLS = &cs
	if lis.Trust != nil {
		// The handshake verified the chain and the SANs; the identity is the
		// certificate's SPIFFE ID, when it has one (a certificate of another PKI may
		// carry DNS names only).
		if id, err := meshtls.PeerIdentity(cs); err == nil {
			tc.Peer = id.String()
		} else {
			s.log.Debug("tls: verified client certificate has no SPIFFE ID; the connection has no caller identity",
				"port", port, "remote", tc.RemoteAddr().String(), "err", err)
		}
	}
	s.conns.Wrap(tc, tconn)
	br.Reset(tc)
	switch cs.NegotiatedProtocol {
	case "h2":
		return listen.HTTP2, true
	case "http/1.1":
		return listen.HTTP1, true
	}
	return 0, true
}

// handshakeFailed logs a failed handshake (counted as res), and answers a plaintext
// HTTP request on an HTTP listener with a 400 that says TLS is required (as net/http's
// TLS server does), so that a misconfigured client sees why rather than a closed
// connection. Failures a client causes by merely connecting (timeouts, closes) log at
// debug; the others at info, at most once a second per reason (debug in between): a
// caller refused for its certificate is worth knowing about, a flood of them is not
// worth a flood of lines.
func (s *Server) handshakeFailed(tc *listen.Conn, port int, lis *meshtls.Listener, res meshtls.HandshakeResult, err error, http bool) {
	reason := res.String()
	var rhe tls.RecordHeaderError
	if res == meshtls.HandshakeError {
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			reason = tlsFailTimeout
		case errors.As(err, &rhe):
			reason = tlsFailNotTLS
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
			errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed):
			reason = tlsFailClosed
		}
	}
	if reason == tlsFailNotTLS && http && rhe.Conn != nil && looksHTTP(rhe.RecordHeader[:]) {
		const body = "meshd: this listener requires TLS (tls.mode " + meshtls.ModeStrict + "): use https\n"
		_, _ = io.WriteString(rhe.Conn, "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"+
			"X-Meshd-Error: "+codeTLSRequired+"\r\nConnection: close\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
	}
	level := s.log.Debug
	if reason != tlsFailTimeout && reason != tlsFailClosed {
		i := 0
		for i < len(tlsFailReasons)-1 && tlsFailReasons[i] != reason {
			i++
		}
		now := time.Now().UnixNano()
		last := s.tlsIn.lastInfo[i].Load()
		if now-last >= int64(time.Second) && s.tlsIn.lastInfo[i].CompareAndSwap(last, now) {
			level = s.log.Info
		}
	}
	level("tls: handshake failed; connection closed", "port", port, "mode", lis.Mode, "remote", tc.RemoteAddr().String(),
		"reason", reason, "err", err)
}

// codeTLSRequired is the x-meshd-error code of the answer to a plaintext HTTP request on
// a STRICT listener.
const codeTLSRequired = "tls_required"

// looksHTTP reports whether a record header is the start of an HTTP/1.x request.
func looksHTTP(hdr []byte) bool {
	for _, m := range [...]string{"GET /", "HEAD ", "POST ", "PUT /", "OPTIO", "DELET", "PATCH", "CONNE", "TRACE"} {
		if string(hdr) == m {
			return true
		}
	}
	return false
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
