package telemetry

import (
	"testing"
	"time"
)

// TestRecordBuckets: a duration lands in the first bucket whose bound (in seconds) it
// does not exceed, as the float comparison with LatencyBuckets has it, at every bound,
// a nanosecond either side, zero and past the last.
func TestRecordBuckets(t *testing.T) {
	want := func(d time.Duration) int {
		i := 0
		for i < len(LatencyBuckets) && d.Seconds() > LatencyBuckets[i] {
			i++
		}
		return i
	}
	ds := []time.Duration{0, 1, time.Hour}
	for _, s := range LatencyBuckets {
		b := time.Duration(s * float64(time.Second))
		ds = append(ds, b-1, b, b+1)
	}
	for _, d := range ds {
		var s HTTPStats
		s.Record(200, d, 0, "")
		w := want(d)
		for i := range s.Buckets {
			if got := s.Buckets[i].Load(); (i == w) != (got == 1) {
				t.Fatalf("Record(%v): bucket %d holds %d; want the one in bucket %d", d, i, got, w)
			}
		}
		if s.SumMicros.Load() != uint64(d.Microseconds()) || s.Classes[2].Load() != 1 || s.Codes[0].Load() != 1 {
			t.Fatalf("Record(%v): sum %d, 2xx %d, 200s %d", d, s.SumMicros.Load(), s.Classes[2].Load(), s.Codes[0].Load())
		}
	}
}
