// Package client is the client side of a round: the Trainer interface that
// users implement to plug in their model and data, Step, which turns a
// global model into an update, and ApplyDownload, which turns a model
// download into the model a client trains from. The simulator runs Step for
// its virtual clients; package client/remote runs it against a coordinator
// cluster over gRPC. This package is pure: it does no I/O and imports no
// network code (internal/deps checks it).
package client

import (
	"context"
	"fmt"
	"math/rand/v2"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/runspec"
)

// Task is what a client is asked to do in one round.
type Task struct {
	Round int
	// Seed drives the client's local randomness this round (see
	// round.TaskSeed).
	Seed      uint64
	Epochs    int
	BatchSize int
	Optimizer nn.SGD
	// ProxMu is FedProx's proximal coefficient mu (Li et al. 2020): local
	// training minimises the loss plus mu/2·‖w − w_global‖². Zero is plain
	// local SGD (FedAvg's client).
	ProxMu float32
	// Local is the local optimizer (runspec.SecAgg.Local): "" or
	// runspec.SecAggLocalSGD, SGD with Optimizer on every coordinate;
	// runspec.SecAggLocalSupportAdam, Adam at rate Optimizer.LR on the
	// coordinates Support only (nn.Trainer.SupportAdamEpochs).
	Local string
	// Support are the coordinates local training may change, strictly
	// increasing: the round's secure aggregation support, which the
	// client knows before it trains. nil is every coordinate; only
	// support-adam takes one.
	Support []int32
}

// Validate reports a malformed task: the run spec's check of local
// training (runspec.CheckLocal and runspec.CheckSecAggLocal), whose
// bounds the coordinator and the simulator check a run against before it
// starts, and a support that is not strictly increasing coordinates, is
// missing for support-adam or given to SGD. That the support lies within
// the model is checked by the trainer, which knows the model.
func (t Task) Validate() error {
	if err := runspec.CheckLocal(t.Epochs, t.BatchSize, t.Optimizer, t.ProxMu); err != nil {
		return err
	}
	if err := runspec.CheckSecAggLocal(t.Local, t.Optimizer, t.ProxMu); err != nil {
		return err
	}
	adam := t.Local == runspec.SecAggLocalSupportAdam
	switch {
	case adam && len(t.Support) == 0:
		return fmt.Errorf("%w: local training %s without a support", runspec.ErrInvalid, t.Local)
	case !adam && t.Support != nil:
		return fmt.Errorf("%w: a support of %d coordinates for local SGD, which moves every coordinate", runspec.ErrInvalid, len(t.Support))
	}
	return checkSupport(t.Support, -1)
}

// checkSupport reports a support that is not strictly increasing
// coordinates below n (n < 0: any).
func checkSupport(support []int32, n int) error {
	prev := int32(-1)
	for i, j := range support {
		if j <= prev {
			return fmt.Errorf("%w: support coordinate %d (#%d) after %d: want strictly increasing coordinates", runspec.ErrInvalid, j, i, prev)
		}
		if n >= 0 && int(j) >= n {
			return fmt.Errorf("%w: support coordinate %d (#%d) of a model of %d parameters", runspec.ErrInvalid, j, i, n)
		}
		prev = j
	}
	return nil
}

// Result reports local training.
type Result struct {
	// Examples is the number of local training examples, the client's
	// weight in FedAvg.
	Examples int
	// Loss is the mean training loss of the last local epoch.
	Loss float64
}

// Trainer trains a model on local data. Train receives params holding the
// global model, owned by the caller, and updates them in place; it must not
// keep params after returning. It must be deterministic for a given Task
// (use Task.Seed for all randomness) so that reruns give the same model.
// A Trainer is used by one goroutine at a time.
type Trainer interface {
	Train(ctx context.Context, params []float32, task Task) (Result, error)
}

// Step runs one client round: it copies global into local (so that training
// never touches the global model's memory), trains local in place, and turns
// it into the update local − global. local must have the length of global
// and must not overlap it. The returned update's Delta is local.
func Step(ctx context.Context, tr Trainer, global, local []float32, task Task) (aggregate.Update, Result, error) {
	if len(local) != len(global) {
		panic(fmt.Sprintf("client: Step: len(local) = %d, len(global) = %d", len(local), len(global)))
	}
	if len(global) > 0 && &local[0] == &global[0] {
		panic("client: Step: local aliases the global model")
	}
	copy(local, global)
	res, err := tr.Train(ctx, local, task)
	if err != nil {
		return aggregate.Update{}, res, err
	}
	if res.Examples <= 0 {
		return aggregate.Update{}, res, fmt.Errorf("client: trainer reported %d examples", res.Examples)
	}
	for i, g := range global {
		local[i] -= g
	}
	return aggregate.Update{Weight: float64(res.Examples), Delta: local}, res, nil
}

// DataTrainer trains an nn.Model (an MLP or a conv net, through
// nn.Trainer) on examples held in memory: the rows Index of X (row-major,
// InputDim() floats each, an image in NCHW order for a net) with labels Y.
// It is the built-in trainer of the simulator and of 'fedzip client'.
type DataTrainer struct {
	NN    *nn.Trainer
	X     []float32
	Y     []uint8
	Index []int
	// HeldOut are the rows of X the client evaluates on (Evaluate), kept
	// apart from Index; none: nothing to evaluate.
	HeldOut []int
}

// NumParams returns the number of parameters of the network d trains: the
// runtime refuses a task whose model_params differs.
func (d DataTrainer) NumParams() int { return d.NN.Model.NumParams() }

// Train runs Task.Epochs passes of minibatch SGD, on FedProx's objective
// when Task.ProxMu is positive: params on entry are the global model the
// proximal term holds the local model to. With Task.Local support-adam it
// runs them with Adam on Task.Support only, in the same minibatches:
// every other coordinate of params keeps its bits.
func (d DataTrainer) Train(ctx context.Context, params []float32, task Task) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	if task.BatchSize != d.NN.Workspace().Batch() {
		return Result{}, fmt.Errorf("client: task batch size %d, trainer built for %d", task.BatchSize, d.NN.Workspace().Batch())
	}
	rng := rand.New(rand.NewPCG(task.Seed, 0x6c6f63616c)) // "local"
	var loss float64
	switch task.Local {
	case "", runspec.SecAggLocalSGD:
		if task.Support != nil {
			return Result{}, fmt.Errorf("client: a support of %d coordinates for local SGD, which moves every coordinate", len(task.Support))
		}
		loss = d.NN.ProxEpochs(params, d.X, d.Y, d.Index, task.Epochs, task.Optimizer, task.ProxMu, rng)
	case runspec.SecAggLocalSupportAdam:
		if err := runspec.CheckSecAggLocal(task.Local, task.Optimizer, task.ProxMu); err != nil {
			return Result{}, err
		}
		if err := checkSupport(task.Support, len(params)); err != nil {
			return Result{}, err
		}
		opt := nn.Adam{LR: task.Optimizer.LR}
		if err := opt.Validate(); err != nil {
			return Result{}, err
		}
		loss = d.NN.SupportAdamEpochs(params, d.X, d.Y, d.Index, task.Epochs, task.Support, opt, rng)
	default:
		return Result{}, fmt.Errorf("client: local training %q: want %s or %s", task.Local, runspec.SecAggLocalSGD, runspec.SecAggLocalSupportAdam)
	}
	return Result{Examples: len(d.Index), Loss: loss}, nil
}
