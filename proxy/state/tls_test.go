package state

import (
	"strings"
	"testing"

	"github.com/meshd/meshd/config"
)

// A node whose client policy enforces TLS is refused with the field named, until the
// data plane originates TLS: never plaintext where the config asks for TLS. enforce:
// false is served, and so are listeners of any mode (they terminate TLS).
func TestUnservedTLSRefused(t *testing.T) {
	no := false
	cases := []struct {
		name string
		vn   config.VirtualNode
		want string // "" means accepted
	}{
		{"strict listener", config.VirtualNode{VirtualNodeName: "a", Spec: config.VirtualNodeSpec{
			Listeners: []config.Listener{{TLS: &config.ListenerTLS{Mode: "STRICT"}}}}}, ""},
		{"permissive listener", config.VirtualNode{VirtualNodeName: "a", Spec: config.VirtualNodeSpec{
			Listeners: []config.Listener{{}, {TLS: &config.ListenerTLS{Mode: "PERMISSIVE"}}}}}, ""},
		{"disabled listener", config.VirtualNode{VirtualNodeName: "a", Spec: config.VirtualNodeSpec{
			Listeners: []config.Listener{{TLS: &config.ListenerTLS{Mode: "DISABLED"}}}}}, ""},
		{"backend defaults, enforce by default", config.VirtualNode{VirtualNodeName: "a", Spec: config.VirtualNodeSpec{
			BackendDefaults: &config.BackendDefaults{ClientPolicy: &config.ClientPolicy{TLS: &config.ClientTLS{}}}}}, "spec.backendDefaults.clientPolicy.tls"},
		{"backend, enforce false", config.VirtualNode{VirtualNodeName: "a", Spec: config.VirtualNodeSpec{
			Backends: []config.Backend{{VirtualService: &config.VirtualServiceBackend{VirtualServiceName: "b.local",
				ClientPolicy: &config.ClientPolicy{TLS: &config.ClientTLS{Enforce: &no}}}}}}}, ""},
		{"backend, enforced", config.VirtualNode{VirtualNodeName: "a", Spec: config.VirtualNodeSpec{
			Backends: []config.Backend{{VirtualService: &config.VirtualServiceBackend{VirtualServiceName: "b.local",
				ClientPolicy: &config.ClientPolicy{TLS: &config.ClientTLS{}}}}}}}, "spec.backends[0].virtualService.clientPolicy.tls (b.local)"},
	}
	for _, c := range cases {
		err := UnservedTLS(&c.vn)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want an error naming %s", c.name, err, c.want)
		}
	}
}
