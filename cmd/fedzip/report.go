package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"

	"github.com/fedzip/fedzip/report"
)

const reportAbout = `fedzip report RUN.jsonl [RUN2.jsonl ...] --out DIR [flags]

Reads the per-round metrics of one or more runs (the JSON lines that
'fedzip simulate --metrics-out' writes; flags may come before or after the
files) and writes into --out:
  accuracy.png            test accuracy against round, a line per run
  accuracy_vs_bytes.png   test accuracy against bytes uploaded so far (log axis)
  summary.md              a markdown table: final and best accuracy, rounds and
                          bytes to reach each --targets accuracy, total upload
The table is printed too. The same input gives the same files.`

const reportExample = `  fedzip simulate --rounds 30 --deliver "" --upload-codec none --metrics-out dense.jsonl --quiet
  fedzip simulate --rounds 30 --deliver "" --upload-codec stcm --metrics-out stcm.jsonl --quiet
  fedzip report dense.jsonl stcm.jsonl --out report --labels "dense float32,stcm"
`

func runReport(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	out := fs.String("out", "", "folder to write the plots and summary.md into (required; made if missing)")
	labels := fs.String("labels", "", "comma-separated names of the runs, one per file (default: the file names without extension)")
	title := fs.String("title", "", "title of the plots and the summary")
	targets := fs.String("targets", "0.9,0.95,0.97", "comma-separated test accuracies to report rounds and bytes to reach, in (0, 1]")
	addConfigFlag(fs)

	// Files and flags may come in any order: parse flags, take a file,
	// and parse again. After "--" everything is a file.
	var files []string
	rest := args
	for {
		fs.SetOutput(io.Discard)
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				code, _ := parseFlags(ctx, fs, []string{"-h"}, stdout, stderr, "report", reportAbout, reportExample)
				return code
			}
			fmt.Fprintf(stderr, "fedzip report: %v (run 'fedzip report -h' for help)\n", err)
			return exitUsage
		}
		left := fs.Args()
		if len(left) == 0 {
			break
		}
		if len(rest) > len(left) && rest[len(rest)-len(left)-1] == "--" {
			files = append(files, left...)
			break
		}
		files, rest = append(files, left[0]), left[1:]
	}
	if code, done := configure(ctx, fs, "report", stderr); done {
		return code
	}

	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "fedzip report: "+format+" (run 'fedzip report -h' for help)\n", a...)
		return exitUsage
	}
	if len(files) == 0 {
		return usage("no metrics file")
	}
	if *out == "" {
		return usage("--out is required")
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
	written, err := report.Write(*out, runs, report.Options{Title: *title, Targets: ts})
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
