package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"

	"github.com/fedzip/fedzip/internal/workdir"
	"github.com/fedzip/fedzip/report"
)

const reportAbout = `Reads the per-round metrics of one or more runs (the JSON lines that
'fedzip simulate --metrics-out' writes; flags may come before or after the
files) and writes into --out:
  accuracy.png                  test accuracy against round, a line per run
  accuracy_vs_total_bytes.png   test accuracy against total bytes so far,
                                uploaded + downloaded (log axis)
  accuracy_vs_bytes.png         test accuracy against bytes uploaded so far (log axis)
  summary.md                    a markdown table: final and best accuracy, rounds
                                and total bytes to reach each --targets accuracy,
                                total bytes and their ratio against dense FedAvg
                                (4 bytes per parameter per upload and download),
                                upload and download
The table is printed too. The same input gives the same files.`

const reportExample = `  fedzip simulate --rounds 30 --deliver "" --upload-codec none --metrics-out /tmp/dense.jsonl --quiet
  fedzip simulate --rounds 30 --deliver "" --upload-codec stcm --metrics-out /tmp/stcm.jsonl --quiet
  fedzip report /tmp/dense.jsonl /tmp/stcm.jsonl --out /tmp/fedzip-report --labels "dense float32,stcm"
`

func runReport(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	var out string
	fs.Var(workdir.Flag(&out, "report", nil), "out", "`DIR` to write the plots and summary.md into (made if missing)")
	labels := fs.String("labels", "", "comma-separated names of the runs, one per file (default: the file names without extension)")
	title := fs.String("title", "", "title of the plots and the summary")
	targets := fs.String("targets", "0.9,0.95,0.97", "comma-separated test accuracies to report rounds and bytes to reach, in (0, 1]")
	files, code, done := parseArgs(ctx, fs, args, stdout, stderr, cmdHelp{"report", "fedzip report RUN.jsonl [RUN2.jsonl ...] [--out DIR] [flags]", reportAbout, reportExample})
	if done {
		return code
	}

	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "fedzip report: "+format+" (run 'fedzip report -h' for help)\n", a...)
		return exitUsage
	}
	if len(files) == 0 {
		return usage("no metrics file")
	}
	if out == "" {
		return usage("--out is empty")
	}
	names := splitList(*labels)
	if *labels != "" && len(names) != len(files) {
		return usage("--labels names %d runs, but there are %d files", len(names), len(files))
	}
	var ts []float64
	for _, s := range splitList(*targets) {
		t, err := strconv.ParseFloat(s, 64)
		if err != nil || !(t > 0 && t <= 1) {
			return usage("--targets: %q is not an accuracy in (0, 1]", s)
		}
		ts = append(ts, t)
	}
	if ts == nil {
		ts = []float64{}
	}

	runs := make([]report.Run, len(files))
	for i, f := range files {
		label := ""
		if names != nil {
			label = names[i]
		}
		r, err := report.ReadFile(f, label)
		if err != nil {
			fmt.Fprintf(stderr, "fedzip report: %v\n", err)
			return exitError
		}
		runs[i] = r
	}
	written, err := report.Write(out, runs, report.Options{Title: *title, Targets: ts})
	if err != nil {
		fmt.Fprintf(stderr, "fedzip report: %v\n", err)
		return exitError
	}
	sums := make([]report.Summary, len(runs))
	for i, r := range runs {
		sums[i] = report.Summarize(r, ts)
	}
	if err := report.WriteMarkdown(stdout, "", sums); err != nil {
		fmt.Fprintf(stderr, "fedzip report: %v\n", err)
		return exitError
	}
	fmt.Fprintln(stdout)
	for _, f := range written {
		fmt.Fprintln(stdout, "wrote", f)
	}
	return exitOK
}
