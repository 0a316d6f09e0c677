package bench

import (
	"cmp"
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	// Registers the svg and png formats for Plot.Save.
	_ "gonum.org/v1/plot/vg/vgimg"
	_ "gonum.org/v1/plot/vg/vgsvg"
)

// percentile axis: x = -log10(1 - p/100), so 90% sits at 1, 99% at 2, 99.9% at 3.
var percentileTicks = plot.ConstantTicks([]plot.Tick{
	{Value: 0, Label: "0%"}, {Value: math.Log10(2), Label: "50%"}, {Value: 1, Label: "90%"},
	{Value: 2, Label: "99%"}, {Value: 3, Label: "99.9%"}, {Value: 4, Label: "99.99%"}, {Value: 5, Label: "99.999%"},
})

// percentileCurve samples h along the percentile axis up to the resolution its count
// allows, ending at the maximum.
func percentileCurve(h *Histogram) plotter.XYs {
	n := h.Count()
	if n == 0 {
		return nil
	}
	top := math.Log10(float64(n))
	var xys plotter.XYs
	for x := 0.0; x < top; x += 0.02 {
		p := 100 * (1 - math.Pow(10, -x))
		xys = append(xys, plotter.XY{X: x, Y: msOf(h.Percentile(p))})
	}
	xys = append(xys, plotter.XY{X: top, Y: msOf(h.Max())})
	return xys
}

func msOf[T ~int64](d T) float64 { return math.Max(float64(d)/1e6, 0.001) }

func slug(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return '-'
	}, s)
}

// style is scenario i's line: the palette's colours, and in the latency plots dashed
// once they repeat (a --tls run has ten scenarios, the palette seven colours).
func style(i int) (color.Color, []vg.Length) {
	return plotutil.Color(i), plotutil.Dashes(i / len(plotutil.DefaultColors))
}

// writePlots writes latency-<phase>.svg/png (percentile curves per scenario, one
// file per phase) and, for a --sweep run, sweep.svg/png (p50 and p99 against
// achieved rate).
func writePlots(dir string, rep *Report) ([]string, error) {
	var files []string
	scen := scenarioOrder(rep)
	for _, phase := range phaseOrder(rep) {
		p := plot.New()
		p.Title.Text = fmt.Sprintf("Latency by percentile: %s (%s)", phase, protoText(rep.Proto, phaseRows(rep, phase)))
		p.X.Label.Text = "percentile"
		p.X.Tick.Marker = percentileTicks
		p.Y.Label.Text = "latency (ms)"
		if rows := phaseRows(rep, phase); len(rows) > 0 && rows[0].OpenLoop {
			p.Y.Label.Text = "latency from the scheduled send (ms)"
		}
		p.Y.Scale = plot.LogScale{}
		p.Add(plotter.NewGrid())
		entries, lo, hi := 0, math.Inf(1), 0.0
		for _, r := range phaseRows(rep, phase) {
			h := r.Histogram()
			if h == nil || h.Count() == 0 {
				continue
			}
			entries++
			lo, hi = math.Min(lo, msOf(h.Min())), math.Max(hi, msOf(h.Max()))
			l, err := plotter.NewLine(percentileCurve(h))
			if err != nil {
				return files, fmt.Errorf("latency plot %s %s: %w", phase, r.Scenario, err)
			}
			c, dashes := style(slices.Index(scen, r.Scenario))
			l.Color, l.Width, l.Dashes = c, vg.Points(1.5), dashes
			p.Add(l)
			p.Legend.Add(r.Scenario, l)
		}
		if entries == 0 {
			continue // no successful response in the phase: no curve to draw
		}
		placeLegend(p, entries, lo, hi)
		written, err := savePlot(p, dir, "latency-"+slug(phase))
		files = append(files, written...)
		if err != nil {
			return files, err
		}
	}
	written, err := writeSweep(dir, rep, scen)
	return append(files, written...), err
}

func scenarioOrder(rep *Report) []string {
	var out []string
	for _, r := range rep.Results {
		if !slices.Contains(out, r.Scenario) {
			out = append(out, r.Scenario)
		}
	}
	return out
}

// sweepSeries groups a sweep's open-loop results into one line per scenario and
// connection count, ordered by offered rate, and its closed-loop (max) results into
// separate points: a max point is another kind of measurement and is never joined
// to the fixed-rate line.
type sweepSeries struct {
	scenario string
	conns    int
	open     []*PhaseResult // by rate
	max      []*PhaseResult
}

func sweepGroups(rep *Report) []*sweepSeries {
	var all []*sweepSeries
	for _, r := range rep.Results {
		if r.Requests == 0 || r.Requests == r.ErrorResponses {
			continue // no successful response: no latency to draw
		}
		i := slices.IndexFunc(all, func(s *sweepSeries) bool { return s.scenario == r.Scenario && s.conns == r.Connections })
		if i < 0 {
			all = append(all, &sweepSeries{scenario: r.Scenario, conns: r.Connections})
			i = len(all) - 1
		}
		if r.Rate > 0 {
			all[i].open = append(all[i].open, r)
		} else {
			all[i].max = append(all[i].max, r)
		}
	}
	for _, s := range all {
		slices.SortFunc(s.open, func(a, b *PhaseResult) int { return cmp.Compare(a.Rate, b.Rate) })
	}
	return all
}

// writeSweep draws sweep.svg/png, only for a --sweep run (Report.Sweep): p99 solid
// and p50 dashed against the achieved rate, one line per scenario and connection
// count over its fixed rates, its max-throughput point as a separate marker.
func writeSweep(dir string, rep *Report, scen []string) ([]string, error) {
	if !rep.Sweep {
		return nil, nil
	}
	p, _, err := sweepPlot(rep, scen)
	if err != nil || p == nil {
		return nil, err
	}
	return savePlot(p, dir, "sweep")
}

// sweepPlot builds the sweep picture and returns its legend's entries.
func sweepPlot(rep *Report, scen []string) (*plot.Plot, []string, error) {
	all := sweepGroups(rep)
	if len(all) == 0 {
		return nil, nil, nil
	}
	distinct := map[string]bool{}
	for _, s := range all {
		distinct[s.scenario] = true
	}
	multiConn := len(distinct) < len(all)
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Latency vs achieved rate (%s)", protoText(rep.Proto, rep.Results))
	p.X.Label.Text = "achieved rate (req/s)"
	p.Y.Label.Text = "latency (ms)"
	p.Y.Scale = plot.LogScale{}
	p.Add(plotter.NewGrid())
	var legend []string
	addLegend := func(name string, th ...plot.Thumbnailer) {
		p.Legend.Add(name, th...)
		legend = append(legend, name)
	}
	lo, hi := math.Inf(1), 0.0
	for si, s := range all {
		c, _ := style(slices.Index(scen, s.scenario))
		name := s.scenario
		if multiConn {
			c, _ = style(si)
			name = fmt.Sprintf("%s c%d", s.scenario, s.conns)
		}
		pts := func(rows []*PhaseResult) (p50, p99 plotter.XYs) {
			for _, r := range rows {
				y50, y99 := math.Max(r.P50US/1000, 0.001), math.Max(r.P99US/1000, 0.001)
				lo, hi = math.Min(lo, y50), math.Max(hi, y99)
				p50 = append(p50, plotter.XY{X: r.ActualQPS, Y: y50})
				p99 = append(p99, plotter.XY{X: r.ActualQPS, Y: y99})
			}
			return p50, p99
		}
		var thumb []plot.Thumbnailer
		if len(s.open) > 0 {
			p50, p99 := pts(s.open)
			l99, pts99, err := plotter.NewLinePoints(p99)
			if err != nil {
				return nil, nil, fmt.Errorf("sweep plot %s: %w", name, err)
			}
			l50, pts50, err := plotter.NewLinePoints(p50)
			if err != nil {
				return nil, nil, fmt.Errorf("sweep plot %s: %w", name, err)
			}
			l99.Color, pts99.Color, l50.Color, pts50.Color = c, c, c, c
			l99.Width = vg.Points(1.5)
			l50.Dashes = p50Dashes
			pts99.Shape, pts50.Shape = draw.CircleGlyph{}, draw.CircleGlyph{}
			p.Add(l99, pts99, l50, pts50)
			thumb = append(thumb, l99, pts99)
		}
		if len(s.max) > 0 {
			p50, p99 := pts(s.max)
			m99, err := plotter.NewScatter(p99)
			if err != nil {
				return nil, nil, fmt.Errorf("sweep plot %s: %w", name, err)
			}
			m50, err := plotter.NewScatter(p50)
			if err != nil {
				return nil, nil, fmt.Errorf("sweep plot %s: %w", name, err)
			}
			m99.Color, m50.Color = c, c
			m99.Shape, m50.Shape = draw.BoxGlyph{}, draw.BoxGlyph{}
			m99.Radius, m50.Radius = vg.Points(3.5), vg.Points(2.5)
			p.Add(m99, m50)
			if len(thumb) == 0 {
				thumb = append(thumb, m99)
			}
		}
		addLegend(name, thumb...)
	}
	// The line styles, once, in black: the dashed p50 is in the legend, and squares
	// are max-throughput (closed-loop) points, drawn apart from the fixed-rate lines.
	solid, err := plotter.NewLine(plotter.XYs{})
	if err != nil {
		return nil, nil, err
	}
	solid.Color, solid.Width = color.Black, vg.Points(1.5)
	dashed, err := plotter.NewLine(plotter.XYs{})
	if err != nil {
		return nil, nil, err
	}
	dashed.Color, dashed.Dashes = color.Black, p50Dashes
	addLegend("p99 (solid)", solid)
	addLegend("p50 (dashed)", dashed)
	sq, err := plotter.NewScatter(plotter.XYs{{}})
	if err != nil {
		return nil, nil, err
	}
	sq.Shape, sq.Color = draw.BoxGlyph{}, color.Black
	addLegend("max throughput (closed loop)", sq)
	placeLegend(p, len(legend), lo, hi)
	return p, legend, nil
}

var p50Dashes = []vg.Length{vg.Points(4), vg.Points(3)}

// placeLegend puts the legend top left and raises the log-scale y axis so that the
// band the legend covers holds no data: the data end below it whatever the x.
func placeLegend(p *plot.Plot, entries int, lo, hi float64) {
	p.Legend.Top, p.Legend.Left = true, true
	if lo <= 0 || hi <= 0 || math.IsInf(lo, 0) {
		return
	}
	if hi <= lo {
		hi = lo * 2
	}
	// The plotting area of a 15 cm plot is about 330 pt high; each legend row takes
	// about 13 pt. The legend band's share f of the axis must lie above hi.
	f := math.Min((float64(entries)*13+12)/330, 0.7)
	lo = lo / 1.2
	p.Y.Min = lo
	p.Y.Max = hi * math.Pow(hi/lo, f/(1-f))
	p.Y.Tick.Marker = logTicks{}
}

// logTicks labels a log axis at 1, 2 and 5 × 10^k when it spans under two decades
// (so a narrow range still gets two or more labels, not the single power of ten
// plot.LogTicks would give), else at the powers of ten, with unlabelled minor ticks.
type logTicks struct{}

func (logTicks) Ticks(min, max float64) []plot.Tick {
	if min <= 0 || max <= min {
		return nil
	}
	fine := math.Log10(max/min) < 2
	var ticks []plot.Tick
	for e := math.Floor(math.Log10(min)); e <= math.Ceil(math.Log10(max)); e++ {
		base := math.Pow(10, e)
		for m := 1; m < 10; m++ {
			v := float64(m) * base
			if v < min || v > max {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || fine && (m == 2 || m == 5) {
				t.Label = strconv.FormatFloat(v, 'g', 3, 64)
			}
			ticks = append(ticks, t)
		}
	}
	return ticks
}

func savePlot(p *plot.Plot, dir, base string) ([]string, error) {
	var files []string
	for _, ext := range []string{".svg", ".png"} {
		f := filepath.Join(dir, base+ext)
		if err := p.Save(24*vg.Centimeter, 15*vg.Centimeter, f); err != nil {
			return files, fmt.Errorf("save %s: %w", f, err)
		}
		files = append(files, f)
	}
	return files, nil
}

// protoText is the protocol for a plot title, with the streams per connection when
// the rows share a number above 1.
func protoText(proto string, rows []*PhaseResult) string {
	if len(rows) == 0 || rows[0].Streams <= 1 {
		return proto
	}
	for _, r := range rows {
		if r.Streams != rows[0].Streams {
			return proto
		}
	}
	return fmt.Sprintf("%s, %d streams/connection", proto, rows[0].Streams)
}
