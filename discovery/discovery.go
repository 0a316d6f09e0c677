// Package discovery turns a virtual node's serviceDiscovery into endpoint sets and keeps
// them current: PlanFor says which endpoints are fixed (static IPs) and which names to
// follow (dns, awsCloudMap through its DNS namespace, static hostnames); a Registry
// follows each name with a DNS client on github.com/miekg/dns (Client), re-resolving on
// the answer's TTL, and pushes complete sets, never deltas: the consumer
// (balancer.Cluster.Update) replaces what it had with what it is given, so a lost or
// repeated set cannot leave stale endpoints behind.
package discovery

import (
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

// ErrNoAddresses means a DNS name resolved, but to no address the ipPreference allows.
var ErrNoAddresses = errors.New("no usable addresses")

// IP preferences, as App Mesh spells them (serviceDiscovery.dns.ipPreference).
const (
	IPv4Only      = "IPv4_ONLY"
	IPv6Only      = "IPv6_ONLY"
	IPv4Preferred = "IPv4_PREFERRED"
	IPv6Preferred = "IPv6_PREFERRED"
)

// Static turns the static extension into endpoints, in configuration order, when every
// address is an IP literal (PlanFor follows the others as names). Each address
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
			if strings.ContainsAny(ip.Zone(), "[]%") {
				// netip takes any zone; one with a bracket would not read back from ip:port.
				return "", fmt.Errorf("IPv6 zone %q: not an interface name", ip.Zone())
			}
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
