package state

import (
	"strings"
	"testing"

	"github.com/meshd/meshd/config"
)

// A node whose listener asks for TLS is refused with the field named, until the data
// plane terminates TLS: never plaintext where the config asks for TLS. DISABLED is
// served, and so are client policies (originated, not refused: origination_test.go).
func TestUnservedTLSRefused(t *testing.T) {
	no := false
	cases := []struct {
		name string
		vn   config.VirtualNode
		want string // "" means accepted
	}{
		{"strict listener", config.VirtualNode{VirtualNodeName: "a", Spec: config.VirtualNodeSpec{
			Listeners: []config.Listener{{TLS: &config.ListenerTLS{Mode: "STRICT"}}}}}, `spec.listeners[0].tls.mode "STRICT"`},
		{"permissive listener", config.VirtualNode{VirtualNodeName: "a", Spec: config.VirtualNodeSpec{
			Listeners: []config.Listener{{}, {TLS: &config.ListenerTLS{Mode: "PERMISSIVE"}}}}}, `spec.listeners[1].tls.mode "PERMISSIVE"`},
		{"disabled listener", config.VirtualNode{VirtualNodeName: "a", Spec: config.VirtualNodeSpec{
			Listeners: []config.Listener{{TLS: &config.ListenerTLS{Mode: "DISABLED"}}}}}, ""},
		{"backend defaults, enforce by default", config.VirtualNode{VirtualNodeName: "a", Spec: config.VirtualNodeSpec{
			BackendDefaults: &config.BackendDefaults{ClientPolicy: &config.ClientPolicy{TLS: &config.ClientTLS{}}}}}, ""},
		{"backend, enforce false", config.VirtualNode{VirtualNodeName: "a", Spec: config.VirtualNodeSpec{
			Backends: []config.Backend{{VirtualService: &config.VirtualServiceBackend{VirtualServiceName: "b.local",
				ClientPolicy: &config.ClientPolicy{TLS: &config.ClientTLS{Enforce: &no}}}}}}}, ""},
		{"backend, enforced", config.VirtualNode{VirtualNodeName: "a", Spec: config.VirtualNodeSpec{
			Backends: []config.Backend{{VirtualService: &config.VirtualServiceBackend{VirtualServiceName: "b.local",
				ClientPolicy: &config.ClientPolicy{TLS: &config.ClientTLS{}}}}}}}, ""},
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
