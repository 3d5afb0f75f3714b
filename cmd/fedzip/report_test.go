package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReportCommand(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.jsonl")
	b := filepath.Join(dir, "b.jsonl")
	os.WriteFile(a, []byte(`{"round":1,"test_accuracy":0.91,"upload_bytes":8000000}`+"\n"+`{"round":2,"test_accuracy":0.96,"upload_bytes":8000000}`+"\n"), 0o644)
	os.WriteFile(b, []byte(`{"round":1,"test_accuracy":0.85,"upload_bytes":40000}`+"\n"+`{"round":2,"test_accuracy":null,"upload_bytes":40000}`+"\n"+`{"round":3,"test_accuracy":0.951,"upload_bytes":40000}`+"\n"), 0o644)
	out := filepath.Join(dir, "out")

	var stdout, stderr bytes.Buffer
	// Files before and after flags.
	code := runReport(context.Background(), []string{a, "--out", out, b, "--labels", "dense,sparse", "--targets", "0.9,0.95"}, &stdout, &stderr)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	for _, want := range []string{
		"| dense | 2 | 96.00% | 96.00% (round 2) | 1 round, 8.00 MB | 2 rounds, 16.0 MB | 16.0 MB |",
		"| sparse | 3 | 95.10% | 95.10% (round 3) | 3 rounds, 120 kB | 3 rounds, 120 kB | 120 kB |",
		"wrote " + filepath.Join(out, "accuracy_vs_bytes.png"),
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Fatalf("stdout lacks %q:\n%s", want, stdout.String())
		}
	}
	for _, f := range []string{"accuracy.png", "accuracy_vs_total_bytes.png", "accuracy_vs_bytes.png", "summary.md"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Fatalf("%s: %v", f, err)
		}
	}

	// After "--" everything is a file, even a name that looks like a flag.
	stdout.Reset()
	stderr.Reset()
	code = runReport(context.Background(), []string{"--out", out, "--", a, "--labels"}, &stdout, &stderr)
	if code != exitError || !strings.Contains(stderr.String(), "--labels") {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
}

func TestReportCommandErrors(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.jsonl")
	os.WriteFile(good, []byte(`{"round":1,"test_accuracy":0.5,"upload_bytes":1}`+"\n"), 0o644)
	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(bad, []byte(`{"round":1,"test_accuracy":0.5,"upload_bytes":1}`+"\n"+`{"round":2,`+"\n"), 0o644)
	out := filepath.Join(dir, "out")
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"help", []string{"-h"}, exitOK, ""},
		{"no file", []string{"--out", out}, exitUsage, "no metrics file"},
		{"empty out", []string{good, "--out", ""}, exitUsage, "--out is empty"},
		{"labels count", []string{good, "--out", out, "--labels", "a,b"}, exitUsage, "--labels names 2 runs"},
		{"bad target", []string{good, "--out", out, "--targets", "0.9,97"}, exitUsage, `"97" is not an accuracy`},
		{"unknown flag", []string{good, "--bogus"}, exitUsage, "flag provided but not defined"},
		{"missing file", []string{filepath.Join(dir, "nope.jsonl"), "--out", out}, exitError, "nope.jsonl"},
		{"malformed line", []string{good, bad, "--out", out}, exitError, "bad.jsonl: line 2: malformed metrics line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := runReport(context.Background(), tc.args, &stdout, &stderr)
			if code != tc.code || !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("exit %d, want %d; stderr %q lacks %q", code, tc.code, stderr.String(), tc.want)
			}
			if tc.name == "help" && !strings.Contains(stdout.String(), "fedzip report RUN.jsonl") {
				t.Fatalf("help: %s", stdout.String())
			}
		})
	}
}
