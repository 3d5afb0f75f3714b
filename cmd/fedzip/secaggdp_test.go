package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedzip/fedzip/report"
)

// TestSimulateSecAggDP runs --secagg with distributed DP end to end: every
// round reports the noise of its mean and the ε spent so far, growing, and
// the summary reports the last.
func TestSimulateSecAggDP(t *testing.T) {
	metrics := filepath.Join(t.TempDir(), "m.jsonl")
	code, stdout, stderr := runCmd("simulate", "--dataset", "synthetic", "--clients", "20", "--fraction", "0.5",
		"--model", "mlp:16", "--rounds", "3", "--secagg", "--secagg-k", "0.2", "--secagg-clip", "0.05",
		"--secagg-dp-noise", "2", "--secagg-dp-clip", "0.1",
		"--download-codec", "none", "--metrics-out", metrics, "-o", "json", "--quiet", "--deliver", "")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var s report.Simulation
	if err := json.Unmarshal([]byte(stdout), &s); err != nil {
		t.Fatal(err)
	}
	prev := 0.0
	for i, m := range readMetrics(t, metrics) {
		eps, _ := m["epsilon"].(float64)
		noise, _ := m["secagg_dp_noise"].(float64)
		if !(eps > prev) || !(noise > 0) {
			t.Fatalf("round %d: epsilon %v (after %v), noise %v", i+1, eps, prev, noise)
		}
		prev = eps
	}
	if s.Epsilon != prev {
		t.Fatalf("summary epsilon %v, last round's %v", s.Epsilon, prev)
	}
}

// TestSimulateBadSecAggDPFlags: distributed DP and masked width settings a run cannot use
// exit 2 with one line on stderr.
func TestSimulateBadSecAggDPFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--secagg-dp-noise", "1", "--secagg-dp-clip", "1"},             // no --secagg
		{"--secagg", "--secagg-dp-noise", "1", "--secagg-dp-clip", "1"}, // automatic clip
		{"--secagg", "--secagg-clip", "0.05", "--secagg-dp-noise", "1"}, // no L2 clip
		{"--secagg", "--secagg-clip", "0.05", "--secagg-dp-clip", "1"},  // no noise
		{"--secagg", "--secagg-clip", "0.05", "--secagg-dp-noise", "-1", "--secagg-dp-clip", "1"},
		{"--secagg-width", "5"},             // masked width without --secagg
		{"--secagg", "--secagg-width", "1"}, // below 2 bits
		{"--secagg", "--secagg-width", "33"},
		{"--secagg", "--secagg-width", "-4"},
	} {
		code, _, stderr := runCmd(append([]string{"simulate", "--dataset", "synthetic"}, args...)...)
		if code != exitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, exitUsage, stderr)
		}
		if n := strings.Count(strings.TrimRight(stderr, "\n"), "\n"); n != 0 || stderr == "" {
			t.Errorf("%v: want one line on stderr, got %q", args, stderr)
		}
	}
}
