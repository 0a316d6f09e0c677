package h2

import (
	"net/http"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestHPACKEncoderStaticTable: every entry of the static table, as x/net's decoder
// reads it, gets its own index from staticIndex: the whole entry's for the ones with a
// value, the name's first index for the others.
func TestHPACKEncoderStaticTable(t *testing.T) {
	d := hpack.NewDecoder(4096, nil)
	firstOf := map[string]uint64{}
	for i := uint64(1); i <= 61; i++ {
		fs, err := d.DecodeFull([]byte{0x80 | byte(i)})
		if err != nil || len(fs) != 1 {
			t.Fatalf("index %d: %v %v", i, fs, err)
		}
		f := fs[0]
		if _, ok := firstOf[f.Name]; !ok {
			firstOf[f.Name] = i
		}
		idx, whole := staticIndex(f.Name, f.Value)
		switch {
		case f.Value != "" && (idx != i || !whole):
			t.Errorf("%s: %q (entry %d): staticIndex says %d, whole %v", f.Name, f.Value, i, idx, whole)
		case f.Value == "" && (idx != firstOf[f.Name] || whole):
			t.Errorf("%s (entry %d): staticIndex says %d, whole %v; want %d, not whole", f.Name, i, idx, whole, firstOf[f.Name])
		}
		if idx, whole := staticIndex(f.Name, "some other value"); idx != firstOf[f.Name] || whole {
			t.Errorf("%s with another value: %d %v, want %d, not whole", f.Name, idx, whole, firstOf[f.Name])
		}
	}
	if idx, _ := staticIndex("x-custom", "v"); idx != 0 {
		t.Errorf("a name outside the table got index %d", idx)
	}
}

// TestHPACKEncoderRoundTrip: blocks x/net's decoder reads back field for field (static
// names and others, whole entries, sensitive fields, empty and long values whose
// lengths take several bytes), the first with the table size update to 0, so a
// decoder that allows no dynamic table at all reads them too.
func TestHPACKEncoderRoundTrip(t *testing.T) {
	long := strings.Repeat("v", 20000)
	fields := []hpack.HeaderField{
		{Name: ":status", Value: "200"}, {Name: ":status", Value: "503"}, {Name: ":method", Value: "GET"},
		{Name: ":path", Value: "/a/b?c=d"}, {Name: ":authority", Value: "svc.local:8080"},
		{Name: "content-type", Value: "application/grpc"}, {Name: "accept-encoding", Value: "gzip, deflate"},
		{Name: "x-request-id", Value: "0123"}, {Name: "x-empty", Value: ""}, {Name: "x-long", Value: long},
		{Name: strings.Repeat("n", 200), Value: "long name"}, {Name: "www-authenticate", Value: "Basic"},
		{Name: "authorization", Value: "secret", Sensitive: true}, {Name: "x-token", Value: "t", Sensitive: true},
		{Name: ":status", Value: "200", Sensitive: true},
	}
	var e hpackEncoder
	for round := range 3 {
		e.begin()
		for _, f := range fields {
			_ = e.WriteField(f)
		}
		if (e.buf[0] == 0x20) != (round == 0) {
			t.Errorf("block %d starts with %#x: the size update belongs to the first block only", round, e.buf[0])
		}
		for _, allowed := range []uint32{4096, 0} {
			d := hpack.NewDecoder(allowed, nil)
			if round > 0 {
				// The decoder of the connection saw the first block's update already.
				first := hpackEncoder{}
				first.begin()
				if _, err := d.DecodeFull(first.buf[:1]); err != nil {
					t.Fatal(err)
				}
			}
			got, err := d.DecodeFull(e.buf)
			if err != nil {
				t.Fatalf("block %d, decoder allowing %d: %v", round, allowed, err)
			}
			if len(got) != len(fields) {
				t.Fatalf("block %d: %d fields decoded, want %d", round, len(got), len(fields))
			}
			for i := range fields {
				if got[i] != fields[i] {
					t.Errorf("block %d field %d: %+v, want %+v", round, i, shortField(got[i]), shortField(fields[i]))
				}
			}
		}
	}
	// Sizes: an indexed entry is one byte; a literal is its name's index or string and
	// the value's length and bytes.
	e.begin()
	_ = e.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	if string(e.buf) != "\x88" {
		t.Errorf(":status 200 encodes as %x, want 88", e.buf)
	}
	for _, c := range []struct {
		f    hpack.HeaderField
		want string
	}{
		// Literal without indexing, name index 28 (4-bit prefix: 15 + 13), raw "63".
		{hpack.HeaderField{Name: "content-length", Value: "63"}, "\x0f\x0d\x0263"},
		// Name index 15, the 4-bit prefix's edge: all ones, then 0.
		{hpack.HeaderField{Name: "accept-charset", Value: "x"}, "\x0f\x00\x01x"},
		// Name index 14 fits the prefix; never indexed (0x10).
		{hpack.HeaderField{Name: ":status", Value: "599", Sensitive: true}, "\x18\x03599"},
		// A new name: 0x00, then the name and the value as raw strings.
		{hpack.HeaderField{Name: "x-a", Value: ""}, "\x00\x03x-a\x00"},
		// A 127-byte value, the 7-bit prefix's edge: all ones, then 0.
		{hpack.HeaderField{Name: "x-a", Value: strings.Repeat("v", 127)}, "\x00\x03x-a\x7f\x00" + strings.Repeat("v", 127)},
		// 128 and 300 bytes: continuation bytes (300-127 = 173 = 0x2d | 0x80, then 1).
		{hpack.HeaderField{Name: "x-a", Value: strings.Repeat("v", 128)}, "\x00\x03x-a\x7f\x01" + strings.Repeat("v", 128)},
		{hpack.HeaderField{Name: "x-a", Value: strings.Repeat("v", 300)}, "\x00\x03x-a\x7f\xad\x01" + strings.Repeat("v", 300)},
	} {
		e.begin()
		_ = e.WriteField(c.f)
		if string(e.buf) != c.want {
			t.Errorf("%s: %q encodes as %x, want %x", c.f.Name, shortField(c.f).Value, e.buf, c.want)
		}
	}
}

func shortField(f hpack.HeaderField) hpack.HeaderField {
	if len(f.Value) > 40 {
		f.Value = f.Value[:40] + "..."
	}
	if len(f.Name) > 40 {
		f.Name = f.Name[:40] + "..."
	}
	return f
}

// TestPeerHeaderTableSizeZero: a client whose SETTINGS_HEADER_TABLE_SIZE is 0 (its
// decoder keeps no dynamic table) reads every response of its connection; an encoder
// that indexed fields into a 4096-byte table failed it on the second.
func TestPeerHeaderTableSizeZero(t *testing.T) {
	_, addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("X-Echo", r.URL.Path)
		_, _ = w.Write([]byte("ok"))
	}), Limits{})
	r := rawConn(t, addr)
	if err := r.fr.WriteSettings(http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0}); err != nil {
		t.Fatal(err)
	}
	r.fr.ReadMetaHeaders = hpack.NewDecoder(0, nil) // a dynamic table of 0 bytes, as announced
	for i := uint32(0); i < 3; i++ {
		id := 1 + 2*i
		r.writeHeaders(id, true, "GET", "/p")
		f := r.next(func(f http2.Frame) bool {
			_, ok := f.(*http2.MetaHeadersFrame)
			return ok || f.Header().Type == http2.FrameGoAway
		})
		mh, ok := f.(*http2.MetaHeadersFrame)
		if !ok {
			t.Fatalf("request %d: %v instead of a response", i, f)
		}
		got := map[string]string{}
		for _, f := range mh.RegularFields() {
			got[f.Name] = f.Value
		}
		if s := mh.PseudoValue("status"); s != "200" || got["x-echo"] != "/p" || got["content-type"] != "text/plain" {
			t.Fatalf("request %d: status %q, fields %v", i, s, mh.Fields)
		}
	}
}
