package config

// gatewayRewrite checks that an HTTP gateway route's rewrite fits its match, as App
// Mesh requires: a prefix rewrite rewrites the matched prefix, so it needs match.prefix;
// a path rewrite replaces a matched path, so it needs match.path; and a prefix rewrite
// sets defaultPrefix DISABLED or a value, not both (DISABLED keeps the path, a value
// replaces the prefix).
func (v *validator) gatewayRewrite(rp *fpath, m *GatewayHTTPRouteMatch, rw *GatewayHTTPRewrite) {
	if p := rw.Prefix; p != nil {
		if m.Prefix == "" {
			v.add(rp.f(".prefix"), nil, "a prefix rewrite needs match.prefix")
		}
		if p.Value != "" && p.DefaultPrefix == "DISABLED" {
			v.add(rp.f(".prefix"), p.Value, "set one of value and defaultPrefix DISABLED")
		}
	}
	if p := rw.Path; p != nil && m.Path == nil {
		v.add(rp.f(".path.exact"), p.Exact, "a path rewrite needs match.path")
	}
}
