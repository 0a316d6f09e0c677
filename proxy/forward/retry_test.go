package forward

import (
	"testing"
	"time"

	"github.com/meshd/meshd/proxy/upstream"
	"github.com/meshd/meshd/resilience"
)

// TestGRPCTimeoutHeader: grpc-timeout is read only for gRPC requests and only when
// well-formed (grpc-go ignores malformed values too).
func TestGRPCTimeoutHeader(t *testing.T) {
	tests := []struct {
		grpc bool
		v    string
		want time.Duration
	}{
		{true, "100m", 100 * time.Millisecond},
		{true, "2S", 2 * time.Second},
		{true, "1x", 0},
		{true, "", 0},
		{false, "100m", 0},
	}
	for _, tt := range tests {
		if got := GRPCTimeout(tt.grpc, tt.v); got != tt.want {
			t.Errorf("GRPCTimeout(%v, %q) = %v, want %v", tt.grpc, tt.v, got, tt.want)
		}
	}
}

// TestRetryPlan: Retry-After replaces the backoff, and a wait past the deadline (or,
// without one, a Retry-After over a second) means no retry.
func TestRetryPlan(t *testing.T) {
	b := resilience.Backoff{Rand: func() uint64 { return 1 << 63 }}
	now := time.Now()
	if d, ok := plan(&b, 0, -1, time.Time{}); !ok || d != resilience.DefaultBackoffBase/2 {
		t.Errorf("backoff = %v %v, want half the 25 ms ceiling", d, ok)
	}
	if d, ok := plan(&b, 0, 500*time.Millisecond, time.Time{}); !ok || d != 500*time.Millisecond {
		t.Errorf("Retry-After 0.5 s, no deadline = %v %v", d, ok)
	}
	if _, ok := plan(&b, 0, 2*time.Second, time.Time{}); ok {
		t.Error("Retry-After 2 s without a deadline was waited for")
	}
	if _, ok := plan(&b, 0, 2*time.Second, now.Add(time.Second)); ok {
		t.Error("Retry-After past the deadline was waited for")
	}
	if d, ok := plan(&b, 0, 2*time.Second, now.Add(time.Minute)); !ok || d != 2*time.Second {
		t.Errorf("Retry-After within the deadline = %v %v", d, ok)
	}
}

// TestRetriableErr: which failed attempts a policy retries.
func TestRetriableErr(t *testing.T) {
	def := resilience.DefaultRetryPolicy()
	tcpOnly, _ := resilience.CompileRetryPolicy(resilience.RetryInput{MaxRetries: 1, TCPEvents: []string{"connection-error"}})
	connect := &upstream.Error{Kind: upstream.Connect, Err: upstream.ErrOverflow}
	reset := &upstream.Error{Kind: upstream.Reset, Err: upstream.ErrOverflow}
	timeout := &upstream.Error{Kind: upstream.Timeout, Err: errTimeoutForTest{}}
	overflow := &upstream.Error{Kind: upstream.Overflow, Err: upstream.ErrOverflow}
	tests := []struct {
		name             string
		p                *resilience.RetryPolicy
		err              error
		replayable, pert bool
		want             bool
	}{
		{"connect, body not replayable", def, connect, false, false, true},
		{"reset, replayable", def, reset, true, false, true},
		{"reset, body consumed", def, reset, false, false, false},
		{"reset under connection-error only", tcpOnly, reset, true, false, false},
		{"connect under connection-error", tcpOnly, connect, false, false, true},
		{"request deadline", def, timeout, true, false, false},
		{"per-try timeout", def, timeout, true, true, true},
		{"overflow", def, overflow, true, false, false},
	}
	for _, tt := range tests {
		if got := retriableErr(tt.p, tt.err, tt.replayable, tt.pert); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

type errTimeoutForTest struct{}

func (errTimeoutForTest) Error() string   { return "timeout" }
func (errTimeoutForTest) Timeout() bool   { return true }
func (errTimeoutForTest) Temporary() bool { return false }
