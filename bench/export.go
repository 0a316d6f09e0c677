package bench

import (
	"bytes"
	"compress/zlib"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// FortioResult is one scenario under one phase in fortio's result format
// (fortio's HTTPRunnerResults field names and units: durations in seconds in the
// histograms, ActualDuration in ns), one object per file as fortio's report tool
// loads them from its data directory.
type FortioResult struct {
	RunType           string
	Labels            string
	StartTime         time.Time
	RequestedQPS      string
	RequestedDuration string
	ActualQPS         float64
	ActualDuration    int64
	NumThreads        int
	Version           string
	URL               string
	// DurationHistogram is the latency of successful responses;
	// ErrorsDurationHistogram that of error responses (status ≥ 400), as fortio
	// keeps them apart.
	DurationHistogram       FortioHistogram
	ErrorsDurationHistogram *FortioHistogram `json:",omitempty"`
	RetCodes                map[string]uint64
	Exactly                 int64
}

func fortioResult(r *PhaseResult) FortioResult {
	return FortioResult{RunType: r.RunType, Labels: r.Labels, StartTime: r.StartTime, RequestedQPS: r.RequestedQPS,
		RequestedDuration: r.RequestedDuration, ActualQPS: r.ActualQPS, ActualDuration: r.ActualDuration,
		NumThreads: r.NumThreads, Version: r.Version, URL: r.URL, DurationHistogram: r.DurationHistogram,
		ErrorsDurationHistogram: r.ErrorDurationHistogram, RetCodes: r.RetCodes}
}

// resultBase is a result's file name without extension: scenario_phase, made safe.
func resultBase(r *PhaseResult) string { return slug(r.Scenario) + "_" + slug(r.Phase) }

// writeExports writes, per scenario and phase, fortio/<scenario>_<phase>.json
// (FortioResult) and hlog/<scenario>_<phase>.hlog (WriteHlog), and returns the files.
func writeExports(dir string, rep *Report) ([]string, error) {
	var files []string
	for _, sub := range []string{"fortio", "hlog"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return files, fmt.Errorf("report dir: %w", err)
		}
	}
	for _, r := range rep.Results {
		base := resultBase(r)
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetIndent("", "  ")
		if err := enc.Encode(fortioResult(r)); err != nil {
			return files, fmt.Errorf("encode %s: %w", base, err)
		}
		p := filepath.Join(dir, "fortio", base+".json")
		if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
			return files, fmt.Errorf("write %s: %w", p, err)
		}
		files = append(files, p)
		if len(r.rounds) == 0 {
			continue // read back from JSON: no histograms
		}
		b.Reset()
		var iv []HlogInterval
		var at time.Duration
		for _, rl := range r.rounds {
			iv = append(iv, HlogInterval{Start: at, Length: rl.elapsed, H: rl.h})
			at += rl.elapsed
		}
		if err := WriteHlog(&b, rep.Started, r.Labels, iv); err != nil {
			return files, fmt.Errorf("hlog %s: %w", base, err)
		}
		p = filepath.Join(dir, "hlog", base+".hlog")
		if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
			return files, fmt.Errorf("write %s: %w", p, err)
		}
		files = append(files, p)
	}
	return files, nil
}

// HlogInterval is one interval line of an HdrHistogram log: its start relative to
// the log's StartTime, its length, and the latencies recorded in it.
type HlogInterval struct {
	Start, Length time.Duration
	H             *Histogram
}

// HdrHistogram V2 encoding constants. Histogram's bucket layout is HdrHistogram's
// for lowest discernible value 1 and 3 significant digits (2048 sub-buckets), so
// its counts are the encoded counts array as they are.
const (
	hdrEncodingCookie   = 0x1c849303
	hdrCompressedCookie = 0x1c849304
	hdrSigDigits        = 3
	// HlogMaxRatio divides Interval_Max (values are ns) so that it reads in ms, the
	// unit HistogramLogProcessor's default output ratio then also gives.
	HlogMaxRatio = 1e6
)

// WriteHlog writes an HdrHistogram interval log (format version 1.3): a header,
// then one line per interval with its start and length in seconds, its max in ms
// and its histogram compressed and base64 encoded. Recorded values are nanoseconds.
func WriteHlog(w io.Writer, start time.Time, comment string, intervals []HlogInterval) error {
	bw := &errWriter{w: w}
	bw.printf("#[meshbench %s; latency values in nanoseconds]\n", comment)
	bw.printf("#[Histogram log format version 1.3]\n")
	bw.printf("#[StartTime: %.3f (seconds since epoch), %s]\n", float64(start.UnixNano())/1e9, start.UTC().Format(time.RFC1123))
	bw.printf("\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n")
	for _, iv := range intervals {
		enc, err := encodeHdr(iv.H)
		if err != nil {
			return err
		}
		bw.printf("%.3f,%.3f,%s,%s\n", iv.Start.Seconds(), iv.Length.Seconds(),
			strconv.FormatFloat(float64(iv.H.max)/HlogMaxRatio, 'f', 3, 64), enc)
	}
	return bw.err
}

// encodeHdr is h in HdrHistogram's compressed V2 encoding, base64: a compressed
// cookie and length, then zlib of the 40-byte header and the counts as ZigZag
// LEB128 varints, runs of zeros as their negated length.
func encodeHdr(h *Histogram) (string, error) {
	last := -1
	for i, c := range h.counts {
		if c > 0 {
			last = i
		}
	}
	var payload []byte
	for i := 0; i <= last; {
		if h.counts[i] == 0 {
			n := 0
			for i <= last && h.counts[i] == 0 {
				n++
				i++
			}
			if n > 1 {
				payload = appendZigZag(payload, -int64(n))
			} else {
				payload = appendZigZag(payload, 0)
			}
			continue
		}
		payload = appendZigZag(payload, int64(h.counts[i]))
		i++
	}
	raw := make([]byte, 40, 40+len(payload))
	binary.BigEndian.PutUint32(raw[0:], hdrEncodingCookie)
	binary.BigEndian.PutUint32(raw[4:], uint32(len(payload)))
	binary.BigEndian.PutUint32(raw[8:], 0) // normalizing index offset
	binary.BigEndian.PutUint32(raw[12:], hdrSigDigits)
	binary.BigEndian.PutUint64(raw[16:], 1) // lowest discernible value
	binary.BigEndian.PutUint64(raw[24:], histMax)
	binary.BigEndian.PutUint64(raw[32:], 0x3ff0000000000000) // conversion ratio 1.0
	raw = append(raw, payload...)
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	if _, err := zw.Write(raw); err != nil {
		return "", fmt.Errorf("compress histogram: %w", err)
	}
	if err := zw.Close(); err != nil {
		return "", fmt.Errorf("compress histogram: %w", err)
	}
	out := make([]byte, 8, 8+z.Len())
	binary.BigEndian.PutUint32(out[0:], hdrCompressedCookie)
	binary.BigEndian.PutUint32(out[4:], uint32(z.Len()))
	out = append(out, z.Bytes()...)
	return base64.StdEncoding.EncodeToString(out), nil
}

func appendZigZag(b []byte, v int64) []byte {
	return binary.AppendUvarint(b, uint64(v<<1)^uint64(v>>63))
}
