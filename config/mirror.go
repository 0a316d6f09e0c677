package config

// RouteMirror (extension) copies a share of a route's requests to another virtual
// node, Envoy's request mirroring (shadowing): the copy is sent fire-and-forget, its
// response discarded, so a new version takes production-shaped traffic before any
// client depends on its answers. docs/mirroring.md.
type RouteMirror struct {
	// VirtualNode receives the copies. Required; a defined virtual node (with
	// serviceDiscovery, as any target).
	VirtualNode string `json:"virtualNode"`
	// Port: which of the node's listeners; 0: its only one (required when it has
	// several), as on a weighted target.
	Port int `json:"port,omitempty"`
	// Percent of the route's requests copied: (0, 100], fractions allowed. Required.
	Percent float64 `json:"percent"`
}

// mirror checks a route action's mirror (m may be nil).
func (v *validator) mirror(path *fpath, m *RouteMirror) {
	if m == nil {
		return
	}
	if !(m.Percent > 0 && m.Percent <= 100) {
		v.add(path.f(".percent"), m.Percent, "must be above 0 and at most 100 (remove the mirror to stop mirroring)")
	}
	if ls, ok := v.targetNode(path, m.VirtualNode, m.Port); ok && len(ls) == 0 {
		v.add(path.f(".virtualNode"), m.VirtualNode, "virtual node %q has no listener to send copies to", m.VirtualNode)
	}
}
