package state

import (
	"errors"
	"fmt"

	"github.com/meshd/meshd/config"
)

// UnservedTLS reports the TLS settings of node vn that the data plane does not serve
// yet (client-policy origination comes with the tls package's integration, issue 13;
// listeners terminate TLS: listener_tls.go). A client policy enforcing TLS would
// otherwise carry its traffic in plaintext while the operator believes it is encrypted:
// Compile refuses such a config instead, naming the field and the way out, and `meshd
// validate --node` says the same.
func UnservedTLS(vn *config.VirtualNode) error {
	var errs []error
	if bd := vn.Spec.BackendDefaults; bd != nil && bd.ClientPolicy != nil && enforcesTLS(bd.ClientPolicy.TLS) {
		errs = append(errs, fmt.Errorf("virtual node %s: spec.backendDefaults.clientPolicy.tls: meshd does not originate TLS to backends yet, and will not send in plaintext what asks for TLS: set enforce: false or remove the tls block",
			vn.VirtualNodeName))
	}
	for i, b := range vn.Spec.Backends {
		if vs := b.VirtualService; vs != nil && vs.ClientPolicy != nil && enforcesTLS(vs.ClientPolicy.TLS) {
			errs = append(errs, fmt.Errorf("virtual node %s: spec.backends[%d].virtualService.clientPolicy.tls (%s): meshd does not originate TLS to backends yet, and will not send in plaintext what asks for TLS: set enforce: false or remove the tls block",
				vn.VirtualNodeName, i, vs.VirtualServiceName))
		}
	}
	return errors.Join(errs...)
}

// enforcesTLS: App Mesh's clientPolicy.tls.enforce defaults to true.
func enforcesTLS(t *config.ClientTLS) bool { return t != nil && (t.Enforce == nil || *t.Enforce) }
