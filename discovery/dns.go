package discovery

import (
	"fmt"
	"net/netip"
	"slices"
)

func checkIPPreference(p string) error {
	switch p {
	case "", IPv4Only, IPv6Only, IPv4Preferred, IPv6Preferred:
		return nil
	}
	return fmt.Errorf("want one of %s, %s, %s, %s", IPv4Only, IPv6Only, IPv4Preferred, IPv6Preferred)
}

// endpointsFor applies an ipPreference to resolved addresses and turns them into a
// sorted, deduplicated endpoint set at port. It is shared by every DNS-backed source so
// they agree on the set for the same answer.
//
// The preferences follow App Mesh (which maps them to Envoy's dns_lookup_family):
// *_ONLY keeps one family; *_PREFERRED keeps the preferred family when the answer has
// any address of it and falls back to the other family otherwise; "" keeps both.
// netip.Addr.Compare orders IPv4 before IPv6, which gives "IPv4 first" for "".
func endpointsFor(addrs []netip.Addr, pref string, port int) []Endpoint {
	keep := slices.Clone(keepFamilies(addrs, pref))
	slices.SortFunc(keep, netip.Addr.Compare)
	keep = slices.Compact(keep)
	eps := make([]Endpoint, len(keep))
	for i, a := range keep {
		eps[i] = Endpoint{Address: join(a, port), Weight: 1}
	}
	return eps
}

// keepFamilies applies an ipPreference to addrs, keeping the answer's order (a logical
// DNS cluster uses the first address the answer gives).
func keepFamilies(addrs []netip.Addr, pref string) []netip.Addr {
	var v4, v6 []netip.Addr
	for _, a := range addrs {
		if a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	switch pref {
	case IPv4Only:
		return v4
	case IPv6Only:
		return v6
	case IPv4Preferred:
		if len(v4) == 0 {
			return v6
		}
		return v4
	case IPv6Preferred:
		if len(v6) == 0 {
			return v4
		}
		return v6
	}
	return addrs
}
