package bench

import (
	"encoding/json"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// ReadReport reads a report.json written by WriteReport.
func ReadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read report: %w", err)
	}
	var rep Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return nil, fmt.Errorf("report %s: %w", path, err)
	}
	if rep.Harness != "meshbench" {
		return nil, fmt.Errorf("report %s: harness %q, want a meshbench report.json", path, rep.Harness)
	}
	return &rep, nil
}

// DiffMetric is one figure compared across reports.
type DiffMetric struct {
	Name string
	Unit string
	// LowerBetter is true for costs (latency, CPU, memory), false for req/s.
	LowerBetter bool
	value       func(*PhaseResult) (float64, bool)
}

// DiffMetrics are the figures `meshbench compare` sets side by side.
var DiffMetrics = []DiffMetric{
	{"req/s", "", false, func(r *PhaseResult) (float64, bool) { return r.ActualQPS, r.Requests > 0 }},
	{"p50", "ms", true, func(r *PhaseResult) (float64, bool) { return r.P50US / 1000, r.Requests > r.ErrorResponses }},
	{"p99", "ms", true, func(r *PhaseResult) (float64, bool) { return r.P99US / 1000, r.Requests > r.ErrorResponses }},
	{"CPU/req", "µs", true, func(r *PhaseResult) (float64, bool) { return r.ProxyCPUPerRequest, r.Proxies > 0 && r.Requests > 0 }},
	{"RSS", "MiB", true, func(r *PhaseResult) (float64, bool) {
		return float64(r.ProxyPeakRSSBytes) / (1 << 20), r.Proxies > 0 && r.ProxyPeakRSSBytes > 0
	}},
	// The load generator's busiest round (PhaseResult.LoadgenBusyMax): at 90% and above
	// a run's figures are the client's limit as much as the proxy's. Absent from
	// reports written before it was measured.
	{"load busy", "%", true, func(r *PhaseResult) (float64, bool) { return 100 * r.LoadgenBusyMax, r.LoadgenCPUs > 0 }},
}

// DiffRow is one scenario under one phase, with each metric's value per report
// (NaN where that report lacks it).
type DiffRow struct {
	Scenario, Phase string
	Values          [][]float64 // [metric][report]
}

// Diff is two or more reports set side by side; the first is the reference the
// others' ratios and differences are taken against.
type Diff struct {
	Names []string // one per report, e.g. the file paths
	Rows  []DiffRow
}

// DiffReports sets reps side by side: every scenario and phase of any report, in
// the order they first appear.
func DiffReports(names []string, reps []*Report) (*Diff, error) {
	if len(reps) < 2 || len(names) != len(reps) {
		return nil, fmt.Errorf("compare needs two or more reports, got %d", len(reps))
	}
	d := &Diff{Names: names}
	index := map[[2]string]int{}
	for ri, rep := range reps {
		for _, r := range rep.Results {
			k := [2]string{r.Scenario, r.Phase}
			i, ok := index[k]
			if !ok {
				i = len(d.Rows)
				index[k] = i
				row := DiffRow{Scenario: r.Scenario, Phase: r.Phase, Values: make([][]float64, len(DiffMetrics))}
				for m := range row.Values {
					row.Values[m] = make([]float64, len(reps))
					for j := range row.Values[m] {
						row.Values[m][j] = math.NaN()
					}
				}
				d.Rows = append(d.Rows, row)
			}
			for m, dm := range DiffMetrics {
				if v, ok := dm.value(r); ok {
					d.Rows[i].Values[m][ri] = v
				}
			}
		}
	}
	return d, nil
}

// Ratio is value j over the reference (report 0); NaN when either is missing or
// the reference is 0.
func (r DiffRow) Ratio(metric, j int) float64 {
	a, b := r.Values[metric][0], r.Values[metric][j]
	if math.IsNaN(a) || math.IsNaN(b) || a == 0 {
		return math.NaN()
	}
	return b / a
}

func letter(i int) string { return string(rune('A' + i%26)) }

func num(v float64, prec int) string {
	if math.IsNaN(v) {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', prec, 64)
}

// WriteDiff writes d as a table: per scenario and phase, each metric's value in
// every report, then each other report's ratio to the first (B/A) and difference
// (B−A). markdown selects a Markdown table.
func WriteDiff(w io.Writer, d *Diff, markdown bool) error {
	bw := &errWriter{w: w}
	if markdown {
		bw.printf("# meshbench compare\n\n")
	}
	for i, n := range d.Names {
		if markdown {
			bw.printf("- %s = %s\n", letter(i), n)
		} else {
			bw.printf("%s = %s\n", letter(i), n)
		}
	}
	bw.printf("\nRatios and differences are of each report against A; below 1 is better except req/s. Latency in ms, CPU in µs per request, RSS in MiB; - where a report lacks the figure.\n\n")
	header := []string{"scenario", "phase", "metric"}
	for i := range d.Names {
		header = append(header, letter(i))
	}
	for i := 1; i < len(d.Names); i++ {
		header = append(header, letter(i)+"/A", letter(i)+"−A")
	}
	var lines [][]string
	for _, r := range d.Rows {
		for m, dm := range DiffMetrics {
			prec := 3
			if dm.Name == "req/s" {
				prec = 0
			} else if dm.Unit != "ms" {
				prec = 1
			}
			l := []string{r.Scenario, r.Phase, dm.Name}
			for j := range d.Names {
				l = append(l, num(r.Values[m][j], prec))
			}
			for j := 1; j < len(d.Names); j++ {
				diff := r.Values[m][j] - r.Values[m][0]
				ds := "-"
				if !math.IsNaN(diff) {
					ds = strconv.FormatFloat(diff, 'f', prec, 64)
					if diff >= 0 {
						ds = "+" + ds
					}
				}
				l = append(l, num(r.Ratio(m, j), 2), ds)
			}
			lines = append(lines, l)
		}
	}
	if markdown {
		bw.printf("| %s |\n|%s\n", strings.Join(header, " | "), strings.Repeat("---|", len(header)))
		for _, l := range lines {
			bw.printf("| %s |\n", strings.Join(l, " | "))
		}
		return bw.err
	}
	tw := tabwriter.NewWriter(bw, 0, 0, 2, ' ', tabwriter.AlignRight)
	for _, l := range append([][]string{header}, lines...) {
		fmt.Fprintf(tw, "%s\t\n", strings.Join(l, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write compare table: %w", err)
	}
	return bw.err
}

// diffPlot draws each metric's ratio to A as grouped bars, one group per scenario
// and phase, one bar per metric and later report; a line at 1 marks A.
func diffPlot(d *Diff) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Ratio to A (below 1 is better except req/s)"
	p.Y.Label.Text = "ratio to A"
	p.X.Label.Text = "scenario · phase"
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	var groups []string
	for _, r := range d.Rows {
		groups = append(groups, r.Scenario+" · "+r.Phase)
	}
	nbars := len(DiffMetrics) * (len(d.Names) - 1)
	width := vg.Points(math.Max(3, math.Min(14, 360/float64(max(1, nbars*len(groups))))))
	k, hi := 0, 1.0
	for j := 1; j < len(d.Names); j++ {
		for m, dm := range DiffMetrics {
			vals := make(plotter.Values, len(d.Rows))
			for i, r := range d.Rows {
				v := r.Ratio(m, j)
				if math.IsNaN(v) {
					v = 0 // no bar: the figure is missing
				}
				vals[i] = v
				hi = math.Max(hi, v)
			}
			b, err := plotter.NewBarChart(vals, width)
			if err != nil {
				return nil, fmt.Errorf("compare plot: %w", err)
			}
			b.Color = plotutil.Color(m)
			b.LineStyle.Width = 0
			if j > 1 {
				// Later reports' bars are the same metric colours, lighter.
				r, g, bl, _ := plotutil.Color(m).RGBA()
				fade := func(c uint32) uint8 { return uint8((c>>8 + 255*uint32(j-1)) / uint32(j)) }
				b.Color = color.RGBA{R: fade(r), G: fade(g), B: fade(bl), A: 255}
			}
			b.Offset = vg.Length(float64(k)-float64(nbars-1)/2) * width
			p.Add(b)
			name := dm.Name
			if len(d.Names) > 2 {
				name = letter(j) + " " + name
			}
			p.Legend.Add(name, b)
			k++
		}
	}
	one, err := plotter.NewLine(plotter.XYs{{X: -0.5, Y: 1}, {X: float64(len(groups)) - 0.5, Y: 1}})
	if err != nil {
		return nil, fmt.Errorf("compare plot: %w", err)
	}
	one.Color = color.Black
	one.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	p.Add(one)
	p.Legend.Add("A (= 1)", one)
	// Leave a band above the tallest bar for the legend (top right), as placeLegend
	// does on the log axes.
	f := math.Min((float64(nbars+1)*13+12)/330, 0.7)
	p.Y.Min, p.Y.Max = 0, hi/(1-f)
	p.NominalX(groups...)
	p.X.Tick.Label.Rotation = math.Pi / 8
	p.X.Tick.Label.XAlign, p.X.Tick.Label.YAlign = -0.9, -0.5
	return p, nil
}

// WriteDiffReport writes compare.md and compare.svg/png into dir and returns the
// files written.
func WriteDiffReport(dir string, d *Diff) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("compare dir %s: %w", dir, err)
	}
	md := filepath.Join(dir, "compare.md")
	f, err := os.Create(md)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", md, err)
	}
	if err := WriteDiff(f, d, true); err != nil {
		f.Close()
		return nil, fmt.Errorf("write %s: %w", md, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("close %s: %w", md, err)
	}
	p, err := diffPlot(d)
	if err != nil {
		return []string{md}, err
	}
	pics, err := savePlot(p, dir, "compare")
	return append([]string{md}, pics...), err
}
