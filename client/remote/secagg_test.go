package remote_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/client/remote"
	"github.com/fedzip/fedzip/coordinator"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// TestSecAggClients runs remote clients against a coordinator node with
// secure aggregation, over gRPC on 127.0.0.1 with its Raft log on disk:
// every client takes part in the protocol of both rounds (each runs a
// secagg.Client with crypto/rand and sends its steps through SecAggStep),
// and the run finishes.
func TestSecAggClients(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := &coordinator.RunConfig{Spec: runspec.Spec{Model: "mlp:", InputDim: exampleDim, Classes: exampleClasses, InitSeed: 1,
		Strategy: "fedavg", Round: round.Config{Fraction: 1, MinClients: 3, Rounds: 2, Deadline: time.Minute, Seed: 1},
		TaskSeed: 1, LocalEpochs: 1, BatchSize: 10, LR: 0.1, UploadCodec: "none",
		SecAgg: &runspec.SecAgg{Fraction: 0.5, Bits: 8}}}
	addr, stop := startCoordinatorRun(ctx, dir, "s3cret", run)
	defer stop()
	type done struct {
		sum remote.Summary
		err error
	}
	results := make(chan done)
	for i := range 3 {
		x, y := localData(uint64(i))
		cfg := remote.Config{Addrs: []string{addr}, Insecure: true, Name: fmt.Sprint(i), JoinSecret: "s3cret",
			StateDir: filepath.Join(dir, fmt.Sprint(i)), Examples: uint64(len(y)),
			NewTrainer: func(task *fedzippb.Task) (client.Trainer, error) {
				m, err := nn.ParseModel(task.GetModel(), nn.Flat(int(task.GetInputDim())), int(task.GetClasses()))
				if err != nil {
					return nil, err
				}
				idx := make([]int, len(y))
				for j := range idx {
					idx[j] = j
				}
				return client.DataTrainer{NN: nn.NewTrainer(m, int(task.GetBatchSize())), X: x, Y: y, Index: idx}, nil
			}}
		go func() {
			sum, err := remote.Run(ctx, cfg)
			results <- done{sum, err}
		}()
	}
	for range 3 {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		if fmt.Sprint(r.sum.Rounds) != "[1 2]" || r.sum.Bytes == 0 {
			t.Errorf("client %d: secure aggregation rounds %v, %d bytes sent", r.sum.ClientID, r.sum.Rounds, r.sum.Bytes)
		}
	}
}
