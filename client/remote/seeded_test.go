package remote_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/client/remote"
	"github.com/fedzip/fedzip/coordinator"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// checkedTrainer trains as its inner trainer, after checking that the
// model the client downloaded (the params it is given) is the
// coordinator's client model bit for bit, at the version before the
// round's.
type checkedTrainer struct {
	client.Trainer
	t    *testing.T
	name string
	fsm  *coordinator.FSM
	mu   *sync.Mutex
	seen map[string]int
}

func (c checkedTrainer) Train(ctx context.Context, params []float32, task client.Task) (client.Result, error) {
	want, v := c.fsm.ClientModel()
	if v != uint64(task.Round-1) {
		c.t.Errorf("client %s, round %d: the coordinator is at version %d", c.name, task.Round, v)
	}
	for i := range want {
		if math.Float32bits(params[i]) != math.Float32bits(want[i]) {
			c.t.Errorf("client %s, round %d: coordinate %d is %v, the coordinator's client model %v", c.name, task.Round, i, params[i], want[i])
			break
		}
	}
	c.mu.Lock()
	c.seen[c.name]++
	c.mu.Unlock()
	return c.Trainer.Train(ctx, params, task)
}

// TestSecAggSeededDownloads runs three remote clients against a
// coordinator node (its Raft log on disk, gRPC on 127.0.0.1) for four
// secure aggregation rounds with a random support and seeded downloads:
// before training in each round, every client holds the coordinator's
// client model bit for bit (each applied the sync it downloaded with a
// replica that rebuilds the supports from their seeds, knowing nothing
// of the run, and none was refused), and the sync from the version the
// clients held last names seeds, not indices.
func TestSecAggSeededDownloads(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const rounds = 4
	run := &coordinator.RunConfig{Spec: runspec.Spec{Model: "mlp:16", InputDim: exampleDim, Classes: exampleClasses, InitSeed: 1,
		Strategy: "fedavg", Round: round.Config{Fraction: 1, MinClients: 3, Rounds: rounds, Deadline: time.Minute, Seed: 1},
		TaskSeed: 1, LocalEpochs: 1, BatchSize: 10, LR: 0.1, UploadCodec: "none",
		DownloadCodec: runspec.SeededDownloadCodec, DownloadMaxLag: 2,
		SecAgg: &runspec.SecAgg{Fraction: 0.2, Bits: 8}}}
	srv := startCoordinatorServer(ctx, dir, "s3cret", run)
	defer srv.Close()
	fsm := srv.Node().FSM()

	var mu sync.Mutex
	seen := map[string]int{}
	var logs lockedBuffer
	errs := make(chan error)
	for i := range 3 {
		x, y := localData(uint64(i))
		name := fmt.Sprint(i)
		cfg := remote.Config{Addrs: []string{srv.GRPCAddr()}, Insecure: true, Name: name, JoinSecret: "s3cret",
			StateDir: filepath.Join(dir, name), Examples: uint64(len(y)),
			Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
			NewTrainer: func(task *fedzippb.Task) (client.Trainer, error) {
				if task.GetDownloadCodec() != runspec.SeededDownloadCodec {
					return nil, fmt.Errorf("task download codec %q", task.GetDownloadCodec())
				}
				m, err := nn.ParseModel(task.GetModel(), nn.Flat(int(task.GetInputDim())), int(task.GetClasses()))
				if err != nil {
					return nil, err
				}
				idx := make([]int, len(y))
				for j := range idx {
					idx[j] = j
				}
				inner := client.DataTrainer{NN: nn.NewTrainer(m, int(task.GetBatchSize())), X: x, Y: y, Index: idx}
				return checkedTrainer{Trainer: inner, t: t, name: name, fsm: fsm, mu: &mu, seen: seen}, nil
			}}
		go func() {
			_, err := remote.Run(ctx, cfg)
			errs <- err
		}()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if l := logs.String(); strings.Contains(l, "refused") {
		t.Errorf("a client refused a sync:\n%s", l)
	}
	for i := range 3 {
		if n := seen[fmt.Sprint(i)]; n != rounds {
			t.Errorf("client %d trained %d times, want %d", i, n, rounds)
		}
	}
	// The sync from the version the clients held last is seeded. (Across
	// more versions, or from version 0, the encoder sends the smaller
	// form: on this model of 195 parameters, often the explicit one.)
	for _, have := range []uint64{rounds - 1} {
		d, ok := fsm.ServeDownload(have, true)
		if !ok || !d.Delta {
			t.Fatalf("from version %d: %+v", have, d)
		}
		h, err := gradient.ReadHeader(d.Payload, gradient.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if h.Selection != gradient.RandK {
			t.Errorf("the sync from version %d to %d lists indices (%d bytes), not seeds", have, d.Version, len(d.Payload))
		}
	}
}

// lockedBuffer is a bytes.Buffer that clients may log to concurrently.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
