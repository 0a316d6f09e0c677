package bench

import (
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"slices"
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
// file per phase) and, when some scenario was measured under two or more phases,
// sweep.svg/png (p50 and p99 against achieved rate).
func writePlots(dir string, rep *Report) ([]string, error) {
	var files []string
	scen := scenarioOrder(rep)
	for _, phase := range phaseOrder(rep) {
		p := plot.New()
		p.Title.Text = fmt.Sprintf("Latency by percentile: %s (%s)", phase, protoText(rep.Proto, phaseRows(rep, phase)))
		p.X.Label.Text = "percentile"
		p.X.Tick.Marker = percentileTicks
		p.Y.Label.Text = "latency (ms)"
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
		p.Legend.Top = true
		p.Legend.Left = true
		p.Add(plotter.NewGrid())
		for _, r := range phaseRows(rep, phase) {
			h := r.Histogram()
			if h == nil || h.Count() == 0 {
				continue
			}
			l, err := plotter.NewLine(percentileCurve(h))
			if err != nil {
				return files, fmt.Errorf("latency plot %s %s: %w", phase, r.Scenario, err)
			}
			c, dashes := style(slices.Index(scen, r.Scenario))
			l.Color, l.Width, l.Dashes = c, vg.Points(1.5), dashes
			p.Add(l)
			p.Legend.Add(r.Scenario, l)
		}
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

func writeSweep(dir string, rep *Report, scen []string) ([]string, error) {
	type series struct {
		scenario string
		conns    int
		rows     []*PhaseResult
	}
	group := func(byConns bool) []*series {
		var all []*series
		for _, r := range rep.Results {
			if r.Requests == 0 {
				continue
			}
			conns := 0
			if byConns {
				conns = r.Connections
			}
			i := slices.IndexFunc(all, func(s *series) bool { return s.scenario == r.Scenario && s.conns == conns })
			if i < 0 {
				all = append(all, &series{scenario: r.Scenario, conns: conns})
				i = len(all) - 1
			}
			all[i].rows = append(all[i].rows, r)
		}
		return all
	}
	longest := func(all []*series) int {
		n := 0
		for _, s := range all {
			n = max(n, len(s.rows))
		}
		return n
	}
	// A sweep has several rates per connection count: one line per scenario and
	// count. Otherwise (the default run: a fixed rate on few connections and max
	// throughput on many) one line per scenario joins its phases.
	all := group(true)
	distinct := map[string]bool{}
	for _, s := range all {
		distinct[s.scenario] = true
	}
	multiConn := longest(all) >= 2 && len(distinct) < len(all)
	if longest(all) < 2 {
		all = group(false)
	}
	if longest(all) < 2 {
		return nil, nil
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Latency vs achieved rate (%s): p99 solid, p50 dashed", protoText(rep.Proto, rep.Results))
	p.X.Label.Text = "achieved rate (req/s)"
	p.Y.Label.Text = "latency (ms)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	for si, s := range all {
		// Order by offered load; closed-loop (max) points go last.
		slices.SortFunc(s.rows, func(a, b *PhaseResult) int {
			ka, kb := a.Rate, b.Rate
			if ka == 0 {
				ka = math.Inf(1)
			}
			if kb == 0 {
				kb = math.Inf(1)
			}
			switch {
			case ka < kb:
				return -1
			case ka > kb:
				return 1
			}
			return 0
		})
		var p50, p99 plotter.XYs
		for _, r := range s.rows {
			p50 = append(p50, plotter.XY{X: r.ActualQPS, Y: math.Max(r.P50US/1000, 0.001)})
			p99 = append(p99, plotter.XY{X: r.ActualQPS, Y: math.Max(r.P99US/1000, 0.001)})
		}
		c, _ := style(slices.Index(scen, s.scenario))
		name := s.scenario
		if multiConn {
			c, _ = style(si)
			name = fmt.Sprintf("%s c%d", s.scenario, s.conns)
		}
		l99, pts99, err := plotter.NewLinePoints(p99)
		if err != nil {
			return nil, fmt.Errorf("sweep plot %s: %w", name, err)
		}
		l50, pts50, err := plotter.NewLinePoints(p50)
		if err != nil {
			return nil, fmt.Errorf("sweep plot %s: %w", name, err)
		}
		l99.Color, pts99.Color, l50.Color, pts50.Color = c, c, c, c
		l99.Width = vg.Points(1.5)
		l50.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		pts99.Shape, pts50.Shape = draw.CircleGlyph{}, draw.CircleGlyph{}
		p.Add(l99, pts99, l50, pts50)
		p.Legend.Add(name, l99, pts99)
	}
	return savePlot(p, dir, "sweep")
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
