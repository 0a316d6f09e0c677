package forward

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshd/meshd/balancer"
	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/proxy/state"
	"github.com/meshd/meshd/proxy/upstream"
	"github.com/meshd/meshd/resilience"
	"github.com/meshd/meshd/router"
)

// fakeExchange is an Exchanger whose attempts answer from a script, so the retry loop
// runs without sockets inside a synctest bubble, on its fake clock.
type fakeExchange struct {
	t       *testing.T
	ctx     context.Context
	script  []int // status per attempt; 0 is a reset
	retryAt string
	cl      *upstream.Cluster
	n       int
	during  []int64 // the cluster's outstanding retries seen during each attempt
	waits   []time.Duration
	// others is how many retry slots other requests hold: any more during a wait would
	// be this request's own.
	others int64
}

func (f *fakeExchange) Exchange(res balancer.Result, _ time.Time) (int, error) {
	f.during = append(f.during, f.cl.Budget().Outstanding())
	s := f.script[min(f.n, len(f.script)-1)]
	f.n++
	if s == 0 {
		return 0, errors.New("connection reset by peer")
	}
	return s, nil
}
func (f *fakeExchange) Replayable() bool { return true }
func (f *fakeExchange) Header(name string) (string, bool) {
	if name == "retry-after" && f.retryAt != "" {
		return f.retryAt, true
	}
	return "", false
}
func (f *fakeExchange) Discard()                 {}
func (f *fakeExchange) SetHeader(string, string) {}
func (f *fakeExchange) Wait(d time.Duration) bool {
	f.waits = append(f.waits, d)
	if f.cl.Budget().Outstanding() != f.others {
		f.t.Errorf("a retry budget slot is held during the wait before the retry")
	}
	return Sleep(f.ctx, d)
}

// testCall builds a call to a two-endpoint cluster under the given retry policy.
func testCall(t *testing.T, rb *config.RetryBudget, retry *resilience.RetryPolicy, deadline time.Time) (*Call, *upstream.Cluster) {
	t.Helper()
	cl := upstream.New(router.ClusterRef{Name: "svc", Protocol: "http", Listener: &config.Listener{RetryBudget: rb}}, upstream.Options{})
	cl.Balancer().Update([]discovery.Endpoint{{Address: "192.0.2.1:80", Weight: 1}, {Address: "192.0.2.2:80", Weight: 1}})
	t.Cleanup(cl.Close)
	d := Decision{Route: &router.Route{Name: "r"}, Cluster: cl, Policy: state.NewRoutePolicy("svc/r", retry)}
	return &Call{Decision: d, Deadline: deadline}, cl
}

func policy(t *testing.T, maxRetries int, events ...string) *resilience.RetryPolicy {
	t.Helper()
	p, err := resilience.CompileRetryPolicy(resilience.RetryInput{MaxRetries: int64(maxRetries), HTTPEvents: events, TCPEvents: []string{"connection-error"}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRetryLoop drives the pipeline's retry loop on synctest's clock: how many attempts
// are made, what the client gets, how long the waits are, and that a retry holds a
// budget slot only while its attempt runs (not during the wait before it).
func TestRetryLoop(t *testing.T) {
	cases := []struct {
		name     string
		script   []int
		retryAt  string
		maxRet   int
		timeout  time.Duration // request deadline; 0: none
		attempts int
		status   int
		errKind  upstream.Kind
		minWait  time.Duration // the fake clock's advance, at least
		maxWait  time.Duration
	}{
		{name: "503 then 200 is retried after the backoff", script: []int{503, 200}, maxRet: 2, attempts: 2, status: 200,
			minWait: 0, maxWait: resilience.DefaultBackoffBase},
		{name: "maxRetries bounds the attempts; the last answer is relayed", script: []int{503}, maxRet: 2, attempts: 3, status: 503,
			maxWait: resilience.DefaultBackoffBase + 2*resilience.DefaultBackoffBase},
		{name: "Retry-After replaces the backoff", script: []int{503, 200}, retryAt: "1", maxRet: 1, timeout: 10 * time.Second,
			attempts: 2, status: 200, minWait: time.Second, maxWait: time.Second},
		{name: "a wait past the deadline is not made", script: []int{503, 200}, retryAt: "5", maxRet: 1, timeout: time.Second,
			attempts: 1, status: 503},
		{name: "a reset is retried", script: []int{0, 200}, maxRet: 1, attempts: 2, status: 200, maxWait: resilience.DefaultBackoffBase},
		{name: "a reset with no retry left is the answer", script: []int{0}, maxRet: 1, attempts: 2, errKind: upstream.Reset,
			maxWait: resilience.DefaultBackoffBase},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var deadline time.Time
				if tc.timeout > 0 {
					deadline = time.Now().Add(tc.timeout)
				}
				call, cl := testCall(t, nil, policy(t, tc.maxRet, "server-error", "gateway-error"), deadline)
				x := &fakeExchange{t: t, ctx: context.Background(), script: tc.script, retryAt: tc.retryAt, cl: cl}
				start := time.Now()
				fl, err := Do(call, x)
				took := time.Since(start)
				if x.n != tc.attempts {
					t.Errorf("%d attempts, want %d", x.n, tc.attempts)
				}
				if tc.errKind != 0 {
					if upstream.KindOf(err) != tc.errKind {
						t.Fatalf("err %v, want kind %d", err, tc.errKind)
					}
				} else {
					if err != nil || fl.Status != tc.status {
						t.Fatalf("got %d %v, want %d", fl.Status, err, tc.status)
					}
					fl.End(balancer.DoneInfo{Status: fl.Status}, true)
				}
				if took < tc.minWait || took > tc.maxWait {
					t.Errorf("took %v on the fake clock, want %v..%v (waits %v)", took, tc.minWait, tc.maxWait, x.waits)
				}
				for i, n := range x.during {
					if want := int64(min(i, 1)); n != want {
						t.Errorf("attempt %d ran with %d retry slots held, want %d", i, n, want)
					}
				}
				if n := cl.Budget().Outstanding(); n != 0 {
					t.Errorf("%d retry slots still held after the call", n)
				}
				if n := cl.Balancer().InFlight(); n != 0 {
					t.Errorf("%d picks still in flight after the call", n)
				}
			})
		})
	}
}

// TestRetryWaitEndsWhenClientGoes: the wait before a retry ends as soon as the client
// goes away; the call returns then, with the answer it has, instead of sleeping out
// the Retry-After.
func TestRetryWaitEndsWhenClientGoes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		call, cl := testCall(t, nil, policy(t, 2, "server-error"), time.Now().Add(time.Minute))
		ctx, cancel := context.WithCancel(context.Background())
		x := &fakeExchange{t: t, ctx: ctx, script: []int{503, 200}, retryAt: "30", cl: cl}
		go func() {
			time.Sleep(100 * time.Millisecond)
			cancel()
		}()
		start := time.Now()
		fl, err := Do(call, x)
		if err != nil || fl.Status != 503 {
			t.Fatalf("got %d %v, want the 503 it had", fl.Status, err)
		}
		fl.End(balancer.DoneInfo{Status: 503}, true)
		if took := time.Since(start); took != 100*time.Millisecond {
			t.Errorf("returned after %v, want when the client left (100ms)", took)
		}
		if x.n != 1 {
			t.Errorf("%d attempts, want 1", x.n)
		}
	})
}

// TestRetryBudgetRefusalRelaysAnswer: a retry the budget refuses (checked after the
// wait) relays the upstream's own answer and counts retry_budget_exhausted.
func TestRetryBudgetRefusalRelaysAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		call, cl := testCall(t, &config.RetryBudget{MinRetryConcurrency: 1}, policy(t, 2, "server-error"), time.Time{})
		if !cl.Budget().TryAcquireRetry(0) { // another request's retry holds the only slot
			t.Fatal("could not take the budget's slot")
		}
		x := &fakeExchange{t: t, ctx: context.Background(), script: []int{503, 200}, cl: cl, others: 1}
		fl, err := Do(call, x)
		if err != nil || fl.Status != 503 {
			t.Fatalf("got %d %v, want the upstream's 503", fl.Status, err)
		}
		fl.End(balancer.DoneInfo{Status: 503}, true)
		if got := call.Decision.Policy.Counters().Snapshot().RetryBudgetExhausted; got != 1 {
			t.Errorf("route retry_budget_exhausted = %d, want 1", got)
		}
		cl.Budget().ReleaseRetry()
	})
}

// TestBreakerJudgesTheFinalAnswer: with a breaker, a 5xx after retries counts as a
// failure, limits and client failures are ignored, and an open breaker refuses at once
// with an Overflow error naming circuitBreaker.
func TestBreakerJudgesTheFinalAnswer(t *testing.T) {
	l := &config.Listener{CircuitBreaker: &config.CircuitBreaker{ConsecutiveFailures: 2}}
	cl := upstream.New(router.ClusterRef{Name: "svc", Protocol: "http", Listener: l}, upstream.Options{})
	cl.Balancer().Update([]discovery.Endpoint{{Address: "192.0.2.1:80", Weight: 1}})
	defer cl.Close()
	call := &Call{Decision: Decision{Route: &router.Route{Name: "r"}, Cluster: cl}}
	for i := range 2 {
		x := &fakeExchange{t: t, ctx: context.Background(), script: []int{500}, cl: cl}
		fl, err := Do(call, x)
		if err != nil || fl.Status != 500 {
			t.Fatalf("call %d: %d %v", i, fl.Status, err)
		}
		fl.End(balancer.DoneInfo{Status: 500}, true)
	}
	x := &fakeExchange{t: t, ctx: context.Background(), script: []int{200}, cl: cl}
	_, err := Do(call, x)
	if upstream.KindOf(err) != upstream.Overflow || upstream.LimitOf(err) != upstream.LimitCircuitBreaker {
		t.Fatalf("after two failures: %v, want the breaker's refusal", err)
	}
	if status, code := Status(err); status != 503 || code != CodeOverflow {
		t.Errorf("answered %d %s, want 503 %s", status, code, CodeOverflow)
	}
	if x.n != 0 {
		t.Errorf("an open breaker let %d attempts through", x.n)
	}
}
