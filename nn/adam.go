package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// Adam's constants (Kingma & Ba 2015, "Adam: a method for stochastic
// optimization"), as its paper and PyTorch's torch.optim.Adam default
// them. They are fixed, not fields of Adam: written as untyped constants,
// 1−β1 and 1−β2 are the float32 nearest 0.1 and 0.001, and the steps are
// the same bits as bench/randk's local Adam (Restrict.direction), whose
// figures docs/secagg.md reports.
const (
	AdamBeta1 = 0.9
	AdamBeta2 = 0.999
	AdamEps   = 1e-8
)

// Adam is Adam with bias correction and fresh moments at the start of each
// SupportAdamEpochs call. With g the gradient at step t = 1, 2, ... of the
// call:
//
//	m = β1·m + (1−β1)·g
//	v = β2·v + (1−β2)·g²
//	w = w − LR·s·m/(√v + ε),  s = √(1−β2^t)/(1−β1^t)
//
// s is computed in float64 and rounded to float32 once per step, the rest
// in float32 in the order written. It has no weight decay and no
// momentum besides its own first moment.
type Adam struct {
	LR float32
}

// Validate reports a configuration error.
func (o Adam) Validate() error {
	if !(o.LR > 0) || o.LR > 1e3 {
		return fmt.Errorf("nn: Adam learning rate %v out of range (0, 1000]", o.LR)
	}
	return nil
}

// SupportAdamEpochs trains only the coordinates support of params with
// Adam, for the given number of passes over the examples idx of (x, y),
// in minibatches drawn as Epochs draws them (the same rng calls, so the
// same batches). Each minibatch computes the loss gradient of all
// parameters (LossGrad) and steps the support's coordinates with Adam;
// every coordinate off the support keeps its bits. The moments, one pair
// per support coordinate, start at zero on each call and t counts the
// steps of the call across its epochs. It returns the mean training loss
// of the last pass.
//
// support must be strictly increasing coordinates of params; it panics
// otherwise, or on an invalid opt. The trainer keeps the moments: the
// first call allocates them (and a call with a longer support grows
// them), later calls allocate nothing.
func (t *Trainer) SupportAdamEpochs(params []float32, x []float32, y []uint8, idx []int, epochs int, support []int32, opt Adam, rng *rand.Rand) float64 {
	if err := opt.Validate(); err != nil {
		panic(err.Error())
	}
	checkSupport(support, len(params))
	if len(idx) == 0 || epochs <= 0 {
		return 0
	}
	if cap(t.m1) < len(support) {
		t.m1 = make([]float32, len(support))
		t.m2 = make([]float32, len(support))
	}
	m1, m2 := t.m1[:len(support)], t.m2[:len(support)]
	clear(m1)
	clear(m2)
	perm := t.permOf(idx)
	bs := t.ws.Batch()
	var loss float64
	step := 0
	for e := 0; e < epochs; e++ {
		rng.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
		loss = 0
		for lo := 0; lo < len(perm); lo += bs {
			n := t.fill(x, y, perm[lo:min(lo+bs, len(perm))])
			loss += t.ws.LossGrad(params, t.grad, n)
			step++
			adamStep(params, t.grad, support, m1, m2, opt.LR, step)
		}
	}
	return loss / float64(len(perm))
}

// adamStep is step t of Adam on the coordinates support of params, with
// the moments m1, m2 (one per support coordinate) and the gradient grad
// of all parameters.
func adamStep(params, grad []float32, support []int32, m1, m2 []float32, lr float32, t int) {
	c1 := 1 - math.Pow(AdamBeta1, float64(t))
	c2 := 1 - math.Pow(AdamBeta2, float64(t))
	scale := float32(math.Sqrt(c2) / c1)
	m1, m2 = m1[:len(support)], m2[:len(support)]
	for i, j := range support {
		g := grad[j]
		// The conversions round each product, so that no platform fuses
		// a multiply-add and every replica takes the same bits.
		m := float32(AdamBeta1*m1[i]) + float32((1-AdamBeta1)*g)
		v := float32(AdamBeta2*m2[i]) + float32((1-AdamBeta2)*g*g)
		m1[i], m2[i] = m, v
		params[j] -= float32(lr * (scale * m / (float32(math.Sqrt(float64(v))) + AdamEps)))
	}
}

// checkSupport panics unless support is strictly increasing coordinates
// of a vector of n.
func checkSupport(support []int32, n int) {
	prev := int32(-1)
	for _, j := range support {
		if j <= prev || int(j) >= n {
			panic(fmt.Sprintf("nn: support coordinate %d after %d: want strictly increasing coordinates below %d", j, prev, n))
		}
		prev = j
	}
}
