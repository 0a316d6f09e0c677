package router

import "testing"

// RouterServices compiles the services of the named routers as a caller's sidecar
// does, and finds them by name without allocating.
func TestRouterServices(t *testing.T) {
	cfg := loadConfig(t, "testdata/shop.json")
	set, err := RouterServices(cfg, []string{"backend-router"})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(set.All()); n != 1 {
		t.Fatalf("%d services, want 1", n)
	}
	canary := Request{Method: "GET", Path: "/cart", Header: headers{"x-canary", "1"}}
	plain := Request{Method: "GET", Path: "/cart"}
	var got, got2 *Route
	allocs := testing.AllocsPerRun(100, func() {
		svc := set.Lookup("Backend.Shop.Local.")
		got, got2 = svc.Match(&canary), svc.Match(&plain)
	})
	if routeName(got) != "canary-header" || routeName(got2) != "split" {
		t.Fatalf("matched %q and %q, want canary-header and split", routeName(got), routeName(got2))
	}
	if allocs != 0 {
		t.Fatalf("Lookup+Match allocated %v times", allocs)
	}
	if r := set.Router(set.Lookup("backend.shop.local")); r != "backend-router" {
		t.Fatalf("router %q", r)
	}
	if set.Lookup("other.local") != nil {
		t.Fatal("found a service that is not there")
	}
	none, err := RouterServices(cfg, []string{"no-such-router"})
	if err != nil || len(none.All()) != 0 {
		t.Fatalf("unknown router: %v, %d services", err, len(none.All()))
	}
}
