package remote_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/client/remote"
	"github.com/fedzip/fedzip/coordinator"
	"github.com/fedzip/fedzip/coordinator/server"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/secagg"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// trained is what a client's trainer was handed in one round, and what it
// returned.
type trained struct {
	round          int
	optimizer      string
	support        []int32
	global, params []float32
	// served is the round's support as the coordinator's FSM serves it
	// (coordinator.FSM.SecAggTask, rebuilt by package secagg) while the
	// client trains.
	served []int32
}

// taskRecorder trains with tr and records every round.
type taskRecorder struct {
	tr  client.Trainer
	fsm *coordinator.FSM
	mu  *sync.Mutex
	to  *[]trained
}

func (r taskRecorder) Train(ctx context.Context, p []float32, task client.Task) (client.Result, error) {
	global := slices.Clone(p)
	served, err := servedSupport(r.fsm, task.Round, len(p))
	if err != nil {
		return client.Result{}, err
	}
	res, err := r.tr.Train(ctx, p, task)
	r.mu.Lock()
	*r.to = append(*r.to, trained{task.Round, task.Local, slices.Clone(task.Support), global, slices.Clone(p), served})
	r.mu.Unlock()
	return res, err
}

// servedSupport returns the support of round rnd's protocol on fsm, for
// a model of n parameters, from the task the FSM serves any of clients
// 1 to 3 (the round's support is the same for each).
func servedSupport(fsm *coordinator.FSM, rnd, n int) ([]int32, error) {
	var err error
	for id := range round.ClientID(3) {
		var t coordinator.SecAggTask
		if t, err = fsm.SecAggTask(id+1, rnd); err != nil {
			continue
		}
		if t.Announced.Block == 0 {
			idx := make([]int32, t.Params.D)
			secagg.Support(idx, n, t.SupportSeed)
			return idx, nil
		}
		idx, _, err := t.Announced.Support(n, t.Params.Session, t.SupportSeed)
		return idx, err
	}
	return nil, err
}

// TestSecAggSupportAdamClients runs 'fedzip coordinator --secagg
// --secagg-local support-adam' with three 'fedzip client's: a node with
// its Raft log on disk and three client/remote runtimes over gRPC on
// 127.0.0.1, for three rounds, with a random and with an announced
// support. In every round every client trains with support-adam on one
// and the same support of the round's dim coordinates, which it learnt
// from its advertise step before training; it moves no coordinate off
// it; and the global model's change in the round lies on that support
// and covers most of it (a coordinate whose codes sum to zero stays put):
// the round's secure sum is of what the clients trained, on the
// coordinates they trained.
func TestSecAggSupportAdamClients(t *testing.T) {
	for _, support := range []string{"random", "announced"} {
		t.Run(support, func(t *testing.T) { secAggSupportAdamRun(t, support) })
	}
}

func secAggSupportAdamRun(t *testing.T, support string) {
	const rounds = 3
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := startCoordinatorServer(ctx, dir, "s3cret", &coordinator.RunConfig{Spec: runspec.Spec{Model: "mlp:", InputDim: exampleDim, Classes: exampleClasses, InitSeed: 1,
		Strategy: "fedavg", Round: round.Config{Fraction: 1, MinClients: 3, Rounds: rounds, Deadline: time.Minute, Seed: 1},
		TaskSeed: 1, LocalEpochs: 1, BatchSize: 10, LR: 0.07, UploadCodec: "none",
		SecAgg: &runspec.SecAgg{Fraction: 0.5, Bits: 8, Clip: 0.5, Support: support, Local: runspec.SecAggLocalSupportAdam}}})
	defer s.Close()

	var mu sync.Mutex
	records := make([][]trained, 3)
	type done struct {
		sum remote.Summary
		err error
	}
	results := make(chan done)
	for i := range 3 {
		x, y := localData(uint64(i))
		ccfg := remote.Config{Addrs: []string{s.GRPCAddr()}, Insecure: true, Name: fmt.Sprint(i), JoinSecret: "s3cret",
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
				return taskRecorder{client.DataTrainer{NN: nn.NewTrainer(m, int(task.GetBatchSize())), X: x, Y: y, Index: idx}, s.Node().FSM(), &mu, &records[i]}, nil
			}}
		go func() {
			sum, err := remote.Run(ctx, ccfg)
			results <- done{sum, err}
		}()
	}
	for range 3 {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		if fmt.Sprint(r.sum.Rounds) != "[1 2 3]" || r.sum.Bytes == 0 {
			t.Errorf("client %d: secure aggregation rounds %v, %d bytes sent", r.sum.ClientID, r.sum.Rounds, r.sum.Bytes)
		}
	}
	final, version := s.Node().FSM().Model()
	if version != rounds {
		t.Fatalf("the run ended at model version %d, want %d", version, rounds)
	}
	for i, rec := range records {
		if len(rec) != rounds {
			t.Fatalf("client %d trained %d times, want %d", i, len(rec), rounds)
		}
	}
	var prev []int32
	for r := range rounds {
		first := records[0][r]
		if first.round != r+1 || first.optimizer != runspec.SecAggLocalSupportAdam || !slices.Equal(first.support, first.served) || len(first.support) >= len(final) {
			t.Fatalf("round %d: client 0 trained round %d with %q on %v, the coordinator's support is %v", r+1, first.round, first.optimizer, first.support, first.served)
		}
		if support == "random" && slices.Equal(first.support, prev) {
			t.Errorf("round %d trained on round %d's random support", r+1, r)
		}
		prev = first.support
		for i, rec := range records {
			c := rec[r]
			if c.round != first.round || c.optimizer != first.optimizer || !slices.Equal(c.support, first.support) || !slices.Equal(c.global, first.global) {
				t.Fatalf("round %d: client %d trained round %d with %q on %v from another model, client 0 on %v", r+1, i, c.round, c.optimizer, c.support, first.support)
			}
			for j := range c.global {
				if _, on := slices.BinarySearch(c.support, int32(j)); !on && c.params[j] != c.global[j] {
					t.Fatalf("round %d: client %d moved coordinate %d, off the support", r+1, i, j)
				}
			}
		}
		next := final
		if r+1 < rounds {
			next = records[0][r+1].global
		}
		var changed []int32
		for j := range next {
			if next[j] != first.global[j] {
				changed = append(changed, int32(j))
			}
		}
		// The model moves on the support only, and on most of it (a
		// coordinate whose codes sum to zero stays put).
		off := 0
		for _, j := range changed {
			if _, on := slices.BinarySearch(first.support, j); !on {
				off++
			}
		}
		if off > 0 || 2*len(changed) < len(first.support) {
			t.Errorf("round %d: the model changed on %v, the clients trained on %v", r+1, changed, first.support)
		}
	}
}

// TestSecAggSupportAdamFailover runs two support-adam rounds on a 3-node
// cluster (Raft on disk, gRPC on 127.0.0.1) with three client/remote
// clients that know every node. The leader is closed while the first
// client trains round 1: after it asked for the advertise step, whose
// support it trains on, and before it sends its advert. The client sends
// the advert to the new leader, which takes it: every client takes part
// in both rounds, and the two live nodes end with one model.
func TestSecAggSupportAdamFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("3-node cluster in -short mode")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	run := &coordinator.RunConfig{Spec: runspec.Spec{Model: "mlp:", InputDim: exampleDim, Classes: exampleClasses, InitSeed: 1,
		Strategy: "fedavg", Round: round.Config{Fraction: 1, MinClients: 3, Rounds: 2, Deadline: 2 * time.Minute, Seed: 1},
		TaskSeed: 1, LocalEpochs: 1, BatchSize: 10, LR: 0.07, UploadCodec: "none",
		SecAgg: &runspec.SecAgg{Fraction: 0.5, Bits: 8, Clip: 0.5, Local: runspec.SecAggLocalSupportAdam}}}
	var nodes []*server.Server
	var addrs []string
	defer func() {
		for _, s := range nodes {
			s.Close()
		}
	}()
	for i := range 3 {
		cfg := server.DefaultConfig()
		cfg.Run, cfg.Dataset = run, "example"
		cfg.ID, cfg.StateDir = fmt.Sprintf("n%d", i+1), filepath.Join(dir, fmt.Sprintf("n%d", i+1))
		cfg.ListenAddr, cfg.RaftAddr = "127.0.0.1:0", "127.0.0.1:0"
		cfg.Insecure, cfg.JoinSecret, cfg.ClusterSecret = true, "s3cret", "cs"
		cfg.LongPoll = time.Second
		if i > 0 {
			cfg.Join, cfg.Bootstrap = []string{nodes[0].GRPCAddr()}, false
		}
		cfg.Node = func(c *coordinator.Config) {
			c.Raft = func(r *raft.Config) {
				r.HeartbeatTimeout, r.ElectionTimeout, r.LeaderLeaseTimeout = 100*time.Millisecond, 100*time.Millisecond, 100*time.Millisecond
			}
		}
		s, err := server.Start(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, s)
		addrs = append(addrs, s.GRPCAddr())
	}
	// failover closes the leader once, and returns when another node
	// leads.
	var once sync.Once
	closed := -1
	failover := func() error {
		var err error
		once.Do(func() {
			for i, s := range nodes {
				if s.Node().IsLeader() {
					closed = i
					s.Close()
					break
				}
			}
			if closed < 0 {
				err = fmt.Errorf("no leader to close")
				return
			}
			for ctx.Err() == nil {
				for i, s := range nodes {
					if i != closed && s.Node().IsLeader() {
						return
					}
				}
				time.Sleep(10 * time.Millisecond)
			}
			err = ctx.Err()
		})
		return err
	}

	type done struct {
		sum remote.Summary
		err error
	}
	results := make(chan done)
	for i := range 3 {
		x, y := localData(uint64(i))
		cfg := remote.Config{Addrs: addrs, Insecure: true, Name: fmt.Sprint(i), JoinSecret: "s3cret",
			StateDir: filepath.Join(dir, fmt.Sprint(i)), Examples: uint64(len(y)), MaxBackoff: 200 * time.Millisecond,
			NewTrainer: func(task *fedzippb.Task) (client.Trainer, error) {
				m, err := nn.ParseModel(task.GetModel(), nn.Flat(int(task.GetInputDim())), int(task.GetClasses()))
				if err != nil {
					return nil, err
				}
				idx := make([]int, len(y))
				for j := range idx {
					idx[j] = j
				}
				tr := client.DataTrainer{NN: nn.NewTrainer(m, int(task.GetBatchSize())), X: x, Y: y, Index: idx}
				if i > 0 {
					return tr, nil
				}
				return failingOver{tr, failover}, nil
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
		if fmt.Sprint(r.sum.Rounds) != "[1 2]" {
			t.Errorf("client %d: secure aggregation rounds %v", r.sum.ClientID, r.sum.Rounds)
		}
	}
	if closed < 0 {
		t.Fatal("no leader was closed")
	}
	var live []*server.Server
	for i, s := range nodes {
		if i != closed {
			live = append(live, s)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for {
		_, v0 := live[0].Node().FSM().Model()
		_, v1 := live[1].Node().FSM().Model()
		if v0 == 2 && v1 == 2 && live[0].Node().FSM().ModelHash() == live[1].Node().FSM().ModelHash() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the live nodes hold versions %d and %d", v0, v1)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// failingOver trains with tr after it has run failover, in round 1.
type failingOver struct {
	tr       client.Trainer
	failover func() error
}

func (f failingOver) Train(ctx context.Context, p []float32, task client.Task) (client.Result, error) {
	if task.Round == 1 {
		if err := f.failover(); err != nil {
			return client.Result{}, err
		}
	}
	return f.tr.Train(ctx, p, task)
}
