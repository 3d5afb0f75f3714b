package remote

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/internal/syncbuf"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// TestRedteamSecAggCrashBeforeAdvertAck kills a client (sgd and
// support-adam under secure aggregation) while its advert is on the wire:
// fakecoord takes the step-0 message and holds its answer, and the test
// reads the state directory as a kill at that moment leaves it. Nothing
// of the round has been sent, so the error-feedback residual on disk must
// still be the one the round started from (none): a restarted client
// trains the round again and sends its whole update. Before the fix the
// client wrote the residual less what it was about to send when it
// started the protocol, so a client killed before its masked input was
// taken lost the sent part, and a restarted sgd client sent its update's
// off-support part twice.
func TestRedteamSecAggCrashBeforeAdvertAck(t *testing.T) {
	for _, adam := range []bool{false, true} {
		name := "sgd"
		if adam {
			name = "support-adam"
		}
		t.Run(name, func(t *testing.T) {
			e := startEvil(t)
			release := make(chan struct{})
			e.HoldSecAggMessages(release)
			var logs syncbuf.Buffer
			dir := t.TempDir()
			ctx, cancel := context.WithCancel(context.Background())
			cfg := Config{Addrs: []string{e.Addr}, Insecure: true, Name: "crash", StateDir: dir, Examples: 5, MaxBackoff: 30e6,
				Logger:     slog.New(slog.NewTextHandler(&logs, nil)),
				NewTrainer: func(*fedzippb.Task) (client.Trainer, error) { return &supportTrainer{}, nil }}
			done := make(chan error, 1)
			go func() {
				_, err := Run(ctx, cfg)
				done <- err
			}()
			e.exited = done
			step := saGraphTask(5, 4, 3)
			step.Round, step.Ids = 1, []uint64{3, 4, 5, 6, 7} // fakecoord registers every client as 7
			e.SetSecAgg(step)
			task := adamTask(1)
			if !adam {
				task.SecaggLocal = ""
			}
			e.Set(task, filled(0.5))
			waitUntil(t, e, &logs, "the advert of round 1", func() bool { return len(e.SecAggMessages()) > 0 })

			// The client waits for the advert's answer: a kill now
			// leaves this state directory.
			b, err := os.ReadFile(filepath.Join(dir, secAggFile))
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("the client ended with %v\n%s", err, logs.String())
			}
			close(release)
			if errors.Is(err, os.ErrNotExist) {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			res := make([]float32, len(b)/4)
			if _, err := gradient.DecodeFloat32s(res, b); err != nil {
				t.Fatalf("the residual file: %v", err)
			}
			for i, v := range res {
				if v != 0 {
					t.Fatalf("killed before its advert was taken, the client left a residual of %v at %d (want none: nothing was sent)", v, i)
				}
			}
		})
	}
}
