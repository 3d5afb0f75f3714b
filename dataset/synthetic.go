package dataset

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// Synthetic dataset shape and size bounds.
const (
	SyntheticDim        = 60   // features per example
	SyntheticClasses    = 10   // labels 0..9
	SyntheticMinSamples = 50   // per client, before the cap
	SyntheticMaxSamples = 1000 // per client: the cap that keeps the set small
	// SyntheticTrainFraction of each client's examples go to Train, the
	// rest to Test.
	SyntheticTrainFraction = 0.75
)

// Federated is a dataset that comes already split among clients: Train and
// Test hold every client's examples concatenated, and TrainParts[k] and
// TestParts[k] are client k's indices into them. Test is nil for files
// without a test set.
type Federated struct {
	// ClientNames names the clients of a natural split of files
	// (TrainParts[k] is ClientNames[k]'s); nil otherwise.
	ClientNames []string

	Train, Test           *Dataset
	TrainParts, TestParts Partition
	// HeldOutParts[k], with Spec.HoldOut, are client k's held-out indices
	// into Train, for federated evaluation (see HoldOut); nil without.
	HeldOutParts Partition
}

// Synthetic generates the Synthetic(alpha, beta) federated dataset of the
// FedProx paper (Li et al., "Federated Optimization in Heterogeneous
// Networks", MLSys 2020; generate_synthetic in its code). Examples have 60
// features and 10 classes. For client k:
//
//	u_k ~ N(0, alpha), B_k ~ N(0, beta)        (alpha, beta are variances)
//	W_k in R^{10x60}, b_k in R^10, entries ~ N(u_k, 1)
//	v_k in R^60, entries ~ N(B_k, 1)
//	x ~ N(v_k, Sigma), Sigma diagonal with Sigma_jj = (j+1)^-1.2
//	y = argmax(W_k x + b_k)
//
// alpha controls how much the local models differ, beta how much the local
// inputs differ. Client k has int(lognormal(4, 2)) + 50 examples, capped at
// SyntheticMaxSamples; the first 75% (rounded down) are its training
// examples, the rest its test examples. Client k's draws come from its own
// stream, rand.NewPCG(seed, streamSynthetic+k), so client k's data depends
// only on (alpha, beta, seed, k), not on the number of clients.
//
// It returns an error wrapping ErrBadArgument if alpha or beta is negative
// or not finite, or clients < 1.
func Synthetic(alpha, beta float64, clients int, seed uint64) (*Federated, error) {
	switch {
	case !(alpha >= 0) || math.IsInf(alpha, 0) || !(beta >= 0) || math.IsInf(beta, 0):
		return nil, fmt.Errorf("dataset: Synthetic: %w: alpha %v, beta %v, want finite numbers >= 0", ErrBadArgument, alpha, beta)
	case clients < 1:
		return nil, fmt.Errorf("dataset: Synthetic: %w: %d clients, want >= 1", ErrBadArgument, clients)
	}
	const d, c = SyntheticDim, SyntheticClasses
	var sigma [d]float64 // standard deviations: sqrt of the variances (j+1)^-1.2
	for j := range sigma {
		sigma[j] = math.Sqrt(math.Pow(float64(j+1), -1.2))
	}
	name := fmt.Sprintf("synthetic(%g,%g)", alpha, beta)
	fed := &Federated{
		Train:      &Dataset{Name: name + "-train", Dim: d, Classes: c},
		Test:       &Dataset{Name: name + "-test", Dim: d, Classes: c},
		TrainParts: make(Partition, clients),
		TestParts:  make(Partition, clients),
	}
	var (
		w     [c * d]float64
		b     [c]float64
		v     [d]float64
		x     [d]float64
		xf    [d]float32
		sdU   = math.Sqrt(alpha)
		sdB   = math.Sqrt(beta)
		train = fed.Train
		test  = fed.Test
	)
	for k := range clients {
		r := rand.New(rand.NewPCG(seed, streamSynthetic+uint64(k)))
		n := syntheticSize(r)
		u := sdU * r.NormFloat64()
		bk := sdB * r.NormFloat64()
		for j := range v {
			v[j] = bk + r.NormFloat64()
		}
		for i := range w {
			w[i] = u + r.NormFloat64()
		}
		for i := range b {
			b[i] = u + r.NormFloat64()
		}
		nTrain := int(float64(n) * SyntheticTrainFraction)
		for s := range n {
			for j := range x {
				xf[j] = float32(v[j] + sigma[j]*r.NormFloat64())
				x[j] = float64(xf[j]) // label the features exactly as stored
			}
			y := 0
			best := math.Inf(-1)
			for cl := range c {
				z := b[cl]
				row := w[cl*d : (cl+1)*d]
				for j, xj := range x {
					z += row[j] * xj
				}
				if z > best {
					best, y = z, cl
				}
			}
			dst, parts := train, fed.TrainParts
			if s >= nTrain {
				dst, parts = test, fed.TestParts
			}
			parts[k] = append(parts[k], dst.N)
			dst.X = append(dst.X, xf[:]...)
			dst.Y = append(dst.Y, uint8(y))
			dst.N++
		}
	}
	return fed, nil
}

// syntheticSize draws a client's example count: int(lognormal(4, 2)) + 50,
// capped at SyntheticMaxSamples (the cap applied in float64 first, so a huge
// draw never overflows the conversion).
func syntheticSize(r *rand.Rand) int {
	ln := math.Exp(4 + 2*r.NormFloat64())
	if ln >= SyntheticMaxSamples {
		return SyntheticMaxSamples
	}
	return min(int(ln)+SyntheticMinSamples, SyntheticMaxSamples)
}
