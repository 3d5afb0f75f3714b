package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedzip/fedzip/internal/syncbuf"
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
// end in both drivers, with the same flags: the simulator trains and its
// summary names it; a coordinator (Raft on disk, gRPC on 127.0.0.1) and
// three 'fedzip client's run its two rounds to the end, every client
// taking part in both.
func TestSimulateSecAggSupportAdam(t *testing.T) {
	flags := []string{"--dataset", "synthetic", "--model", "mlp:16", "--rounds", "2", "--secagg", "--secagg-local", "support-adam", "--lr", "0.02",
		"--secagg-clip", "0.05", "--download-codec", "none"}
	code, stdout, stderr := runCmd(append([]string{"simulate", "--clients", "20", "--fraction", "0.5", "--secagg-k", "0.2",
		"-o", "json", "--quiet", "--deliver", ""}, flags...)...)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var s report.Simulation
	if err := json.Unmarshal([]byte(stdout), &s); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(s.UploadCodec, "support-adam") || s.Rounds != 2 || s.UploadBytes == 0 {
		t.Fatalf("summary: codec %q, %d rounds, %d bytes up", s.UploadCodec, s.Rounds, s.UploadBytes)
	}

	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var coordErr syncbuf.Buffer
	coordDone := make(chan int, 1)
	go func() {
		coordDone <- runIn(ctx, &coordErr, append([]string{"coordinator", "--insecure", "--open-registration", "--state-dir", filepath.Join(dir, "c"),
			"--listen", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0", "--min-clients", "3", "--fraction", "1"}, flags...)...)
	}()
	addr := ""
	waitCmdLog(t, &coordErr, coordDone, "the coordinator's gRPC address", func(l string) bool {
		if _, rest, ok := strings.Cut(l, `"msg":"coordinator listening","grpc":"`); ok {
			addr, _, _ = strings.Cut(rest, `"`)
		}
		return addr != ""
	})
	type result struct {
		code   int
		stdout string
	}
	clients := make(chan result, 3)
	for i := range 3 {
		go func() {
			var o, e syncbuf.Buffer
			code := run(ctx, []string{"client", "--insecure", "--coordinator", addr, "--dataset", "synthetic", "--clients", "3",
				"--client-index", fmt.Sprint(i), "--state-dir", filepath.Join(dir, fmt.Sprint(i))}, &o, &e)
			clients <- result{code, o.String() + e.String()}
		}()
	}
	for range 3 {
		r := <-clients
		if r.code != exitOK || !strings.Contains(r.stdout, "2 updates accepted") {
			t.Errorf("client: exit %d\n%s", r.code, r.stdout)
		}
	}
	waitCmdLog(t, &coordErr, coordDone, "the end of training", func(l string) bool { return strings.Contains(l, `"msg":"training finished","rounds":2`) })
	cancel()
	if code := <-coordDone; code != exitOK {
		t.Fatalf("coordinator: exit %d\n%s", code, coordErr.String())
	}
}

// runIn runs the command args until ctx ends, its stderr (and stdout)
// into out, and returns its exit code.
func runIn(ctx context.Context, out io.Writer, args ...string) int {
	return run(ctx, args, out, out)
}

// waitCmdLog polls the log l of a command running until exited receives its
// code, until cond holds of it; it fails on a deadline, or if the command
// exited first.
func waitCmdLog(t *testing.T, l *syncbuf.Buffer, exited chan int, what string, cond func(string) bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond(l.String()) {
		select {
		case code := <-exited:
			exited <- code
			if cond(l.String()) {
				return // the line came just before the exit
			}
			t.Fatalf("waiting for %s: the command exited %d\n%s", what, code, l.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: timed out\n%s", what, l.String())
		}
	}
}
