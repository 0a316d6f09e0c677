package h2

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"golang.org/x/net/http2/hpack"
)

// decodeBoth feeds the same header blocks, each split into the given fragments, to
// meshd's decoder and to x/net's, and reports the first difference: in the fields
// emitted, or in whether a block failed. Decoding stops at the first failure (the
// connection would be closed).
func decodeBoth(blocks [][][]byte, maxStr int) error {
	var got, want []hpack.HeaderField
	mine := newHPACKDecoder(4096, func(f hpack.HeaderField) { got = append(got, f) })
	ref := hpack.NewDecoder(4096, func(f hpack.HeaderField) { want = append(want, f) })
	if maxStr > 0 {
		mine.SetMaxStringLength(maxStr)
		ref.SetMaxStringLength(maxStr)
	}
	for bi, frags := range blocks {
		got, want = got[:0], want[:0]
		var errMine, errRef error
		for _, f := range frags {
			if errMine == nil {
				_, errMine = mine.Write(f)
			}
			if errRef == nil {
				_, errRef = ref.Write(f)
			}
		}
		if errMine == nil {
			errMine = mine.Close()
		}
		if errRef == nil {
			errRef = ref.Close()
		}
		if (errMine == nil) != (errRef == nil) {
			return fmt.Errorf("block %d: meshd's error %v, x/net's %v", bi, errMine, errRef)
		}
		if errMine != nil {
			// Fields emitted before the failure may differ in count (x/net parses a
			// whole Write before it fails, in the same order); the connection closes.
			return nil
		}
		if len(got) != len(want) {
			return fmt.Errorf("block %d: %d fields, x/net %d:\n%v\n%v", bi, len(got), len(want), got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				return fmt.Errorf("block %d field %d: %+v, x/net %+v", bi, i, got[i], want[i])
			}
		}
	}
	return nil
}

// split cuts b at random points into up to n fragments.
func split(r *rand.Rand, b []byte, n int) [][]byte {
	var out [][]byte
	for i := 1; i < n && len(b) > 1; i++ {
		k := r.IntN(len(b))
		out = append(out, b[:k])
		b = b[k:]
	}
	return append(out, b)
}

// TestHPACKDecoderMatchesXNet: blocks encoded by x/net's encoder (indexed, literal with
// and without indexing, never indexed, Huffman or not, table size updates, evictions),
// split across writes, decode to the same fields in both decoders (and so their tables
// agree: later blocks index into them).
func TestHPACKDecoderMatchesXNet(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	names := []string{":method", ":path", ":authority", ":scheme", "user-agent", "x-request-id",
		"content-type", "authorization", "cookie", "x-custom", "grpc-timeout", "traceparent"}
	for round := range 200 {
		var buf bytes.Buffer
		enc := hpack.NewEncoder(&buf)
		var blocks [][][]byte
		for range 20 {
			buf.Reset()
			if r.IntN(8) == 0 {
				enc.SetMaxDynamicTableSize(uint32(r.IntN(4097)))
			}
			for range 1 + r.IntN(12) {
				v := strings.Repeat(string(rune('a'+r.IntN(26))), r.IntN(40))
				if r.IntN(20) == 0 {
					v = strings.Repeat("z", 1000+r.IntN(4000)) // past the table: not indexed
				}
				if r.IntN(4) == 0 {
					v = fmt.Sprintf("%x", r.Uint64()) // fresh: a literal
				}
				name := names[r.IntN(len(names))]
				_ = enc.WriteField(hpack.HeaderField{Name: name, Value: v, Sensitive: name == "authorization" || r.IntN(10) == 0})
			}
			blocks = append(blocks, split(r, bytes.Clone(buf.Bytes()), 1+r.IntN(4)))
		}
		if err := decodeBoth(blocks, 0); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if err := decodeBoth(blocks, 2000); err != nil {
			t.Fatalf("round %d, strings up to 2000: %v", round, err)
		}
	}
}

// TestHPACKDecoderViewsStayValid: the fields emitted from literals are views of arena
// bytes, which later blocks must never overwrite (an HPACK encoder's table downstream
// may hold them for the connection's life).
func TestHPACKDecoderViewsStayValid(t *testing.T) {
	var kept []hpack.HeaderField
	d := newHPACKDecoder(4096, func(f hpack.HeaderField) { kept = append(kept, f) })
	var want []hpack.HeaderField
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for i := range 2000 {
		buf.Reset()
		f := hpack.HeaderField{Name: fmt.Sprintf("x-field-%d", i), Value: strings.Repeat(fmt.Sprint(i%10), i%300), Sensitive: true}
		want = append(want, f)
		_ = enc.WriteField(f) // never indexed: a literal, a view
		if _, err := d.Write(buf.Bytes()); err != nil {
			t.Fatal(err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for i := range want {
		if kept[i].Name != want[i].Name || kept[i].Value != want[i].Value {
			t.Fatalf("field %d changed after later blocks: %q=%q, want %q=%q", i, kept[i].Name, kept[i].Value, want[i].Name, want[i].Value)
		}
	}
}

// TestHPACKDecoderAllocations: a block of literals without indexing and indexed fields
// costs no allocation per field (the arena's chunks are amortized).
func TestHPACKDecoderAllocations(t *testing.T) {
	block := literalBlockForTest(":method", "GET", ":scheme", "http", ":authority", "upstream.example", ":path", "/x", "user-agent", "test")
	n := 0
	d := newHPACKDecoder(4096, func(hpack.HeaderField) { n++ })
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := d.Write(block); err != nil {
			t.Fatal(err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	})
	if n == 0 || allocs > 0.1 {
		t.Fatalf("%v allocations per block of 5 literal fields (%d fields emitted)", allocs, n)
	}
}

func literalBlockForTest(fields ...string) []byte {
	var b []byte
	for i := 0; i+1 < len(fields); i += 2 {
		b = append(b, 0x00, byte(len(fields[i])))
		b = append(b, fields[i]...)
		b = append(b, byte(len(fields[i+1])))
		b = append(b, fields[i+1]...)
	}
	return b
}

// FuzzHPACKDecoder compares meshd's decoder with x/net's on arbitrary bytes: two
// blocks, the first split in two writes.
func FuzzHPACKDecoder(f *testing.F) {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	_ = enc.WriteField(hpack.HeaderField{Name: ":path", Value: "/a"})
	_ = enc.WriteField(hpack.HeaderField{Name: "x-y", Value: "zz", Sensitive: true})
	f.Add(bytes.Clone(buf.Bytes()), []byte{0x82, 0x3f, 0xe1, 0x1f}, uint8(3), uint16(0))
	f.Add([]byte{0x40, 0x83, 0xa8, 0xeb, 0x10, 0x81, 0x9c}, []byte{0x20, 0xbe}, uint8(1), uint16(100))
	f.Add([]byte{0x3f, 0xe1, 0x1f, 0x82}, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, uint8(0), uint16(5))
	f.Fuzz(func(t *testing.T, a, b []byte, cut uint8, maxStr uint16) {
		k := int(cut)
		if k > len(a) {
			k = len(a)
		}
		if err := decodeBoth([][][]byte{{a[:k], a[k:]}, {b}}, int(maxStr)); err != nil {
			t.Fatal(err)
		}
	})
}
