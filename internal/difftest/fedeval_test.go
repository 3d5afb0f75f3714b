package difftest

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/coordinator"
	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/sim"
)

// TestFederatedEvaluationAgrees runs a run with federated evaluation
// every round (clients hold out 20 % of their examples) through sim.Run
// and through a single-node coordinator (Raft on disk, gRPC on 127.0.0.1)
// with six client runtimes. The coordinator's aggregate of each round is
// the weighted mean of the evaluations the clients computed and sent,
// recomputed here by hand; and it equals the simulator's bit for bit,
// with dense downloads and with a download codec (where the clients
// evaluate the model they reconstruct).
func TestFederatedEvaluationAgrees(t *testing.T) {
	for _, tc := range []struct{ upload, download string }{{"stcm", ""}, {"topk=0.05,bits=4,ef=on", "stc"}} {
		t.Run(fmt.Sprintf("up=%s,down=%s", tc.upload, tc.download), func(t *testing.T) {
			rc := run("fedavg", tc.upload, tc.download, 0)
			rc.FedEvalEvery = 1
			d := data(t, 0)
			var err error
			if d.Parts, d.HeldOut, err = dataset.HoldOut(d.Parts, 0.2, 9); err != nil {
				t.Fatal(err)
			}
			model, err := nn.ParseArch(rc.Model, rc.InputDim, rc.Classes)
			if err != nil {
				t.Fatal(err)
			}
			init := make([]float32, model.NumParams())
			model.Init(init, rc.InitSeed)
			res, err := sim.Run(context.Background(), sim.Config{Spec: rc.Spec, Workers: 2}, model, init, d, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, sent := evalCluster(t, rc, d)
			if len(got) == 0 || got[len(got)-1].Round != rc.Round.Rounds {
				t.Fatalf("the cluster's last round has no evaluation: %+v", got)
			}
			for _, c := range got {
				// By hand, from what the clients sent in the round.
				var n uint64
				var loss, acc float64
				reps := sent[c.Round]
				for _, id := range slices.Sorted(maps.Keys(reps)) {
					e := reps[id]
					n += e.Examples
					loss += float64(e.Examples) * e.Loss
					acc += float64(e.Examples) * e.Accuracy
				}
				if c.Eval.Reports != len(reps) || c.Eval.Examples != n || c.Eval.Version != uint64(c.Round-1) ||
					math.Abs(c.Eval.Loss-loss/float64(n)) > 1e-12 || math.Abs(c.Eval.Accuracy-acc/float64(n)) > 1e-12 {
					t.Fatalf("round %d: the coordinator aggregated %+v; the clients sent %v", c.Round, c.Eval, reps)
				}
				s := res.Rounds[c.Round-1].FedEval
				if s == nil || math.Float64bits(s.Loss) != math.Float64bits(c.Eval.Loss) || math.Float64bits(s.Accuracy) != math.Float64bits(c.Eval.Accuracy) || *s != c.Eval {
					t.Fatalf("round %d: the simulator has %+v, the cluster %+v", c.Round, s, c.Eval)
				}
			}
			t.Logf("%d rounds agree; last: %+v", len(got), got[len(got)-1].Eval)
		})
	}
}

// roundEval is one round's federated evaluation as the coordinator
// committed it.
type roundEval struct {
	Round int
	Eval  round.EvalSummary
}

// evalCluster runs rc as cluster does, with trainers that also evaluate,
// and returns the evaluations of the closed rounds it saw (the last round
// always: it reads it after the run) and, by round and client, what the
// clients reported.
func evalCluster(t *testing.T, rc coordinator.RunConfig, d sim.Data) ([]roundEval, map[int]map[round.ClientID]round.EvalReport) {
	t.Helper()
	var (
		mu   sync.Mutex
		seen []roundEval
		sent = map[int]map[round.ClientID]round.EvalReport{}
	)
	v, _, _ := runCluster(t, rc, d, clusterOpts{
		examples: 1 << 20, // at least the held-out examples a client reports
		trainer: func(p partTrainer, id *atomic.Uint64) client.Trainer {
			return &evalTrainer{partTrainer: p, record: func(r int, e client.EvalResult) {
				mu.Lock()
				defer mu.Unlock()
				if sent[r] == nil {
					sent[r] = map[round.ClientID]round.EvalReport{}
				}
				sent[r][round.ClientID(id.Load())] = round.EvalReport{Examples: uint64(e.Examples), Loss: e.Loss, Accuracy: e.Accuracy}
			}}
		},
		watch: func(v coordinator.Progress) {
			if e := v.LastClosed.Eval; e != nil {
				mu.Lock()
				seen = append(seen, roundEval{v.LastClosed.Round, *e})
				mu.Unlock()
			}
		},
	})
	if v.LastClosed.Eval == nil {
		t.Fatalf("the run ended with no evaluation: %+v", v.LastClosed)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) == 0 || seen[len(seen)-1].Round != v.LastClosed.Round {
		seen = append(seen, roundEval{v.LastClosed.Round, *v.LastClosed.Eval})
	}
	return seen, sent
}

// evalTrainer is a partTrainer that evaluates on the client's held-out
// part, and records what it evaluated for the round it is asked in: the
// runtime evaluates right before it trains, in the same task.
type evalTrainer struct {
	partTrainer
	pending *client.EvalResult
	record  func(round int, e client.EvalResult)
}

func (p *evalTrainer) Evaluate(ctx context.Context, params []float32) (client.EvalResult, error) {
	id := round.ClientID(p.id.Load())
	for k := range p.data.Parts {
		if sim.ClientID(k) == id {
			r, err := client.DataTrainer{NN: p.nn, X: p.data.Train.X, Y: p.data.Train.Y, HeldOut: p.data.HeldOut[k]}.Evaluate(ctx, params)
			if err == nil {
				p.pending = &r
			}
			return r, err
		}
	}
	return client.EvalResult{}, fmt.Errorf("client %d holds no part of the data", id)
}

func (p *evalTrainer) Train(ctx context.Context, params []float32, task client.Task) (client.Result, error) {
	if p.pending != nil {
		p.record(task.Round, *p.pending)
		p.pending = nil
	}
	return p.partTrainer.Train(ctx, params, task)
}
