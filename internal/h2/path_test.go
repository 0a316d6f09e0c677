package h2

import (
	"net/url"
	"testing"
)

// TestPlainPathMatchesURL checks the allocation-free URL of a plain :path against what
// url.ParseRequestURI builds, for every path plainPath accepts.
func TestPlainPathMatchesURL(t *testing.T) {
	paths := []string{"/", "/bench", "/a/b/c", "/a?b=c", "/a?", "/a??", "/a?b?c", "/?", "/a:b@c",
		"/a;b=c,d&e+f$g", "/~user/._-", "/a?x=%zz", "/a?\x80", "//host/path", "///x", "/a(b)", "/a!b",
		"/a*b", "/a'b", "/a%20b", "/a b", "/a\x01", "/a?\x7f", "a", "", "*", "/a#b", "/a?b#c", "/é"}
	for c := 0; c < 256; c++ {
		paths = append(paths, "/x"+string(rune(c)), "/x?"+string([]byte{byte(c)}))
	}
	accepted := 0
	for _, p := range paths {
		if !plainPath(p) {
			continue
		}
		accepted++
		want, err := url.ParseRequestURI(p)
		if err != nil {
			t.Errorf("plainPath(%q) accepted what url.ParseRequestURI refuses: %v", p, err)
			continue
		}
		var got url.URL
		got.Path, got.RawQuery, got.ForceQuery = splitQuery(p)
		if got != *want {
			t.Errorf("%q: got %#v, url.ParseRequestURI %#v", p, got, *want)
		}
		if got.RequestURI() != p {
			t.Errorf("%q: RequestURI %q", p, got.RequestURI())
		}
	}
	if accepted < 100 {
		t.Fatalf("plainPath accepted only %d paths", accepted)
	}
}

// FuzzPlainPath: whatever plainPath accepts, splitQuery parses as url.ParseRequestURI.
func FuzzPlainPath(f *testing.F) {
	for _, s := range []string{"/", "/a?b", "/a?", "/a??b", "/x;y=z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if !plainPath(p) {
			return
		}
		want, err := url.ParseRequestURI(p)
		if err != nil {
			t.Fatalf("plainPath(%q) accepted what url.ParseRequestURI refuses: %v", p, err)
		}
		var got url.URL
		got.Path, got.RawQuery, got.ForceQuery = splitQuery(p)
		if got != *want {
			t.Fatalf("%q: got %#v, url.ParseRequestURI %#v", p, got, *want)
		}
	})
}
