package telemetry

import (
	"testing"
	"time"
)

// TestRecordCountsEveryStatus checks the counters Record moves for every status,
// against the definitions: the class, the code in StatusCodes' order, one bucket, the
// sum, the retries and the local kind.
func TestRecordCountsEveryStatus(t *testing.T) {
	for status := -1; status <= 700; status++ {
		var s HTTPStats
		s.Record(status, 3*time.Millisecond, 2, "rate_limited")
		class := 0
		if status >= 100 && status < 600 {
			class = status / 100
		}
		for i := range s.Classes {
			if want := uint64(0); i == class {
				want = 1
				if s.Classes[i].Load() != want {
					t.Fatalf("status %d: class %d not counted", status, i)
				}
			} else if s.Classes[i].Load() != want {
				t.Fatalf("status %d: class %d counted", status, i)
			}
		}
		for i, c := range StatusCodes {
			want := uint64(0)
			if c == status {
				want = 1
			}
			if got := s.Codes[i].Load(); got != want {
				t.Fatalf("status %d: code %d counted %d, want %d", status, c, got, want)
			}
		}
		// 3 ms is above 2.5 ms (index 4) and not above 5 ms (index 5).
		if s.Buckets[5].Load() != 1 || s.SumMicros.Load() != 3000 || s.Retries.Load() != 2 || s.RateLimited.Load() != 1 {
			t.Fatalf("status %d: bucket, sum, retries or local kind wrong", status)
		}
	}
	x := NewSample(200, time.Second, 3, "").WithoutRetries()
	var s HTTPStats
	s.Add(&x)
	if s.Retries.Load() != 0 || s.Buckets[12].Load() != 1 {
		t.Fatalf("WithoutRetries: retries %d, bucket of 1 s %d", s.Retries.Load(), s.Buckets[12].Load())
	}
}
