package h2

import (
	"testing"

	"golang.org/x/net/http/httpguts"
)

// TestValidValueMatchesHTTPGuts: the word-at-a-time check agrees with
// httpguts.ValidHeaderFieldValue for every byte value at every position.
func TestValidValueMatchesHTTPGuts(t *testing.T) {
	for n := 1; n <= 19; n++ {
		for pos := 0; pos < n; pos++ {
			for c := 0; c < 256; c++ {
				b := make([]byte, n)
				for i := range b {
					b[i] = 'A' + byte(i%26)
				}
				b[pos] = byte(c)
				if got, want := validValue(string(b)), httpguts.ValidHeaderFieldValue(string(b)); got != want {
					t.Fatalf("validValue(%q) = %v, want %v", b, got, want)
				}
			}
		}
	}
}

func FuzzValidValue(f *testing.F) {
	f.Add("gzip, deflate\t")
	f.Add("a\x00b\r\n")
	f.Fuzz(func(t *testing.T, v string) {
		if got, want := validValue(v), httpguts.ValidHeaderFieldValue(v); got != want {
			t.Fatalf("validValue(%q) = %v, want %v", v, got, want)
		}
	})
}
