package client

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/runspec"
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

// TestTaskValidateSupport: support-adam needs a strictly increasing
// support and refuses SGD's momentum, weight decay and proximal term; SGD
// refuses a support (it would move every coordinate).
func TestTaskValidateSupport(t *testing.T) {
	adam := Task{Epochs: 1, BatchSize: 10, Optimizer: nn.SGD{LR: 0.07}, Local: runspec.SecAggLocalSupportAdam, Support: []int32{0, 5, 9}}
	if err := adam.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(*Task){
		"no support":    func(t *Task) { t.Support = nil },
		"unsorted":      func(t *Task) { t.Support = []int32{5, 0} },
		"repeat":        func(t *Task) { t.Support = []int32{5, 5} },
		"negative":      func(t *Task) { t.Support = []int32{-1, 5} },
		"momentum":      func(t *Task) { t.Optimizer.Momentum = 0.9 },
		"weight decay":  func(t *Task) { t.Optimizer.WeightDecay = 0.01 },
		"prox mu":       func(t *Task) { t.ProxMu = 0.1 },
		"unknown local": func(t *Task) { t.Local = "adam" },
		"sgd support":   func(t *Task) { t.Local = runspec.SecAggLocalSGD },
	} {
		bad := adam
		edit(&bad)
		if err := bad.Validate(); !errors.Is(err, runspec.ErrInvalid) {
			t.Errorf("%s: %v, want runspec.ErrInvalid", name, err)
		}
	}
}

// TestSupportAdamStepIsZeroOffTheSupport runs Step with DataTrainer and
// support-adam: the update is zero, bit for bit, off the support and not
// zero on it, reruns give the same bits, and a support beyond the model
// is an error, not a panic.
func TestSupportAdamStepIsZeroOffTheSupport(t *testing.T) {
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
	var sup []int32
	for j := 2; j < len(global); j += 7 {
		sup = append(sup, int32(j))
	}
	task := Task{Seed: 9, Epochs: 2, BatchSize: 6, Optimizer: nn.SGD{LR: 0.05}, Local: runspec.SecAggLocalSupportAdam, Support: sup}
	tr := DataTrainer{NN: nn.NewTrainer(m, 6), X: x, Y: y, Index: idx}
	step := func() []float32 {
		u, _, err := Step(context.Background(), tr, global, make([]float32, len(global)), task)
		if err != nil {
			t.Fatal(err)
		}
		return u.Delta
	}
	d := step()
	on := make([]bool, len(d))
	for _, j := range sup {
		on[j] = true
	}
	moved := 0
	for i, v := range d {
		switch {
		case !on[i] && math.Float32bits(v) != 0:
			t.Fatalf("coordinate %d off the support moved by %v", i, v)
		case on[i] && v != 0:
			moved++
		}
	}
	if moved < len(sup)/2 {
		t.Fatalf("%d of %d support coordinates moved", moved, len(sup))
	}
	if !slices.Equal(d, step()) {
		t.Fatal("a rerun gives other bits")
	}
	task.Support = []int32{1, int32(len(global))}
	if _, _, err := Step(context.Background(), tr, global, make([]float32, len(global)), task); !errors.Is(err, runspec.ErrInvalid) {
		t.Fatalf("a support beyond the model: %v, want runspec.ErrInvalid", err)
	}
	task.Local, task.Support = runspec.SecAggLocalSGD, sup
	if _, _, err := Step(context.Background(), tr, global, make([]float32, len(global)), task); err == nil {
		t.Fatal("SGD trained with a support")
	}
}
