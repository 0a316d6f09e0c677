package router

import (
	"maps"
	"slices"
)

// A virtual router's routes are tried in priority order and the first that matches
// wins, so a plain scan costs a failed match per route ahead of the one a request
// takes: with thousands of routes in one router, tens of microseconds. Most routes
// match a path prefix, and a request can only take a route whose prefix its path
// starts with; prefixIndex finds those routes by looking the path's own prefixes up,
// one map lookup per distinct prefix length, and tries them (and the routes it cannot
// index) in the routes' order. The answer is the scan's, in time that depends on the
// prefix lengths in use, not on the number of routes.

// indexMinRoutes is the number of prefix routes from which a service is indexed: below
// it a scan is as fast as the lookups.
const indexMinRoutes = 8

// maxIndexLists bounds the candidate lists Match merges on the stack; a path that hits
// more prefix lengths than that (a router whose prefixes nest that deep) is scanned.
const maxIndexLists = 16

type prefixIndex struct {
	lengths []int // distinct prefix lengths, ascending
	// byLen maps, per length, a prefix to the position in Service.Routes of its one
	// route, or, when several routes share the prefix, to -1-k where shared[k] lists
	// their positions ascending. Most prefixes have one route, and a slice for each
	// would double the index's memory.
	byLen  []map[string]int32
	shared [][]int32
	rest   []int32 // positions of the routes not indexed (no prefix match), ascending
}

// newPrefixIndex indexes routes (a Service's, in match order), or returns nil when a
// scan serves as well.
func newPrefixIndex(routes []*Route) *prefixIndex {
	n := 0
	for _, rt := range routes {
		if indexable(rt) {
			n++
		}
	}
	if n < indexMinRoutes {
		return nil
	}
	x := &prefixIndex{}
	byLen := map[int]map[string][]int32{}
	for i, rt := range routes {
		if !indexable(rt) {
			x.rest = append(x.rest, int32(i))
			continue
		}
		m := byLen[len(rt.m.path)]
		if m == nil {
			m = map[string][]int32{}
			byLen[len(rt.m.path)] = m
		}
		m[rt.m.path] = append(m[rt.m.path], int32(i))
	}
	// Ascending lengths let match stop at the first one longer than the path.
	x.lengths = slices.Sorted(maps.Keys(byLen))
	for _, l := range x.lengths {
		m := make(map[string]int32, len(byLen[l]))
		for prefix, ps := range byLen[l] {
			if len(ps) == 1 {
				m[prefix] = ps[0]
				continue
			}
			m[prefix] = int32(-1 - len(x.shared))
			x.shared = append(x.shared, ps)
		}
		x.byLen = append(x.byLen, m)
	}
	return x
}

// indexable: an HTTP route that matches a non-empty path prefix can only match a path
// that starts with it. gRPC routes match on the service and method, and tcp routes are
// never Match's; both stay in rest with every other route.
func indexable(rt *Route) bool {
	return (rt.m.kind == kindHTTP || rt.m.kind == kindHTTP2) && rt.m.pathKind == pathPrefix && rt.m.path != ""
}

// match is Service.Match over the index: the candidate lists (rest, and the routes of
// each of path's prefixes that some route has) are merged by position, and the first
// candidate that matches in full wins, as in a scan. No allocation.
func (x *prefixIndex) match(routes []*Route, r *Request, path, query string) *Route {
	var lists [maxIndexLists][]int32
	var one [maxIndexLists]int32 // backs the one-route lists
	n := 0
	if len(x.rest) > 0 {
		lists[0] = x.rest
		n = 1
	}
	for i, l := range x.lengths {
		if l > len(path) {
			break
		}
		if v, ok := x.byLen[i][path[:l]]; ok {
			if n == maxIndexLists {
				return matchScan(routes, r, path, query)
			}
			if v >= 0 {
				one[n] = v
				lists[n] = one[n : n+1]
			} else {
				lists[n] = x.shared[-1-v]
			}
			n++
		}
	}
	for n > 0 {
		best := 0
		for i := 1; i < n; i++ {
			if lists[i][0] < lists[best][0] {
				best = i
			}
		}
		if rt := routes[lists[best][0]]; rt.m.match(r, path, query) {
			return rt
		}
		if lists[best] = lists[best][1:]; len(lists[best]) == 0 {
			n--
			lists[best] = lists[n]
		}
	}
	return nil
}
