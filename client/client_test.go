package client

import (
	"context"
	"errors"
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
	} {
		if bad.Validate() == nil {
			t.Errorf("%+v validated", bad)
		}
	}
}
