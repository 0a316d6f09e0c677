package config

import (
	"errors"
	"strings"
	"testing"
)

// TestValidateResilienceExtensions covers the meshd extension fields circuitBreaker,
// rateLimit and healthCheck.panicThresholdPercent: each bad value is reported at its
// field path with the value.
func TestValidateResilienceExtensions(t *testing.T) {
	hc := func() *HealthCheck {
		return &HealthCheck{Protocol: ProtoHTTP, Path: "/ping", IntervalMillis: 5000, TimeoutMillis: 2000, HealthyThreshold: 2, UnhealthyThreshold: 2}
	}
	bad := []struct {
		name  string
		mut   func(c *Config)
		path  string
		value string
		msg   string
	}{
		{"ratio above 1", func(c *Config) { listener0(c).CircuitBreaker = &CircuitBreaker{FailureRatio: 1.5} },
			lp + ".circuitBreaker.failureRatio", "1.5", "(0, 1]"},
		{"both modes", func(c *Config) {
			listener0(c).CircuitBreaker = &CircuitBreaker{FailureRatio: 0.5, ConsecutiveFailures: 3}
		}, lp + ".circuitBreaker", "", "only one of"},
		{"minRequests without ratio", func(c *Config) { listener0(c).CircuitBreaker = &CircuitBreaker{MinRequests: 5} },
			lp + ".circuitBreaker.minRequests", "5", "only with failureRatio"},
		{"negative half-open", func(c *Config) { listener0(c).CircuitBreaker = &CircuitBreaker{HalfOpenRequests: -1} },
			lp + ".circuitBreaker.halfOpenRequests", "-1", "must be 1.."},
		{"open duration unit", func(c *Config) {
			listener0(c).CircuitBreaker = &CircuitBreaker{OpenDuration: &Duration{Unit: "h", Value: 1}}
		}, lp + ".circuitBreaker.openDuration.unit", "h", "one of"},
		{"listener rate zero", func(c *Config) { listener0(c).RateLimit = &RateLimit{} },
			lp + ".rateLimit.requestsPerSecond", "0", "(0, 1e9]"},
		{"listener burst negative", func(c *Config) { listener0(c).RateLimit = &RateLimit{RequestsPerSecond: 1, Burst: -2} },
			lp + ".rateLimit.burst", "-2", "0.."},
		{"route rate negative", func(c *Config) { split(c).RateLimit = &RateLimit{RequestsPerSecond: -1} },
			sp + ".rateLimit.requestsPerSecond", "-1", "(0, 1e9]"},
		{"grpc route rate", func(c *Config) { toGRPC(c).RateLimit = &RateLimit{RequestsPerSecond: 2e9} },
			"routes[0].spec.grpcRoute.rateLimit.requestsPerSecond", "2e+09", "(0, 1e9]"},
		{"panic threshold", func(c *Config) { h := hc(); h.PanicThresholdPercent = ptr(101); listener0(c).HealthCheck = h },
			lp + ".healthCheck.panicThresholdPercent", "101", "0..100"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			c := shop(t)
			tt.mut(c)
			err := c.Validate()
			var errs *Errors
			if !errors.As(err, &errs) {
				t.Fatalf("Validate = %v, want *Errors", err)
			}
			for _, fe := range errs.List {
				if fe.Path == tt.path && fe.Value == tt.value && strings.Contains(fe.Msg, tt.msg) {
					return
				}
			}
			t.Fatalf("no error at %s with value %q and %q; got:\n%v", tt.path, tt.value, tt.msg, err)
		})
	}

	good := []struct {
		name string
		mut  func(c *Config)
	}{
		{"breaker defaults", func(c *Config) { listener0(c).CircuitBreaker = &CircuitBreaker{} }},
		{"breaker ratio", func(c *Config) {
			listener0(c).CircuitBreaker = &CircuitBreaker{FailureRatio: 0.25, MinRequests: 10,
				Interval: &Duration{Unit: "s", Value: 10}, OpenDuration: &Duration{Unit: "ms", Value: 500}, HalfOpenRequests: 2}
		}},
		{"fractional rate", func(c *Config) { listener0(c).RateLimit = &RateLimit{RequestsPerSecond: 0.5} }},
		{"route rate and burst", func(c *Config) { split(c).RateLimit = &RateLimit{RequestsPerSecond: 100, Burst: 20} }},
		{"panic disabled", func(c *Config) { h := hc(); h.PanicThresholdPercent = ptr(0); listener0(c).HealthCheck = h }},
	}
	for _, tt := range good {
		t.Run(tt.name, func(t *testing.T) {
			c := shop(t)
			tt.mut(c)
			if err := c.Validate(); err != nil {
				t.Fatalf("Validate rejected it:\n%v", err)
			}
		})
	}
}

// TestParseResilienceExtensions checks the YAML spelling of the extension fields,
// fractions included, and that a non-number is refused with its path.
func TestParseResilienceExtensions(t *testing.T) {
	const doc = `mesh: {meshName: m}
virtualNodes:
  - virtualNodeName: n
    spec:
      listeners:
        - portMapping: {port: 8080, protocol: http}
          circuitBreaker: {failureRatio: 0.5, minRequests: 4, openDuration: {unit: ms, value: 250}}
          rateLimit: {requestsPerSecond: 2.5, burst: 3}
          healthCheck: {protocol: http, path: /h, intervalMillis: 5000, timeoutMillis: 2000, healthyThreshold: 2, unhealthyThreshold: 2, panicThresholdPercent: 0}
`
	c, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	l := c.VirtualNodes[0].Spec.Listeners[0]
	if l.CircuitBreaker.FailureRatio != 0.5 || l.CircuitBreaker.MinRequests != 4 || l.CircuitBreaker.OpenDuration.D().Milliseconds() != 250 {
		t.Errorf("circuitBreaker = %+v", l.CircuitBreaker)
	}
	if l.RateLimit.RequestsPerSecond != 2.5 || l.RateLimit.Burst != 3 {
		t.Errorf("rateLimit = %+v", l.RateLimit)
	}
	if p := l.HealthCheck.PanicThresholdPercent; p == nil || *p != 0 {
		t.Errorf("panicThresholdPercent = %v, want explicit 0", p)
	}
	_, err = Parse([]byte(strings.Replace(doc, "requestsPerSecond: 2.5", "requestsPerSecond: fast", 1)))
	if err == nil || !strings.Contains(err.Error(), "rateLimit.requestsPerSecond") || !strings.Contains(err.Error(), "number") {
		t.Errorf("Parse of a non-number = %v, want an error naming rateLimit.requestsPerSecond", err)
	}
}
