package h1

import "testing"

// TestValidValueWordAtATime: the word-at-a-time checks agree with the byte rule for every
// byte value at every position of values of several lengths.
func TestValidValueWordAtATime(t *testing.T) {
	for n := 1; n <= 19; n++ {
		for pos := 0; pos < n; pos++ {
			for c := 0; c < 256; c++ {
				b := make([]byte, n)
				for i := range b {
					b[i] = 'a' + byte(i%26)
				}
				b[pos] = byte(c)
				want := isFieldValueByte(byte(c))
				if got := validValue(string(b)); got != want {
					t.Fatalf("validValue(%q) = %v, want %v", b, got, want)
				}
				if got := validFieldValue(b); got != want {
					t.Fatalf("validFieldValue(%q) = %v, want %v", b, got, want)
				}
			}
		}
	}
	if !validValue("") || !validFieldValue(nil) {
		t.Fatal("the empty value is valid")
	}
}

func FuzzValidValue(f *testing.F) {
	f.Add("text/html; q=0.9\tx")
	f.Add("a\x7fb")
	f.Fuzz(func(t *testing.T, v string) {
		want := true
		for i := 0; i < len(v); i++ {
			want = want && isFieldValueByte(v[i])
		}
		if got := validValue(v); got != want {
			t.Fatalf("validValue(%q) = %v, want %v", v, got, want)
		}
		if got := validFieldValue([]byte(v)); got != want {
			t.Fatalf("validFieldValue(%q) = %v, want %v", v, got, want)
		}
	})
}
