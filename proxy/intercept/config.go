// Package iptables generates, installs and removes the nat-table rules that make meshd a
// transparent sidecar: inbound TCP to the app's ports is redirected to meshd's ingress
// listener and outbound TCP from everyone but meshd itself to meshd's egress listener.
//
// The rule shape is the one the ECS aws-appmesh CNI plugin and the App Mesh route
// manager install, in meshd's own chains (MESHD_INGRESS, MESHD_EGRESS) so that meshd can
// remove exactly its own rules. Rules are installed atomically with iptables-restore
// --noflush, for IPv4 (iptables) and IPv6 (ip6tables), with either the nf_tables or the
// legacy backend.
package intercept

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// App Mesh's defaults, which meshd keeps so existing task definitions and init images
// work unchanged.
const (
	DefaultIngressPort = 15000
	DefaultEgressPort  = 15001
	DefaultIgnoredUID  = 1337
	// SSHPort is excluded from egress interception by default, as the App Mesh EC2 route
	// manager always did, so an operator's ssh sessions never depend on the proxy.
	SSHPort = 22
)

// MetadataIPs returns the link-local endpoints that must never be proxied: the EC2
// instance metadata service (IPv4 and its IPv6 address) and the ECS task metadata and
// credentials endpoint. ECS adds the IPv4 ones to EgressIgnoredIPs on its own; meshd adds
// them by default so that a host or EKS install behaves the same.
func MetadataIPs() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("169.254.169.254/32"),
		netip.MustParsePrefix("169.254.170.2/32"),
		netip.MustParsePrefix("fd00:ec2::254/128"),
	}
}

// Config says which traffic is intercepted. The zero value of a port means its
// documented default; everything else is taken literally (Defaults gives App Mesh's).
type Config struct {
	// AppPorts are the ports the application listens on; inbound TCP to them from
	// non-local sources is redirected to IngressPort. Empty: no inbound interception.
	AppPorts []int
	// IngressPort is meshd's inbound listener (default 15000).
	IngressPort int
	// EgressPort is meshd's outbound listener (default 15001).
	EgressPort int
	// IgnoredUIDs and IgnoredGIDs own traffic that is never redirected. meshd itself must
	// run as one of them, or its upstream connections loop back into it. At least one
	// UID or GID is required.
	IgnoredUIDs []int
	IgnoredGIDs []int
	// EgressIgnoredIPs are destinations reached directly. Each family's rules use only
	// the prefixes of that family.
	EgressIgnoredIPs []netip.Prefix
	// EgressIgnoredPorts are destination ports reached directly.
	EgressIgnoredPorts []int
}

// Defaults returns App Mesh's defaults: ports 15000/15001, UID 1337 ignored, ssh and
// the metadata endpoints reached directly, no app ports.
func Defaults() Config {
	return Config{
		IngressPort:        DefaultIngressPort,
		EgressPort:         DefaultEgressPort,
		IgnoredUIDs:        []int{DefaultIgnoredUID},
		EgressIgnoredIPs:   MetadataIPs(),
		EgressIgnoredPorts: []int{SSHPort},
	}
}

func (c Config) ingressPort() int {
	if c.IngressPort == 0 {
		return DefaultIngressPort
	}
	return c.IngressPort
}

func (c Config) egressPort() int {
	if c.EgressPort == 0 {
		return DefaultEgressPort
	}
	return c.EgressPort
}

// Validate reports every problem, each naming the field and the value.
func (c Config) Validate() error {
	var errs []error
	checkPort := func(field string, p int) {
		if p < 1 || p > 65535 {
			errs = append(errs, fmt.Errorf("%s: port %d out of range 1-65535", field, p))
		}
	}
	checkPort("IngressPort", c.ingressPort())
	checkPort("EgressPort", c.egressPort())
	if c.ingressPort() == c.egressPort() {
		errs = append(errs, fmt.Errorf("EgressPort: %d is also the IngressPort; the listeners need distinct ports", c.egressPort()))
	}
	for i, p := range c.AppPorts {
		field := "AppPorts[" + strconv.Itoa(i) + "]"
		checkPort(field, p)
		if p == c.ingressPort() || p == c.egressPort() {
			errs = append(errs, fmt.Errorf("%s: %d is one of meshd's own ports; redirecting it would loop", field, p))
		}
	}
	for i, p := range c.EgressIgnoredPorts {
		checkPort("EgressIgnoredPorts["+strconv.Itoa(i)+"]", p)
	}
	if len(c.IgnoredUIDs) == 0 && len(c.IgnoredGIDs) == 0 {
		errs = append(errs, errors.New("IgnoredUIDs: at least one ignored UID or GID is required, or meshd's own upstream connections are redirected back into it"))
	}
	for i, id := range c.IgnoredUIDs {
		if id < 0 || id > 1<<32-2 {
			errs = append(errs, fmt.Errorf("IgnoredUIDs[%d]: %d is not a valid UID", i, id))
		}
	}
	for i, id := range c.IgnoredGIDs {
		if id < 0 || id > 1<<32-2 {
			errs = append(errs, fmt.Errorf("IgnoredGIDs[%d]: %d is not a valid GID", i, id))
		}
	}
	for i, p := range c.EgressIgnoredIPs {
		if !p.IsValid() {
			errs = append(errs, fmt.Errorf("EgressIgnoredIPs[%d]: invalid prefix", i))
		}
	}
	return errors.Join(errs...)
}

// ParsePorts parses a comma-separated port list as App Mesh's variables carry it
// ("8080,8443"); "a-b" or "a:b" is an inclusive range. Blank items are skipped, so
// "" is an empty list. Errors quote the offending item.
func ParsePorts(s string) ([]int, error) {
	var out []int
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(item, "-")
		if !isRange {
			lo, hi, isRange = strings.Cut(item, ":")
		}
		a, err := parsePort(lo)
		if err != nil {
			return nil, fmt.Errorf("port %q: %w", item, err)
		}
		b := a
		if isRange {
			if b, err = parsePort(hi); err != nil {
				return nil, fmt.Errorf("port range %q: %w", item, err)
			}
			if b < a {
				return nil, fmt.Errorf("port range %q: end is below start", item)
			}
		}
		for p := a; p <= b; p++ {
			out = append(out, p)
		}
	}
	return out, nil
}

func parsePort(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, errors.New("not a number")
	}
	if n < 1 || n > 65535 {
		return 0, errors.New("out of range 1-65535")
	}
	return n, nil
}

// ParseIDs parses a comma-separated list of numeric UIDs or GIDs.
func ParseIDs(s string) ([]int, error) {
	var out []int
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		n, err := strconv.ParseUint(item, 10, 32)
		if err != nil || n == 1<<32-1 {
			return nil, fmt.Errorf("id %q: not a numeric UID/GID", item)
		}
		out = append(out, int(n))
	}
	return out, nil
}

// ParsePrefixes parses a comma-separated list of IP addresses and CIDR prefixes of
// either family; a bare address is a single-host prefix. Host bits of a prefix are
// cleared, as iptables would.
func ParsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if strings.Contains(item, "/") {
			p, err := netip.ParsePrefix(item)
			if err != nil {
				return nil, fmt.Errorf("address %q: %w", item, err)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(item)
		if err != nil {
			return nil, fmt.Errorf("address %q: %w", item, err)
		}
		if a.Zone() != "" {
			return nil, fmt.Errorf("address %q: zones are not allowed", item)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// uniqueSorted returns a sorted copy of ids without duplicates, so generated rules do
// not depend on the order users list things in.
func uniqueSorted(ids []int) []int {
	out := slices.Clone(ids)
	slices.Sort(out)
	return slices.Compact(out)
}
