package upstream

import (
	"net/http"
	"strings"

	"github.com/meshd/meshd/balancer"
	"github.com/meshd/meshd/config"
)

// balancing turns the node's loadBalancing extension (validated) into the balancer's
// hash key and slow start.
func balancing(lb *config.LoadBalancing) (*balancer.HashOn, balancer.SlowStart) {
	var hash *balancer.HashOn
	var slow balancer.SlowStart
	if lb == nil {
		return nil, slow
	}
	if h := lb.Hash; h != nil {
		hash = &balancer.HashOn{Header: strings.ToLower(h.Header), HeaderKey: http.CanonicalHeaderKey(h.Header), SourceIP: h.SourceIP}
		if c := h.Cookie; c != nil {
			hash.Cookie, hash.CookiePath, hash.CookieTTL = c.Name, c.Path, c.TTL.D()
			hash.CookieSecure, hash.CookieSameSite = c.Secure, c.SameSite
		}
	}
	if ss := lb.SlowStart; ss != nil {
		slow.Window = ss.Window.D()
		if ss.Aggression != nil {
			slow.Aggression = *ss.Aggression
		}
		if ss.MinWeightPercent != nil {
			slow.MinWeightPercent = *ss.MinWeightPercent
		}
	}
	return hash, slow
}

// PickFor picks an endpoint for a request with the balancer's full PickInfo (a hash
// policy's key). An empty cluster fails with a NoEndpoint *Error.
func (c *Cluster) PickFor(info balancer.PickInfo) (balancer.Result, error) {
	res, err := c.bal.Pick(info)
	if err != nil {
		return res, &Error{Kind: NoEndpoint, Err: err}
	}
	return res, nil
}
