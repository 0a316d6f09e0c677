// Package meshtls is meshd's TLS: the mesh CA (a root and short-lived workload
// certificates whose URI SAN is a SPIFFE ID), the certificate sources of App Mesh's
// config (files watched and re-read on change, SDS served by a SPIRE agent over the
// SPIFFE Workload API, and ACM, which is refused with the way out), the server and
// client crypto/tls configurations built from them with safe defaults, and the
// translation of a listener's `tls` block or a client policy's `tls` block into those.
//
// The import path is github.com/meshd/meshd/tls, as the design names it, but the package
// is called meshtls: every file here and every caller also imports crypto/tls, and
// `meshtls.NewServerConfig(...)` next to `tls.Config` reads without an import alias on
// either side.
//
// # Sources
//
// A Source holds the current certificate (for a listener, or a client's mTLS
// certificate) and/or the current trust pool, and announces changes on Changed. The
// server and client configurations read it at every handshake (GetCertificate,
// GetClientCertificate, VerifyConnection), so a rotated certificate or trust bundle
// applies to the next handshake without a restart, and established connections are left
// alone. A new certificate that does not load (unreadable, key not matching,
// expired, chain not parsing) is rejected: it is logged, counted in Stats.Rejects, and
// the previous one keeps serving.
//
// # Safe defaults
//
// TLS 1.2 minimum; for TLS 1.2 only ECDHE with AES-GCM or ChaCha20-Poly1305 (TLS 1.3's
// suites are all AEAD and not configurable); no renegotiation; ALPN h2 and http/1.1;
// client session resumption through an LRU cache. Peer certificates are verified
// against the trust Source's current pool at every handshake, resumed ones included, with
// the key usage of their role (serverAuth for servers, clientAuth for clients, when the
// certificate restricts its usage at all), then matched against the
// subjectAlternativeNames list when one is given.
//
// The handshake timeout is the caller's: crypto/tls has none. Set a deadline on the
// connection, or call (*tls.Conn).HandshakeContext with a context that has one, before
// the first read or write.
//
// The data plane uses it both ways: state.Compile loads the plans of the node's
// listener and client policy tls blocks; proxy terminates TLS on the ingress listeners,
// and proxy/upstream originates it to backends a client policy covers. Both count their
// handshakes in HandshakeStats. Authorization will use it next (docs/tls.md).
package meshtls
