package report

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Size of the PNG plots.
const (
	PlotWidth  = 8 * vg.Inch
	PlotHeight = 5 * vg.Inch
	PlotDPI    = 110
)

// maxGlyphs is the most points of a line drawn with a marker; longer runs
// are drawn as plain lines.
const maxGlyphs = 60

// Names of the files Write writes.
const (
	AccuracyFile        = "accuracy.png"
	AccuracyVsTotalFile = "accuracy_vs_total_bytes.png"
	AccuracyVsBytesFile = "accuracy_vs_bytes.png"
	SummaryFile         = "summary.md"
)

// Options of Write.
type Options struct {
	// Title heads the summary and the plots (empty: none).
	Title string
	// Targets are the accuracies the summary reports rounds and bytes to
	// reach (nil: DefaultTargets).
	Targets []float64
}

// Write writes AccuracyFile, AccuracyVsTotalFile, AccuracyVsBytesFile and
// SummaryFile into dir,
// making it if needed, and returns their paths.
func Write(dir string, runs []Run, opt Options) ([]string, error) {
	if opt.Targets == nil {
		opt.Targets = DefaultTargets
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var files []string
	write := func(name string, f func(io.Writer) error) error {
		var b bytes.Buffer
		if err := f(&b); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			return err
		}
		files = append(files, path)
		return nil
	}
	sums := make([]Summary, len(runs))
	for i, r := range runs {
		sums[i] = Summarize(r, opt.Targets)
	}
	steps := []struct {
		name string
		f    func(io.Writer) error
	}{
		{AccuracyFile, func(w io.Writer) error { return WriteAccuracyPNG(w, runs, opt.Title) }},
		{AccuracyVsTotalFile, func(w io.Writer) error { return WriteAccuracyVsTotalPNG(w, runs, opt.Title) }},
		{AccuracyVsBytesFile, func(w io.Writer) error { return WriteAccuracyVsBytesPNG(w, runs, opt.Title) }},
		{SummaryFile, func(w io.Writer) error { return WriteMarkdown(w, opt.Title, sums) }},
	}
	for _, s := range steps {
		if err := write(s.name, s.f); err != nil {
			return files, err
		}
	}
	return files, nil
}

// WriteAccuracyPNG plots test accuracy against round, a line per run, and
// writes the PNG to w. Rounds that were not evaluated are skipped.
func WriteAccuracyPNG(w io.Writer, runs []Run, title string) error {
	p := newPlot(title, "Test accuracy per round")
	p.X.Label.Text = "round"
	err := addLines(p, runs, func(r Round, _, _ int64) (float64, bool) { return float64(r.Round), true })
	if err != nil {
		return err
	}
	p.X.Min = 0
	fitAxis(&p.X, 8, 0, math.Inf(1))
	fitAxis(&p.Y, 7, 0, 100)
	return writePNG(w, p)
}

// WriteAccuracyVsTotalPNG plots test accuracy against the bytes that
// crossed the network so far, uploaded and downloaded, on a log axis, a
// line per run, and writes the PNG to w.
func WriteAccuracyVsTotalPNG(w io.Writer, runs []Run, title string) error {
	return writeVsBytes(w, runs, newPlot(title, "Test accuracy against total bytes (uploaded + downloaded)"),
		"bytes uploaded and downloaded by all clients so far (log scale)", func(_ Round, _, total int64) (float64, bool) { return float64(total), total > 0 })
}

// WriteAccuracyVsBytesPNG plots test accuracy against the bytes clients
// uploaded so far, on a log axis, a line per run, and writes the PNG to w.
func WriteAccuracyVsBytesPNG(w io.Writer, runs []Run, title string) error {
	return writeVsBytes(w, runs, newPlot(title, "Test accuracy against uploaded bytes"),
		"bytes uploaded by all clients so far (log scale)", func(_ Round, up, _ int64) (float64, bool) { return float64(up), up > 0 })
}

// writeVsBytes plots accuracy on p against a log axis of bytes, labelled
// label, at x.
func writeVsBytes(w io.Writer, runs []Run, p *plot.Plot, label string, x func(r Round, upload, total int64) (float64, bool)) error {
	p.X.Label.Text = label
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = byteTicks{}
	if err := addLines(p, runs, x); err != nil {
		return err
	}
	// Whole decades at both ends, so that both ends are labelled.
	p.X.Min = math.Pow10(int(math.Floor(math.Log10(p.X.Min))))
	p.X.Max = math.Pow10(int(math.Ceil(math.Log10(p.X.Max))))
	if p.X.Max <= p.X.Min {
		p.X.Max = 10 * p.X.Min
	}
	fitAxis(&p.Y, 7, 0, 100)
	return writePNG(w, p)
}

// fitAxis widens a's range to multiples of a round step that gives about
// n labelled ticks, within [lo, hi], and marks it with those ticks.
func fitAxis(a *plot.Axis, n int, lo, hi float64) {
	step := niceStep((a.Max - a.Min) / float64(n))
	a.Min = max(lo, step*math.Floor(a.Min/step))
	a.Max = min(hi, step*math.Ceil(a.Max/step))
	if a.Max <= a.Min {
		a.Max = a.Min + step
	}
	a.Tick.Marker = linearTicks{step}
}

// niceStep returns the smallest of 1, 2 or 5 times a power of ten that is
// at least x (x > 0), and 1 for x ≤ 0.
func niceStep(x float64) float64 {
	if !(x > 0) {
		return 1
	}
	p := math.Pow10(int(math.Floor(math.Log10(x))))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x*(1-1e-9) {
			return m * p
		}
	}
	return 10 * p
}

// linearTicks labels the multiples of step and marks the halves between.
type linearTicks struct{ step float64 }

func (t linearTicks) Ticks(from, to float64) []plot.Tick {
	var ticks []plot.Tick
	half := t.step / 2
	for i := math.Ceil(from / half); i*half <= to+half*1e-9; i++ {
		v := i * half
		tk := plot.Tick{Value: v}
		if math.Mod(i, 2) == 0 {
			tk.Label = strconv.FormatFloat(v, 'f', -1, 64)
		}
		ticks = append(ticks, tk)
		if len(ticks) > 1000 {
			break
		}
	}
	return ticks
}

func newPlot(title, what string) *plot.Plot {
	p := plot.New()
	p.Title.Text = what
	p.Title.TextStyle.Font.Size = vg.Points(14)
	p.Title.Padding = vg.Points(8)
	if title != "" {
		p.Title.Text = title + ": " + what
	}
	p.Y.Label.Text = "test accuracy (%)"
	p.Legend.Top = false // lines rise to the right: the bottom right is free
	p.Legend.Left = false
	p.Legend.XOffs = -vg.Points(6)
	p.Legend.YOffs = vg.Points(6)
	p.Add(plotter.NewGrid())
	return p
}

// addLines adds a line per run through its evaluated rounds at x(round,
// cumulative upload, cumulative total), skipping points where x says
// false.
func addLines(p *plot.Plot, runs []Run, x func(r Round, upload, total int64) (float64, bool)) error {
	points := 0
	for i, run := range runs {
		var xys plotter.XYs
		var up, total int64
		for _, r := range run.Rounds {
			up += r.UploadBytes
			total += r.TotalBytes()
			if !r.Evaluated {
				continue
			}
			if v, ok := x(r, up, total); ok {
				xys = append(xys, plotter.XY{X: v, Y: 100 * r.TestAccuracy})
			}
		}
		if len(xys) == 0 {
			continue
		}
		points += len(xys)
		line, err := plotter.NewLine(xys)
		if err != nil {
			return fmt.Errorf("run %q: %w", run.Label, err)
		}
		line.Color = plotutil.Color(i)
		line.Width = vg.Points(1.5)
		line.Dashes = plotutil.Dashes(i / 7) // solid until the colours repeat
		p.Add(line)
		if len(xys) > maxGlyphs {
			p.Legend.Add(run.Label, line)
			continue
		}
		pts, err := plotter.NewScatter(xys)
		if err != nil {
			return fmt.Errorf("run %q: %w", run.Label, err)
		}
		pts.Color = line.Color
		pts.Shape = plotutil.Shape(i)
		pts.Radius = vg.Points(2.5)
		p.Add(pts)
		p.Legend.Add(run.Label, line, pts)
	}
	if points == 0 {
		return ErrNothingToPlot
	}
	return nil
}

func writePNG(w io.Writer, p *plot.Plot) error {
	c := vgimg.NewWith(vgimg.UseWH(PlotWidth, PlotHeight), vgimg.UseDPI(PlotDPI))
	p.Draw(draw.New(c))
	_, err := vgimg.PngCanvas{Canvas: c}.WriteTo(w)
	return err
}

// byteTicks marks a log axis of bytes: a labelled tick at each power of
// ten and minor ticks between; where the axis spans less than two powers
// of ten, 2× and 5× are labelled too.
type byteTicks struct{}

func (byteTicks) Ticks(from, to float64) []plot.Tick {
	if !(from > 0 && to >= from) {
		return nil
	}
	lo := int(math.Floor(math.Log10(from)))
	hi := int(math.Ceil(math.Log10(to)))
	majors := 0
	for e := lo; e <= hi; e++ {
		if v := math.Pow10(e); v >= from && v <= to {
			majors++
		}
	}
	var ticks []plot.Tick
	for e := lo; e <= hi; e++ {
		for m := 1; m < 10; m++ {
			v := float64(m) * math.Pow10(e)
			if v < from || v > to {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || (majors < 2 && (m == 2 || m == 5)) {
				t.Label = tickBytes(m, e)
			}
			ticks = append(ticks, t)
		}
	}
	return ticks
}

// tickBytes labels m·10^e bytes: "1 MB", "20 kB", "500 B".
func tickBytes(m, e int) string {
	units := []string{"B", "kB", "MB", "GB", "TB", "PB", "EB"}
	u := 0
	if e > 0 {
		u = min(e/3, len(units)-1)
	}
	v := float64(m) * math.Pow10(e-3*u)
	return strconv.FormatFloat(v, 'f', -1, 64) + " " + units[u]
}
