package upstream

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/internal/rawio"
	meshtls "github.com/meshd/meshd/tls"
)

// TLS is a cluster's TLS origination: the client policy's tls block that covers the
// cluster (state.Compile decides which do).
type TLS struct {
	// Config is the policy's client configuration for the cluster: SNI (the virtual
	// service name), the trust and subjectAlternativeNames the server is verified
	// against, the client certificate for mTLS, the session cache. The cluster never
	// changes it: it sets ALPN to the protocol it speaks on a copy.
	Config *tls.Config
	// Policy is the policy's field path, for logs
	// (virtualNodes[0].spec.backends[1].virtualService.clientPolicy.tls).
	Policy string
}

// tlsLogEvery is how often a cluster logs a failed handshake at warn: a bad
// certificate fails every connection, and one line per connection would flood the log
// (the others go to debug, and every one is counted).
const tlsLogEvery = 30 * time.Second

// tlsOrigin is a cluster's TLS origination at run time.
type tlsOrigin struct {
	cfg    *tls.Config // the policy's, with the cluster's ALPN
	policy string
	stats  *meshtls.HandshakeStats

	logMu      sync.Mutex
	lastWarn   time.Time
	suppressed int
}

// alpnFor is what a connection speaking protocol offers in ALPN: exactly that protocol,
// so that a server speaking both (a meshd listener) answers in the cluster's; nothing
// for tcp, whose bytes are the application's.
func alpnFor(protocol string) []string {
	switch protocol {
	case config.ProtoHTTP2, config.ProtoGRPC:
		return []string{"h2"}
	case config.ProtoTCP:
		return nil
	default:
		return []string{"http/1.1"}
	}
}

func newTLSOrigin(t *TLS, protocol string, stats *meshtls.HandshakeStats) *tlsOrigin {
	cfg := t.Config.Clone()
	cfg.NextProtos = alpnFor(protocol)
	if stats == nil {
		stats = new(meshtls.HandshakeStats)
	}
	return &tlsOrigin{cfg: cfg, policy: t.Policy, stats: stats}
}

// endpointSessions keys a shared session cache by endpoint as well: crypto/tls keys it
// by server name only, and the endpoints of one virtual service (other sidecars, with
// ticket keys of their own) would then overwrite each other's sessions and resume
// none.
type endpointSessions struct {
	cache tls.ClientSessionCache
	addr  string
}

func (e endpointSessions) Get(key string) (*tls.ClientSessionState, bool) {
	return e.cache.Get(e.addr + "\x00" + key)
}

func (e endpointSessions) Put(key string, cs *tls.ClientSessionState) {
	e.cache.Put(e.addr+"\x00"+key, cs)
}

// handshake runs the TLS client handshake on conn to addr within ctx, offering protos
// in ALPN. A failure closes conn, is counted, logged (at warn once in a while) and
// returned as a Connect *Error: nothing was sent, so it is retried and held against the
// endpoint as a connect failure is.
func (c *Cluster) handshake(ctx context.Context, conn net.Conn, addr string, protos []string) (net.Conn, error) {
	o := c.tls
	cfg := o.cfg.Clone()
	cfg.NextProtos = protos
	if cfg.ClientSessionCache != nil {
		cfg.ClientSessionCache = endpointSessions{cache: o.cfg.ClientSessionCache, addr: addr}
	}
	// The TLS layer's socket I/O is raw too (internal/rawio).
	tc := tls.Client(rawio.WrapTCP(conn), cfg)
	err := tc.HandshakeContext(ctx)
	resumed := false
	if err == nil {
		resumed = tc.ConnectionState().DidResume
	}
	res := o.stats.Handshake(resumed, err)
	if err != nil {
		_ = conn.Close()
		err = fmt.Errorf("tls handshake with %s (server name %q, client policy %s): %w", addr, cfg.ServerName, o.policy, err)
		c.logHandshakeFailure(addr, res, err)
		return nil, &Error{Kind: Connect, Err: err}
	}
	return tc, nil
}

// logHandshakeFailure logs a failed handshake: at warn for the first one and then at
// most once per tlsLogEvery (saying how many went unlogged meanwhile), at debug
// otherwise.
func (c *Cluster) logHandshakeFailure(addr string, res meshtls.HandshakeResult, err error) {
	o := c.tls
	now := c.clock.Now()
	o.logMu.Lock()
	warn := o.lastWarn.IsZero() || now.Sub(o.lastWarn) >= tlsLogEvery
	suppressed := o.suppressed
	if warn {
		o.lastWarn, o.suppressed = now, 0
	} else {
		o.suppressed++
	}
	o.logMu.Unlock()
	level := slog.LevelDebug
	if warn {
		level = slog.LevelWarn
	}
	c.log.Log(context.Background(), level, "upstream tls handshake failed", "cluster", c.ref.Name, "endpoint", addr,
		"result", res.String(), "err", err.Error(), "unlogged_since_last", suppressed)
}

// TLSStats are the cluster's TLS handshake counters; nil when it originates no TLS.
func (c *Cluster) TLSStats() *meshtls.HandshakeStats {
	if c.tls == nil {
		return nil
	}
	return c.tls.stats
}

// TLSPolicy is the field path of the client policy the cluster originates TLS under;
// empty when it originates none.
func (c *Cluster) TLSPolicy() string {
	if c.tls == nil {
		return ""
	}
	return c.tls.policy
}

// TLSConfig is the client configuration the cluster's connections use (ALPN set to its
// protocol); nil when it originates no TLS. Read only.
func (c *Cluster) TLSConfig() *tls.Config {
	if c.tls == nil {
		return nil
	}
	return c.tls.cfg
}

// dialCheck dials addr within ctx for a health check: with TLS, offering protos, when
// the cluster originates TLS (as Envoy's health checks use the cluster's transport
// socket: a listener that requires TLS answers nothing else).
func (c *Cluster) dialCheck(ctx context.Context, addr string, protos []string) (net.Conn, error) {
	conn, err := c.dialer.DialContext(ctx, "tcp", addr)
	if err != nil || c.tls == nil {
		return conn, err
	}
	return c.handshake(ctx, conn, addr, protos)
}
