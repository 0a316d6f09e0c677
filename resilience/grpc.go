package resilience

import (
	"math"
	"time"
)

// ParseGRPCTimeout parses a grpc-timeout header value: 1 to 8 ASCII digits followed by
// one unit, H (hours), M (minutes), S (seconds), m (milliseconds), u (microseconds) or
// n (nanoseconds), per the gRPC over HTTP/2 spec. Values beyond what a time.Duration holds
// (99999999H) saturate to math.MaxInt64. ok is false for anything else; the caller then
// ignores the header, as grpc-go does. It allocates nothing.
func ParseGRPCTimeout(v string) (d time.Duration, ok bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	var n int64
	for i := 0; i < len(v)-1; i++ {
		c := v[i]
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + int64(c-'0') // at most 8 digits: no overflow
	}
	if n > int64(math.MaxInt64/unit) {
		return math.MaxInt64, true
	}
	return time.Duration(n) * unit, true
}
