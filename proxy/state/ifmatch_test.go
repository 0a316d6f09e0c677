package state

import (
	"strings"
	"testing"
)

func TestIfMatchHolds(t *testing.T) {
	cur := &Snapshot{version: "abc123"}
	cases := []struct {
		h    string
		snap *Snapshot
		want bool
	}{
		{`"abc123"`, cur, true},
		{` "abc123" `, cur, true},
		{`"x", "abc123"`, cur, true},
		{`"x","abc123"`, cur, true},
		{`*`, cur, true},
		{`*`, nil, false},
		{`"abc123"`, nil, false},
		{`W/"abc123"`, cur, false}, // If-Match compares strongly (RFC 9110 §13.1.1)
		{`abc123`, cur, false},
		{`"abc12"`, cur, false},
		{`"abc123`, cur, false},
		{``, cur, false},
	}
	for _, c := range cases {
		if got := ifMatchHolds(c.h, c.snap); got != c.want {
			t.Errorf("ifMatchHolds(%q, %v) = %v, want %v", c.h, c.snap != nil, got, c.want)
		}
	}
}

// FuzzIfMatch: any header value either holds or not without panicking, a value that
// does not mention the version (or *) never holds, and appending the version's ETag
// to a list always makes it hold.
func FuzzIfMatch(f *testing.F) {
	for _, s := range []string{`"v1"`, `*`, `W/"v1"`, `"a", "b"`, ``, `,,,`} {
		f.Add(s)
	}
	cur := &Snapshot{version: "v1"}
	f.Fuzz(func(t *testing.T, h string) {
		got := ifMatchHolds(h, cur)
		if got && !strings.Contains(h, `"v1"`) && strings.TrimSpace(h) != "*" {
			t.Fatalf("%q holds without naming the version", h)
		}
		if !ifMatchHolds(h+`, "v1"`, cur) {
			t.Fatalf("%q plus the current ETag does not hold", h)
		}
	})
}
