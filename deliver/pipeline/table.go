package pipeline

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// WriteTable writes the result in the style of Deep Compression's
// tables: a row per stage, measured on the file a device decodes.
func (res *Result) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "stage\tarch\tnonzero weights\tbits/weight\tindex bits\tbytes\tratio\ttest acc\tΔ points\tlatency µs\tmemory KiB\t")
	for i, r := range res.Rows {
		stage := r.Stage
		if i > 0 {
			stage = "+ " + stage
		}
		idx := "-"
		if r.IndexBits > 0 {
			idx = fmt.Sprintf("%.2f", r.IndexBits)
		}
		delta := "-"
		if i > 0 {
			delta = fmt.Sprintf("%+.2f", r.Delta)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d (%.1f%%)\t%.2f\t%s\t%d\t%.1f×\t%.2f%%\t%s\t%.1f\t%.0f\t\n",
			stage, r.Arch, r.Nonzero, r.NonzeroPct, r.BitsPerWeight, idx, r.Bytes, r.Ratio, 100*r.Accuracy, delta, r.LatencyUS, float64(r.MemoryBytes)/1024)
	}
	return tw.Flush()
}
