package state

import (
	"context"
	"io"
	"log/slog"
	"runtime/metrics"
	"testing"
)

func forcedGCs() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/forced:gc-cycles"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestReleaseMemory: with ReleaseMemory an applied config ends with a forced collection
// (debug.FreeOSMemory's), and without it, or when the config is rejected, none is run.
func TestReleaseMemory(t *testing.T) {
	doc := []byte(`{"mesh": {"meshName": "shop"}, "virtualNodes": [{"virtualNodeName": "front", "spec": {"listeners": [{"portMapping": {"port": 9000, "protocol": "http"}}]}}]}`)
	for _, c := range []struct {
		name    string
		release bool
		doc     []byte
		applied bool
		want    uint64
	}{
		{"applied, release", true, doc, true, 1},
		{"applied, no release", false, doc, true, 0},
		{"rejected, release", true, []byte(`{"mesh": {}}`), false, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := &Holder{Node: "front", Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Options: originOptions(t), ReleaseMemory: c.release}
			t.Cleanup(func() { h.Shutdown() })
			before := forcedGCs()
			_, err := h.ApplyDocument(context.Background(), ApplyRequest{Data: c.doc, Source: "test"})
			if (err == nil) != c.applied {
				t.Fatalf("apply: %v", err)
			}
			if got := forcedGCs() - before; got != c.want {
				t.Fatalf("%d forced collections, want %d", got, c.want)
			}
		})
	}
}
