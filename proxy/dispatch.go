package proxy

import (
	"bufio"
	"net"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/proxy/forward"
	"github.com/meshd/meshd/proxy/http1"
	"github.com/meshd/meshd/proxy/l4"
	"github.com/meshd/meshd/proxy/listen"
)

// serveConn terminates TLS where the ingress listener asks for it, tells the
// connection's protocol from ALPN or its first (decrypted) bytes and hands it to the
// front end that serves it. It owns tc and closes it.
//
//	ingress, listener tls STRICT ─► handshake ─► ALPN h2 ─► HTTP/2 front end
//	                     PERMISSIVE ─► TLS record? ─┘     http/1.1 ─► HTTP/1.1 front end
//	                                   └ no: plaintext    none ─► sniffed as below
//	                                                      (tcp listener: L4 relay)
//	no tls / DISABLED, egress ─► classifyConn: sniffed (HTTP/1.1, h2c, TLS passthrough, opaque)
func (s *Server) serveConn(tc *listen.Conn, kind forward.Kind) {
	// The HTTP/1.1 front end ends a connection itself (endH1), perhaps on another
	// goroutine: an idle one parks without one.
	handed := false
	defer func() {
		if !handed {
			_ = tc.Close()
			s.conns.Untrack(tc)
		}
	}()
	if t, ok := tc.Conn.(*net.TCPConn); ok {
		_ = t.SetNoDelay(true)
	}
	tc.SetIdleTimeout(s.opts.KeepAliveIdle)
	// The first request must be complete by then (HTTP/1.1 and HTTP/2 enforce it once
	// they serve); the reads of the sniff and of a PERMISSIVE listener's first bytes are
	// bound by it too, so a client that sends nothing is gone within it.
	tc.Timer.SetHard(time.Now().Add(s.opts.FirstRequestTimeout))
	br := listen.GetReader(tc)
	snap := s.state.Load()
	var (
		proto listen.Protocol
		sni   []byte
		err   error
	)
	if kind == forward.Ingress {
		port := snap.IngressPort(int(tc.Orig.Port()))
		if lis := snap.ListenerTLS(port); lis != nil {
			svc := snap.Table().Ingress(port)
			var ok bool
			if proto, ok = s.terminateTLS(tc, br, port, lis, snap.ListenerTLSStats(port), svc != nil && svc.Protocol == config.ProtoTCP); !ok {
				listen.PutReader(br)
				return
			}
			if tc.TLS != nil {
				// The handshake had its own timeout; the first request's starts now.
				tc.Timer.SetHard(time.Now().Add(s.opts.FirstRequestTimeout))
			}
		}
	}
	if proto == 0 {
		proto, sni, err = s.classifyConn(tc, br, kind, snap)
	}
	if err != nil {
		if isTimeout(err) {
			s.env.FirstRequestTimeouts[kind].Add(1)
		}
		listen.PutReader(br)
		return
	}
	firstBy := tc.Timer.Hard()
	tc.Timer.SetHard(time.Time{})
	switch proto {
	case listen.TLS, listen.Opaque:
		// Not HTTP: L4 keeps its own bounds (connect timeout, tcp idle), and a
		// server-first protocol legitimately waits for the server.
		s.l4.Serve(tc, br, kind, sni)
	case listen.HTTP2:
		// The HTTP/2 server drains with GOAWAY; the idle wake-up must not touch it, and
		// its own timeouts apply (the first request's deadline included). ServeConn
		// returns after its last read, so the reader can be pooled. Forget: a deadline
		// the sniff left in the timer must not make tc's next Read clear the server's.
		tc.SetBusy(true)
		tc.SetIdleTimeout(0)
		_ = tc.Conn.SetDeadline(time.Time{})
		tc.Timer.Forget()
		if kind == forward.Ingress {
			s.h2in.ServeConn(tc, br, firstBy)
		} else {
			s.h2out.ServeConn(tc, br, firstBy)
		}
		_ = tc.Close()
		listen.PutReader(br)
	default:
		tc.Timer.SetHard(firstBy) // http1.Serve takes it as its first request's deadline
		handed = true
		http1.Serve(&s.env, tc, br, kind, func(last *bufio.Reader) { s.endH1(tc, last) })
	}
}

// endH1 ends a connection the HTTP/1.1 front end served.
func (s *Server) endH1(tc *listen.Conn, last *bufio.Reader) {
	// Close before pooling: no read of tc through the reader can be pending afterwards
	// (an HTTP/2 upstream's body writer stops reading the request body first).
	_ = tc.Close()
	if last != nil {
		listen.PutReader(last)
	}
	s.conns.Untrack(tc)
}

// classifyConn decides how serveConn serves a new connection: L7 (HTTP1 or HTTP2) or L4
// (TLS with sni, or Opaque), using the original destination read at accept. Ingress
// uses the target listener's protocol: tcp is L4 without sniffing, anything else is HTTP
// (told apart from h2c by SniffH2). Egress connections that were not redirected are
// HTTP as well (meshd as HTTP_PROXY). Redirected egress connections are sniffed, except
// on ports that only tcp backends serve, where a server-first protocol must not wait for
// the sniff timeout.
func (s *Server) classifyConn(tc *listen.Conn, br *bufio.Reader, kind forward.Kind, snap *Snapshot) (listen.Protocol, []byte, error) {
	if kind == forward.Ingress {
		port := snap.IngressPort(int(tc.Orig.Port()))
		svc := snap.Table().Ingress(port)
		if svc != nil && svc.Protocol == config.ProtoTCP {
			return listen.Opaque, nil, nil
		}
		p, sni, err := sniffHTTP(br)
		if p == listen.HTTP1 && err == nil && svc != nil && (svc.Protocol == config.ProtoHTTP2 || svc.Protocol == config.ProtoGRPC) &&
			!listen.LooksHTTP1(br) {
			// An HTTP/2 listener takes HTTP/1.1 clients too (bridged); anything else is
			// spoken to as HTTP/2, whose server answers a bad preface with GOAWAY
			// PROTOCOL_ERROR rather than an HTTP/1.1 400 the client cannot read.
			return listen.HTTP2, nil, nil
		}
		return p, sni, err
	}
	if !tc.Orig.IsValid() {
		// Not redirected: an app using meshd as its HTTP proxy (HTTP_PROXY). There is no
		// destination to relay opaque bytes to, so the HTTP server answers whatever comes.
		return sniffHTTP(br)
	}
	if l4.TCPOnlyPort(snap, int(tc.Orig.Port())) {
		return listen.Opaque, nil, nil
	}
	// The timer's idle deadline is applied first, so that the Conn reads below keep the
	// shorter sniff deadline instead of replacing it.
	tc.Timer.Refresh(tc.Conn)
	timeout := s.opts.sniffTimeout()
	p, sni, err := listen.Sniff(br, func() { _ = tc.Conn.SetReadDeadline(time.Now().Add(timeout)) })
	tc.SetIdleTimeout(s.opts.KeepAliveIdle) // the next Read or Write re-applies the idle deadline
	tc.Timer.Forget()
	_ = tc.Conn.SetReadDeadline(time.Time{})
	return p, sni, err
}

func sniffHTTP(br *bufio.Reader) (listen.Protocol, []byte, error) {
	isH2, err := listen.SniffH2(br)
	if isH2 {
		return listen.HTTP2, nil, err
	}
	return listen.HTTP1, nil, err
}

// sniffTimeout is Options.SniffTimeout with its default.
func (o *Options) sniffTimeout() time.Duration {
	if o.SniffTimeout > 0 {
		return o.SniffTimeout
	}
	return DefaultSniffTimeout
}
