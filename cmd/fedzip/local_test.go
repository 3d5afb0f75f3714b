package main

import (
	"context"
	"io"
	"strings"
	"testing"
)

// TestLocalFlags: 'fedzip local' checks its flags before it starts
// anything; its end-to-end tests are in internal/localcluster.
func TestLocalFlags(t *testing.T) {
	if code, stdout, _ := runCmd("local", "-h"); code != exitOK || !strings.Contains(stdout, "--nodes 3 --clients 6 --rounds 10") {
		t.Fatalf("local -h: exit %d\n%s", code, stdout)
	}
	for _, args := range [][]string{
		{"local", "--nodes", "0"},
		{"local", "--clients", "2", "--min-clients", "3"},
		{"local", "--rounds", "0"},
		{"local", "--dataset", "cifar"},
		{"local", "--base-port", "80"},
	} {
		code, _, stderr := runCmd(args...)
		if code != exitUsage || strings.Count(strings.TrimRight(stderr, "\n"), "\n") != 0 {
			t.Errorf("%v: exit %d, want %d with one line: %q", args, code, exitUsage, stderr)
		}
	}
	// The default --min-clients (2) follows a smaller --clients.
	cfg, _, done := localConfig(context.Background(), []string{"--clients", "1"}, io.Discard, io.Discard)
	if done || cfg.MinClients != 1 {
		t.Fatalf("--clients 1: min clients %d (done %v), want 1", cfg.MinClients, done)
	}
}
