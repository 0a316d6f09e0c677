package http1

import "github.com/meshd/meshd/proxy/forward"

// mirror copies the request in flight for its route's mirror (forward/mirror.go): its
// head as forwarded and its body when keepBody kept it whole. Called before the
// exchange, while c.x.body is still the connection's.
func (c *h1conn) mirror(s *forward.Shot, target string) {
	req := &c.req
	if c.x.upgrade || !c.x.replayable {
		s.Skip()
		return
	}
	s.Send(req.Method, target, c.rr.Authority, forward.H1ToHTTP(req.Headers, c.fwd.Extra), c.x.body)
}
