package config

import (
	"errors"
	"strings"
	"testing"
)

// TestValidateRetryBudget: the retryBudget extension's values are checked at their
// field paths; zero fields (the defaults) and in-range values pass; tcp listeners may
// not set it.
func TestValidateRetryBudget(t *testing.T) {
	bad := []struct {
		name        string
		rb          RetryBudget
		tcp         bool
		path, value string
		msg         string
	}{
		{"percent above 100", RetryBudget{BudgetPercent: 150}, false, lp + ".retryBudget.budgetPercent", "150", "(0, 100]"},
		{"percent negative", RetryBudget{BudgetPercent: -1}, false, lp + ".retryBudget.budgetPercent", "-1", "(0, 100]"},
		{"floor negative", RetryBudget{MinRetryConcurrency: -2}, false, lp + ".retryBudget.minRetryConcurrency", "-2", "must be 1.."},
		{"max negative", RetryBudget{MaxRetries: -1}, false, lp + ".retryBudget.maxRetries", "-1", "must be 1.."},
		{"max too large", RetryBudget{MaxRetries: 1 << 40}, false, lp + ".retryBudget.maxRetries", "1099511627776", "must be 1.."},
		{"tcp listener", RetryBudget{MaxRetries: 1}, true, lp + ".retryBudget", "", "not \"tcp\""},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			c := shop(t)
			rb := tt.rb
			listener0(c).RetryBudget = &rb
			if tt.tcp {
				listener0(c).PortMapping.Protocol = ProtoTCP
			}
			var errs *Errors
			if err := c.Validate(); !errors.As(err, &errs) {
				t.Fatalf("Validate = %v, want *Errors", err)
			}
			for _, fe := range errs.List {
				if fe.Path == tt.path && fe.Value == tt.value && strings.Contains(fe.Msg, tt.msg) {
					return
				}
			}
			t.Fatalf("no error at %s with value %q and %q; got:\n%v", tt.path, tt.value, tt.msg, errs)
		})
	}
	for _, rb := range []RetryBudget{{}, {BudgetPercent: 0.5, MinRetryConcurrency: 1, MaxRetries: 1}, {BudgetPercent: 100, MaxRetries: 2147483647}} {
		c := shop(t)
		listener0(c).RetryBudget = &rb
		if err := c.Validate(); err != nil {
			t.Errorf("retryBudget %+v rejected:\n%v", rb, err)
		}
	}
	c, err := Parse([]byte(`mesh: {meshName: m}
virtualNodes:
  - virtualNodeName: n
    spec:
      listeners: [{portMapping: {port: 8080, protocol: http}, retryBudget: {budgetPercent: 12.5, minRetryConcurrency: 2, maxRetries: 4}}]
`))
	if err != nil {
		t.Fatal(err)
	}
	if rb := c.VirtualNodes[0].Spec.Listeners[0].RetryBudget; rb == nil || *rb != (RetryBudget{BudgetPercent: 12.5, MinRetryConcurrency: 2, MaxRetries: 4}) {
		t.Errorf("parsed retryBudget = %+v", rb)
	}
}
