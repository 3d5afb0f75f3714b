package sim

import (
	"github.com/fedzip/fedzip/aggregate"
)

// DefaultDPDelta is the δ at which the simulator reports ε by default.
const DefaultDPDelta = 1e-5

// privacy accounts for the privacy a DP strategy spends: each round is a
// sampled Gaussian mechanism with sampling rate q = selected/clients and
// the strategy's noise multiplier z (with adaptive clipping the z that
// covers both the updates and the clipped count, as aggregate.DP
// documents). The simulator selects a fixed number of clients uniformly
// without replacement; the RDP bound of Poisson sampling at the same rate
// is the usual stand-in for it (as in TensorFlow Federated's DP-FedAvg),
// not a proof for fixed-size sampling.
type privacy struct {
	dp    *aggregate.DP
	acct  *aggregate.Accountant
	delta float64
}

// newPrivacy returns the accounting for s, or nil when s is not DP or adds
// no noise, so that there is no finite ε to report.
func newPrivacy(s aggregate.Strategy, delta float64) *privacy {
	d, ok := s.(*aggregate.DP)
	if !ok || d.NoiseMultiplier == 0 {
		return nil
	}
	if delta == 0 {
		delta = DefaultDPDelta
	}
	return &privacy{dp: d, acct: aggregate.NewAccountant(), delta: delta}
}

// step accounts for one round that sampled selected of clients and returns
// the ε spent so far.
func (p *privacy) step(selected, clients int) float64 {
	p.acct.Step(float64(selected)/float64(clients), p.dp.NoiseMultiplier)
	return p.acct.Epsilon(p.delta)
}

// dpClip returns the clip norm s uses in its next round, or 0 when s is
// not DP.
func dpClip(s aggregate.Strategy) float64 {
	if d, ok := s.(*aggregate.DP); ok {
		return d.CurrentClip()
	}
	return 0
}
