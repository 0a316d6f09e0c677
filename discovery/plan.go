package discovery

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/meshd/meshd/config"
)

// Plan is how a cluster gets its endpoints: fixed ones (static IP addresses) and names
// followed by a Registry. The cluster's set is the union of both.
type Plan struct {
	Fixed []Endpoint
	Names []Spec
	// Warnings name settings meshd accepts and cannot honour (Cloud Map attributes),
	// for the log at start.
	Warnings []string
}

// PlanFor turns a node's serviceDiscovery at the listener port into a Plan. meshPref is
// mesh.spec.serviceDiscovery.ipPreference, the fallback when the node sets none.
// Configuration errors (what validation also reports) are returned here; a name that
// does not resolve is not an error: it is followed until it does.
func PlanFor(sd *config.ServiceDiscovery, port int, meshPref string) (Plan, error) {
	var p Plan
	if sd == nil {
		return p, errors.New("serviceDiscovery: not set")
	}
	pref := func(own string) string {
		if own != "" {
			return own
		}
		return meshPref
	}
	switch {
	case sd.Static != nil:
		for i, se := range sd.Static.Endpoints {
			field := fmt.Sprintf("serviceDiscovery.static.endpoints[%d]", i)
			w, err := weight(se.Weight)
			if err != nil {
				return p, fmt.Errorf("%s.weight %d: %w", field, se.Weight, err)
			}
			if addr, err := parseStaticAddress(se.Address, port); err == nil {
				p.Fixed = append(p.Fixed, Endpoint{Address: addr, Weight: w})
				continue
			}
			host, hp, err := splitNamePort(se.Address, port)
			if err != nil {
				return p, fmt.Errorf("%s.address %q: %w", field, se.Address, err)
			}
			p.Names = append(p.Names, Spec{Name: host, Record: RecordA, Port: hp, IPPreference: meshPref, Weight: w})
		}
		if len(p.Fixed)+len(p.Names) == 0 {
			return p, errors.New("serviceDiscovery.static.endpoints: empty")
		}
	case sd.DNS != nil:
		d := sd.DNS
		if d.Hostname == "" {
			return p, errors.New("serviceDiscovery.dns.hostname: empty")
		}
		if err := checkIPPreference(pref(d.IPPreference)); err != nil {
			return p, fmt.Errorf("serviceDiscovery.dns.ipPreference %q: %w", d.IPPreference, err)
		}
		s := Spec{Name: d.Hostname, Record: RecordA, Port: port, IPPreference: pref(d.IPPreference), Logical: d.ResponseType == "LOADBALANCER"}
		if d.RecordType == "SRV" {
			s.Record, s.Port, s.Logical = RecordSRV, 0, false
		} else if err := checkPort(port); err != nil {
			return p, fmt.Errorf("serviceDiscovery.dns (hostname %q): listener port %w", d.Hostname, err)
		} else if ip, ok := literalFor(d.Hostname, s.IPPreference); ok {
			// A resolver answers an IP literal itself (getaddrinfo, Envoy's c-ares):
			// asking DNS servers for "10.0.0.1" only waits for their NXDOMAIN, and a
			// mesh of many such nodes waited at start for every one of them.
			p.Fixed = append(p.Fixed, Endpoint{Address: join(ip, port), Weight: 1})
			break
		}
		p.Names = append(p.Names, s)
	case sd.AWSCloudMap != nil:
		cm := sd.AWSCloudMap
		if cm.NamespaceName == "" || cm.ServiceName == "" {
			return p, errors.New("serviceDiscovery.awsCloudMap: namespaceName and serviceName are required")
		}
		if err := checkPort(port); err != nil {
			return p, fmt.Errorf("serviceDiscovery.awsCloudMap: listener port %w", err)
		}
		name := cm.ServiceName + "." + strings.TrimSuffix(cm.NamespaceName, ".")
		p.Names = append(p.Names, Spec{Name: name, Record: RecordSRVOrA, Port: port, IPPreference: pref(cm.IPPreference)})
		if len(cm.Attributes) > 0 {
			keys := make([]string, len(cm.Attributes))
			for i, a := range cm.Attributes {
				keys[i] = a.Key + "=" + a.Value
			}
			p.Warnings = append(p.Warnings, fmt.Sprintf("serviceDiscovery.awsCloudMap.attributes [%s] of %s: ignored, every instance the namespace's DNS returns is used (filtering by attributes needs the Cloud Map API, which meshd does not call; give the filtered instances their own Cloud Map service to select them)",
				strings.Join(keys, ", "), name))
		}
	default:
		return p, errors.New("serviceDiscovery: none of dns, awsCloudMap, static is set")
	}
	return p, nil
}

// splitNamePort splits a static "name[:port]" address (defaultPort when it has none).
func splitNamePort(s string, defaultPort int) (string, int, error) {
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		host, portStr = s, strconv.Itoa(defaultPort)
	}
	if host == "" || strings.ContainsAny(host, "[]/ ") {
		return "", 0, errors.New("want an IP address or a DNS name, with an optional :port")
	}
	port, err := strconv.ParseUint(portStr, 10, 32)
	if err != nil {
		return "", 0, fmt.Errorf("port %q is not a number", portStr)
	}
	if err := checkPort(int(port)); err != nil {
		return "", 0, fmt.Errorf("port %w", err)
	}
	return host, int(port), nil
}

// Equal reports whether two plans follow the same endpoints the same way.
func (p Plan) Equal(q Plan) bool {
	if len(p.Fixed) != len(q.Fixed) || len(p.Names) != len(q.Names) {
		return false
	}
	for i := range p.Fixed {
		if p.Fixed[i] != q.Fixed[i] {
			return false
		}
	}
	for i := range p.Names {
		if p.Names[i] != q.Names[i] {
			return false
		}
	}
	return true
}

// literalFor returns hostname as an address when it is an IP literal of a family pref
// allows; a literal of the other family, or with a zone, is left to the resolver as
// before.
func literalFor(hostname, pref string) (netip.Addr, bool) {
	ip, err := netip.ParseAddr(hostname)
	if err != nil || ip.Zone() != "" {
		return netip.Addr{}, false
	}
	switch {
	case pref == IPv4Only && !ip.Unmap().Is4():
		return netip.Addr{}, false
	case pref == IPv6Only && ip.Unmap().Is4():
		return netip.Addr{}, false
	}
	return ip, true
}
