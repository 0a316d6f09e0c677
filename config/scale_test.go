package config

import (
	"strconv"
	"testing"

	"github.com/meshd/meshd/internal/meshgen"
)

// scaleSpec is issue 17's target: 100 virtual routers of 100 routes.
var scaleSpec = meshgen.Spec{Routers: 100, RoutesPerRouter: 100}

func BenchmarkParseScale(b *testing.B) {
	data := scaleSpec.JSON()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkValidateScale: 10,000 routes, and 1,000 for the ratio: validation is linear
// in the routes (no rule looks at every pair).
func BenchmarkValidateScale(b *testing.B) {
	for _, spec := range []meshgen.Spec{scaleSpec, {Routers: 100, RoutesPerRouter: 10}} {
		c, err := Parse(spec.JSON())
		if err != nil {
			b.Fatal(err)
		}
		b.Run("routes="+strconv.Itoa(spec.Routes()), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := c.Validate(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDigestScale(b *testing.B) {
	c, err := Parse(scaleSpec.JSON())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = c.Digest()
	}
}
