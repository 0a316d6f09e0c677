package bench

import (
	"math"
	"testing"
	"time"
)

func within(t *testing.T, name string, got, want time.Duration) {
	t.Helper()
	tol := time.Duration(math.Ceil(float64(want) * HistogramPrecision))
	if got < want-tol || got > want+tol {
		t.Errorf("%s = %v, want %v ± %v", name, got, want, tol)
	}
}

func TestHistogramPercentiles(t *testing.T) {
	tests := []struct {
		name   string
		values func(record func(time.Duration))
		want   map[float64]time.Duration
	}{
		{
			name: "uniform 1..10000 µs",
			values: func(r func(time.Duration)) {
				for i := 1; i <= 10000; i++ {
					r(time.Duration(i) * time.Microsecond)
				}
			},
			want: map[float64]time.Duration{0: time.Microsecond, 50: 5000 * time.Microsecond, 90: 9000 * time.Microsecond,
				99: 9900 * time.Microsecond, 99.9: 9990 * time.Microsecond, 100: 10000 * time.Microsecond},
		},
		{
			name: "exact below 2048 ns",
			values: func(r func(time.Duration)) {
				for i := 1; i <= 2000; i++ {
					r(time.Duration(i))
				}
			},
			want: map[float64]time.Duration{50: 1000, 99: 1980, 100: 2000},
		},
		{
			name: "one outlier among 999 fast",
			values: func(r func(time.Duration)) {
				for range 999 {
					r(100 * time.Microsecond)
				}
				r(2 * time.Second)
			},
			want: map[float64]time.Duration{50: 100 * time.Microsecond, 99.9: 100 * time.Microsecond, 99.95: 2 * time.Second, 100: 2 * time.Second},
		},
		{
			name: "seconds range",
			values: func(r func(time.Duration)) {
				for i := 1; i <= 100; i++ {
					r(time.Duration(i) * 100 * time.Millisecond)
				}
			},
			want: map[float64]time.Duration{50: 5 * time.Second, 90: 9 * time.Second, 100: 10 * time.Second},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHistogram()
			tc.values(h.Record)
			for p, want := range tc.want {
				within(t, "p"+formatP(p), h.Percentile(p), want)
			}
		})
	}
}

func formatP(p float64) string { return time.Duration(p * 1000).String() }

func TestHistogramStatsAndMerge(t *testing.T) {
	a, b := NewHistogram(), NewHistogram()
	for i := 1; i <= 100; i++ {
		a.Record(time.Duration(i) * time.Millisecond)
		b.Record(time.Duration(100+i) * time.Millisecond)
	}
	a.Merge(b)
	if a.Count() != 200 {
		t.Fatalf("count %d, want 200", a.Count())
	}
	if a.Min() != time.Millisecond || a.Max() != 200*time.Millisecond {
		t.Errorf("min/max %v/%v, want 1ms/200ms", a.Min(), a.Max())
	}
	within(t, "mean", a.Mean(), 100500*time.Microsecond)
	// Population stddev of 1..200 ms is sqrt((200²-1)/12) ms.
	within(t, "stddev", a.StdDev(), time.Duration(math.Sqrt((200*200-1)/12.0)*1e6))
	within(t, "p50", a.Percentile(50), 100*time.Millisecond)
	var n uint64
	for _, bk := range a.Buckets() {
		if bk.Hi < bk.Lo {
			t.Fatalf("bucket %v..%v inverted", bk.Lo, bk.Hi)
		}
		n += bk.Count
	}
	if n != 200 {
		t.Errorf("buckets hold %d values, want 200", n)
	}
	a.Reset()
	if a.Count() != 0 || a.Percentile(99) != 0 || a.Max() != 0 {
		t.Errorf("after Reset: count %d p99 %v max %v", a.Count(), a.Percentile(99), a.Max())
	}
}

// Every value maps into a bucket whose bounds contain it and whose width is within
// the stated precision.
func TestHistogramBucketBounds(t *testing.T) {
	for _, v := range []uint64{0, 1, 2047, 2048, 2049, 4095, 4096, 123456, 999_999_999, 1 << 39, histMax} {
		i := histIndex(v)
		lo, hi := histBounds(i)
		if v < lo || v > hi {
			t.Errorf("value %d in bucket %d [%d, %d]", v, i, lo, hi)
		}
		if float64(hi-lo) > float64(v)*HistogramPrecision+1 {
			t.Errorf("value %d: bucket width %d exceeds precision", v, hi-lo)
		}
	}
	h := NewHistogram()
	h.Record(time.Hour) // beyond histMax: clamps, does not panic
	if h.Max() != time.Duration(histMax) {
		t.Errorf("clamped max %v", h.Max())
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	h := NewHistogram()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		h.Record(time.Duration(i%5000) * time.Microsecond)
	}
}
