package resilience

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func retriableStatuses(p *RetryPolicy) []int {
	var out []int
	for c := -1; c <= 1000; c++ {
		if p.RetryOnStatus(c) {
			out = append(out, c)
		}
	}
	return out
}

func retriableGRPC(p *RetryPolicy) []int {
	var out []int
	for c := -1; c <= 40; c++ {
		if p.RetryOnGRPC(c) {
			out = append(out, c)
		}
	}
	return out
}

func TestCompileRetryPolicyEvents(t *testing.T) {
	serverError := []int{500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511}
	tests := []struct {
		name                          string
		in                            RetryInput
		statuses, grpc                []int
		connect, reset, refusedStream bool
	}{
		{name: "none", in: RetryInput{MaxRetries: 1}},
		{name: "server-error", in: RetryInput{HTTPEvents: []string{"server-error"}}, statuses: serverError, reset: true},
		{name: "gateway-error", in: RetryInput{HTTPEvents: []string{"gateway-error"}}, statuses: []int{502, 503, 504}, reset: true},
		{name: "client-error", in: RetryInput{HTTPEvents: []string{"client-error"}}, statuses: []int{409}},
		{name: "stream-error", in: RetryInput{HTTPEvents: []string{"stream-error"}}, refusedStream: true},
		{name: "server and client, duplicated", in: RetryInput{HTTPEvents: []string{"client-error", "server-error", "gateway-error", "client-error"}},
			statuses: append([]int{409}, serverError...), reset: true},
		{name: "connection-error", in: RetryInput{TCPEvents: []string{"connection-error"}}, connect: true},
		{name: "grpc all", in: RetryInput{GRPCEvents: []string{"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}},
			grpc: []int{1, 4, 8, 13, 14}},
		{name: "grpc unavailable", in: RetryInput{GRPCEvents: []string{"unavailable"}}, grpc: []int{14}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := CompileRetryPolicy(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := retriableStatuses(p); !slices.Equal(got, tt.statuses) {
				t.Errorf("statuses = %v, want %v", got, tt.statuses)
			}
			if got := retriableGRPC(p); !slices.Equal(got, tt.grpc) {
				t.Errorf("grpc codes = %v, want %v", got, tt.grpc)
			}
			if p.RetryOnConnectFailure() != tt.connect || p.RetryOnReset() != tt.reset || p.RetryOnRefusedStream() != tt.refusedStream {
				t.Errorf("connect/reset/refused = %v/%v/%v, want %v/%v/%v", p.RetryOnConnectFailure(), p.RetryOnReset(),
					p.RetryOnRefusedStream(), tt.connect, tt.reset, tt.refusedStream)
			}
		})
	}
}

func TestCompileRetryPolicyErrors(t *testing.T) {
	tests := []struct {
		name string
		in   RetryInput
		want error
		msg  string
	}{
		{"unknown http", RetryInput{HTTPEvents: []string{"server-error", "teapot"}}, ErrUnknownRetryEvent, `httpRetryEvents[1] "teapot"`},
		{"grpc name in http", RetryInput{HTTPEvents: []string{"unavailable"}}, ErrUnknownRetryEvent, `httpRetryEvents[0] "unavailable"`},
		{"unknown grpc", RetryInput{GRPCEvents: []string{"UNAVAILABLE"}}, ErrUnknownRetryEvent, `grpcRetryEvents[0] "UNAVAILABLE"`},
		{"unknown tcp", RetryInput{TCPEvents: []string{"reset"}}, ErrUnknownRetryEvent, `tcpRetryEvents[0] "reset"`},
		{"negative retries", RetryInput{MaxRetries: -1}, ErrInvalidRetryPolicy, "maxRetries -1"},
		{"huge retries", RetryInput{MaxRetries: 1 << 40}, ErrInvalidRetryPolicy, "maxRetries 1099511627776"},
		{"negative timeout", RetryInput{PerRetryTimeout: -time.Second}, ErrInvalidRetryPolicy, "perRetryTimeout -1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := CompileRetryPolicy(tt.in)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want %v containing %q", err, tt.want, tt.msg)
			}
		})
	}
}

func TestDefaultRetryPolicy(t *testing.T) {
	p := DefaultRetryPolicy()
	if got := retriableStatuses(p); !slices.Equal(got, []int{503}) {
		t.Errorf("statuses = %v, want [503]", got)
	}
	if got := retriableGRPC(p); !slices.Equal(got, []int{GRPCUnavailable}) {
		t.Errorf("grpc = %v, want [14]", got)
	}
	if !p.RetryOnConnectFailure() || !p.RetryOnReset() || !p.RetryOnRefusedStream() {
		t.Error("default must retry connect failure, reset and refused stream")
	}
	if p.MaxRetries() != 2 || p.PerRetryTimeout() != 0 {
		t.Errorf("maxRetries %d perRetryTimeout %v, want 2 and 0", p.MaxRetries(), p.PerRetryTimeout())
	}
	for attempt, want := range map[int]bool{0: false, 1: true, 2: true, 3: false} {
		if got := p.MayRetry(attempt); got != want {
			t.Errorf("MayRetry(%d) = %v, want %v", attempt, got, want)
		}
	}
	want := RetryView{MaxRetries: 2, HTTPStatuses: []int{503}, GRPCCodes: []string{"UNAVAILABLE"},
		ConnectFailure: true, Reset: true, RefusedStream: true}
	if got := p.View(); !reflect.DeepEqual(got, want) {
		t.Errorf("View = %+v, want %+v", got, want)
	}

	none := NoRetryPolicy()
	if none.MayRetry(1) || len(retriableStatuses(none)) != 0 || none.RetryOnReset() {
		t.Error("NoRetryPolicy retries")
	}
}

func TestRetryPolicyView(t *testing.T) {
	p, err := CompileRetryPolicy(RetryInput{MaxRetries: 3, PerRetryTimeout: 2 * time.Second,
		HTTPEvents: []string{"gateway-error"}, GRPCEvents: []string{"internal", "cancelled"}})
	if err != nil {
		t.Fatal(err)
	}
	want := RetryView{MaxRetries: 3, PerRetryTimeout: "2s", HTTPStatuses: []int{502, 503, 504},
		GRPCCodes: []string{"CANCELLED", "INTERNAL"}, Reset: true}
	if got := p.View(); !reflect.DeepEqual(got, want) {
		t.Errorf("View = %+v, want %+v", got, want)
	}
}
