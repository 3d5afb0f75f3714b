package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedzip/fedzip/internal/workdir"
)

// assertEmpty fails if dir holds anything: a command wrote into the
// working directory (a checkout) instead of the work folder.
func assertEmpty(t *testing.T, dir, after string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) > 0 {
		t.Fatalf("%s wrote into the working directory: %v", after, names)
	}
}

// TestDefaultsStayInWorkFolder follows the README's commands with their
// default folders from an empty working directory: simulate's device model
// and key, dev-certs, report, a coordinator's and a client's state all go
// into $FEDZIP_HOME, the working directory stays empty, and a second
// simulate reuses the signing key (newcomer item 12).
func TestDefaultsStayInWorkFolder(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	t.Setenv(workdir.Env, home)
	cwd := t.TempDir()
	t.Chdir(cwd)

	sim := []string{"simulate", "--dataset", "synthetic", "--clients", "2", "--fraction", "1", "--model", "mlp:8", "--rounds", "1", "--quiet",
		"--deliver-recipe", "prune=0.5;encode=huffman"}
	if code, _, stderr := runCmd(sim...); code != exitOK {
		t.Fatalf("simulate: exit %d: %s", code, stderr)
	}
	assertEmpty(t, cwd, "simulate")
	fi, err := os.Stat(home)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("work folder %v, %v; want mode 0700", fi, err)
	}
	keyFile := filepath.Join(home, "fedzip-model.key.pem")
	key1, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"fedzip-model.fzm", "fedzip-model.pub.pem"} {
		if _, err := os.Stat(filepath.Join(home, f)); err != nil {
			t.Fatal(err)
		}
	}
	if code, _, stderr := runCmd(sim...); code != exitOK {
		t.Fatalf("simulate again: exit %d: %s", code, stderr)
	}
	if key2, err := os.ReadFile(keyFile); err != nil || !bytes.Equal(key1, key2) {
		t.Fatalf("the second simulate did not reuse the signing key: %v", err)
	}

	if code, stdout, stderr := runCmd("dev-certs"); code != exitOK || !strings.Contains(stdout, filepath.Join(home, "certs", "ca.pem")) {
		t.Fatalf("dev-certs: exit %d: %s%s", code, stdout, stderr)
	}
	if fi, err := os.Stat(filepath.Join(home, "certs", "client-key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("dev-certs key: %v, %v", fi, err)
	}
	assertEmpty(t, cwd, "dev-certs")

	metrics := filepath.Join(t.TempDir(), "run.jsonl")
	os.WriteFile(metrics, []byte(`{"round":1,"test_accuracy":0.5,"upload_bytes":1}`+"\n"), 0o644)
	if code, _, stderr := runCmd("report", metrics); code != exitOK {
		t.Fatalf("report: exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(home, "report", "summary.md")); err != nil {
		t.Fatal(err)
	}
	assertEmpty(t, cwd, "report")

	// A coordinator's state: WORK/coordinator-ID.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var stderr bytes.Buffer
	go func() {
		done <- run(ctx, []string{"coordinator", "--id", "n7", "--insecure", "--open-registration", "--listen", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0",
			"--dataset", "synthetic", "--model", "mlp:8", "--rounds", "1"}, io.Discard, &stderr)
	}()
	raftDB := filepath.Join(home, "coordinator-n7", "raft.db")
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(raftDB); err == nil {
			break
		}
		select {
		case code := <-done:
			cancel()
			t.Fatalf("coordinator exited %d before writing %s: %s", code, raftDB, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("no %s after 2 minutes: %s", raftDB, stderr.String())
		}
	}
	cancel()
	<-done
	assertEmpty(t, cwd, "coordinator")

	// A client's state: WORK/client-INDEX (it gives up at once: no
	// coordinator listens at port 1).
	code, _, errOut := runCmd("client", "--insecure", "--coordinator", "127.0.0.1:1", "--dataset", "synthetic", "--clients", "4", "--client-index", "3", "--timeout", "1s")
	if _, err := os.Stat(filepath.Join(home, "client-3")); err != nil {
		t.Fatalf("client (exit %d: %s): %v", code, errOut, err)
	}
	assertEmpty(t, cwd, "client")
}

// TestHelpShowsResolvedDefaults: help shows the default folders as paths
// in the work folder.
func TestHelpShowsResolvedDefaults(t *testing.T) {
	home := t.TempDir()
	t.Setenv(workdir.Env, home)
	for cmd, want := range map[string]string{
		"coordinator": filepath.Join(home, "coordinator-ID"),
		"client":      filepath.Join(home, "client-INDEX"),
		"simulate":    filepath.Join(home, "fedzip-model.fzm"),
		"report":      filepath.Join(home, "report"),
	} {
		if _, stdout, _ := runCmd(cmd, "-h"); !strings.Contains(stdout, want) {
			t.Errorf("%s -h does not show the default %s", cmd, want)
		}
	}
	_, stdout, _ := runCmd("config", "print", "coordinator", "--id", "n2")
	if !strings.Contains(stdout, "state-dir: "+filepath.Join(home, "coordinator-n2")) {
		t.Errorf("config print coordinator --id n2:\n%s", stdout)
	}
}
