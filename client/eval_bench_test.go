package client

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/fedzip/fedzip/nn"
)

// benchClient is an MNIST-sized client of the 2NN (784-200-200-10): 600
// examples, 10 % of them held out.
func benchClient(b *testing.B) (DataTrainer, []float32) {
	m, err := nn.ParseArch("2nn", 784, 10)
	if err != nil {
		b.Fatal(err)
	}
	params := make([]float32, m.NumParams())
	m.Init(params, 1)
	r := rand.New(rand.NewPCG(1, 2))
	x, y := make([]float32, 600*784), make([]uint8, 600)
	for i := range x {
		x[i] = r.Float32()
	}
	for i := range y {
		y[i] = uint8(r.IntN(10))
	}
	idx, held := make([]int, 540), make([]int, 60)
	for i := range idx {
		idx[i] = i
	}
	for i := range held {
		held[i] = 540 + i
	}
	return DataTrainer{NN: nn.NewTrainer(m, 10), X: x, Y: y, Index: idx, HeldOut: held}, params
}

// BenchmarkFedEvalCost compares a client's federated evaluation (60
// held-out examples, forward only) with its local training in the same
// task (540 examples, E=1, B=10): the time evaluation adds to a round.
//
//	go test -run - -bench FedEvalCost ./client/
func BenchmarkFedEvalCost(b *testing.B) {
	b.Run("evaluate", func(b *testing.B) {
		d, params := benchClient(b)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := d.Evaluate(context.Background(), params); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("train", func(b *testing.B) {
		d, params := benchClient(b)
		work := make([]float32, len(params))
		task := Task{Seed: 1, Epochs: 1, BatchSize: 10, Optimizer: nn.SGD{LR: 0.05}}
		b.ReportAllocs()
		for b.Loop() {
			copy(work, params)
			if _, err := d.Train(context.Background(), work, task); err != nil {
				b.Fatal(err)
			}
		}
	})
}
