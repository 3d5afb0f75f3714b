package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedzip/fedzip/report"
)

// TestSimulateSecAgg runs --secagg with dropouts end to end: it trains,
// every round's metrics count its survivors, and the summary's upload
// total is the metrics' (the protocol's bytes are in it).
func TestSimulateSecAgg(t *testing.T) {
	metrics := filepath.Join(t.TempDir(), "m.jsonl")
	code, stdout, stderr := runCmd("simulate", "--dataset", "synthetic", "--clients", "20", "--fraction", "0.5",
		"--model", "mlp:16", "--rounds", "4", "--secagg", "--secagg-k", "0.2", "--secagg-dropout", "0.2",
		"--download-codec", "none", "--metrics-out", metrics, "-o", "json", "--quiet", "--deliver", "")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var s report.Simulation
	if err := json.Unmarshal([]byte(stdout), &s); err != nil {
		t.Fatal(err)
	}
	var up int64
	for i, m := range readMetrics(t, metrics) {
		if v, _ := m["survivors"].(float64); v < 1 || v > 10 {
			t.Fatalf("round %d: survivors %v", i+1, m["survivors"])
		}
		up += int64(m["upload_bytes"].(float64))
	}
	if s.UploadBytes != up || up == 0 {
		t.Fatalf("summary uploads %d, metrics %d", s.UploadBytes, up)
	}
}

// TestSimulateBadSecAggFlags: runs --secagg cannot do exit 2 with one
// line on stderr.
func TestSimulateBadSecAggFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--secagg", "--upload-codec", "topk1"},
		{"--secagg", "--strategy", "median"},
		{"--secagg", "--strategy", "cclip"},
		{"--secagg", "--strategy", "fedavg,bound=auto"},
		{"--secagg", "--strategy", "fedavg,reputation=2"},
		{"--secagg", "--strategy", "fedavg,quorum=2"},
		{"--secagg", "--dp-clip", "1"},
		{"--secagg", "--secagg-k", "0"},
		{"--secagg", "--secagg-bits", "1"},
		{"--secagg", "--secagg-dropout", "1"},
		{"--secagg", "--secagg-dropout-step", "never"},
		{"--secagg", "--secagg-neighbours", "4"},
		{"--secagg", "--secagg-support", "topk"},
		{"--secagg", "--secagg-support", "announced,explore=2"},
		{"--secagg", "--secagg-local", "adam"},
		{"--secagg", "--secagg-local", "support-adam"},
		{"--secagg", "--secagg-local", "support-adam", "--momentum", "0.9"},
		{"--secagg", "--secagg-local", "support-adam", "--weight-decay", "0.01"},
		{"--secagg", "--secagg-local", "support-adam", "--prox-mu", "0.1"},
		{"--secagg-local", "support-adam"},
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

// TestSimulateSecAggAnnounced runs --secagg-support announced end to end:
// it trains, and the run spec and summary name the support.
func TestSimulateSecAggAnnounced(t *testing.T) {
	code, stdout, stderr := runCmd("simulate", "--dataset", "synthetic", "--clients", "20", "--fraction", "0.5",
		"--model", "mlp:16", "--rounds", "3", "--secagg", "--secagg-k", "0.2", "--secagg-support", "announced,block=4",
		"--download-codec", "none", "-o", "json", "--quiet", "--deliver", "")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var s report.Simulation
	if err := json.Unmarshal([]byte(stdout), &s); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(s.UploadCodec, "announced,block=4") || s.UploadBytes == 0 {
		t.Fatalf("summary: upload codec %q, %d bytes up", s.UploadCodec, s.UploadBytes)
	}
}

// TestSimulateSecAggSupportAdam runs --secagg-local support-adam end to
// end: it trains, the summary names it, and the coordinator refuses what
// the simulator runs with one line that says why.
func TestSimulateSecAggSupportAdam(t *testing.T) {
	code, stdout, stderr := runCmd("simulate", "--dataset", "synthetic", "--clients", "20", "--fraction", "0.5",
		"--model", "mlp:16", "--rounds", "3", "--secagg", "--secagg-k", "0.2", "--secagg-local", "support-adam", "--lr", "0.02",
		"--secagg-clip", "0.05", "--download-codec", "none", "-o", "json", "--quiet", "--deliver", "")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var s report.Simulation
	if err := json.Unmarshal([]byte(stdout), &s); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(s.UploadCodec, "support-adam") || s.Rounds != 3 || s.UploadBytes == 0 {
		t.Fatalf("summary: codec %q, %d rounds, %d bytes up", s.UploadCodec, s.Rounds, s.UploadBytes)
	}
	code, _, stderr = runCmd("coordinator", "--dataset", "synthetic", "--insecure", "--open-registration", "--state-dir", t.TempDir(),
		"--listen", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0", "--secagg", "--secagg-local", "support-adam", "--secagg-clip", "0.05")
	if code != exitUsage || !strings.Contains(stderr, "secagg_local") {
		t.Fatalf("coordinator: exit %d, %q; want %d naming the Task field it needs", code, stderr, exitUsage)
	}
}
