package upstream

import (
	"net/textproto"
	"strings"
	"testing"
)

// TestWriteCanonicalMatchesTextproto: writeCanonical gives textproto's canonical form of
// token names, short ones (built on the stack) and one past the stack buffer.
func TestWriteCanonicalMatchesTextproto(t *testing.T) {
	for _, name := range []string{"content-type", "X-REQUEST-ID", "etag", "x-a-b-", "-x", "WWW-Authenticate",
		"x-" + strings.Repeat("long-name-", 10)} {
		var b strings.Builder
		writeCanonical(&b, name)
		if got, want := b.String(), textproto.CanonicalMIMEHeaderKey(name); got != want {
			t.Errorf("writeCanonical(%q) = %q, want %q", name, got, want)
		}
	}
}
