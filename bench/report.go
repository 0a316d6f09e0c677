package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is the outcome of one Compare. Its JSON form is report.json.
type Report struct {
	Harness string    `json:"harness"`
	Started time.Time `json:"started"`
	Machine Machine   `json:"machine"`
	Pinning string    `json:"pinning"`
	Proto   string    `json:"proto"`
	Rounds  int       `json:"rounds"`
	// Sweep is a --sweep run (Plan.Sweep): its phases are rates × connections, and
	// only then is sweep.svg/png drawn.
	Sweep    bool `json:"sweep,omitempty"`
	ReqBody  int  `json:"requestBodyBytes"`
	RespBody int  `json:"responseBodyBytes"`
	// MeshdBinary and BaselineMeshdBinary are the binaries the meshd scenarios and
	// ScenarioMeshdBaseline were started with; empty when not among the scenarios.
	MeshdBinary         string         `json:"meshdBinary,omitempty"`
	BaselineMeshdBinary string         `json:"baselineMeshdBinary,omitempty"`
	Results             []*PhaseResult `json:"results"`
	Skipped             []Skip         `json:"skipped,omitempty"`
	// TLSHops are the TLS-hop scenarios' middle hops as the harness checked them
	// before measuring and counted them after.
	TLSHops []*TLSHop `json:"tlsHops,omitempty"`
}

// Machine identifies where a report was measured.
type Machine struct {
	CPUModel  string `json:"cpuModel"`
	Cores     int    `json:"cores"`
	Kernel    string `json:"kernel"`
	OS        string `json:"os"`
	GoVersion string `json:"goVersion"`
}

// Skip names a scenario that did not run and why.
type Skip struct {
	Scenario string `json:"scenario"`
	Reason   string `json:"reason"`
}

// PhaseResult is one scenario under one phase, merged over all rounds. The first
// block of fields has fortio's names and units (seconds in histograms, ActualDuration
// in ns) so tools that read fortio JSON read these; the rest are the harness's own.
type PhaseResult struct {
	RunType                  string
	Labels                   string
	StartTime                time.Time
	RequestedQPS             string
	RequestedDuration        string
	ActualQPS                float64
	ActualDuration           int64
	NumThreads               int
	Version                  string
	URL                      string
	DurationHistogram        FortioHistogram
	ServiceDurationHistogram *FortioHistogram `json:",omitempty"`
	// RetCodes counts responses by HTTP status; for proto grpc by gRPC status code
	// ("0" is OK), and only OK calls: failed calls are in Errors as grpc_<CODE>.
	RetCodes map[string]uint64
	Errors   map[string]uint64

	Scenario    string  `json:"scenario"`
	Phase       string  `json:"phase"`
	Proto       string  `json:"proto"`
	Rate        float64 `json:"requestedRate"`
	Connections int     `json:"connections"`
	// Streams is the requests the phase keeps in flight per connection (h2load -m);
	// PeakStreams the most the client had in flight on one connection at once.
	Streams     int  `json:"streamsPerConnection"`
	PeakStreams int  `json:"peakStreamsPerConnection"`
	OpenLoop    bool `json:"openLoop"`
	// LatencyFrom says where latency is counted from: "scheduled" (open loop,
	// coordinated omission corrected) or "sent" (closed loop).
	LatencyFrom string    `json:"latencyFrom"`
	RoundQPS    []float64 `json:"roundQPS"`
	P50US       float64   `json:"p50_us"`
	P90US       float64   `json:"p90_us"`
	P99US       float64   `json:"p99_us"`
	P999US      float64   `json:"p999_us"`
	MaxUS       float64   `json:"max_us"`
	// AddedP50US / AddedP99US are this scenario's percentiles minus direct's in the
	// same phase; absent when direct did not run.
	AddedP50US *float64 `json:"added_p50_us,omitempty"`
	AddedP99US *float64 `json:"added_p99_us,omitempty"`
	ErrorCount uint64   `json:"errorCount"`
	Requests   uint64   `json:"requests"`
	// StatusClasses counts complete responses by class ("2xx", "4xx", ...; for gRPC
	// the OK calls are "2xx"). ErrorResponses are those with status ≥ 400: they are
	// in Requests and req/s, but not in the latency percentiles above, which are of
	// successful responses only; their own latency is ErrorDurationHistogram and
	// ErrorP50US/ErrorP99US (absent when there were none).
	StatusClasses          map[string]uint64 `json:"statusClasses"`
	ErrorResponses         uint64            `json:"errorResponses"`
	ErrorDurationHistogram *FortioHistogram  `json:"errorDurationHistogram,omitempty"`
	ErrorP50US             *float64          `json:"error_p50_us,omitempty"`
	ErrorP99US             *float64          `json:"error_p99_us,omitempty"`
	// Proxies is how many proxy processes the scenario has (2 for meshd-2hop).
	Proxies int `json:"proxies"`
	// CPU of all the scenario's proxy processes during the measured windows.
	ProxyCPUSeconds    float64 `json:"proxyCPUSeconds"`
	ProxyCPUPerRequest float64 `json:"proxyCPU_us_per_request"`
	// RoundProxyCPUPerReq is each round's proxy CPU per request (0 for a round without
	// responses): rounds are interleaved, so round i of two rows ran minutes apart at
	// most, and their ratio per round shows how far the machine moved a comparison.
	RoundProxyCPUPerReq []float64 `json:"roundProxyCPU_us_per_request,omitempty"`
	UpstreamCPUPerReq   float64   `json:"upstreamCPU_us_per_request"`
	LoadgenCPUPerReq    float64   `json:"loadgenCPU_us_per_request"`
	// LoadgenBusy is the share of its CPUs the load generator kept busy over the
	// measured windows (1: all of them), LoadgenBusyMax the largest of one round's:
	// near 1, the row's throughput and latency are the load generator's limit as much
	// as the proxy's (clientBound).
	LoadgenBusy       float64 `json:"loadgenBusy"`
	LoadgenBusyMax    float64 `json:"loadgenBusyMax"`
	LoadgenCPUs       int     `json:"loadgenCPUs"`            // the CPUs the load generator could use
	ProxyPeakRSSBytes uint64  `json:"proxyPeakRSSBytes"`      // largest VmHWM of one proxy (per sidecar)
	ProxyPeakRSSTotal uint64  `json:"proxyPeakRSSTotalBytes"` // sum over the scenario's proxies

	res *Result
	cpu cpuWindow
	// rounds are each round's latency histogram and measured span, for the hlog's
	// intervals.
	rounds []roundLatency
}

type roundLatency struct {
	h       *Histogram
	elapsed time.Duration
}

// FortioHistogram is fortio's histogram JSON shape; durations are in seconds.
type FortioHistogram struct {
	Count       uint64
	Min         float64
	Max         float64
	Sum         float64
	Avg         float64
	StdDev      float64
	Data        []FortioBucket
	Percentiles []FortioPercentile
}

// FortioBucket is one histogram bucket; Percent is cumulative.
type FortioBucket struct {
	Start   float64
	End     float64
	Percent float64
	Count   uint64
}

// FortioPercentile is one percentile value in seconds.
type FortioPercentile struct {
	Percentile float64
	Value      float64
}

// ReportPercentiles are the percentiles listed in JSON histograms.
var reportPercentiles = [...]float64{50, 75, 90, 99, 99.9}

func fortioHistogram(h *Histogram) FortioHistogram {
	f := FortioHistogram{Count: h.Count(), Min: h.Min().Seconds(), Max: h.Max().Seconds(),
		Avg: h.Mean().Seconds(), StdDev: h.StdDev().Seconds()}
	f.Sum = f.Avg * float64(f.Count)
	var cum uint64
	for _, b := range h.Buckets() {
		cum += b.Count
		f.Data = append(f.Data, FortioBucket{Start: b.Lo.Seconds(), End: b.Hi.Seconds(),
			Percent: 100 * float64(cum) / float64(max(f.Count, 1)), Count: b.Count})
	}
	for _, p := range reportPercentiles {
		f.Percentiles = append(f.Percentiles, FortioPercentile{Percentile: p, Value: h.Percentile(p).Seconds()})
	}
	return f
}

// Histogram returns the merged latency histogram (nil for a report read from JSON).
func (p *PhaseResult) Histogram() *Histogram {
	if p.res == nil {
		return nil
	}
	return p.res.Latency
}

func (p *PhaseResult) add(r *Result, cpu cpuWindow) {
	p.res.Merge(r)
	p.rounds = append(p.rounds, roundLatency{h: r.Latency, elapsed: r.Elapsed})
	p.RoundQPS = append(p.RoundQPS, r.Rate())
	perReq := 0.0
	if n := r.Responses(); n > 0 {
		perReq = us(cpu.proxy) / float64(n)
	}
	p.RoundProxyCPUPerReq = append(p.RoundProxyCPUPerReq, perReq)
	p.cpu.proxy += cpu.proxy
	p.cpu.upstream += cpu.upstream
	p.cpu.loadgen += cpu.loadgen
	p.cpu.wall += cpu.wall
	if cpu.wall > 0 && p.LoadgenCPUs > 0 {
		p.LoadgenBusyMax = max(p.LoadgenBusyMax, cpu.loadgen.Seconds()/cpu.wall.Seconds()/float64(p.LoadgenCPUs))
	}
}

func us(d time.Duration) float64 { return float64(d) / 1e3 }

func (p *PhaseResult) finish(direct *PhaseResult) {
	r := p.res
	p.OpenLoop = r.Open
	p.LatencyFrom = "sent"
	if r.Open {
		p.LatencyFrom = "scheduled"
		s := fortioHistogram(r.Service)
		p.ServiceDurationHistogram = &s
	}
	p.PeakStreams = r.PeakStreams
	p.ActualQPS = r.Rate()
	p.ActualDuration = int64(r.Elapsed)
	p.DurationHistogram = fortioHistogram(r.Latency)
	p.RetCodes = map[string]uint64{}
	for c, n := range r.RetCodes {
		p.RetCodes[strconv.Itoa(c)] = n
	}
	p.Errors = maps.Clone(r.Errors)
	p.ErrorCount = r.ErrorCount()
	p.Requests = r.Responses()
	p.StatusClasses = map[string]uint64{}
	for c, n := range r.RetCodes {
		p.StatusClasses[statusClass(c, p.Proto)] += n
	}
	if e := r.ErrLatency; e.Count() > 0 {
		p.ErrorResponses = e.Count()
		f := fortioHistogram(e)
		p.ErrorDurationHistogram = &f
		e50, e99 := us(e.Percentile(50)), us(e.Percentile(99))
		p.ErrorP50US, p.ErrorP99US = &e50, &e99
	}
	h := r.Latency
	p.P50US, p.P90US, p.P99US, p.P999US = us(h.Percentile(50)), us(h.Percentile(90)), us(h.Percentile(99)), us(h.Percentile(99.9))
	p.MaxUS = us(h.Max())
	if direct != nil && direct != p && direct.res.Latency.Count() > 0 && h.Count() > 0 {
		a50 := p.P50US - us(direct.res.Latency.Percentile(50))
		a99 := p.P99US - us(direct.res.Latency.Percentile(99))
		p.AddedP50US, p.AddedP99US = &a50, &a99
	}
	if p.Requests > 0 {
		n := float64(p.Requests)
		p.ProxyCPUSeconds = p.cpu.proxy.Seconds()
		p.ProxyCPUPerRequest = us(p.cpu.proxy) / n
		p.UpstreamCPUPerReq = us(p.cpu.upstream) / n
		p.LoadgenCPUPerReq = us(p.cpu.loadgen) / n
	}
	if p.cpu.wall > 0 && p.LoadgenCPUs > 0 {
		p.LoadgenBusy = p.cpu.loadgen.Seconds() / p.cpu.wall.Seconds() / float64(p.LoadgenCPUs)
	}
}

// clientBoundAt is the load generator's busy share from which a row is flagged: its
// CPUs were (nearly) saturated, so the proxy may have had capacity left.
const clientBoundAt = 0.9

// clientBound lists the rows whose load generator was saturated during their windows,
// in any one round (an average over rounds would hide one that was).
func clientBound(rows []*PhaseResult) []string {
	var out []string
	for _, r := range rows {
		if r.LoadgenBusyMax >= clientBoundAt {
			out = append(out, fmt.Sprintf("%s: the load generator was busy %.0f%% of its %d CPU(s) (%.0f%% over all rounds)",
				r.Scenario, 100*r.LoadgenBusyMax, r.LoadgenCPUs, 100*r.LoadgenBusy))
		}
	}
	return out
}

// WriteJSON writes rep as indented JSON.
func WriteJSON(w io.Writer, rep *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	return nil
}

// statusClass is "2xx", "4xx", ... for an HTTP status; gRPC's RetCodes hold only OK
// calls (status 0), which count as "2xx".
func statusClass(code int, proto string) string {
	if proto == string(GRPC) && code == 0 {
		return "2xx"
	}
	return strconv.Itoa(code/100) + "xx"
}

func ms(v float64) string { return strconv.FormatFloat(v/1000, 'f', 3, 64) }

func signedMS(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%+.3f", *v/1000)
}

// WriteTable writes the human-readable report: machine, one table per phase, ratios
// against haproxy, skipped scenarios. markdown selects Markdown tables.
func WriteTable(w io.Writer, rep *Report, markdown bool) error {
	m := rep.Machine
	bw := &errWriter{w: w}
	if markdown {
		bw.printf("# meshbench report\n\n")
	}
	bw.printf("Machine: %s, %d cores, kernel %s, %s, %s\n", m.CPUModel, m.Cores, m.Kernel, m.OS, m.GoVersion)
	bw.printf("Started %s; protocol %s; request body %d B, response body %d B; %d round(s) interleaved; pinning: %s\n",
		rep.Started.Format(time.RFC3339), rep.Proto, rep.ReqBody, rep.RespBody, rep.Rounds, rep.Pinning)
	if rep.BaselineMeshdBinary != "" {
		bw.printf("meshd binaries: %s = %s, %s = %s\n", ScenarioMeshd, orNone(rep.MeshdBinary), ScenarioMeshdBaseline, rep.BaselineMeshdBinary)
	}
	bw.printf("Latency in ms; open-loop phases count it from the scheduled send time (coordinated omission corrected).\n")
	if rep.Proto == string(GRPC) {
		bw.printf("gRPC: unary calls of %s by a grpc-go client; req/s counts calls with status OK, errors are counted by status code (grpc_<CODE>).\n", GRPCMethod)
	}
	bw.printf("CPU µs/req is the on-CPU time (/proc schedstat, else utime+stime) of the scenario's proxy processes over the measured windows ÷ responses; RSS is the largest peak (VmHWM) of one proxy.\n")
	if len(rep.TLSHops) > 0 {
		bw.printf("TLS hop (*-2hop-tls): mutual TLS between the two proxies with certificates of a mesh CA made for the run (ECDSA P-256); checked before measuring: plaintext and clients without a certificate refused. Negotiated with a Go client's probe of the ingress proxy, and the handshakes the egress proxy made over the run (smoke and warm-ups included), as the ingress proxy counts them:\n")
		for _, h := range rep.TLSHops {
			item := fmt.Sprintf("%s: %s, %s, %s, ALPN %s; handshakes by the egress proxy: %d (%s)", h.Scenario, h.Version, h.CipherSuite, h.KeyExchange, h.ALPN, h.Handshakes, h.HandshakesFrom)
			if markdown {
				bw.printf("- %s\n", item)
			} else {
				bw.printf("  %s\n", item)
			}
		}
	}
	for _, phase := range phaseOrder(rep) {
		rows := phaseRows(rep, phase)
		if len(rows) == 0 {
			continue
		}
		first := rows[0]
		conns := fmt.Sprintf("%d connections", first.Connections)
		if first.Streams > 1 {
			conns += fmt.Sprintf(" × %d streams (peak in flight per connection: %s)", first.Streams, peakText(rows))
		}
		shape := "max throughput, closed loop, " + conns
		if first.OpenLoop {
			shape = fmt.Sprintf("%g req/s open loop, %s", first.Rate, conns)
		}
		header := []string{"scenario", "req/s", "p50", "p90", "p99", "p99.9", "max", "+p50", "+p99", "CPU µs/req", "RSS MiB", "errors"}
		var lines [][]string
		for _, r := range rows {
			cpu, rss := "-", "-"
			if r.Proxies > 0 {
				cpu = strconv.FormatFloat(r.ProxyCPUPerRequest, 'f', 1, 64)
				rss = strconv.FormatFloat(float64(r.ProxyPeakRSSBytes)/(1<<20), 'f', 1, 64)
			}
			lat := []string{ms(r.P50US), ms(r.P90US), ms(r.P99US), ms(r.P999US), ms(r.MaxUS)}
			if r.Requests == r.ErrorResponses {
				// No successful response: 0.000 would read as instant service.
				lat = []string{"-", "-", "-", "-", "-"}
			}
			lines = append(lines, append(append([]string{r.Scenario, strconv.FormatFloat(r.ActualQPS, 'f', 0, 64)}, lat...),
				signedMS(r.AddedP50US), signedMS(r.AddedP99US), cpu, rss, errText(r)))
		}
		bw.printf("\n")
		if markdown {
			bw.printf("## %s (%s)\n\n", phase, shape)
			bw.printf("| %s |\n|%s\n", strings.Join(header, " | "), strings.Repeat("---|", len(header)))
			for _, l := range lines {
				bw.printf("| %s |\n", strings.Join(l, " | "))
			}
		} else {
			bw.printf("%s (%s)\n", phase, shape)
			tw := tabwriter.NewWriter(bw, 0, 0, 2, ' ', tabwriter.AlignRight)
			for _, l := range append([][]string{header}, lines...) {
				fmt.Fprintf(tw, "%s\t\n", strings.Join(l, "\t"))
			}
			if err := tw.Flush(); err != nil {
				return fmt.Errorf("write table: %w", err)
			}
		}
		list := func(title string, items []string) {
			if len(items) == 0 {
				return
			}
			bw.printf("\n%s\n", title)
			for _, l := range items {
				if markdown {
					bw.printf("- %s\n", l)
				} else {
					bw.printf("  %s\n", l)
				}
			}
		}
		list("Error responses (status ≥ 400: counted in req/s and errors, their latency kept out of the percentile columns, which are of successes only):", errorResponses(rows))
		list("Load generator saturated (its CPU time over the measured windows ÷ its CPUs ≥ 90%): these rows' req/s and latency are the load generator's limit as much as the proxy's; compare their CPU µs/req, or give the load more CPUs:", clientBound(rows))
		list("Ratios vs haproxy (x / haproxy; a two-hop scenario / the haproxy two-hop scenario of the same TLS; below 1 is better except req/s):", haproxyRatios(rows))
		list("Over the Go floor (x / floor, the minimal Go relay: what the proxy costs above what Go and the kernel charge; one-hop scenarios):", floorRatios(rows))
		list("TLS hop cost (x-2hop-tls − x-2hop; CPU of both proxies per request, latency percentiles):", tlsHopCost(rows))
	}
	if len(rep.Skipped) > 0 {
		bw.printf("\nSkipped:\n")
		for _, s := range rep.Skipped {
			bw.printf("- %s: %s\n", s.Scenario, s.Reason)
		}
	}
	return bw.err
}

// peakText lists the scenarios' PeakStreams: one number when they agree.
func peakText(rows []*PhaseResult) string {
	var peaks []string
	same := true
	for _, r := range rows {
		peaks = append(peaks, r.Scenario+" "+strconv.Itoa(r.PeakStreams))
		same = same && r.PeakStreams == rows[0].PeakStreams
	}
	if same {
		return strconv.Itoa(rows[0].PeakStreams)
	}
	return strings.Join(peaks, ", ")
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func errText(r *PhaseResult) string {
	if r.ErrorCount == 0 {
		return "0"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(r.Errors)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, r.Errors[k]))
	}
	return strings.Join(parts, ",")
}

// errorResponses describes, per scenario that got error responses, how many of its
// responses they were, by status class, and their own latency.
func errorResponses(rows []*PhaseResult) []string {
	var out []string
	for _, r := range rows {
		if r.ErrorResponses == 0 {
			continue
		}
		var classes []string
		for _, k := range slices.Sorted(maps.Keys(r.StatusClasses)) {
			classes = append(classes, fmt.Sprintf("%s=%d", k, r.StatusClasses[k]))
		}
		line := fmt.Sprintf("%s: %d of %d responses (%s)", r.Scenario, r.ErrorResponses, r.Requests, strings.Join(classes, ", "))
		if r.ErrorP50US != nil && r.ErrorP99US != nil {
			line += fmt.Sprintf("; error latency p50 %s ms, p99 %s ms", ms(*r.ErrorP50US), ms(*r.ErrorP99US))
		}
		if r.ErrorResponses == r.Requests {
			line += "; no successful response, so the latency columns show -"
		}
		out = append(out, line)
	}
	return out
}

func phaseOrder(rep *Report) []string {
	var out []string
	for _, r := range rep.Results {
		if !slices.Contains(out, r.Phase) {
			out = append(out, r.Phase)
		}
	}
	return out
}

func phaseRows(rep *Report, phase string) []*PhaseResult {
	var rows []*PhaseResult
	for _, r := range rep.Results {
		if r.Phase == phase {
			rows = append(rows, r)
		}
	}
	return rows
}

// haproxyPeer is the haproxy scenario a scenario is compared with: the one with as
// many hops and the same TLS (meshd-2hop with haproxy-2hop, meshd-2hop-tls with
// haproxy-2hop-tls), haproxy for the others. The haproxy scenarios themselves have
// none.
func haproxyPeer(scenario string) string {
	switch scenario {
	case ScenarioHAProxy, ScenarioHAProxy2Hop, ScenarioHAProxy2HopTLS:
		return ""
	case ScenarioMeshd2Hop:
		return ScenarioHAProxy2Hop
	case ScenarioMeshd2HopTLS:
		return ScenarioHAProxy2HopTLS
	}
	return ScenarioHAProxy
}

func haproxyRatios(rows []*PhaseResult) []string {
	byName := map[string]*PhaseResult{}
	for _, r := range rows {
		byName[r.Scenario] = r
	}
	ratio := func(a, b float64) string {
		if a <= 0 || b <= 0 {
			return "-" // a ratio of noise-level (negative) added latencies means nothing
		}
		return strconv.FormatFloat(a/b, 'f', 2, 64)
	}
	addRatio := func(a, b *float64) string {
		if a == nil || b == nil {
			return "-"
		}
		return ratio(*a, *b)
	}
	var out []string
	for _, r := range rows {
		peer := haproxyPeer(r.Scenario)
		hp := byName[peer]
		if r.Proxies == 0 || peer == "" {
			continue
		}
		name := r.Scenario
		if hp == nil && peer != ScenarioHAProxy {
			// Without its two-hop peer a two-hop scenario is set against haproxy's one
			// hop, as before haproxy-2hop existed, and says so.
			if hp = byName[ScenarioHAProxy]; hp != nil {
				peer = ScenarioHAProxy
			}
		}
		if hp == nil {
			continue
		}
		if peer != ScenarioHAProxy || r.Proxies != hp.Proxies {
			name += " / " + peer
		}
		out = append(out, fmt.Sprintf("%s: req/s %s, CPU/req %s%s, added p50 %s, added p99 %s, RSS %s", name,
			ratio(r.ActualQPS, hp.ActualQPS), ratio(r.ProxyCPUPerRequest, hp.ProxyCPUPerRequest),
			roundSpread(r.RoundProxyCPUPerReq, hp.RoundProxyCPUPerReq),
			addRatio(r.AddedP50US, hp.AddedP50US), addRatio(r.AddedP99US, hp.AddedP99US),
			ratio(float64(r.ProxyPeakRSSBytes), float64(hp.ProxyPeakRSSBytes))))
	}
	return out
}

// roundSpread is " (by round: median M, lo-hi)" of the per-round ratios a[i]/b[i] when
// both rows have the same three or more rounds with CPU figures: what one run's ratio
// is worth on a machine whose speed moves between rounds; "" otherwise.
func roundSpread(a, b []float64) string {
	if len(a) < 3 || len(a) != len(b) {
		return ""
	}
	var rs []float64
	for i := range a {
		if a[i] > 0 && b[i] > 0 {
			rs = append(rs, a[i]/b[i])
		}
	}
	if len(rs) < 3 {
		return ""
	}
	slices.Sort(rs)
	med := rs[len(rs)/2]
	if len(rs)%2 == 0 {
		med = (rs[len(rs)/2-1] + rs[len(rs)/2]) / 2
	}
	return fmt.Sprintf(" (by round: median %.2f, %.2f-%.2f)", med, rs[0], rs[len(rs)-1])
}

// floorRatios sets each one-hop proxy scenario against ScenarioFloor: CPU per request
// and throughput, and the added p50 (latency over direct).
func floorRatios(rows []*PhaseResult) []string {
	var fl *PhaseResult
	for _, r := range rows {
		if r.Scenario == ScenarioFloor {
			fl = r
		}
	}
	if fl == nil || fl.ProxyCPUPerRequest <= 0 {
		return nil
	}
	ratio := func(a, b float64) string {
		if a <= 0 || b <= 0 {
			return "-"
		}
		return strconv.FormatFloat(a/b, 'f', 2, 64)
	}
	var out []string
	for _, r := range rows {
		if r.Scenario == ScenarioFloor || r.Proxies != 1 {
			continue
		}
		p50 := "-"
		if r.AddedP50US != nil && fl.AddedP50US != nil {
			p50 = ratio(*r.AddedP50US, *fl.AddedP50US)
		}
		out = append(out, fmt.Sprintf("%s: CPU/req %s (%+.1f µs), req/s %s, added p50 %s", r.Scenario,
			ratio(r.ProxyCPUPerRequest, fl.ProxyCPUPerRequest), r.ProxyCPUPerRequest-fl.ProxyCPUPerRequest,
			ratio(r.ActualQPS, fl.ActualQPS), p50))
	}
	return out
}

// tlsHopCost says, for each peer whose two-hop scenario ran with and without TLS in
// the phase, what the TLS hop added: CPU µs per request of the two proxies together,
// and the p50 and p99 latency; then meshd's added CPU over haproxy's.
func tlsHopCost(rows []*PhaseResult) []string {
	byName := map[string]*PhaseResult{}
	for _, r := range rows {
		byName[r.Scenario] = r
	}
	cpu := map[string]float64{}
	var out []string
	for _, pair := range [][2]string{{ScenarioMeshd2Hop, ScenarioMeshd2HopTLS}, {ScenarioHAProxy2Hop, ScenarioHAProxy2HopTLS}} {
		plain, tls := byName[pair[0]], byName[pair[1]]
		if plain == nil || tls == nil || plain.Requests == 0 || tls.Requests == 0 {
			continue
		}
		d := tls.ProxyCPUPerRequest - plain.ProxyCPUPerRequest
		cpu[pair[0]] = d
		out = append(out, fmt.Sprintf("%s: CPU %+.1f µs/req (%.1f → %.1f), p50 %+.3f ms, p99 %+.3f ms, req/s %s → %s", pair[1], d,
			plain.ProxyCPUPerRequest, tls.ProxyCPUPerRequest, (tls.P50US-plain.P50US)/1000, (tls.P99US-plain.P99US)/1000,
			strconv.FormatFloat(plain.ActualQPS, 'f', 0, 64), strconv.FormatFloat(tls.ActualQPS, 'f', 0, 64)))
	}
	m, okM := cpu[ScenarioMeshd2Hop]
	h, okH := cpu[ScenarioHAProxy2Hop]
	if okM && okH {
		r := "-" // a ratio of noise-level (negative) costs means nothing
		if m > 0 && h > 0 {
			r = strconv.FormatFloat(m/h, 'f', 2, 64)
		}
		out = append(out, "CPU the TLS hop adds, meshd / haproxy: "+r)
	}
	return out
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

func (e *errWriter) printf(format string, a ...any) { fmt.Fprintf(e, format, a...) }

// WriteReport writes report.json, report.md, fortio/*.json and hlog/*.hlog (one per
// scenario and phase, see writeExports), latency-*.svg/png and sweep.svg/png into
// dir (created if needed) and returns the files written.
func WriteReport(dir string, rep *Report) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("report dir %s: %w", dir, err)
	}
	var files []string
	write := func(name string, fn func(io.Writer) error) error {
		p := filepath.Join(dir, name)
		f, err := os.Create(p)
		if err != nil {
			return fmt.Errorf("create %s: %w", p, err)
		}
		if err := fn(f); err != nil {
			f.Close()
			return fmt.Errorf("write %s: %w", p, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("close %s: %w", p, err)
		}
		files = append(files, p)
		return nil
	}
	if err := write("report.json", func(w io.Writer) error { return WriteJSON(w, rep) }); err != nil {
		return files, err
	}
	if err := write("report.md", func(w io.Writer) error { return WriteTable(w, rep, true) }); err != nil {
		return files, err
	}
	exports, err := writeExports(dir, rep)
	files = append(files, exports...)
	if err != nil {
		return files, err
	}
	plots, err := writePlots(dir, rep)
	files = append(files, plots...)
	return files, err
}
