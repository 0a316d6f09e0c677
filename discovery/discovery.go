// Package discovery turns a virtual node's serviceDiscovery into endpoint sets.
//
// Every source produces complete sets, never deltas: the consumer (balancer.Cluster.Update)
// replaces what it had with what it is given, so a lost or repeated set cannot leave stale
// endpoints behind. A Source is asked once per resolution; live sources (a DNS watcher that
// re-resolves on TTL) call the same Endpoints method on a schedule and push each result.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/meshd/meshd/config"
)

// Endpoint is one upstream address. Address is "ip:port" in canonical form (IPv6 in
// brackets, IPv4-mapped IPv6 unmapped), so equal endpoints compare equal as strings;
// Weight is at least 1.
type Endpoint struct {
	Address string
	Weight  uint32
}

// Source produces the complete current endpoint set of one node. Endpoints may block on
// I/O (DNS) and honours ctx; an error means "no new set", and a caller that already
// holds a set should keep it (Envoy keeps the last good hosts on resolution failure).
type Source interface {
	Endpoints(ctx context.Context) ([]Endpoint, error)
}

// Resolver is the one-method name lookup seam; *net.Resolver satisfies it.
type Resolver interface {
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// ErrNoAddresses means a DNS name resolved, but to no address the ipPreference allows.
var ErrNoAddresses = errors.New("no usable addresses")

// ErrUnsupported means the configured discovery kind needs APIs meshd does not call.
var ErrUnsupported = errors.New("unsupported service discovery")

// IP preferences, as App Mesh spells them (serviceDiscovery.dns.ipPreference).
const (
	IPv4Only      = "IPv4_ONLY"
	IPv6Only      = "IPv6_ONLY"
	IPv4Preferred = "IPv4_PREFERRED"
	IPv6Preferred = "IPv6_PREFERRED"
)

// NewSource builds the Source for a node's serviceDiscovery at the given listener port.
// Static and DNS are supported; awsCloudMap returns ErrUnsupported. Configuration
// errors (nil sd, no kind set, empty hostname, unknown ipPreference, bad static
// address, port out of range) are reported here, once, rather than on every resolution.
// A nil r means net.DefaultResolver.
func NewSource(sd *config.ServiceDiscovery, port int, r Resolver) (Source, error) {
	if sd == nil {
		return nil, errors.New("serviceDiscovery: not set")
	}
	switch {
	case sd.Static != nil:
		eps, err := Static(sd.Static, port)
		if err != nil {
			return nil, err
		}
		return staticSource(eps), nil
	case sd.DNS != nil:
		return newDNSSource(sd.DNS, port, r)
	case sd.AWSCloudMap != nil:
		return nil, fmt.Errorf("serviceDiscovery.awsCloudMap (namespace %q, service %q): %w: Cloud Map needs AWS APIs meshd does not call; use serviceDiscovery.dns or serviceDiscovery.static",
			sd.AWSCloudMap.NamespaceName, sd.AWSCloudMap.ServiceName, ErrUnsupported)
	default:
		return nil, errors.New("serviceDiscovery: none of dns, awsCloudMap, static is set")
	}
}

// Resolve produces the complete endpoint set for a node's serviceDiscovery at the given
// listener port: it builds the Source and asks it once. See NewSource for the errors.
func Resolve(ctx context.Context, sd *config.ServiceDiscovery, port int, r Resolver) ([]Endpoint, error) {
	src, err := NewSource(sd, port, r)
	if err != nil {
		return nil, err
	}
	return src.Endpoints(ctx)
}

type staticSource []Endpoint

// Endpoints returns a copy so that callers may keep or change the slice they get.
func (s staticSource) Endpoints(context.Context) ([]Endpoint, error) {
	return append([]Endpoint(nil), s...), nil
}

// Static turns the static extension into endpoints, in configuration order. Each address
// must be an IP literal, optionally with a port ("10.0.0.1", "10.0.0.1:80", "::1",
// "[::1]:80"); an address without a port gets defaultPort. Host names are rejected:
// names belong in serviceDiscovery.dns, which re-resolves them. A weight of 0 means 1.
// Duplicate addresses (after the default port is applied) are an error, because the
// balancer keys endpoints by address and one of the weights would be lost.
func Static(sd *config.StaticServiceDiscovery, defaultPort int) ([]Endpoint, error) {
	if sd == nil {
		return nil, errors.New("serviceDiscovery.static: not set")
	}
	if len(sd.Endpoints) == 0 {
		return nil, errors.New("serviceDiscovery.static.endpoints: empty")
	}
	out := make([]Endpoint, 0, len(sd.Endpoints))
	seen := make(map[string]int, len(sd.Endpoints))
	for i, se := range sd.Endpoints {
		addr, err := parseStaticAddress(se.Address, defaultPort)
		if err != nil {
			return nil, fmt.Errorf("serviceDiscovery.static.endpoints[%d].address %q: %w", i, se.Address, err)
		}
		if j, dup := seen[addr]; dup {
			return nil, fmt.Errorf("serviceDiscovery.static.endpoints[%d].address %q: duplicate of endpoints[%d] (%s)", i, se.Address, j, addr)
		}
		seen[addr] = i
		w, err := weight(se.Weight)
		if err != nil {
			return nil, fmt.Errorf("serviceDiscovery.static.endpoints[%d].weight %d: %w", i, se.Weight, err)
		}
		out = append(out, Endpoint{Address: addr, Weight: w})
	}
	return out, nil
}

func weight(w int) (uint32, error) {
	switch {
	case w < 0:
		return 0, errors.New("must not be negative")
	case w == 0:
		return 1, nil
	case uint64(w) > math.MaxUint32:
		return 0, fmt.Errorf("must be at most %d", uint32(math.MaxUint32))
	}
	return uint32(w), nil
}

// parseStaticAddress returns the canonical "ip:port" form of s.
func parseStaticAddress(s string, defaultPort int) (string, error) {
	if s == "" {
		return "", errors.New("empty")
	}
	// A bare IP (including an unbracketed IPv6 literal, whose colons would otherwise
	// look like a port separator) or a bracketed IPv6 literal takes the default port.
	bracketed := strings.HasPrefix(s, "[")
	bare := s
	if bracketed && strings.HasSuffix(s, "]") {
		bare = s[1 : len(s)-1]
	}
	if bare == s && strings.ContainsAny(s, "[]") {
		bare = "" // brackets around something with a port: SplitHostPort below
	}
	if bare != "" {
		if ip, err := netip.ParseAddr(bare); err == nil {
			if bracketed && !ip.Is6() {
				return "", errors.New("brackets are for IPv6 literals only")
			}
			if err := checkPort(defaultPort); err != nil {
				return "", fmt.Errorf("no port given and the listener port %w", err)
			}
			return join(ip, defaultPort), nil
		}
	}
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("want ip or ip:port: %w", err)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return "", fmt.Errorf("host %q is not an IP literal (use serviceDiscovery.dns for names)", host)
	}
	if bracketed && !ip.Is6() {
		return "", errors.New("brackets are for IPv6 literals only")
	}
	// ParseUint, unlike Atoi, refuses a sign ("+80").
	port, err := strconv.ParseUint(portStr, 10, 32)
	if err != nil {
		return "", fmt.Errorf("port %q is not a number", portStr)
	}
	if err := checkPort(int(port)); err != nil {
		return "", fmt.Errorf("port %w", err)
	}
	return join(ip, int(port)), nil
}

func checkPort(p int) error {
	if p < 1 || p > 65535 {
		return fmt.Errorf("%d is outside 1-65535", p)
	}
	return nil
}

func join(ip netip.Addr, port int) string {
	return netip.AddrPortFrom(ip.Unmap(), uint16(port)).String()
}
