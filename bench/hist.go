// Package bench is meshd's benchmark harness: an open-loop (coordinated-omission
// corrected) and closed-loop HTTP/1.1 and h2c load generator, HDR-style latency
// histograms, the processes under test (a built-in upstream, meshd, a Go
// httputil.ReverseProxy, haproxy, nginx, envoy) with their CPU and memory read from
// /proc, interleaved side-by-side comparisons, and reports (table, fortio-like JSON,
// SVG/PNG plots).
//
// Every process under test runs as its own OS process so that its CPU and peak RSS
// are its own. The upstream and the httputil proxy are hidden subcommands of the
// calling binary (see RunInternal); callers name that binary in Plan.Self.
package bench

import (
	"math"
	"math/bits"
	"time"
)

// Histogram geometry: values below histSubCount nanoseconds are recorded exactly;
// above, each power of two is split into histHalf linear buckets, so a recorded value
// is off by at most 1/histHalf (about 0.1%) of itself, HdrHistogram's "3 significant
// digits". Values above histMax clamp to histMax (about 18 minutes).
const (
	histSubBits  = 11
	histSubCount = 1 << histSubBits
	histHalf     = histSubCount / 2
	histMaxExp   = 40 - histSubBits
	histMax      = uint64(1)<<40 - 1
	histBuckets  = histSubCount + histMaxExp*histHalf
)

// HistogramPrecision is the worst relative error of a recorded value.
const HistogramPrecision = 1.0 / histHalf

// Histogram is an HDR-style log-linear latency histogram with nanosecond input and
// about 0.1% relative precision (1 µs resolution or better up to 1 s). It is not safe
// for concurrent use: each load worker owns one and they are merged afterwards.
type Histogram struct {
	counts []uint64
	n      uint64
	min    uint64
	max    uint64
	sum    float64 // ns
	sumSq  float64 // ns²
}

// NewHistogram returns an empty histogram (about 250 KiB).
func NewHistogram() *Histogram {
	return &Histogram{counts: make([]uint64, histBuckets), min: math.MaxUint64}
}

func histIndex(v uint64) int {
	if v < histSubCount {
		return int(v)
	}
	if v > histMax {
		v = histMax
	}
	e := bits.Len64(v) - histSubBits // ≥ 1
	return histSubCount + (e-1)*histHalf + int(v>>uint(e)) - histHalf
}

// histBounds returns the lowest and highest value that map to bucket i.
func histBounds(i int) (lo, hi uint64) {
	if i < histSubCount {
		return uint64(i), uint64(i)
	}
	e := (i-histSubCount)/histHalf + 1
	sub := uint64((i-histSubCount)%histHalf + histHalf)
	lo = sub << uint(e)
	return lo, lo + (uint64(1) << uint(e)) - 1
}

// Record adds one duration; negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := uint64(0)
	if d > 0 {
		v = uint64(d)
	}
	if v > histMax {
		v = histMax
	}
	h.counts[histIndex(v)]++
	h.n++
	if v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	f := float64(v)
	h.sum += f
	h.sumSq += f * f
}

// Merge adds o's counts into h.
func (h *Histogram) Merge(o *Histogram) {
	if o == nil || o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.min = min(h.min, o.min)
	h.max = max(h.max, o.max)
	h.sum += o.sum
	h.sumSq += o.sumSq
}

// Reset empties h, keeping its storage.
func (h *Histogram) Reset() {
	clear(h.counts)
	h.n, h.min, h.max, h.sum, h.sumSq = 0, math.MaxUint64, 0, 0, 0
}

// Count is the number of recorded values.
func (h *Histogram) Count() uint64 { return h.n }

// Min is the smallest recorded value (0 when empty).
func (h *Histogram) Min() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.min)
}

// Max is the largest recorded value, exact (0 when empty).
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean is the exact mean of the recorded values.
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}

// StdDev is the population standard deviation of the recorded values.
func (h *Histogram) StdDev() time.Duration {
	if h.n == 0 {
		return 0
	}
	m := h.sum / float64(h.n)
	v := h.sumSq/float64(h.n) - m*m
	if v < 0 {
		v = 0
	}
	return time.Duration(math.Sqrt(v))
}

// Percentile returns the value below or at which p percent (0..100) of the recorded
// values fall: the highest value equivalent to the bucket holding the ceil(p/100·n)-th
// value, capped at the exact maximum, as HdrHistogram's ValueAtPercentile does.
func (h *Histogram) Percentile(p float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	p = min(max(p, 0), 100)
	// The epsilon keeps float error (99.9/100·1000 = 999.0000000000001) from
	// moving to the next value.
	target := uint64(math.Ceil(p/100*float64(h.n) - 1e-9))
	target = max(target, 1)
	var cum uint64
	for i, c := range h.counts {
		if c == 0 {
			continue
		}
		cum += c
		if cum >= target {
			_, hi := histBounds(i)
			return time.Duration(min(max(hi, h.min), h.max))
		}
	}
	return time.Duration(h.max)
}

// Bucket is one non-empty histogram bucket: values in [Lo, Hi].
type Bucket struct {
	Lo, Hi time.Duration
	Count  uint64
}

// Buckets returns the non-empty buckets in ascending order, coarsened so that each
// spans at least 1/64 of its value (about 1.5%), which keeps reports small.
func (h *Histogram) Buckets() []Bucket {
	var out []Bucket
	for i, c := range h.counts {
		if c == 0 {
			continue
		}
		lo, hi := histBounds(i)
		if n := len(out); n > 0 {
			last := &out[n-1]
			if uint64(last.Lo)+uint64(last.Lo)/64 >= lo {
				last.Hi = time.Duration(hi)
				last.Count += c
				continue
			}
		}
		out = append(out, Bucket{Lo: time.Duration(lo), Hi: time.Duration(hi), Count: c})
	}
	return out
}
