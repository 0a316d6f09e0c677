package config

import (
	"context"
	"crypto/sha256"
)

// Document is one config document as a Source delivered it: the raw bytes (YAML or
// JSON, for Parse) and where they came from, e.g. "file:/etc/meshd/mesh.yaml" or
// "url:https://config.example/mesh.yaml etag W/\"7\"".
type Document struct {
	Data   []byte
	Origin string
}

// Source is where a running meshd gets its config from: a file it watches (FileSource)
// or a URL it polls (PollSource). The control endpoint (PUT /config) is not a Source: it
// pushes documents into the proxy directly.
//
// A Source neither parses nor validates: it delivers bytes, and the caller's apply
// pipeline decides whether they are good.
type Source interface {
	// Fetch reads the current document once, now. It is called at start and on SIGHUP,
	// may block on I/O until ctx is done, and is safe to call while Watch runs.
	Fetch(ctx context.Context) (Document, error)
	// Watch delivers each new document until ctx is done, then returns nil; it returns
	// an error only when watching cannot start. deliver is called from Watch's own
	// goroutine, one document at a time, and may block (the source waits for it).
	// Watch starts no goroutine that outlives it. A document identical to the last one
	// delivered or fetched is not delivered again.
	Watch(ctx context.Context, deliver func(Document)) error
}

// digestBytes identifies a document's bytes, to skip redelivering an unchanged one.
func digestBytes(b []byte) [32]byte { return sha256.Sum256(b) }
