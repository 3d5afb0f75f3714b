package main

import (
	"strings"
	"testing"
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
		{"--secagg", "--secagg-support", "announced"},
		{"--secagg", "--secagg-support", "bogus"},
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
