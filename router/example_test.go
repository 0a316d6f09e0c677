package router_test

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/router"
)

// header is a one-entry HeaderGetter; a proxy passes its parsed request head instead.
type header struct{ name, value string }

func (h header) Get(name string) (string, bool) {
	if name == h.name {
		return h.value, true
	}
	return "", false
}

func Example() {
	b, err := os.ReadFile("testdata/shop.json")
	if err != nil {
		panic(err)
	}
	var cfg config.Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		panic(err)
	}
	tbl, err := router.Compile(&cfg, "frontend")
	if err != nil {
		panic(err)
	}
	svc := tbl.Egress("backend.shop.local", 80)
	canary := svc.Match(&router.Request{Method: "GET", Path: "/cart", Scheme: "http", Port: 80,
		Header: header{"x-canary", "1"}})
	split := svc.Match(&router.Request{Method: "GET", Path: "/cart", Scheme: "http", Port: 80})
	fmt.Println(canary.Name, canary.PickTarget(0).Cluster)
	fmt.Println(split.Name, split.PickTarget(0).Cluster, split.PickTarget(^uint64(0)).Cluster)
	for _, c := range tbl.Clusters() {
		fmt.Println(c.Name, c.Port, c.Local)
	}
	// Output:
	// canary-header backend-v2
	// split backend-v1 backend-v2
	// backend-v1 9001 false
	// backend-v2 9002 false
	// local:8080 8080 true
}
