package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedzip/fedzip/checkpoint"
	"github.com/fedzip/fedzip/internal/workdir"
	"github.com/fedzip/fedzip/report"
)

// TestMain points the work folder ($FEDZIP_HOME) at a temporary folder,
// so that no test writes into the user's.
func TestMain(m *testing.M) {
	home, err := os.MkdirTemp("", "fedzip-home-")
	if err != nil {
		panic(err)
	}
	os.Setenv(workdir.Env, home)
	code := m.Run()
	os.RemoveAll(home)
	os.Exit(code)
}

func runCmd(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(context.Background(), args, &o, &e)
	return code, o.String(), e.String()
}

func TestBadInputExitsTwoWithOneLine(t *testing.T) {
	for _, args := range [][]string{
		{"simulate", "--partition", "foo"},
		{"simulate", "--fraction", "0"},
		{"simulate", "--fraction", "1.5"},
		{"simulate", "--model", "resnet"},
		{"simulate", "--model", "cnn", "--dataset", "synthetic"}, // 2×2 pooling of one row of 60 features
		{"simulate", "--dataset", "cifar"},
		{"simulate", "--rounds", "0"},
		{"simulate", "--no-such-flag"},
		{"simulate", "--lr", "abc"},
		{"simulate", "extra"},
		{"frobnicate"},
	} {
		code, _, stderr := runCmd(args...)
		if code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
		if n := strings.Count(strings.TrimRight(stderr, "\n"), "\n"); n != 0 || stderr == "" {
			t.Errorf("%v: want one line on stderr, got %q", args, stderr)
		}
	}
	code, stdout, _ := runCmd("simulate", "-h")
	if code != exitOK || !strings.Contains(stdout, "--partition") && !strings.Contains(stdout, "-partition") {
		t.Errorf("simulate -h: exit %d, output %q", code, stdout)
	}
}

func TestMissingDatasetSaysWhereItLooked(t *testing.T) {
	dir := t.TempDir()
	code, _, stderr := runCmd("simulate", "--data-dir", dir, "--rounds", "1")
	if code != exitError {
		t.Fatalf("exit %d, want %d", code, exitError)
	}
	if !strings.Contains(stderr, dir) || !strings.Contains(stderr, "--data-dir") {
		t.Fatalf("error does not say where it looked and how to point elsewhere: %q", stderr)
	}
}

func TestSimulateWritesMetricsAndModel(t *testing.T) {
	dir := t.TempDir()
	metrics := filepath.Join(dir, "m.jsonl")
	model := filepath.Join(dir, "model.fzm")
	code, stdout, stderr := runCmd("simulate", "--dataset", "synthetic", "--clients", "10", "--fraction", "0.5",
		"--model", "mlp:16", "--rounds", "3", "--eval-every", "2", "--metrics-out", metrics, "--save-model", model, "-o", "json", "--quiet",
		"--deliver", filepath.Join(dir, "device.fzm"), "--deliver-recipe", "prune=0.5;encode=huffman")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var s report.Simulation
	if err := json.Unmarshal([]byte(stdout), &s); err != nil {
		t.Fatalf("summary is not JSON: %v\n%s", err, stdout)
	}
	if s.Rounds != 3 || s.PerRound != 5 || s.FinalAccuracy <= 0 {
		t.Fatalf("summary %+v", s)
	}
	// The total leads: uploaded + downloaded, against dense FedAvg's.
	if s.TotalBytes != s.UploadBytes+s.DownloadBytes || s.DenseTotalBytes != s.DenseUploadBytes+s.DenseDownloadBytes ||
		s.TotalRatio != float64(s.DenseTotalBytes)/float64(s.TotalBytes) {
		t.Fatalf("summary totals: %d bytes, dense %d, ratio %v (%+v)", s.TotalBytes, s.DenseTotalBytes, s.TotalRatio, s)
	}
	var total int64
	if d := s.Delivered; d == nil || d.Bytes <= 0 || d.Ratio <= 1 || d.Accuracy <= 0 {
		t.Fatalf("delivery in the summary: %+v", s.Delivered)
	}
	if fi, err := os.Stat(filepath.Join(dir, "device.fzm")); err != nil || int(fi.Size()) != s.Delivered.Bytes {
		t.Fatalf("delivered file: %v, %v", fi, err)
	}
	f, err := os.Open(metrics)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"round", "test_accuracy", "test_loss", "clients", "upload_bytes", "download_bytes", "seconds",
			"total_bytes", "dense_total_bytes", "cumulative_total_bytes", "total_ratio"} {
			if _, ok := m[k]; !ok {
				t.Fatalf("line %d lacks %q: %s", n, k, sc.Text())
			}
		}
		total += int64(m["total_bytes"].(float64))
		if int64(m["cumulative_total_bytes"].(float64)) != total || m["total_bytes"].(float64) != m["upload_bytes"].(float64)+m["download_bytes"].(float64) {
			t.Fatalf("line %d: totals do not add up: %s", n, sc.Text())
		}
		evaluated := n == 2 || n == 3
		if (m["test_accuracy"] != nil) != evaluated {
			t.Fatalf("round %d: test_accuracy %v, evaluated %v", n, m["test_accuracy"], evaluated)
		}
	}
	if n != 3 || total != s.TotalBytes {
		t.Fatalf("%d metric lines, want 3; total %d, the summary's %d", n, total, s.TotalBytes)
	}
	ck, err := checkpoint.ReadFile(model)
	if err != nil {
		t.Fatal(err)
	}
	if ck.Header.Round != 3 || ck.Header.Model != "mlp:60-16-10" {
		t.Fatalf("saved model header %+v", ck.Header)
	}
}

func TestUsage(t *testing.T) {
	if code, out, _ := runCmd("help"); code != exitOK || !strings.Contains(out, "simulate") {
		t.Fatal(code, out)
	}
	if code, _, _ := runCmd(); code != exitUsage {
		t.Fatal(code)
	}
}

// TestHelpExitsZeroEverywhere: -h and --help print help and exit 0 for
// every command and subcommand ('cluster status --help' used to exit 2).
func TestHelpExitsZeroEverywhere(t *testing.T) {
	for _, args := range [][]string{
		{"-h"}, {"--help"},
		{"simulate", "-h"}, {"coordinator", "--help"}, {"client", "-h"},
		{"cluster", "-h"}, {"cluster", "status", "--help"}, {"cluster", "add", "-h"}, {"cluster", "remove", "--help"},
		{"fetch-model", "-h"}, {"dev-certs", "-h"}, {"inspect", "-h"},
		{"compress", "-h"}, {"predict", "--help"}, {"export", "-h"}, {"report", "-h"}, {"report", "a.jsonl", "--help"},
		{"config", "-h"}, {"help"},
	} {
		code, stdout, stderr := runCmd(args...)
		if code != exitOK || stdout == "" {
			t.Errorf("fedzip %v: exit %d, stdout %d bytes, stderr %q", args, code, len(stdout), stderr)
		}
	}
}

// TestUnknownFlagSuggestsNearest: a mistyped flag names the nearest one,
// for every command, in one line with exit 2.
func TestUnknownFlagSuggestsNearest(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"simulate", "--round", "3"}, "did you mean --rounds?"},
		{[]string{"coordinator", "--state_dir", "x"}, "did you mean --state-dir?"},
		{[]string{"client", "--client-idx", "1"}, "did you mean --client-index?"},
		{[]string{"cluster", "status", "--coordinators", "a"}, "did you mean --coordinator?"},
		{[]string{"dev-certs", "--host", "a"}, "did you mean --hosts?"},
		{[]string{"compress", "--recipes", "x"}, "did you mean --recipe?"},
		{[]string{"predict", "--pubky", "x"}, "did you mean --pubkey?"},
		{[]string{"export", "--fromat", "onnx"}, "did you mean --format?"},
		{[]string{"fetch-model", "--ulr", "x"}, "did you mean --url?"},
		{[]string{"report", "a.jsonl", "--label", "x"}, "did you mean --labels?"},
		{[]string{"inspect", "--pub-key", "k", "f"}, "did you mean --pubkey?"},
		{[]string{"config", "print", "simulate", "--round", "3"}, "did you mean --rounds?"},
	} {
		code, _, stderr := runCmd(tc.args...)
		if code != exitUsage || !strings.Contains(stderr, "flag provided but not defined") || !strings.Contains(stderr, tc.want) ||
			strings.Count(strings.TrimRight(stderr, "\n"), "\n") != 0 {
			t.Errorf("fedzip %v: exit %d, stderr %q; want exit 2 and one line with %q", tc.args, code, stderr, tc.want)
		}
	}
	// Nothing near: no guess.
	if _, _, stderr := runCmd("simulate", "--frobnicate"); strings.Contains(stderr, "did you mean") {
		t.Errorf("a far flag got a suggestion: %q", stderr)
	}
}

// TestUsageColumnsLineUp: in the main help every command's summary starts
// in the same column, whatever the longest command name.
func TestUsageColumnsLineUp(t *testing.T) {
	_, out, _ := runCmd("help")
	col := -1
	rows := 0
	for _, line := range strings.Split(out, "\n") {
		for _, c := range commands() {
			rest, ok := strings.CutPrefix(line, "  "+c.name+" ")
			if !ok {
				continue
			}
			rows++
			at := len(line) - len(strings.TrimLeft(rest, " "))
			if !strings.HasSuffix(line, c.summary) || line[at:] != c.summary {
				t.Errorf("line %q does not end with the summary of %s", line, c.name)
			}
			if col >= 0 && at != col {
				t.Errorf("%s's summary starts at column %d, others at %d:\n%s", c.name, at, col, out)
			}
			col = at
		}
	}
	if rows != len(commands()) {
		t.Errorf("%d command rows, want %d:\n%s", rows, len(commands()), out)
	}
}
