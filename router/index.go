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
	lengths []int                // distinct prefix lengths, ascending
	byLen   []map[string][]int32 // per length: prefix → positions in Service.Routes, ascending
	rest    []int32              // positions of the routes not indexed (no prefix match), ascending
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
		x.byLen = append(x.byLen, byLen[l])
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
	n := 0
	if len(x.rest) > 0 {
		lists[0] = x.rest
		n = 1
	}
	for i, l := range x.lengths {
		if l > len(path) {
			break
		}
		if ps, ok := x.byLen[i][path[:l]]; ok {
			if n == maxIndexLists {
				return matchScan(routes, r, path, query)
			}
			lists[n] = ps
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
