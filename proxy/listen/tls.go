package listen

import (
	"bufio"
	"net"
)

// StartsTLS reports whether a connection begins with a TLS handshake record: the
// record type 0x16 then the major version 3 (RFC 8446 §5.1; every TLS version's
// ClientHello record says 3.x). It is how a PERMISSIVE listener tells TLS from
// plaintext on one port. It peeks at most two bytes and consumes nothing; arm is called
// before each wait (it sets the read deadline of the wait, or does nothing to keep the
// connection's own).
//
// err is the error of the first byte's wait (EOF, reset, a timeout: no byte came).
// A connection that stops after a lone 0x16 is not TLS.
func StartsTLS(br *bufio.Reader, arm func()) (bool, error) {
	arm()
	b, err := br.Peek(1)
	if len(b) == 0 {
		return false, err
	}
	if b[0] != recordTypeHandshake {
		return false, nil
	}
	if br.Buffered() < 2 {
		arm()
	}
	b, _ = br.Peek(2)
	return len(b) == 2 && b[1] == 3, nil
}

// Prefixed returns a connection whose reads return pre first, then read c: the bytes a
// sniffer took from c, given back to a reader that must see the stream from its start
// (the TLS server of a PERMISSIVE listener). NetConn returns c.
func Prefixed(c net.Conn, pre []byte) net.Conn {
	if len(pre) == 0 {
		return c
	}
	return &prefixConn{Conn: c, pre: pre}
}

type prefixConn struct {
	net.Conn
	pre []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// NetConn is the connection under the prefix (Conn.Raw unwraps through it).
func (c *prefixConn) NetConn() net.Conn { return c.Conn }
