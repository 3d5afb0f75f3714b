package client

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/fedzip/fedzip/nn"
)

// TestDataTrainerEvaluate: Evaluate scores the held-out rows only, as the
// model's own Evaluate scores them gathered by hand, and leaves params
// alone.
func TestDataTrainerEvaluate(t *testing.T) {
	m, err := nn.ParseArch("mlp:8", 5, 3)
	if err != nil {
		t.Fatal(err)
	}
	params := make([]float32, m.NumParams())
	m.Init(params, 1)
	r := rand.New(rand.NewPCG(1, 2))
	const rows = 40
	x, y := make([]float32, rows*5), make([]uint8, rows)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	for i := range y {
		y[i] = uint8(r.IntN(3))
	}
	held := []int{1, 4, 9, 16, 25, 36, 37, 38, 39, 0, 2}
	d := DataTrainer{NN: nn.NewTrainer(m, 4), X: x, Y: y, Index: []int{3, 5, 7}, HeldOut: held}
	before := slices.Clone(params)
	got, err := d.Evaluate(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(before, params) {
		t.Fatal("Evaluate modified params")
	}
	var hx []float32
	var hy []uint8
	for _, i := range held {
		hx, hy = append(hx, x[i*5:(i+1)*5]...), append(hy, y[i])
	}
	correct, loss := m.Evaluate(m.NewWorkspace(64), params, hx, hy)
	if got.Examples != len(held) || got.Accuracy != float64(correct)/float64(len(held)) || math.Abs(got.Loss-loss/float64(len(held))) > 1e-9 {
		t.Fatalf("Evaluate = %+v, want %d examples, accuracy %v, loss %v", got, len(held), float64(correct)/float64(len(held)), loss/float64(len(held)))
	}
	again, _ := d.Evaluate(context.Background(), params)
	if again != got {
		t.Fatalf("not deterministic: %+v then %+v", got, again)
	}
	// The training rows do not count.
	d.Index = nil
	if other, _ := d.Evaluate(context.Background(), params); other != got {
		t.Fatal("the training rows changed the evaluation")
	}
	d.HeldOut = nil
	if z, err := d.Evaluate(context.Background(), params); err != nil || z != (EvalResult{}) {
		t.Fatalf("no held-out rows: %+v, %v", z, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := d.Evaluate(ctx, params); err == nil {
		t.Fatal("a cancelled context evaluated")
	}
}
