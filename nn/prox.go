package nn

import (
	"fmt"
	"math/rand/v2"
)

// ProxGrad adds to grad the gradient of FedProx's proximal term
// mu/2·‖params − anchor‖², which is mu·(params − anchor). All three slices
// have the same length. It allocates nothing.
func ProxGrad(grad, params, anchor []float32, mu float32) {
	if len(grad) != len(params) || len(anchor) != len(params) {
		panic(fmt.Sprintf("nn: ProxGrad: len(grad) = %d, len(params) = %d, len(anchor) = %d", len(grad), len(params), len(anchor)))
	}
	for i, w := range params {
		grad[i] += mu * (w - anchor[i])
	}
}

// ProxLoss returns FedProx's proximal term mu/2·‖params − anchor‖², summed
// in float64.
func ProxLoss(params, anchor []float32, mu float32) float64 {
	if len(anchor) != len(params) {
		panic(fmt.Sprintf("nn: ProxLoss: len(params) = %d, len(anchor) = %d", len(params), len(anchor)))
	}
	var s float64
	for i, w := range params {
		d := float64(w - anchor[i])
		s += d * d
	}
	return float64(mu) / 2 * s
}

// ProxEpochs is Epochs on FedProx's local objective (Li et al. 2020,
// "Federated optimization in heterogeneous networks"): the cross-entropy
// plus mu/2·‖w − w₀‖², where w₀ is params on entry (the global model a
// client starts from). Each minibatch computes the loss gradient, adds
// mu·(w − w₀) (ProxGrad) and takes an SGD step; with mu = 0 it is Epochs,
// bit for bit. The loss it returns is the cross-entropy alone, as Epochs
// reports it. Plain gradient steps on the proximal term are stable only
// for LR·mu < 2; the caller checks that (see client.Task.Validate).
//
// The first call with mu > 0 allocates the trainer's copy of w₀; later
// calls allocate nothing. It panics on a negative or NaN mu.
func (t *Trainer) ProxEpochs(params []float32, x []float32, y []uint8, idx []int, epochs int, opt SGD, mu float32, rng *rand.Rand) float64 {
	if !(mu >= 0) {
		panic(fmt.Sprintf("nn: ProxEpochs: mu = %v, want ≥ 0", mu))
	}
	return t.epochs(params, x, y, idx, epochs, opt, mu, rng)
}
