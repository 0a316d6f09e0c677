package proxy

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/meshd/meshd/config"
)

// checkAdminExposure refuses an admin listener reachable from other hosts without a
// token: PUT /config on it would let anyone on the network reroute the node's traffic.
func checkAdminExposure(o Options) error {
	if o.AdminAddr == "off" || o.AdminToken != "" || isLoopbackAddr(o.AdminAddr) {
		return nil
	}
	return fmt.Errorf("proxy: admin address %q is not a loopback address, so the admin API needs a token: "+
		"set Options.AdminToken (meshd run: --admin-token-file or MESHD_ADMIN_TOKEN), or bind the admin listener to 127.0.0.1", o.AdminAddr)
}

// isLoopbackAddr reports whether host:port binds only loopback interfaces. An empty
// host (all interfaces) and names other than "localhost" are not loopback.
func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// authorized checks the bearer token when one is configured, answering 401 itself.
// Both sides are hashed first so the comparison takes the same time whatever the
// length or content of the presented token.
func (s *Server) authorized(w http.ResponseWriter, r *http.Request) bool {
	if s.opts.AdminToken == "" {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	a, b := sha256.Sum256([]byte(strings.TrimSpace(got))), sha256.Sum256([]byte(s.opts.AdminToken))
	if ok && subtle.ConstantTimeCompare(a[:], b[:]) == 1 {
		return true
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="meshd-admin"`)
	writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "a valid bearer token is required (Authorization: Bearer TOKEN)"})
	return false
}

// guarded wraps a handler of the config and debug endpoints with the token check.
func (s *Server) guarded(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.authorized(w, r) {
			h(w, r)
		}
	}
}

// applyAnswer is the body of a successful PUT /config or POST /config/validate.
type applyAnswer struct {
	Version   string    `json:"version"`
	Result    string    `json:"result"`
	Source    string    `json:"source,omitempty"`
	AppliedAt time.Time `json:"appliedAt,omitzero"`
}

// rejectAnswer is the body of a rejected PUT /config or POST /config/validate: every
// problem found, each with its field path, line and value where known.
type rejectAnswer struct {
	Error   string        `json:"error"`
	Stage   string        `json:"stage,omitempty"`
	Version string        `json:"version,omitempty"` // the version in force (412)
	Errors  []ConfigError `json:"errors,omitempty"`
}

// readConfigBody reads a request body up to config.MaxConfigSize, answering 413
// itself when it is larger.
func readConfigBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, config.MaxConfigSize))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeJSON(w, http.StatusRequestEntityTooLarge, rejectAnswer{
				Error: fmt.Sprintf("config is larger than the %d byte limit", config.MaxConfigSize)})
			return nil, false
		}
		writeJSON(w, http.StatusBadRequest, rejectAnswer{Error: "reading the request body: " + err.Error()})
		return nil, false
	}
	return body, true
}

// handlePutConfig applies the request body (YAML or JSON, as the config file) and
// answers the new version with its ETag; 400 with every error when it is rejected;
// 412 when If-Match names another version; 428 when If-Match is required and absent.
func (s *Server) handlePutConfig(w http.ResponseWriter, r *http.Request) {
	ifMatch := r.Header.Get("If-Match")
	if ifMatch == "" && s.opts.RequireIfMatch {
		writeJSON(w, http.StatusPreconditionRequired, rejectAnswer{
			Error: "If-Match is required: GET /config, then PUT with If-Match set to its ETag"})
		return
	}
	body, ok := readConfigBody(w, r)
	if !ok {
		return
	}
	snap, err := s.ApplyDocument(r.Context(), ApplyRequest{Data: body, Source: adminSource(r), IfMatch: ifMatch})
	if err != nil {
		s.writeRejection(w, err)
		return
	}
	w.Header().Set("ETag", ETag(snap.Version))
	writeJSON(w, http.StatusOK, applyAnswer{Version: snap.Version, Result: ResultApplied, Source: snap.Source, AppliedAt: snap.AppliedAt})
}

// handleValidateConfig is a dry run of PUT /config: 200 with the version the config
// would have, or 400 with every error. Nothing is applied.
func (s *Server) handleValidateConfig(w http.ResponseWriter, r *http.Request) {
	body, ok := readConfigBody(w, r)
	if !ok {
		return
	}
	snap, err := s.ApplyDocument(r.Context(), ApplyRequest{Data: body, Source: adminSource(r), DryRun: true})
	if err != nil {
		s.writeRejection(w, err)
		return
	}
	writeJSON(w, http.StatusOK, applyAnswer{Version: snap.Version, Result: ResultValid})
}

func (s *Server) writeRejection(w http.ResponseWriter, err error) {
	var rej *RejectedError
	if !errors.As(err, &rej) {
		writeJSON(w, http.StatusInternalServerError, rejectAnswer{Error: err.Error()})
		return
	}
	ans := rejectAnswer{Error: "config rejected at " + rej.Stage + "; the config in force keeps serving", Stage: rej.Stage, Errors: configErrors(rej.Err)}
	status := http.StatusBadRequest
	if errors.Is(err, ErrVersionMismatch) {
		status = http.StatusPreconditionFailed
		if snap := s.snap.Load(); snap != nil {
			ans.Version = snap.Version
			w.Header().Set("ETag", ETag(snap.Version))
		}
	}
	writeJSON(w, status, ans)
}

func adminSource(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return "admin:" + r.Method + " " + r.URL.Path + " from " + host
}

// historyView is the body of GET /config/history.
type historyView struct {
	ReloadStats
	Attempts []Attempt `json:"attempts"`
}

func (s *Server) handleConfigHistory(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, historyView{ReloadStats: s.ReloadStats(), Attempts: s.History()})
}
