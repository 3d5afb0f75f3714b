package client

import (
	"context"
	"fmt"
)

// EvalResult is a client's evaluation of a model on its held-out
// examples: their number, the mean cross-entropy loss and the accuracy
// (fraction correct). Examples 0 means the client had nothing to evaluate
// on, and reports nothing.
type EvalResult struct {
	Examples int
	Loss     float64
	Accuracy float64
}

// Evaluator is what a Trainer implements to take part in federated
// evaluation: Evaluate scores params (the global model the client trains
// from, owned by the caller) on the client's held-out examples, which it
// must not train on. It must not modify or keep params, and must be
// deterministic: the same params give the same result, bit for bit, so
// that the simulator and a client process report the same figures. Like
// Train, it is called by one goroutine at a time. A Trainer that does not
// implement it reports no evaluation.
type Evaluator interface {
	Evaluate(ctx context.Context, params []float32) (EvalResult, error)
}

// Evaluate scores params on the rows HeldOut of X and Y, in batches of the
// trainer's workspace, summed in row order: the same rows give the same
// bits whatever process runs it. With no held-out rows it returns the
// zero EvalResult.
func (d DataTrainer) Evaluate(ctx context.Context, params []float32) (EvalResult, error) {
	if err := ctx.Err(); err != nil {
		return EvalResult{}, err
	}
	if len(d.HeldOut) == 0 {
		return EvalResult{}, nil
	}
	if len(params) != d.NN.Model.NumParams() {
		return EvalResult{}, fmt.Errorf("client: evaluate: %d parameters, the model has %d", len(params), d.NN.Model.NumParams())
	}
	ws := d.NN.Workspace()
	dim, b := d.NN.Model.InputDim(), ws.Batch()
	x, y := make([]float32, b*dim), make([]uint8, b)
	var (
		correct int
		loss    float64
	)
	for lo := 0; lo < len(d.HeldOut); lo += b {
		n := min(b, len(d.HeldOut)-lo)
		for j, i := range d.HeldOut[lo : lo+n] {
			copy(x[j*dim:(j+1)*dim], d.X[i*dim:(i+1)*dim])
			y[j] = d.Y[i]
		}
		c, l := ws.Evaluate(params, x[:n*dim], y[:n])
		correct += c
		loss += l
	}
	n := float64(len(d.HeldOut))
	return EvalResult{Examples: len(d.HeldOut), Loss: loss / n, Accuracy: float64(correct) / n}, nil
}

var _ Evaluator = DataTrainer{}
