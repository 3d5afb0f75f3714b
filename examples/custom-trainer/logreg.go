package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/fedzip/fedzip/client"
)

// logReg is a client.Trainer written from scratch: multinomial logistic
// regression (softmax regression) trained with minibatch SGD. It is the
// model the coordinator calls "mlp:" (an MLP without hidden layers), so its
// parameters must be laid out as fedzip lays out that model, PyTorch's
// nn.Linear order:
//
//	params[0 : C·D]        fc1.weight, C rows (one per class) of D weights
//	params[C·D : C·D + C]  fc1.bias, one per class
//
// for D features and C classes. That layout is the whole contract between
// your code and fedzip: the coordinator averages these numbers, and
// anything that reads a fedzip model (checkpoints, safetensors, PyTorch)
// finds fc1.weight and fc1.bias in them.
type logReg struct {
	data    *data
	classes int
	// Scratch memory, allocated once: the gradient, the momentum buffer,
	// one example's class probabilities and the visiting order.
	grad, vel, prob []float32
	perm            []int
}

func newLogReg(d *data, classes int) *logReg {
	n := classes*d.Dim + classes
	return &logReg{data: d, classes: classes, grad: make([]float32, n), vel: make([]float32, n),
		prob: make([]float32, classes), perm: make([]int, d.N)}
}

// NumParams is the length of the parameter vector. The client runtime
// compares it with the coordinator's model before training.
func (m *logReg) NumParams() int { return len(m.grad) }

// Train runs task.Epochs passes of minibatch SGD over the local data,
// updating params in place, as client.Trainer asks. All its randomness
// (the order of the examples) comes from task.Seed, so a rerun of the same
// task gives the same model.
func (m *logReg) Train(ctx context.Context, params []float32, task client.Task) (client.Result, error) {
	d, c := m.data, m.classes
	if task.BatchSize < 1 || task.Epochs < 0 {
		return client.Result{}, fmt.Errorf("task with batch size %d and %d epochs", task.BatchSize, task.Epochs)
	}
	w, b := params[:c*d.Dim], params[c*d.Dim:]
	gw, gb := m.grad[:c*d.Dim], m.grad[c*d.Dim:]
	rng := rand.New(rand.NewPCG(task.Seed, 0x6c6f63616c))
	for i := range m.perm {
		m.perm[i] = i
	}
	clear(m.vel)
	var loss float64
	for range task.Epochs {
		if err := ctx.Err(); err != nil {
			return client.Result{}, err
		}
		rng.Shuffle(len(m.perm), func(i, j int) { m.perm[i], m.perm[j] = m.perm[j], m.perm[i] })
		loss = 0
		for lo := 0; lo < d.N; lo += task.BatchSize {
			batch := m.perm[lo:min(lo+task.BatchSize, d.N)]
			clear(m.grad)
			scale := 1 / float32(len(batch))
			for _, i := range batch {
				x, y := d.row(i), int(d.Y[i])
				loss += m.softmax(w, b, x, y)
				// The gradient of the cross-entropy loss with respect to
				// the logits is prob − onehot(y); the weights' gradient is
				// its outer product with x.
				m.prob[y]--
				for k, p := range m.prob {
					g := p * scale
					gb[k] += g
					row := gw[k*d.Dim : (k+1)*d.Dim]
					for j, v := range x {
						row[j] += g * v
					}
				}
			}
			// The coordinator's optimizer settings (learning rate,
			// momentum, weight decay), applied as PyTorch's SGD does.
			task.Optimizer.Step(params, m.grad, m.vel)
		}
	}
	return client.Result{Examples: d.N, Loss: loss / float64(d.N)}, nil
}

// softmax writes the class probabilities of x into m.prob and returns the
// cross-entropy loss of label y.
func (m *logReg) softmax(w, b, x []float32, y int) float64 {
	top := float32(math.Inf(-1))
	for k := range m.prob {
		z := b[k]
		for j, v := range w[k*len(x) : (k+1)*len(x)] {
			z += v * x[j]
		}
		m.prob[k] = z
		top = max(top, z)
	}
	var sum float64
	for k, z := range m.prob {
		e := math.Exp(float64(z - top))
		m.prob[k] = float32(e)
		sum += e
	}
	for k := range m.prob {
		m.prob[k] /= float32(sum)
	}
	return -math.Log(max(float64(m.prob[y]), 1e-30))
}
