package proxy

import (
	"github.com/meshd/meshd/proxy/forward"
	"github.com/meshd/meshd/proxy/l4"
	"github.com/meshd/meshd/proxy/listen"
	"github.com/meshd/meshd/proxy/state"
	"github.com/meshd/meshd/proxy/upstream"
)

// The types and values below keep the package's API as it was before the data plane
// was split into rooms; they are the rooms' own.
type (
	Snapshot      = state.Snapshot
	Attempt       = state.Attempt
	ConfigError   = state.ConfigError
	RejectedError = state.RejectedError
	ReloadStats   = state.ReloadStats
	ApplyRequest  = state.ApplyRequest
	L4View        = upstream.L4View
	EgressL4View  = l4.EgressL4View
)

const (
	HistorySize       = state.HistorySize
	StagePrecondition = state.StagePrecondition
	StageParse        = state.StageParse
	StageValidate     = state.StageValidate
	StageCompile      = state.StageCompile
	ResultApplied     = state.ResultApplied
	ResultRejected    = state.ResultRejected
	ResultValid       = state.ResultValid
	// HeaderError names the header on every response meshd generates itself.
	HeaderError = forward.HeaderError
	// HeaderLimit names the connection-pool limit that made meshd answer 503.
	HeaderLimit = forward.HeaderLimit
	// DefaultSniffTimeout is how long an egress connection may stay silent before meshd
	// treats it as a server-first protocol (MySQL, SMTP, ...) and relays it as opaque TCP.
	DefaultSniffTimeout = listen.DefaultSniffTimeout
)

var (
	ErrVersionMismatch = state.ErrVersionMismatch
	ErrShutdown        = state.ErrShutdown
)

// ETag is the HTTP entity tag of a config version.
func ETag(version string) string { return state.ETag(version) }

// WriteFileAtomic replaces path with data atomically (state.WriteFileAtomic).
func WriteFileAtomic(path string, data []byte) error { return state.WriteFileAtomic(path, data) }
