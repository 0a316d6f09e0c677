package resilience

import (
	"math"
	"math/bits"
	"testing"
	"time"
)

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"0", "120", " 5 ", "99999999999999999999", "Thu, 26 Nov 2026 12:00:30 GMT",
		"Thursday, 26-Nov-26 12:01:00 GMT", "Thu Nov 26 12:00:10 2026", "-1", "", "1e3"} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := ParseRetryAfter(s, now)
		if !ok {
			if d != 0 {
				t.Fatalf("%q: not ok but %v", s, d)
			}
			return
		}
		if d < 0 || d > RetryAfterCap {
			t.Fatalf("%q: %v outside [0, %v]", s, d, RetryAfterCap)
		}
		// A valid delay-seconds value round-trips when under the cap.
		if v := trimOWS(s); v != "" && isDigit(v[0]) && d < RetryAfterCap {
			var n int64
			for i := 0; i < len(v); i++ {
				n = n*10 + int64(v[i]-'0')
			}
			if time.Duration(n)*time.Second != d {
				t.Fatalf("%q: %v, want %ds", s, d, n)
			}
		}
	})
}

func FuzzParseGRPCTimeout(f *testing.F) {
	for _, s := range []string{"1H", "30S", "100m", "7n", "250u", "99999999H", "123456789S", "10", "", "-1S"} {
		f.Add(s)
	}
	units := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second, 'm': time.Millisecond, 'u': time.Microsecond, 'n': time.Nanosecond}
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := ParseGRPCTimeout(s)
		// Oracle: the grammar TimeoutValue = 1*8DIGIT, TimeoutUnit, checked independently.
		valid := len(s) >= 2 && len(s) <= 9 && units[s[len(s)-1]] != 0
		var n uint64
		for i := 0; valid && i < len(s)-1; i++ {
			if s[i] < '0' || s[i] > '9' {
				valid = false
			}
			n = n*10 + uint64(s[i]-'0')
		}
		if ok != valid {
			t.Fatalf("%q: ok %v, grammar says %v", s, ok, valid)
		}
		if !ok {
			return
		}
		hi, lo := bits.Mul64(n, uint64(units[s[len(s)-1]]))
		if hi != 0 || lo > math.MaxInt64 {
			if d != math.MaxInt64 {
				t.Fatalf("%q: %v, want saturation", s, d)
			}
		} else if uint64(d) != lo {
			t.Fatalf("%q: %v, want %v", s, d, time.Duration(lo))
		}
	})
}
