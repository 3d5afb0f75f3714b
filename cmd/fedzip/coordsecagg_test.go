package main

import (
	"flag"
	"strings"
	"testing"
	"time"
)

// TestCoordinatorBadSecAggFlags: a coordinator refuses, before it starts,
// the secure aggregation runs the simulator refuses (with the same flags)
// and one without a round deadline, whose steps could never end: exit 2
// with one line on stderr.
func TestCoordinatorBadSecAggFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--secagg", "--upload-codec", "topk1"},
		{"--secagg", "--strategy", "median"},
		{"--secagg", "--strategy", "fedavg,bound=auto"},
		{"--secagg", "--strategy", "fedavg,quorum=2"},
		{"--secagg", "--dp-clip", "1"},
		{"--secagg", "--secagg-k", "0"},
		{"--secagg", "--secagg-bits", "25"},
		{"--secagg", "--secagg-neighbours", "4"},
		{"--secagg", "--deadline", "0s"},
		{"--secagg", "--secagg-support", "announced,block=0"},
		{"--secagg", "--secagg-support", "bogus"},
		{"--secagg", "--secagg-local", "bogus"},
		{"--secagg", "--secagg-local", "support-adam", "--momentum", "0.9"},
		{"--secagg", "--secagg-local", "support-adam", "--prox-mu", "0.1"},
		{"--secagg-local", "support-adam"},
	} {
		code, _, stderr := runCmd(append([]string{"coordinator", "--dataset", "synthetic", "--insecure", "--open-registration",
			"--state-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0"}, args...)...)
		if code != exitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, exitUsage, stderr)
		}
		if n := strings.Count(strings.TrimRight(stderr, "\n"), "\n"); n != 0 || stderr == "" {
			t.Errorf("%v: want one line on stderr, got %q", args, stderr)
		}
	}
}

// TestCoordinatorSecAggAnnounced: --secagg-support announced is a
// coordinator's run as it is the simulator's: the run it commits carries
// the support, with its options, and passes the FSM's checks.
func TestCoordinatorSecAggAnnounced(t *testing.T) {
	var f coordinatorFlags
	fs := flag.NewFlagSet("coordinator", flag.ContinueOnError)
	addRunFlags(fs, &f.runFlags)
	if err := fs.Parse([]string{"--dataset", "synthetic", "--model", "mlp:16", "--secagg", "--secagg-support", "announced,explore=0.5,block=8"}); err != nil {
		t.Fatal(err)
	}
	f.deadline = time.Minute
	run, err := f.runConfig()
	if err != nil {
		t.Fatal(err)
	}
	if run.SecAgg == nil || run.SecAgg.Support != "announced,explore=0.5,block=8" {
		t.Fatalf("the run's secure aggregation: %+v", run.SecAgg)
	}
}
