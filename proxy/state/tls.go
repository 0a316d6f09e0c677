package state

import (
	"errors"
	"fmt"
	"strings"

	"github.com/meshd/meshd/config"
)

// UnservedTLS reports the TLS settings of node vn that the data plane does not serve
// yet: listener termination comes with the tls package's integration (issue 13); client
// policies are served (origination.go). A listener asking for STRICT or PERMISSIVE TLS
// would otherwise carry its traffic in plaintext while the operator believes it is
// encrypted: Compile refuses such a config instead, naming the field and the way out,
// and `meshd validate --node` says the same.
func UnservedTLS(vn *config.VirtualNode) error {
	var errs []error
	for i, l := range vn.Spec.Listeners {
		if l.TLS != nil && !strings.EqualFold(l.TLS.Mode, "DISABLED") {
			errs = append(errs, fmt.Errorf("virtual node %s: spec.listeners[%d].tls.mode %q: meshd does not terminate TLS on listeners yet, and will not serve in plaintext what asks for TLS: set mode DISABLED or remove the tls block to run this node without TLS",
				vn.VirtualNodeName, i, l.TLS.Mode))
		}
	}
	return errors.Join(errs...)
}
