package remote_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/client/remote"
	"github.com/fedzip/fedzip/coordinator"
	"github.com/fedzip/fedzip/coordinator/server"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// Running clients against a coordinator from Go: remote.Run registers
// with the join secret, then fetches each task, downloads the global
// model, trains it with the Trainer that NewTrainer returns for the task's
// model, and uploads the update compressed with the task's codec, until
// the coordinator says training is done. Here three clients, each with
// its own data, train against a single coordinator node started in the
// same process on 127.0.0.1 (examples/custom-trainer is the same as a
// program, with TLS and a model written by hand).
func ExampleRun() {
	dir, err := os.MkdirTemp("", "fedzip-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	addr, stop := startCoordinator(ctx, dir, "s3cret")
	defer stop()

	type done struct {
		name string
		sum  remote.Summary
		err  error
	}
	results := make(chan done)
	for i := range 3 {
		x, y := localData(uint64(i))
		cfg := remote.Config{
			Addrs:      []string{addr},
			Insecure:   true, // TLS: set TLS, e.g. from transport.ClientTLSConfig(ca, cert, key)
			Name:       fmt.Sprintf("client-%d", i),
			JoinSecret: "s3cret",
			StateDir:   filepath.Join(dir, fmt.Sprintf("client-%d", i)),
			Examples:   uint64(len(y)),
			// The task names the model; build it, and train it on the
			// local data. An error refuses the task.
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
			},
		}
		go func() {
			sum, err := remote.Run(ctx, cfg)
			results <- done{cfg.Name, sum, err}
		}()
	}
	var lines []string
	for range 3 {
		r := <-results
		if r.err != nil {
			panic(r.err)
		}
		lines = append(lines, fmt.Sprintf("%s: updates accepted in rounds %v", r.name, r.sum.Rounds))
	}
	slices.Sort(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
	// Output:
	// client-0: updates accepted in rounds [1 2 3]
	// client-1: updates accepted in rounds [1 2 3]
	// client-2: updates accepted in rounds [1 2 3]
}

// The example's run: logistic regression ("mlp:") on 8 features and 3
// classes, 3 rounds in which all 3 clients train.
const (
	exampleDim     = 8
	exampleClasses = 3
)

// localData is a client's own data: 60 random examples labelled by a
// fixed linear rule.
func localData(seed uint64) ([]float32, []uint8) {
	r := rand.New(rand.NewPCG(seed, 1))
	const n = 60
	x, y := make([]float32, n*exampleDim), make([]uint8, n)
	for i := range y {
		row := x[i*exampleDim : (i+1)*exampleDim]
		for j := range row {
			row[j] = float32(r.NormFloat64())
		}
		y[i] = uint8(min(max(int(row[0]+row[1]+1.5), 0), exampleClasses-1))
	}
	return x, y
}

// startCoordinator starts a single coordinator node on 127.0.0.1 with
// its Raft log on disk under dir, as `fedzip coordinator --insecure`
// would, and returns its gRPC address.
func startCoordinator(ctx context.Context, dir, secret string) (addr string, stop func()) {
	return startCoordinatorRun(ctx, dir, secret, &coordinator.RunConfig{Spec: runspec.Spec{Model: "mlp:", InputDim: exampleDim, Classes: exampleClasses, InitSeed: 1,
		Strategy: "fedavg", Round: round.Config{Fraction: 1, MinClients: 3, Rounds: 3, Deadline: time.Minute, Seed: 1},
		TaskSeed: 1, LocalEpochs: 1, BatchSize: 10, LR: 0.1, UploadCodec: "topk=0.5,bits=8,ef=on"}})
}

// startCoordinatorRun is startCoordinator for the run given.
func startCoordinatorRun(ctx context.Context, dir, secret string, run *coordinator.RunConfig) (addr string, stop func()) {
	s := startCoordinatorServer(ctx, dir, secret, run)
	return s.GRPCAddr(), func() { s.Close() }
}

// startCoordinatorServer is startCoordinatorRun returning the node, for
// tests that read its FSM; the caller closes it.
func startCoordinatorServer(ctx context.Context, dir, secret string, run *coordinator.RunConfig) *server.Server {
	cfg := server.DefaultConfig()
	cfg.Run = run
	cfg.Dataset = "example"
	cfg.StateDir = filepath.Join(dir, "coordinator")
	cfg.ListenAddr, cfg.RaftAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Insecure, cfg.JoinSecret = true, secret
	cfg.LongPoll = time.Second
	cfg.Node = func(c *coordinator.Config) { // a faster election than a real network needs
		c.Raft = func(r *raft.Config) {
			r.HeartbeatTimeout, r.ElectionTimeout, r.LeaderLeaseTimeout = 100*time.Millisecond, 100*time.Millisecond, 100*time.Millisecond
		}
	}
	s, err := server.Start(ctx, cfg)
	if err != nil {
		panic(err)
	}
	return s
}
