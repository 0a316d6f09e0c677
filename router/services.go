package router

import (
	"fmt"
	"strings"

	"github.com/meshd/meshd/config"
)

// Services is a set of compiled virtual services looked up by name, as a node's
// sidecar compiles its backends. Immutable after RouterServices.
type Services struct {
	byHost map[string]*Service
	router map[*Service]string
}

// RouterServices compiles every virtual service whose provider is one of the named
// virtual routers, exactly as Compile compiles a node's backends (the router's routes
// in match order), so that another sidecar can tell which route a caller's sidecar
// picked for a request: ingress authorization narrows rules to routes that way. cfg
// should have passed config.Validate and is retained.
func RouterServices(cfg *config.Config, routers []string) (*Services, error) {
	c := &compiler{
		cfg:      cfg,
		nodes:    make(map[string]*config.VirtualNode, len(cfg.VirtualNodes)),
		services: make(map[string]*config.VirtualService, len(cfg.VirtualServices)),
		routers:  make(map[string]*config.VirtualRouter, len(cfg.VirtualRouters)),
		clusters: make(map[string]ClusterRef),
	}
	for i := range cfg.VirtualNodes {
		c.nodes[cfg.VirtualNodes[i].VirtualNodeName] = &cfg.VirtualNodes[i]
	}
	for i := range cfg.VirtualServices {
		c.services[cfg.VirtualServices[i].VirtualServiceName] = &cfg.VirtualServices[i]
	}
	for i := range cfg.VirtualRouters {
		c.routers[cfg.VirtualRouters[i].VirtualRouterName] = &cfg.VirtualRouters[i]
	}
	want := make(map[string]bool, len(routers))
	for _, r := range routers {
		want[r] = true
	}
	out := &Services{byHost: map[string]*Service{}, router: map[*Service]string{}}
	for i := range cfg.VirtualServices {
		vs := &cfg.VirtualServices[i]
		p := vs.Spec.Provider
		if p == nil || p.VirtualRouter == nil || !want[p.VirtualRouter.VirtualRouterName] {
			continue
		}
		key := strings.ToLower(strings.TrimSuffix(vs.VirtualServiceName, "."))
		if _, dup := out.byHost[key]; dup {
			continue
		}
		s, err := c.service(vs.VirtualServiceName)
		if err != nil {
			return nil, fmt.Errorf("router: %w", err)
		}
		out.byHost[key] = s
		out.router[s] = p.VirtualRouter.VirtualRouterName
	}
	return out, nil
}

// Lookup finds the service called host (no port; case-insensitive, a trailing dot
// ignored), or nil. Zero allocations.
func (s *Services) Lookup(host string) *Service {
	if s == nil {
		return nil
	}
	return lookupHost(s.byHost, s.All, host)
}

// Router is the virtual router that provides svc ("" for a service not in s).
func (s *Services) Router(svc *Service) string { return s.router[svc] }

// All lists the services of s, in no particular order.
func (s *Services) All() []*Service {
	out := make([]*Service, 0, len(s.byHost))
	for _, svc := range s.byHost {
		out = append(out, svc)
	}
	return out
}

// lookupHost finds host in byHost (keys lower case, without a trailing dot) without
// allocating; names longer than a stack buffer fall back to a scan of all().
func lookupHost(byHost map[string]*Service, all func() []*Service, host string) *Service {
	host = strings.TrimSuffix(host, ".")
	if !hasUpper(host) {
		return byHost[host]
	}
	var buf [256]byte
	if len(host) <= len(buf) {
		for i := 0; i < len(host); i++ {
			c := host[i]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			buf[i] = c
		}
		// The compiler does not allocate for a []byte→string conversion used as a map key.
		return byHost[string(buf[:len(host)])]
	}
	for _, s := range all() {
		if strings.EqualFold(s.Name, host) {
			return s
		}
	}
	return nil
}
