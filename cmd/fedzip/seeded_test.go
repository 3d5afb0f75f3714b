package main

import (
	"encoding/json"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/fedzip/fedzip/report"
)

// TestSimulateSecAggSeededDefault: with --secagg and a random support the
// simulator downloads seeded syncs unless --download-codec is given (the
// lattice's own name included); without --secagg or with an announced
// support, --download-codec seeded is refused with one line, by the
// simulator and by the coordinator.
func TestSimulateSecAggSeededDefault(t *testing.T) {
	base := []string{"simulate", "--dataset", "synthetic", "--clients", "20", "--fraction", "0.5",
		"--model", "mlp:16", "--rounds", "3", "--secagg", "--secagg-k", "0.2", "-o", "json", "--quiet", "--deliver", ""}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "seeded"},
		{[]string{"--download-codec", "lattice"}, "lattice"},
		{[]string{"--secagg-support", "announced"}, "lattice"},
	} {
		code, stdout, stderr := runCmd(append(base, tc.args...)...)
		if code != exitOK {
			t.Fatalf("%v: exit %d: %s", tc.args, code, stderr)
		}
		var s report.Simulation
		if err := json.Unmarshal([]byte(stdout), &s); err != nil {
			t.Fatal(err)
		}
		if s.DownloadCodec != tc.want {
			t.Errorf("%v: download codec %q, want %q", tc.args, s.DownloadCodec, tc.want)
		}
	}
	for _, args := range [][]string{
		{"simulate", "--dataset", "synthetic", "--download-codec", "seeded"},
		{"simulate", "--dataset", "synthetic", "--secagg", "--secagg-support", "announced", "--download-codec", "seeded"},
		{"coordinator", "--dataset", "synthetic", "--insecure", "--open-registration", "--state-dir", t.TempDir(),
			"--listen", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0", "--secagg", "--secagg-support", "announced", "--download-codec", "seeded"},
		{"coordinator", "--dataset", "synthetic", "--insecure", "--open-registration", "--state-dir", t.TempDir(),
			"--listen", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0", "--download-codec", "seeded"},
	} {
		code, _, stderr := runCmd(args...)
		if code != exitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, exitUsage, stderr)
		}
		if n := strings.Count(strings.TrimRight(stderr, "\n"), "\n"); n != 0 || stderr == "" {
			t.Errorf("%v: want one line on stderr, got %q", args, stderr)
		}
	}
}

// TestCoordinatorSecAggSeededDefault: the run a coordinator commits with
// --secagg and a random support downloads seeded syncs unless
// --download-codec is given; with an announced support, or without
// --secagg, it keeps the lattice.
func TestCoordinatorSecAggSeededDefault(t *testing.T) {
	base := []string{"--dataset", "synthetic", "--model", "mlp:16"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--secagg"}, "seeded"},
		{[]string{"--secagg", "--download-codec", "lattice"}, "lattice"},
		{[]string{"--secagg", "--secagg-support", "announced"}, "lattice"},
		{nil, "lattice"},
	} {
		f := coordinatorFlags{deadline: time.Minute}
		fs := flag.NewFlagSet("coordinator", flag.ContinueOnError)
		addRunFlags(fs, &f.runFlags)
		if err := fs.Parse(append(base, tc.args...)); err != nil {
			t.Fatal(err)
		}
		fs.Visit(func(fl *flag.Flag) { f.downloadCodecSet = f.downloadCodecSet || fl.Name == "download-codec" })
		run, err := f.runConfig()
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if run.DownloadCodec != tc.want {
			t.Errorf("%v: download codec %q, want %q", tc.args, run.DownloadCodec, tc.want)
		}
	}
}
