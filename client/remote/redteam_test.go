package remote

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/internal/syncbuf"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// TestRedteamTaskShapeChangeRebuildsTrainer: the runtime keeps its
// trainer while the task names the same network, and NewTrainer is where
// the client checks the network against its data (fedzip client refuses a
// model that reads another shape than its examples). A coordinator that
// keeps the model, input_dim and parameter count but changes the input
// shape (1×2×2 to 4×1×1 here) must get a new NewTrainer call, not the
// trainer built for the old shape.
func TestRedteamTaskShapeChangeRebuildsTrainer(t *testing.T) {
	e := startEvil(t)
	logs := &syncbuf.Buffer{}
	want := nn.Shape{C: 1, H: 2, W: 2}
	ctx, cancel := context.WithCancel(context.Background())
	cfg := Config{Addrs: []string{e.Addr}, Insecure: true, Name: "honest", StateDir: t.TempDir(), Examples: 5, MaxBackoff: 30 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
		NewTrainer: func(task *fedzippb.Task) (client.Trainer, error) {
			m, err := TaskModel(task)
			if err != nil {
				return nil, err
			}
			if m.InputShape() != want {
				return nil, fmt.Errorf("the model reads %v, local data has %v", m.InputShape(), want)
			}
			return divergingTrainer{}, nil
		}}
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, cfg)
		done <- err
	}()
	t.Cleanup(func() { cancel(); <-done })
	e.exited = done

	task := func(r uint64, c, h, w uint32) *fedzippb.Task {
		tk := goodTask(r, r-1, false)
		tk.Model, tk.InputChannels, tk.InputHeight, tk.InputWidth = "relu,fc:3", c, h, w
		return tk
	}
	if _, err := TaskModel(task(1, 4, 1, 1)); err != nil {
		t.Fatalf("the second task is valid on its own: %v", err)
	}
	trainedAndSent(t, e, logs, task(1, 1, 2, 2), filled(0.5))
	refusedAndWaiting(t, e, logs, "shape 4x1x1", task(2, 4, 1, 1), filled(0.5), "local data has")
}
