package report

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/fedzip/fedzip/sim"
)

// Progress shows a simulation's progress: a bar with the last accuracy and
// an estimate of the time left when bar is a terminal, one line on out per
// evaluated round otherwise. Quiet shows nothing.
type Progress struct {
	out, bar io.Writer
	total    int
	tty      bool
	quiet    bool
	start    time.Time
	lastAcc  float64
}

// NewProgress returns the progress of a run of total rounds.
func NewProgress(out, bar io.Writer, total int, quiet bool) *Progress {
	p := &Progress{out: out, bar: bar, total: total, quiet: quiet, start: time.Now()}
	if f, ok := bar.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.tty = true
	}
	return p
}

// Update shows round m.
func (p *Progress) Update(m sim.Metrics) {
	if p.quiet {
		return
	}
	if m.Evaluated {
		p.lastAcc = m.TestAccuracy
	}
	if p.tty {
		const width = 30
		done := min(m.Round*width/max(p.total, 1), width)
		elapsed := time.Since(p.start)
		eta := time.Duration(float64(elapsed) / float64(m.Round) * float64(p.total-m.Round)).Round(time.Second)
		fmt.Fprintf(p.bar, "\r  [%s%s] round %d/%d  acc %.2f%%  %s  %.2fs/round  eta %v   ",
			strings.Repeat("=", done), strings.Repeat(" ", width-done), m.Round, p.total, 100*p.lastAcc, BytesIEC(m.CumulativeTotalBytes), m.Seconds, eta)
		return
	}
	if m.Evaluated {
		fmt.Fprintf(p.out, "round %4d  test accuracy %.4f  test loss %.4f  train loss %.4f  %.3fs  total bytes %s%s\n",
			m.Round, m.TestAccuracy, m.TestLoss, m.TrainLoss, m.Seconds, BytesIEC(m.CumulativeTotalBytes), smaller(m.TotalRatio, "dense"))
	}
	if e := m.FedEval; e != nil {
		fmt.Fprintf(p.out, "round %4d  federated accuracy %.4f  loss %.4f  (model after round %d, %d held-out examples of %d clients)\n",
			m.Round, e.Accuracy, e.Loss, e.Version, e.Examples, e.Reports)
	}
}

// Done ends the bar's line.
func (p *Progress) Done() {
	if p.tty && !p.quiet {
		fmt.Fprintln(p.bar)
	}
}
