package forward

import (
	"strconv"
	"time"

	"github.com/meshd/meshd/proxy/state"
	"github.com/meshd/meshd/router"
)

// AuthzSummaryInterval is how often, at most, a listener's denials are reported at
// warn (each report counts the denials since the previous one); every denial is also
// logged at debug. A caller refused in a loop cannot flood the log.
const AuthzSummaryInterval = time.Minute

// Authorize applies the authorization policy of the ingress listener d came in on (no
// policy, or an egress request: allowed) to a request of caller peer (the verified
// identity of the connection's client; "" when it has none). A denied request is
// counted and logged, and d is filled with the answer to give: 403 with
// x-meshd-error: authz_denied (gRPC: PERMISSION_DENIED).
func (e *Env) Authorize(snap *state.Snapshot, d *Decision, peer string, rr *router.Request) bool {
	if d.IngressPort == 0 {
		return true
	}
	a := snap.Authz(d.IngressPort)
	if a == nil {
		return true
	}
	v := a.Authorize(peer, rr)
	if v == state.AuthzAllowed {
		return true
	}
	d.Status, d.Code, d.Msg = 403, CodeAuthzDenied, denialMessage(v, peer, a.Port())
	e.logDenial(a, v, peer, rr.Method, rr.Path)
	return false
}

// AuthorizeConn applies the authorization policy of the ingress tcp listener on port
// to a connection of caller peer; false: close it (counted and logged).
func (e *Env) AuthorizeConn(snap *state.Snapshot, port int, peer string) bool {
	a := snap.Authz(port)
	if a == nil {
		return true
	}
	v := a.AuthorizeConn(peer)
	if v == state.AuthzAllowed {
		return true
	}
	e.logDenial(a, v, peer, "", "")
	return false
}

func denialMessage(v state.AuthzVerdict, peer string, port int) string {
	if v == state.AuthzNoIdentity {
		return "meshd: listener " + strconv.Itoa(port) + " authorizes callers by their verified mTLS client certificate, and this caller has none with a SPIFFE ID\n"
	}
	return "meshd: caller " + peer + " is not authorized for this request on listener " + strconv.Itoa(port) + "\n"
}

func reason(v state.AuthzVerdict) string {
	if v == state.AuthzNoIdentity {
		return "no_identity"
	}
	return "policy"
}

// logDenial logs one denial at debug, and at warn the denials since the last report,
// at most once per AuthzSummaryInterval per listener.
func (e *Env) logDenial(a *state.ListenerAuthz, v state.AuthzVerdict, peer, method, path string) {
	e.Log.Debug("authorization denied", "listener", a.Port(), "caller", peer, "reason", reason(v), "method", method, "path", path)
	if n, ok := a.DenialSummary(AuthzSummaryInterval); ok && n > 0 {
		e.Log.Warn("authorization denied callers; the last one named here (every denial is logged at debug)",
			"listener", a.Port(), "denied", n, "since", "the previous report (at most one a minute)",
			"caller", peer, "reason", reason(v), "method", method, "path", path)
	}
}
