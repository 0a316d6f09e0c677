package state

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/internal/meshgen"
	meshtls "github.com/meshd/meshd/tls"
)

// BenchmarkLoadCompile10k is what `meshd run` does with issue 17's mesh of 10,000 routes
// between reading the file and serving: parse, validate, digest and compile through the
// apply pipeline, each iteration into a fresh Holder (the first apply, no carry-over).
// ReleaseMemory is off: the collection it forces would measure the benchmark's heap.
func BenchmarkLoadCompile10k(b *testing.B) {
	data := meshgen.Spec{Routers: 100, RoutesPerRouter: 100}.JSON()
	ld := meshtls.NewLoader(meshtls.LoaderOptions{Mesh: "scale"})
	b.Cleanup(func() { _ = ld.Close() })
	opts := Options{Registry: func([]string) *discovery.Registry { return nil }, TLS: ld}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		h := &Holder{Node: "front", Log: log, Options: opts}
		if _, err := h.ApplyDocument(context.Background(), ApplyRequest{Data: data, Source: "bench"}); err != nil {
			b.Fatal(err)
		}
		h.Shutdown()
	}
}
