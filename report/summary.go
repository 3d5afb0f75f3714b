package report

import (
	"cmp"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// DefaultTargets are the test accuracies the summary reports rounds and
// bytes to reach.
var DefaultTargets = []float64{0.90, 0.95, 0.97}

// Reached is when a run first reached a target accuracy.
type Reached struct {
	Target float64
	// Round is the first evaluated round at or above Target (0: never).
	Round int
	// UploadBytes is the upload of all rounds up to and including Round.
	UploadBytes int64
	// DownloadBytes and TotalBytes (upload + download) are the download
	// and every byte that crossed the network up to and including Round;
	// DenseTotalBytes is what dense FedAvg's would have been (0 in files
	// that predate the dense fields).
	DownloadBytes, TotalBytes, DenseTotalBytes int64
}

// TotalRatio is dense FedAvg's total bytes to the target over the run's
// (0 when unknown).
func (r Reached) TotalRatio() float64 { return ratio(r.DenseTotalBytes, r.TotalBytes) }

// ratio is dense over n, 0 when either is unknown.
func ratio(dense, n int64) float64 {
	if dense <= 0 || n <= 0 {
		return 0
	}
	return float64(dense) / float64(n)
}

// Summary is one run in a few numbers.
type Summary struct {
	Label string
	// Rounds is the number of the last round.
	Rounds int
	// Evaluated says whether any round has a test accuracy; the accuracy
	// fields are zero when none has.
	Evaluated     bool
	FinalAccuracy float64 // of the last evaluated round
	FinalRound    int
	BestAccuracy  float64 // the first round holding the best accuracy
	BestRound     int
	Reached       []Reached
	UploadBytes   int64 // all rounds
	DownloadBytes int64
	// TotalBytes is UploadBytes + DownloadBytes, every byte that crossed
	// the network, and DenseTotalBytes dense FedAvg's total for the same
	// rounds and clients (0 in files that predate the dense fields).
	TotalBytes, DenseTotalBytes int64
	Epsilon                     float64 // of the last round (0: no DP)
}

// TotalRatio is dense FedAvg's total bytes over the run's (0 when
// unknown).
func (s Summary) TotalRatio() float64 { return ratio(s.DenseTotalBytes, s.TotalBytes) }

// Summarize sums up run, with the rounds and bytes it took to reach each
// of targets (accuracies in [0, 1]).
func Summarize(run Run, targets []float64) Summary {
	s := Summary{Label: run.Label, Reached: make([]Reached, len(targets))}
	for i, t := range targets {
		s.Reached[i].Target = t
	}
	for _, r := range run.Rounds {
		s.Rounds = r.Round
		s.UploadBytes += r.UploadBytes
		s.DownloadBytes += r.DownloadBytes
		s.TotalBytes += r.TotalBytes()
		s.DenseTotalBytes += r.DenseUploadBytes + r.DenseDownloadBytes
		s.Epsilon = r.Epsilon
		if !r.Evaluated {
			continue
		}
		s.FinalAccuracy, s.FinalRound = r.TestAccuracy, r.Round
		if !s.Evaluated || r.TestAccuracy > s.BestAccuracy {
			s.BestAccuracy, s.BestRound = r.TestAccuracy, r.Round
		}
		s.Evaluated = true
		for i := range s.Reached {
			if x := &s.Reached[i]; x.Round == 0 && r.TestAccuracy >= x.Target {
				x.Round, x.UploadBytes, x.DownloadBytes, x.TotalBytes, x.DenseTotalBytes = r.Round, s.UploadBytes, s.DownloadBytes, s.TotalBytes, s.DenseTotalBytes
			}
		}
	}
	return s
}

// WriteMarkdown writes a markdown section: a heading with title (none if
// empty) and a table with a row per summary. All summaries must have the
// same targets, in the same order.
func WriteMarkdown(w io.Writer, title string, sums []Summary) error {
	var b strings.Builder
	if title != "" {
		fmt.Fprintf(&b, "# %s\n\n", title)
	}
	var targets []float64
	if len(sums) > 0 {
		for _, r := range sums[0].Reached {
			targets = append(targets, r.Target)
		}
	}
	eps := false
	for _, s := range sums {
		eps = eps || s.Epsilon > 0
	}
	b.WriteString("| run | rounds | final accuracy | best accuracy |")
	for _, t := range targets {
		fmt.Fprintf(&b, " to %s |", targetPercent(t))
	}
	b.WriteString(" total | vs dense | upload | download |")
	if eps {
		b.WriteString(" ε |")
	}
	b.WriteString("\n|---|--:|--:|--:|")
	for range targets {
		b.WriteString("--:|")
	}
	b.WriteString("--:|--:|--:|--:|")
	if eps {
		b.WriteString("--:|")
	}
	b.WriteString("\n")
	for _, s := range sums {
		fmt.Fprintf(&b, "| %s | %d |", cell(s.Label), s.Rounds)
		if s.Evaluated {
			fmt.Fprintf(&b, " %s | %s (round %d) |", percent(s.FinalAccuracy), percent(s.BestAccuracy), s.BestRound)
		} else {
			b.WriteString(" — | — |")
		}
		for i := range targets {
			if i < len(s.Reached) && s.Reached[i].Round > 0 {
				n := s.Reached[i].Round
				fmt.Fprintf(&b, " %d round%s, %s%s |", n, map[bool]string{true: "", false: "s"}[n == 1], Bytes(s.Reached[i].TotalBytes), paren(Times(s.Reached[i].TotalRatio())))
			} else {
				b.WriteString(" not reached |")
			}
		}
		fmt.Fprintf(&b, " %s | %s | %s | %s |", Bytes(s.TotalBytes), cmp.Or(Times(s.TotalRatio()), "—"), Bytes(s.UploadBytes), Bytes(s.DownloadBytes))
		if eps {
			if s.Epsilon > 0 {
				fmt.Fprintf(&b, " %.3g |", s.Epsilon)
			} else {
				b.WriteString(" — |")
			}
		}
		b.WriteString("\n")
	}
	b.WriteString("\nAccuracy is test accuracy; \"to X\" is the first evaluated round at or above X and the total bytes (uploaded + downloaded) up to it. " +
		"\"vs dense\" is dense FedAvg's total (4 bytes per parameter per upload and per download) over the run's. Bytes are decimal (1 MB = 10⁶ bytes).\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// Times formats a ratio: 1.23×, 12.3×, 123×; "" when unknown (0).
func Times(r float64) string {
	if !(r > 0) {
		return ""
	}
	return strconv.FormatFloat(r, 'f', ratioPrec(r), 64) + "×"
}

// ratioPrec is the decimals a ratio is shown with: 1.23×, 12.3×, 123×.
func ratioPrec(r float64) int {
	switch {
	case r < 9.995:
		return 2
	case r < 99.95:
		return 1
	}
	return 0
}

// paren is " (s)", or "" for an empty s.
func paren(s string) string {
	if s == "" {
		return ""
	}
	return " (" + s + ")"
}

// percent formats an accuracy in [0, 1] as a percentage with two decimals.
func percent(a float64) string { return strconv.FormatFloat(100*a, 'f', 2, 64) + "%" }

// targetPercent formats a target accuracy without trailing zeros: 90%,
// 97.5%.
func targetPercent(a float64) string {
	s := strconv.FormatFloat(100*a, 'f', 2, 64)
	return strings.TrimRight(strings.TrimRight(s, "0"), ".") + "%"
}

// cell escapes a label for a markdown table cell.
func cell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.Join(strings.Fields(s), " ")
}

// Bytes formats n with decimal units: 950 B, 1.2 kB, 38.4 MB, 2.01 GB.
func Bytes(n int64) string {
	if n < 1000 {
		return strconv.FormatInt(n, 10) + " B"
	}
	v := float64(n)
	unit := 0
	for v >= 999.5 && unit < 6 {
		v /= 1000
		unit++
	}
	prec := 1
	if v < 9.995 {
		prec = 2
	} else if v >= 99.95 {
		prec = 0
	}
	return strconv.FormatFloat(v, 'f', prec, 64) + " " + []string{"B", "kB", "MB", "GB", "TB", "PB", "EB"}[unit]
}
