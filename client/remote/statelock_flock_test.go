//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package remote

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// TestStateDirLocked: a client refuses, before it dials, a state directory
// that another holds (two clients on one would share one identity and
// count as one, silently), and takes it once the other lets it go.
func TestStateDirLocked(t *testing.T) {
	dir := t.TempDir()
	release, err := lockStateDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Addrs: []string{"127.0.0.1:1"}, Insecure: true, StateDir: dir,
		NewTrainer: func(*fedzippb.Task) (client.Trainer, error) { return nil, errors.New("not called") }}
	// Without the lock Run would dial, and retry until ctx ends.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := Run(ctx, cfg); !errors.Is(err, ErrStateDirInUse) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("Run on a locked state directory: %v, want ErrStateDirInUse naming it", err)
	}
	release()
	again, err := lockStateDir(dir)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	again()
}
