package config

import (
	"testing"

	"github.com/meshd/meshd/internal/meshgen"
)

func TestFieldPathString(t *testing.T) {
	r := root("routes").at(12)
	for _, c := range []struct {
		p    *fpath
		want string
	}{
		{nil, ""},
		{root("mesh.meshName"), "mesh.meshName"},
		{r, "routes[12]"},
		{r.f(".spec").f(".httpRoute").f(".action").f(".weightedTargets").at(0).f(".virtualNode"), "routes[12].spec.httpRoute.action.weightedTargets[0].virtualNode"},
		{root("x").at(0).at(1234567890), "x[0][1234567890]"},
		{root("").f(".a"), ".a"},
	} {
		if got := c.p.String(); got != c.want {
			t.Errorf("got %q, want %q", got, c.want)
		}
	}
}

// TestValidateScaleAllocs: a valid mesh of 1,000 routes is validated without building
// a field path (the maps of names are what allocates).
func TestValidateScaleAllocs(t *testing.T) {
	c, err := Parse(meshgen.Spec{Routers: 10, RoutesPerRouter: 100}.JSON())
	if err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(3, func() {
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
	}); n > 200 {
		t.Fatalf("%v allocations to validate 1,000 routes", n)
	}
}
