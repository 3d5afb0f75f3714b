package client

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fedzip/fedzip/nn"
)

// addOne is a Trainer that adds 1 to every parameter.
type addOne struct{ examples int }

func (a addOne) Train(_ context.Context, p []float32, _ Task) (Result, error) {
	for i := range p {
		p[i]++
	}
	return Result{Examples: a.examples}, nil
}

type failing struct{}

func (failing) Train(context.Context, []float32, Task) (Result, error) {
	return Result{}, errors.New("disk on fire")
}

func TestStepReturnsDeltaAndLeavesGlobalAlone(t *testing.T) {
	global := []float32{1, 2, 3}
	local := make([]float32, 3)
	u, r, err := Step(context.Background(), addOne{examples: 7}, global, local, Task{})
	if err != nil {
		t.Fatal(err)
	}
	if u.Weight != 7 || r.Examples != 7 {
		t.Fatalf("weight %v, examples %d", u.Weight, r.Examples)
	}
	for i, d := range u.Delta {
		if d != 1 {
			t.Fatalf("delta[%d] = %v, want 1", i, d)
		}
	}
	if global[0] != 1 || global[1] != 2 || global[2] != 3 {
		t.Fatalf("global model changed: %v", global)
	}
	if _, _, err := Step(context.Background(), failing{}, global, local, Task{}); err == nil {
		t.Fatal("trainer error not returned")
	}
	if _, _, err := Step(context.Background(), addOne{}, global, local, Task{}); err == nil {
		t.Fatal("zero examples accepted")
	}
}

func TestStepRefusesAliasing(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Step accepted local == global")
		}
	}()
	g := []float32{1, 2}
	Step(context.Background(), addOne{examples: 1}, g, g, Task{})
}

func TestTaskValidate(t *testing.T) {
	ok := Task{Epochs: 1, BatchSize: 10, Optimizer: nn.SGD{LR: 0.1}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []Task{
		{Epochs: 0, BatchSize: 10, Optimizer: nn.SGD{LR: 0.1}},
		{Epochs: 1, BatchSize: 0, Optimizer: nn.SGD{LR: 0.1}},
		{Epochs: 1, BatchSize: 10, Optimizer: nn.SGD{LR: -1}},
		{Epochs: 1, BatchSize: 10, Optimizer: nn.SGD{LR: 0.1}, ProxMu: -1},
		{Epochs: 1, BatchSize: 10, Optimizer: nn.SGD{LR: 0.1}, ProxMu: float32(math.NaN())},
		{Epochs: 1, BatchSize: 10, Optimizer: nn.SGD{LR: 0.1}, ProxMu: float32(math.Inf(1))},
		{Epochs: 1, BatchSize: 10, Optimizer: nn.SGD{LR: 0.1}, ProxMu: 20}, // mu·lr = 2
	} {
		if bad.Validate() == nil {
			t.Errorf("%+v validated", bad)
		}
	}
}

// TestProxMuHoldsUpdateNearGlobal runs Step with DataTrainer on random
// data: the larger Task.ProxMu, the smaller the update, and at mu = 1/lr
// the local model barely leaves the global one.
func TestProxMuHoldsUpdateNearGlobal(t *testing.T) {
	m, err := nn.NewMLP(5, 8, 3)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 60
	x := make([]float32, 5*n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	y := make([]uint8, n)
	idx := make([]int, n)
	for i := range y {
		y[i], idx[i] = uint8(rng.IntN(3)), i
	}
	global := make([]float32, m.NumParams())
	m.Init(global, 4)
	norm := func(mu float32) float64 {
		task := Task{Seed: 9, Epochs: 10, BatchSize: 6, Optimizer: nn.SGD{LR: 0.1, Momentum: 0.5}, ProxMu: mu}
		if err := task.Validate(); err != nil {
			t.Fatal(err)
		}
		tr := DataTrainer{NN: nn.NewTrainer(m, 6), X: x, Y: y, Index: idx}
		u, _, err := Step(context.Background(), tr, global, make([]float32, len(global)), task)
		if err != nil {
			t.Fatal(err)
		}
		var s float64
		for _, d := range u.Delta {
			s += float64(d) * float64(d)
		}
		return math.Sqrt(s)
	}
	free, some, held := norm(0), norm(1), norm(10)
	if !(held < some && some < free) || !(held < 0.1*free) {
		t.Fatalf("‖Δ‖ = %.4g, %.4g, %.4g for mu = 0, 1, 10: want decreasing, the last under a tenth of the first", free, some, held)
	}
}
