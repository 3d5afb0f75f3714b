package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedzip/fedzip/coordinator"
)

// TestWipedRaftLogExitsOneLine: fedzip coordinator on a state directory
// whose raft.db was truncated to 0 bytes exits 1 with one line that says
// so, instead of starting a new run; --recover without a snapshot says
// there is nothing to recover from.
func TestWipedRaftLogExitsOneLine(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	n, err := coordinator.Open(coordinator.Config{ID: "node1", ClusterID: "fedzip", Dir: dir, RaftAddr: freePort(t), Bootstrap: true})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !n.IsLeader() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	n.Close()
	if err := os.Truncate(filepath.Join(dir, "raft.db"), 0); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		flag, want string
	}{{"--recover=false", "--recover"}, {"--recover", "nothing to recover from"}} {
		// Before markers it started a new run and served until stopped.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		var o, e bytes.Buffer
		code := run(ctx, []string{"coordinator", "--insecure", "--state-dir", dir, "--listen", "127.0.0.1:0", "--raft-addr", freePort(t),
			"--dataset", "synthetic", "--model", "mlp:8", "--gc-percent", "0", "--join-secret", "js", "--cluster-secret", "cs", tc.flag}, &o, &e)
		cancel()
		stderr := e.String()
		lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
		last := lines[len(lines)-1]
		if code != exitError || !strings.HasPrefix(last, "fedzip coordinator: ") || !strings.Contains(last, "raft.db") || !strings.Contains(last, tc.want) {
			t.Fatalf("%s: exit %d, stderr:\n%s", tc.flag, code, stderr)
		}
		if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine ") {
			t.Fatalf("%s: %s", tc.flag, stderr)
		}
		if _, err := os.Stat(filepath.Join(dir, "raft.db")); err != nil {
			t.Fatalf("%s: raft.db moved or deleted: %v", tc.flag, err)
		}
	}
}
