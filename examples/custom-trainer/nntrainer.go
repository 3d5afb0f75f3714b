package main

import (
	"context"
	"fmt"
	"math/rand/v2"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/nn"
)

// netTrainer is the other way to bring your own model: name it with a
// spec ("cnn", "lenet5", or layers such as "conv:8x3,pool:2,fc:4"; see
// docs/models.md) and let package nn build and train it on your tensors.
// nn lays the parameters out as PyTorch does (conv1.weight [out, in, kh,
// kw], ...), so the coordinator, the codecs and the exports all read
// them.
type netTrainer struct {
	nn   *nn.Trainer
	data *data
	idx  []int // the rows to train on: all of them
}

// newNetTrainer builds the network spec names for inputs of the given
// shape and classes outputs, with room for batches of batch examples.
func newNetTrainer(spec string, shape nn.Shape, classes, batch int, d *data) (*netTrainer, error) {
	if shape.Dim() != d.Dim {
		return nil, fmt.Errorf("input shape %v holds %d values, the data has %d features", shape, shape.Dim(), d.Dim)
	}
	m, err := nn.ParseModel(spec, shape, classes)
	if err != nil {
		return nil, err
	}
	idx := make([]int, d.N)
	for i := range idx {
		idx[i] = i
	}
	return &netTrainer{nn: nn.NewTrainer(m, batch), data: d, idx: idx}, nil
}

// NumParams is the length of the network's parameter vector.
func (t *netTrainer) NumParams() int { return t.nn.Model.NumParams() }

// Train runs the task's epochs of minibatch SGD (FedProx's objective when
// the task sets ProxMu) on params in place.
func (t *netTrainer) Train(ctx context.Context, params []float32, task client.Task) (client.Result, error) {
	if err := ctx.Err(); err != nil {
		return client.Result{}, err
	}
	if task.BatchSize != t.nn.Workspace().Batch() {
		return client.Result{}, fmt.Errorf("task batch size %d, trainer built for %d", task.BatchSize, t.nn.Workspace().Batch())
	}
	rng := rand.New(rand.NewPCG(task.Seed, 0x6c6f63616c))
	loss := t.nn.ProxEpochs(params, t.data.X, t.data.Y, t.idx, task.Epochs, task.Optimizer, task.ProxMu, rng)
	return client.Result{Examples: t.data.N, Loss: loss}, nil
}
