package nn

import (
	"fmt"
	"math/rand/v2"
)

// SGD is stochastic gradient descent with momentum and weight decay, as
// PyTorch's torch.optim.SGD (no dampening, no Nesterov):
//
//	g = grad + WeightDecay·w
//	v = Momentum·v + g
//	w = w − LR·v
type SGD struct {
	LR          float32
	Momentum    float32
	WeightDecay float32
}

// Validate reports a configuration error.
func (o SGD) Validate() error {
	switch {
	case !(o.LR > 0) || o.LR > 1e3:
		return fmt.Errorf("nn: learning rate %v out of range (0, 1000]", o.LR)
	case !(o.Momentum >= 0 && o.Momentum < 1):
		return fmt.Errorf("nn: momentum %v out of range [0, 1)", o.Momentum)
	case !(o.WeightDecay >= 0) || o.WeightDecay > 1:
		return fmt.Errorf("nn: weight decay %v out of range [0, 1]", o.WeightDecay)
	}
	return nil
}

// Step applies one update to params with grad; vel is the momentum buffer
// (ignored when Momentum is 0). All three have the same length.
func (o SGD) Step(params, grad, vel []float32) {
	grad = grad[:len(params)]
	lr, mu, wd := o.LR, o.Momentum, o.WeightDecay
	switch {
	case mu == 0 && wd == 0:
		for i := range params {
			params[i] -= lr * grad[i]
		}
	case mu == 0:
		for i := range params {
			params[i] -= lr * (grad[i] + wd*params[i])
		}
	default:
		vel = vel[:len(params)]
		for i := range params {
			v := mu*vel[i] + grad[i] + wd*params[i]
			vel[i] = v
			params[i] -= lr * v
		}
	}
}

// Trainer runs minibatch SGD (or Adam on a support, SupportAdamEpochs)
// for one model over examples held in memory. It owns a workspace, a
// gradient, a momentum buffer and, once used, Adam's moments, so a
// Trainer must not be used by two goroutines at once; after the first
// call, training allocates nothing.
type Trainer struct {
	Model Model
	ws    Scratch
	fused fusedStepper // ws, when it has a fused SGD step
	grad  []float32
	vel   []float32
	perm  []int
	// anchor is w₀ of the proximal term, allocated by the first
	// ProxEpochs with mu > 0.
	anchor []float32
	// m1 and m2 are Adam's moments on the support, allocated by the first
	// SupportAdamEpochs.
	m1, m2 []float32
}

// NewTrainer returns a Trainer for batches of at most batch examples.
func NewTrainer(m Model, batch int) *Trainer {
	ws := m.Scratch(batch)
	fused, _ := ws.(fusedStepper)
	return &Trainer{
		Model: m,
		ws:    ws,
		fused: fused,
		grad:  make([]float32, m.NumParams()),
		vel:   make([]float32, m.NumParams()),
	}
}

// Workspace returns the trainer's workspace, for evaluation between steps.
func (t *Trainer) Workspace() Scratch { return t.ws }

// Epochs trains params in place for the given number of passes over the
// examples idx of (x, y), x being row-major with InputDim() features. Each
// pass visits the examples in an order drawn from rng, in minibatches of
// the trainer's batch size (the last one may be smaller). The momentum
// buffer starts at zero. It returns the mean training loss of the last pass.
func (t *Trainer) Epochs(params []float32, x []float32, y []uint8, idx []int, epochs int, opt SGD, rng *rand.Rand) float64 {
	return t.epochs(params, x, y, idx, epochs, opt, 0, rng)
}

// epochs is Epochs with the proximal term mu/2·‖w − w₀‖² of ProxEpochs.
// Plain SGD without it takes the fused step (MLP.SGDStep); momentum or a
// proximal term need the gradient materialised.
func (t *Trainer) epochs(params []float32, x []float32, y []uint8, idx []int, epochs int, opt SGD, mu float32, rng *rand.Rand) float64 {
	if len(idx) == 0 || epochs <= 0 {
		return 0
	}
	perm := t.permOf(idx)
	clear(t.vel)
	if mu > 0 {
		if t.anchor == nil {
			t.anchor = make([]float32, len(params))
		}
		copy(t.anchor, params)
	}
	bs := t.ws.Batch()
	var loss float64
	for e := 0; e < epochs; e++ {
		rng.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
		loss = 0
		for lo := 0; lo < len(perm); lo += bs {
			n := t.fill(x, y, perm[lo:min(lo+bs, len(perm))])
			switch {
			case opt.Momentum == 0 && mu == 0 && t.fused != nil:
				loss += t.fused.SGDStep(params, n, opt.LR, opt.WeightDecay)
			case mu == 0:
				loss += t.ws.LossGrad(params, t.grad, n)
				opt.Step(params, t.grad, t.vel)
			default:
				loss += t.ws.LossGrad(params, t.grad, n)
				ProxGrad(t.grad, params, t.anchor, mu)
				opt.Step(params, t.grad, t.vel)
			}
		}
	}
	return loss / float64(len(perm))
}

// permOf returns the trainer's permutation buffer holding idx.
func (t *Trainer) permOf(idx []int) []int {
	if cap(t.perm) < len(idx) {
		t.perm = make([]int, len(idx))
	}
	perm := t.perm[:len(idx)]
	copy(perm, idx)
	return perm
}

// fill copies the examples rows of (x, y) into the workspace's input and
// labels and returns their number.
func (t *Trainer) fill(x []float32, y []uint8, rows []int) int {
	d := t.Model.InputDim()
	n := len(rows)
	in := t.ws.Input(n)
	lab := t.ws.Labels(n)
	for r, ex := range rows {
		copy(in[r*d:(r+1)*d], x[ex*d:(ex+1)*d])
		lab[r] = y[ex]
	}
	return n
}
