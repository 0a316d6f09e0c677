package canary

import (
	"testing"

	"github.com/meshd/meshd/config"
)

// TestSetCanaryKeepsMirror: a step edits only the weights; a route's mirror extension
// (docs/mirroring.md) is written back untouched.
func TestSetCanaryKeepsMirror(t *testing.T) {
	doc, err := ParseDoc([]byte(`routes:
  - routeName: main
    virtualRouterName: app
    spec:
      httpRoute:
        match: {prefix: /}
        action:
          weightedTargets: [{virtualNode: app-v1, weight: 100}, {virtualNode: app-v2, weight: 0}]
          mirror: {virtualNode: app-v2, percent: 12.5}
`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := doc.SetCanary("app", "main", "app-v2", 10); err != nil {
		t.Fatal(err)
	}
	out, err := doc.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.Routes[0].Spec.HTTPRoute.Action
	if a.Mirror == nil || *a.Mirror != (config.RouteMirror{VirtualNode: "app-v2", Percent: 12.5}) {
		t.Errorf("mirror after a step: %+v\n%s", a.Mirror, out)
	}
	if a.WeightedTargets[1].Weight != 10 {
		t.Errorf("weights after a step: %+v", a.WeightedTargets)
	}
}
