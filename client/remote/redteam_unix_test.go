//go:build unix

package remote

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/fedzip/fedzip/gradient"
)

// TestRedteamReplicaFileNotRegular: StateDir/replica.bin that is a FIFO
// (nobody writes to it) or a symlink to /dev/zero (endless bytes, size 0)
// must be discarded at once, not block the client for ever or read
// without bound: the client then starts from the initial model.
func TestRedteamReplicaFileNotRegular(t *testing.T) {
	init := []float32{0.5, -0.25, 1, 2}
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.bin")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip(err)
	}
	zero := filepath.Join(dir, "zero.bin")
	if err := os.Symlink("/dev/zero", zero); err != nil {
		t.Skip(err)
	}
	for _, path := range []string{fifo, zero} {
		type result struct {
			rep *gradient.Replica
			err error
		}
		done := make(chan result, 1)
		go func() {
			rep, err := loadReplica(path, init)
			done <- result{rep, err}
		}()
		select {
		case got := <-done:
			if got.rep != nil || got.err == nil {
				t.Fatalf("%s: loaded %v (%v), want an error", path, got.rep, got.err)
			}
		case <-time.After(30 * time.Second):
			// Unblock the reader of the FIFO so that it does not leak.
			if w, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
				w.Close()
			}
			<-done
			t.Fatalf("%s: loadReplica did not return within 30s", path)
		}
	}
}
