package bench

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// decodeHdr is encodeHdr's inverse, written from the HdrHistogram V2 format: it
// checks the cookies and header and returns the counts.
func decodeHdr(s string) ([]uint64, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, err
	}
	if len(b) < 8 || binary.BigEndian.Uint32(b) != hdrCompressedCookie || int(binary.BigEndian.Uint32(b[4:])) != len(b)-8 {
		return nil, fmt.Errorf("bad compressed header % x", b[:min(len(b), 8)])
	}
	zr, err := zlib.NewReader(bytes.NewReader(b[8:]))
	if err != nil {
		return nil, err
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		return nil, err
	}
	if binary.BigEndian.Uint32(raw) != hdrEncodingCookie || binary.BigEndian.Uint32(raw[12:]) != 3 ||
		binary.BigEndian.Uint64(raw[16:]) != 1 || math.Float64frombits(binary.BigEndian.Uint64(raw[32:])) != 1 {
		return nil, fmt.Errorf("bad header % x", raw[:40])
	}
	payload := raw[40:]
	if int(binary.BigEndian.Uint32(raw[4:])) != len(payload) {
		return nil, fmt.Errorf("payload length %d, have %d", binary.BigEndian.Uint32(raw[4:]), len(payload))
	}
	var counts []uint64
	for len(payload) > 0 {
		u, n := binary.Uvarint(payload)
		if n <= 0 {
			return nil, fmt.Errorf("bad varint")
		}
		payload = payload[n:]
		v := int64(u>>1) ^ -int64(u&1)
		if v < 0 {
			counts = append(counts, make([]uint64, -v)...)
		} else {
			counts = append(counts, uint64(v))
		}
	}
	return counts, nil
}

func TestHlogRoundTrip(t *testing.T) {
	h1, h2 := NewHistogram(), NewHistogram()
	for i := range 1000 {
		h1.Record(time.Duration(40_000 + i*37))
		h2.Record(time.Duration(100+i) * time.Microsecond)
	}
	h2.Record(3 * time.Second)
	start := time.Unix(1700000000, 250e6)
	var b bytes.Buffer
	if err := WriteHlog(&b, start, "meshd fixed-1000", []HlogInterval{{0, time.Second, h1}, {time.Second, 2 * time.Second, h2}}); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(&b)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) != 6 || lines[1] != "#[Histogram log format version 1.3]" || !strings.HasPrefix(lines[2], "#[StartTime: 1700000000.250 (seconds since epoch), ") ||
		lines[3] != `"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"` {
		t.Fatalf("log:\n%s", strings.Join(lines, "\n"))
	}
	for i, want := range []*Histogram{h1, h2} {
		f := strings.Split(lines[4+i], ",")
		if len(f) != 4 {
			t.Fatalf("line %q", lines[4+i])
		}
		if f[0] != []string{"0.000", "1.000"}[i] || f[1] != []string{"1.000", "2.000"}[i] {
			t.Errorf("interval %d: start %s length %s", i, f[0], f[1])
		}
		if mx, _ := strconv.ParseFloat(f[2], 64); math.Abs(mx-float64(want.Max())/1e6) > 0.001 {
			t.Errorf("interval %d: max %s ms, want %v", i, f[2], want.Max())
		}
		counts, err := decodeHdr(f[3])
		if err != nil {
			t.Fatalf("interval %d: %v", i, err)
		}
		got := NewHistogram()
		for idx, c := range counts {
			got.counts[idx] = c
			got.n += c
		}
		if got.n != want.n {
			t.Errorf("interval %d: count %d, want %d", i, got.n, want.n)
		}
		for idx := range want.counts {
			if want.counts[idx] != got.counts[idx] {
				t.Fatalf("interval %d: bucket %d: %d, want %d", i, idx, got.counts[idx], want.counts[idx])
			}
		}
	}
}

// TestPerResultExports checks the fortio-format and hlog files of a real run: one
// fortio object per scenario and phase (not a list), with fortio's field names, and
// one hlog interval per round.
func TestPerResultExports(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte("ok"))
	}))
	defer srv.Close()
	rep, err := Compare(context.Background(), Plan{Targets: []TargetSpec{{URL: srv.URL + "/", Label: "ok"}, {URL: srv.URL + "/missing", Label: "404"}}, Rounds: 2,
		Phases: []Phase{{Name: "fixed-100", Rate: 100, Connections: 1, Duration: 100 * time.Millisecond}}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := WriteReport(dir, rep); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		base   string
		ok     bool
		counts map[string]float64
	}{{"ok_fixed-100", true, map[string]float64{"200": 20}}, {"404_fixed-100", false, map[string]float64{"404": 20}}} {
		b, err := os.ReadFile(filepath.Join(dir, "fortio", c.base+".json"))
		if err != nil {
			t.Fatal(err)
		}
		var obj map[string]any
		if err := json.Unmarshal(b, &obj); err != nil {
			t.Fatalf("%s: not one JSON object: %v", c.base, err)
		}
		for _, k := range []string{"RunType", "Labels", "StartTime", "RequestedQPS", "ActualQPS", "ActualDuration", "NumThreads", "URL", "DurationHistogram", "RetCodes"} {
			if _, ok := obj[k]; !ok {
				t.Errorf("%s: no %s", c.base, k)
			}
		}
		var fr FortioResult
		if err := json.Unmarshal(b, &fr); err != nil {
			t.Fatal(err)
		}
		codes := map[string]float64{}
		for k, v := range fr.RetCodes {
			codes[k] = float64(v)
		}
		if fmt.Sprint(codes) != fmt.Sprint(c.counts) || fr.RequestedQPS != "100" || fr.NumThreads != 1 {
			t.Errorf("%s: codes %v qps %s threads %d", c.base, fr.RetCodes, fr.RequestedQPS, fr.NumThreads)
		}
		if c.ok && (fr.DurationHistogram.Count != 20 || len(fr.DurationHistogram.Percentiles) == 0 || fr.ErrorsDurationHistogram != nil) {
			t.Errorf("%s: histogram %+v, errors %+v", c.base, fr.DurationHistogram, fr.ErrorsDurationHistogram)
		}
		if !c.ok && (fr.DurationHistogram.Count != 0 || fr.ErrorsDurationHistogram == nil || fr.ErrorsDurationHistogram.Count != 20) {
			t.Errorf("%s: histogram %+v, errors %+v", c.base, fr.DurationHistogram, fr.ErrorsDurationHistogram)
		}
		hl, err := os.ReadFile(filepath.Join(dir, "hlog", c.base+".hlog"))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(hl)), "\n")
		if len(lines) != 6 {
			t.Fatalf("%s.hlog: %d lines, want header + 2 rounds:\n%s", c.base, len(lines), hl)
		}
		var total uint64
		for _, l := range lines[4:] {
			f := strings.Split(l, ",")
			counts, err := decodeHdr(f[3])
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range counts {
				total += n
			}
		}
		if want := uint64(fr.DurationHistogram.Count); total != want {
			t.Errorf("%s.hlog: %d values, want %d", c.base, total, want)
		}
	}
}
